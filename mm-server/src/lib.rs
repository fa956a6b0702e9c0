//! The memory-pressure broker core (DESIGN.md 1, rule 5 and rule 7).
//!
//! - `broker.rs`: VRAM accounting per world (buffer objects, SVM), the
//!   watermarks, and reservations. An allocation that does not fit now is
//!   stalled here, where the requester holds no page or BO lock (rule 5).
//! - `evictor.rs`: the eviction loop, equal pressure on both worlds
//!   (rule 7): the GPU server's shrinker and the pager's reclaim are asked
//!   for the same amount each round.
//!
//! - `startup.rs`: the broker from the flags, checked (both runtimes);
//! - `host.rs`: the Linux runtime (inherited seqpacket endpoints);
//! - `redox.rs`: the Redox runtime (a scheme, endpoints handed over by
//!   the launcher; docs/redox.md).
//!
//! mm-server holds no lock of anyone else's, and every call it makes to a
//! peer has a timeout.

pub mod broker;
pub mod evictor;
#[cfg(not(target_os = "redox"))]
pub mod host;
#[cfg(target_os = "redox")]
pub mod redox;
pub mod sequence;
pub mod startup;
