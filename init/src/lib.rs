//! Boots the system: starts each server as its own process, hands each the
//! endpoints the manifest gives it, supervises them, and stops them; and
//! runs workloads on it as a client.

pub mod args;
pub mod bench;
pub mod chaos;
pub mod churn;
pub mod client;

pub mod conformance;
pub mod devices;
pub mod exec;
pub mod guest;
pub mod herd;
pub mod hostile;
pub mod keeper;
pub use launcher::manifest;
pub mod oversub;
pub mod peer_migrate;
pub mod process;
pub mod qemu;
pub mod race;
pub mod recovery;
pub use launcher::redox_plan;
pub mod scenario;
pub mod size;
pub mod spawn;
pub mod stall;
pub mod summary;
pub mod supervisor;
pub mod views;
