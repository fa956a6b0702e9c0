//! The program's heap when connected: `dlmalloc` (Doug Lea's allocator,
//! in the port Rust's own wasm standard library uses) runs small
//! allocations over segments of pager pages; allocations of
//! [`LARGE`] bytes or more, over-aligned ones and anonymous `mmap`s are
//! whole page ranges of their own. Why so: dlmalloc is small, proven and
//! takes its memory from a pluggable source, and a range of its own per
//! large allocation lets `free` discard exactly that range's pages in the
//! pager (VRAM included, without a copy back) and hand it out again as
//! fresh zero pages.
//!
//! Locking: one lock ([`HEAP`]) guards the allocator, the page ranges and
//! the large-allocation tables; calls to the pager made under it (a new
//! region, a discard) never wait on this process. `fork` holds it across
//! the fork (`crate::atfork`).

use std::cell::RefCell;
use std::collections::BTreeMap;

use dlmalloc::Dlmalloc;

use crate::lock::Locked;
use crate::pages::{page_len, Pages, PAGE};

/// Allocations from this size on get page ranges of their own (and are
/// discarded when freed). glibc's own threshold for `mmap` starts at
/// 128 KiB.
pub const LARGE: u64 = 256 << 10;
/// dlmalloc asks for segments in steps of this.
const GRANULARITY: usize = 1 << 20;

/// dlmalloc's memory source: page ranges.
pub struct Segments {
    pub pages: RefCell<Pages>,
}

// SAFETY: reached only under the heap lock.
unsafe impl Send for Segments {}

// SAFETY: `alloc` hands out page ranges nobody else holds; `free` and
// `free_part` take back only what dlmalloc was given.
unsafe impl dlmalloc::Allocator for Segments {
    fn alloc(&self, size: usize) -> (*mut u8, usize, u32) {
        let Some(len) = page_len(size as u64) else {
            return (core::ptr::null_mut(), 0, 0);
        };
        match self.pages.borrow_mut().alloc(len, PAGE) {
            Ok((addr, _)) => (addr as *mut u8, len as usize, 0),
            Err(_) => (core::ptr::null_mut(), 0, 0),
        }
    }
    fn remap(&self, _: *mut u8, _: usize, _: usize, _: bool) -> *mut u8 {
        core::ptr::null_mut()
    }
    fn free_part(&self, ptr: *mut u8, old: usize, new: usize) -> bool {
        let (start, end) = (ptr as u64 + new as u64, ptr as u64 + old as u64);
        if start >= end || !start.is_multiple_of(PAGE) || !end.is_multiple_of(PAGE) {
            return false;
        }
        self.pages.borrow_mut().free(start, end - start);
        true
    }
    fn free(&self, ptr: *mut u8, size: usize) -> bool {
        self.pages.borrow_mut().free(ptr as u64, size as u64);
        true
    }
    fn can_release_part(&self, _: u32) -> bool {
        true
    }
    fn allocates_zeros(&self) -> bool {
        false
    }
    fn page_size(&self) -> usize {
        PAGE as usize
    }
}

pub struct PagerHeap {
    pub dl: Dlmalloc<Segments>,
    configured: bool,
    /// Large allocations: address → bytes (whole pages).
    pub large: BTreeMap<u64, u64>,
    /// Anonymous mappings served from regions: address → bytes.
    pub maps: BTreeMap<u64, u64>,
}

pub static HEAP: Locked<PagerHeap> = Locked::new(PagerHeap {
    dl: Dlmalloc::new_with_allocator(Segments {
        pages: RefCell::new(Pages::new()),
    }),
    configured: false,
    large: BTreeMap::new(),
    maps: BTreeMap::new(),
});

/// The bytes a dlmalloc chunk at `p` can hold (its header, as dlmalloc
/// 2.8.6 lays it out: the size word just before the pointer).
///
/// # Safety
/// `p` is a live pointer of a dlmalloc heap.
pub unsafe fn dl_usable(p: *mut u8) -> usize {
    // SAFETY: the caller's promise: the header word precedes `p`.
    let head = unsafe { *(p as *const usize).sub(1) };
    let size = head & !7;
    // A chunk with neither in-use bit set was mapped whole (two words of
    // overhead); others carry one.
    let overhead = if head & 3 == 0 { 16 } else { 8 };
    size.saturating_sub(overhead)
}

impl PagerHeap {
    pub fn pages(&self) -> std::cell::RefMut<'_, Pages> {
        self.dl.allocator().pages.borrow_mut()
    }

    fn configure(&mut self) {
        if !self.configured {
            self.dl.set_granularity(GRANULARITY);
            self.configured = true;
        }
    }

    /// A range of its own: page aligned (or `align`), whole pages.
    pub fn large(&mut self, size: u64, align: u64, zero: bool) -> *mut u8 {
        let Some(len) = page_len(size) else {
            return core::ptr::null_mut();
        };
        let got = self.pages().alloc(len, align.max(PAGE));
        let Ok((addr, zeroed)) = got else {
            return core::ptr::null_mut();
        };
        if zero && !zeroed {
            // SAFETY: the range was just handed to us.
            unsafe { core::ptr::write_bytes(addr as *mut u8, 0, len as usize) };
        }
        self.large.insert(addr, len);
        addr as *mut u8
    }

    pub fn malloc(&mut self, size: usize, zero: bool) -> *mut u8 {
        if size as u64 >= LARGE {
            return self.large(size as u64, PAGE, zero);
        }
        self.configure();
        // SAFETY: any size.
        let p = unsafe { self.dl.c_malloc(size) };
        if zero && !p.is_null() {
            // SAFETY: `size` bytes were just allocated at `p`.
            unsafe { core::ptr::write_bytes(p, 0, size) };
        }
        p
    }

    /// `align` is a power of two.
    pub fn memalign(&mut self, align: usize, size: usize) -> *mut u8 {
        if size as u64 >= LARGE || align as u64 > PAGE {
            return self.large(size.max(1) as u64, align as u64, false);
        }
        self.configure();
        // SAFETY: a power-of-two alignment.
        unsafe { self.dl.c_memalign(align, size) }
    }

    /// # Safety
    /// `p` is a live pointer of this heap.
    pub unsafe fn free(&mut self, p: *mut u8) {
        if let Some(len) = self.large.remove(&(p as u64)) {
            self.pages().free(p as u64, len);
            return;
        }
        // SAFETY: the caller's promise.
        unsafe { self.dl.c_free(p) }
    }

    /// # Safety
    /// `p` is a live pointer of this heap.
    pub unsafe fn usable(&self, p: *mut u8) -> usize {
        match self.large.get(&(p as u64)) {
            Some(&len) => len as usize,
            // SAFETY: the caller's promise.
            None => unsafe { dl_usable(p) },
        }
    }

    /// # Safety
    /// `p` is a live pointer of this heap.
    pub unsafe fn realloc(&mut self, p: *mut u8, size: usize) -> *mut u8 {
        let large = self.large.get(&(p as u64)).copied();
        if let (Some(old), true) = (large, size as u64 >= LARGE) {
            if let Some(q) = self.resize_large(p as u64, old, size as u64) {
                return q as *mut u8;
            }
        }
        if large.is_none() && (size as u64) < LARGE {
            // SAFETY: the caller's promise.
            return unsafe { self.dl.c_realloc(p, size) };
        }
        // Between the two kinds, or a large range that cannot grow in place.
        let q = self.malloc(size, false);
        if q.is_null() {
            return q;
        }
        // SAFETY: both live; the copy is within both.
        unsafe {
            let n = self.usable(p).min(size);
            core::ptr::copy_nonoverlapping(p, q, n);
            self.free(p);
        }
        q
    }

    /// Shrinks or grows a large range in place; `None` when it cannot.
    fn resize_large(&mut self, addr: u64, old: u64, size: u64) -> Option<u64> {
        let new = page_len(size)?;
        if new <= old {
            if new < old {
                self.pages().free(addr + new, old - new);
            }
            self.large.insert(addr, new);
            return Some(addr);
        }
        let zeroed = self.pages().take_at(addr + old, new - old)?;
        let _ = zeroed; // realloc leaves the new tail undefined
        self.large.insert(addr, new);
        Some(addr)
    }
}
