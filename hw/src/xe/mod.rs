//! Xe hardware formats (pure data).

pub mod commands;
pub mod fault;
pub mod layout;
pub mod pte;
