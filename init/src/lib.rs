//! Boots the system: starts each server as its own process, hands each the
//! endpoints the manifest gives it, supervises them, and stops them; and
//! runs workloads on it as a client.

pub mod churn;
pub mod client;
pub mod herd;
pub mod manifest;
pub mod oversub;
pub mod race;
pub mod scenario;
pub mod supervisor;
pub mod views;
