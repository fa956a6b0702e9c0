//! The one sync shim of the pager core: std normally, shuttle's scheduler
//! with the `shuttle` feature. Nothing in the core may use `std::sync`
//! directly, or the explorer would miss its interleavings.
//!
//! A build with `shuttle` is for the explorer only: its primitives panic
//! outside a shuttle run, so build it in its own target directory
//! (`CARGO_TARGET_DIR=target/shuttle`) and never run its `pager` binary.

#[cfg(not(feature = "shuttle"))]
pub use std::sync::{
    atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak,
};

#[cfg(feature = "shuttle")]
pub use shuttle::sync::{
    atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak,
};

/// Locks `m`, ignoring poisoning: the pager's critical sections leave no
/// state half-updated (each is a single store or a condvar wait).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads `l`, ignoring poisoning (as [`lock`]).
pub fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

/// Writes `l`, ignoring poisoning (as [`lock`]).
pub fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// Lets other threads run (a scheduling point for the explorer).
#[cfg(not(feature = "shuttle"))]
pub fn yield_now() {
    std::thread::yield_now();
}

#[cfg(feature = "shuttle")]
pub fn yield_now() {
    shuttle::thread::yield_now();
}

#[cfg(feature = "shuttle")]
pub use shuttle::thread::{spawn, JoinHandle};
/// Spawns a thread (on the explorer's scheduler under `shuttle`).
#[cfg(not(feature = "shuttle"))]
pub use std::thread::{spawn, JoinHandle};
