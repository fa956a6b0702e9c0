//! The designs the seed rejects, played on the same simulated system: the
//! explorer must find them failing, so it stays able to fail (issue 8).
//!
//! - [`range_mutex_herd`]: a per-range migration mutex taken after a
//!   temporary page reference (amdgpu's `migration_mutex` around
//!   `do_swap_page`'s `get_page`), migrating the whole range or nothing.
//!   Threads hammering one page hold references while they queue on the
//!   mutex, so the holder's migration keeps failing: "the migration won't
//!   ever work, because there's other threads that have an elevated page
//!   reference".
//! - [`whole_pile_without_fallback`]: rule 2 broken (no single-page
//!   fallback, a failed pile retried whole): the livelock of threads that
//!   grab a range in different orders.
//! - [`rule8_broken`]: pages go back to RAM without the GPU being told to
//!   unmap them first: the GPU keeps using mappings of pages that left.
//! - [`peer_push_lost`]: several GPUs, and a push from one GPU's VRAM to
//!   another's that never lands but is reported done: the page's new
//!   frame holds stale data.

use ipc_protocol::types::PageMask;
use pager::migrate::{Chunk, Policy};
use pager::state::Residency;
use shuttle::sync::{Arc, Mutex};
use shuttle::thread::spawn;

use crate::scenarios::{herd_all_pages_with, start};
pub use crate::several_gpus::peer_push_lost;
use crate::world::{World, WorldConfig};

/// Tries before a fault under the rejected design counts as stuck.
const RETRIES: u32 = 20;

/// One CPU fault under the rejected range-mutex design.
fn range_mutex_fault(w: &World, range: &Mutex<()>, p: usize) {
    let table = w.pager.table();
    for _ in 0..RETRIES {
        if table.info(p).expect("page").residency == Residency::System {
            return;
        }
        // do_swap_page's get_page, then the range's migration mutex.
        table.get_ref(p).expect("page");
        let done = {
            let _m = range.lock().unwrap_or_else(|e| e.into_inner());
            table.put_ref(p).expect("page"); // migrate_vma expects the caller's own reference
            let chunk = Chunk {
                first: 0,
                count: w.machine.pages,
            };
            let mut held = PageMask::EMPTY;
            let mut from = vec![Residency::Empty; chunk.count];
            let mut all = true;
            for q in 0..chunk.count {
                match table.try_lock(q).expect("page") {
                    Some(r @ Residency::Device { .. }) => {
                        held.set(q);
                        from[q] = r;
                    }
                    Some(r) => table.unlock(q, r).expect("page"),
                    None => all = false,
                }
            }
            // The whole range or nothing.
            let got = if all && !held.is_empty() {
                w.pager.migrate_locked(chunk, &held, &from)
            } else {
                PageMask::EMPTY
            };
            for q in held.iter() {
                table
                    .unlock(
                        q,
                        if got.get(q) {
                            Residency::System
                        } else {
                            from[q]
                        },
                    )
                    .expect("page");
            }
            table.get_ref(p).expect("page");
            all
        };
        table.put_ref(p).expect("page");
        if done && table.info(p).expect("page").residency == Residency::System {
            return;
        }
        shuttle::thread::yield_now();
    }
    panic!("range-mutex design: the fault on page {p} never completed");
}

/// Three threads hammer one page in VRAM under the range-mutex design.
pub fn range_mutex_herd() {
    let w = Arc::new(World::new(&WorldConfig {
        pages: 4,
        ..Default::default()
    }));
    for p in 0..4 {
        w.seed(p, start(p));
    }
    for p in 0..4 {
        assert!(w.gpu_access(p, 1));
    }
    let range = Arc::new(Mutex::new(()));
    let hs: Vec<_> = (0..3)
        .map(|_| {
            let (w, range) = (w.clone(), range.clone());
            spawn(move || range_mutex_fault(&w, &range, 1))
        })
        .collect();
    for h in hs {
        h.join().expect("a faulting thread failed");
    }
}

/// Rule 2 broken.
pub fn whole_pile_without_fallback() {
    herd_all_pages_with(Policy::NoFallback);
}

/// Rule 8 broken: the GPU keeps passing over two pages while a CPU thread
/// keeps pulling them back without the GPU being told.
pub fn rule8_broken() {
    let w = Arc::new(World::new(&WorldConfig {
        pages: 2,
        skip_invalidate: true,
        ..Default::default()
    }));
    for p in 0..2 {
        w.seed(p, start(p));
    }
    let gpu = {
        let w = w.clone();
        spawn(move || {
            for _ in 0..4 {
                for p in 0..2 {
                    w.gpu_access(p, 1);
                }
            }
        })
    };
    let cpu = {
        let w = w.clone();
        spawn(move || {
            let view = std::sync::atomic::AtomicU64::new(0);
            for _ in 0..4 {
                for p in 0..2 {
                    w.cpu_access(&view, p, 0);
                }
            }
        })
    };
    gpu.join().expect("the GPU actor failed");
    cpu.join().expect("the CPU actor failed");
}

/// The negative checks: (name, what breaks, scenario).
pub fn all() -> Vec<(&'static str, &'static str, fn())> {
    vec![
        ("range_mutex_herd", "a per-range migration mutex behind temporary page references (the design the seed rejects)", range_mutex_herd),
        ("whole_pile_without_fallback", "a whole-block-or-nothing migration without rule 2's single-page fallback", whole_pile_without_fallback),
        ("rule8_broken", "migration back to RAM without invalidating the GPU first", rule8_broken),
        ("peer_push_lost", "a push between GPUs reported done, never copied", peer_push_lost),
    ]
}
