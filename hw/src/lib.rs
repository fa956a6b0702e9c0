//! Intel Xe hardware formats and a device model.
//!
//! - [`xe`]: what a driver writes and reads, bit for bit, following the
//!   public Linux xe driver headers (each file cites its header): PPGTT
//!   entries, the GuC page-fault descriptor and reply, copy-engine and GuC
//!   commands, the MI instructions of batch buffers, and the layout of the
//!   shared register/ring region. `no_std` (the batch builder needs `std`).
//! - [`model`]: a simulated Xe GPU that shares with its driver only what a
//!   real device shares (VRAM, page-table memory, rings, registers) and
//!   runs as its own process (`xe-model`) or as a thread in tests.
//! - [`bar`]: the driver's view of that device: mapped registers and VRAM,
//!   ring producers and consumers, DMA mapping of system memory;
//!   [`control`]: the records of its control channel.

#![cfg_attr(not(feature = "std"), no_std)]

pub mod xe;

#[cfg(feature = "std")]
pub mod bar;
#[cfg(feature = "std")]
pub mod control;
#[cfg(feature = "std")]
mod futex;
#[cfg(feature = "std")]
pub mod model;
#[cfg(feature = "std")]
pub mod shm;
