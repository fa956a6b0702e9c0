//! A bounded pool of 2 MiB staging slots the GPU server copies VRAM into
//! (one shared memory object, shared with the GPU server at boot, DESIGN.md
//! 8: a memfd on Linux, a `/scheme/shm` object on Redox): migration to RAM
//! copies VRAM there, then the runtime installs it from our own mapping
//! (`UFFDIO_COPY` on Linux).

use std::os::fd::OwnedFd;
use std::sync::{Condvar, Mutex};

use crate::migrate::Chunk;

pub const SLOT_BYTES: usize = Chunk::MAX_BYTES;

pub struct Staging {
    pub memfd: OwnedFd,
    base: *mut u8,
    free: Mutex<Vec<usize>>,
    available: Condvar,
    pub slots: usize,
}

// SAFETY: `base` is a shared mapping owned by this struct for its lifetime;
// slots are handed out exclusively.
unsafe impl Send for Staging {}
// SAFETY: as above; the free list is behind a mutex.
unsafe impl Sync for Staging {}

impl Staging {
    /// The slots in a fresh memfd (Linux).
    #[cfg(not(target_os = "redox"))]
    pub fn new(slots: usize) -> rustix::io::Result<Self> {
        let memfd = rustix::fs::memfd_create("pager-staging", rustix::fs::MemfdFlags::CLOEXEC)?;
        Self::over(memfd, slots)
    }

    /// The slots in `memory`, a shared memory object sized here and mapped
    /// for our lifetime.
    pub fn over(memory: OwnedFd, slots: usize) -> rustix::io::Result<Self> {
        use rustix::mm::{mmap, MapFlags, ProtFlags};
        let bytes = slots
            .checked_mul(SLOT_BYTES)
            .ok_or(rustix::io::Errno::INVAL)?;
        rustix::fs::ftruncate(&memory, bytes as u64)?;
        // SAFETY: a fresh shared mapping of our own object, kept for our
        // lifetime.
        let base = unsafe {
            mmap(
                std::ptr::null_mut(),
                bytes,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &memory,
                0,
            )?
        };
        Ok(Self {
            memfd: memory,
            base: base.cast(),
            free: Mutex::new((0..slots).collect()),
            available: Condvar::new(),
            slots,
        })
    }

    /// Takes a slot, waiting for one if all are in use. Slots are held only
    /// across one GPU copy and one `UFFDIO_COPY`, never across a wait.
    pub fn take(&self) -> usize {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(index) = free.pop() {
                return index;
            }
            free = self.available.wait(free).unwrap_or_else(|e| e.into_inner());
        }
    }

    pub fn put(&self, slot: usize) {
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(slot);
        self.available.notify_one();
    }

    /// The slot's offset in the memfd (what the GPU server copies to).
    pub fn offset(slot: usize) -> u64 {
        (slot * SLOT_BYTES) as u64
    }

    /// The slot's first byte in our mapping (`None`: no such slot).
    pub fn ptr(&self, slot: usize) -> Option<*const u8> {
        // SAFETY: slot < slots, so the offset is inside the mapping.
        (slot < self.slots).then(|| unsafe { self.base.add(slot * SLOT_BYTES) as *const u8 })
    }
}
