//! Density-sized migrations (issue 15): how many pages a GPU fault moves.
//!
//! UVM's tree-based prefetcher, on 4 KiB leaves: the regions around the
//! faulting page form a binary tree from one page up to the 2 MiB chunk;
//! a region is migrated whole when more than half of its pages are
//! *touched* (already resident in our VRAM, or faulting in the same batch).
//! The largest such region wins. Random 4 KiB touches therefore move about
//! the pages they touch, while a dense walk grows its migrations
//! geometrically to the whole chunk.
//!
//! Sweeps: when a neighbouring chunk of the same object is more than half
//! resident, or the [`SWEEP_PAGES`] pages just before (or just after) the
//! faulting page are all resident, the access sweeps through the object
//! and the whole chunk moves at once: a dense walk pays for a few faults
//! of growth per sweep, not for nine per chunk. Random access never fills
//! half a region, so it never makes such runs and never takes this path.

/// Pages in the largest migration: one 2 MiB chunk.
pub const CHUNK_PAGES: u64 = 512;
/// A run of this many resident pages next to the fault marks a sweep.
pub const SWEEP_PAGES: u64 = 16;

/// What the fault's page sees around it.
pub trait Occupancy {
    /// Whether object page `page` is resident in our VRAM (pages outside
    /// the object are not).
    fn resident(&self, page: u64) -> bool;
}

impl<F: Fn(u64) -> bool> Occupancy for F {
    fn resident(&self, page: u64) -> bool {
        self(page)
    }
}

/// How migrations are sized. Whole chunks by default; `XE_SVM_MIGRATION=
/// density` in xe-svm's environment opts in to density sizing, which is
/// not the default while under oversubscription with CPU readers it moves
/// 4 KiB per fault round (BENCHMARKS.md, 2026-12-03). (The simulation's
/// scenarios all pass with it.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sizing {
    /// [`migration_pages`]: by density.
    Density,
    /// The largest of 2 MiB, 64 KiB and 4 KiB that fits.
    WholeChunk,
}

impl Sizing {
    /// The sizing of this process, read from the environment once.
    pub fn configured() -> Sizing {
        static SIZING: std::sync::OnceLock<Sizing> = std::sync::OnceLock::new();
        *SIZING.get_or_init(|| match std::env::var("XE_SVM_MIGRATION") {
            Ok(v) if v == "density" => {
                log::info!("xe-svm: migrations sized by density (XE_SVM_MIGRATION)");
                Sizing::Density
            }
            _ => Sizing::WholeChunk,
        })
    }

    /// The pages to migrate for a fault at `page` under this sizing.
    pub fn pages(
        self,
        occ: &impl Occupancy,
        batch: &[u64],
        page: u64,
        fits: impl Fn(u64) -> bool,
    ) -> u64 {
        match self {
            Sizing::Density => migration_pages(occ, batch, page, fits),
            Sizing::WholeChunk => [CHUNK_PAGES, 16]
                .into_iter()
                .find(|n| fits(*n))
                .unwrap_or(1),
        }
    }
}

/// The pages to migrate for a GPU fault at object page `page`: a power of
/// two from 1 to [`CHUNK_PAGES`], its region aligned to its size. `batch`:
/// object pages faulting in the same batch (counted as touched). `fits`:
/// whether a region of that many pages around `page` may be mapped whole
/// (inside the binding, aligned alike in GPU and object space); regions
/// that do not fit are never chosen.
pub fn migration_pages(
    occ: &impl Occupancy,
    batch: &[u64],
    page: u64,
    fits: impl Fn(u64) -> bool,
) -> u64 {
    if fits(CHUNK_PAGES) && (streaming(occ, page) || sweeping(occ, page)) {
        return CHUNK_PAGES;
    }
    // The chunk's touched pages as a bitmap, built once; each level of
    // the tree then counts its region's bits.
    let base = page & !(CHUNK_PAGES - 1);
    let mut touched = [0u64; (CHUNK_PAGES / 64) as usize];
    let mut mark = |p: u64| {
        if let Some(i) = p.checked_sub(base).filter(|i| *i < CHUNK_PAGES) {
            touched[(i / 64) as usize] |= 1 << (i % 64);
        }
    };
    mark(page);
    batch.iter().for_each(|p| mark(*p));
    for p in base..base + CHUNK_PAGES {
        if occ.resident(p) {
            mark(p);
        }
    }
    let count = |first: u64, size: u64| {
        (first..first + size)
            .filter(|p| touched[((p - base) / 64) as usize] & (1 << ((p - base) % 64)) != 0)
            .count() as u64
    };
    let mut best = 1;
    let mut size = 2;
    while size <= CHUNK_PAGES && fits(size) {
        if count(page & !(size - 1), size) * 2 > size {
            best = size;
        }
        size *= 2;
    }
    best
}

/// Whether the [`SWEEP_PAGES`] pages just before `page`, or just after
/// it, are all resident.
fn sweeping(occ: &impl Occupancy, page: u64) -> bool {
    let before = page
        .checked_sub(SWEEP_PAGES)
        .is_some_and(|lo| (lo..page).all(|p| occ.resident(p)));
    before || (page + 1..page + 1 + SWEEP_PAGES).all(|p| occ.resident(p))
}

/// Whether a chunk next to `page`'s is more than half resident.
fn streaming(occ: &impl Occupancy, page: u64) -> bool {
    let chunk = page / CHUNK_PAGES;
    let half_resident = |c: u64| {
        let first = c * CHUNK_PAGES;
        let n = (first..first + CHUNK_PAGES)
            .filter(|p| occ.resident(*p))
            .count() as u64;
        n * 2 > CHUNK_PAGES
    };
    chunk.checked_sub(1).is_some_and(half_resident) || half_resident(chunk + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    fn any(_: u64) -> bool {
        true
    }

    #[test]
    fn an_isolated_touch_moves_one_page() {
        let none = |_: u64| false;
        assert_eq!(migration_pages(&none, &[], 700, any), 1);
        assert_eq!(migration_pages(&none, &[700], 700, any), 1);
    }

    #[test]
    fn a_dense_walk_grows_to_the_chunk_then_streams() {
        // Pages fault one at a time in order; each fault moves its region.
        let resident = RefCell::new(BTreeSet::new());
        let occ = |p: u64| resident.borrow().contains(&p);
        let mut faults = 0;
        let mut moved = 0;
        for page in 0..4 * CHUNK_PAGES {
            if occ(page) {
                continue;
            }
            faults += 1;
            let n = migration_pages(&occ, &[], page, any);
            let first = page & !(n - 1);
            for p in first..first + n {
                moved += u64::from(resident.borrow_mut().insert(p));
            }
        }
        assert_eq!(moved, 4 * CHUNK_PAGES);
        // The first chunk grows 1, 2, 4, 8, 16 (faults at 0, 1, 2, 4, 8),
        // then the sweep takes the chunk at page 16; one fault per chunk
        // after it.
        assert_eq!(faults, 6 + 3, "faults {faults}");
    }

    #[test]
    fn a_batch_of_neighbours_counts_as_touched() {
        let none = |_: u64| false;
        let batch: Vec<u64> = (64..128).collect();
        assert_eq!(migration_pages(&none, &batch, 64, any), 64);
    }

    #[test]
    fn random_touches_move_at_most_twice_the_pages_touched() {
        let resident = RefCell::new(BTreeSet::new());
        let occ = |p: u64| resident.borrow().contains(&p);
        let pages = 64 * CHUNK_PAGES;
        let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
        let (mut touched, mut moved) = (0u64, 0u64);
        for _ in 0..4096 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let page = rng % pages;
            touched += 1;
            if occ(page) {
                continue;
            }
            let n = migration_pages(&occ, &[], page, any);
            let first = page & !(n - 1);
            for p in first..first + n {
                moved += u64::from(resident.borrow_mut().insert(p));
            }
        }
        assert!(moved <= 2 * touched, "moved {moved} for {touched} touched");
    }

    #[test]
    fn regions_that_do_not_fit_are_never_chosen() {
        let all = |_: u64| true;
        assert_eq!(migration_pages(&all, &[], 5, |n| n <= 16), 16);
        assert_eq!(migration_pages(&all, &[], 5, |n| n == 1), 1);
    }
}
