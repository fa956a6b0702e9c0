//! Views that change shape (issue 16 item 9): a munmap of the middle of a
//! view while the GPU and a CPU thread migrate its pages.
//!
//! The pager splits the view: each part left is a view of its own whose
//! GPU bindings are twins of the old view's over its pages (`ViewPart`,
//! sent before `ViewGone` ends the old one), and the pages of the hole,
//! which no view reaches now, leave VRAM with their data. Checked: the GPU
//! reaches every page of both parts after the split (and no page of the
//! hole), no page of the hole is in VRAM, and every page holds exactly the
//! increments that reached it (those the GPU made in the hole before the
//! split too: its data moved back, nothing was dropped).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc as StdArc;

use pager::state::Residency;
use shuttle::thread::spawn;

use crate::hostile::{finish, join, world};
use crate::net::delay;
use crate::scenarios::{start, Scenario};
use crate::world::WorldConfig;

/// One 64 KiB migration: a fault moves every page of the binding.
const PAGES: usize = 16;
/// The hole the munmap makes.
const HOLE: core::ops::Range<usize> = 6..10;

pub fn all() -> Vec<Scenario> {
    vec![Scenario {
        name: "unmap_middle_racing_migration",
        about: "the middle of a view is unmapped while the GPU and a CPU thread migrate its pages",
        run: unmap_middle_racing_migration,
    }]
}

fn unmap_middle_racing_migration() {
    let w = world(WorldConfig {
        pages: PAGES,
        ..Default::default()
    });
    // The increments the GPU made to each page (some to the hole may fail).
    let by_gpu: StdArc<Vec<AtomicU64>> =
        StdArc::new((0..PAGES).map(|_| AtomicU64::new(0)).collect());
    let gpu = {
        let (w, by_gpu) = (w.clone(), by_gpu.clone());
        spawn(move || {
            for p in 0..PAGES {
                if w.gpu_access(p, 1) {
                    by_gpu[p].fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let cpu = {
        let w = w.clone();
        spawn(move || {
            let view = std::sync::atomic::AtomicU64::new(0);
            for p in (0..PAGES).rev().filter(|p| !HOLE.contains(p)) {
                w.cpu_access(&view, p, 1);
            }
        })
    };
    let splitter = {
        let w = w.clone();
        spawn(move || {
            delay(8);
            w.pager.unmap_pages(0, HOLE.start, HOLE.end);
        })
    };
    join(vec![gpu, cpu, splitter]);
    for p in 0..PAGES {
        let reached = w.gpu_access(p, 1);
        assert_eq!(
            reached,
            !HOLE.contains(&p),
            "page {p}: the GPU reaches it: {reached}"
        );
        if reached {
            by_gpu[p].fetch_add(1, Ordering::Relaxed);
        }
    }
    for p in HOLE {
        let r = w.pager.table().info(p).expect("page in range").residency;
        assert!(
            !matches!(r, Residency::Device { .. }),
            "page {p} of the hole is still in VRAM"
        );
    }
    let cpu_adds = |p: usize| u64::from(!HOLE.contains(&p));
    finish(w, move |p| {
        start(p) + by_gpu[p].load(Ordering::Relaxed) + cpu_adds(p)
    });
}
