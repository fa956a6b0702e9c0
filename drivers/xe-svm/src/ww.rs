//! Reservation locks for buffer objects, with a wound-or-wait style acquire
//! context (Linux `ww_mutex`, wait-die flavour).
//!
//! A job locks every buffer object it uses. Two jobs locking overlapping
//! sets in different orders would deadlock with plain mutexes, so each
//! acquire context carries a stamp (its age). When a context asks for a lock
//! held by another context:
//! - an older context (smaller stamp) waits: the holder is younger and will
//!   either finish or back off;
//! - a younger context gets [`Backoff`]: it must drop every lock it holds,
//!   wait for the contended lock alone ([`WwMutex::lock_slow`]) and start over.
//!
//! Waits only ever go from older to younger contexts, so no cycle can form;
//! a context keeps its stamp across retries, so it ages and eventually wins
//! (no starvation). The shrinker never waits at all: it uses
//! [`WwMutex::try_lock`] (rule 7: reclaim takes only trylocks).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::sync::{lock, Condvar, Mutex, MutexGuard};

/// The caller must drop all its locks and retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff;

/// Stamps for acquire contexts: lower is older.
#[derive(Default)]
pub struct WwClass {
    next: AtomicU64,
}

impl WwClass {
    pub fn new() -> Self {
        Self {
            next: AtomicU64::new(1),
        }
    }
    pub fn context(&self) -> AcquireCtx {
        AcquireCtx {
            stamp: self.next.fetch_add(1, Ordering::Relaxed),
        }
    }
}

/// One multi-lock acquisition. Holds no locks itself: the caller keeps the
/// list and unlocks with [`WwMutex::unlock`].
#[derive(Debug)]
pub struct AcquireCtx {
    stamp: u64,
}

impl AcquireCtx {
    pub fn stamp(&self) -> u64 {
        self.stamp
    }
}

/// Owner stamp of a lock held by [`WwMutex::try_lock`] (reclaim, no context).
const TRYLOCK_OWNER: u64 = u64::MAX;

pub struct WwMutex {
    /// Stamp of the holder, 0 when free.
    owner: Mutex<u64>,
    freed: Condvar,
}

impl Default for WwMutex {
    fn default() -> Self {
        Self::new()
    }
}

impl WwMutex {
    pub fn new() -> Self {
        Self {
            owner: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    fn guard(&self) -> MutexGuard<'_, u64> {
        lock(&self.owner)
    }

    /// Locks for `ctx`: `Ok(true)` newly taken, `Ok(false)` already held by
    /// `ctx`, `Err(Backoff)` when held by an older context.
    pub fn lock(&self, ctx: &AcquireCtx) -> Result<bool, Backoff> {
        let mut o = self.guard();
        loop {
            match *o {
                0 => {
                    *o = ctx.stamp;
                    return Ok(true);
                }
                s if s == ctx.stamp => return Ok(false),
                // A reclaim trylock holds it briefly; wait like for a younger holder.
                s if s < ctx.stamp => return Err(Backoff),
                _ => o = self.freed.wait(o).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }

    /// After a [`Backoff`], with nothing else held: waits for the lock
    /// whoever holds it.
    pub fn lock_slow(&self, ctx: &AcquireCtx) {
        let mut o = self.guard();
        while *o != 0 && *o != ctx.stamp {
            o = self.freed.wait(o).unwrap_or_else(|e| e.into_inner());
        }
        *o = ctx.stamp;
    }

    /// Takes the lock only if it is free (reclaim paths).
    pub fn try_lock(&self) -> bool {
        let mut o = self.guard();
        if *o == 0 {
            *o = TRYLOCK_OWNER;
            true
        } else {
            false
        }
    }

    /// Takes the lock outside any context, waiting up to `timeout`
    /// (single-object operations: destroy, read back).
    pub fn lock_single(&self, timeout: Duration) -> bool {
        let mut o = self.guard();
        let deadline = std::time::Instant::now() + timeout;
        while *o != 0 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            o = self
                .freed
                .wait_timeout(o, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *o = TRYLOCK_OWNER;
        true
    }

    pub fn unlock(&self) {
        *self.guard() = 0;
        self.freed.notify_all();
    }

    pub fn is_locked(&self) -> bool {
        *self.guard() != 0
    }
}

/// Locks every mutex of `set` for `ctx`, backing off and retrying as the
/// wait-die protocol requires. Returns the indices locked (all of `set`,
/// duplicates once). The caller unlocks them.
pub fn lock_all(set: &[&WwMutex], ctx: &AcquireCtx) -> Vec<usize> {
    let mut held: Vec<usize> = Vec::new();
    let mut contended: Option<usize> = None;
    'retry: loop {
        if let Some(c) = contended.take() {
            set[c].lock_slow(ctx);
            held.push(c);
        }
        for (i, m) in set.iter().enumerate() {
            if held.contains(&i) || set[..i].iter().any(|p| std::ptr::eq(*p, *m)) {
                continue;
            }
            match m.lock(ctx) {
                Ok(_) => held.push(i),
                Err(Backoff) => {
                    for &h in &held {
                        set[h].unlock();
                    }
                    held.clear();
                    contended = Some(i);
                    continue 'retry;
                }
            }
        }
        return held;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::sync::Arc;

    #[test]
    fn younger_backs_off_older_waits() {
        let class = WwClass::new();
        let (old, young) = (class.context(), class.context());
        let m = WwMutex::new();
        assert_eq!(m.lock(&young), Ok(true));
        assert_eq!(
            m.lock(&young),
            Ok(false),
            "re-locking by the holder is reported, not a deadlock"
        );
        m.unlock();
        assert_eq!(m.lock(&old), Ok(true));
        assert_eq!(m.lock(&young), Err(Backoff));
        assert!(!m.try_lock());
        m.unlock();
        assert!(m.try_lock());
        m.unlock();
    }

    /// Many threads lock overlapping sets in opposite orders, many times.
    /// With plain mutexes this deadlocks within a few rounds; with the
    /// acquire context every round finishes and the lock is exclusive.
    #[test]
    fn opposite_orders_never_deadlock_and_stay_exclusive() {
        let class = Arc::new(WwClass::new());
        let locks: Arc<Vec<WwMutex>> = Arc::new((0..6).map(|_| WwMutex::new()).collect());
        let inside: Arc<Vec<AtomicU32>> = Arc::new((0..6).map(|_| AtomicU32::new(0)).collect());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (class, locks, inside) = (class.clone(), locks.clone(), inside.clone());
                std::thread::spawn(move || {
                    for round in 0..300usize {
                        let mut order: Vec<usize> = (0..6).collect();
                        order.rotate_left((t + round) % 6);
                        if (t + round) % 2 == 1 {
                            order.reverse();
                        }
                        order.truncate(2 + (round % 4));
                        let set: Vec<&WwMutex> = order.iter().map(|&i| &locks[i]).collect();
                        let ctx = class.context();
                        let held = lock_all(&set, &ctx);
                        assert_eq!(held.len(), set.len());
                        for &i in &order {
                            assert_eq!(
                                inside[i].fetch_add(1, Ordering::SeqCst),
                                0,
                                "two holders of lock {i}"
                            );
                        }
                        std::thread::yield_now();
                        for &i in &order {
                            inside[i].fetch_sub(1, Ordering::SeqCst);
                        }
                        for &h in &held {
                            set[h].unlock();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(locks.iter().all(|l| !l.is_locked()));
    }
}
