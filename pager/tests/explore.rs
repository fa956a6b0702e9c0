//! Schedule exploration of the pager core with shuttle (random and PCT
//! schedules) over the same code the servers run, through the sync shim.
//! `cargo test -p pager --features shuttle --release`; set
//! `PAGER_EXPLORE_ITERATIONS` for longer runs.
#![cfg(feature = "shuttle")]

use ipc_protocol::types::{ObjectId, PageMask};
use pager::core::object::Object;
use pager::core::session::GpuSession;
use pager::core::view::{Space, PAGE};
use pager::migrate::{cpu_fault, evict, Chunk, FaultOutcome, Policy};
use pager::state::{PageTable, Residency};
use pager::sync::{spawn, Arc, Ordering};
use pager::testing::peer::{Design, PeerModel, Stuck};
use pager::testing::runtime::{
    cpu_write, gpu_collect, gpu_migrate as session_gpu_migrate, gpu_open, model_core,
    object_with_view, seed, small_config, ModelCore, ModelRuntime, POISON,
};
use pager::testing::{
    all_in_ram, all_in_vram as in_vram, bring_back_and_check, gpu_migrate, pattern, ModelBackend,
};

/// Runs `f` under random schedules, then under PCT (depth 3).
fn explore(f: fn()) {
    shuttle::check_random(f, iterations());
    shuttle::check_pct(f, iterations(), 3);
}

fn iterations() -> usize {
    std::env::var("PAGER_EXPLORE_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// Properties at the end of every schedule: every page in RAM with its
/// data, moved exactly once, no lock left held.
fn check_end(t: &PageTable, b: &ModelBackend) {
    for p in 0..t.len() {
        let i = t.info(p).unwrap();
        assert_eq!(
            (i.residency, i.locked),
            (Residency::System, false),
            "page {p}"
        );
        assert_eq!(
            b.ram[p].load(Ordering::Acquire),
            pattern(p),
            "page {p} data"
        );
        assert_eq!(
            b.moves[p].load(Ordering::Acquire),
            1,
            "page {p} moved twice"
        );
    }
}

fn herd_one_page() {
    let (t, b) = in_vram(4);
    let hs: Vec<_> = (0..3)
        .map(|_| {
            let (t, b) = (t.clone(), b.clone());
            spawn(move || {
                cpu_fault(&t, &*b, 2, Policy::Rules).unwrap();
                assert_eq!(b.ram[2].load(Ordering::Acquire), pattern(2));
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    check_end(&t, &b);
}

fn herd_all_pages_different_orders() {
    let (t, b) = in_vram(6);
    let orders: [[usize; 6]; 3] = [[0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0], [3, 0, 5, 1, 4, 2]];
    let hs: Vec<_> = orders
        .into_iter()
        .map(|order| {
            let (t, b) = (t.clone(), b.clone());
            spawn(move || {
                for p in order {
                    cpu_fault(&t, &*b, p, Policy::Rules).unwrap();
                    assert_eq!(b.ram[p].load(Ordering::Acquire), pattern(p));
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    check_end(&t, &b);
}

fn gpu_collect_racing_cpu_faults() {
    // Pages start in RAM; a GPU collects and finalizes while two CPU
    // threads fault. End: every page reachable with its data.
    let (t, b) = all_in_ram(4);
    let gpu = {
        let (t, b) = (t.clone(), b.clone());
        spawn(move || gpu_migrate(&t, &b, Chunk::around(0, 4), 100))
    };
    let cpus: Vec<_> = [0usize, 3]
        .into_iter()
        .map(|p| {
            let (t, b) = (t.clone(), b.clone());
            spawn(move || {
                let r = cpu_fault(&t, &*b, p, Policy::Rules).unwrap();
                if r != FaultOutcome::Resident {
                    assert_eq!(b.ram[p].load(Ordering::Acquire), pattern(p));
                }
            })
        })
        .collect();
    gpu.join().unwrap();
    for h in cpus {
        h.join().unwrap();
    }
    bring_back_and_check(&t, &b);
}

/// The seed's "evict only moves 511 of the pages while the CPU fault moves
/// 1", with a GPU collect in the mix: eviction, a CPU fault and a GPU
/// migration race on one chunk. Every page keeps its data, no lock is left.
fn eviction_racing_cpu_and_gpu() {
    let (t, b) = in_vram(4);
    // Page 3 starts in RAM, so the GPU has something to collect.
    assert!(t.try_lock(3).unwrap().is_some());
    b.ram[3].store(b.vram[3].load(Ordering::Acquire), Ordering::Release);
    t.unlock(3, Residency::System).unwrap();
    let evictor = {
        let (t, b) = (t.clone(), b.clone());
        spawn(move || {
            evict(&t, &*b, Chunk::around(0, 4), 0).unwrap();
        })
    };
    let cpu = {
        let (t, b) = (t.clone(), b.clone());
        // The GPU may take the page again right after this returns, so the
        // data is checked at the end, not here.
        spawn(move || {
            cpu_fault(&t, &*b, 1, Policy::Rules).unwrap();
        })
    };
    let gpu = {
        let (t, b) = (t.clone(), b.clone());
        spawn(move || gpu_migrate(&t, &b, Chunk::around(0, 4), 100))
    };
    for h in [evictor, cpu, gpu] {
        h.join().unwrap();
    }
    bring_back_and_check(&t, &b);
}

const CLIENT: u64 = 100;
const GPU_SERVER: u64 = 1;
const VIEW_AT: u64 = 0x1000_0000;

/// A client's 4-page object (page `p` holds `p * 10`), viewed at
/// `VIEW_AT` and opened by the GPU server: the object, the GPU server's
/// session, its id for the object, and the view's space.
fn four_pages_the_gpu_opened(
    core: &Arc<ModelCore>,
) -> (
    Arc<Object<ModelRuntime>>,
    Arc<GpuSession<ModelRuntime>>,
    ObjectId,
    Arc<Space<ModelRuntime>>,
) {
    let s = core.client(CLIENT).unwrap();
    let (obj, view) = object_with_view(core, &s, 4, VIEW_AT).unwrap();
    let o = s.object(obj).unwrap();
    seed(&o, |p| p as u64 * 10);
    let g = core.gpu_session(GPU_SERVER, 0).unwrap();
    let id = gpu_open(core, &g, CLIENT, view).unwrap();
    let space = s.view(view).unwrap().space.clone();
    (o, g, id, space)
}

/// The GPU server dies (its session ends) with a chunk collected while a
/// CPU writer meets the collect's write protection: every collected page
/// goes back unlocked, the writer goes on, no data is lost, no collect is
/// left counted. Without the session's end undoing its collects, the
/// writer waits on the page forever (shuttle reports the deadlock).
fn gpu_server_dies_mid_collect() {
    let core = model_core(small_config(""));
    let (o, g, id, space) = four_pages_the_gpu_opened(&core);
    let gpu = {
        let core = core.clone();
        spawn(move || {
            let _ = gpu_collect(&core, &g, id, 0, 4);
            core.end_gpu(GPU_SERVER);
        })
    };
    let writer = {
        let core = core.clone();
        spawn(move || cpu_write(&core, &space, VIEW_AT + 4096, 1, 1))
    };
    gpu.join().unwrap();
    writer.join().unwrap();
    for p in 0..4 {
        let i = o.table.info(p).unwrap();
        assert_eq!(
            (i.residency, i.locked),
            (Residency::System, false),
            "page {p}"
        );
        let want = p as u64 * 10 + (p == 1) as u64;
        assert_eq!(
            o.memory.words[p].load(Ordering::Acquire),
            want,
            "page {p} data"
        );
    }
    assert_eq!(core.accounting().collects, 0);
}

/// A collect outlives its lease (the GPU server gave up on it, issue 14)
/// while the GPU server's late finalize and a CPU writer race the reaper:
/// either the finalize wins (the pages move) or the reaper does (the pages
/// go back unlocked and the finalize is refused); never a page left
/// locked, never a word lost, never a collect left counted. Without the
/// reaper's undo the writer waits on its page forever.
fn a_collect_past_its_lease_is_undone() {
    let mut cfg = small_config("");
    cfg.collect_lease_us = 1000;
    let core = model_core(cfg);
    let (o, g, id, space) = four_pages_the_gpu_opened(&core);
    let gpu = {
        let (core, o) = (core.clone(), o.clone());
        spawn(move || session_gpu_migrate(&core, &g, id, &o.memory, 0, 4).is_ok())
    };
    let reaper = {
        let core = core.clone();
        spawn(move || {
            core.rt.clock_us.fetch_add(1000, Ordering::AcqRel);
            core.expire_collects()
        })
    };
    let writer = {
        let core = core.clone();
        spawn(move || cpu_write(&core, &space, VIEW_AT + 4096, 1, 1))
    };
    let finalized = gpu.join().unwrap();
    let expired = reaper.join().unwrap();
    writer.join().unwrap();
    assert!(
        !(finalized && expired == 1),
        "a collect both finalized and undone"
    );
    let vram = pager::sync::lock(&core.rt.vram).clone();
    for p in 0..4 {
        let i = o.table.info(p).unwrap();
        assert!(!i.locked, "page {p} left locked");
        let value = match i.residency {
            Residency::System => o.memory.words[p].load(Ordering::Acquire),
            _ => vram[&(0, id.get(), p)],
        };
        assert_eq!(
            value,
            p as u64 * 10 + (p == 1) as u64,
            "page {p} ({:?})",
            i.residency
        );
    }
    assert_eq!(core.accounting().collects, 0);
}

/// The pages `Resident` says are in the GPU's VRAM: (page, frame) of
/// object `id`, as a restarted GPU server learns them.
fn resident_pages(core: &ModelCore, g: &GpuSession<ModelRuntime>) -> Vec<(u64, u64)> {
    use ipc_protocol::interfaces::pager_migrate as m;
    let req = m::Request::Resident(m::Resident {
        gpu: ipc_protocol::types::GpuId::new(0).unwrap(),
        generation: 2,
        from_object: 0,
        from_page: 0,
    });
    let Ok((m::Reply::Resident(r), _)) = core.migrate_request(g, req) else {
        panic!("Resident refused");
    };
    assert!(!r.more);
    r.runs
        .as_slice()
        .iter()
        .flat_map(|run| (0..run.pages as u64).map(move |i| (run.first_page + i, run.first_pfn + i)))
        .collect()
}

/// The GPU server is restarted (issue 14): its predecessor migrated
/// pages 2..4 and died having collected pages 0..2, while a CPU writer
/// meets page 1. The new server's first `Resident` undoes the collect the
/// old one left, wherever it lands in the schedule: no page is left
/// locked, no word is lost, no collect is left counted, and a `Resident`
/// afterwards names exactly the pages whose state says VRAM, at their
/// frames. Without the undo, the writer waits on its page forever.
fn a_restarted_gpu_server_takes_over_mid_migration() {
    let core = model_core(small_config(""));
    let (o, g, id, space) = four_pages_the_gpu_opened(&core);
    assert_eq!(session_gpu_migrate(&core, &g, id, &o.memory, 2, 2), Ok(2));
    let old = {
        let (core, g) = (core.clone(), g.clone());
        // It dies after its collect: no finalize ever comes.
        spawn(move || gpu_collect(&core, &g, id, 0, 2).is_ok())
    };
    let new = {
        let (core, g) = (core.clone(), g.clone());
        spawn(move || resident_pages(&core, &g).len())
    };
    let writer = {
        let core = core.clone();
        spawn(move || cpu_write(&core, &space, VIEW_AT + 4096, 1, 1))
    };
    old.join().unwrap();
    new.join().unwrap();
    writer.join().unwrap();
    let vram = pager::sync::lock(&core.rt.vram).clone();
    let mut in_vram = Vec::new();
    for p in 0..4 {
        let i = o.table.info(p).unwrap();
        assert!(!i.locked, "page {p} left locked");
        let value = match i.residency {
            Residency::System => o.memory.words[p].load(Ordering::Acquire),
            Residency::Device { pfn, .. } => {
                in_vram.push((p as u64, pfn));
                vram[&(0, id.get(), p)]
            }
            Residency::Empty => panic!("page {p} lost its data"),
        };
        let want = p as u64 * 10 + (p == 1) as u64;
        assert_eq!(value, want, "page {p} ({:?})", i.residency);
    }
    assert_eq!(
        resident_pages(&core, &g),
        in_vram,
        "Resident and the states agree"
    );
    assert_eq!(core.accounting().collects, 0);
}

/// A client's session ends (it exited) while the GPU server migrates its
/// object: the migration either never starts (the object is dying) or
/// finishes first; then the VRAM is freed and every total is zero.
fn client_ends_mid_migration() {
    let core = model_core(small_config(""));
    let s = core.client(CLIENT).unwrap();
    let (obj, view) = object_with_view(&core, &s, 4, VIEW_AT).unwrap();
    let o = s.object(obj).unwrap();
    seed(&o, |p| p as u64 + 7);
    let g = core.gpu_session(GPU_SERVER, 0).unwrap();
    let id = gpu_open(&core, &g, CLIENT, view).unwrap();
    drop(s);
    let gpu = {
        let (core, o) = (core.clone(), o.clone());
        spawn(move || {
            let _ = session_gpu_migrate(&core, &g, id, &o.memory, 0, 4);
        })
    };
    let ender = {
        let core = core.clone();
        spawn(move || core.end_client(CLIENT))
    };
    gpu.join().unwrap();
    ender.join().unwrap();
    assert!(
        pager::sync::lock(&core.rt.vram).is_empty(),
        "VRAM of the ended object leaked"
    );
    for p in 0..4 {
        assert!(!o.table.info(p).unwrap().locked, "page {p} left locked");
    }
    drop(o);
    let t = core.accounting();
    assert_eq!((t.objects, t.views, t.spaces, t.collects), (0, 0, 0, 0));
}

#[test]
fn explore_gpu_server_dies_mid_collect() {
    explore(gpu_server_dies_mid_collect);
}

#[test]
fn explore_a_collect_past_its_lease_is_undone() {
    explore(a_collect_past_its_lease_is_undone);
}

#[test]
fn explore_a_restarted_gpu_server_takes_over_mid_migration() {
    explore(a_restarted_gpu_server_takes_over_mid_migration);
}

#[test]
fn explore_client_ends_mid_migration() {
    explore(client_ends_mid_migration);
}

#[test]
fn explore_eviction_racing_cpu_and_gpu() {
    explore(eviction_racing_cpu_and_gpu);
}

#[test]
fn explore_herd_one_page() {
    explore(herd_one_page);
}

#[test]
fn explore_herd_all_pages_different_orders() {
    explore(herd_all_pages_different_orders);
}

#[test]
fn explore_gpu_collect_racing_cpu_faults() {
    explore(gpu_collect_racing_cpu_faults);
}

/// Several GPUs (issue 17): 4 GPUs and 8 CPU threads on one chunk whose
/// pages start spread over the GPUs, each GPU adding to pages in its own
/// order (peer migrations, pushed by the source) while the CPU threads
/// fault pages back. No lock spans pages or devices; every access completes
/// and every page ends with its exact count.
fn four_gpus_and_eight_cpus_on_one_chunk(design: Design) -> Result<(), Vec<Stuck>> {
    const PAGES: usize = 4;
    let (t, m) = PeerModel::new(4, PAGES, design, |p| Some(p as u8), pattern);
    let (t, m) = (Arc::new(t), Arc::new(m));
    let gpus: Vec<_> = (0..4u8)
        .map(|g| {
            let (t, m) = (t.clone(), m.clone());
            let pages = [(g as usize + 1) % PAGES, (g as usize + 3) % PAGES];
            spawn(move || {
                pages
                    .iter()
                    .map(|&p| m.gpu_access(&t, g, p))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let cpus: Vec<_> = (0..8usize)
        .map(|c| {
            let (t, m) = (t.clone(), m.clone());
            spawn(move || (c % PAGES, m.cpu_read(&t, c % PAGES)))
        })
        .collect();
    let mut stuck = Vec::new();
    for h in gpus {
        stuck.extend(h.join().unwrap().into_iter().filter_map(Result::err));
    }
    for h in cpus {
        match h.join().unwrap() {
            (p, Ok(v)) => assert!(v >= pattern(p) && v <= pattern(p) + 2, "page {p} read {v}"),
            (_, Err(s)) => stuck.push(s),
        }
    }
    if !stuck.is_empty() {
        return Err(stuck);
    }
    // Each page is touched by two GPUs once each.
    m.check_end(&t, |p| pattern(p) + 2);
    Ok(())
}

#[test]
fn explore_four_gpus_and_eight_cpus_on_one_chunk() {
    explore(|| four_gpus_and_eight_cpus_on_one_chunk(Design::Rules).expect("no progress"));
}

/// The same race on the pager's real core (`several_gpus.rs` on real
/// threads): four GPU servers, each its own session, fault one object's
/// chunk into their VRAM (peer pages pushed by their source, every other
/// GPU told to unmap first) while eight CPU threads add to its pages. No
/// lock but the page locks; every write lands once, no frame is left.
fn four_gpu_sessions_and_eight_cpus_on_the_core() {
    const PAGES: u64 = 4;
    let core = model_core(small_config(""));
    let s = core.client(CLIENT).unwrap();
    let (obj, view) = object_with_view(&core, &s, PAGES, VIEW_AT).unwrap();
    let o = s.object(obj).unwrap();
    let space = s.view(view).unwrap().space.clone();
    seed(&o, |p| p as u64 + 7);
    let gpus: Vec<_> = (0..4u8)
        .map(|gpu| {
            let g = core.gpu_session(GPU_SERVER + u64::from(gpu), gpu).unwrap();
            let id = gpu_open(&core, &g, CLIENT, view).unwrap();
            let (core, o) = (core.clone(), o.clone());
            spawn(move || {
                // Half the chunk, the half by GPU, then all of it.
                let first = u64::from(gpu % 2) * 2;
                for (at, n) in [(first, 2), (0, PAGES as u16)] {
                    session_gpu_migrate(&core, &g, id, &o.memory, at, n).unwrap();
                }
            })
        })
        .collect();
    let cpus: Vec<_> = (0..8u64)
        .map(|c| {
            let (core, space) = (core.clone(), space.clone());
            spawn(move || {
                let page = (c % PAGES) as usize;
                cpu_write(&core, &space, VIEW_AT + page as u64 * PAGE, page, 1 << 32);
            })
        })
        .collect();
    for h in gpus.into_iter().chain(cpus) {
        h.join().unwrap();
    }
    for page in 0..PAGES as usize {
        if o.memory.words[page].load(Ordering::Acquire) == POISON {
            core.serve_fault(&space, VIEW_AT + page as u64 * PAGE, false);
        }
        let want = page as u64 + 7 + (2 << 32);
        assert_eq!(
            o.memory.words[page].load(Ordering::Acquire),
            want,
            "page {page}"
        );
    }
    assert!(pager::sync::lock(&core.rt.vram).is_empty(), "a frame left");
    assert!(pager::sync::lock(&core.rt.frames).is_empty(), "a push left");
}

#[test]
fn explore_four_gpu_sessions_and_eight_cpus_on_the_core() {
    explore(four_gpu_sessions_and_eight_cpus_on_the_core);
}

/// A GPU goes away (`evacuate`) while its server faults pages in: its
/// collect was reserved before the retirement (the evacuation waits for
/// its finalize, then brings the pages back) or it is refused. No page is
/// left in the GPU's VRAM, every word is right.
fn evacuation_racing_the_gpus_fault() {
    let core = model_core(small_config(""));
    let s = core.client(CLIENT).unwrap();
    let (obj, view) = object_with_view(&core, &s, 4, VIEW_AT).unwrap();
    let o = s.object(obj).unwrap();
    let space = s.view(view).unwrap().space.clone();
    seed(&o, |p| p as u64 + 7);
    let g = core.gpu_session(GPU_SERVER + 1, 1).unwrap();
    let id = gpu_open(&core, &g, CLIENT, view).unwrap();
    let gpu = {
        let (core, o) = (core.clone(), o.clone());
        spawn(move || {
            for first in [0, 2] {
                let _ = session_gpu_migrate(&core, &g, id, &o.memory, first, 2);
            }
        })
    };
    let evacuation = {
        let core = core.clone();
        spawn(move || core.evacuate(1).unwrap())
    };
    gpu.join().unwrap();
    let (_, left) = evacuation.join().unwrap();
    assert_eq!(left, 0, "pages left on the GPU that went");
    for page in 0..4usize {
        let r = o.table.info(page).unwrap().residency;
        assert!(
            !matches!(r, Residency::Device { .. }),
            "page {page} is {r:?}"
        );
        if o.memory.words[page].load(Ordering::Acquire) == POISON {
            core.serve_fault(&space, VIEW_AT + page as u64 * PAGE, false);
        }
        assert_eq!(
            o.memory.words[page].load(Ordering::Acquire),
            page as u64 + 7
        );
    }
}

#[test]
fn explore_evacuation_racing_the_gpus_fault() {
    explore(evacuation_racing_the_gpus_fault);
}

/// The negative check of several GPUs: one lock per range across devices
/// (held by a GPU migration that waits for the whole range, taken by a CPU
/// fault that holds its page) is found stuck.
#[test]
fn explore_finds_a_per_range_lock_across_devices_stuck() {
    let found = std::panic::catch_unwind(|| {
        shuttle::check_random(
            || four_gpus_and_eight_cpus_on_one_chunk(Design::PerRangeLock).expect("no progress"),
            iterations(),
        )
    });
    assert!(
        found.is_err(),
        "the explorer did not find a per-range lock across devices stuck"
    );
}

/// The negative check: the explorer must find the livelock of the design
/// the seed rejects (a pile that must be migrated whole, no single-page
/// fallback): two faulters each hold their own page and wait for the
/// other's, retrying until they give up.
#[test]
fn explore_finds_the_pile_livelock_without_rule_2() {
    fn two_faulters_no_fallback() {
        let (t, b) = in_vram(2);
        let hs: Vec<_> = [0usize, 1]
            .into_iter()
            .map(|p| {
                let (t, b) = (t.clone(), b.clone());
                spawn(move || {
                    cpu_fault(&t, &*b, p, Policy::NoFallback).expect("fault made no progress")
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    }
    let found =
        std::panic::catch_unwind(|| shuttle::check_random(two_faulters_no_fallback, iterations()));
    assert!(
        found.is_err(),
        "the explorer did not find the livelock of a whole-pile migration"
    );
    // The same scenario under the rules completes in every schedule.
    shuttle::check_random(
        || {
            let (t, b) = in_vram(2);
            let hs: Vec<_> = [0usize, 1]
                .into_iter()
                .map(|p| {
                    let (t, b) = (t.clone(), b.clone());
                    spawn(move || cpu_fault(&t, &*b, p, Policy::Rules).unwrap())
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
            check_end(&t, &b);
        },
        iterations(),
    );
    let _ = PageMask::EMPTY;
}
