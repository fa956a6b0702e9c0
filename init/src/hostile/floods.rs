//! Floods up to and past every budget a client has: objects, bytes of
//! objects, views with their address spaces and fault threads; VMs,
//! buffer objects and jobs in flight on the GPU server. Each flood stops at
//! its first refusal (or a cap well past the budget), then gives back what
//! it made: the victim must never notice.

use ipc_protocol::interfaces::gpu as g;
use ipc_protocol::interfaces::pager as p;
use ipc_protocol::types::{BoId, KernelKind, ObjectId, ViewId, VmId};

use super::conn::{uffd, Hostile};
use super::fields::OwnObject;
use super::outcome::Expect::MayServe;

/// Calls a flood makes at most: past every default budget.
const CAP: usize = 700;

/// Calls `make` until it is refused or `cap` calls were made.
fn flood<T>(cap: usize, mut make: impl FnMut() -> Option<T>) -> Vec<T> {
    let mut held = Vec::new();
    for _ in 0..cap {
        match make() {
            Some(t) => held.push(t),
            None => break,
        }
    }
    held
}

/// One round of floods on the pager.
pub fn pager_round(h: &mut Hostile) {
    for size in [4096u64, 1 << 30] {
        let held: Vec<ObjectId> = flood(CAP, || {
            let req = p::CreateObject { size_bytes: size };
            h.pager_with(MayServe, req, vec![]).map(|(o, _)| o.object)
        });
        log::info!(
            "hostile: {} objects of {size} bytes before a refusal",
            held.len()
        );
        for object in held {
            h.pager(MayServe, p::DestroyObject { object });
        }
    }
    let Some(own) = OwnObject::new(h, 64) else {
        return;
    };
    let views: Vec<ViewId> = flood(64, || {
        let req = p::AttachView {
            object: own.object,
            addr: own.addr,
            object_first_page: 0,
            pages: 1,
        };
        h.pager_with(MayServe, req, vec![uffd()?])
            .map(|(v, _)| v.view)
    });
    log::info!("hostile: {} views before a refusal", views.len());
    for view in views {
        h.pager(MayServe, p::DetachView { view });
    }
    own.release(h);
}

/// One round of floods on the GPU server.
pub fn gpu_round(h: &mut Hostile) {
    let vms: Vec<VmId> = flood(CAP, || h.gpu(MayServe, g::CreateVm {}).map(|v| v.vm));
    log::info!("hostile: {} VMs before a refusal", vms.len());
    let bos: Vec<BoId> = flood(CAP, || {
        h.gpu(
            MayServe,
            g::CreateBo {
                size_bytes: 1 << 20,
            },
        )
        .map(|b| b.bo)
    });
    log::info!("hostile: {} buffer objects before a refusal", bos.len());
    if let Some(&vm) = vms.first() {
        // Jobs on nothing mapped: each faults and fails, but holds a slot
        // until then.
        let jobs = flood(CAP, || {
            h.gpu(
                MayServe,
                g::Submit {
                    vm,
                    kernel: KernelKind::TouchPages,
                    addr: 1 << 44,
                    len: 2 << 20,
                    stride: 4096,
                    value: 0,
                    threads: 64,
                },
            )
            .map(|s| s.job)
        });
        log::info!("hostile: {} jobs in flight before a refusal", jobs.len());
        for job in jobs {
            h.gpu(
                MayServe,
                g::Wait {
                    job,
                    timeout_ms: 1_000,
                },
            );
        }
    }
    for bo in bos {
        h.gpu(MayServe, g::DestroyBo { bo });
    }
    for vm in vms {
        h.gpu(MayServe, g::DestroyVm { vm });
    }
}
