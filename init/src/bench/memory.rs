//! Memfds and shared mappings for the floors.

use std::os::fd::{AsFd, OwnedFd};

use rustix::mm::{mmap, mmap_anonymous, munmap, MapFlags, ProtFlags};

use super::BenchError;

/// A 2 MiB chunk: the floors' unit of migration, as ours.
pub const CHUNK: usize = 2 << 20;

/// A memfd of `len` bytes (all holes).
pub fn memfd(name: &str, len: usize) -> Result<OwnedFd, BenchError> {
    let fd = rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| BenchError::Host(format!("memfd_create: {e}")))?;
    rustix::fs::ftruncate(&fd, len as u64)
        .map_err(|e| BenchError::Host(format!("ftruncate: {e}")))?;
    Ok(fd)
}

/// Writes `data` at offset 0 of `fd`.
pub fn fill(fd: impl AsFd, data: &[u8]) -> Result<(), BenchError> {
    let mut done = 0;
    while done < data.len() {
        match rustix::io::pwrite(&fd, &data[done..], done as u64) {
            Ok(0) => return Err(BenchError::Host("pwrite wrote nothing".into())),
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(BenchError::Host(format!("pwrite: {e}"))),
        }
    }
    Ok(())
}

/// Frees every page of `fd` (the kernel also zaps every mapping of them).
pub fn punch(fd: impl AsFd, len: usize) -> Result<(), BenchError> {
    use rustix::fs::FallocateFlags;
    rustix::fs::fallocate(
        &fd,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        0,
        len as u64,
    )
    .map_err(|e| BenchError::Host(format!("hole punch: {e}")))
}

/// A shared mapping of a memfd at a 2 MiB-aligned address, unmapped on drop.
pub struct Mapping {
    addr: usize,
    len: usize,
}

impl Mapping {
    pub fn shared(fd: impl AsFd, len: usize, writable: bool) -> Result<Self, BenchError> {
        let err = |e: rustix::io::Errno| BenchError::Host(format!("mmap: {e}"));
        let reserve = len
            .checked_add(CHUNK)
            .ok_or_else(|| BenchError::Host("mapping too large".into()))?;
        // SAFETY: a fresh reservation at a kernel-chosen address.
        let area = unsafe {
            mmap_anonymous(
                std::ptr::null_mut(),
                reserve,
                ProtFlags::empty(),
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        }
        .map_err(err)? as usize;
        let aligned = (area + CHUNK - 1) & !(CHUNK - 1);
        let prot = if writable {
            ProtFlags::READ | ProtFlags::WRITE
        } else {
            ProtFlags::READ
        };
        // SAFETY: replaces part of our own reservation with the memfd.
        let mapped = unsafe {
            mmap(
                aligned as *mut _,
                len,
                prot,
                MapFlags::SHARED | MapFlags::FIXED,
                &fd,
                0,
            )
        };
        let head = aligned - area;
        let tail = reserve - head - len;
        // SAFETY: the unused ends of our reservation (all of it on failure).
        unsafe {
            if mapped.is_err() {
                let _ = munmap(area as *mut _, reserve);
            } else {
                if head > 0 {
                    let _ = munmap(area as *mut _, head);
                }
                if tail > 0 {
                    let _ = munmap((aligned + len) as *mut _, tail);
                }
            }
        }
        mapped.map_err(err)?;
        Ok(Self { addr: aligned, len })
    }

    pub fn addr(&self) -> usize {
        self.addr
    }

    /// The mapping as bytes.
    ///
    /// # Safety
    /// Nobody may write the mapping while the slice is held.
    pub unsafe fn bytes(&self) -> &[u8] {
        // SAFETY: `len` mapped bytes live as long as `self`.
        unsafe { std::slice::from_raw_parts(self.addr as *const u8, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping; no slice into it outlives `self`.
        let _ = unsafe { munmap(self.addr as *mut _, self.len) };
    }
}
