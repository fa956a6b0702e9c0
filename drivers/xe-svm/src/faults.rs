//! GPU faults, served per VM: one worker per ASID with faults pending, so
//! a fault that waits (in mm-server's `Reserve`, or on the pager) delays
//! only its own VM's faults, never another client's.
//!
//! The GuC pump hands every fault descriptor to [`Dispatch::run`], which
//! routes it by ASID. A worker gathers a batch until its queue stays quiet
//! for [`GATHER`] (the faults of a dense kernel arrive together, and sizing
//! a migration sees them all: `density`), resolves each 2 MiB group once
//! with the group's other addresses, and replies to every fault of it;
//! it exits after [`IDLE`] without faults. Workers are bounded by the
//! ASIDs in use (`MAX_ASIDS`), and those by every client's `vms` budget.
//!
//! With fault-ahead on (`fault_ahead.rs`), each worker also moves the
//! chunks ahead of a stream of faults, and a fault on a chunk being moved
//! ahead waits for that move before it is resolved.
//!
//! Prefetch faults (the hardware prefetcher's, speculative) never reach a
//! worker: [`Dispatch::route`] acknowledges and drops them.
//!
//! Locking: the worker map's lock is held only to route one fault or to
//! retire an idle worker (which checks its queue is empty under it, so no
//! fault is ever routed to a worker that has gone).

use std::collections::HashMap;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hw::xe::fault::{AccessType, FaultDescriptor, FaultType};

use crate::fault_ahead::{Ahead, Move};

/// How long a worker waits for more faults of its VM before it exits.
pub const IDLE: Duration = Duration::from_secs(2);
/// Most faults one worker takes in one batch.
const BATCH: usize = 64;
/// How long a worker waits for more faults of a batch.
pub const GATHER: Duration = Duration::from_micros(30);

/// Resolves one fault (asid, address, whether it writes, the other
/// addresses of its group): `false` when nothing is bound there or the
/// access is not allowed.
pub type Resolve = dyn Fn(u32, u64, bool, &[u64]) -> bool + Send + Sync;
/// Answers the device for one fault.
pub type Reply = dyn Fn(&FaultDescriptor, bool) + Send + Sync;

/// Routes faults to per-VM workers.
pub struct Dispatch {
    resolve: Arc<Resolve>,
    reply: Arc<Reply>,
    /// Fault-ahead: chunks each worker moves ahead, and how.
    ahead: Option<(usize, Arc<Move>)>,
    workers: Arc<Mutex<HashMap<u32, Sender<FaultDescriptor>>>>,
}

impl Dispatch {
    pub fn new(resolve: Arc<Resolve>, reply: Arc<Reply>) -> Self {
        Self {
            resolve,
            reply,
            ahead: None,
            workers: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Each worker moves up to `depth` chunks ahead of a stream of its
    /// VM's faults with `mover` (`fault_ahead.rs`); 0 is off.
    pub fn with_fault_ahead(mut self, depth: usize, mover: Arc<Move>) -> Self {
        self.ahead = (depth > 0).then_some((depth, mover));
        self
    }

    /// Serves `faults` until the pump stops.
    pub fn run(&self, faults: Receiver<FaultDescriptor>) {
        while let Ok(f) = faults.recv() {
            self.route(f);
        }
    }

    /// Hands `f` to its VM's worker, starting one if there is none. A
    /// prefetch (speculative) fault is acknowledged at once and dropped:
    /// nothing waits for it, and moving memory for a guess would cost
    /// more than the miss (IGT `xe_prefetch_fault`).
    pub fn route(&self, f: FaultDescriptor) {
        if f.prefetch {
            (self.reply)(&f, true);
            return;
        }
        if f.fault_type == FaultType::AtomicAccessViolation {
            // The page is mapped without atomics: its policy refuses GPU
            // atomics (`Advice::AtomicCpu`). Nothing moves; the access
            // fails and the fault log keeps it.
            (self.reply)(&f, false);
            return;
        }
        let mut w = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        let f = match w.get(&f.asid).map(|tx| tx.send(f)) {
            Some(Ok(())) => return,
            Some(Err(e)) => e.0,
            None => f,
        };
        let (tx, rx) = channel();
        let asid = f.asid;
        let _ = tx.send(f);
        let worker = Worker {
            asid,
            resolve: self.resolve.clone(),
            reply: self.reply.clone(),
            ahead: self.ahead.clone(),
            workers: self.workers.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name(format!("xe-svm-fault{asid}"))
            .spawn(move || worker.serve(rx));
        match spawned {
            Ok(_) => {
                w.insert(asid, tx);
            }
            Err(e) => log::error!("xe-svm: no fault worker for ASID {asid}: {e}"),
        }
    }

    /// Workers alive now.
    pub fn workers(&self) -> usize {
        self.workers.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

struct Worker {
    asid: u32,
    resolve: Arc<Resolve>,
    reply: Arc<Reply>,
    ahead: Option<(usize, Arc<Move>)>,
    workers: Arc<Mutex<HashMap<u32, Sender<FaultDescriptor>>>>,
}

impl Worker {
    fn serve(self, rx: Receiver<FaultDescriptor>) {
        let ahead = self
            .ahead
            .as_ref()
            .and_then(|(depth, mover)| Ahead::start(self.asid, *depth, mover.clone()));
        loop {
            let first = match rx.recv_timeout(IDLE) {
                Ok(f) => f,
                Err(RecvTimeoutError::Timeout) => match self.retire(&rx) {
                    Some(f) => f,
                    None => return,
                },
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(f) => batch.push(f),
                    Err(_) => match rx.recv_timeout(GATHER) {
                        Ok(f) => batch.push(f),
                        Err(_) => break,
                    },
                }
            }
            self.serve_batch(batch, ahead.as_ref());
        }
    }

    /// Leaves the map if no fault is queued (checked under the map's lock,
    /// so none can be routed here after); else returns the one queued.
    fn retire(&self, rx: &Receiver<FaultDescriptor>) -> Option<FaultDescriptor> {
        let mut w = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        match rx.try_recv() {
            Ok(f) => Some(f),
            Err(_) => {
                w.remove(&self.asid);
                None
            }
        }
    }

    /// Resolves each 2 MiB group once; replies to every fault of it. Reads
    /// and writes group apart: a write refused (a read-only range) must not
    /// fail the reads beside it.
    fn serve_batch(&self, batch: Vec<FaultDescriptor>, ahead: Option<&Ahead>) {
        let mut groups: Vec<((u64, bool), Vec<FaultDescriptor>)> = Vec::new();
        for f in batch {
            let key = (f.address >> 21, f.access != AccessType::Read);
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => v.push(f),
                None => groups.push((key, vec![f])),
            }
        }
        for ((_, write), group) in groups {
            let (va, near): (u64, Vec<u64>) = (
                group[0].address,
                group[1..].iter().map(|f| f.address).collect(),
            );
            if let Some(a) = ahead {
                a.wait(va);
            }
            let ok = (self.resolve)(self.asid, va, write, &near);
            if let (Some(a), true) = (ahead, ok) {
                a.faulted(va);
            }
            for f in &group {
                (self.reply)(f, ok);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hw::xe::fault::{AccessType, FaultType};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn fault(prefetch: bool) -> FaultDescriptor {
        FaultDescriptor {
            asid: 3,
            address: 0x10_0000,
            access: AccessType::Read,
            fault_type: FaultType::NotPresent,
            level: 0,
            engine_class: 4,
            engine_instance: 0,
            source_id: 0,
            vfid: 0,
            pdata: 1,
            prefetch,
        }
    }

    /// A dispatcher whose resolver counts its calls and serves every
    /// fault, and whose replies come out of the receiver.
    fn counting_dispatch() -> (
        Dispatch,
        Arc<AtomicUsize>,
        Receiver<(FaultDescriptor, bool)>,
    ) {
        let resolved = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = channel();
        let r = resolved.clone();
        let resolve = move |_: u32, _: u64, _: bool, _: &[u64]| {
            r.fetch_add(1, Ordering::SeqCst);
            true
        };
        let tx = Mutex::new(tx);
        let reply = move |f: &FaultDescriptor, ok: bool| {
            let _ = tx.lock().unwrap().send((*f, ok));
        };
        (
            Dispatch::new(Arc::new(resolve), Arc::new(reply)),
            resolved,
            rx,
        )
    }

    /// A prefetch fault is answered at once, as served, and never resolved
    /// (nothing moves for a guess); an ordinary fault goes to its VM's
    /// worker and is resolved.
    #[test]
    fn prefetch_faults_are_acknowledged_and_dropped() {
        let (d, resolved, rx) = counting_dispatch();
        d.route(fault(true));
        assert_eq!(
            rx.try_recv().map(|(f, ok)| (f.prefetch, ok)),
            Ok((true, true)),
            "answered before route returned"
        );
        assert_eq!(resolved.load(Ordering::SeqCst), 0);
        assert_eq!(d.workers(), 0, "no worker started for it");
        d.route(fault(false));
        let next = rx
            .recv_timeout(Duration::from_secs(10))
            .map(|(f, ok)| (f.prefetch, ok));
        assert_eq!(next, Ok((false, true)));
        assert_eq!(resolved.load(Ordering::SeqCst), 1);
    }

    /// An atomic that met a mapping without atomics (the page's policy is
    /// CPU-only) is refused at once: nothing is resolved or moved, and the
    /// access fails.
    #[test]
    fn atomic_violations_are_refused_without_a_migration() {
        let (d, resolved, rx) = counting_dispatch();
        let atomic = FaultDescriptor {
            access: AccessType::Atomic,
            fault_type: FaultType::AtomicAccessViolation,
            ..fault(false)
        };
        d.route(atomic);
        assert_eq!(rx.try_recv(), Ok((atomic, false)));
        assert_eq!(resolved.load(Ordering::SeqCst), 0);
        assert_eq!(d.workers(), 0);
    }
}
