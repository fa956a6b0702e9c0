//! The pool of staging slot numbers every runtime hands out (the slots'
//! memory is the runtime's: `staging.rs` on Linux and Redox, a vector in
//! the tests and the simulation).
//!
//! **Quarantine.** A slot is lent to the GPU server for one `MigrateToRam`
//! copy. When that call goes unanswered past its deadline the copy may
//! still land later, over whatever the slot then holds, so the slot is
//! quarantined, not put back, until the call's late answer comes (the GPU
//! server answers once its copy is done; `Client::take_answered_late`);
//! without one it stays out. The data is not lost (the GPU server keeps
//! the pages' VRAM until `FreePages`, which the pager sends only after a
//! copy landed). While every slot is quarantined, [`SlotPool::take`]
//! answers `None` instead of waiting for a slot that may not come back,
//! and migrations to RAM fail (a CPU fault is retried, and ends with
//! `SIGBUS` after the fault deadline).

use crate::sync::{lock, Condvar, Mutex};

#[derive(Debug)]
struct Slots {
    free: Vec<usize>,
    /// (slot, the unanswered call that may still write it).
    quarantined: Vec<(usize, u64)>,
}

#[derive(Debug)]
pub struct SlotPool {
    slots: Mutex<Slots>,
    available: Condvar,
    count: usize,
}

impl SlotPool {
    pub fn new(count: usize) -> Self {
        Self {
            slots: Mutex::new(Slots {
                free: (0..count).collect(),
                quarantined: Vec::new(),
            }),
            available: Condvar::new(),
            count,
        }
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// Takes a slot, waiting while one is lent (a lend lasts one GPU copy,
    /// bounded by the call's deadline, and one install); `None` once every
    /// slot is quarantined.
    pub fn take(&self) -> Option<usize> {
        let mut s = lock(&self.slots);
        loop {
            if let Some(slot) = s.free.pop() {
                return Some(slot);
            }
            if s.quarantined.len() >= self.count {
                return None;
            }
            s = self.available.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    pub fn put(&self, slot: usize) {
        lock(&self.slots).free.push(slot);
        self.available.notify_one();
    }

    /// `slot` may still be written by the copy of `call`, which went
    /// unanswered: it is not lent until [`Self::release`] names `call`.
    /// Wakes waiters, who may now find none left.
    pub fn quarantine(&self, slot: usize, call: u64) {
        let mut s = lock(&self.slots);
        s.quarantined.push((slot, call));
        log::error!(
            "pager: staging slot {slot} quarantined until call {call} is answered; \
             {} of {} usable",
            self.count - s.quarantined.len().min(self.count),
            self.count
        );
        drop(s);
        self.available.notify_all();
    }

    /// The calls `answered` are done: their slots are lent again.
    pub fn release(&self, answered: &[u64]) {
        if answered.is_empty() {
            return;
        }
        let mut s = lock(&self.slots);
        let (done, held): (Vec<_>, Vec<_>) = std::mem::take(&mut s.quarantined)
            .into_iter()
            .partition(|(_, call)| answered.contains(call));
        s.quarantined = held;
        for (slot, call) in done {
            log::info!("pager: staging slot {slot} back (call {call} answered late)");
            s.free.push(slot);
        }
        drop(s);
        self.available.notify_all();
    }
}

#[cfg(all(test, not(feature = "shuttle")))]
mod tests {
    use super::*;

    #[test]
    fn a_quarantined_slot_is_not_lent_again() {
        let pool = SlotPool::new(2);
        let a = pool.take().unwrap();
        pool.quarantine(a, 7);
        let b = pool.take().unwrap();
        assert_ne!(a, b);
        pool.put(b);
        assert_eq!(pool.take(), Some(b));
        pool.quarantine(b, 8);
        assert_eq!(pool.take(), None, "every slot is quarantined");
        pool.release(&[9]);
        assert_eq!(pool.take(), None, "another call's answer frees nothing");
        pool.release(&[8]);
        assert_eq!(pool.take(), Some(b), "its call was answered");
    }

    #[test]
    fn a_waiter_learns_the_last_slot_was_quarantined() {
        let pool = std::sync::Arc::new(SlotPool::new(1));
        let slot = pool.take().unwrap();
        let waiter = {
            let pool = pool.clone();
            std::thread::spawn(move || pool.take())
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        pool.quarantine(slot, 1);
        assert_eq!(waiter.join().unwrap(), None);
    }
}
