//! The pool of staging slot numbers every runtime hands out (the slots'
//! memory is the runtime's: `staging.rs` on Linux and Redox, a vector in
//! the tests and the simulation).
//!
//! **Quarantine.** A slot is lent to the GPU server for one `MigrateToRam`
//! copy. When that call goes unanswered past its deadline the copy may
//! still land later, over whatever the slot then holds, so the slot is
//! never lent again: it is quarantined, not put back. The data is not
//! lost (the GPU server keeps the pages' VRAM until `FreePages`, which
//! the pager sends only after a copy landed). Once every slot is
//! quarantined, [`SlotPool::take`] answers `None` instead of waiting for a
//! slot that will not come back, and migrations to RAM fail (the CPU
//! fault ends with `SIGBUS` after the fault deadline).

use crate::sync::{lock, Condvar, Mutex};

#[derive(Debug)]
struct Slots {
    free: Vec<usize>,
    quarantined: usize,
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
                quarantined: 0,
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
            if s.quarantined >= self.count {
                return None;
            }
            s = self.available.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    pub fn put(&self, slot: usize) {
        lock(&self.slots).free.push(slot);
        self.available.notify_one();
    }

    /// `slot` may still be written by a copy that went unanswered: it is
    /// never lent again. Wakes waiters, who may now find none left.
    pub fn quarantine(&self, slot: usize) {
        let mut s = lock(&self.slots);
        s.quarantined += 1;
        log::error!(
            "pager: staging slot {slot} quarantined (a copy into it went unanswered); \
             {} of {} left",
            self.count - s.quarantined.min(self.count),
            self.count
        );
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
        pool.quarantine(a);
        let b = pool.take().unwrap();
        assert_ne!(a, b);
        pool.put(b);
        assert_eq!(pool.take(), Some(b));
        pool.quarantine(b);
        assert_eq!(pool.take(), None, "every slot is quarantined");
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
        pool.quarantine(slot);
        assert_eq!(waiter.join().unwrap(), None);
    }
}
