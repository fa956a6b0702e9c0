//! Every interface of DESIGN.md section 5a, each described once.

pub mod gpu;
pub mod gpu_notify;
pub mod gpu_shrink;
pub mod pager;
pub mod pager_migrate;
pub mod pager_reclaim;
pub mod pressure;

use crate::schema::InterfaceDesc;
use crate::Interface;

/// Runs generic code for one interface chosen at run time (the conformance
/// suite, the generated reference). Implement it for whatever needs `I`.
pub trait Visitor {
    type Output;
    fn visit<I: Interface>(self) -> Self::Output;
}

/// Calls `v` with the interface named `name`; `None` for an unknown name.
/// A new interface is added here, once, and every user follows.
pub fn visit<V: Visitor>(name: &str, v: V) -> Option<V::Output> {
    Some(match name {
        "Pager" => v.visit::<pager::Pager>(),
        "PagerMigrate" => v.visit::<pager_migrate::PagerMigrate>(),
        "PagerReclaim" => v.visit::<pager_reclaim::PagerReclaim>(),
        "Gpu" => v.visit::<gpu::Gpu>(),
        "GpuNotify" => v.visit::<gpu_notify::GpuNotify>(),
        "GpuShrink" => v.visit::<gpu_shrink::GpuShrink>(),
        "Pressure" => v.visit::<pressure::Pressure>(),
        _ => return None,
    })
}

/// Every interface's name, in id order.
pub const NAMES: [&str; 7] = [
    "Pager",
    "PagerMigrate",
    "PagerReclaim",
    "Gpu",
    "GpuNotify",
    "GpuShrink",
    "Pressure",
];

struct Describe;

impl Visitor for Describe {
    type Output = InterfaceDesc;
    fn visit<I: Interface>(self) -> InterfaceDesc {
        I::schema()
    }
}

/// Every interface as data, in id order.
pub fn all() -> alloc::vec::Vec<InterfaceDesc> {
    NAMES.iter().filter_map(|n| visit(n, Describe)).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_in_id_order_and_each_resolves() {
        let all = super::all();
        assert_eq!(all.len(), super::NAMES.len());
        for (i, d) in all.iter().enumerate() {
            assert_eq!(d.name, super::NAMES[i]);
            assert_eq!(d.id as usize, i + 1);
        }
    }
}
