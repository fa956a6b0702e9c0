//! Boots the system: starts each server as its own process, hands each the
//! endpoints it may use, supervises them, and stops them.
//!
//! Today's system is the device model (`xe-model`) and the GPU server
//! (`xe-svm`) joined by the device's control channel; the pager and
//! mm-server join with the migration path (issue 5).

pub mod supervisor;
