//! The compute engine's hardware threads and the order jobs retire in.
//!
//! A hardware thread is an execution context with its own fault mailbox
//! (the fault descriptor's private data names it). A kernel takes as many
//! as it asks for and gets; a batch job takes one and keeps it until it
//! ends, so batch jobs run at once, up to the number of hardware threads,
//! and a semaphore wait in one never stalls another. The engine waits for
//! a free thread before it takes the next packet, as hardware does.
//!
//! Jobs retire in any order, but [`layout::REG_CCS_DONE`] moves only past
//! a prefix of the compute ring's jobs that all retired: "done up to job
//! N" stays true for its readers (the BO world's idle checks).
//!
//! [`layout::REG_CCS_DONE`]: crate::xe::layout::REG_CCS_DONE

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(50);

/// The pool of hardware threads.
pub(super) struct HwThreads {
    free: Mutex<Vec<u16>>,
    returned: Condvar,
    total: usize,
}

impl HwThreads {
    pub(super) fn new(count: u16) -> Self {
        Self {
            // Lowest ids first: a lone kernel gets threads 0.., as before.
            free: Mutex::new((0..count).rev().collect()),
            returned: Condvar::new(),
            total: count as usize,
        }
    }

    /// Takes up to `max` threads, waiting until at least one is free.
    /// Empty only once `stop` is set.
    pub(super) fn take(&self, max: usize, stop: &AtomicBool) -> Vec<u16> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if stop.load(Ordering::Acquire) {
                return Vec::new();
            }
            if !free.is_empty() {
                let n = max.clamp(1, free.len());
                let at = free.len() - n;
                return free.split_off(at).into_iter().rev().collect();
            }
            free = self
                .returned
                .wait_timeout(free, POLL)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    pub(super) fn give_back(&self, ids: &[u16]) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        free.extend(ids.iter().rev());
        self.returned.notify_all();
    }

    /// Waits until every thread is back; `false` after `timeout`.
    pub(super) fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while free.len() < self.total {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            free = self
                .returned
                .wait_timeout(free, left.min(POLL))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// Compute jobs in ring order, until a prefix of them has retired.
#[derive(Default)]
pub(super) struct RetireOrder {
    /// (job, retired), oldest first. At most one entry per running job,
    /// so bounded by the hardware threads.
    jobs: Mutex<VecDeque<(u32, bool)>>,
}

impl RetireOrder {
    /// A job the engine took from its ring (call in ring order).
    pub(super) fn begin(&self, job: u32) {
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back((job, false));
    }

    /// Marks `job` retired; returns the last job of the prefix that all
    /// retired, if that prefix grew.
    pub(super) fn finish(&self, job: u32) -> Option<u32> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        match jobs.iter_mut().find(|(j, done)| *j == job && !*done) {
            Some(entry) => entry.1 = true,
            None => log::error!("xe-model: job {job} retired but was never started"),
        }
        let mut last = None;
        while let Some(&(j, true)) = jobs.front() {
            last = Some(j);
            jobs.pop_front();
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_shared_between_takers_and_come_back() {
        let pool = HwThreads::new(4);
        let stop = AtomicBool::new(false);
        assert_eq!(pool.take(1, &stop), [0]);
        assert_eq!(pool.take(8, &stop), [1, 2, 3], "a kernel gets what is free");
        assert!(!pool.wait_idle(Duration::from_millis(10)));
        pool.give_back(&[0, 2]);
        assert_eq!(pool.take(8, &stop), [0, 2]);
        stop.store(true, Ordering::Release);
        assert!(
            pool.take(1, &stop).is_empty(),
            "a stopped device hands out none"
        );
        pool.give_back(&[0, 1, 2, 3]);
        assert!(pool.wait_idle(Duration::from_millis(10)));
    }

    #[test]
    fn done_register_moves_only_past_a_retired_prefix() {
        let order = RetireOrder::default();
        for job in [5, 6, 7] {
            order.begin(job);
        }
        assert_eq!(order.finish(6), None, "job 5 still runs");
        assert_eq!(order.finish(7), None);
        assert_eq!(order.finish(5), Some(7), "5, 6 and 7 all retired");
        order.begin(8);
        assert_eq!(order.finish(8), Some(8));
        assert_eq!(order.finish(9), None, "never started");
    }
}
