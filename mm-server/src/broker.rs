//! Accounting, watermarks and reservations.
//!
//! The broker knows how much VRAM each world holds (reported by the GPU
//! server, refreshed by the eviction loop) and how much it has granted but
//! not yet seen allocated. A reservation that does not fit waits here, in
//! mm-server, never in a server holding page or BO locks (rule 5), and wakes
//! the eviction loop (`evictor.rs`). The broker itself holds no page or BO
//! lock and never calls a peer under its own lock.

use std::os::fd::OwnedFd;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ipc_protocol::interfaces::pressure::*;
use ipc_protocol::server::Handler;
use ipc_protocol::types::{MemoryKind, World};
use ipc_protocol::Capability;

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Usage {
    /// Last VRAM usage of each world (reported or refreshed).
    pub(crate) vram: [u64; 2],
    /// SVM pages in system memory (from the pager).
    pub(crate) svm_sram: u64,
    /// Granted reservations not yet released.
    reserved: [u64; 2],
    /// Bytes reservations are waiting for right now.
    pub(crate) waiting: u64,
    pub(crate) evicted: [u64; 2],
    pub(crate) rounds: u64,
    stalled: u64,
    /// Set when the eviction loop should run a pass.
    pub(crate) kicked: bool,
}

impl Usage {
    /// Everything held or granted. A peer reports any number: saturating,
    /// so a report near 2^64 is "full", never a panic.
    fn used(&self) -> u64 {
        self.vram
            .iter()
            .chain(&self.reserved)
            .fold(0u64, |a, b| a.saturating_add(*b))
    }
}

pub(crate) fn world(w: World) -> usize {
    match w {
        World::Bo => 0,
        World::Svm => 1,
    }
}

pub struct Broker {
    /// (total, low watermark, high watermark) in bytes: free bytes below
    /// `low` start the eviction loop, which stops at `high` free.
    limits: Mutex<(u64, u64, u64)>,
    usage: Mutex<Usage>,
    /// Signalled when VRAM may have been freed.
    room: Condvar,
    /// Signalled when the eviction loop has work.
    pub(crate) kick: Condvar,
}

impl Broker {
    /// Default watermarks: act below 10 % free, aim for 20 % free.
    pub fn new(vram_total: u64) -> Self {
        Self::with_watermarks(vram_total, vram_total / 10, vram_total / 5)
    }

    pub fn with_watermarks(vram_total: u64, low_free: u64, high_free: u64) -> Self {
        Self {
            limits: Mutex::new((vram_total, low_free, high_free.max(low_free))),
            usage: Mutex::new(Usage::default()),
            room: Condvar::new(),
            kick: Condvar::new(),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Usage> {
        self.usage.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn limits(&self) -> (u64, u64, u64) {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn vram_total(&self) -> u64 {
        self.limits().0
    }

    pub fn watermarks(&self) -> (u64, u64) {
        let (_, low, high) = self.limits();
        (low, high)
    }

    /// The GPU server's own figure for usable VRAM (its page tables
    /// excluded); the watermarks keep their share of the total.
    pub fn set_vram_total(&self, bytes: u64) {
        let mut l = self.limits.lock().unwrap_or_else(|e| e.into_inner());
        let (old, low, high) = *l;
        if old != bytes && old > 0 {
            let scale = |w: u64| (w as u128 * bytes as u128 / old as u128) as u64;
            *l = (bytes, scale(low), scale(high));
        }
    }

    pub(crate) fn free(&self, u: &Usage) -> u64 {
        self.vram_total().saturating_sub(u.used())
    }

    /// The free bytes the eviction loop must reach: the high watermark plus
    /// what reservations wait for.
    pub(crate) fn target_free(&self, u: &Usage) -> u64 {
        self.watermarks()
            .1
            .saturating_add(u.waiting)
            .min(self.vram_total())
    }

    /// Whether the eviction loop has work (below the low watermark, or a
    /// reservation is waiting).
    pub(crate) fn needs_eviction(&self, u: &Usage) -> bool {
        self.free(u) < self.watermarks().0 || u.waiting > 0
    }

    pub fn report(&self, w: World, bytes: u64) {
        let mut u = self.lock();
        u.vram[world(w)] = bytes;
        if self.needs_eviction(&u) {
            u.kicked = true;
            self.kick.notify_all();
        }
        drop(u);
        self.room.notify_all();
    }

    /// Replaces both worlds' VRAM figures (the eviction loop's refresh).
    pub(crate) fn refresh(&self, bo: u64, svm: u64) {
        let mut u = self.lock();
        u.vram = [bo, svm];
        drop(u);
        self.room.notify_all();
    }

    pub(crate) fn set_svm_sram(&self, bytes: u64) {
        self.lock().svm_sram = bytes;
    }

    pub(crate) fn account_round(&self, bo: u64, svm: u64) {
        let mut u = self.lock();
        u.evicted[0] = u.evicted[0].saturating_add(bo);
        u.evicted[1] = u.evicted[1].saturating_add(svm);
        u.rounds += 1;
    }

    /// Grants `bytes` of VRAM to `w`, waiting up to `timeout` for room while
    /// the eviction loop makes it.
    pub fn reserve(&self, w: World, bytes: u64, timeout: Duration) -> Result<u64, PressureError> {
        if bytes > self.vram_total() {
            return Err(PressureError::TooLarge);
        }
        let deadline = Instant::now() + timeout;
        let mut u = self.lock();
        if u.used().saturating_add(bytes) > self.vram_total() {
            u.stalled += 1;
            u.waiting = u.waiting.saturating_add(bytes);
            u.kicked = true;
            self.kick.notify_all();
            while u.used().saturating_add(bytes) > self.vram_total() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    u.waiting = u.waiting.saturating_sub(bytes);
                    return Err(PressureError::TimedOut);
                }
                u = self
                    .room
                    .wait_timeout(u, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            u.waiting = u.waiting.saturating_sub(bytes);
        }
        let r = &mut u.reserved[world(w)];
        *r = r.saturating_add(bytes);
        Ok(bytes)
    }

    pub fn release(&self, w: World, bytes: u64) {
        let mut u = self.lock();
        let r = &mut u.reserved[world(w)];
        *r = r.saturating_sub(bytes);
        drop(u);
        self.room.notify_all();
    }

    pub fn status(&self) -> PressureStatus {
        let u = *self.lock();
        PressureStatus {
            vram_total: self.vram_total(),
            vram_used: u.used(),
            low_watermark: self.watermarks().0,
            high_watermark: self.watermarks().1,
            bo_vram_bytes: u.vram[0],
            svm_vram_bytes: u.vram[1],
            svm_sram_bytes: u.svm_sram,
            bo_evicted_bytes: u.evicted[0],
            svm_evicted_bytes: u.evicted[1],
            rounds: u.rounds,
            stalled_reservations: u.stalled,
        }
    }
}

impl Handler<Pressure> for Broker {
    fn handle(
        &self,
        _caller: &Capability,
        req: Request,
        _: Vec<OwnedFd>,
    ) -> Result<(Reply, Vec<OwnedFd>), PressureError> {
        match req {
            Request::ReportUsage(ReportUsage {
                memory: MemoryKind::Vram,
                world: w,
                bytes,
            }) => {
                self.report(w, bytes);
                Ok((Reply::Status(self.status()), vec![]))
            }
            Request::ReportUsage(ReportUsage {
                memory: MemoryKind::Sram,
                world: World::Svm,
                bytes,
            }) => {
                self.set_svm_sram(bytes);
                Ok((Reply::Status(self.status()), vec![]))
            }
            // BOs in system memory live in the GPU server's pool; not tracked.
            Request::ReportUsage(_) => Ok((Reply::Status(self.status()), vec![])),
            Request::Reserve(Reserve {
                memory: MemoryKind::Vram,
                world: w,
                bytes,
                timeout_ms,
            }) => {
                let granted = self.reserve(w, bytes, Duration::from_millis(timeout_ms as u64))?;
                Ok((Reply::Reserve(Reserved { bytes: granted }), vec![]))
            }
            // System memory is the kernel's to give; nothing to reserve here.
            Request::Reserve(_) => Err(PressureError::TooLarge),
            Request::Release(Release {
                world: w, bytes, ..
            }) => {
                self.release(w, bytes);
                Ok((Reply::Release(Done {}), vec![]))
            }
            Request::Status(_) => Ok((Reply::Status(self.status()), vec![])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_reservation_that_does_not_fit_stalls_until_room_appears() {
        let b = Arc::new(Broker::new(100));
        b.report(World::Svm, 90);
        let b2 = b.clone();
        let waiter = std::thread::spawn(move || b2.reserve(World::Bo, 20, Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished(), "granted without room");
        assert_eq!(b.lock().waiting, 20, "the eviction loop sees what waits");
        b.report(World::Svm, 50);
        assert_eq!(waiter.join().unwrap(), Ok(20));
        assert_eq!(b.status().vram_used, 70);
        assert_eq!(b.status().stalled_reservations, 1);
        b.release(World::Bo, 20);
        assert_eq!(b.status().vram_used, 50);
        assert_eq!(b.lock().waiting, 0);
    }

    #[test]
    fn timeouts_and_oversize_are_typed_errors() {
        let b = Broker::new(100);
        b.report(World::Bo, 100);
        assert_eq!(
            b.reserve(World::Svm, 1, Duration::from_millis(20)),
            Err(PressureError::TimedOut)
        );
        assert_eq!(b.lock().waiting, 0, "a timed-out reservation stops waiting");
        assert_eq!(
            b.reserve(World::Svm, 101, Duration::from_millis(20)),
            Err(PressureError::TooLarge)
        );
    }

    #[test]
    fn falling_below_the_low_watermark_kicks_the_loop() {
        let b = Broker::with_watermarks(100, 10, 20);
        b.report(World::Svm, 85);
        assert!(!b.lock().kicked);
        b.report(World::Bo, 6);
        assert!(b.lock().kicked);
    }
}
