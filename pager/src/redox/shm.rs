//! A memory object's pages on Redox: a `/scheme/shm` object, sized once
//! (Redox has no seals; nobody but us may resize it: the clients get a
//! handle to map, and the shm scheme refuses a resize of a mapped object),
//! and mapped into the pager for writing pages in.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};

use crate::core::runtime::RtError;

/// Names are unique per pager process (`<pid>.<n>`).
static NEXT: AtomicU64 = AtomicU64::new(1);

/// One object's memory, mapped shared into the pager.
pub struct ShmMemory {
    pub fd: OwnedFd,
    path: String,
    base: *mut u8,
    len: usize,
}

// SAFETY: `base` is a shared mapping owned by this value for its lifetime;
// writes into it go through `write`, which the core serialises per page
// with its page locks (rules 1-3).
unsafe impl Send for ShmMemory {}
// SAFETY: as above.
unsafe impl Sync for ShmMemory {}

fn host(e: impl Into<std::io::Error>) -> RtError {
    RtError::Host(e.into().raw_os_error().unwrap_or(0))
}

impl ShmMemory {
    /// A fresh object of `bytes`.
    pub fn create(bytes: u64) -> Result<Self, RtError> {
        let len = usize::try_from(bytes).map_err(|_| RtError::Host(0))?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = format!("/scheme/shm/xe-svm-pager.{}.{n}", std::process::id());
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(host)?;
        let fd = OwnedFd::from(file);
        rustix::fs::ftruncate(&fd, bytes).map_err(host)?;
        let base = if len == 0 {
            std::ptr::null_mut()
        } else {
            // SAFETY: a fresh shared mapping of our own object, unmapped
            // in `drop` and nowhere else.
            let p = unsafe {
                mmap(
                    std::ptr::null_mut(),
                    len,
                    ProtFlags::READ | ProtFlags::WRITE,
                    MapFlags::SHARED,
                    &fd,
                    0,
                )
            };
            p.map_err(host)?.cast()
        };
        Ok(Self {
            fd,
            path,
            base,
            len,
        })
    }

    /// Copies `data` to byte `offset`; `None` past the end.
    pub fn write(&self, offset: usize, data: &[u8]) -> Option<()> {
        let end = offset.checked_add(data.len())?;
        if end > self.len {
            return None;
        }
        // SAFETY: [offset, end) is inside our mapping; `data` is not in it
        // (it is a staging slot or the zero page).
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.base.add(offset), data.len());
        }
        Some(())
    }
}

impl Drop for ShmMemory {
    fn drop(&mut self) {
        if !self.base.is_null() {
            // SAFETY: our own mapping of `len` bytes, not used after this.
            if let Err(e) = unsafe { munmap(self.base.cast(), self.len) } {
                log::warn!("pager: unmapping {}: {e}", self.path);
            }
        }
        // The name goes; handles the clients hold keep the memory.
        if let Err(e) = std::fs::remove_file(&self.path) {
            log::warn!("pager: removing {}: {e}", self.path);
        }
    }
}

/// A fresh shm object for the staging slots.
pub fn staging_object() -> std::io::Result<OwnedFd> {
    let path = format!("/scheme/shm/xe-svm-pager.{}.staging", std::process::id());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    Ok(OwnedFd::from(file))
}
