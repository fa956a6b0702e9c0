//! DESIGN.md rules 1, 2, 3 and 4 on real threads, with every page's data
//! checked. Each test names its rule; the `Policy::NoFallback` tests show
//! what breaks without rules 1 and 2.
#![cfg(not(feature = "shuttle"))]

use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};

use ipc_protocol::types::PageMask;
use pager::migrate::{
    collect, cpu_fault, finalize, Chunk, FaultError, FaultOutcome, Peers, Policy,
};
use pager::state::{PageTable, Residency};
use pager::testing::{
    all_in_ram, all_in_vram as in_vram, bring_back_and_check, gpu_migrate, pattern, ModelBackend,
};

fn check_all_in_ram(t: &PageTable, b: &ModelBackend) {
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
            "page {p} moved more than once"
        );
    }
}

#[test]
fn rule3_herd_one_page() {
    let (t, b) = in_vram(512);
    let barrier = Arc::new(Barrier::new(16));
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let (t, b, barrier) = (t.clone(), b.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let r = cpu_fault(&t, &*b, 7, Policy::Rules).unwrap();
                assert_eq!(b.ram[7].load(Ordering::Acquire), pattern(7));
                r
            })
        })
        .collect();
    let outcomes: Vec<_> = threads.into_iter().map(|h| h.join().unwrap()).collect();
    let movers = outcomes
        .iter()
        .filter(|o| matches!(o, FaultOutcome::Migrated { .. }))
        .count();
    assert_eq!(
        movers, 1,
        "exactly one faulter migrates; the herd just maps: {outcomes:?}"
    );
    check_all_in_ram(&t, &b);
}

#[test]
fn rule3_herd_every_page() {
    let (t, b) = in_vram(2048); // 8 MiB: four chunks
    let barrier = Arc::new(Barrier::new(16));
    let threads: Vec<_> = (0..16usize)
        .map(|n| {
            let (t, b, barrier) = (t.clone(), b.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for k in 0..2048 {
                    let p = (n * 128 + k) % 2048; // each starts at a different page
                    cpu_fault(&t, &*b, p, Policy::Rules).unwrap();
                    assert_eq!(
                        b.ram[p].load(Ordering::Acquire),
                        pattern(p),
                        "page {p} read by thread {n}"
                    );
                }
            })
        })
        .collect();
    for h in threads {
        h.join().unwrap();
    }
    check_all_in_ram(&t, &b);
}

#[test]
fn rule1_partial_migration_skips_held_pages_and_converges() {
    let (t, b) = in_vram(512);
    // Another migration holds pages 10..20.
    for p in 10..20 {
        assert!(t.try_lock(p).unwrap().is_some());
    }
    let r = cpu_fault(&t, &*b, 0, Policy::Rules).unwrap();
    assert_eq!(
        r,
        FaultOutcome::Migrated {
            pages: 502,
            fallback: false
        }
    );
    // Rule 4: the range is mixed now.
    assert!(matches!(
        t.info(15).unwrap().residency,
        Residency::Device { .. }
    ));
    assert_eq!(t.info(30).unwrap().residency, Residency::System);
    for p in 10..20 {
        t.unlock(
            p,
            Residency::Device {
                gpu: 0,
                pfn: p as u64,
            },
        )
        .unwrap();
    }
    assert_eq!(
        cpu_fault(&t, &*b, 15, Policy::Rules).unwrap(),
        FaultOutcome::Migrated {
            pages: 10,
            fallback: false
        }
    );
    check_all_in_ram(&t, &b);
}

#[test]
fn rule2_fallback_to_the_faulting_page() {
    let (t, _) = in_vram(512);
    let mut b = ModelBackend::new(512);
    b.fail_batches_over = 1; // every pile fails
    for p in 0..512 {
        b.vram[p].store(pattern(p), Ordering::Release);
    }
    assert_eq!(
        cpu_fault(&t, &b, 3, Policy::Rules).unwrap(),
        FaultOutcome::Migrated {
            pages: 1,
            fallback: true
        }
    );
    assert_eq!(b.ram[3].load(Ordering::Acquire), pattern(3));
    assert!(matches!(
        t.info(4).unwrap().residency,
        Residency::Device { .. }
    ));
}

#[test]
fn rule2_broken_no_progress_while_a_neighbour_is_held() {
    // The same situation under the policy the seed rejects: a fault that
    // insists on the whole pile never completes while another migration
    // holds one page of it; with the rules it completes at once.
    let (t, b) = in_vram(512);
    assert!(t.try_lock(100).unwrap().is_some());
    let broken = cpu_fault(&t, &*b, 0, Policy::NoFallback);
    assert!(
        matches!(broken, Err(FaultError::Backend(_))),
        "expected no progress, got {broken:?}"
    );
    assert!(matches!(
        t.info(0).unwrap().residency,
        Residency::Device { .. }
    ));
    assert!(
        !t.info(0).unwrap().locked,
        "the failed fault released its page"
    );
    assert!(matches!(
        cpu_fault(&t, &*b, 0, Policy::Rules),
        Ok(FaultOutcome::Migrated { pages: 511, .. })
    ));
}

#[test]
fn rule4_collect_takes_what_it_gets_and_finalize_is_per_page() {
    let t = PageTable::new(512);
    let b = ModelBackend::new(512);
    for p in 0..512 {
        if p % 2 == 0 {
            assert!(t.try_lock(p).unwrap().is_some());
            t.unlock(p, Residency::System).unwrap();
            b.ram[p].store(pattern(p), Ordering::Release);
        }
    }
    // A CPU migration holds page 8.
    assert!(t.try_lock(8).unwrap().is_some());
    let chunk = Chunk::around(0, 512);
    let c = collect(&t, &b, chunk, 1, Peers::Skip).unwrap();
    assert!(!c.got.get(8), "a page held elsewhere is skipped");
    assert_eq!(c.got.count(), 511);
    assert_eq!(c.zero.count(), 256, "odd pages were never touched");
    // The copy of pages 100..=199 failed: they stay where they were.
    let mut migrated = c.got;
    for i in 100..200 {
        migrated.clear(i);
    }
    let done = finalize(&t, &b, chunk, &c, &migrated, 1, 1000).unwrap();
    assert_eq!((done.device, done.returned), (migrated, 100));
    assert_eq!(done.device.count(), 411);
    assert_eq!(
        t.info(0).unwrap().residency,
        Residency::Device { gpu: 1, pfn: 1000 }
    );
    assert_eq!(t.info(100).unwrap().residency, Residency::System);
    // Never touched, and the GPU maps it where it is: it has its RAM page
    // now (a GPU write there is data, never "empty" again).
    assert_eq!(t.info(101).unwrap().residency, Residency::System);
    assert!(t.info(8).unwrap().locked);
    // The data of every page that moved reached VRAM.
    for p in (0..512).step_by(2).filter(|p| migrated.get(*p) && *p != 8) {
        assert_eq!(b.vram[p].load(Ordering::Acquire), pattern(p));
    }
    let _ = PageMask::EMPTY;
}

#[test]
fn gpu_collect_racing_cpu_faults_keeps_every_page() {
    // Pages in RAM; a GPU migrates chunks to VRAM while CPU threads fault
    // them back. In the end every page holds its data wherever it is.
    let (t, b) = all_in_ram(1024);
    let gpu = {
        let (t, b) = (t.clone(), b.clone());
        std::thread::spawn(move || {
            for round in 0..50u64 {
                gpu_migrate(
                    &t,
                    &b,
                    Chunk::around((round as usize * 512) % 1024, 1024),
                    round * 512,
                );
            }
        })
    };
    let cpus: Vec<_> = (0..4usize)
        .map(|n| {
            let (t, b) = (t.clone(), b.clone());
            std::thread::spawn(move || {
                for k in 0..4096 {
                    let p = (n * 257 + k * 7) % 1024;
                    cpu_fault(&t, &*b, p, Policy::Rules).unwrap();
                    // Resident now (or moved again by the GPU after we returned).
                    let i = t.info(p).unwrap();
                    if i.residency == Residency::System && !i.locked {
                        let v = b.ram[p].load(Ordering::Acquire);
                        assert!(
                            v == pattern(p)
                                || !matches!(t.info(p).unwrap().residency, Residency::System),
                            "page {p}: {v:#x}"
                        );
                    }
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

/// No silent loss: a never-touched page the GPU could not move (no VRAM,
/// a failed copy) is mapped where it is, and the GPU may write it. Its
/// finalize gives it a RAM page, so the next collect copies the GPU's
/// write instead of taking the page for "never written" (zeros).
#[test]
fn a_fresh_page_the_gpu_maps_in_place_is_never_zeroed_later() {
    let t = PageTable::new(512);
    let b = ModelBackend::new(512);
    let chunk = Chunk::around(0, 512);
    let c = collect(&t, &b, chunk, 1, Peers::Skip).unwrap();
    assert_eq!(c.zero.count(), 512, "every page starts never touched");
    // No VRAM: nothing migrated; the GPU maps the pages as system pages.
    finalize(&t, &b, chunk, &c, &PageMask::EMPTY, 1, 0).unwrap();
    b.ram[7].store(77, Ordering::Release); // a GPU write through that mapping
    let again = collect(&t, &b, chunk, 1, Peers::Skip).unwrap();
    assert!(again.got.get(7), "page 7 is collected again");
    assert!(
        !again.zero.get(7),
        "page 7 holds the GPU's write, not zeros"
    );
    let all = again.got;
    finalize(&t, &b, chunk, &again, &all, 1, 1000).unwrap();
    assert_eq!(
        b.vram[7].load(Ordering::Acquire),
        77,
        "the write reached VRAM"
    );
}
