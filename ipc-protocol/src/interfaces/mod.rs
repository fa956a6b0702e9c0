//! Every interface of DESIGN.md section 5a, each described once.

pub mod gpu;
pub mod gpu_notify;
pub mod gpu_shrink;
pub mod pager;
pub mod pager_migrate;
pub mod pager_reclaim;
pub mod pressure;

/// Interface ids, for tools that walk all interfaces.
pub const ALL_IDS: [u16; 7] = [1, 2, 3, 4, 5, 6, 7];
