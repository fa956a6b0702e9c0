//! The GPU server's host runtime: the [`Platform`] of the device model
//! (copy engine, GuC, PPGTT in VRAM through the BAR), the pager and
//! mm-server as IPC clients; the fault worker; the IPC handlers of `Gpu`,
//! `GpuNotify` and `GpuShrink` over the core (`server.rs`, `views.rs`,
//! `bo.rs`).

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};

use hw::xe::fault::FaultDescriptor;
use hw::xe::layout;
use hw::xe::pte::{LeafAccess, PageSize, Target};
use ipc_protocol::client::{CallError, Client};
use ipc_protocol::interfaces::gpu::{self as g, GpuError};
use ipc_protocol::interfaces::gpu_notify::{self as n, NotifyError};
use ipc_protocol::interfaces::gpu_shrink as sh;
use ipc_protocol::interfaces::pager_migrate::{
    Collect, Collected, Finalize, Finalized, MigrateError, PagerMigrate, Resident, ResidentRuns,
};
use ipc_protocol::interfaces::pressure::{Pressure, Release, ReportUsage, Reserve};
use ipc_protocol::read_fence::ReadFence;
use ipc_protocol::server::Handler;
use ipc_protocol::transport::TransportError;
use ipc_protocol::types::{BoId, GpuId, JobId, MemoryKind, VmId, World};
use ipc_protocol::wire::BoundedVec;
use ipc_protocol::Capability;

use crate::arena::{Config, ConfigError};
use crate::budget::GpuBudget;
use crate::device::Device;
use crate::faults::Dispatch;
use crate::platform::{FinalizeError, Platform, PortError};
use crate::ppgtt::Ppgtt;
use crate::server::Inner;
use crate::vram::Vram;

const PAGE: u64 = 4096;
const STAGING_SLOT: u32 = 1;
const ZERO_SLOT: u32 = 62;
/// The DMA slot of the BO SRAM pool.
const POOL_SLOT: u32 = 63;
const FIRST_OBJECT_SLOT: u32 = 2;

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
    /// The BO world's SRAM pool, DMA-mapped at `pool_dma`.
    pool: hw::shm::Region,
    pool_dma: u64,
    pub(crate) migrate: Client<PagerMigrate>,
    /// The last `PagerMigrate` call found the pager gone (its endpoint
    /// closed): GPU faults that need it fail instead of replaying.
    pager_gone: std::sync::atomic::AtomicBool,
    /// The pager retired this GPU (`Platform::retired`).
    retired: std::sync::atomic::AtomicBool,
    /// The pager's generation as its `Resident` answer gave it (a pager
    /// restart announced before we started is one we never heard).
    pager_told: AtomicU32,
    /// mm-server: told our VRAM usage after each change (rule 7's
    /// accounting), and where allocations that find no VRAM wait (rule 5).
    pub pressure: Option<Client<Pressure>>,
    slots: Mutex<Slots>,
    zero_dma: u64,
    _zero: hw::shm::Region,
    /// The pager's `GpuNotify` requests in flight, counted from their read
    /// (`linux.rs` serves the endpoint through it; `frames.rs`).
    pub notify_fence: Arc<ReadFence>,
    /// GPU ids whose VRAM this device has a peer window on (bit per id).
    peer_windows: AtomicU32,
    /// The GPU this device is (`Config::gpu`).
    gpu: GpuId,
}

/// How long a restarted pager's first `Frames` waits for what its
/// predecessor set going (`Platform::quiesce_for_frames`): past a copy
/// engine's longest copy and a finalize's failure.
const QUIESCE_BOUND: std::time::Duration = std::time::Duration::from_secs(2);

impl HostPlatform {
    /// Gives back a slot taken but never mapped.
    pub(crate) fn give_back_slot(&self, slot: u32) {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .free
            .push(slot);
    }

    /// Copies `buf.len()` bytes at device address `addr` (VRAM, or the BO
    /// pool) into `buf`.
    fn read_device(&self, addr: u64, buf: &mut [u8]) -> bool {
        match addr.checked_sub(self.pool_dma) {
            Some(off) if self.pool_dma > 0 => self.pool.read(off, buf),
            _ => self.dev.bar.vram().read(addr, buf),
        }
    }

    /// Maps GPU `gpu`'s VRAM memfd (`bytes`) as this device's peer window
    /// on it (several GPUs, issue 17): `GpuNotify::PushToPeer` then pushes
    /// there.
    pub fn map_peer(&self, gpu: u8, vram: OwnedFd, bytes: u64) -> Result<(), hw::bar::BarError> {
        if gpu == self.gpu.get() || u64::from(gpu) >= hw::xe::layout::PEERS {
            return Err(hw::bar::BarError::Refused(hw::control::STATUS_BAD_SLOT));
        }
        self.dev.bar.peer_map(gpu, vram, bytes)?;
        self.peer_windows.fetch_or(1 << gpu, Ordering::AcqRel);
        Ok(())
    }

    /// A free DMA slot for an object.
    pub(crate) fn take_slot(&self) -> Option<u32> {
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
    fn map(
        &self,
        t: &mut Ppgtt,
        va: u64,
        addr: u64,
        size: PageSize,
        target: Target,
        a: LeafAccess,
    ) {
        let _ = t.map(&self.dev.bar, &self.pt, va, addr, (size, target), a);
    }
    fn unmap(&self, t: &mut Ppgtt, va: u64, len: u64) -> bool {
        // On an error, assume something was cleared: invalidate.
        t.unmap(&self.dev.bar, &self.pt, va, len).unwrap_or(true)
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
    fn peer_window(&self, gpu: u8) -> Option<u64> {
        let bit = 1u32.checked_shl(gpu.into())?;
        (self.peer_windows.load(Ordering::Acquire) & bit != 0)
            .then(|| hw::xe::layout::peer_address(gpu, 0))
    }
    fn collect(&self, c: Collect) -> Result<Collected, PortError> {
        let r = self.migrate.call(c);
        let gone = matches!(
            r,
            Err(CallError::Transport(
                TransportError::Disconnected | TransportError::TimedOut
            ))
        );
        self.pager_gone.store(gone, Ordering::Release);
        if matches!(r, Err(CallError::Server(MigrateError::Retired))) {
            self.retired.store(true, Ordering::Release);
        }
        r.map_err(|e| {
            log::warn!("xe-svm: collect: {e}");
            PortError
        })
    }
    fn pager_gone(&self) -> bool {
        self.pager_gone.load(Ordering::Acquire)
    }
    fn retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }
    fn gpu(&self) -> GpuId {
        self.gpu
    }
    fn pager_generation(&self) -> u32 {
        self.migrate
            .generation()
            .max(self.pager_told.load(Ordering::Acquire))
    }
    fn finalize(&self, f: Finalize) -> Result<Finalized, FinalizeError> {
        self.migrate.call(f).map_err(|e| {
            log::warn!("xe-svm: finalize: {e}");
            match e {
                CallError::Transport(TransportError::TimedOut) => FinalizeError::Unanswered,
                CallError::Transport(TransportError::PeerRestarted(_)) => FinalizeError::Restarted,
                _ => FinalizeError::Refused,
            }
        })
    }
    fn resident(&self, r: Resident) -> Result<ResidentRuns, PortError> {
        let runs = self.migrate.call(r).map_err(|e| {
            log::warn!("xe-svm: resident: {e}");
            PortError
        })?;
        self.pager_told
            .fetch_max(runs.pager_generation, Ordering::AcqRel);
        Ok(runs)
    }
    fn has_broker(&self) -> bool {
        self.pressure.is_some()
    }
    fn quiesce_for_frames(&self, migrating: &dyn Fn() -> bool) -> bool {
        // Called while handling the `Frames` request, one of those counted.
        self.notify_fence.wait_alone(QUIESCE_BOUND, migrating)
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
    fn bo_pool(&self) -> (u64, u64) {
        (self.pool_dma, self.pool.len() as u64)
    }
    fn clear_bo_home(&self, addr: u64, len: u64) {
        let Some(off) = addr.checked_sub(self.pool_dma) else {
            return;
        };
        if let Err(e) = self.pool.zero_range(off, len) {
            log::warn!("xe-svm: clearing a BO home: {e}");
        }
    }
    /// Retired: every job up to it is (the in-order register), or its own
    /// job table slot says so (written before the register moves).
    fn job_retired(&self, job: u32) -> bool {
        let bar = &self.dev.bar;
        job == 0
            || (bar.reg(layout::REG_CCS_DONE).wrapping_sub(job) as i32) >= 0
            || bar.job_result(job).is_some()
    }
    fn wait_job(&self, job: u32, timeout: std::time::Duration) -> bool {
        self.job_retired(job)
            || self
                .dev
                .bar
                .wait_seqno(layout::REG_CCS_DONE, job, timeout)
                .is_ok()
    }
    fn job_result(&self, job: u32) -> Option<(u32, u32)> {
        self.dev.bar.job_result(job)
    }
}

#[derive(Clone)]
pub struct GpuServer {
    pub inner: Arc<Inner<HostPlatform>>,
}

/// Why a GPU server could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootError {
    /// Its metadata arena (`arena.rs`).
    Config(ConfigError),
    /// The host would not give a region or a DMA mapping it needs.
    Host(String),
}

impl From<ConfigError> for BootError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

impl From<String> for BootError {
    fn from(e: String) -> Self {
        Self::Host(e)
    }
}

impl std::fmt::Display for BootError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(e) => e.fmt(f),
            Self::Host(e) => f.write_str(e),
        }
    }
}

/// VRAM kept for page tables: 1/32 of VRAM, at its top.
fn pt_pages(total: u64) -> u64 {
    (total / 32).max(512) & !511
}

/// [`crate::prefetch::Lanes`] on this process's threads: the caller and
/// up to `n - 1` scoped ones. A thread that cannot be started leaves its
/// share to the others.
fn thread_lanes(n: usize, work: &(dyn Fn() + Sync)) {
    std::thread::scope(|s| {
        for k in 1..n {
            let lane = std::thread::Builder::new().name(format!("xe-svm-prefetch{k}"));
            if let Err(e) = lane.spawn_scoped(s, work) {
                log::warn!("xe-svm: a prefetch lane did not start: {e}");
            }
        }
        work();
    });
}

impl GpuServer {
    /// `bo_pool_bytes`: the SRAM pool that holds evicted buffer objects;
    /// `cfg`: the budget and the metadata arena it sizes (checked first).
    pub fn new(
        dev: Arc<Device>,
        migrate: Client<PagerMigrate>,
        pressure: Option<Client<Pressure>>,
        bo_pool_bytes: u64,
        cfg: &Config,
    ) -> Result<Self, BootError> {
        let arena = cfg.arena()?;
        let parts = (dev, migrate, pressure);
        Self::build(parts, bo_pool_bytes, cfg.budget, arena, cfg.gpu)
    }

    /// As [`Self::new`], with an arena of the caller's (tests size it
    /// below what the budget needs).
    pub fn with_arena(
        dev: Arc<Device>,
        migrate: Client<PagerMigrate>,
        pressure: Option<Client<Pressure>>,
        bo_pool_bytes: u64,
        budget: GpuBudget,
        arena: Arc<session::Arena>,
    ) -> Result<Self, BootError> {
        Self::build((dev, migrate, pressure), bo_pool_bytes, budget, arena, 0)
    }

    /// The server of GPU `gpu` over the device and its peers' clients.
    fn build(
        (dev, migrate, pressure): (Arc<Device>, Client<PagerMigrate>, Option<Client<Pressure>>),
        bo_pool_bytes: u64,
        budget: GpuBudget,
        arena: Arc<session::Arena>,
        gpu: u8,
    ) -> Result<Self, BootError> {
        let gpu = GpuId::new(gpu).ok_or_else(|| format!("no GPU {gpu}: at most 15"))?;
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
        let pool_bytes = bo_pool_bytes.max(2 << 20) & !((2 << 20) - 1);
        let pool = hw::shm::Region::create("xe-svm-bo-pool", pool_bytes as usize)
            .map_err(|e| e.to_string())?;
        let pool_dma = dev
            .bar
            .dma_map(
                POOL_SLOT,
                pool.dup_fd().map_err(|e| e.to_string())?,
                pool_bytes,
            )
            .map_err(|e| e.to_string())?;
        let hw = HostPlatform {
            pool,
            pool_dma,
            pt: Vram::new(total - pt, pt),
            dev,
            migrate,
            pager_gone: std::sync::atomic::AtomicBool::new(false),
            retired: std::sync::atomic::AtomicBool::new(false),
            pager_told: AtomicU32::new(0),
            pressure,
            slots: Mutex::new(Slots {
                next: FIRST_OBJECT_SLOT,
                free: Vec::new(),
            }),
            zero_dma,
            _zero: zero,
            notify_fence: Arc::default(),
            peer_windows: AtomicU32::new(0),
            gpu,
        };
        // A restarted server meets a compute engine that numbered its
        // predecessor's jobs: number on past them, or a wait for a new job
        // would see it retired before it ran.
        let ccs_done = hw.dev.bar.reg(layout::REG_CCS_DONE);
        let inner = Inner::with_arena(hw, 0, data_pages, budget, arena);
        inner
            .next_job
            .store(ccs_done.wrapping_add(1).max(1), Ordering::Relaxed);
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// `ReadBo`: the object's bytes in a new memfd.
    fn read_bo(&self, owner: u64, bo: u32) -> Result<(u64, OwnedFd), GpuError> {
        self.inner.read_bo_with(owner, bo, |size, runs| {
            let out = hw::shm::Region::create("xe-svm-bo-read", size as usize)
                .map_err(|_| GpuError::OutOfMetadata)?;
            let mut buf = vec![0u8; 2 << 20];
            let mut off = 0u64;
            for &(addr, len) in runs {
                let chunk = &mut buf[..len as usize];
                if !self.inner.hw.read_device(addr, chunk) || !out.write(off, chunk) {
                    return Err(GpuError::DeviceLost);
                }
                off += len;
            }
            Ok((size, out.dup_fd().map_err(|_| GpuError::OutOfMetadata)?))
        })
    }

    /// Serves GPU faults, one worker per VM with faults pending
    /// (`faults.rs`), each moving up to `ahead` chunks ahead of a stream
    /// of faults (`fault_ahead.rs`; 0 is off), until the GuC pump stops.
    pub fn fault_worker(self, faults: Receiver<FaultDescriptor>, ahead: usize) {
        let (inner, dev) = (self.inner.clone(), self.inner.clone());
        let mover = self.inner.clone();
        let mover = move |asid: u32, va: u64| mover.fault_ahead(asid, va);
        if ahead > 0 {
            log::info!("xe-svm: fault-ahead: {ahead} chunks ahead of a stream of faults");
        }
        let resolve = move |asid: u32, va: u64, write: bool, near: &[u64]| {
            inner.resolve_access(asid, va, write, near)
        };
        let reply = move |f: &FaultDescriptor, ok: bool| {
            let counter = match f.prefetch {
                true => &dev.counters.prefetch_faults,
                false => &dev.counters.gpu_faults,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            if !ok {
                dev.log_unserved(f);
            }
            if let Err(e) = dev.hw.dev.reply(f, ok) {
                log::error!("xe-svm: fault reply: {e}");
            }
        };
        Dispatch::new(Arc::new(resolve), Arc::new(reply))
            .with_fault_ahead(ahead, Arc::new(mover))
            .run(faults);
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
            n::Request::PushToPeer(n::PushToPeer {
                object,
                first_page,
                count,
                pages,
                to,
                to_first_pfn,
                seq,
            }) => {
                let (object, count, seq) = (object.get(), count.get() as u64, seq.get());
                let pushed = inner.push_to_peer(
                    object,
                    first_page,
                    count,
                    &pages,
                    to.get(),
                    to_first_pfn,
                    seq,
                )?;
                Ok((n::Reply::PushToPeer(n::Pushed { pushed }), vec![]))
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
            n::Request::Frames(n::Frames {
                from_object,
                from_page,
            }) => Ok((
                n::Reply::Frames(inner.frames(from_object, from_page)),
                vec![],
            )),
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
            n::Request::ViewPart(n::ViewPart {
                view,
                new_view,
                first_page,
                pages,
                from,
                to,
            }) => {
                let end = first_page.checked_add(pages).ok_or(NotifyError::BadRange)?;
                let (bindings, skipped) =
                    inner.view_part(view.get(), new_view.get(), first_page..end, from, to)?;
                Ok((n::Reply::ViewPart(n::Copied { bindings, skipped }), vec![]))
            }
            n::Request::ViewGrown(n::ViewGrown {
                view,
                tail,
                first_page,
                pages,
            }) => {
                let end = first_page.checked_add(pages).ok_or(NotifyError::BadRange)?;
                let (bindings, skipped) =
                    inner.view_grown(view.get(), tail.get(), first_page..end)?;
                Ok((n::Reply::ViewGrown(n::Copied { bindings, skipped }), vec![]))
            }
        }
    }
}

impl Handler<g::Gpu> for GpuServer {
    /// A client is gone: its session ends (`end.rs`).
    fn disconnected(&self, caller: &Capability) {
        self.inner.end_session(caller.badge.0);
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
                let vm = inner.create_vm(owner)?;
                // The handle's index is the ASID.
                let asid = session::Handle::from_raw(vm).index();
                Ok((
                    g::Reply::CreateVm(g::VmCreated {
                        vm: VmId::raw(vm),
                        asid,
                    }),
                    vec![],
                ))
            }
            g::Request::DestroyVm(g::DestroyVm { vm }) => {
                inner.destroy_vm(owner, vm.get())?;
                Ok((g::Reply::DestroyVm(g::Done {}), vec![]))
            }
            g::Request::BindView(g::BindView {
                vm,
                view,
                gpu_addr,
                flags,
            }) => {
                self.bind_view(owner, vm.get(), view, gpu_addr, flags)?;
                Ok((g::Reply::BindView(g::Done {}), vec![]))
            }
            g::Request::FaultLog(g::FaultLog { vm }) => Ok((
                g::Reply::FaultLog(inner.fault_log(owner, vm.get())?),
                vec![],
            )),
            g::Request::Prefetch(g::Prefetch { vm, gpu_addr, len }) => {
                let (in_vram, pages) =
                    inner.prefetch(owner, vm.get(), gpu_addr, len, &thread_lanes)?;
                Ok((g::Reply::Prefetch(g::Prefetched { in_vram, pages }), vec![]))
            }
            g::Request::Protect(g::Protect {
                vm,
                gpu_addr,
                len,
                prot,
            }) => {
                inner.protect(owner, vm.get(), gpu_addr, len, prot)?;
                Ok((g::Reply::Protect(g::Done {}), vec![]))
            }
            g::Request::Unbind(g::Unbind { vm, gpu_addr }) => {
                inner.unbind(owner, vm.get(), gpu_addr)?;
                Ok((g::Reply::Unbind(g::Done {}), vec![]))
            }
            g::Request::Submit(k) => {
                let job = inner.submit_kernel(owner, &k)?;
                Ok((
                    g::Reply::Submit(g::Submitted {
                        job: JobId::raw(job),
                    }),
                    vec![],
                ))
            }
            g::Request::SubmitBatch(b) => {
                let job = crate::jobs::submit_batch(inner, owner, &b)?;
                Ok((
                    g::Reply::SubmitBatch(g::Submitted {
                        job: JobId::raw(job),
                    }),
                    vec![],
                ))
            }
            g::Request::Wait(g::Wait { job, timeout_ms }) => {
                let done = inner.wait_job(owner, job.get(), timeout_ms)?;
                Ok((g::Reply::Wait(done), vec![]))
            }
            g::Request::Accounting(_) => {
                Ok((g::Reply::Accounting(inner.accounting(owner)), vec![]))
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
                let (size_bytes, fd) = self.read_bo(owner, bo.get())?;
                Ok((g::Reply::ReadBo(g::BoData { size_bytes }), vec![fd]))
            }
            g::Request::Stats(_) => {
                let c = &inner.counters;
                Ok((
                    g::Reply::Stats(g::GpuStats {
                        vram_total: inner.vram.total_pages() * PAGE,
                        vram_used: inner.vram.used_pages() * PAGE,
                        gpu_faults: c.gpu_faults.load(Ordering::Relaxed),
                        prefetch_faults: c.prefetch_faults.load(Ordering::Relaxed),
                        pages_to_vram: c.pages_to_vram.load(Ordering::Relaxed),
                        pages_to_ram: c.pages_to_ram.load(Ordering::Relaxed),
                        bo_evictions: inner.bos.evictions.load(Ordering::Relaxed),
                        bo_restores: inner.bos.restores.load(Ordering::Relaxed),
                        bo_vram_bytes: inner.vram_by_world().0,
                        invalidations: c.invalidations.load(Ordering::Relaxed),
                        by_size: BoundedVec::new(c.by_size.snapshot())
                            .ok_or(GpuError::OutOfMetadata)?,
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
