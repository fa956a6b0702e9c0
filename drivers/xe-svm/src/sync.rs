//! The sync shim of the GPU server's core: std normally, shuttle's
//! scheduler with the `shuttle` feature (the deterministic simulation in
//! `sim/` runs the core on it). The VM lock, the VRAM allocator's lock and
//! the BO world's locks (reservation locks, placements, the submit order)
//! all go through here.
//!
//! A build with `shuttle` is for the simulation only: its primitives panic
//! outside a shuttle run, so it builds in its own target directory.

#[cfg(not(feature = "shuttle"))]
pub use std::sync::{Condvar, Mutex, MutexGuard};

#[cfg(feature = "shuttle")]
pub use shuttle::sync::{Condvar, Mutex, MutexGuard};

/// Locks `m`, ignoring poisoning: critical sections leave no state half
/// updated that a later holder could not handle.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
