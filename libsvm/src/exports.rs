//! The interposed C allocator and memory-mapping calls. Each routes by
//! where the process stands (`conn::mode`) and where a pointer lies:
//! pager regions (`pages::owns`), the internal heap (`internal::owns`),
//! or the kernel. None of them panics across the boundary: a caught
//! panic is a failed call (`NULL`, `MAP_FAILED`, `-1` with errno).

#![cfg(not(test))]

use core::cell::Cell;
use core::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::conn::{mode, Mode};
use crate::heap::{PagerHeap, HEAP};
use crate::{internal, maps, pages, sys};

thread_local! {
    /// This thread is inside the pager heap already: a `malloc` reached
    /// from there (libc calling back) is served by the internal heap.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` on the pager heap when this process serves from it.
fn on_heap<R>(f: impl FnOnce(&mut PagerHeap) -> R) -> Option<R> {
    if mode() != Mode::Connected || INSIDE.get() {
        return None;
    }
    INSIDE.set(true);
    let r = catch_unwind(AssertUnwindSafe(|| HEAP.with(f)));
    INSIDE.set(false);
    r.ok()
}

fn guard<R>(fail: R, f: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fail)
}

fn null() -> *mut c_void {
    core::ptr::null_mut()
}

fn alloc(size: usize, zero: bool) -> *mut c_void {
    if let Some(p) = on_heap(|h| h.malloc(size, zero)).filter(|p| !p.is_null()) {
        return p.cast();
    }
    let p = internal::malloc(size);
    if zero && !p.is_null() {
        // SAFETY: `size` bytes were just allocated.
        unsafe { core::ptr::write_bytes(p, 0, size) };
    }
    if p.is_null() {
        sys::set_errno(libc::ENOMEM);
    }
    p.cast()
}

fn aligned(align: usize, size: usize) -> *mut c_void {
    if let Some(p) = on_heap(|h| h.memalign(align, size)).filter(|p| !p.is_null()) {
        return p.cast();
    }
    internal::memalign(align, size).cast()
}

#[no_mangle]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    guard(null(), || alloc(size, false))
}

#[no_mangle]
pub extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    guard(null(), || match n.checked_mul(size) {
        Some(total) => alloc(total, true),
        None => {
            sys::set_errno(libc::ENOMEM);
            null()
        }
    })
}

/// # Safety
/// `p` is null or a live pointer from this allocator.
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    guard((), || {
        if p.is_null() {
            return;
        }
        if pages::owns(p as u64) {
            // In a forked child the pager heap is the parent's: left alone.
            // SAFETY: the caller's promise.
            let _ = on_heap(|h| unsafe { h.free(p.cast()) });
        } else if internal::owns(p as usize) {
            // SAFETY: the caller's promise.
            unsafe { internal::free(p.cast()) };
        }
        // Anything else was never ours (the dynamic loader's early
        // allocations): there is nothing to give it back to.
    })
}

/// # Safety
/// `p` is null or a live pointer from this allocator.
#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    guard(null(), || {
        if p.is_null() {
            return alloc(size, false);
        }
        if size == 0 {
            // SAFETY: the caller's promise.
            unsafe { free(p) };
            return null();
        }
        if internal::owns(p as usize) {
            // SAFETY: the caller's promise.
            return unsafe { internal::realloc(p.cast(), size) }.cast();
        }
        if !pages::owns(p as u64) {
            sys::set_errno(libc::ENOMEM);
            return null();
        }
        // SAFETY: the caller's promise.
        match on_heap(|h| unsafe { h.realloc(p.cast(), size) }) {
            Some(q) if !q.is_null() => return q.cast(),
            // The pager refused more memory: the internal heap takes it.
            Some(_) => return move_to_internal(p, size, true),
            None => {}
        }
        // A forked child: a copy in the internal heap, the original left
        // to the parent.
        move_to_internal(p, size, false)
    })
}

/// `realloc` of pager memory into the internal heap: a copy, and the
/// original freed when `free_old` (a forked child leaves it be).
fn move_to_internal(p: *mut c_void, size: usize, free_old: bool) -> *mut c_void {
    // SAFETY: `p` is live pager memory (the caller's promise); only read.
    let have = HEAP.with(|h| unsafe { h.usable(p.cast()) });
    let q = internal::malloc(size);
    if q.is_null() {
        sys::set_errno(libc::ENOMEM);
        return null();
    }
    // SAFETY: both live, the copy within both.
    unsafe { core::ptr::copy_nonoverlapping(p.cast::<u8>(), q, have.min(size)) };
    if free_old {
        // SAFETY: `p` is live pager memory, given up here.
        let _ = on_heap(|h| unsafe { h.free(p.cast()) });
    }
    q.cast()
}

/// # Safety
/// As for `realloc`.
#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        // SAFETY: the caller's promise.
        Some(total) => unsafe { realloc(p, total) },
        None => {
            sys::set_errno(libc::ENOMEM);
            null()
        }
    }
}

fn valid_align(align: usize) -> bool {
    align.is_power_of_two()
}

/// # Safety
/// `out` is a writable pointer.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> i32 {
    guard(libc::ENOMEM, || {
        if out.is_null() || !valid_align(align) || !align.is_multiple_of(size_of::<usize>()) {
            return libc::EINVAL;
        }
        let p = aligned(align, size);
        if p.is_null() {
            return libc::ENOMEM;
        }
        // SAFETY: the caller's promise.
        unsafe { *out = p };
        0
    })
}

#[no_mangle]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    guard(null(), || {
        if !valid_align(align) {
            sys::set_errno(libc::EINVAL);
            return null();
        }
        aligned(align, size)
    })
}

#[no_mangle]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    aligned_alloc(align, size)
}

#[no_mangle]
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    aligned_alloc(4096, size)
}

#[no_mangle]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    match size.max(1).checked_next_multiple_of(4096) {
        Some(s) => aligned_alloc(4096, s),
        None => null(),
    }
}

/// # Safety
/// `p` is null or a live pointer from this allocator.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    guard(0, || {
        if p.is_null() {
            0
        } else if pages::owns(p as u64) {
            // SAFETY: the caller's promise.
            HEAP.with(|h| unsafe { h.usable(p.cast()) })
        } else if internal::owns(p as usize) {
            // SAFETY: the caller's promise.
            internal::HEAP.with(|_| unsafe { crate::heap::dl_usable(p.cast()) })
        } else {
            0
        }
    })
}

fn failed(e: i32) -> *mut c_void {
    sys::set_errno(e);
    sys::MAP_FAILED
}

/// # Safety
/// As `mmap(2)`.
#[no_mangle]
pub unsafe extern "C" fn mmap(
    addr: *mut c_void,
    len: usize,
    prot: i32,
    flags: i32,
    fd: i32,
    off: i64,
) -> *mut c_void {
    guard(sys::MAP_FAILED, || {
        if maps::served(len, prot, flags) {
            if let Some(Some(a)) = on_heap(|h| h.map(len, prot)) {
                return a as *mut c_void;
            }
        }
        match sys::mmap(addr as usize, len, prot, flags, fd, off) {
            Ok(a) => a as *mut c_void,
            Err(e) => failed(e),
        }
    })
}

/// # Safety
/// As `mmap(2)`.
#[no_mangle]
pub unsafe extern "C" fn mmap64(
    addr: *mut c_void,
    len: usize,
    prot: i32,
    flags: i32,
    fd: i32,
    off: i64,
) -> *mut c_void {
    // SAFETY: the caller's promise.
    unsafe { mmap(addr, len, prot, flags, fd, off) }
}

fn errno_result(r: Result<(), i32>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            sys::set_errno(e);
            -1
        }
    }
}

/// # Safety
/// As `munmap(2)`.
#[no_mangle]
pub unsafe extern "C" fn munmap(addr: *mut c_void, len: usize) -> i32 {
    guard(-1, || {
        if pages::owns(addr as u64) {
            return match mode() {
                Mode::Connected => {
                    let r = on_heap(|h| h.unmap(addr as u64, len as u64));
                    errno_result(r.unwrap_or(Err(libc::EAGAIN)))
                }
                // The parent's pager memory stays the parent's.
                _ => 0,
            };
        }
        errno_result(sys::munmap(addr as usize, len))
    })
}

/// The kernel first; then, for pager memory, the GPU follows
/// (`Pages::protect`). A GPU that cannot follow fails the call with
/// `ENOMEM` (the CPU side has changed, as a partial `mprotect` may).
///
/// # Safety
/// As `mprotect(2)`.
#[no_mangle]
pub unsafe extern "C" fn mprotect(addr: *mut c_void, len: usize, prot: i32) -> i32 {
    guard(-1, || {
        if let Err(e) = sys::mprotect(addr as usize, len, prot) {
            return errno_result(Err(e));
        }
        if !pages::owns(addr as u64) {
            return 0;
        }
        let r = on_heap(|h| h.pages().protect(addr as u64, len as u64, prot));
        match r {
            Some(Err(e)) => {
                log::warn!("libsvm: the GPU could not follow mprotect: {e:?}");
                errno_result(Err(libc::ENOMEM))
            }
            _ => 0,
        }
    })
}

/// `mremap` is variadic in C; the optional fifth argument arrives in its
/// register under the x86-64 and AArch64 calling conventions.
///
/// # Safety
/// As `mremap(2)`.
#[no_mangle]
pub unsafe extern "C" fn mremap(
    old: *mut c_void,
    old_len: usize,
    new_len: usize,
    flags: i32,
    new_addr: *mut c_void,
) -> *mut c_void {
    guard(sys::MAP_FAILED, || {
        if pages::owns(old as u64) {
            let r = on_heap(|h| h.remap(old as u64, old_len as u64, new_len as u64, flags));
            return match r.unwrap_or(Err(libc::EINVAL)) {
                Ok(a) => a as *mut c_void,
                Err(e) => failed(e),
            };
        }
        match sys::mremap(old as usize, old_len, new_len, flags, new_addr as usize) {
            Ok(a) => a as *mut c_void,
            Err(e) => failed(e),
        }
    })
}

/// # Safety
/// As `madvise(2)`.
#[no_mangle]
pub unsafe extern "C" fn madvise(addr: *mut c_void, len: usize, advice: i32) -> i32 {
    guard(-1, || {
        let drops = matches!(
            advice,
            libc::MADV_DONTNEED | libc::MADV_FREE | libc::MADV_REMOVE
        );
        if drops && pages::owns(addr as u64) {
            if let Some(Ok(())) = on_heap(|h| h.advise_discard(addr as u64, len as u64)) {
                return 0;
            }
        }
        // SAFETY: the kernel checks the range.
        let r = unsafe { libc::syscall(libc::SYS_madvise, addr, len, advice) };
        if r == -1 {
            -1
        } else {
            0
        }
    })
}
