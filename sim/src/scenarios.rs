//! The scenarios (the seed's list, issue 8) and the properties checked at
//! the end of every schedule (`World::finish`) and at every access
//! (`Machine::gpu_access`, `World::cpu_access`).
//!
//! Each page starts as `start(p)`; each actor adds a known amount, so the
//! end value of every page is known whatever the schedule.

use std::sync::atomic::{AtomicU64, Ordering};

use pager::migrate::Policy;
use shuttle::sync::Arc;
use shuttle::thread::{spawn, yield_now};

use crate::net::delay;
use crate::world::{World, WorldConfig};

pub fn start(p: usize) -> u64 {
    1000 * (p as u64 + 1)
}

/// One scenario: what it plays and what it stands for.
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub run: fn(),
}

/// The scenarios that must hold in every schedule.
pub fn all() -> Vec<Scenario> {
    vec![
        Scenario { name: "herd_one_page", about: "three CPU threads fault one page in VRAM", run: herd_one_page },
        Scenario { name: "herd_all_pages", about: "three CPU threads fault every page of a chunk in VRAM, each in its own order", run: herd_all_pages },
        Scenario { name: "gpu_fault_racing_cpu_faults", about: "GPU passes increment every page while two CPU threads increment them", run: gpu_fault_racing_cpu_faults },
        Scenario { name: "eviction_racing_both", about: "mm-server's eviction pass, GPU faults and CPU faults on the same pages, VRAM nearly full", run: eviction_racing_both },
        Scenario { name: "mremap_racing_migration", about: "the view moves (plain mremap) while the GPU and a CPU thread migrate its pages", run: mremap_racing_migration },
        Scenario { name: "fork_racing_migration", about: "a fork while the GPU migrates; parent and child write through their views", run: fork_racing_migration },
        Scenario { name: "pile_in_different_orders", about: "three CPU threads grab every page in different orders while the GPU takes them back", run: pile_in_different_orders },
        Scenario { name: "system_pages_migrate", about: "pages the GPU mapped from system memory (no VRAM) move to VRAM while another GPU thread writes them", run: system_pages_migrate },
        Scenario { name: "failing_copies", about: "the copy engine fails one copy in four while GPU and CPU race", run: failing_copies },
        Scenario { name: "mm_server_dies", about: "mm-server dies in the middle of eviction and GPU faults wait on it", run: mm_server_dies },
        Scenario { name: "mm_server_restarts", about: "mm-server is killed in the middle of eviction and a new one takes its place; GPU and CPU faults go on", run: mm_server_restarts },
    ]
    .into_iter()
    .chain(crate::hostile::all())
    .chain(crate::hostile_bo::all())
    .chain(crate::protect::all())
    .chain(crate::fresh_pages::all())
    .chain(crate::advice::all())
    .chain(crate::split::all())
    .chain(crate::thrash::all())
    .chain(crate::restart::all())
    .chain(crate::pager_restart::all())
    .chain(crate::several_gpus::all())
    .collect()
}

/// The actor that restarts a server (`restart` kills it and starts its
/// next generation, returning that generation) `kills` times, each after
/// a delay of up to `spacing` yields the seed picks.
pub(crate) fn restarter(
    w: &Arc<World>,
    kills: u32,
    spacing: u32,
    restart: fn(&World) -> u32,
) -> shuttle::thread::JoinHandle<()> {
    let w = w.clone();
    spawn(move || {
        for k in 0..kills {
            delay(spacing);
            assert_eq!(restart(&w), k + 2);
        }
    })
}

pub(crate) fn world(cfg: WorldConfig) -> Arc<World> {
    let w = World::new(&cfg);
    for p in 0..cfg.pages {
        w.seed(p, start(p));
    }
    Arc::new(w)
}

/// The GPU adds 1 to every page (a kernel over the binding).
pub(crate) fn gpu_pass(w: &World) {
    for p in 0..w.machine.pages {
        assert!(w.gpu_access(p, 1), "the GPU could not reach page {p}");
    }
}

/// A GPU actor making `n` passes.
pub(crate) fn gpu_passes(w: &Arc<World>, n: usize) -> shuttle::thread::JoinHandle<()> {
    let w = w.clone();
    spawn(move || {
        for _ in 0..n {
            gpu_pass(&w);
        }
    })
}

/// mm-server's actor: `passes` reservations of a page, each after a delay
/// the seed picks and each running an eviction pass first.
pub(crate) fn evictions(w: &Arc<World>, passes: usize) -> shuttle::thread::JoinHandle<()> {
    let w = w.clone();
    spawn(move || {
        let mm = w.mm.clone().expect("a broker");
        for _ in 0..passes {
            delay(4);
            mm.reserve(crate::machine::PAGE);
        }
    })
}

pub(crate) fn view(n: u64) -> Arc<AtomicU64> {
    Arc::new(AtomicU64::new(n))
}

pub(crate) fn finish(w: Arc<World>, expect: impl Fn(usize) -> u64) {
    match Arc::try_unwrap(w) {
        Ok(w) => w.finish(expect),
        Err(_) => panic!("an actor still holds the world"),
    }
}

pub(crate) fn join(hs: Vec<shuttle::thread::JoinHandle<()>>) {
    for h in hs {
        h.join().expect("an actor failed");
    }
}

/// Rule 3: a herd on one page moves it once; every reader sees its data.
fn herd_one_page() {
    let w = world(WorldConfig::default());
    gpu_pass(&w);
    let hs = (0..3)
        .map(|_| {
            let w = w.clone();
            spawn(move || assert_eq!(w.cpu_access(&view(0), 5, 0), start(5) + 1))
        })
        .collect();
    join(hs);
    finish(w, |p| start(p) + 1);
}

/// Rules 1-3: the whole chunk, every thread in its own order.
fn herd_all_pages() {
    herd_all_pages_with(Policy::Rules);
}

pub fn herd_all_pages_with(policy: Policy) {
    let w = world(WorldConfig {
        pages: 6,
        policy,
        ..Default::default()
    });
    gpu_pass(&w);
    let orders: [[usize; 6]; 3] = [[0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0], [3, 0, 5, 1, 4, 2]];
    let hs = orders
        .into_iter()
        .map(|order| {
            let w = w.clone();
            spawn(move || {
                for p in order {
                    assert_eq!(w.cpu_access(&view(0), p, 0), start(p) + 1, "page {p}");
                }
            })
        })
        .collect();
    join(hs);
    finish(w, |p| start(p) + 1);
}

/// Rules 4 and 8: the GPU and the CPU take pages from each other mid-pass;
/// no increment is lost and no stale GPU mapping is ever used.
fn gpu_fault_racing_cpu_faults() {
    gpu_racing_cpu(WorldConfig {
        pages: 8,
        ..Default::default()
    });
}

pub fn gpu_racing_cpu(cfg: WorldConfig) {
    let w = world(cfg);
    let pages = w.machine.pages;
    let gpu = gpu_passes(&w, 2);
    let cpus: Vec<_> = (0..2usize)
        .map(|t| {
            let w = w.clone();
            spawn(move || {
                for p in (t..pages).step_by(2) {
                    let v = w.cpu_access(&view(0), p, 1);
                    assert!(v > start(p) && v <= start(p) + 3, "page {p} read {v}");
                }
            })
        })
        .collect();
    gpu.join().expect("the GPU actor failed");
    join(cpus);
    finish(w, |p| start(p) + 3);
}

/// Rules 5, 6, 7: eviction takes pages back while faults on both sides
/// move them; VRAM is nearly full, so GPU faults wait in mm-server.
fn eviction_racing_both() {
    let w = world(WorldConfig {
        pages: 8,
        broker: Some(4),
        ..Default::default()
    });
    let mm = evictions(&w, 2);
    let gpu = gpu_passes(&w, 1);
    let cpu = {
        let w = w.clone();
        spawn(move || {
            for p in 0..w.machine.pages {
                w.cpu_access(&view(0), p, 1);
            }
        })
    };
    join(vec![mm, gpu, cpu]);
    finish(w, |p| start(p) + 2);
}

/// The seed's mremap case: the view moves while its pages migrate both
/// ways. The binding follows (GpuNotify::ViewCopied, then ViewGone for the
/// old view): nothing stays mapped at the old address, no increment is
/// lost, and GPU work at the new address finds it bound.
fn mremap_racing_migration() {
    let w = world(WorldConfig {
        pages: 6,
        ..Default::default()
    });
    let current = view(0);
    let gpu = gpu_passes(&w, 2);
    let cpu = {
        let (w, current) = (w.clone(), current.clone());
        spawn(move || {
            for p in 0..w.machine.pages {
                w.cpu_access(&current, p, 1);
            }
        })
    };
    let mover = {
        let (w, current) = (w.clone(), current.clone());
        spawn(move || {
            delay(6);
            let new = w.move_view(current.load(Ordering::Acquire) as usize);
            current.store(new as u64, Ordering::Release);
        })
    };
    join(vec![gpu, cpu, mover]);
    finish(w, |p| start(p) + 3);
}

/// The seed's fork case: a child view appears (its mappings copies of the
/// parent's, write protection included) while pages migrate; both
/// processes write, the GPU increments. Shared object: every write counts.
fn fork_racing_migration() {
    let w = world(WorldConfig {
        pages: 6,
        ..Default::default()
    });
    let gpu = gpu_passes(&w, 2);
    let parent = {
        let w = w.clone();
        spawn(move || {
            for p in 0..3 {
                w.cpu_access(&view(0), p, 1);
            }
        })
    };
    let forker = {
        let w = w.clone();
        spawn(move || {
            delay(6);
            let child = w.pager.fork_view(0) as u64;
            let w2 = w.clone();
            let c = spawn(move || {
                for p in 3..6 {
                    w2.cpu_access(&view(child), p, 1);
                }
            });
            c.join().expect("the child failed");
        })
    };
    join(vec![gpu, parent, forker]);
    finish(w, |p| start(p) + 3);
}

/// Rule 1: piles grabbed in different orders by CPU threads while a GPU
/// pass takes the pages back: trylock only, so nobody waits holding.
fn pile_in_different_orders() {
    let w = world(WorldConfig {
        pages: 6,
        ..Default::default()
    });
    gpu_pass(&w);
    let gpu = gpu_passes(&w, 1);
    let orders: [[usize; 6]; 2] = [[0, 1, 2, 3, 4, 5], [5, 3, 1, 4, 2, 0]];
    let mut hs: Vec<_> = orders
        .into_iter()
        .map(|order| {
            let w = w.clone();
            spawn(move || {
                for p in order {
                    w.cpu_access(&view(0), p, 1);
                }
            })
        })
        .collect();
    hs.push(gpu);
    join(hs);
    finish(w, |p| start(p) + 4);
}

/// Rule 8 for the GPU's own mappings: with no VRAM, faults map pages as
/// system pages; once VRAM comes free, a fault on a neighbour moves the
/// whole chunk to VRAM while another hardware thread keeps writing those
/// pages. The system mappings must go before the copy.
fn system_pages_migrate() {
    let w = world(WorldConfig {
        pages: 16,
        free_vram: Some(0),
        ..Default::default()
    });
    for p in 0..4 {
        assert!(w.gpu_access(p, 1), "page {p}");
    }
    w.release_filler();
    let writer = {
        let w = w.clone();
        spawn(move || {
            for _ in 0..2 {
                for p in 0..4 {
                    assert!(w.gpu_access(p, 1), "page {p}");
                }
            }
        })
    };
    let mover = {
        let w = w.clone();
        spawn(move || {
            for p in 4..16 {
                assert!(w.gpu_access(p, 1), "page {p}");
            }
        })
    };
    join(vec![writer, mover]);
    finish(w, |p| start(p) + if p < 4 { 3 } else { 1 });
}

/// Fault injection: failed copies leave pages where they were; GPU faults
/// map them from system memory or retry, CPU faults retry.
fn failing_copies() {
    gpu_racing_cpu(WorldConfig {
        pages: 6,
        fail_copy_one_in: 4,
        ..Default::default()
    });
}

/// A peer that dies: mm-server goes in the middle; GPU faults that wait
/// on it get nothing and map system pages; nothing hangs or is lost.
/// mm-server's end (`event`, at a point the seed picks: in an eviction
/// pass, a reservation or a report) while a GPU pass and CPU faults run
/// over a nearly full VRAM.
fn mm_server_event(event: fn(&World)) -> Arc<World> {
    let w = world(WorldConfig {
        pages: 6,
        broker: Some(2),
        ..Default::default()
    });
    let ender = {
        let w = w.clone();
        spawn(move || {
            delay(8);
            event(&w);
        })
    };
    let gpu = gpu_passes(&w, 1);
    let cpu = {
        let w = w.clone();
        spawn(move || {
            for p in (0..w.machine.pages).rev() {
                w.cpu_access(&view(0), p, 1);
                yield_now();
            }
        })
    };
    join(vec![ender, gpu, cpu]);
    w
}

/// Issue 14's "server restarts" fault for mm-server: killed and replaced
/// mid-race; a second GPU pass after the restart reserves from the new
/// broker. Every page ends with exact data and every fault completes.
fn mm_server_restarts() {
    let w = mm_server_event(World::restart_mm);
    let (ep, _) = w.gpu().hw.mm().expect("a broker");
    assert!(!ep.is_dead(), "the GPU core calls the new mm-server");
    join(vec![gpu_passes(&w, 1)]);
    finish(w, |p| start(p) + 3);
}

fn mm_server_dies() {
    let w = mm_server_event(|w| w.mm_endpoint.as_ref().expect("a broker").kill());
    finish(w, |p| start(p) + 2);
}
