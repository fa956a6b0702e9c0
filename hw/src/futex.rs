//! Doorbells across processes: a wait on a 32-bit word of shared memory
//! until it changes, and a wake.
//!
//! Linux wakes a waiter of any process that maps the word (no PRIVATE
//! flag). The Redox kernel does not: its `FUTEX_WAKE` wakes only waiters
//! of the waker's own address space (`src/syscall/futex.rs` compares the
//! address space as well as the address), so on Redox a change made by the
//! other side (the device, or its driver) is noticed by bounded waits of
//! [`REDOX_POLL`] each; a wake from this process still ends a wait at once.
//! Redox's timeout is an absolute `CLOCK_MONOTONIC` time, Linux's relative.

use std::sync::atomic::AtomicU32;
use std::time::Instant;

/// Longest single wait on Redox, where the other process's wake is lost.
#[cfg(target_os = "redox")]
pub const REDOX_POLL: std::time::Duration = std::time::Duration::from_millis(1);

/// Sleeps while `*word == seen`, until `deadline` at the latest; returns
/// early on a wake, a signal or a spurious wakeup (the caller re-checks).
#[cfg(target_os = "linux")]
pub fn wait(word: &AtomicU32, seen: u32, deadline: Option<Instant>) {
    use rustix::thread::futex;
    let timeout = deadline.map(|d| {
        let left = d.saturating_duration_since(Instant::now());
        rustix::time::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: left.subsec_nanos() as _,
        }
    });
    // EAGAIN (value changed), EINTR and ETIMEDOUT all re-check in the caller.
    let _ = futex::wait(word, futex::Flags::empty(), seen, timeout.as_ref());
}

/// Wakes every waiter on `word`.
#[cfg(target_os = "linux")]
pub fn wake_all(word: &AtomicU32) {
    use rustix::thread::futex;
    let _ = futex::wake(word, futex::Flags::empty(), i32::MAX as u32);
}

#[cfg(target_os = "redox")]
pub fn wait(word: &AtomicU32, seen: u32, deadline: Option<Instant>) {
    use syscall::data::TimeSpec;
    use syscall::flag::{CLOCK_MONOTONIC, FUTEX_WAIT};
    let mut step = REDOX_POLL;
    if let Some(d) = deadline {
        step = step.min(d.saturating_duration_since(Instant::now()));
    }
    let mut now = TimeSpec::default();
    if syscall::clock_gettime(CLOCK_MONOTONIC, &mut now).is_err() {
        std::thread::sleep(step);
        return;
    }
    let nanos = i64::from(now.tv_nsec) + i64::from(step.subsec_nanos());
    let until = TimeSpec {
        tv_sec: now.tv_sec + step.as_secs() as i64 + nanos / 1_000_000_000,
        tv_nsec: (nanos % 1_000_000_000) as i32,
    };
    // SAFETY: `word` is a live, aligned 32-bit word for the whole call and
    // `until` outlives it; the kernel only reads both.
    let _ = unsafe {
        syscall::futex(
            word.as_ptr().cast::<i32>(),
            FUTEX_WAIT,
            seen as i32,
            &until as *const TimeSpec as usize,
            std::ptr::null_mut(),
        )
    };
}

#[cfg(target_os = "redox")]
pub fn wake_all(word: &AtomicU32) {
    use syscall::flag::FUTEX_WAKE;
    // SAFETY: as in `wait`; a wake only reads the address.
    let _ = unsafe {
        syscall::futex(
            word.as_ptr().cast::<i32>(),
            FUTEX_WAKE,
            i32::MAX,
            0,
            std::ptr::null_mut(),
        )
    };
}
