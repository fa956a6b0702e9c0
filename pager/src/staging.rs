//! A bounded pool of 2 MiB staging slots the GPU server copies VRAM into
//! (one shared memory object, shared with the GPU server at boot, DESIGN.md
//! 8: a memfd on Linux, a `/scheme/shm` object on Redox): migration to RAM
//! copies VRAM there, then the runtime installs it from our own mapping
//! (`UFFDIO_COPY` on Linux).

use std::os::fd::OwnedFd;

use crate::migrate::Chunk;
use crate::slots::SlotPool;

pub const SLOT_BYTES: usize = Chunk::MAX_BYTES;

pub struct Staging {
    pub memfd: OwnedFd,
    base: *mut u8,
    /// Which slots are free, lent or quarantined (`slots.rs`).
    pub pool: SlotPool,
}

// SAFETY: `base` is a shared mapping owned by this struct for its lifetime;
// slots are handed out exclusively.
unsafe impl Send for Staging {}
// SAFETY: as above; the pool is behind a mutex.
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
            pool: SlotPool::new(slots),
        })
    }

    pub fn slots(&self) -> usize {
        self.pool.count()
    }

    /// The slot's offset in the memfd (what the GPU server copies to).
    pub fn offset(slot: usize) -> u64 {
        (slot * SLOT_BYTES) as u64
    }

    /// The slot's first byte in our mapping (`None`: no such slot).
    pub fn ptr(&self, slot: usize) -> Option<*const u8> {
        // SAFETY: slot < slots, so the offset is inside the mapping.
        (slot < self.slots()).then(|| unsafe { self.base.add(slot * SLOT_BYTES) as *const u8 })
    }
}
