//! Every field of every request at 0, the maximum, values that wrap when
//! added to, and unaligned values, the other fields valid: on the caller's
//! own object, view, VM and buffer object, so only the field under test is
//! wrong. A success is legitimate (the call names the caller's own); what
//! it made is undone at once.

use ipc_protocol::interfaces::gpu as g;
use ipc_protocol::interfaces::pager as p;
use ipc_protocol::types::{Advice, BoId, JobId, KernelKind, Location, ObjectId, ViewId, VmId};

use super::conn::{not_a_uffd, uffd, Hostile};
use super::outcome::Expect::{MayServe, MustRefuse};

/// Values a 64-bit address, length or count is tried at.
pub const U64S: [u64; 12] = [
    0,
    1,
    4095,
    4097,
    1 << 47,
    (1 << 47) - 4096,
    1 << 63,
    u64::MAX,
    u64::MAX - 4095,
    u64::MAX - (2 << 20) + 1,
    u64::MAX / 4096 + 1,
    (1 << 33) + 4096,
];

/// Values an id is tried at (besides the caller's own).
pub const IDS: [u32; 5] = [0, 1, 0xffff, 1 << 31, u32::MAX];

/// The caller's own object (mapped, 16 pages) for the pager's fields.
pub struct OwnObject {
    pub object: ObjectId,
    pub addr: u64,
    pub pages: u64,
    _memfd: std::os::fd::OwnedFd,
}

impl OwnObject {
    pub fn new(h: &mut Hostile, pages: u64) -> Option<Self> {
        let req = p::CreateObject {
            size_bytes: pages * 4096,
        };
        let (o, mut fds) = h.pager_with(MayServe, req, Vec::new())?;
        let memfd = fds.pop()?;
        let addr = crate::client::map_aligned(&memfd, (pages * 4096) as usize, 2 << 20).ok()?;
        Some(Self {
            object: o.object,
            addr,
            pages,
            _memfd: memfd,
        })
    }

    pub fn release(self, h: &mut Hostile) {
        // SAFETY: our own mapping, not used after this.
        let _ = unsafe { rustix::mm::munmap(self.addr as *mut _, (self.pages * 4096) as usize) };
        h.pager(
            MayServe,
            p::DestroyObject {
                object: self.object,
            },
        );
    }
}

/// One round over every `Pager` request's fields.
pub fn pager_round(h: &mut Hostile) {
    for v in U64S {
        if let Some(o) = h.pager_with(MayServe, p::CreateObject { size_bytes: v }, vec![]) {
            h.pager(MayServe, p::DestroyObject { object: o.0.object });
        }
    }
    let Some(own) = OwnObject::new(h, 16) else {
        return;
    };
    let o = own.object;
    for v in U64S {
        attach(h, o, v, 0, own.pages);
        attach(h, o, own.addr, v, 1);
        attach(h, o, own.addr, 0, v);
        attach(h, o, own.addr + 4096, 15, v);
        h.pager(
            MayServe,
            p::Advise {
                object: o,
                first_page: v,
                pages: 1,
                advice: Advice::PreferDevice,
            },
        );
        h.pager(
            MayServe,
            p::Advise {
                object: o,
                first_page: 1,
                pages: v,
                advice: Advice::AtomicDevice,
            },
        );
        for count in [1u16, 512] {
            let count = super::conn::pages(count);
            h.pager(
                MayServe,
                p::Snapshot {
                    object: o,
                    first_page: v,
                    count,
                },
            );
            h.pager(
                MayServe,
                p::Prefetch {
                    object: o,
                    first_page: v,
                    count,
                    to: Location::Device,
                    gpu: super::conn::GPU0,
                },
            );
        }
    }
    // The view's handle: none, or not a userfaultfd.
    let a = p::AttachView {
        object: o,
        addr: own.addr,
        object_first_page: 0,
        pages: own.pages,
    };
    h.pager_with(MayServe, a.clone(), vec![]);
    if let Some(fd) = not_a_uffd() {
        h.pager_with(MayServe, a, vec![fd]);
    }
    for id in IDS {
        h.pager(
            MayServe,
            p::DetachView {
                view: ViewId::raw(id),
            },
        );
        h.pager(
            MayServe,
            p::DestroyObject {
                object: ObjectId::raw(id ^ o.get()),
            },
        );
    }
    h.pager(MayServe, p::Accounting {});
    own.release(h);
}

/// `AttachView` with these numbers and a fresh userfaultfd; a view that
/// was made is detached again.
fn attach(h: &mut Hostile, object: ObjectId, addr: u64, first: u64, pages: u64) {
    let Some(fd) = uffd() else { return };
    let req = p::AttachView {
        object,
        addr,
        object_first_page: first,
        pages,
    };
    if let Some((v, _)) = h.pager_with(MayServe, req, vec![fd]) {
        h.pager(MayServe, p::DetachView { view: v.view });
    }
}

fn protect(h: &mut Hostile, vm: VmId, gpu_addr: u64, len: u64, prot: u32) {
    h.gpu(
        MayServe,
        g::Protect {
            vm,
            gpu_addr,
            len,
            prot,
        },
    );
}

/// One round over every `Gpu` request's fields, on the caller's own VM,
/// bound view and buffer object.
pub fn gpu_round(h: &mut Hostile) {
    let Some(vm) = h.gpu(MayServe, g::CreateVm {}).map(|v| v.vm) else {
        return;
    };
    let Some(own) = OwnObject::new(h, 16) else {
        h.gpu(MayServe, g::DestroyVm { vm });
        return;
    };
    let view = own_view(h, &own);
    let bo = h
        .gpu(
            MayServe,
            g::CreateBo {
                size_bytes: 64 << 10,
            },
        )
        .map(|b| b.bo);
    for v in U64S {
        if let Some(view) = view {
            if h.gpu(
                MayServe,
                g::BindView {
                    vm,
                    view,
                    gpu_addr: v,
                    flags: 0,
                },
            )
            .is_some()
            {
                h.gpu(MayServe, g::Unbind { vm, gpu_addr: v });
            }
            // Flags past BIND_READ_ONLY are refused.
            let flags = (v as u32) & !g::BIND_READ_ONLY;
            if flags != 0 {
                let bind = g::BindView {
                    vm,
                    view,
                    gpu_addr: own.addr,
                    flags,
                };
                h.gpu(MustRefuse, bind);
            }
        }
        h.gpu(MayServe, g::Unbind { vm, gpu_addr: v });
        submit(h, vm, own.addr, v, 4, 1);
        submit(h, vm, v, 4096, 4, 1);
        submit(h, vm, own.addr, 4096, v, 1);
        batch(h, vm, v, 0);
        batch(h, vm, own.addr, v);
        if let Some(b) = h.gpu(MayServe, g::CreateBo { size_bytes: v }) {
            h.gpu(MayServe, g::DestroyBo { bo: b.bo });
        }
        protect(h, vm, v, 4096, g::PROT_READ);
        protect(h, vm, own.addr, v, v as u32);
        if let Some(bo) = bo {
            h.gpu(
                MayServe,
                g::MapBo {
                    vm,
                    bo,
                    gpu_addr: v,
                },
            );
        }
    }
    for threads in [0u16, 1, u16::MAX] {
        submit(h, vm, own.addr, 4096, 4, threads);
    }
    for id in IDS {
        h.gpu(
            MayServe,
            g::Wait {
                job: JobId::raw(id as u64 | 1 << 40),
                timeout_ms: u32::MAX,
            },
        );
        h.gpu(MayServe, g::DestroyBo { bo: BoId::raw(id) });
        h.gpu(MayServe, g::ReadBo { bo: BoId::raw(id) });
        h.gpu(MayServe, g::DestroyVm { vm: VmId::raw(id) });
        protect(h, VmId::raw(id), own.addr, 4096, 0);
    }
    h.gpu(MayServe, g::Stats {});
    if let Some(bo) = bo {
        h.gpu(MayServe, g::DestroyBo { bo });
    }
    h.gpu(MayServe, g::DestroyVm { vm });
    if let Some(view) = view {
        h.pager(MayServe, p::DetachView { view });
    }
    own.release(h);
}

/// A view of all of `own` (for binding).
pub fn own_view(h: &mut Hostile, own: &OwnObject) -> Option<ViewId> {
    let req = p::AttachView {
        object: own.object,
        addr: own.addr,
        object_first_page: 0,
        pages: own.pages,
    };
    h.pager_with(MayServe, req, vec![uffd()?])
        .map(|(v, _)| v.view)
}

/// A job with these numbers; one that was accepted is waited for (briefly).
fn submit(h: &mut Hostile, vm: VmId, addr: u64, len: u64, stride: u64, threads: u16) {
    let req = g::Submit {
        vm,
        kernel: KernelKind::StridedWrite,
        addr,
        len,
        stride,
        value: 0x6666_6666,
        threads,
    };
    if let Some(s) = h.gpu(MayServe, req) {
        wait_for(h, s.job);
    }
}

fn batch(h: &mut Hostile, vm: VmId, batch_addr: u64, fence_addr: u64) {
    let req = g::SubmitBatch {
        vm,
        batch_addr,
        fence_addr,
        fence_value: u64::MAX,
    };
    if let Some(s) = h.gpu(MayServe, req) {
        wait_for(h, s.job);
    }
}

/// Waits (up to 2 s) for a job the edge values got accepted, so the next
/// case does not queue behind it.
fn wait_for(h: &mut Hostile, job: JobId) {
    h.gpu(
        MayServe,
        g::Wait {
            job,
            timeout_ms: 2_000,
        },
    );
}
