//! Accounting and reservations.

use std::os::fd::OwnedFd;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use ipc_protocol::interfaces::pressure::*;
use ipc_protocol::server::Handler;
use ipc_protocol::types::{MemoryKind, World};
use ipc_protocol::Capability;

#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    /// Last usage each world reported.
    reported: [u64; 2],
    /// Granted reservations not yet released.
    reserved: [u64; 2],
}

impl Usage {
    fn used(&self) -> u64 {
        self.reported.iter().chain(&self.reserved).sum()
    }
}

fn world(w: World) -> usize {
    match w {
        World::Bo => 0,
        World::Svm => 1,
    }
}

pub struct Broker {
    vram_total: u64,
    low: u64,
    high: u64,
    usage: Mutex<Usage>,
    room: Condvar,
}

impl Broker {
    /// Default watermarks: act below 10 % free, aim for 20 % free.
    pub fn new(vram_total: u64) -> Self {
        Self::with_watermarks(vram_total, vram_total / 10, vram_total / 5)
    }

    pub fn with_watermarks(vram_total: u64, low_free: u64, high_free: u64) -> Self {
        Self { vram_total, low: low_free, high: high_free.max(low_free), usage: Mutex::new(Usage::default()), room: Condvar::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Usage> {
        self.usage.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn report(&self, w: World, bytes: u64) {
        self.lock().reported[world(w)] = bytes;
        self.room.notify_all();
    }

    /// Grants `bytes` of VRAM to `w`, waiting up to `timeout` for room.
    pub fn reserve(&self, w: World, bytes: u64, timeout: Duration) -> Result<u64, PressureError> {
        if bytes > self.vram_total {
            return Err(PressureError::TooLarge);
        }
        let deadline = Instant::now() + timeout;
        let mut u = self.lock();
        while u.used() + bytes > self.vram_total {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(PressureError::TimedOut);
            }
            u = self.room.wait_timeout(u, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        u.reserved[world(w)] += bytes;
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
        let u = self.lock();
        PressureStatus {
            vram_total: self.vram_total,
            vram_used: u.used(),
            low_watermark: self.low,
            high_watermark: self.high,
            bo_evicted_bytes: 0,
            svm_evicted_bytes: 0,
        }
    }
}

impl Handler<Pressure> for Broker {
    fn handle(&self, _caller: &Capability, req: Request, _: Vec<OwnedFd>) -> Result<(Reply, Vec<OwnedFd>), PressureError> {
        match req {
            Request::ReportUsage(ReportUsage { memory: MemoryKind::Vram, world: w, bytes }) => {
                self.report(w, bytes);
                Ok((Reply::Status(self.status()), vec![]))
            }
            // SRAM accounting arrives with issue 7.
            Request::ReportUsage(_) => Ok((Reply::Status(self.status()), vec![])),
            Request::Reserve(Reserve { memory: MemoryKind::Vram, world: w, bytes, timeout_ms }) => {
                let granted = self.reserve(w, bytes, Duration::from_millis(timeout_ms as u64))?;
                Ok((Reply::Reserve(Reserved { bytes: granted }), vec![]))
            }
            Request::Reserve(_) => Err(PressureError::TooLarge),
            Request::Release(Release { world: w, bytes, .. }) => {
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
        b.report(World::Svm, 50);
        assert_eq!(waiter.join().unwrap(), Ok(20));
        assert_eq!(b.status().vram_used, 70);
        b.release(World::Bo, 20);
        assert_eq!(b.status().vram_used, 50);
    }

    #[test]
    fn timeouts_and_oversize_are_typed_errors() {
        let b = Broker::new(100);
        b.report(World::Bo, 100);
        assert_eq!(b.reserve(World::Svm, 1, Duration::from_millis(20)), Err(PressureError::TimedOut));
        assert_eq!(b.reserve(World::Svm, 101, Duration::from_millis(20)), Err(PressureError::TooLarge));
    }
}
