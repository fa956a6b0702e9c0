//! The client side of SVM: a buffer whose memory is a pager object mapped
//! into this process and registered with our userfaultfd.

use std::os::fd::OwnedFd;

use ipc_protocol::client::{CallError, Client};
use ipc_protocol::interfaces::gpu::{
    BindView, CreateVm, DestroyVm, Gpu, GpuError, JobDone, Submit, Wait,
};
use ipc_protocol::interfaces::pager::{
    AttachView, CreateObject, DestroyObject, DetachView, Pager, PagerError,
};
use ipc_protocol::types::{KernelKind, ObjectId, ViewId, VmId};
use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};
use scopeguard::ScopeGuard;

pub struct SvmBuffer {
    pub object: ObjectId,
    pub view: ViewId,
    pub addr: u64,
    pub len: usize,
    _memfd: OwnedFd,
}

impl SvmBuffer {
    /// Asks the pager for `len` bytes of SVM memory, maps it, and hands
    /// the pager our userfaultfd for the view.
    pub fn new(pager: &Client<Pager>, len: usize) -> Result<Self, CallError<PagerError>> {
        let (created, mut fds) = pager.call_with_handles(
            CreateObject {
                size_bytes: len as u64,
            },
            vec![],
        )?;
        let memfd = fds.pop().ok_or(CallError::UnexpectedReply)?;
        // 2 MiB alignment lets the GPU map whole chunks with 2 MiB pages.
        let addr =
            map_aligned(&memfd, len, 2 << 20).map_err(|_| CallError::Server(PagerError::Host))?;
        let uffd = pager_uffd().map_err(|_| CallError::Server(PagerError::BadUserfaultfd))?;
        let (attached, _) = pager.call_with_handles(
            AttachView {
                object: created.object,
                addr,
                object_first_page: 0,
                pages: (len / 4096) as u64,
            },
            vec![uffd],
        )?;
        Ok(Self {
            object: created.object,
            view: attached.view,
            addr,
            len,
            _memfd: memfd,
        })
    }

    /// Binds the buffer in `vm` at its own address (GPU address = CPU
    /// address, DESIGN.md 2).
    pub fn bind(&self, gpu: &Client<Gpu>, vm: VmId) -> Result<(), CallError<GpuError>> {
        gpu.call(BindView {
            vm,
            view: self.view,
            gpu_addr: self.addr,
            flags: 0,
        })
        .map(|_| ())
    }

    /// The buffer as u32 words.
    ///
    /// # Safety
    /// The caller must not hold the slice across [`Self::release`], and
    /// concurrent users must access it with volatile or atomic reads.
    pub unsafe fn words(&self) -> &mut [u32] {
        // SAFETY: the mapping is `len` bytes, page aligned, and lives until release.
        unsafe { std::slice::from_raw_parts_mut(self.addr as *mut u32, self.len / 4) }
    }

    /// The view moved to `addr` (a plain `mremap` of all of it): the pager
    /// followed it under the same view id.
    pub fn moved_to(&mut self, addr: u64) {
        self.addr = addr;
    }

    /// Detaches the view, unmaps, and destroys the object. Other views of
    /// the object the caller unmapped (an `mremap` copy) go when the pager
    /// has read their unmap event, which may still be on its way: the
    /// object is busy until then.
    pub fn release(self, pager: &Client<Pager>) -> Result<(), CallError<PagerError>> {
        pager.call(DetachView { view: self.view })?;
        // SAFETY: our own mapping; no slice into it outlives this call.
        let _ = unsafe { munmap(self.addr as *mut _, self.len) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match pager.call(DestroyObject {
                object: self.object,
            }) {
                Err(CallError::Server(PagerError::Busy))
                    if std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                r => return r.map(|_| ()),
            }
        }
    }
}

/// A buffer released when dropped: a workload that leaves early (an
/// error, or a GPU server restart that took its VM) leaves nothing behind
/// in the pager. [`ScopeGuard::into_inner`] takes it back to release it
/// and see the result.
pub type ScopedBuffer<'a> = ScopeGuard<SvmBuffer, Box<dyn FnOnce(SvmBuffer) + 'a>>;

/// `buf`, released through `pager` if it is dropped.
pub fn scoped_buffer(pager: &Client<Pager>, buf: SvmBuffer) -> ScopedBuffer<'_> {
    ScopeGuard::with_strategy(
        buf,
        Box::new(move |b: SvmBuffer| {
            if let Err(e) = b.release(pager) {
                log::warn!("releasing a buffer a workload left: {e}");
            }
        }),
    )
}

/// A VM destroyed when dropped (the same reason as [`ScopedBuffer`]).
pub type ScopedVm<'a> = ScopeGuard<VmId, Box<dyn FnOnce(VmId) + 'a>>;

/// A new VM of `gpu`'s, destroyed if it is dropped.
pub fn scoped_vm(gpu: &Client<Gpu>) -> Result<ScopedVm<'_>, CallError<GpuError>> {
    let vm = gpu.call(CreateVm {})?.vm;
    Ok(ScopeGuard::with_strategy(
        vm,
        Box::new(move |vm: VmId| {
            // Gone already if the client's session ended meanwhile.
            if let Err(e) = gpu.call(DestroyVm { vm }) {
                log::debug!("destroying a VM a workload left: {e}");
            }
        }),
    ))
}

/// Destroys a scoped VM now, with the result.
pub fn destroy_vm(gpu: &Client<Gpu>, vm: ScopedVm<'_>) -> Result<(), CallError<GpuError>> {
    gpu.call(DestroyVm {
        vm: ScopeGuard::into_inner(vm),
    })
    .map(|_| ())
}

/// Runs `kernel` over `[addr, addr + len)` in `vm` and waits for it.
pub fn run_kernel(
    gpu: &Client<Gpu>,
    vm: VmId,
    kernel: KernelKind,
    addr: u64,
    len: u64,
    value: u32,
) -> Result<JobDone, CallError<GpuError>> {
    let stride = if kernel == KernelKind::AtomicAdd {
        4096
    } else {
        4
    };
    let job = gpu
        .call(Submit {
            vm,
            kernel,
            addr,
            len,
            stride,
            value,
            threads: 64,
        })?
        .job;
    gpu.call(Wait {
        job,
        timeout_ms: 120_000,
    })
}

/// Maps `len` bytes of `memfd` (shared, read-write) at an address aligned
/// to `align` (a power of two) that the kernel picks.
pub fn map_aligned(memfd: &OwnedFd, len: usize, align: usize) -> rustix::io::Result<u64> {
    let reserve = len.checked_add(align).ok_or(rustix::io::Errno::NOMEM)?;
    // SAFETY: a fresh anonymous reservation at a kernel-chosen address.
    let area = unsafe {
        rustix::mm::mmap_anonymous(
            std::ptr::null_mut(),
            reserve,
            ProtFlags::empty(),
            MapFlags::PRIVATE | MapFlags::NORESERVE,
        )
    }?;
    let aligned = (area as usize).next_multiple_of(align);
    // SAFETY: replaces part of our own reservation with the object.
    let mapped = unsafe {
        mmap(
            aligned as *mut _,
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED | MapFlags::FIXED,
            memfd,
            0,
        )
    };
    // Give back the unused ends of the reservation (all of it on failure).
    let head = aligned - area as usize;
    let tail = reserve - head - len;
    // SAFETY: these ranges are ours and hold nothing.
    unsafe {
        if mapped.is_err() {
            let _ = munmap(area, reserve);
        } else {
            if head > 0 {
                let _ = munmap(area, head);
            }
            if tail > 0 {
                let _ = munmap((aligned + len) as *mut _, tail);
            }
        }
    }
    mapped.map(|p| p as u64)
}

/// A userfaultfd of this process, non-blocking (DESIGN.md 8).
pub fn pager_uffd() -> rustix::io::Result<OwnedFd> {
    use rustix::mm::UserfaultfdFlags;
    // SAFETY: creating a descriptor; the pager drives its ioctls.
    unsafe { rustix::mm::userfaultfd(UserfaultfdFlags::CLOEXEC | UserfaultfdFlags::NONBLOCK) }
}
