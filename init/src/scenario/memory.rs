//! Host memory calls a scenario makes on its own address space: reserve,
//! mremap, munmap, mprotect, and probing an address through the kernel so
//! that an address with nothing mapped gives `EFAULT` instead of a crash.

use std::os::fd::AsRawFd;

use rustix::mm::{MapFlags, MprotectFlags, ProtFlags};

use super::format::Prot;

unsafe extern "C" {
    fn mremap(
        old: *mut std::ffi::c_void,
        old_len: usize,
        new_len: usize,
        flags: i32,
        ...
    ) -> *mut std::ffi::c_void;
    fn write(fd: i32, buf: *const std::ffi::c_void, count: usize) -> isize;
    fn read(fd: i32, buf: *mut std::ffi::c_void, count: usize) -> isize;
}
const MREMAP_MAYMOVE: i32 = 1;
const MREMAP_FIXED: i32 = 2;
const MREMAP_DONTUNMAP: i32 = 4;
pub const PAGE: u64 = 4096;

/// A host call that failed: what, and the errno.
pub fn host_err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// `len` bytes of PROT_NONE address space at an address aligned to
/// `align`, unknown to the pager: a place to move views to, or an address
/// with nothing mapped.
pub fn reserve(len: u64, align: u64) -> Result<u64, String> {
    let total = len
        .checked_add(align)
        .ok_or_else(|| "reservation too large".to_string())?;
    // SAFETY: a fresh anonymous reservation at a kernel-chosen address.
    let area = unsafe {
        rustix::mm::mmap_anonymous(
            std::ptr::null_mut(),
            total as usize,
            ProtFlags::empty(),
            MapFlags::PRIVATE | MapFlags::NORESERVE,
        )
    }
    .map_err(|e| host_err("mmap", e))? as u64;
    let aligned = area.next_multiple_of(align);
    // SAFETY: trims our own reservation to the aligned part.
    unsafe {
        if aligned > area {
            let _ = rustix::mm::munmap(area as *mut _, (aligned - area) as usize);
        }
        let end = aligned + len;
        if area + total > end {
            let _ = rustix::mm::munmap(end as *mut _, (area + total - end) as usize);
        }
    }
    Ok(aligned)
}

/// Moves `[old, old + len)` onto a fresh reservation (growing it to
/// `new_len`); with `dontunmap` the old range stays mapped. Returns the new
/// address.
pub fn move_range(old: u64, len: u64, new_len: u64, dontunmap: bool) -> Result<u64, String> {
    let dst = reserve(new_len, 2 << 20)?;
    let flags = MREMAP_MAYMOVE | MREMAP_FIXED | if dontunmap { MREMAP_DONTUNMAP } else { 0 };
    // SAFETY: moves a mapping of ours onto a reservation of ours.
    let got = unsafe {
        mremap(
            old as *mut _,
            len as usize,
            new_len as usize,
            flags,
            dst as *mut std::ffi::c_void,
        )
    } as u64;
    if got != dst {
        let e = std::io::Error::last_os_error();
        // SAFETY: the reservation is ours and unused.
        let _ = unsafe { rustix::mm::munmap(dst as *mut _, new_len as usize) };
        return Err(host_err("mremap", e));
    }
    Ok(dst)
}

/// # Safety
/// The range must be ours, with no reference into it left.
pub unsafe fn unmap(addr: u64, len: u64) -> Result<(), String> {
    // SAFETY: the caller vouches for the range.
    unsafe { rustix::mm::munmap(addr as *mut _, len as usize) }.map_err(|e| host_err("munmap", e))
}

/// # Safety
/// The range must be ours; no code may rely on accessing what `prot` forbids.
pub unsafe fn protect(addr: u64, len: u64, prot: Prot) -> Result<(), String> {
    let flags = match prot {
        Prot::None => MprotectFlags::empty(),
        Prot::R => MprotectFlags::READ,
        Prot::Rw => MprotectFlags::READ | MprotectFlags::WRITE,
    };
    // SAFETY: the caller vouches for the range.
    unsafe { rustix::mm::mprotect(addr as *mut _, len as usize, flags) }
        .map_err(|e| host_err("mprotect", e))
}

/// `madvise(2)`: drops the pages of `[addr, addr + len)`.
///
/// # Safety
/// The range must be ours; its data may be gone afterwards.
pub unsafe fn discard(
    addr: u64,
    len: u64,
    advice: super::format::HostAdvice,
) -> Result<(), String> {
    use super::format::HostAdvice as H;
    use rustix::mm::Advice;
    let a = match advice {
        H::Dontneed => Advice::LinuxDontNeed,
        H::Free => Advice::LinuxFree,
        H::Remove => Advice::LinuxRemove,
    };
    // SAFETY: the caller vouches for the range.
    unsafe { rustix::mm::madvise(addr as *mut _, len as usize, a) }
        .map_err(|e| host_err("madvise", e))
}

/// One access of 4 bytes at `addr` made by the kernel on our behalf
/// (`write(2)` from it into a pipe, or `read(2)` from a pipe into it):
/// `Ok(false)` if the kernel answered `EFAULT`. A probe write stores the
/// word's current value back, so it changes nothing it may reach.
pub fn probe(addr: u64, write_access: bool) -> Result<bool, String> {
    probe_raw(addr, write_access).map_err(|e| host_err("probe", e))
}

/// [`probe`] without allocating (a forked child uses it).
pub fn probe_raw(addr: u64, write_access: bool) -> Result<bool, rustix::io::Errno> {
    let (r, w) = rustix::pipe::pipe()?;
    let fault = |n: isize| -> Result<bool, rustix::io::Errno> {
        if n >= 0 {
            return Ok(true);
        }
        let e = rustix::io::Errno::from_raw_os_error(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        );
        if e == rustix::io::Errno::FAULT {
            Ok(false)
        } else {
            Err(e)
        }
    };
    // SAFETY: the kernel reads 4 bytes at `addr` (checked, EFAULT if not
    // mapped); nothing here dereferences it.
    let readable = fault(unsafe { write(w.as_raw_fd(), addr as *const _, 4) })?;
    if !readable || !write_access {
        return Ok(readable);
    }
    let mut word = [0u8; 4];
    rustix::io::read(&r, &mut word)?;
    rustix::io::write(&w, &word)?;
    // SAFETY: the kernel writes 4 bytes at `addr`, checked as above.
    fault(unsafe { read(r.as_raw_fd(), addr as *mut _, 4) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probing_sees_what_is_mapped_and_how() {
        let hole = reserve(1 << 20, 4096).unwrap();
        assert_eq!(probe(hole, false), Ok(false), "PROT_NONE reads fault");
        // SAFETY: our own reservation.
        unsafe { protect(hole, 4096, Prot::R).unwrap() };
        assert_eq!(probe(hole, false), Ok(true));
        assert_eq!(probe(hole, true), Ok(false), "read-only refuses a write");
        // SAFETY: as above.
        unsafe { protect(hole, 4096, Prot::Rw).unwrap() };
        // SAFETY: now mapped read-write.
        unsafe { std::ptr::write_volatile(hole as *mut u32, 77) };
        assert_eq!(probe(hole, true), Ok(true));
        // SAFETY: as above.
        assert_eq!(unsafe { std::ptr::read_volatile(hole as *const u32) }, 77);
        // SAFETY: ours, nothing refers to it.
        unsafe { unmap(hole, 1 << 20).unwrap() };
        assert_eq!(probe(hole, false), Ok(false));
    }
}
