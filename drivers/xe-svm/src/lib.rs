//! The GPU server for Intel Xe. It owns the device (reached only through
//! [`hw::bar::Bar`]), GPU page tables, the copy engine, VRAM and buffer
//! objects, and the GPU fault queue (DESIGN.md section 1).
//!
//! Today it probes the device and checks its engines; the fault path,
//! VRAM allocator and notifier arrive with the migration path (issue 5).

pub mod probe;
