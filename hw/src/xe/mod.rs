//! Xe hardware formats (pure data).

#[cfg(feature = "std")]
pub mod batch;
pub mod commands;
pub mod fault;
pub mod layout;
pub mod mi;
pub mod pte;
