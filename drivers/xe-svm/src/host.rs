//! The GPU server's host runtime: the [`Platform`] of the device model
//! (copy engine, GuC, PPGTT in VRAM through the BAR), the pager and
//! mm-server as IPC clients; the fault worker; the IPC handlers of `Gpu`,
//! `GpuNotify` and `GpuShrink` over the core (`server.rs`, `views.rs`,
//! `bo.rs`).

use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hw::xe::commands::{Command, KernelLaunch, KernelOp};
use hw::xe::fault::FaultDescriptor;
use hw::xe::layout::Ring;
use hw::xe::pte::{PageSize, Target};
use ipc_protocol::client::Client;
use ipc_protocol::interfaces::gpu::{self as g, GpuError};
use ipc_protocol::interfaces::gpu_notify::{self as n, NotifyError};
use ipc_protocol::interfaces::gpu_shrink as sh;
use ipc_protocol::interfaces::pager_migrate::{
    Collect, Collected, Finalize, OpenView, PagerMigrate,
};
use ipc_protocol::interfaces::pressure::{Pressure, Release, ReportUsage, Reserve};
use ipc_protocol::server::Handler;
use ipc_protocol::types::{BoId, JobId, JobStatus, KernelKind, MemoryKind, VmId, World};
use ipc_protocol::Capability;

use crate::bo::BoStore;
use crate::device::Device;
use crate::platform::{Platform, PortError};
use crate::ppgtt::Ppgtt;
use crate::server::Inner;
use crate::vram::Vram;

const PAGE: u64 = 4096;
const STAGING_SLOT: u32 = 1;
const ZERO_SLOT: u32 = 62;
const FIRST_OBJECT_SLOT: u32 = 2;
/// How long the fault worker waits for more faults of a batch.
const FAULT_GATHER: Duration = Duration::from_micros(30);

/// DMA slots for objects: the next never used, and those given back.
struct Slots {
    next: u32,
    free: Vec<u32>,
}

/// The device model and the other servers, as the core sees them.
pub struct HostPlatform {
    pub dev: Arc<Device>,
    /// VRAM kept for page tables.
    pub pt: Vram,
    pub bos: BoStore,
    migrate: Client<PagerMigrate>,
    /// mm-server: told our VRAM usage after each change (rule 7's
    /// accounting), and where allocations that find no VRAM wait (rule 5).
    pub pressure: Option<Client<Pressure>>,
    slots: Mutex<Slots>,
    zero_dma: u64,
    _zero: hw::shm::Region,
}

impl HostPlatform {
    /// A free DMA slot for an object.
    fn take_slot(&self) -> Option<u32> {
        let mut s = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = s.free.pop() {
            return Some(slot);
        }
        (s.next < ZERO_SLOT).then(|| {
            s.next += 1;
            s.next - 1
        })
    }
}

impl Platform for HostPlatform {
    type Tables = Ppgtt;

    fn copy(&self, copies: &[(u64, u64, u64)]) -> Result<bool, PortError> {
        self.dev.copy(copies).map_err(|_| PortError)
    }
    fn invalidate_tlb(&self, asid: u32, va: u64, len: u64) -> Result<(), PortError> {
        self.dev.invalidate(asid, va, len).map_err(|_| PortError)
    }
    fn new_tables(&self, asid: u32) -> Result<Ppgtt, PortError> {
        Ppgtt::new(&self.dev.bar, &self.pt, asid).map_err(|_| PortError)
    }
    fn map(&self, t: &mut Ppgtt, va: u64, addr: u64, size: PageSize, target: Target) {
        let _ = t.map(&self.dev.bar, &self.pt, va, addr, size, target);
    }
    fn unmap(&self, t: &mut Ppgtt, va: u64, len: u64) {
        let _ = t.unmap(&self.dev.bar, &self.pt, va, len);
    }
    fn drop_tables(&self, asid: u32, t: Ppgtt) {
        self.dev.bar.set_context(asid, 0);
        let _ = self.dev.invalidate(asid, 0, 1 << 47);
        t.release(&self.pt);
    }
    fn dma_unmap(&self, slot: u32) {
        let _ = self.dev.bar.dma_unmap(slot);
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .free
            .push(slot);
    }
    fn zero_source(&self) -> u64 {
        self.zero_dma
    }
    fn collect(&self, c: Collect) -> Result<Collected, PortError> {
        self.migrate.call(c).map_err(|e| {
            log::warn!("xe-svm: collect: {e}");
            PortError
        })
    }
    fn finalize(&self, f: Finalize) -> Result<(), PortError> {
        self.migrate.call(f).map(|_| ()).map_err(|e| {
            log::warn!("xe-svm: finalize: {e}");
            PortError
        })
    }
    fn has_broker(&self) -> bool {
        self.pressure.is_some()
    }
    fn reserve(&self, world: World, bytes: u64, timeout_ms: u32) -> u64 {
        let Some(p) = &self.pressure else { return 0 };
        match p.call(Reserve {
            memory: MemoryKind::Vram,
            world,
            bytes,
            timeout_ms,
        }) {
            Ok(r) => r.bytes,
            Err(e) => {
                log::debug!("xe-svm: no VRAM reservation for {bytes} bytes: {e}");
                0
            }
        }
    }
    fn release(&self, world: World, bytes: u64) {
        if let (Some(p), true) = (&self.pressure, bytes > 0) {
            if let Err(e) = p.call(Release {
                memory: MemoryKind::Vram,
                world,
                bytes,
            }) {
                log::debug!("xe-svm: releasing a reservation: {e}");
            }
        }
    }
    fn report_usage(&self, bo_bytes: u64, svm_bytes: u64) {
        if let Some(p) = &self.pressure {
            for (world, bytes) in [(World::Bo, bo_bytes), (World::Svm, svm_bytes)] {
                if let Err(e) = p.notify(ReportUsage {
                    memory: MemoryKind::Vram,
                    world,
                    bytes,
                }) {
                    log::debug!("xe-svm: mm-server unreachable: {e}");
                }
            }
        }
    }
    fn bo_vram_pages(&self) -> u64 {
        self.bos.vram_pages.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
pub struct GpuServer {
    pub inner: Arc<Inner<HostPlatform>>,
}

/// VRAM kept for page tables: 1/32 of VRAM, at its top.
fn pt_pages(total: u64) -> u64 {
    (total / 32).max(512) & !511
}

impl GpuServer {
    /// `bo_pool_bytes`: the SRAM pool that holds evicted buffer objects.
    pub fn new(
        dev: Arc<Device>,
        migrate: Client<PagerMigrate>,
        pressure: Option<Client<Pressure>>,
        bo_pool_bytes: u64,
    ) -> Result<Self, String> {
        let total = dev.bar.vram_bytes() / PAGE;
        let pt = pt_pages(total);
        // The probe used the last 2 MiB: it is free again now.
        let data_pages = (total - pt) & !511;
        let zero = hw::shm::Region::create("xe-svm-zero", 2 << 20).map_err(|e| e.to_string())?;
        let zero_dma = dev
            .bar
            .dma_map(
                ZERO_SLOT,
                zero.dup_fd().map_err(|e| e.to_string())?,
                2 << 20,
            )
            .map_err(|e| e.to_string())?;
        let bos = BoStore::new(&dev.bar, bo_pool_bytes)?;
        let hw = HostPlatform {
            bos,
            pt: Vram::new(total - pt, pt),
            dev,
            migrate,
            pressure,
            slots: Mutex::new(Slots {
                next: FIRST_OBJECT_SLOT,
                free: Vec::new(),
            }),
            zero_dma,
            _zero: zero,
        };
        Ok(Self {
            inner: Arc::new(Inner::new(hw, 0, data_pages)),
        })
    }

    /// The fault worker: batches faults, resolves each 2 MiB group once,
    /// replies to every fault of the group.
    pub fn fault_worker(self, faults: Receiver<FaultDescriptor>) {
        while let Ok(first) = faults.recv() {
            let mut batch = vec![first];
            // Gather until the queue stays quiet for FAULT_GATHER: the
            // faults of a dense kernel arrive together, and sizing its
            // migration sees them all (`density`).
            while batch.len() < 64 {
                match faults.try_recv() {
                    Ok(f) => batch.push(f),
                    Err(_) => match faults.recv_timeout(FAULT_GATHER) {
                        Ok(f) => batch.push(f),
                        Err(_) => break,
                    },
                }
            }
            self.inner
                .counters
                .gpu_faults
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            let mut groups: Vec<((u32, u64), Vec<FaultDescriptor>)> = Vec::new();
            for f in batch {
                let key = (f.asid, f.address >> 21);
                match groups.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, v)) => v.push(f),
                    None => groups.push((key, vec![f])),
                }
            }
            for (_, group) in groups {
                let near: Vec<u64> = group[1..].iter().map(|f| f.address).collect();
                let ok = self.inner.resolve(group[0].asid, group[0].address, &near);
                for f in &group {
                    if let Err(e) = self.inner.hw.dev.reply(f, ok) {
                        log::error!("xe-svm: fault reply: {e}");
                    }
                }
            }
        }
    }
}

impl Handler<n::GpuNotify> for GpuServer {
    fn handle(
        &self,
        _caller: &Capability,
        req: n::Request,
        mut handles: Vec<OwnedFd>,
    ) -> Result<(n::Reply, Vec<OwnedFd>), NotifyError> {
        let inner = &self.inner;
        match req {
            n::Request::AttachStaging(n::AttachStaging { size_bytes }) => {
                let fd = handles.pop().ok_or(NotifyError::NoStaging)?;
                let dma = inner
                    .hw
                    .dev
                    .bar
                    .dma_map(STAGING_SLOT, fd, size_bytes)
                    .map_err(|_| NotifyError::NoStaging)?;
                inner.attach_staging(dma, size_bytes);
                Ok((n::Reply::AttachStaging(n::Done {}), vec![]))
            }
            n::Request::Invalidate(n::Invalidate {
                object,
                first_page,
                count,
                seq,
            }) => {
                inner.invalidate(object.get(), first_page, count.get() as u64, seq.get())?;
                Ok((n::Reply::Invalidate(n::Invalidated { seq }), vec![]))
            }
            n::Request::MigrateToRam(n::MigrateToRam {
                object,
                first_page,
                count: _,
                pages,
                staging_offset,
            }) => {
                let copied =
                    inner.migrate_to_ram(object.get(), first_page, &pages, staging_offset)?;
                Ok((n::Reply::MigrateToRam(n::MigratedToRam { copied }), vec![]))
            }
            n::Request::FreePages(n::FreePages {
                object,
                first_page,
                count,
                pages,
            }) => {
                let pages =
                    inner.free_pages(object.get(), first_page, count.get() as u64, &pages)?;
                Ok((n::Reply::FreePages(n::Freed { pages }), vec![]))
            }
            n::Request::ViewGone(n::ViewGone { view }) => {
                let bindings = inner.view_gone(view.get())?;
                Ok((n::Reply::ViewGone(n::Unbound { bindings }), vec![]))
            }
            n::Request::ViewCopied(n::ViewCopied {
                view,
                new_view,
                from,
                to,
            }) => {
                let (bindings, skipped) =
                    inner.view_copied(view.get(), new_view.get(), from, to)?;
                Ok((
                    n::Reply::ViewCopied(n::Copied { bindings, skipped }),
                    vec![],
                ))
            }
        }
    }
}

fn kernel_op(k: KernelKind) -> KernelOp {
    match k {
        KernelKind::TouchPages => KernelOp::TouchPages,
        KernelKind::IncrementAll => KernelOp::IncrementAll,
        KernelKind::StridedWrite => KernelOp::StridedWrite,
        KernelKind::RandomRead => KernelOp::RandomRead,
        KernelKind::AtomicAdd => KernelOp::AtomicAdd,
    }
}

impl Handler<g::Gpu> for GpuServer {
    /// A client is gone: its VMs go (unmapped, invalidated, tables freed).
    fn disconnected(&self, caller: &Capability) {
        self.inner.destroy_vms_of(caller.badge.0);
        self.inner.destroy_bos_of(caller.badge.0);
        log::info!(
            "xe-svm: client {} gone; its VMs and buffer objects were destroyed",
            caller.badge.0
        );
    }

    fn handle(
        &self,
        caller: &Capability,
        req: g::Request,
        _handles: Vec<OwnedFd>,
    ) -> Result<(g::Reply, Vec<OwnedFd>), GpuError> {
        let inner = &self.inner;
        let owner = caller.badge.0;
        match req {
            g::Request::CreateVm(_) => {
                let asid = inner.create_vm(owner)?;
                Ok((
                    g::Reply::CreateVm(g::VmCreated {
                        vm: VmId::raw(asid),
                        asid,
                    }),
                    vec![],
                ))
            }
            g::Request::DestroyVm(g::DestroyVm { vm }) => {
                inner.destroy_vm(owner, vm.get())?;
                Ok((g::Reply::DestroyVm(g::Done {}), vec![]))
            }
            g::Request::BindView(g::BindView { vm, view, gpu_addr }) => {
                if !inner.owns_vm(owner, vm.get()) {
                    return Err(GpuError::NoSuchVm);
                }
                // The pager checks that the view is this client's.
                let (opened, mut fds) = inner
                    .hw
                    .migrate
                    .call_with_handles(
                        OpenView {
                            view,
                            client: owner,
                        },
                        vec![],
                    )
                    .map_err(|e| match e {
                        ipc_protocol::client::CallError::Server(_) => GpuError::NoSuchView,
                        _ => GpuError::PagerUnavailable,
                    })?;
                let memfd = fds.pop().ok_or(GpuError::PagerUnavailable)?;
                let object = opened.object.get();
                if !inner.knows_object(object) {
                    let slot = inner.hw.take_slot().ok_or(GpuError::OutOfMetadata)?;
                    let size = rustix::fs::fstat(&memfd)
                        .map_err(|_| GpuError::PagerUnavailable)?
                        .st_size as u64;
                    let dup = rustix::io::fcntl_dupfd_cloexec(&memfd, 0)
                        .map_err(|_| GpuError::PagerUnavailable)?;
                    let dma = inner
                        .hw
                        .dev
                        .bar
                        .dma_map(slot, dup, size)
                        .map_err(|_| GpuError::DeviceLost)?;
                    if !inner.add_object(object, slot, dma, Some(memfd), size / PAGE) {
                        // Another bind added it meanwhile.
                        inner.hw.dma_unmap(slot);
                    }
                }
                inner.bind(
                    owner,
                    vm.get(),
                    view.get(),
                    object,
                    opened.object_first_page,
                    opened.pages,
                    gpu_addr,
                )?;
                Ok((g::Reply::BindView(g::Done {}), vec![]))
            }
            g::Request::Unbind(g::Unbind { vm, gpu_addr }) => {
                inner.unbind(owner, vm.get(), gpu_addr)?;
                Ok((g::Reply::Unbind(g::Done {}), vec![]))
            }
            g::Request::Submit(g::Submit {
                vm,
                kernel,
                addr,
                len,
                stride,
                value,
                threads,
            }) => {
                if !inner.owns_vm(owner, vm.get()) {
                    return Err(GpuError::NoSuchVm);
                }
                // Buffer objects the job reaches are locked and placed first.
                let job = inner.submit_with_bos(vm.get(), addr, len, || {
                    let job = inner.next_job.fetch_add(1, Ordering::Relaxed);
                    inner.note_job(job, owner);
                    let k = KernelLaunch {
                        job,
                        asid: vm.get(),
                        op: kernel_op(kernel),
                        addr,
                        len,
                        stride: stride as u32,
                        value,
                        threads,
                    };
                    inner
                        .hw
                        .dev
                        .bar
                        .submit(Ring::Compute, job, &Command::Launch(k))
                        .map_err(|_| GpuError::DeviceLost)?;
                    Ok(job)
                })?;
                Ok((
                    g::Reply::Submit(g::Submitted {
                        job: JobId::raw(job as u64),
                    }),
                    vec![],
                ))
            }
            g::Request::SubmitBatch(b) => {
                let job = crate::jobs::submit_batch(inner, owner, &b)?;
                Ok((
                    g::Reply::SubmitBatch(g::Submitted {
                        job: JobId::raw(job as u64),
                    }),
                    vec![],
                ))
            }
            g::Request::Wait(g::Wait { job, timeout_ms }) => {
                let id = u32::try_from(job.get()).map_err(|_| GpuError::NoSuchJob)?;
                // Only the caller's own jobs, and only while the device
                // still keeps their result slot.
                if !inner.owns_job(owner, id) {
                    return Err(GpuError::NoSuchJob);
                }
                let t0 = Instant::now();
                let bar = &inner.hw.dev.bar;
                match bar.wait_job(id, Duration::from_millis(timeout_ms as u64)) {
                    Ok(result) => {
                        let (state, faults) = result.ok_or(GpuError::NoSuchJob)?;
                        Ok((
                            g::Reply::Wait(g::JobDone {
                                status: crate::jobs::job_status(state),
                                faults: faults as u64,
                                elapsed_us: t0.elapsed().as_micros() as u64,
                            }),
                            vec![],
                        ))
                    }
                    Err(_) => Ok((
                        g::Reply::Wait(g::JobDone {
                            status: JobStatus::Running,
                            faults: 0,
                            elapsed_us: t0.elapsed().as_micros() as u64,
                        }),
                        vec![],
                    )),
                }
            }
            g::Request::CreateBo(g::CreateBo { size_bytes }) => {
                let bo = inner.create_bo(owner, size_bytes)?;
                Ok((
                    g::Reply::CreateBo(g::BoCreated { bo: BoId::raw(bo) }),
                    vec![],
                ))
            }
            g::Request::MapBo(g::MapBo { vm, bo, gpu_addr }) => {
                inner.map_bo(owner, vm.get(), bo.get(), gpu_addr)?;
                Ok((g::Reply::MapBo(g::Done {}), vec![]))
            }
            g::Request::DestroyBo(g::DestroyBo { bo }) => {
                inner.destroy_bo(owner, bo.get())?;
                Ok((g::Reply::DestroyBo(g::Done {}), vec![]))
            }
            g::Request::ReadBo(g::ReadBo { bo }) => {
                let (size_bytes, fd) = inner.read_bo(owner, bo.get())?;
                Ok((g::Reply::ReadBo(g::BoData { size_bytes }), vec![fd]))
            }
            g::Request::Stats(_) => {
                let c = &inner.counters;
                Ok((
                    g::Reply::Stats(g::GpuStats {
                        vram_total: inner.vram.total_pages() * PAGE,
                        vram_used: inner.vram.used_pages() * PAGE,
                        gpu_faults: c.gpu_faults.load(Ordering::Relaxed),
                        pages_to_vram: c.pages_to_vram.load(Ordering::Relaxed),
                        pages_to_ram: c.pages_to_ram.load(Ordering::Relaxed),
                        bo_evictions: inner.hw.bos.evictions.load(Ordering::Relaxed),
                        bo_restores: inner.hw.bos.restores.load(Ordering::Relaxed),
                        bo_vram_bytes: inner.vram_by_world().0,
                        invalidations: c.invalidations.load(Ordering::Relaxed),
                    }),
                    vec![],
                ))
            }
        }
    }
}

impl Handler<sh::GpuShrink> for GpuServer {
    fn handle(
        &self,
        _caller: &Capability,
        req: sh::Request,
        _: Vec<OwnedFd>,
    ) -> Result<(sh::Reply, Vec<OwnedFd>), sh::ShrinkError> {
        let inner = &self.inner;
        match req {
            sh::Request::Shrink(sh::Shrink { bytes }) => {
                let (bytes, bos) = inner
                    .shrink_bos(bytes)
                    .map_err(|_| sh::ShrinkError::DeviceLost)?;
                Ok((sh::Reply::Shrink(sh::Shrunk { bytes, bos }), vec![]))
            }
            sh::Request::Usage(_) => {
                let (bo_bytes, svm_bytes) = inner.vram_by_world();
                Ok((
                    sh::Reply::Usage(sh::VramUsage {
                        total: inner.vram.total_pages() * PAGE,
                        bo_bytes,
                        svm_bytes,
                    }),
                    vec![],
                ))
            }
        }
    }
}
