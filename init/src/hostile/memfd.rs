//! The memfds a client is handed, truncated and grown after binding: the
//! pager's object memfd (its view bound in the client's GPU VM) must be
//! sealed against both, so the pages the servers and the device reach stay
//! the object's; the GPU server's `ReadBo` copy is the client's to change.

use std::os::fd::OwnedFd;

use ipc_protocol::interfaces::gpu as g;
use ipc_protocol::interfaces::pager as p;
use ipc_protocol::types::KernelKind;
use rustix::fs::SealFlags;

use super::conn::{uffd, Hostile};
use super::outcome::Expect::MayServe;

const PAGES: u64 = 16;

/// One round: object memfd (bound) and a `ReadBo` memfd.
pub fn round(h: &mut Hostile) {
    let len = PAGES * 4096;
    let Some((o, mut fds)) = h.pager_with(MayServe, p::CreateObject { size_bytes: len }, vec![])
    else {
        return;
    };
    let Some(memfd) = fds.pop() else {
        h.tally
            .violation("CreateObject answered without its memfd".into());
        return;
    };
    let Ok(addr) = crate::client::map_aligned(&memfd, len as usize, 2 << 20) else {
        h.pager(MayServe, p::DestroyObject { object: o.object });
        return;
    };
    let attach = p::AttachView {
        object: o.object,
        addr,
        object_first_page: 0,
        pages: PAGES,
    };
    let view = uffd().and_then(|fd| h.pager_with(MayServe, attach, vec![fd]));
    let vm = h.gpu(MayServe, g::CreateVm {}).map(|v| v.vm);
    if let (Some((v, _)), Some(vm)) = (&view, vm) {
        h.gpu(
            MayServe,
            g::BindView {
                vm,
                view: v.view,
                gpu_addr: addr,
                flags: 0,
            },
        );
    }
    let sealed = check_sealed(h, &memfd, len);
    if sealed {
        // The mapping still works, on the CPU and the GPU.
        // SAFETY: inside our own mapping of `len` bytes; its pages are
        // served by the pager (the memfd could not shrink).
        let w = unsafe { std::ptr::read_volatile((addr as *const u32).add(1024)) };
        log::debug!("hostile: word read back after the truncate attempts: {w:#x}");
        if let Some(vm) = vm {
            let job = h.gpu(
                MayServe,
                g::Submit {
                    vm,
                    kernel: KernelKind::IncrementAll,
                    addr,
                    len,
                    stride: 4,
                    value: 1,
                    threads: 4,
                },
            );
            if let Some(j) = job {
                h.gpu(
                    MayServe,
                    g::Wait {
                        job: j.job,
                        timeout_ms: 5_000,
                    },
                );
            }
        }
    }
    if let Some(vm) = vm {
        h.gpu(MayServe, g::Unbind { vm, gpu_addr: addr });
        h.gpu(MayServe, g::DestroyVm { vm });
    }
    if let Some((v, _)) = view {
        h.pager(MayServe, p::DetachView { view: v.view });
    }
    // SAFETY: our own mapping, not used after this.
    let _ = unsafe { rustix::mm::munmap(addr as *mut _, len as usize) };
    h.pager(MayServe, p::DestroyObject { object: o.object });
    read_bo(h);
}

/// Tries to shrink and grow `memfd`; both must fail, and its seals must
/// say why. Returns whether it is sealed.
fn check_sealed(h: &mut Hostile, memfd: &OwnedFd, len: u64) -> bool {
    let seals = rustix::fs::fcntl_get_seals(memfd).unwrap_or(SealFlags::empty());
    let mut ok = seals.contains(SealFlags::SHRINK | SealFlags::GROW);
    for size in [0, len / 2, len * 2, 1 << 40] {
        if rustix::fs::ftruncate(memfd, size).is_ok() {
            h.tally.violation(format!(
                "an object memfd of {len} bytes was truncated to {size}"
            ));
            ok = false;
        }
    }
    if !ok {
        h.tally.violation(format!(
            "an object memfd is not sealed against shrink and grow: {seals:?}"
        ));
    }
    ok
}

/// `ReadBo`'s memfd truncated and grown; the server keeps serving.
fn read_bo(h: &mut Hostile) {
    let Some(bo) = h.gpu(
        MayServe,
        g::CreateBo {
            size_bytes: 64 << 10,
        },
    ) else {
        return;
    };
    for size in [0u64, 1 << 30] {
        if let Some((_, fds)) = h.gpu_with(MayServe, g::ReadBo { bo: bo.bo }) {
            for fd in fds {
                let _ = rustix::fs::ftruncate(&fd, size);
            }
        }
    }
    h.gpu(MayServe, g::DestroyBo { bo: bo.bo });
}
