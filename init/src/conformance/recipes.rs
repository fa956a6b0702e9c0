//! What the suite may ask of each interface without changing anything a
//! running system depends on: a call that must be answered (the liveness
//! check after every malformed frame), the golden requests a live system
//! must not get, the stale-id checks where an interface has ids, the calls
//! that wait across a restart, and something a caller can hold to see
//! whether the server kept its session.

use ipc_protocol::interfaces::{
    gpu as g, gpu_notify as n, gpu_shrink as sh, pager as p, pager_migrate as m,
    pager_reclaim as r, pressure as pr,
};
use ipc_protocol::types::{GpuId, MemoryKind, ObjectId, PageCount, ViewId, VmId, World};
use ipc_protocol::{Call, Interface, Message, Writer};

use super::endpoint::{Failure, RawEndpoint};

/// An id no implementation hands out in a conformance run.
const UNUSED_ID: u32 = u32::MAX;

/// A call that must be answered: a reply, or for calls that can only fail
/// without state (a made-up id), the server's own typed error.
pub fn liveness(iface: &str, ep: &RawEndpoint) -> Result<(), String> {
    let one = PageCount::new(1).ok_or("page count 1")?;
    match iface {
        "Pager" => {
            let (o, fds) = ep
                .call(p::CreateObject { size_bytes: 4096 }, vec![])
                .map_err(|e| format!("CreateObject: {e}"))?;
            check_memfd_size(&fds, 4096)?;
            ep.call(p::DestroyObject { object: o.object }, vec![])
                .map(drop)
                .map_err(|e| format!("DestroyObject: {e}"))
        }
        "PagerMigrate" => answered(ep.call(
            m::GetPages {
                object: ObjectId::raw(UNUSED_ID),
                first_page: 0,
                count: one,
            },
            vec![],
        )),
        "PagerReclaim" => replied(ep.call(r::Usage {}, vec![])),
        "Gpu" => replied(ep.call(g::Stats {}, vec![])),
        "GpuNotify" => answered(ep.call(
            n::ViewGone {
                view: ViewId::raw(UNUSED_ID),
            },
            vec![],
        )),
        "GpuShrink" => replied(ep.call(sh::Usage {}, vec![])),
        "Pressure" => replied(ep.call(pr::Status {}, vec![])),
        other => Err(format!("the suite has no safe call for {other}")),
    }
}

fn replied<R, E: std::fmt::Debug>(r: Result<R, Failure<E>>) -> Result<(), String> {
    r.map(drop).map_err(|e| e.to_string())
}

fn answered<R, E: std::fmt::Debug>(r: Result<R, Failure<E>>) -> Result<(), String> {
    match r {
        Ok(_) | Err(Failure::Server(_)) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

fn check_memfd_size(fds: &[std::os::fd::OwnedFd], size: u64) -> Result<(), String> {
    let fd = fds.first().ok_or("no memfd in the reply")?;
    let st = rustix::fs::fstat(fd).map_err(|e| format!("fstat of the passed memfd: {e}"))?;
    if st.st_size as u64 != size {
        return Err(format!(
            "the passed memfd holds {} bytes, not {size}",
            st.st_size
        ));
    }
    Ok(())
}

/// Golden requests a live system must not get, and why.
pub fn unsafe_on_live_system(iface: &str, message: &str) -> Option<&'static str> {
    match (iface, message) {
        ("GpuNotify", "AttachStaging") => Some(
            "not sent to a live system: it would replace the pager's staging buffer, and \
             migrations to RAM would copy into the suite's memfd",
        ),
        _ => None,
    }
}

/// A destroyed id must stay dead and must not come back for a new one
/// (ids carry no generation yet, so reuse would let a stale id name a new
/// thing). `None`: the interface has no ids a client creates.
pub fn stale_ids(iface: &str, ep: &RawEndpoint) -> Option<Result<(), String>> {
    match iface {
        "Pager" => Some(stale_object(ep)),
        "Gpu" => Some(stale_vm(ep)),
        _ => None,
    }
}

fn stale_object(ep: &RawEndpoint) -> Result<(), String> {
    let create = || {
        ep.call(p::CreateObject { size_bytes: 4096 }, vec![])
            .map(|(o, _)| o.object)
            .map_err(|e| format!("CreateObject: {e}"))
    };
    let destroy = |object| {
        ep.call(p::DestroyObject { object }, vec![])
            .map_err(|e| format!("DestroyObject: {e}"))
    };
    let a = create()?;
    destroy(a)?;
    let snap = ep.call(
        p::Snapshot {
            object: a,
            first_page: 0,
            count: PageCount::new(1).ok_or("page count 1")?,
        },
        vec![],
    );
    match snap {
        Err(Failure::Server(p::PagerError::NoSuchObject)) => {}
        other => {
            return Err(format!(
                "Snapshot of a destroyed object: {:?}",
                other.map(|(r, _)| r)
            ))
        }
    }
    let b = create()?;
    destroy(b)?;
    if a == b {
        return Err(format!(
            "object id {} was handed out again after it was destroyed",
            a.get()
        ));
    }
    Ok(())
}

fn stale_vm(ep: &RawEndpoint) -> Result<(), String> {
    let create = || {
        ep.call(g::CreateVm {}, vec![])
            .map(|(v, _)| v.vm)
            .map_err(|e| format!("CreateVm: {e}"))
    };
    let destroy = |vm| ep.call(g::DestroyVm { vm }, vec![]);
    let a = create()?;
    destroy(a).map_err(|e| format!("DestroyVm: {e}"))?;
    match destroy(a) {
        Err(Failure::Server(g::GpuError::NoSuchVm)) => {}
        other => {
            return Err(format!(
                "DestroyVm of a destroyed VM: {:?}",
                other.map(|(r, _)| r)
            ))
        }
    }
    let b = create()?;
    destroy(b).map_err(|e| format!("DestroyVm: {e}"))?;
    if a == b {
        return Err(format!(
            "VM id {} was handed out again after it was destroyed",
            a.get()
        ));
    }
    Ok(())
}

/// A request as (opcode, payload), to send in raw frames.
pub type RawCall = (u16, Vec<u8>);

fn raw<C: Call>(c: C) -> RawCall {
    let req: <C::Interface as Interface>::Request = c.into();
    let mut w = Writer::new();
    req.encode_payload(&mut w);
    (req.opcode(), w.into_bytes())
}

/// One page (checked when compiling: PageCount is 1 to 512).
const ONE_PAGE: PageCount = match PageCount::new(1) {
    Some(p) => p,
    None => panic!("1 is a page count"),
};

/// The last GPU id (checked when compiling).
const LAST_GPU: GpuId = match GpuId::new(GpuId::MAX) {
    Some(g) => g,
    None => panic!("GpuId::MAX is a GPU id"),
};

/// A call that changes nothing and is not idempotent where the interface
/// has such a call (idempotent otherwise): sent to an implementation that
/// is about to restart, it waits in the socket across the restart.
pub fn waiting_call(iface: &str) -> Option<RawCall> {
    Some(match iface {
        // Not a multiple of a page: `BadSize`.
        "Pager" => raw(p::CreateObject {
            size_bytes: 3 * 4096 + 1,
        }),
        "PagerMigrate" => idempotent_call(iface)?,
        "PagerReclaim" => raw(r::Evict {
            gpu: LAST_GPU,
            bytes: 0,
        }),
        "Gpu" => raw(g::DestroyVm {
            vm: VmId::raw(UNUSED_ID),
        }),
        "GpuNotify" => idempotent_call(iface)?,
        "GpuShrink" => raw(sh::Shrink { bytes: 0 }),
        // System memory is not the broker's to reserve: `TooLarge`.
        "Pressure" => raw(pr::Reserve {
            memory: MemoryKind::Sram,
            world: World::Svm,
            bytes: 1,
            timeout_ms: 0,
        }),
        _ => return None,
    })
}

/// A call marked idempotent that changes nothing: a caller sends it again
/// after a restart.
pub fn idempotent_call(iface: &str) -> Option<RawCall> {
    Some(match iface {
        "Pager" => raw(p::Snapshot {
            object: ObjectId::raw(UNUSED_ID),
            first_page: 0,
            count: ONE_PAGE,
        }),
        "PagerMigrate" => raw(m::GetPages {
            object: ObjectId::raw(UNUSED_ID),
            first_page: 0,
            count: ONE_PAGE,
        }),
        "PagerReclaim" => raw(r::Usage {}),
        "Gpu" => raw(g::Stats {}),
        "GpuNotify" => raw(n::ViewGone {
            view: ViewId::raw(UNUSED_ID),
        }),
        "GpuShrink" => raw(sh::Usage {}),
        "Pressure" => raw(pr::Status {}),
        _ => return None,
    })
}

/// Something a caller made through its endpoint, which the server keeps in
/// the caller's session.
#[derive(Debug, Clone, Copy)]
pub enum Held {
    Object(ObjectId),
    Vm(VmId),
}

/// Makes something the server keeps for the caller (`None`: the interface
/// has nothing a caller makes).
pub fn hold(iface: &str, ep: &RawEndpoint) -> Option<Result<Held, String>> {
    match iface {
        "Pager" => Some(
            ep.call(p::CreateObject { size_bytes: 4096 }, vec![])
                .map(|(o, _)| Held::Object(o.object))
                .map_err(|e| format!("CreateObject: {e}")),
        ),
        "Gpu" => Some(
            ep.call(g::CreateVm {}, vec![])
                .map(|(v, _)| Held::Vm(v.vm))
                .map_err(|e| format!("CreateVm: {e}")),
        ),
        _ => None,
    }
}

/// Whether the server still knows `held`: any answer but the interface's
/// "no such" error means it does.
pub fn still_held(held: Held, ep: &RawEndpoint) -> Result<bool, String> {
    match held {
        Held::Object(object) => match ep.call(
            p::Snapshot {
                object,
                first_page: 0,
                count: ONE_PAGE,
            },
            vec![],
        ) {
            Err(Failure::Server(p::PagerError::NoSuchObject)) => Ok(false),
            Ok(_) | Err(Failure::Server(_)) => Ok(true),
            Err(e) => Err(format!("Snapshot: {e}")),
        },
        // No binding at address 0: a VM that exists answers `BadRange`.
        Held::Vm(vm) => match ep.call(g::Unbind { vm, gpu_addr: 0 }, vec![]) {
            Err(Failure::Server(g::GpuError::NoSuchVm)) => Ok(false),
            Ok(_) | Err(Failure::Server(_)) => Ok(true),
            Err(e) => Err(format!("Unbind: {e}")),
        },
    }
}

/// Gives `held` back (it may be gone already).
pub fn release(held: Held, ep: &RawEndpoint) {
    // Either answer will do: the suite only tidies up.
    let _answered = match held {
        Held::Object(object) => ep.call(p::DestroyObject { object }, vec![]).is_ok(),
        Held::Vm(vm) => ep.call(g::DestroyVm { vm }, vec![]).is_ok(),
    };
}
