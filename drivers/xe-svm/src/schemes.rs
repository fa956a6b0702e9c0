//! The GPU server's endpoints as Redox scheme paths (docs/redox.md): plain
//! data, built on the host so tests check them against the launcher's plan
//! (`launcher/src/redox_plan.rs`) and the Linux main mints the same badges.
//!
//! Two schemes, because of rule 9: `xe-svm` serves `gpu.<badge>` per
//! client, `gpushrink.3` (mm-server's) and `control`; `xe-svm.notify`
//! serves `gpunotify.2` (the pager's) on its own request loop and workers,
//! so GPU faults waiting on the pager, which hold `xe-svm`'s workers, never
//! hold the pager's invalidations.

use ipc_protocol::interfaces::{
    gpu::Gpu, gpu_notify::GpuNotify, gpu_shrink::GpuShrink, pager_migrate::PagerMigrate,
    pressure::Pressure,
};
use ipc_protocol::scheme::handoff::{endpoint_path, CONTROL_INTERFACE, CONTROL_PATH};
use ipc_protocol::scheme::Endpoint;
use ipc_protocol::{Capability, Interface, Rights};

pub const SCHEME: &str = "xe-svm";
pub const NOTIFY_SCHEME: &str = "xe-svm.notify";
/// Badges of the shared endpoints, the same on Linux (`linux.rs`).
pub const NOTIFY_BADGE: u64 = 2;
pub const SHRINK_BADGE: u64 = 3;

/// What a client's `Gpu` endpoint may do by default.
pub const CLIENT_RIGHTS: Rights = Rights::GPU_VM
    .union(Rights::GPU_SUBMIT)
    .union(Rights::GPU_BO)
    .union(Rights::GPU_STATS);

/// The roles the launcher hands us on `control`: the endpoints we call.
pub const CALLED: [u16; 2] = [PagerMigrate::ID, Pressure::ID];

/// What each kind of endpoint may do.
#[derive(Debug, Clone, Copy)]
pub struct EndpointRights {
    pub client: Rights,
    pub notify: Rights,
    pub shrink: Rights,
}

fn endpoint<I: Interface>(badge: u64, rights: Rights) -> Endpoint {
    Endpoint {
        path: endpoint_path(I::NAME, badge),
        interface: I::ID,
        capability: Capability::new(badge, rights),
    }
}

/// The endpoints of the `xe-svm` scheme.
pub fn main_endpoints(client_badges: &[u64], r: EndpointRights) -> Vec<Endpoint> {
    let mut v: Vec<Endpoint> = client_badges
        .iter()
        .map(|&b| endpoint::<Gpu>(b, r.client))
        .collect();
    v.push(endpoint::<GpuShrink>(SHRINK_BADGE, r.shrink));
    v.push(Endpoint {
        path: CONTROL_PATH.into(),
        interface: CONTROL_INTERFACE,
        // No rights: a frame sent to `control` is refused (`Denied`).
        capability: Capability::new(0, Rights::empty()),
    });
    v
}

/// The endpoints of the `xe-svm.notify` scheme.
pub fn notify_endpoints(r: EndpointRights) -> Vec<Endpoint> {
    vec![endpoint::<GpuNotify>(NOTIFY_BADGE, r.notify)]
}
