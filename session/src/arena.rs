//! The metadata arena (DESIGN.md 1): one region per server, sized at boot,
//! managed by `linked_list_allocator` behind a `spin` lock. Every per-client
//! record a server keeps (handle tables, page-state words, frame maps) is
//! allocated here through a [`Meta`] allocator, which also charges the
//! client's metadata quota. Running out of either is an allocation error
//! the caller turns into a typed error (`OutOfMetadata`, `OverBudget`);
//! nothing a client does can make the server's own heap grow without bound.

use alloc::alloc::{alloc, dealloc, Layout};
use alloc::sync::Arc;
use core::ptr::NonNull;

use allocator_api2::alloc::{AllocError, Allocator};
use linked_list_allocator::Heap;

use crate::budget::Quota;

/// Alignment of the arena's region (and the largest alignment it serves
/// without padding waste).
const REGION_ALIGN: usize = 4096;
/// Smallest arena: room for the allocator's bookkeeping and some records.
const MIN_BYTES: usize = 4096;

/// A bounded heap for server metadata.
pub struct Arena {
    heap: spin::Mutex<Heap>,
    region: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the region is owned by the arena for its whole life and only
// touched through the heap, which the spin lock serialises.
unsafe impl Send for Arena {}
// SAFETY: as above; every access to the heap takes the lock.
unsafe impl Sync for Arena {}

/// Why an arena could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArenaError {
    /// Smaller than the allocator's bookkeeping needs, or not representable.
    BadSize,
    /// The host would not give the region.
    NoMemory,
}

impl Arena {
    /// An arena of `bytes` bytes, taken from the process once, at boot.
    pub fn new(bytes: usize) -> Result<Arc<Self>, ArenaError> {
        if bytes < MIN_BYTES {
            return Err(ArenaError::BadSize);
        }
        let layout =
            Layout::from_size_align(bytes, REGION_ALIGN).map_err(|_| ArenaError::BadSize)?;
        // SAFETY: `layout` has a non-zero size (checked above).
        let region = NonNull::new(unsafe { alloc(layout) }).ok_or(ArenaError::NoMemory)?;
        let mut heap = Heap::empty();
        // SAFETY: `region` is a fresh allocation of `bytes` bytes that only
        // this heap will ever touch, and it outlives the heap (freed in Drop).
        unsafe { heap.init(region.as_ptr(), bytes) };
        Ok(Arc::new(Self {
            heap: spin::Mutex::new(heap),
            region,
            layout,
        }))
    }

    /// Bytes handed out now.
    pub fn used(&self) -> usize {
        self.heap.lock().used()
    }

    /// The arena's size.
    pub fn size(&self) -> usize {
        self.heap.lock().size()
    }

    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            // A dangling, well-aligned pointer: nothing to give back later.
            let dangling = NonNull::new(layout.align() as *mut u8).ok_or(AllocError)?;
            return Ok(NonNull::slice_from_raw_parts(dangling, 0));
        }
        let ptr = self
            .heap
            .lock()
            .allocate_first_fit(layout)
            .map_err(|_| AllocError)?;
        Ok(NonNull::slice_from_raw_parts(ptr, layout.size()))
    }

    /// # Safety
    /// `ptr` came from [`Self::allocate`] with this `layout` and is not used again.
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() != 0 {
            // SAFETY: the caller's contract is the heap's.
            unsafe { self.heap.lock().deallocate(ptr, layout) };
        }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: `region` was allocated with `layout` in `new`. Every
        // allocation from it holds a `Meta`, which holds an `Arc` of this
        // arena, so none is alive when the arena drops.
        unsafe { dealloc(self.region.as_ptr(), self.layout) };
    }
}

/// The allocator a session's metadata uses: the server's arena, charging
/// the session's metadata quota by the bytes it holds.
#[derive(Clone)]
pub struct Meta {
    arena: Arc<Arena>,
    quota: Arc<Quota>,
}

impl Meta {
    pub fn new(arena: Arc<Arena>, quota: Arc<Quota>) -> Self {
        Self { arena, quota }
    }

    /// The quota this allocator charges.
    pub fn quota(&self) -> &Quota {
        &self.quota
    }

    pub fn arena(&self) -> &Arc<Arena> {
        &self.arena
    }
}

// SAFETY: memory comes from the arena's heap, which returns blocks that fit
// the layout and stay valid until deallocated; `Meta` clones share one arena,
// so a block may be freed through any clone (the collections require that).
unsafe impl Allocator for Meta {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.quota
            .try_charge(layout.size() as u64)
            .map_err(|_| AllocError)?;
        self.arena
            .allocate(layout)
            .inspect_err(|_| self.quota.release(layout.size() as u64))
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { self.arena.deallocate(ptr, layout) };
        self.quota.release(layout.size() as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allocator_api2::vec::Vec;

    #[test]
    fn meta_charges_and_releases_the_session_quota() {
        let arena = Arena::new(64 << 10).unwrap();
        let quota = Arc::new(Quota::new(8 << 10));
        let meta = Meta::new(arena.clone(), quota.clone());
        let mut v: Vec<u64, Meta> = Vec::new_in(meta.clone());
        v.try_reserve_exact(512).unwrap();
        assert_eq!(quota.used(), 4096);
        assert!(arena.used() >= 4096);
        // Past the session's quota: refused, and nothing charged for it.
        let mut w: Vec<u64, Meta> = Vec::new_in(meta);
        assert!(w.try_reserve_exact(1024).is_err());
        assert_eq!(quota.used(), 4096);
        drop(v);
        drop(w);
        assert_eq!(quota.used(), 0);
        assert_eq!(arena.used(), 0);
    }

    #[test]
    fn a_full_arena_is_an_error_not_an_abort() {
        let arena = Arena::new(16 << 10).unwrap();
        let meta = Meta::new(arena.clone(), Arc::new(Quota::new(u64::MAX)));
        let mut v: Vec<u8, Meta> = Vec::new_in(meta);
        assert!(v.try_reserve_exact(64 << 10).is_err());
        assert!(v.try_reserve_exact(1 << 10).is_ok());
    }

    #[test]
    fn tiny_arenas_are_refused() {
        assert_eq!(Arena::new(0).err(), Some(ArenaError::BadSize));
    }
}
