//! `Pager::Advise` in the simulation (issue 16 item 2): the preferred
//! location holds in every schedule.
//!
//! Half the victim's pages prefer system memory from the start; a GPU
//! thread and a CPU thread add 1 to every page while an actor advises the
//! other half `PreferSystem` mid-run (its pages in VRAM go back to RAM).
//! Then a last GPU pass over every page. Checked at the end: no page is in
//! VRAM (all prefer system memory), and every page holds exactly its
//! increments.
//!
//! `DeviceOnly`: a GPU pass moves every page to VRAM while a CPU thread
//! adds 1 to each; a CPU access either lands in RAM before the page moves
//! (and the GPU's increment follows it) or is refused (`SIGBUS`), never
//! moving a page back. Checked at the end: every page in VRAM, exactly
//! the increments that were not refused.

use ipc_protocol::types::Advice;
use pager::state::Residency;
use shuttle::thread::spawn;

use crate::hostile::{finish, join, world};
use crate::scenarios::{start, Scenario};
use crate::world::WorldConfig;

/// One 64 KiB migration: a fault moves every page of the binding.
const PAGES: usize = 16;
const HALF: usize = PAGES / 2;

pub fn all() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "prefer_system_keeps_pages_in_ram",
            about: "GPU and CPU writers over pages that prefer system memory, and over pages \
                advised so mid-run",
            run: prefer_system_keeps_pages_in_ram,
        },
        Scenario {
            name: "device_only_refuses_the_cpu",
            about: "a GPU pass moves device-only pages to VRAM while a CPU writer adds to them",
            run: device_only_refuses_the_cpu,
        },
    ]
}

fn device_only_refuses_the_cpu() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let w = world(WorldConfig {
        pages: PAGES,
        ..Default::default()
    });
    w.pager.advise(0, PAGES, Advice::DeviceOnly);
    let landed: Arc<Vec<AtomicBool>> =
        Arc::new((0..PAGES).map(|_| AtomicBool::new(false)).collect());
    let gpu = {
        let w = w.clone();
        spawn(move || {
            for p in 0..PAGES {
                assert!(w.gpu_access(p, 1), "the GPU could not reach page {p}");
            }
        })
    };
    let cpu = {
        let (w, landed) = (w.clone(), landed.clone());
        spawn(move || {
            let view = std::sync::atomic::AtomicU64::new(0);
            for p in (0..PAGES).rev() {
                let got = w.try_cpu_access(&view, p, 1);
                landed[p].store(got.is_some(), Ordering::Release);
            }
        })
    };
    join(vec![gpu, cpu]);
    for p in 0..PAGES {
        let r = w.pager.table().info(p).expect("page in range").residency;
        assert!(
            matches!(r, Residency::Device { .. }),
            "page {p} is device-only but a CPU fault moved it back ({r:?})"
        );
    }
    finish(w, |p| {
        start(p) + 1 + u64::from(landed[p].load(Ordering::Acquire))
    });
}

fn prefer_system_keeps_pages_in_ram() {
    let w = world(WorldConfig {
        pages: PAGES,
        ..Default::default()
    });
    w.pager.advise(0, HALF, Advice::PreferSystem);
    let gpu = {
        let w = w.clone();
        spawn(move || {
            for p in 0..PAGES {
                assert!(w.gpu_access(p, 1), "the GPU could not reach page {p}");
            }
        })
    };
    let cpu = {
        let w = w.clone();
        spawn(move || {
            let view = std::sync::atomic::AtomicU64::new(0);
            for p in (0..PAGES).rev() {
                w.cpu_access(&view, p, 1);
            }
        })
    };
    let adviser = {
        let w = w.clone();
        spawn(move || w.pager.advise(HALF, PAGES, Advice::PreferSystem))
    };
    join(vec![gpu, cpu, adviser]);
    // Every page prefers system memory now; a last GPU pass maps them in
    // place, moving none.
    for p in 0..PAGES {
        assert!(w.gpu_access(p, 1), "the GPU could not reach page {p}");
    }
    for p in 0..PAGES {
        let r = w.pager.table().info(p).expect("page in range").residency;
        assert!(
            !matches!(r, Residency::Device { .. }),
            "page {p} prefers system memory but is in VRAM"
        );
    }
    finish(w, |p| start(p) + 3);
}
