//! The address-space pager core: the per-page state table and page locks
//! (rules 1 to 3), and the CPU-fault and collect/finalize protocols
//! (rules 1, 2, 4, 6). No I/O: side effects go through [`migrate::Backend`],
//! implemented by the host runtime (userfaultfd, memfds) and by tests.
//!
//! All synchronisation goes through [`sync`], so the same code runs on
//! std and under the shuttle schedule explorer.

pub mod host;
pub mod migrate;
pub mod state;
pub mod sync;
pub mod testing;
