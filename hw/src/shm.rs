//! Shared memory between the driver and the device: regions (memfds on
//! Linux, `/scheme/shm` objects on Redox), doorbells that work across
//! processes (`futex.rs`), and the rings of [`crate::xe::layout`].

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};

use crate::xe::commands::{Packet, PACKET_DWORDS};
use crate::xe::layout::{Ring, ENTRY_BYTES, RING_ENTRIES};

/// A shared mapping of a memfd.
pub struct Region {
    base: *mut u8,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: a Region is plain shared memory; all typed access goes through
// atomics or through explicit raw copies whose races are the hardware's
// (a device and a driver touch the same memory, as over PCIe).
unsafe impl Send for Region {}
unsafe impl Sync for Region {}

impl Region {
    /// A new zeroed memfd of `len` bytes, mapped. Sealing is allowed, so
    /// the device model can seal it against shrinking when it is DMA-mapped.
    #[cfg(target_os = "linux")]
    pub fn create(name: &str, len: usize) -> rustix::io::Result<Self> {
        use rustix::fs::{memfd_create, MemfdFlags};
        let fd = memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        rustix::fs::ftruncate(&fd, len as u64)?;
        Self::map(fd, len)
    }

    /// A new zeroed `/scheme/shm` object of `len` bytes, mapped. Redox has
    /// no seals; the shm scheme refuses to resize an object while it is
    /// mapped, which is what a seal against shrinking protects here.
    #[cfg(target_os = "redox")]
    pub fn create(name: &str, len: usize) -> rustix::io::Result<Self> {
        use std::sync::atomic::AtomicU64;
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = format!("/scheme/shm/{name}.{}.{n}", std::process::id());
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO))?;
        let fd = OwnedFd::from(file);
        rustix::fs::ftruncate(&fd, len as u64)?;
        Self::map(fd, len)
    }

    /// Maps `len` bytes of an existing memfd, shared and writable.
    pub fn map(fd: OwnedFd, len: usize) -> rustix::io::Result<Self> {
        // SAFETY: a fresh mapping at an address the kernel chooses.
        let base = unsafe {
            mmap(
                std::ptr::null_mut(),
                len.max(1),
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            )?
        };
        Ok(Self {
            base: base.cast(),
            len,
            fd,
        })
    }

    /// Zeroes `[off, off + len)`: on Linux by punching the range out of
    /// the memfd (its memory goes back to the system), on Redox by writing
    /// zeros. `Err` for a range past the end or a failed punch.
    pub fn zero_range(&self, off: u64, len: u64) -> rustix::io::Result<()> {
        let end = off.checked_add(len).ok_or(rustix::io::Errno::INVAL)?;
        if end > self.len as u64 {
            return Err(rustix::io::Errno::INVAL);
        }
        #[cfg(target_os = "linux")]
        {
            use rustix::fs::{fallocate, FallocateFlags};
            let punch = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
            fallocate(&self.fd, punch, off, len)
        }
        #[cfg(not(target_os = "linux"))]
        {
            // SAFETY: in bounds (checked above) of our own mapping.
            unsafe { std::ptr::write_bytes(self.base.add(off as usize), 0, len as usize) };
            Ok(())
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }
    pub fn dup_fd(&self) -> rustix::io::Result<OwnedFd> {
        rustix::io::fcntl_dupfd_cloexec(&self.fd, 0)
    }

    /// A raw pointer to `[off, off + len)`, or `None` out of bounds.
    pub fn ptr(&self, off: u64, len: u64) -> Option<*mut u8> {
        let end = off.checked_add(len)?;
        (end <= self.len as u64).then(|| {
            // SAFETY: in bounds of the mapping, checked above.
            unsafe { self.base.add(off as usize) }
        })
    }

    /// The u32 at `off` (4-aligned, in bounds: callers pass layout constants
    /// or checked offsets; anything else is a bug in this crate).
    pub fn u32_at(&self, off: usize) -> &AtomicU32 {
        assert!(
            off % 4 == 0 && off + 4 <= self.len,
            "u32 at {off:#x} outside a {}-byte region",
            self.len
        );
        // SAFETY: aligned and in bounds; AtomicU32 has u32's layout, and the
        // mapping lives as long as `self`.
        unsafe { &*(self.base.add(off) as *const AtomicU32) }
    }

    pub fn u64_at(&self, off: usize) -> &AtomicU64 {
        assert!(
            off % 8 == 0 && off + 8 <= self.len,
            "u64 at {off:#x} outside a {}-byte region",
            self.len
        );
        // SAFETY: as for `u32_at`.
        unsafe { &*(self.base.add(off) as *const AtomicU64) }
    }

    /// Copies `src` into the region at `off`.
    pub fn write(&self, off: u64, src: &[u8]) -> bool {
        match self.ptr(off, src.len() as u64) {
            // SAFETY: `ptr` checked the range; `src` is ours and cannot
            // overlap the mapping's interior borrow.
            Some(p) => unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), p, src.len()) },
            None => return false,
        }
        true
    }

    /// Copies `len` bytes at `off` into `dst` at `dst_off`, one memmove
    /// between the two mappings (the floor a peer copy is measured
    /// against).
    pub fn copy_to(&self, off: u64, dst: &Region, dst_off: u64, len: u64) -> bool {
        let (Some(from), Some(to), Ok(n)) =
            (self.ptr(off, len), dst.ptr(dst_off, len), len.try_into())
        else {
            return false;
        };
        // SAFETY: both ranges checked by `ptr`; `copy` allows overlap.
        unsafe { std::ptr::copy(from, to, n) };
        true
    }

    /// Copies from the region at `off` into `dst`.
    pub fn read(&self, off: u64, dst: &mut [u8]) -> bool {
        match self.ptr(off, dst.len() as u64) {
            // SAFETY: `ptr` checked the range.
            Some(p) => unsafe { std::ptr::copy_nonoverlapping(p, dst.as_mut_ptr(), dst.len()) },
            None => return false,
        }
        true
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping; no reference into it outlives `self`.
        let _ = unsafe { munmap(self.base.cast(), self.len.max(1)) };
    }
}

/// Waits until `word` differs from `seen`, or `deadline` passes.
/// Returns `false` on timeout. Works across processes (no PRIVATE flag).
pub fn wait_change(word: &AtomicU32, seen: u32, deadline: Option<Instant>) -> bool {
    loop {
        if word.load(Ordering::Acquire) != seen {
            return true;
        }
        if deadline.is_some_and(|d| d <= Instant::now()) {
            return false;
        }
        crate::futex::wait(word, seen, deadline);
    }
}

/// Wakes every waiter on `word`.
pub fn wake_all(word: &AtomicU32) {
    crate::futex::wake_all(word);
}

/// One ring inside a region. Exactly one consumer; producers serialise
/// among themselves (each side keeps a lock per ring it produces on).
pub struct RingView<'a> {
    region: &'a Region,
    ring: Ring,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingError {
    TimedOut,
    /// A packet longer than an entry, or an entry with a bad length.
    BadPacket,
}

impl<'a> RingView<'a> {
    pub fn new(region: &'a Region, ring: Ring) -> Self {
        Self { region, ring }
    }
    fn head(&self) -> &AtomicU32 {
        self.region.u32_at(self.ring.header())
    }
    fn tail(&self) -> &AtomicU32 {
        self.region.u32_at(self.ring.header() + 4)
    }
    fn slot(&self, index: u32) -> usize {
        self.ring.entries() + (index as usize % RING_ENTRIES) * ENTRY_BYTES
    }

    /// Publishes one packet with `seqno`; waits while the ring is full.
    pub fn push(
        &self,
        seqno: u32,
        packet: &Packet,
        timeout: Option<Duration>,
    ) -> Result<(), RingError> {
        if packet.len > PACKET_DWORDS {
            return Err(RingError::BadPacket);
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let tail = self.tail().load(Ordering::Relaxed);
        loop {
            let head = self.head().load(Ordering::Acquire);
            if tail.wrapping_sub(head) < RING_ENTRIES as u32 {
                break;
            }
            if !wait_change(self.head(), head, deadline) {
                return Err(RingError::TimedOut);
            }
        }
        let slot = self.slot(tail);
        self.region
            .u32_at(slot)
            .store(packet.len as u32, Ordering::Relaxed);
        self.region.u32_at(slot + 4).store(seqno, Ordering::Relaxed);
        for (i, w) in packet.words().iter().enumerate() {
            self.region
                .u32_at(slot + 8 + 4 * i)
                .store(*w, Ordering::Relaxed);
        }
        self.tail().store(tail.wrapping_add(1), Ordering::Release);
        wake_all(self.tail());
        Ok(())
    }

    /// Drops every packet not yet taken (one side is gone: a device whose
    /// driver died drops the messages it sent and the packets it was
    /// sent). Called by the side that is left, under the lock its own
    /// pushes or pops take.
    pub fn discard(&self) -> u32 {
        let tail = self.tail().load(Ordering::Acquire);
        let head = self.head().swap(tail, Ordering::AcqRel);
        wake_all(self.head());
        tail.wrapping_sub(head)
    }

    /// Waits up to `timeout` for a packet to take, taking none: whether
    /// one is there (a consumer that must take it under a lock waits
    /// here first, without the lock).
    pub fn wait_ready(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let tail = self.tail().load(Ordering::Acquire);
            if tail != self.head().load(Ordering::Acquire) {
                return true;
            }
            if !wait_change(self.tail(), tail, deadline) {
                return false;
            }
        }
    }

    /// Takes the next packet, waiting up to `timeout` (`None`: forever).
    pub fn pop(&self, timeout: Option<Duration>) -> Result<(u32, Packet), RingError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let head = self.head().load(Ordering::Relaxed);
        loop {
            let tail = self.tail().load(Ordering::Acquire);
            if tail != head {
                break;
            }
            if !wait_change(self.tail(), tail, deadline) {
                return Err(RingError::TimedOut);
            }
        }
        let slot = self.slot(head);
        let len = self.region.u32_at(slot).load(Ordering::Relaxed) as usize;
        let seqno = self.region.u32_at(slot + 4).load(Ordering::Relaxed);
        let mut packet = Packet {
            len: len.min(PACKET_DWORDS),
            dw: [0; PACKET_DWORDS],
        };
        for i in 0..packet.len {
            packet.dw[i] = self.region.u32_at(slot + 8 + 4 * i).load(Ordering::Relaxed);
        }
        self.head().store(head.wrapping_add(1), Ordering::Release);
        wake_all(self.head());
        if len > PACKET_DWORDS {
            return Err(RingError::BadPacket);
        }
        Ok((seqno, packet))
    }
}
