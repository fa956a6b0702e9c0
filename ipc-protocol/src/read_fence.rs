//! A read fence over one served endpoint: how many of the requests read
//! from it are still being handled, counted from the moment each is read.
//!
//! **Why.** An endpoint is one ordered socket read by several threads, so
//! requests are read in the order they were sent and then handled
//! concurrently. A request that must not overlap with what its sender's
//! predecessor sent (a restarted pager's first `GpuNotify::Frames` must
//! see every `FreePages` and `MigrateToRam` the dead generation left in
//! the socket applied, issue 14) waits until it is the only request in
//! flight: everything read before it is then done.
//!
//! **Counted at the read, under one lock.** A thread reads and counts
//! with the fence's read lock held, so no request is ever read and not
//! yet counted: without the lock, a thread preempted between its `recv`
//! and its count would let a later request pass the fence first.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::transport::{Received, Transport, TransportError};

#[derive(Default)]
pub struct ReadFence {
    reading: Mutex<()>,
    in_flight: AtomicUsize,
}

/// One request read and not yet handled; dropping it ends its count.
pub struct InFlight<'a>(&'a ReadFence);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ReadFence {
    /// Reads the next frame from `t` and counts it, as one step.
    pub fn read<'a>(
        &'a self,
        t: &dyn Transport,
    ) -> Result<(Received, InFlight<'a>), TransportError> {
        let _reading = self.reading.lock().unwrap_or_else(|e| e.into_inner());
        let rx = t.recv(None)?;
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Ok((rx, InFlight(self)))
    }

    /// Requests read and not yet handled.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Called while handling a request: waits until it is the only one in
    /// flight, so every request read before it was handled, and `busy()`
    /// (what else the caller waits for) is false. `false` if either still
    /// held at `deadline` (the caller says what that costs).
    pub fn wait_alone(&self, deadline: Duration, busy: &dyn Fn() -> bool) -> bool {
        let until = Instant::now() + deadline;
        while self.in_flight() > 1 || busy() {
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::SeqPacket;
    use std::sync::Arc;

    /// A request read by one thread is counted until its handler is done;
    /// the one read after it waits for it.
    #[test]
    fn a_request_waits_for_those_read_before_it() {
        let (a, b) = SeqPacket::pair().expect("a socket pair");
        let fence = Arc::new(ReadFence::default());
        a.send(b"first", Vec::new()).unwrap();
        a.send(b"second", Vec::new()).unwrap();
        let (first, held) = fence.read(&b).unwrap();
        assert_eq!(first.bytes, b"first");
        let f = fence.clone();
        let waiter = std::thread::spawn(move || {
            let (second, _mine) = f.read(&b).unwrap();
            assert_eq!(second.bytes, b"second");
            f.wait_alone(Duration::from_secs(10), &|| false)
        });
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(fence.in_flight(), 2, "the first is still being handled");
        drop(held);
        assert!(waiter.join().unwrap(), "alone once the first was handled");
        assert_eq!(fence.in_flight(), 0);
    }

    /// Past its deadline the wait gives up and says so.
    #[test]
    fn the_wait_is_bounded() {
        let (a, b) = SeqPacket::pair().expect("a socket pair");
        let fence = ReadFence::default();
        a.send(b"x", Vec::new()).unwrap();
        a.send(b"y", Vec::new()).unwrap();
        let (_x, x_held) = fence.read(&b).unwrap();
        let (_y, _mine) = fence.read(&b).unwrap();
        assert!(!fence.wait_alone(Duration::from_millis(20), &|| false));
        drop(x_held);
        assert!(
            !fence.wait_alone(Duration::from_millis(20), &|| true),
            "alone, but the caller's own wait still holds"
        );
    }
}
