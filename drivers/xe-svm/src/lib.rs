//! The GPU server for Intel Xe. It owns the device (reached only through
//! [`hw::bar::Bar`]), GPU page tables, the copy engine, VRAM and buffer
//! objects, and the GPU fault queue (DESIGN.md section 1).
//!
//! - [`probe`]: device bring-up and engine self-test;
//! - [`device`]: copy engine, TLB invalidation, GuC message pump;
//! - [`vram`]: the buddy allocator, blocks refcounted by resident pages (rule 6);
//! - [`ppgtt`]: page tables per GPU VM;
//! - [`server`]: GPU VMs, the fault path, the notifier (rules 8 and 9).

pub mod bo;
pub mod device;
pub mod ppgtt;
pub mod probe;
pub mod server;
pub mod views;
pub mod vram;
pub mod ww;
