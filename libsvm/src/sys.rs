//! The kernel's memory calls, made as raw system calls: this library
//! exports `mmap`, `munmap` and `mremap` itself, so calling libc's would
//! call back into it.

use core::ffi::c_void;

/// `mmap(2)`; returns the address or the errno.
pub fn mmap(
    addr: usize,
    len: usize,
    prot: i32,
    flags: i32,
    fd: i32,
    off: i64,
) -> Result<usize, i32> {
    // SAFETY: the kernel checks every argument; the caller owns what it maps over.
    let r = unsafe { libc::syscall(libc::SYS_mmap, addr, len, prot, flags, fd, off) };
    check(r)
}

pub fn munmap(addr: usize, len: usize) -> Result<(), i32> {
    // SAFETY: as for `mmap`.
    check(unsafe { libc::syscall(libc::SYS_munmap, addr, len) }).map(|_| ())
}

pub fn mremap(
    old: usize,
    old_len: usize,
    new_len: usize,
    flags: i32,
    new: usize,
) -> Result<usize, i32> {
    // SAFETY: as for `mmap`.
    check(unsafe { libc::syscall(libc::SYS_mremap, old, old_len, new_len, flags, new) })
}

pub fn mprotect(addr: usize, len: usize, prot: i32) -> Result<(), i32> {
    // SAFETY: as for `mmap`.
    check(unsafe { libc::syscall(libc::SYS_mprotect, addr, len, prot) }).map(|_| ())
}

fn check(r: libc::c_long) -> Result<usize, i32> {
    if r == -1 {
        // SAFETY: `syscall` reports failure through errno.
        Err(unsafe { *libc::__errno_location() })
    } else {
        Ok(r as usize)
    }
}

/// Sets errno for a C caller.
pub fn set_errno(e: i32) {
    // SAFETY: this thread's errno.
    unsafe { *libc::__errno_location() = e };
}

pub const MAP_FAILED: *mut c_void = !0usize as *mut c_void;

/// Writes `msg` to standard error without allocating or locking.
pub fn write_stderr(msg: &[u8]) {
    // SAFETY: writing our own buffer.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
}
