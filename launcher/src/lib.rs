//! Who may talk to whom, as data, and the launcher that wires it up on
//! Redox. Plain data and logic, built for the host and for Redox:
//!
//! - [`manifest`]: every endpoint of the system, its server and client,
//!   and the rights it grants (`init`'s supervisor wires Linux from it);
//! - [`redox_plan`]: the manifest as a Redox launch plan (which scheme path
//!   is opened and handed to whom);
//! - [`handout`]: how the launcher tells a client it spawns which
//!   inherited descriptor is which endpoint.
//!
//! The `xe-svm-launch` binary carries the plan out on Redox
//! (`ipc_protocol::scheme::redox_launch`); `redox/init.d/90_xe-svm` runs it
//! once the servers are up.

pub mod handout;
pub mod manifest;
#[cfg(target_os = "redox")]
pub mod redox;
pub mod redox_plan;
