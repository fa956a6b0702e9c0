//! Every interface of DESIGN.md section 5a, each described once.

pub mod gpu;
pub mod gpu_notify;
pub mod gpu_shrink;
pub mod pager;
pub mod pager_migrate;
pub mod pager_reclaim;
pub mod pressure;
