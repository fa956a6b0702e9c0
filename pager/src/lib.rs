//! The address-space pager.
//!
//! - [`state`]: the per-page state table and page locks (rules 1 to 3);
//! - [`migrate`]: the CPU-fault, collect/finalize and eviction protocols
//!   (rules 1, 2, 4, 6), side effects through [`migrate::Backend`];
//! - [`core`]: the server core driven by messages: per-client sessions
//!   with budgets, objects and views, the three interfaces' requests, view
//!   changes, the fault path; side effects through [`core::runtime::Runtime`];
//! - [`host`]: the Linux runtime (userfaultfd, memfds, IPC glue);
//! - [`journal`]: what a restarted pager rebuilds its objects, spaces and
//!   views from (issue 14);
//! - `redox`: the Redox runtime (schemes, `/scheme/shm` objects; no fault
//!   delivery until the kernel has it: docs/redox.md section 5);
//! - `staging`, `notifier`: the staging slots and the GPU server's
//!   notifier, shared by both runtimes.
//!
//! All synchronisation goes through [`sync`], so the same code runs on
//! std and under the shuttle schedule explorer (and in the simulation).

pub mod core;
#[cfg(all(not(feature = "shuttle"), not(target_os = "redox")))]
pub mod host;
pub mod journal;
pub mod migrate;
#[cfg(not(feature = "shuttle"))]
pub mod notifier;
#[cfg(all(not(feature = "shuttle"), target_os = "redox"))]
pub mod redox;
pub mod slots;
#[cfg(not(feature = "shuttle"))]
pub mod staging;
pub mod startup;
pub mod state;
pub mod sync;
pub mod testing;
