//! The VRAM allocator: a buddy allocator of 4 KiB to 2 MiB blocks.
//!
//! Rule 6 (DESIGN.md 4.6): a block holding SVM pages is refcounted by its
//! resident pages and freed when the last one leaves, whatever path each
//! page left by (a CPU fault, eviction, unmap). Pages of one block can leave
//! one by one under rule 1; the block stays allocated until all have.

use crate::sync::{lock, Mutex, MutexGuard};
use std::collections::{BTreeMap, BTreeSet};

/// Block orders: 0 is 4 KiB, 9 is 2 MiB.
pub const MAX_ORDER: u32 = 9;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VramError {
    /// No free block of the order (or larger) is left.
    Exhausted,
    /// A page or block the allocator does not know.
    NotAllocated,
    /// An address range outside what the tables can map.
    BadRange,
}

#[derive(Debug, Clone, Copy)]
struct Block {
    order: u32,
    /// Resident pages; the block is freed when this returns to zero.
    refs: u32,
    /// The most resident pages it ever had: a block fewer pages than its
    /// size ever filled wastes VRAM (a migration must [`Vram::keep`]).
    peak: u32,
}

struct Buddy {
    free: Vec<BTreeSet<u64>>,
    /// Allocated blocks by first frame: ordered, so the block holding a
    /// frame is one range lookup ([`Vram::block_of`]).
    used: BTreeMap<u64, Block>,
    used_pages: u64,
}

/// An allocated block as [`Vram::blocks`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockInfo {
    pub first_pfn: u64,
    pub pages: u64,
    /// Pages resident in it now.
    pub resident: u32,
    /// Whether every page of it was resident at once (rule 6 then lets
    /// them leave one by one; a block never filled was wasted VRAM).
    pub filled: bool,
}

pub struct Vram {
    inner: Mutex<Buddy>,
    first_pfn: u64,
    total_pages: u64,
}

impl Vram {
    /// Manages page frames `[first_pfn, first_pfn + pages)`; both must be
    /// multiples of 512 (2 MiB).
    pub fn new(first_pfn: u64, pages: u64) -> Self {
        let mut free = vec![BTreeSet::new(); MAX_ORDER as usize + 1];
        let top = 1u64 << MAX_ORDER;
        for pfn in (first_pfn..first_pfn + pages - pages % top).step_by(top as usize) {
            free[MAX_ORDER as usize].insert(pfn);
        }
        Self {
            inner: Mutex::new(Buddy {
                free,
                used: BTreeMap::new(),
                used_pages: 0,
            }),
            first_pfn,
            total_pages: pages,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Buddy> {
        lock(&self.inner)
    }

    pub fn total_pages(&self) -> u64 {
        self.total_pages
    }

    /// Whether `pfn` is one of the frames this allocator hands out.
    pub fn manages(&self, pfn: u64) -> bool {
        let top = 1u64 << MAX_ORDER;
        let end = self.first_pfn + self.total_pages - self.total_pages % top;
        (self.first_pfn..end).contains(&pfn)
    }

    pub fn used_pages(&self) -> u64 {
        self.lock().used_pages
    }

    /// Whether frame `pfn` lies in an allocated block (checks and tests:
    /// a page may live only in a block that is still allocated, rule 6).
    pub fn holds(&self, pfn: u64) -> bool {
        let b = self.lock();
        (0..=MAX_ORDER).any(|o| {
            b.used
                .get(&(pfn & !((1u64 << o) - 1)))
                .is_some_and(|bl| bl.order == o)
        })
    }

    /// Allocates a block of `2^order` pages with no resident pages yet.
    pub fn alloc(&self, order: u32) -> Result<u64, VramError> {
        let mut b = self.lock();
        let from = (order..=MAX_ORDER)
            .find(|o| !b.free[*o as usize].is_empty())
            .ok_or(VramError::Exhausted)?;
        let pfn = b.free[from as usize]
            .pop_first()
            .ok_or(VramError::Exhausted)?;
        // Split down, returning the upper halves.
        for o in (order..from).rev() {
            b.free[o as usize].insert(pfn + (1 << o));
        }
        b.used.insert(
            pfn,
            Block {
                order,
                refs: 0,
                peak: 0,
            },
        );
        b.used_pages += 1 << order;
        Ok(pfn)
    }

    /// Every allocated block by frame (the simulation's end-of-run check).
    pub fn blocks(&self) -> Vec<BlockInfo> {
        let b = self.lock();
        let mut v: Vec<_> = b
            .used
            .iter()
            .map(|(&first_pfn, bl)| BlockInfo {
                first_pfn,
                pages: 1 << bl.order,
                resident: bl.refs,
                filled: u64::from(bl.peak) == 1 << bl.order,
            })
            .collect();
        v.sort_by_key(|i| i.first_pfn);
        v
    }

    /// Counts `n` pages of the block at `pfn` as resident.
    pub fn add_refs(&self, pfn: u64, n: u32) -> Result<(), VramError> {
        let mut b = self.lock();
        let block = b.used.get_mut(&pfn).ok_or(VramError::NotAllocated)?;
        block.refs += n;
        block.peak = block.peak.max(block.refs);
        Ok(())
    }

    /// Keeps of the fresh block at `pfn` (no resident page yet) the pages
    /// `resident(i)` names (page `i` of the block), each counted as
    /// resident, and gives back every aligned part holding none of them: a
    /// migration that filled only part of its block (some of its region
    /// was in VRAM already, or the pager held some pages) wastes no VRAM.
    /// The kept pages stay where they are, so the region's frames are
    /// still contiguous for a large-page mapping.
    pub fn keep(&self, pfn: u64, resident: impl Fn(u64) -> bool) -> Result<(), VramError> {
        let mut b = self.lock();
        let order = match b.used.get(&pfn) {
            Some(bl) if bl.refs == 0 => bl.order,
            _ => return Err(VramError::NotAllocated),
        };
        b.used.remove(&pfn);
        b.used_pages -= 1 << order;
        Self::keep_part(&mut b, pfn, order, &|p| resident(p - pfn));
        Ok(())
    }

    /// [`Self::keep`] on the part at `base` of `2^order` pages.
    fn keep_part(b: &mut Buddy, base: u64, order: u32, resident: &dyn Fn(u64) -> bool) {
        let size = 1u64 << order;
        let n = (base..base + size).filter(|p| resident(*p)).count() as u32;
        if n == 0 {
            Self::merge_free(b, base, order);
        } else if u64::from(n) == size {
            b.used.insert(
                base,
                Block {
                    order,
                    refs: n,
                    peak: n,
                },
            );
            b.used_pages += size;
        } else {
            Self::keep_part(b, base, order - 1, resident);
            Self::keep_part(b, base + size / 2, order - 1, resident);
        }
    }

    /// A restarted server's first step (`adopt.rs`): counts each frame of
    /// `frames` as a resident page, as if a migration had kept it, so the
    /// frames its predecessor left pages in are never handed out. Works on
    /// an allocator nothing was allocated from; returns the frames it
    /// could not claim (outside the managed frames, or in a 2 MiB block
    /// already allocated).
    pub fn claim(&self, frames: &BTreeSet<u64>) -> Vec<u64> {
        let mut b = self.lock();
        let top = 1u64 << MAX_ORDER;
        let mut refused = Vec::new();
        let mut at = frames.iter().copied().peekable();
        while let Some(&first) = at.peek() {
            let base = first & !(top - 1);
            let in_block = std::iter::from_fn(|| at.next_if(|f| *f < base + top));
            if b.free[MAX_ORDER as usize].remove(&base) {
                in_block.for_each(drop);
                Self::keep_part(&mut b, base, MAX_ORDER, &|p| frames.contains(&p));
            } else {
                refused.extend(in_block);
            }
        }
        refused
    }

    /// Frees a block none of whose pages became resident (a failed copy).
    pub fn free_unused(&self, pfn: u64) -> Result<(), VramError> {
        let mut b = self.lock();
        match b.used.get(&pfn) {
            Some(bl) if bl.refs == 0 => {
                let order = bl.order;
                Self::free_block(&mut b, pfn, order);
                Ok(())
            }
            _ => Err(VramError::NotAllocated),
        }
    }

    /// Rule 6: the page at `pfn` left VRAM. Frees its block when it was the
    /// block's last resident page; returns whether it did.
    pub fn release_page(&self, pfn: u64) -> Result<bool, VramError> {
        Self::release_locked(&mut self.lock(), pfn)
    }

    /// Releases each of `pfns` as [`Vram::release_page`] does, under one
    /// lock (a chunk freed after a migration is 512 frames). Returns the
    /// frames that were not allocated (left alone, as `release_page`
    /// refuses them).
    pub fn release_pages(&self, pfns: &[u64]) -> usize {
        let mut b = self.lock();
        pfns.iter()
            .filter(|&&pfn| Self::release_locked(&mut b, pfn).is_err())
            .count()
    }

    /// [`Vram::release_page`] under the allocator's lock.
    fn release_locked(b: &mut Buddy, pfn: u64) -> Result<bool, VramError> {
        let (base, order) = Self::block_of(b, pfn).ok_or(VramError::NotAllocated)?;
        let block = b.used.get_mut(&base).ok_or(VramError::NotAllocated)?;
        if block.refs == 0 {
            return Err(VramError::NotAllocated);
        }
        block.refs -= 1;
        if block.refs == 0 {
            Self::free_block(b, base, order);
            return Ok(true);
        }
        Ok(false)
    }

    /// The block holding `pfn`: (its first frame, its order).
    fn block_of(b: &Buddy, pfn: u64) -> Option<(u64, u32)> {
        // Blocks never overlap: only the last one starting at or below
        // `pfn` can hold it.
        let (&base, block) = b.used.range(..=pfn).next_back()?;
        (pfn - base < 1u64 << block.order).then_some((base, block.order))
    }

    /// Gives back the aligned parts of the block holding `pfn` that hold no
    /// resident page now (`resident(frame)`), after some of its pages left:
    /// an unmapped range's pages free their VRAM without waiting for the
    /// rest of their block. Does nothing unless `resident` names exactly
    /// as many frames of the block as it counts (the caller's view of it
    /// must be whole). Returns the pages given back.
    pub fn trim(&self, pfn: u64, resident: impl Fn(u64) -> bool) -> u64 {
        let mut b = self.lock();
        let Some((base, order)) = Self::block_of(&b, pfn) else {
            return 0;
        };
        let size = 1u64 << order;
        let refs = b.used.get(&base).map_or(0, |bl| u64::from(bl.refs));
        // A full block (or one being filled) has nothing to give back: no
        // scan. The caller trims once per page that left, so most calls
        // end here.
        if refs == 0 || refs == size {
            return 0;
        }
        if (base..base + size).filter(|p| resident(*p)).count() as u64 != refs {
            return 0;
        }
        let before = b.used_pages;
        b.used.remove(&base);
        b.used_pages -= size;
        Self::keep_part(&mut b, base, order, &resident);
        before - b.used_pages
    }

    fn free_block(b: &mut Buddy, pfn: u64, order: u32) {
        b.used.remove(&pfn);
        b.used_pages -= 1 << order;
        Self::merge_free(b, pfn, order);
    }

    /// Puts the free block at `pfn` back, merged with free buddies upward.
    fn merge_free(b: &mut Buddy, mut pfn: u64, mut order: u32) {
        while order < MAX_ORDER {
            let buddy = pfn ^ (1 << order);
            if !b.free[order as usize].remove(&buddy) {
                break;
            }
            pfn = pfn.min(buddy);
            order += 1;
        }
        b.free[order as usize].insert(pfn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule6_block_freed_only_when_its_last_page_leaves() {
        let v = Vram::new(0, 1024);
        let block = v.alloc(MAX_ORDER).unwrap();
        v.add_refs(block, 512).unwrap();
        // The seed's case: eviction moves 511 pages, a CPU fault moves 1.
        for p in 0..511 {
            assert_eq!(
                v.release_page(block + p),
                Ok(false),
                "freed early at page {p}"
            );
        }
        assert_eq!(v.used_pages(), 512, "still allocated");
        assert_eq!(v.release_page(block + 511), Ok(true));
        assert_eq!(v.used_pages(), 0);
        assert_eq!(v.release_page(block), Err(VramError::NotAllocated));
    }

    #[test]
    fn a_bulk_release_frees_each_block_with_its_last_page_and_refuses_the_rest() {
        let v = Vram::new(0, 2048);
        let (a, b) = (v.alloc(MAX_ORDER).unwrap(), v.alloc(MAX_ORDER).unwrap());
        v.add_refs(a, 512).unwrap();
        v.add_refs(b, 512).unwrap();
        // All of `a`, half of `b`, interleaved, and a frame never allocated.
        let mut frames: Vec<u64> = (0..512).map(|p| a + p).collect();
        frames.extend((0..256).map(|p| b + p));
        frames.insert(100, b + 300);
        frames.push(1536);
        assert_eq!(v.release_pages(&frames), 1, "only the unallocated frame");
        assert_eq!(v.used_pages(), 512, "a freed with its last page; b not");
        let rest: Vec<u64> = (256..512).filter(|p| *p != 300).map(|p| b + p).collect();
        assert_eq!(v.release_pages(&rest), 0);
        assert_eq!(v.used_pages(), 0);
        assert_eq!(v.release_pages(&[a, b]), 2, "freed frames are refused");
    }

    #[test]
    fn claimed_frames_are_never_handed_out_and_free_as_their_pages_leave() {
        let v = Vram::new(512, 1536);
        let claimed: BTreeSet<u64> = [512, 513, 700, 1100, 1101, 1102, 1103]
            .into_iter()
            .collect();
        let outside: BTreeSet<u64> = [0, 2048, 5000].into_iter().collect();
        let all: BTreeSet<u64> = claimed.union(&outside).copied().collect();
        assert_eq!(v.claim(&all), vec![0, 2048, 5000], "outside the frames");
        assert_eq!(v.used_pages(), claimed.len() as u64);
        assert!(claimed.iter().all(|f| v.holds(*f)));
        // Every other frame is handed out; none of the claimed ones.
        let mut got = BTreeSet::new();
        while let Ok(b) = v.alloc(0) {
            assert!(
                got.insert(b) && !claimed.contains(&b),
                "frame {b} handed out"
            );
        }
        assert_eq!(got.len() as u64 + claimed.len() as u64, 1536);
        for f in got {
            v.release_page(f).unwrap_err();
            v.free_unused(f).unwrap();
        }
        for f in &claimed {
            v.release_page(*f).unwrap();
        }
        assert_eq!(v.used_pages(), 0, "each claimed page freed its block");
        assert_eq!(v.alloc(MAX_ORDER).map(|_| ()), Ok(()), "merged back whole");
        // A second claim of frames in an allocated block is refused.
        let b = v.alloc(MAX_ORDER).unwrap();
        let inside: BTreeSet<u64> = [b + 3].into_iter().collect();
        assert_eq!(v.claim(&inside), vec![b + 3]);
    }

    #[test]
    fn keep_gives_back_what_a_migration_did_not_fill() {
        let v = Vram::new(0, 512);
        let b = v.alloc(4).unwrap();
        let kept = [0, 1, 2, 3, 9];
        v.keep(b, |i| kept.contains(&i)).unwrap();
        assert_eq!(v.used_pages(), 5, "pages 0..4 and page 9 only");
        assert!(v.holds(b + 9) && !v.holds(b + 8) && !v.holds(b + 4));
        for i in kept {
            v.release_page(b + i).unwrap();
        }
        assert_eq!(v.used_pages(), 0);
        assert!(v.alloc(MAX_ORDER).is_ok(), "everything merged back");
    }

    #[test]
    fn trim_gives_back_the_empty_parts_of_a_block() {
        let v = Vram::new(0, 512);
        let b = v.alloc(9).unwrap();
        v.keep(b, |_| true).unwrap();
        // The middle half leaves.
        let gone = |p: u64| (b + 128..b + 384).contains(&p);
        for p in b + 128..b + 384 {
            assert!(!v.release_page(p).unwrap());
        }
        assert_eq!(v.used_pages(), 512, "rule 6 alone keeps the block");
        assert_eq!(v.trim(b, |p| !gone(p)), 256);
        assert_eq!(v.used_pages(), 256);
        assert!(v.holds(b) && v.holds(b + 511) && !v.holds(b + 200));
        // A caller whose count disagrees changes nothing.
        assert_eq!(v.trim(b, |_| false), 0);
        // The rest leaves page by page; everything merges back.
        for p in (b..b + 128).chain(b + 384..b + 512) {
            v.release_page(p).unwrap();
        }
        assert_eq!(v.used_pages(), 0);
        assert_eq!(v.alloc(9).unwrap(), b);
    }

    #[test]
    fn split_and_merge() {
        let v = Vram::new(512, 512);
        let a = v.alloc(0).unwrap();
        let b = v.alloc(4).unwrap();
        assert_eq!(v.alloc(MAX_ORDER), Err(VramError::Exhausted));
        v.free_unused(a).unwrap();
        v.add_refs(b, 1).unwrap();
        assert_eq!(v.release_page(b + 3), Ok(true));
        // Everything merged back into one 2 MiB block.
        assert_eq!(v.alloc(MAX_ORDER), Ok(512));
    }

    #[test]
    fn exhaustion_is_a_typed_error() {
        let v = Vram::new(0, 512);
        for _ in 0..512 {
            v.alloc(0).unwrap();
        }
        assert_eq!(v.alloc(0), Err(VramError::Exhausted));
    }
}
