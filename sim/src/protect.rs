//! `Gpu::Protect` in the simulation (issue 16: read-only): the GPU's
//! access follows the client's `mprotect` in every schedule.
//!
//! Half the victim's pages start read-only for the GPU. A GPU thread adds
//! 1 to every page, from the top, twice, while a CPU thread adds 1 to every page
//! and a third actor makes the other half read-only once the GPU wrote the
//! top page. Checked: a GPU write
//! never lands on a page that was read-only when the write began (the
//! first half always; the second once `Protect` returned), a refused
//! write fails instead of hanging, and every page ends with exactly the
//! increments that landed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ipc_protocol::interfaces::gpu::PROT_READ;
use shuttle::sync::Arc;
use shuttle::thread::spawn;

use crate::hostile::{cpu_pass, finish, join, world};
use crate::machine::{GpuAccess, PAGE};
use crate::pager::{where_is, CLIENT};
use crate::scenarios::{start, Scenario};
use crate::world::{World, WorldConfig, GPU_FAULT_RETRIES};

/// One 64 KiB migration: a fault maps every page of the binding.
const PAGES: usize = 16;
const HALF: usize = PAGES / 2;

pub fn all() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "read_only_refuses_gpu_writes",
            about: "GPU writes over pages read-only for the GPU, and over pages made \
                read-only mid-run, while a CPU thread writes them all",
            run: read_only_refuses_gpu_writes,
        },
        Scenario {
            name: "read_only_binding_refuses_gpu_writes",
            about: "GPU writes and reads through a binding made with BIND_READ_ONLY while a CPU \
                thread writes every page",
            run: read_only_binding_refuses_gpu_writes,
        },
    ]
}

/// `BIND_READ_ONLY`: through the victim's read-only binding every GPU
/// write is refused (never lands, never hangs) and reads go on, while the
/// CPU adds 1 to every page.
fn read_only_binding_refuses_gpu_writes() {
    let w = world(WorldConfig {
        pages: PAGES,
        read_only_binding: true,
        ..Default::default()
    });
    let gpu = {
        let w = w.clone();
        spawn(move || {
            for p in (0..PAGES).rev() {
                assert!(w.gpu_access(p, 0), "a GPU read of page {p} failed");
                assert!(
                    !gpu_write(&w, p),
                    "a GPU write landed on read-only page {p}"
                );
            }
        })
    };
    let cpu = cpu_pass(&w);
    join(vec![gpu, cpu]);
    finish(w, |p| start(p) + 1);
}

fn read_only_refuses_gpu_writes() {
    let w = world(WorldConfig {
        pages: PAGES,
        ..Default::default()
    });
    let base = w.gpu_base.load(Ordering::Acquire);
    let half = HALF as u64 * PAGE;
    w.gpu()
        .protect(CLIENT, w.vm_id(), base, half, PROT_READ)
        .expect("the first half read-only");
    let second_read_only = Arc::new(AtomicBool::new(false));
    let landed: Arc<Vec<AtomicU64>> = Arc::new((0..PAGES).map(|_| AtomicU64::new(0)).collect());
    let gpu = {
        let (w, ro, landed) = (w.clone(), second_read_only.clone(), landed.clone());
        spawn(move || {
            // From the top: the first fault maps the whole chunk, the
            // read-only half too (read-only, or the writes below land);
            // the second pass finds the mappings the first one made.
            for _ in 0..2 {
                for p in (0..PAGES).rev() {
                    let read_only_before = p < HALF || ro.load(Ordering::Acquire);
                    if gpu_write(&w, p) {
                        assert!(
                            !read_only_before,
                            "a GPU write landed on read-only page {p}"
                        );
                        landed[p].fetch_add(1, Ordering::AcqRel);
                    }
                }
            }
        })
    };
    let cpu = {
        let w = w.clone();
        spawn(move || {
            let view = std::sync::atomic::AtomicU64::new(0);
            for p in 0..PAGES {
                w.cpu_access(&view, p, 1);
            }
        })
    };
    let protector = {
        let (w, ro, landed) = (w.clone(), second_read_only.clone(), landed.clone());
        spawn(move || {
            // Once the GPU wrote the top page (its fault mapped the chunk).
            while landed[PAGES - 1].load(Ordering::Acquire) == 0 {
                shuttle::thread::yield_now();
            }
            let at = base + half;
            w.gpu()
                .protect(CLIENT, w.vm_id(), at, half, PROT_READ)
                .expect("the second half read-only");
            ro.store(true, Ordering::Release);
        })
    };
    join(vec![gpu, cpu, protector]);
    let landed: Vec<u64> = landed.iter().map(|l| l.load(Ordering::Acquire)).collect();
    finish(w, move |p| start(p) + 1 + landed[p]);
}

/// A GPU hardware thread adds 1 to page `p` (a write): `true` once it
/// landed, `false` when the GPU server refused the fault.
fn gpu_write(w: &World, p: usize) -> bool {
    for _ in 0..GPU_FAULT_RETRIES {
        let va = w.gpu_base.load(Ordering::Acquire) + p as u64 * PAGE;
        let table = w.pager.table();
        let vram = &w.gpu().vram;
        match w
            .machine
            .gpu_access(w.vm(), va, p, 1, || where_is(&table, p), |f| vram.holds(f))
        {
            GpuAccess::Done(_) => return true,
            GpuAccess::Fault => {
                let (gpu, vm) = (w.gpu().clone(), w.vm());
                if w.faults()
                    .call(move || gpu.resolve_access(vm, va, true, &[]))
                    == Some(false)
                {
                    return false;
                }
            }
        }
    }
    panic!("a GPU write to page {p} made no progress in {GPU_FAULT_RETRIES} faults");
}
