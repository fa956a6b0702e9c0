//! A futex lock that allocates nothing and can be released without a
//! guard, so `fork` handlers can hold it across `fork` (the allocator's
//! locks must not be held by a thread that does not exist in the child).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, Ordering};

/// 0: free; 1: held; 2: held, and someone may sleep on it.
pub struct RawLock(AtomicU32);

impl Default for RawLock {
    fn default() -> Self {
        Self::new()
    }
}

impl RawLock {
    pub const fn new() -> Self {
        Self(AtomicU32::new(0))
    }

    pub fn lock(&self) {
        if self
            .0
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
        while self.0.swap(2, Ordering::Acquire) != 0 {
            futex(&self.0, FUTEX_WAIT_PRIVATE, 2);
        }
    }

    /// Releases the lock the caller holds.
    pub fn unlock(&self) {
        if self.0.swap(0, Ordering::Release) == 2 {
            futex(&self.0, FUTEX_WAKE_PRIVATE, 1);
        }
    }

    /// In a forked child, the only thread: whoever held the lock in the
    /// parent does not exist here.
    pub fn reset_in_child(&self) {
        self.0.store(0, Ordering::Release);
    }
}

const FUTEX_WAIT_PRIVATE: i32 = libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG;
const FUTEX_WAKE_PRIVATE: i32 = libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG;

fn futex(word: &AtomicU32, op: i32, val: u32) {
    // SAFETY: the futex word lives as long as its lock (a static).
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            op,
            val,
            core::ptr::null::<libc::timespec>(),
        );
    }
}

/// A value behind a [`RawLock`].
pub struct Locked<T> {
    pub lock: RawLock,
    cell: UnsafeCell<T>,
}

// SAFETY: the value is only reached with the lock held.
unsafe impl<T: Send> Sync for Locked<T> {}

struct Guard<'a>(&'a RawLock);
impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.0.unlock();
    }
}

impl<T> Locked<T> {
    pub const fn new(v: T) -> Self {
        Self {
            lock: RawLock::new(),
            cell: UnsafeCell::new(v),
        }
    }

    /// Runs `f` with the lock held (released on unwind too).
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        self.lock.lock();
        let _g = Guard(&self.lock);
        // SAFETY: the lock is held until `_g` drops.
        f(unsafe { &mut *self.cell.get() })
    }
}
