//! Other clients' ids: the victim's object, view, VM, buffer object and
//! job, as the victim knows them, and the same ids with their generation
//! or slot bits changed. Each must name nothing for the hostile client
//! (`NoSuch*`); a success is a breach of the victim's session.

use ipc_protocol::interfaces::gpu as g;
use ipc_protocol::interfaces::pager as p;
use ipc_protocol::types::{Advice, BoId, JobId, KernelKind, Location, VmId};

use super::conn::{uffd, Hostile};
use super::fields::{own_view, OwnObject};
use super::outcome::Expect::{MayServe, MustRefuse};

/// The victim's raw id and the same id with other generation and slot bits.
fn variants(id: u32) -> [u32; 4] {
    [id, id ^ 1, id ^ (1 << 16), id ^ (1 << 24)]
}

/// One round of the victim's `Pager` ids.
pub fn pager_round(h: &mut Hostile) {
    let v = h.victim;
    for object in variants(v.object.get()).map(ipc_protocol::types::ObjectId::raw) {
        h.pager(
            MustRefuse,
            p::Snapshot {
                object,
                first_page: 0,
                count: super::conn::pages(1),
            },
        );
        h.pager(
            MustRefuse,
            p::Advise {
                object,
                first_page: 0,
                pages: 1,
                advice: Advice::PreferSystem,
            },
        );
        h.pager(
            MustRefuse,
            p::Prefetch {
                object,
                first_page: 0,
                count: super::conn::pages(1),
                to: Location::System,
                gpu: super::conn::GPU0,
            },
        );
        if let Some(fd) = uffd() {
            // Its own mapping address, so only the object is foreign.
            let req = p::AttachView {
                object,
                addr: v.addr,
                object_first_page: 0,
                pages: 1,
            };
            h.pager_with(MustRefuse, req, vec![fd]);
        }
        h.pager(MustRefuse, p::DestroyObject { object });
    }
    for view in variants(v.view.get()).map(ipc_protocol::types::ViewId::raw) {
        h.pager(MustRefuse, p::DetachView { view });
    }
}

/// One round of the victim's `Gpu` ids, on the hostile's own VM and view
/// where a call needs one of its own.
pub fn gpu_round(h: &mut Hostile) {
    let v = h.victim;
    let vm = h.gpu(MayServe, g::CreateVm {}).map(|c| c.vm);
    let own = OwnObject::new(h, 16);
    let view = own.as_ref().and_then(|o| own_view(h, o));
    // A changed id that happens to be the hostile's own is not forged.
    for id in variants(v.vm.get())
        .map(VmId::raw)
        .into_iter()
        .filter(|id| Some(*id) != vm)
    {
        if let Some(view) = view {
            h.gpu(
                MustRefuse,
                g::BindView {
                    vm: id,
                    view,
                    gpu_addr: v.addr,
                    flags: 0,
                },
            );
        }
        h.gpu(
            MustRefuse,
            g::Unbind {
                vm: id,
                gpu_addr: v.addr,
            },
        );
        h.gpu(
            MustRefuse,
            g::Submit {
                vm: id,
                kernel: KernelKind::IncrementAll,
                addr: v.addr,
                len: 4096,
                stride: 4,
                value: 0x6666,
                threads: 1,
            },
        );
        h.gpu(
            MustRefuse,
            g::SubmitBatch {
                vm: id,
                batch_addr: v.addr,
                fence_addr: v.addr,
                fence_value: 0x6666,
            },
        );
        h.gpu(MustRefuse, g::DestroyVm { vm: id });
    }
    for id in variants(v.bo.get()).map(BoId::raw) {
        if let Some(vm) = vm {
            h.gpu(
                MustRefuse,
                g::MapBo {
                    vm,
                    bo: id,
                    gpu_addr: 1 << 40,
                },
            );
        }
        h.gpu_with(MustRefuse, g::ReadBo { bo: id });
        h.gpu(MustRefuse, g::DestroyBo { bo: id });
    }
    for id in [v.job.get(), v.job.get() ^ 1, v.job.get() ^ (1 << 32)] {
        h.gpu(
            MustRefuse,
            g::Wait {
                job: JobId::raw(id),
                timeout_ms: 10,
            },
        );
    }
    if let Some(vm) = vm {
        // The victim's view, in the hostile's own VM.
        let views = variants(v.view.get()).map(ipc_protocol::types::ViewId::raw);
        for id in views.into_iter().filter(|id| Some(*id) != view) {
            h.gpu(
                MustRefuse,
                g::BindView {
                    vm,
                    view: id,
                    gpu_addr: v.addr,
                    flags: 0,
                },
            );
        }
        h.gpu(MayServe, g::DestroyVm { vm });
    }
    if let Some(view) = view {
        h.pager(MayServe, p::DetachView { view });
    }
    if let Some(o) = own {
        o.release(h);
    }
}
