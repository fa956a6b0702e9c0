//! The library's own heap: Rust allocations inside the library (IPC
//! frames, tables), every allocation made before the library connected
//! (the dynamic loader's and libc's start-up), and the whole program's
//! heap when there is no system to connect to (a child that `svm exec`
//! did not start, a forked child's new allocations).
//!
//! It is `dlmalloc` over one reservation of address space that grows by
//! `mprotect`, so "is this pointer ours" is a range check, and it never
//! calls `malloc` (which this library interposes). Memory is reused
//! inside the reservation, never returned to the kernel.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;
use core::sync::atomic::{AtomicUsize, Ordering};

use dlmalloc::Dlmalloc;

use crate::lock::Locked;
use crate::sys;

/// Address space reserved for the internal heap (no memory until used),
/// largest first: a process with a small `RLIMIT_AS` gets a smaller one.
const RESERVES: [usize; 4] = [64 << 30, 8 << 30, 1 << 30, 128 << 20];
const PAGE: usize = 4096;

static BASE: AtomicUsize = AtomicUsize::new(0);
static SIZE: AtomicUsize = AtomicUsize::new(0);

/// Hands `dlmalloc` the next part of the reservation.
pub struct Bump {
    next: Cell<usize>,
}

// SAFETY: only reached under the internal heap's lock.
unsafe impl Send for Bump {}

impl Bump {
    fn reserve(&self) -> Option<usize> {
        let base = BASE.load(Ordering::Acquire);
        if base != 0 {
            return Some(base);
        }
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        let (base, size) = RESERVES.iter().find_map(|&size| {
            let base = sys::mmap(0, size, libc::PROT_NONE, flags, -1, 0).ok()?;
            Some((base, size))
        })?;
        SIZE.store(size, Ordering::Release);
        BASE.store(base, Ordering::Release);
        self.next.set(base);
        Some(base)
    }
}

// SAFETY: `alloc` returns fresh, zeroed, page-aligned memory of the size
// it reports; nothing is ever released.
unsafe impl dlmalloc::Allocator for Bump {
    fn alloc(&self, size: usize) -> (*mut u8, usize, u32) {
        let fail = (core::ptr::null_mut(), 0, 0);
        let Some(base) = self.reserve() else {
            return fail;
        };
        let Some(size) = size.checked_next_multiple_of(PAGE) else {
            return fail;
        };
        let start = self.next.get();
        let limit = base + SIZE.load(Ordering::Acquire);
        let Some(end) = start.checked_add(size).filter(|e| *e <= limit) else {
            return fail;
        };
        if sys::mprotect(start, size, libc::PROT_READ | libc::PROT_WRITE).is_err() {
            return fail;
        }
        self.next.set(end);
        (start as *mut u8, size, 0)
    }
    fn remap(&self, _: *mut u8, _: usize, _: usize, _: bool) -> *mut u8 {
        core::ptr::null_mut()
    }
    fn free_part(&self, _: *mut u8, _: usize, _: usize) -> bool {
        false
    }
    fn free(&self, _: *mut u8, _: usize) -> bool {
        false
    }
    fn can_release_part(&self, _: u32) -> bool {
        false
    }
    fn allocates_zeros(&self) -> bool {
        true
    }
    fn page_size(&self) -> usize {
        PAGE
    }
}

pub static HEAP: Locked<Dlmalloc<Bump>> =
    Locked::new(Dlmalloc::new_with_allocator(Bump { next: Cell::new(0) }));

/// Whether `p` came from the internal heap.
pub fn owns(p: usize) -> bool {
    let base = BASE.load(Ordering::Acquire);
    base != 0 && p >= base && p < base + SIZE.load(Ordering::Acquire)
}

/// The C calls over the internal heap.
pub fn malloc(size: usize) -> *mut u8 {
    // SAFETY: dlmalloc's C entry points take any size.
    HEAP.with(|h| unsafe { h.c_malloc(size) })
}
pub fn memalign(align: usize, size: usize) -> *mut u8 {
    // SAFETY: callers pass a power of two.
    HEAP.with(|h| unsafe { h.c_memalign(align, size) })
}
/// # Safety
/// `p` is null or a live pointer of this heap.
pub unsafe fn free(p: *mut u8) {
    // SAFETY: the caller's promise.
    HEAP.with(|h| unsafe { h.c_free(p) })
}
/// # Safety
/// `p` is null or a live pointer of this heap.
pub unsafe fn realloc(p: *mut u8, size: usize) -> *mut u8 {
    // SAFETY: the caller's promise.
    HEAP.with(|h| unsafe { h.c_realloc(p, size) })
}

/// The allocator of the library's Rust code.
pub struct Internal;

// SAFETY: dlmalloc honours size and alignment.
unsafe impl GlobalAlloc for Internal {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: a valid layout.
        HEAP.with(|h| unsafe { h.malloc(l.size(), l.align()) })
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: a valid layout.
        HEAP.with(|h| unsafe { h.calloc(l.size(), l.align()) })
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` was allocated here with `l`.
        HEAP.with(|h| unsafe { h.free(p, l.size(), l.align()) })
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: `p` was allocated here with `l`.
        HEAP.with(|h| unsafe { h.realloc(p, l.size(), l.align(), new) })
    }
}
