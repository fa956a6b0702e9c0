//! The VRAM allocator: a buddy allocator of 4 KiB to 2 MiB blocks.
//!
//! Rule 6 (DESIGN.md 4.6): a block holding SVM pages is refcounted by its
//! resident pages and freed when the last one leaves, whatever path each
//! page left by (a CPU fault, eviction, unmap). Pages of one block can leave
//! one by one under rule 1; the block stays allocated until all have.

use crate::sync::{lock, Mutex, MutexGuard};
use std::collections::{BTreeSet, HashMap};

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
}

struct Buddy {
    free: Vec<BTreeSet<u64>>,
    used: HashMap<u64, Block>,
    used_pages: u64,
}

pub struct Vram {
    inner: Mutex<Buddy>,
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
                used: HashMap::new(),
                used_pages: 0,
            }),
            total_pages: pages,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Buddy> {
        lock(&self.inner)
    }

    pub fn total_pages(&self) -> u64 {
        self.total_pages
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
        b.used.insert(pfn, Block { order, refs: 0 });
        b.used_pages += 1 << order;
        Ok(pfn)
    }

    /// Counts `n` pages of the block at `pfn` as resident.
    pub fn add_refs(&self, pfn: u64, n: u32) -> Result<(), VramError> {
        let mut b = self.lock();
        let block = b.used.get_mut(&pfn).ok_or(VramError::NotAllocated)?;
        block.refs += n;
        Ok(())
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
        let mut b = self.lock();
        let (base, order) = (0..=MAX_ORDER)
            .map(|o| (pfn & !((1u64 << o) - 1), o))
            .find(|(base, o)| b.used.get(base).is_some_and(|bl| bl.order == *o))
            .ok_or(VramError::NotAllocated)?;
        let block = b.used.get_mut(&base).ok_or(VramError::NotAllocated)?;
        if block.refs == 0 {
            return Err(VramError::NotAllocated);
        }
        block.refs -= 1;
        if block.refs == 0 {
            Self::free_block(&mut b, base, order);
            return Ok(true);
        }
        Ok(false)
    }

    fn free_block(b: &mut Buddy, mut pfn: u64, mut order: u32) {
        b.used.remove(&pfn);
        b.used_pages -= 1 << order;
        // Merge with free buddies upward.
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
