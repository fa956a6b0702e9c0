//! The pager in the simulation: its session core (`pager::core`: sessions,
//! budgets, objects and views, the fault path, view changes, collects in
//! flight, object and session ends, eviction) over the state table and the
//! migration protocols, all unchanged and built on shuttle through the
//! pager's sync shim. [`SimRuntime`] is the runtime under it: its side
//! effects act on the simulated machine and call the GPU server's core
//! over the simulated network.
//!
//! The victim client (badge [`CLIENT`]) has one object over the machine's
//! system pages `0..pages` and one view of it at [`VIEW_BASE`] (view index 0
//! of the CPU model, `machine.rs`). Other clients' objects get system pages
//! after those while the machine has spare ones (the GPU can reach them),
//! else memory of their own. A CPU fault is delivered to the core as the
//! host's fault workers do ([`SimPager::cpu_fault`]); view changes (fork,
//! mremap) are applied to the CPU model and to the core's records under
//! the space's view-change guard, as the host's event reader does.
//!
//! **Generations.** The pager can be killed and restarted (issue 14,
//! `pager_restart.rs`): [`SimPager`] is what the others reach, the pager
//! now ([`PagerGen`]), replaced by the next generation. What outlives a
//! generation lives beside it, as the processes around the host's pager
//! do ([`Outlives`]): the journal's memory, the keeper's descriptors, the
//! GPU server's link and the machine pages handed out. A dead generation's
//! runtime does nothing more (each side effect checks [`SimRuntime::dead`]
//! first, and runs whole or not at all, as a system call does).

use ipc_protocol::interfaces::pager as p;
use ipc_protocol::interfaces::pager_migrate as m;
use ipc_protocol::types::{ObjectId, PageMask, ViewId};
use pager::core::backend::CoreBackend;
use pager::core::changes::PendingMove;
use pager::core::object::Object;
use pager::core::runtime::{FrameRuns, Kept, PartNote, Pause, RtError, Runtime, Source};
use pager::core::session::{ClientSession, GpuSession};
use pager::core::view::Space;
use pager::core::{Config, Core};
use pager::migrate::{Backend, Chunk, Policy};
use pager::state::{PageTable, Residency};
use pager::sync::{lock, AtomicUsize, Ordering};
use session::Handle;
use shuttle::sync::{Arc, Mutex, Weak};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool as StdBool, AtomicU64 as StdU64, Ordering as StdOrdering};

use crate::link::Link;
use crate::machine::{Machine, PAGE, STAGING_SLOTS};
use crate::net::Endpoint;
use crate::GpuCore;

/// The victim client's badge.
pub const CLIENT: u64 = 100;
/// The GPU server's badge on its `PagerMigrate` endpoint.
pub const GPU_SERVER: u64 = 1;
/// Where the victim's view is (its GPU binding's address too).
pub const VIEW_BASE: u64 = 0x1000_0000;
/// A CPU fault that fails this many times in a row made no progress: the
/// run fails (every fault completes, within a bound).
pub const FAULT_RETRIES: u32 = 50;
const GPU: u8 = 0;

/// The GPU core, held weakly (it holds the pager, its platform, and a
/// strong reference back would keep both alive after the run), and the
/// endpoint its notifier (`GpuNotify`) serves.
pub type GpuLink = (Weak<GpuCore>, Arc<Endpoint>);

/// An object's pages in RAM; a clone is a duplicate of the descriptor.
#[derive(Clone)]
pub enum SimMemory {
    /// System pages `base..base + pages` of the machine (the GPU reaches them).
    Machine { base: usize },
    /// Memory of its own (the GPU never binds it).
    Own(std::sync::Arc<[StdU64]>),
}

/// One mapping of an address space: `[start, end)` shows system pages
/// from `base` on (the machine's page numbers), with write protection in
/// `mmu.wp[wp]`.
#[derive(Debug, Clone, Copy)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub wp: usize,
    pub base: usize,
}

/// An address space's CPU mappings; a clone is a duplicate of its fault
/// channel (the keeper's).
#[derive(Default, Clone)]
pub struct SimPort {
    maps: Arc<Mutex<Vec<Mapping>>>,
}

impl SimPort {
    fn mapping(&self, addr: u64) -> Option<Mapping> {
        lock(&self.maps)
            .iter()
            .find(|m| addr >= m.start && addr < m.end)
            .copied()
    }

    pub fn map(&self, m: Mapping) {
        lock(&self.maps).push(m);
    }

    fn unmap(&self, start: u64, end: u64) {
        lock(&self.maps).retain(|m| m.end <= start || m.start >= end);
    }

    /// Unmaps `[start, end)`, keeping the parts of a mapping around it.
    fn unmap_part(&self, start: u64, end: u64) {
        let mut maps = lock(&self.maps);
        let mut kept = Vec::new();
        for m in maps.drain(..) {
            if m.end <= start || m.start >= end {
                kept.push(m);
                continue;
            }
            if m.start < start {
                kept.push(Mapping { end: start, ..m });
            }
            if end < m.end {
                let base = m.base + ((end - m.start) / PAGE) as usize;
                kept.push(Mapping {
                    start: end,
                    base,
                    ..m
                });
            }
        }
        *maps = kept;
    }
}

/// What a client passes: a fault channel (for `AttachView`) or memory back.
/// A clone is a duplicate (the keeper's).
#[derive(Clone)]
pub enum SimHandle {
    Port(SimPort),
    Memory(SimMemory),
}

/// What outlives a pager generation: the processes around it (the GPU
/// server, `init` and its keeper) and the machine.
pub struct Outlives {
    /// GPU 0's core now and its notifier endpoint.
    pub gpu: Arc<Link<GpuLink>>,
    /// The other GPUs' (GPU `i + 1` at `i`), on a machine with several
    /// (issue 17): never restarted.
    pub peers: Vec<Link<GpuLink>>,
    /// Held across a GPU server restart (`World::restart_gpu`).
    pub gpu_gate: Mutex<()>,
    /// Held across a pager restart (`World::restart_pager`).
    pub pager_gate: Mutex<()>,
    /// The next machine system page for an object.
    next_page: AtomicUsize,
    /// `init`'s keeper: the descriptors it holds, by `Kept::key`.
    keeper: std::sync::Mutex<BTreeMap<u64, SimHandle>>,
    /// The journal's memory (a memfd `init` holds), if the world restarts
    /// the pager: the hooks record nothing without one, which keeps the
    /// other scenarios' schedules as they were.
    pub journal: Option<&'static [StdU64]>,
}

pub struct SimRuntime {
    pub machine: Arc<Machine>,
    pub outlives: Arc<Outlives>,
    slots: pager::slots::SlotPool,
    /// The GPU core now and its notifier endpoint (`outlives.gpu`).
    pub gpu: Arc<Link<GpuLink>>,
    /// This generation was killed: nothing it does lands any more.
    pub dead: StdBool,
}

/// What a dead generation's calls get: nothing happened.
const DEAD: RtError = RtError::Host(0);

impl Outlives {
    /// GPU `gpu`'s link (`None`: the machine has no such GPU).
    pub fn link(&self, gpu: u8) -> Option<&Link<GpuLink>> {
        match gpu {
            0 => Some(&self.gpu),
            g => self.peers.get(g as usize - 1),
        }
    }

    /// The machine's GPUs.
    fn gpus(&self) -> std::ops::Range<u8> {
        0..1 + self.peers.len() as u8
    }
}

impl SimRuntime {
    fn new(machine: Arc<Machine>, outlives: Arc<Outlives>) -> Self {
        Self {
            machine,
            gpu: outlives.gpu.clone(),
            outlives,
            slots: pager::slots::SlotPool::new(STAGING_SLOTS),
            dead: StdBool::new(false),
        }
    }

    /// `Err` once this generation was killed (a system call a dead
    /// process never made).
    fn alive(&self) -> Result<(), RtError> {
        if self.dead.load(StdOrdering::Acquire) {
            Err(DEAD)
        } else {
            Ok(())
        }
    }

    /// Waits out a GPU server restart in progress: who found the server
    /// dead blocks here instead of spinning (the host's callers wait with
    /// a deadline longer than a restart takes).
    pub fn wait_for_gpu(&self) {
        drop(lock(&self.outlives.gpu_gate));
    }

    fn gpu(&self) -> Result<(Arc<GpuCore>, Arc<Endpoint>), RtError> {
        self.gpu_on(GPU)
    }

    /// GPU `gpu`'s server's core and notifier, while it is alive.
    fn gpu_on(&self, gpu: u8) -> Result<(Arc<GpuCore>, Arc<Endpoint>), RtError> {
        self.alive().map_err(|_| RtError::Gpu)?;
        let link = self.outlives.link(gpu).ok_or(RtError::Gpu)?;
        match link.get() {
            Some((g, n)) if !n.is_dead() => Ok((g.upgrade().ok_or(RtError::Gpu)?, n)),
            _ => Err(RtError::Gpu),
        }
    }

    /// Calls GPU `gpu`'s server's notifier with `f`. An idempotent call
    /// that finds the server dead is sent again to its successor, as the
    /// host's client stub does after `PeerRestarted` (`ipc_protocol::client`).
    fn call_gpu<T: Send + 'static>(
        &self,
        gpu: u8,
        idempotent: bool,
        f: impl Fn(&GpuCore) -> T + Clone + Send + 'static,
    ) -> Result<T, RtError> {
        let mut tries = 0;
        loop {
            let reply = self.gpu_on(gpu).ok().and_then(|(gpu, notify)| {
                let f = f.clone();
                notify.call_from(|| self.alive().is_ok(), move || f(&gpu))
            });
            match reply {
                Some(v) => return Ok(v),
                None if idempotent && tries < ipc_protocol::client::RESTART_RETRIES => {
                    self.wait_for_gpu();
                    tries += 1;
                }
                None => return Err(RtError::Gpu),
            }
        }
    }

    fn value(&self, src: Source, index: usize) -> u64 {
        match src {
            Source::Zeros => 0,
            Source::Staging(slot) => self
                .machine
                .staging_cell(slot, index)
                .load(std::sync::atomic::Ordering::Acquire),
        }
    }

    /// Writes page `page` of `m` (whole: one word), making it present.
    /// Like every side effect here, checked for a kill with no scheduling
    /// point between the check and the effect: a system call a killed
    /// process made lands before it is dead, never after.
    fn put(&self, m: &SimMemory, page: usize, v: u64) -> Result<(), RtError> {
        use std::sync::atomic::Ordering::Release;
        match m {
            SimMemory::Machine { base } => {
                let mut mmu = lock(&self.machine.mmu);
                self.alive()?;
                self.machine.ram[base + page].store(v, Release);
                mmu.present[base + page] = true;
            }
            SimMemory::Own(words) => {
                self.alive()?;
                words[page].store(v, Release);
            }
        }
        Ok(())
    }
}

impl Runtime for SimRuntime {
    type Handle = SimHandle;
    type Memory = SimMemory;
    type Port = SimPort;

    fn create_memory(&self, bytes: u64) -> Result<(SimMemory, SimHandle), RtError> {
        let pages = (bytes / PAGE) as usize;
        let all = self.machine.pages + self.machine.spare;
        let base = self.outlives.next_page.load(Ordering::Acquire);
        if base + pages <= all
            && self
                .outlives
                .next_page
                .compare_exchange(base, base + pages, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            let m = SimMemory::Machine { base };
            return Ok((m.clone(), SimHandle::Memory(m)));
        }
        let words: std::sync::Arc<[StdU64]> = (0..pages).map(|_| StdU64::new(0)).collect();
        let m = SimMemory::Own(words);
        Ok((m.clone(), SimHandle::Memory(m)))
    }

    fn share_memory(&self, m: &SimMemory) -> Result<SimHandle, RtError> {
        Ok(SimHandle::Memory(m.clone()))
    }

    /// The hole punch: the pages leave every view.
    fn drop_pages(&self, m: &SimMemory, first: usize, pages: usize) -> Result<(), RtError> {
        if let SimMemory::Machine { base } = m {
            let mut mmu = lock(&self.machine.mmu);
            self.alive()?;
            for p in first..first + pages {
                mmu.present[base + p] = false;
            }
        }
        Ok(())
    }

    fn write_pages(
        &self,
        m: &SimMemory,
        first: usize,
        src: Source,
        src_index: usize,
        pages: usize,
    ) -> Result<(), RtError> {
        for k in 0..pages {
            self.put(m, first + k, self.value(src, src_index + k))?;
        }
        Ok(())
    }

    fn open_port(&self, h: SimHandle) -> Result<SimPort, RtError> {
        match h {
            SimHandle::Port(p) => Ok(p),
            SimHandle::Memory(_) => Err(RtError::BadHandle),
        }
    }

    fn register(&self, _p: &SimPort, _addr: u64, _len: u64) -> Result<(), RtError> {
        Ok(())
    }

    fn unregister(&self, _p: &SimPort, _addr: u64, _len: u64) -> Result<(), RtError> {
        Ok(())
    }

    fn write_protect(&self, p: &SimPort, addr: u64, len: u64, on: bool) -> Result<(), RtError> {
        let mut mmu = lock(&self.machine.mmu);
        for a in (addr..addr + len).step_by(PAGE as usize) {
            let m = p.mapping(a).ok_or(RtError::Unmapped)?;
            self.alive()?;
            let wp = mmu.wp.get_mut(m.wp).ok_or(RtError::Unmapped)?;
            let page = m.base + ((a - m.start) / PAGE) as usize;
            *wp.get_mut(page).ok_or(RtError::Unmapped)? = on;
        }
        Ok(())
    }

    /// `UFFDIO_COPY`: each page appears whole; nothing lands through a
    /// range that is not mapped any more.
    fn install(
        &self,
        p: &SimPort,
        m: &SimMemory,
        dst: u64,
        page: usize,
        src: Source,
        src_index: usize,
        pages: usize,
    ) -> (usize, Option<RtError>) {
        for k in 0..pages {
            if p.mapping(dst + k as u64 * PAGE).is_none() {
                return (k, Some(RtError::Unmapped));
            }
            if let Err(e) = self.put(m, page + k, self.value(src, src_index + k)) {
                return (k, Some(e));
            }
        }
        (pages, None)
    }

    /// `UFFDIO_POISON`: the view's accesses to those pages get `SIGBUS`.
    fn poison(&self, p: &SimPort, addr: u64, len: u64) -> Result<(), RtError> {
        let mut mmu = lock(&self.machine.mmu);
        for a in (addr..addr + len).step_by(PAGE as usize) {
            let m = p.mapping(a).ok_or(RtError::Unmapped)?;
            self.alive()?;
            let page = m.base + ((a - m.start) / PAGE) as usize;
            mmu.poisoned.insert((m.wp, page));
        }
        Ok(())
    }

    fn wake(&self, _p: &SimPort, _addr: u64, _len: u64) -> Result<(), RtError> {
        self.alive()
    }

    fn start_space(&self, _core: &Arc<Core<Self>>, _s: &Arc<Space<Self>>) -> Result<(), RtError> {
        Ok(()) // the actors deliver faults themselves
    }

    fn stop_space(&self, _space: &Space<Self>) {}

    fn threads_per_space(&self) -> u64 {
        5
    }

    fn pause(&self, why: Pause, attempt: u32) {
        // A dead generation's threads only run out (`Core::shut_down`).
        if why == Pause::FaultRetry && attempt + 1 >= FAULT_RETRIES && self.alive().is_ok() {
            panic!("a CPU fault made no progress in {FAULT_RETRIES} tries");
        }
        if why == Pause::FaultRetry && self.gpu().is_err() {
            self.wait_for_gpu();
        }
        shuttle::thread::yield_now();
    }

    fn take_slot(&self) -> Option<usize> {
        self.slots.take()
    }

    fn put_slot(&self, slot: usize) {
        self.slots.put(slot);
    }

    fn quarantine_slot(&self, slot: usize, call: u64) {
        self.slots.quarantine(slot, call);
    }

    /// The machine's GPUs (GPU 0 alone but where a world has several).
    fn gpu_attached(&self, gpu: u8) -> bool {
        self.gpu_on(gpu).is_ok()
    }

    fn invalidate(
        &self,
        m: &SimMemory,
        gpu: u8,
        object: Handle,
        first: usize,
        count: usize,
        seq: u64,
    ) -> Result<(), RtError> {
        let sent = self.machine.tick();
        let (o, f, n) = (object.raw(), first as u64, count as u64);
        self.call_gpu(gpu, true, move |g| g.invalidate(o, f, n, seq))?
            .map_err(|_| RtError::Gpu)?;
        if let SimMemory::Machine { base } = m {
            self.machine
                .note_invalidation_acked(gpu, base + first, count, sent);
        }
        Ok(())
    }

    fn migrate_to_ram(
        &self,
        gpu: u8,
        object: Handle,
        first: usize,
        _count: usize,
        pages: &PageMask,
        slot: usize,
    ) -> Result<PageMask, RtError> {
        let (gpu, notify) = self.gpu_on(gpu)?;
        let (o, f, mask) = (object.raw(), first as u64, *pages);
        let offset = slot as u64 * 512 * PAGE;
        let alive = || self.alive().is_ok();
        match notify.call_from(alive, move || gpu.migrate_to_ram(o, f, &mask, offset)) {
            Some(Ok(copied)) => Ok(copied),
            _ => Err(RtError::Gpu),
        }
    }

    fn free_pages(
        &self,
        gpu: u8,
        object: Handle,
        first: usize,
        count: usize,
        pages: &PageMask,
    ) -> Result<(), RtError> {
        let (o, f, n, mask) = (object.raw(), first as u64, count as u64, *pages);
        match self.call_gpu(gpu, true, move |g| g.free_pages(o, f, n, &mask)) {
            Ok(Ok(_)) => Ok(()),
            _ => Err(RtError::Gpu),
        }
    }

    /// `GpuNotify::PushToPeer` to GPU `gpu`'s server, as `MigrateToRam`
    /// is sent (not sent again after a restart: it may have copied).
    fn push_to_peer(
        &self,
        gpu: u8,
        object: Handle,
        first: usize,
        _count: usize,
        pages: &PageMask,
        to: u8,
        to_first_pfn: u64,
        seq: u64,
    ) -> Result<PageMask, RtError> {
        let (gpu, notify) = self.gpu_on(gpu)?;
        let (o, f, n, mask) = (object.raw(), first as u64, _count as u64, *pages);
        let alive = || self.alive().is_ok();
        let push = move || gpu.push_to_peer(o, f, n, &mask, to, to_first_pfn, seq);
        match notify.call_from(alive, push) {
            Some(Ok(pushed)) => Ok(pushed),
            _ => Err(RtError::Gpu),
        }
    }

    fn view_gone(&self, view: Handle) {
        let v = view.raw();
        self.each_gpu(move |gpu| gpu.view_gone(v));
    }

    fn view_copied(&self, view: Handle, new_view: Handle, from: u64, to: u64) {
        let (v, n) = (view.raw(), new_view.raw());
        self.each_gpu(move |gpu| gpu.view_copied(v, n, from, to));
    }

    /// The machine's logical clock: a schedule's events, not wall time.
    fn now_us(&self) -> u64 {
        self.machine.now()
    }

    fn view_grown(&self, view: Handle, tail: Handle, first_page: usize, pages: usize) {
        let (v, t) = (view.raw(), tail.raw());
        let pages = first_page as u64..(first_page + pages) as u64;
        self.each_gpu(move |gpu| gpu.view_grown(v, t, pages.clone()));
    }

    fn view_part(&self, p: &PartNote) {
        let (v, n, p) = (p.view.raw(), p.new_view.raw(), *p);
        let pages = p.first_page as u64..(p.first_page + p.pages) as u64;
        self.each_gpu(move |gpu| gpu.view_part(v, n, pages.clone(), p.from, p.to));
    }

    // The keeper (issue 14): what `init` holds for the next generation.

    fn keep_memory(&self, kept: Kept, m: &SimMemory) {
        self.keep(kept, SimHandle::Memory(m.clone()));
    }

    fn keep_port(&self, kept: Kept, p: &SimPort) {
        self.keep(kept, SimHandle::Port(p.clone()));
    }

    fn drop_kept(&self, kept: Kept) {
        if self.alive().is_ok() {
            self.keeper().remove(&kept.key());
        }
    }

    fn adopt_memory(&self, h: SimHandle, bytes: u64) -> Result<SimMemory, RtError> {
        let all = self.machine.pages + self.machine.spare;
        match h {
            SimHandle::Memory(m) => {
                let pages = usize::try_from(bytes / PAGE).map_err(|_| RtError::BadHandle)?;
                let fits = match &m {
                    SimMemory::Machine { base } => {
                        base.checked_add(pages).is_some_and(|e| e <= all)
                    }
                    SimMemory::Own(words) => words.len() == pages,
                };
                fits.then_some(m).ok_or(RtError::BadHandle)
            }
            SimHandle::Port(_) => Err(RtError::BadHandle),
        }
    }

    fn reopen_port(&self, h: SimHandle) -> Result<SimPort, RtError> {
        self.open_port(h)
    }

    /// A machine page holds data while present (a hole punch took it
    /// away). Memory of its own is never bound by the GPU, so none of its
    /// pages can be in VRAM: all are data.
    fn data_pages(&self, m: &SimMemory, pages: usize) -> Result<Vec<bool>, RtError> {
        match m {
            SimMemory::Machine { base } => {
                let mmu = lock(&self.machine.mmu);
                let present = mmu
                    .present
                    .get(*base..base + pages)
                    .ok_or(RtError::BadHandle)?;
                Ok(present.to_vec())
            }
            SimMemory::Own(_) => Ok(vec![true; pages]),
        }
    }

    fn gpu_frames(&self, gpu: u8, from: (u32, u64)) -> Result<FrameRuns, RtError> {
        let r = self.call_gpu(gpu, true, move |g| g.frames(from.0, from.1))?;
        Ok(FrameRuns::from(r))
    }
}

impl Outlives {
    /// What the keeper hands a new generation: a duplicate of everything
    /// it holds, by `Kept::key`.
    pub(crate) fn hand_over(&self) -> BTreeMap<u64, SimHandle> {
        self.keeper
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The new generation used none of `keys`: the keeper drops them.
    pub(crate) fn drop_kept(&self, keys: impl IntoIterator<Item = u64>) {
        let mut k = self.keeper.lock().unwrap_or_else(|e| e.into_inner());
        for key in keys {
            k.remove(&key);
        }
    }
}

impl SimRuntime {
    /// A view note, to every GPU's server (each binds views by the
    /// clients' ids); one that is gone misses it, as on the host.
    fn each_gpu<T: Send + 'static>(&self, f: impl Fn(&GpuCore) -> T + Clone + Send + 'static) {
        for gpu in self.outlives.gpus() {
            let _ = self.call_gpu(gpu, true, f.clone());
        }
    }

    fn keeper(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, SimHandle>> {
        self.outlives
            .keeper
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn keep(&self, kept: Kept, h: SimHandle) {
        if self.alive().is_ok() {
            self.keeper().insert(kept.key(), h);
        }
    }
}

pub type SimCore = Core<SimRuntime>;

/// A CPU view of the victim's: its space and the address of object page 0.
#[derive(Clone)]
pub(crate) struct CpuView {
    pub(crate) space: Arc<Space<SimRuntime>>,
    pub(crate) base: u64,
}

/// One generation of the pager: its core, the victim's session and object
/// in it, and the CPU views it serves (by their index in the CPU model).
pub struct PagerGen {
    pub core: Arc<SimCore>,
    pub victim: Arc<ClientSession<SimRuntime>>,
    pub(crate) object: Arc<Object<SimRuntime>>,
    pub(crate) views: Mutex<Vec<Option<CpuView>>>,
}

impl PagerGen {
    /// Killed (`World::restart_pager`): what it still does lands nowhere.
    pub fn dead(&self) -> bool {
        self.core.rt.dead.load(StdOrdering::Acquire)
    }
}

/// The endpoints a pager generation serves.
#[derive(Clone)]
pub struct PagerEnds {
    /// `PagerMigrate`, for the GPU server.
    pub migrate: Arc<Endpoint>,
    /// `PagerReclaim`, for mm-server.
    pub reclaim: Arc<Endpoint>,
}

/// Why a call to the pager got no answer: the generation that took it
/// was killed first (the caller's stub sees `PeerRestarted`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restarted;

/// The pager as the others reach it: the generation now, and its
/// endpoints (both replaced by a restart).
pub struct SimPager {
    now: Link<Arc<PagerGen>>,
    ends: Link<PagerEnds>,
    pub outlives: Arc<Outlives>,
    /// The configuration the next generation starts with.
    cfg: Config,
    /// The victim's object id (the same in every generation).
    object_id: Handle,
    /// The victim's view id (its binding's, for the GPU server).
    pub view: Handle,
    /// The GPU core now and its notifier endpoint.
    pub gpu: Arc<Link<GpuLink>>,
}

/// The core's configuration in the simulation: a small arena, and budgets
/// small enough for the hostile scenarios to reach.
pub fn sim_config(policy: Policy, skip_invalidate: bool) -> Config {
    let mut cfg = Config::default();
    cfg.budget.objects = 4;
    cfg.budget.object_bytes = 1 << 20;
    cfg.budget.views = 8;
    cfg.budget.spaces = 3;
    cfg.budget.fault_threads = 15;
    cfg.budget.metadata_bytes = 64 << 10;
    cfg.max_clients = 3;
    cfg.arena_bytes = cfg.budget.metadata_bytes * 3 + pager::core::PEER_METADATA;
    cfg.policy = policy;
    cfg.skip_invalidate = skip_invalidate;
    // Off unless a scenario asks: holds change where pages live, and most
    // scenarios check migrations happen.
    cfg.thrash = None;
    cfg
}

impl SimPager {
    /// The first generation; `journal`: whether it records what a
    /// restarted one takes over from (the pager-restart scenarios).
    pub fn new(machine: Arc<Machine>, cfg: Config, journal: bool) -> Self {
        let gpu = Arc::new(Link::default());
        let outlives = Arc::new(Outlives {
            gpu: gpu.clone(),
            peers: (1..machine.gpus()).map(|_| Link::default()).collect(),
            gpu_gate: Mutex::new(()),
            pager_gate: Mutex::new(()),
            next_page: AtomicUsize::new(0),
            keeper: Default::default(),
            journal: journal.then(|| journal_words(&cfg)),
        });
        let (core, _) = new_core(machine.clone(), &outlives, cfg.clone());
        let victim = core.client(CLIENT).expect("the victim's session");
        let port = SimPort::default();
        let pages = machine.pages as u64;
        port.map(Mapping {
            start: VIEW_BASE,
            end: VIEW_BASE + pages * PAGE,
            wp: 0,
            base: 0,
        });
        let (object, view) =
            create_with_view(&core, &victim, pages, VIEW_BASE, port).expect("the victim's view");
        let object_id = object;
        let object = victim.object(object).expect("the victim's object");
        let space = victim.view(view).expect("the view").space.clone();
        let now = Link::default();
        now.set(Arc::new(PagerGen {
            core,
            victim,
            object,
            views: Mutex::new(vec![Some(CpuView {
                space,
                base: VIEW_BASE,
            })]),
        }));
        Self {
            now,
            ends: Link::default(),
            outlives,
            cfg,
            object_id,
            view,
            gpu,
        }
    }

    /// The generation now.
    pub fn now(&self) -> Arc<PagerGen> {
        self.now.get().expect("a pager")
    }

    /// The core of the generation now.
    pub fn core(&self) -> Arc<SimCore> {
        self.now().core.clone()
    }

    /// Its generation number (1 at boot).
    pub fn generation(&self) -> u32 {
        self.now().core.cfg.generation
    }

    /// The endpoints it serves now (`World::new` wires the first ones).
    pub fn ends(&self) -> PagerEnds {
        self.ends.get().expect("the pager's endpoints")
    }

    pub fn wire(&self, ends: PagerEnds) {
        self.ends.set(ends);
    }

    /// Waits out a pager restart in progress (the host's client stubs
    /// wait for the next generation's announcement, with a deadline).
    pub fn wait_for_restart(&self) {
        drop(lock(&self.outlives.pager_gate));
    }

    /// Whether the generation now was killed and its successor is not
    /// serving yet.
    pub fn restarting(&self) -> bool {
        self.now().dead()
    }

    /// Calls the generation now over `PagerMigrate` (or `PagerReclaim`,
    /// `reclaim`) with `f`: `Err` when it was killed before it answered.
    fn call<T: Send + 'static>(
        &self,
        reclaim: bool,
        f: impl FnOnce(&PagerGen) -> T + Send + 'static,
    ) -> Result<T, Restarted> {
        let g = self.now();
        let ends = self.ends();
        let ep = if reclaim { ends.reclaim } else { ends.migrate };
        // The answer leaves when `f` returns: killed before that, the
        // generation sends nothing (checked then, with no scheduling
        // point between the check and the send).
        ep.call(move || {
            let v = f(&g);
            (!g.dead()).then_some(v)
        })
        .flatten()
        .ok_or(Restarted)
    }

    /// Installs `gen` and its endpoints as the pager now.
    pub(crate) fn replace(&self, gen: PagerGen, ends: PagerEnds) {
        self.ends.set(ends);
        self.now.set(Arc::new(gen));
    }

    /// The configuration of generation `generation`.
    pub(crate) fn config(&self, generation: u32) -> Config {
        let mut cfg = self.cfg.clone();
        cfg.generation = generation;
        cfg
    }

    /// The victim object's state table in the generation now.
    pub fn table(&self) -> Table {
        Table(self.now().object.clone())
    }

    /// `Pager::Advise` on the victim's pages `[first, end)`.
    pub fn advise(&self, first: usize, end: usize, advice: ipc_protocol::types::Advice) {
        let g = self.now();
        g.core
            .advise(&g.object, first, end, advice)
            .expect("advice within budget");
    }

    /// The victim's id for its object.
    pub fn object_id(&self) -> Handle {
        self.object_id
    }

    /// The id the GPU server knows the victim's object by (0: none).
    pub fn gpu_object(&self) -> u32 {
        self.now().object.gpu_id(0).map_or(0, |h| h.raw())
    }

    /// The GPU server's session.
    pub fn gpu_session(&self) -> Arc<GpuSession<SimRuntime>> {
        self.now().gpu_session()
    }

    /// The GPU server opens the victim's view for its binding: the object
    /// id it knows the object by.
    pub fn open_for_gpu(&self) -> u32 {
        self.open_for_gpu_on(GPU)
    }

    /// GPU `gpu`'s server opens the victim's view for its binding.
    pub fn open_for_gpu_on(&self, gpu: u8) -> u32 {
        let g = self.now();
        let s = g.gpu_session_of(gpu);
        gpu_open(&g.core, &s, CLIENT, self.view).expect("the victim's view opens")
    }

    /// GPU `gpu`'s core and notifier endpoint now.
    pub fn notifier(&self, gpu: u8) -> Option<GpuLink> {
        self.outlives.link(gpu)?.get()
    }

    /// Puts `value` in page `p`, in RAM (state SYSTEM, present).
    pub fn seed_ram(&self, p: usize, value: u64) {
        let g = self.now();
        let t = &g.object.table;
        let r = t.try_lock(p).expect("page in range");
        assert!(r.is_some(), "seeding a page that is busy");
        g.core
            .rt
            .put(&g.object.memory, p, value)
            .expect("a live pager");
        t.unlock(p, Residency::System).expect("page in range");
    }

    /// A CPU thread faulted on `page` through `view` (not present). While
    /// the pager restarts, the fault waits in the kernel (the keeper holds
    /// the fault channel) until the next generation serves it.
    pub fn cpu_fault(&self, view: usize, page: usize) {
        self.fault(view, page, false);
    }

    /// A writer met write protection in `view`.
    pub fn wp_fault(&self, view: usize, page: usize) {
        self.fault(view, page, true);
    }

    fn fault(&self, view: usize, page: usize, wp: bool) {
        let g = self.now();
        if g.dead() {
            self.wait_for_restart();
            return;
        }
        let v = g.cpu_view(view);
        g.core
            .serve_fault(&v.space, v.base + page as u64 * PAGE, wp);
    }

    /// `PagerMigrate::Collect` from the GPU server: `Ok(None)` if refused.
    pub fn collect(&self, c: m::Collect) -> Result<Option<m::Collected>, Restarted> {
        self.call(false, move |g| {
            match g
                .core
                .migrate_request(&g.gpu_session_of(c.gpu.get()), m::Request::Collect(c))
            {
                Ok((m::Reply::Collect(c), _)) => Some(c),
                _ => None,
            }
        })
    }

    /// `PagerMigrate::Finalize` from the GPU server: whether it was taken.
    /// `PagerMigrate::Finalize`: its answer (the pages now in the GPU's
    /// VRAM), `None` if refused.
    pub fn finalize(&self, f: m::Finalize) -> Result<Option<m::Finalized>, Restarted> {
        self.call(false, move |g| {
            match g
                .core
                .migrate_request(&g.gpu_session_of(f.gpu.get()), m::Request::Finalize(f))
            {
                Ok((m::Reply::Finalize(done), _)) => Some(done),
                _ => None,
            }
        })
    }

    /// `PagerMigrate::Resident` from a GPU server: `Ok(None)` if refused.
    pub fn resident(&self, r: m::Resident) -> Result<Option<m::ResidentRuns>, Restarted> {
        self.call(false, move |g| {
            match g
                .core
                .migrate_request(&g.gpu_session_of(r.gpu.get()), m::Request::Resident(r))
            {
                Ok((m::Reply::Resident(runs), _)) => Some(runs),
                _ => None,
            }
        })
    }

    /// `PagerReclaim::Evict`: up to `bytes` of VRAM pages back to RAM.
    pub fn evict(&self, bytes: u64) -> Result<u64, Restarted> {
        self.call(true, move |g| g.core.evict(GPU, bytes) * PAGE)
    }

    /// A fork: the child's mappings (and their write protection) are copies
    /// of `parent`'s, and the core follows the child's space. Returns the
    /// child view's number.
    pub fn fork_view(&self, parent: usize) -> usize {
        let g = self.now();
        let v = g.cpu_view(parent);
        let _changing = v.space.applying_changes();
        let child = SimPort::default();
        let index = {
            let mut mmu = lock(&g.core.rt.machine.mmu);
            let wp = mmu.wp[parent].clone();
            mmu.wp.push(wp);
            mmu.wp.len() - 1
        };
        let pages = g.object.pages() as u64;
        child.map(Mapping {
            start: v.base,
            end: v.base + pages * PAGE,
            wp: index,
            base: 0,
        });
        let space = g
            .core
            .follow_fork(&v.space, child)
            .expect("the fork is followed");
        g.set_view(index, space, v.base);
        index
    }

    /// The first half of a plain mremap of all of `old` to `to`: the CPU
    /// mappings (write protection included) move to a new view, the core
    /// records the moved view and tells the GPU server (`ViewCopied`).
    /// Returns the new view's number and the move to finish.
    pub fn move_view(&self, old: usize, to: u64) -> (usize, Move) {
        let g = self.now();
        let v = g.cpu_view(old);
        let len = g.object.pages() as u64 * PAGE;
        let mut notes = Vec::new();
        let (index, pending) = {
            let _changing = v.space.applying_changes();
            let index = {
                let mut mmu = lock(&g.core.rt.machine.mmu);
                let wp = std::mem::take(&mut mmu.wp[old]);
                mmu.wp.push(wp);
                mmu.wp.len() - 1
            };
            v.space.port.unmap(v.base, v.base + len);
            v.space.port.map(Mapping {
                start: to,
                end: to + len,
                wp: index,
                base: 0,
            });
            let pending = g.core.follow_remap(&v.space, v.base, to, len, &mut notes);
            (index, pending)
        };
        g.core.send_notes(&mut notes);
        g.set_view(index, v.space.clone(), to);
        let m = Move {
            space: v.space,
            from: v.base,
            len,
            pending,
        };
        (index, m)
    }

    /// munmap of pages `[first, end)` of CPU view `view`: the pager splits
    /// the view, the parts stay bound (`ViewPart`), the old view ends
    /// (`ViewGone`), and the pages no view reaches leave VRAM.
    pub fn unmap_pages(&self, view: usize, first: usize, end: usize) {
        let g = self.now();
        let v = g.cpu_view(view);
        let (start, stop) = (v.base + first as u64 * PAGE, v.base + end as u64 * PAGE);
        let mut notes = Vec::new();
        {
            let _changing = v.space.applying_changes();
            v.space.port.unmap_part(start, stop);
            g.core.follow_unmap(&v.space, start, stop, None, &mut notes);
        }
        g.core.send_notes(&mut notes);
    }

    /// The second half: the old range's unmap ends the old view
    /// (`ViewGone`); the client's id names the moved view from then on.
    pub fn finish_move(&self, m: Move) {
        let core = self.core();
        let mut notes = Vec::new();
        {
            let _changing = m.space.applying_changes();
            core.follow_unmap(
                &m.space,
                m.from,
                m.from + m.len,
                Some(m.pending),
                &mut notes,
            );
        }
        core.send_notes(&mut notes);
    }

    /// Moves the locked DEVICE pages `held` of `chunk` back to RAM through
    /// view 0 (the negative checks drive their own locking with it).
    pub fn migrate_locked(&self, chunk: Chunk, held: &PageMask, from: &[Residency]) -> PageMask {
        let g = self.now();
        let v = g.victim.view(self.view);
        CoreBackend::new(&g.core, &g.object, v.as_deref())
            .migrate_to_ram(chunk, held, from)
            .unwrap_or(PageMask::EMPTY)
    }
}

impl PagerGen {
    /// The GPU server's session.
    pub fn gpu_session(&self) -> Arc<GpuSession<SimRuntime>> {
        self.gpu_session_of(GPU)
    }

    /// GPU `gpu`'s server's session (its badge: [`GPU_SERVER`]` + gpu`).
    pub fn gpu_session_of(&self, gpu: u8) -> Arc<GpuSession<SimRuntime>> {
        self.core
            .gpu_session(GPU_SERVER + u64::from(gpu), gpu)
            .expect("one server per GPU")
    }

    fn cpu_view(&self, view: usize) -> CpuView {
        lock(&self.views)
            .get(view)
            .cloned()
            .flatten()
            .expect("a CPU view of that number")
    }

    fn set_view(&self, index: usize, space: Arc<Space<SimRuntime>>, base: u64) {
        let mut views = lock(&self.views);
        if views.len() <= index {
            views.resize(index + 1, None);
        }
        views[index] = Some(CpuView { space, base });
    }
}

/// The victim object's state table, as a generation has it.
pub struct Table(Arc<Object<SimRuntime>>);

impl std::ops::Deref for Table {
    type Target = PageTable;
    fn deref(&self) -> &PageTable {
        &self.0.table
    }
}

/// A pager core of `cfg` over `machine`, journaling where `outlives` says,
/// and the records an earlier generation left there.
pub(crate) fn new_core(
    machine: Arc<Machine>,
    outlives: &Arc<Outlives>,
    cfg: Config,
) -> (Arc<SimCore>, Vec<(u32, pager::journal::Record)>) {
    let rt = SimRuntime::new(machine, outlives.clone());
    let core = match Core::new(rt, cfg) {
        Ok(c) => Arc::new(c),
        Err(e) => panic!("the simulated pager: {e}"),
    };
    let Some(words) = outlives.journal else {
        return (core, Vec::new());
    };
    let (j, records) = pager::journal::Journal::open(words);
    core.attach_journal(j);
    (core, records)
}

/// Journal memory for `cfg`'s budgets (never freed: a few KiB a schedule).
fn journal_words(cfg: &Config) -> &'static [StdU64] {
    let bytes = cfg
        .budget
        .journal_bytes_needed(cfg.max_clients)
        .expect("the journal's size");
    session::journal::leaked((bytes / pager::journal::RECORD_BYTES) as usize)
}

/// A move between its remap and its unmap.
pub struct Move {
    space: Arc<Space<SimRuntime>>,
    from: u64,
    len: u64,
    pending: PendingMove<SimRuntime>,
}

/// Creates an object of `pages` pages for `s`; returns the client's id.
pub fn create(
    core: &Arc<SimCore>,
    s: &Arc<ClientSession<SimRuntime>>,
    pages: u64,
) -> Result<Handle, p::PagerError> {
    let create = p::Request::CreateObject(p::CreateObject {
        size_bytes: pages * PAGE,
    });
    match core.pager_request(s, create, vec![])? {
        (p::Reply::CreateObject(o), _) => Ok(Handle::from_raw(o.object.get())),
        _ => Err(p::PagerError::Host),
    }
}

/// Attaches a view of the first `pages` pages of `object` at `addr`
/// through `port`; returns the client's view id.
pub fn attach(
    core: &Arc<SimCore>,
    s: &Arc<ClientSession<SimRuntime>>,
    object: Handle,
    addr: u64,
    pages: u64,
    port: SimPort,
) -> Result<Handle, p::PagerError> {
    let attach = p::Request::AttachView(p::AttachView {
        object: object_id(object),
        addr,
        object_first_page: 0,
        pages,
    });
    match core.pager_request(s, attach, vec![SimHandle::Port(port)])? {
        (p::Reply::AttachView(v), _) => Ok(Handle::from_raw(v.view.get())),
        _ => Err(p::PagerError::Host),
    }
}

/// Creates an object of `pages` pages for `s` with a view at `addr`
/// through `port`; returns the client's object and view ids.
pub fn create_with_view(
    core: &Arc<SimCore>,
    s: &Arc<ClientSession<SimRuntime>>,
    pages: u64,
    addr: u64,
    port: SimPort,
) -> Result<(Handle, Handle), p::PagerError> {
    let object = create(core, s, pages)?;
    Ok((object, attach(core, s, object, addr, pages, port)?))
}

/// The machine page of page 0 of an object, if the GPU can reach it.
pub fn machine_base(o: &Object<SimRuntime>) -> Option<usize> {
    match o.memory {
        SimMemory::Machine { base } => Some(base),
        SimMemory::Own(_) => None,
    }
}

/// The GPU server opens client `client`'s `view`: the id it knows the
/// object by.
pub fn gpu_open(
    core: &SimCore,
    g: &GpuSession<SimRuntime>,
    client: u64,
    view: Handle,
) -> Result<u32, m::MigrateError> {
    let req = m::Request::OpenView(m::OpenView {
        view: ViewId::raw(view.raw()),
        client,
    });
    match core.migrate_request(g, req)? {
        (m::Reply::OpenView(o), _) => Ok(o.object.get()),
        _ => Err(m::MigrateError::Host),
    }
}

/// Where the pager says page `p` is: (locked, VRAM frame if in VRAM).
pub fn where_is(table: &PageTable, p: usize) -> (bool, Option<u64>) {
    let i = table.info(p).expect("page in range");
    (
        i.locked,
        match i.residency {
            Residency::Device { pfn, .. } => Some(pfn),
            _ => None,
        },
    )
}

/// Where the pager says page `p` is: (locked, (GPU, VRAM frame) if in VRAM).
pub fn where_is_on(table: &PageTable, p: usize) -> (bool, Option<(u8, u64)>) {
    let i = table.info(p).expect("page in range");
    (
        i.locked,
        match i.residency {
            Residency::Device { gpu, pfn } => Some((gpu, pfn)),
            _ => None,
        },
    )
}

/// The CPU model of `machine` (the hostile scenarios add views to it).
pub fn lock_mmu(machine: &Machine) -> pager::sync::MutexGuard<'_, crate::machine::Mmu> {
    lock(&machine.mmu)
}

/// An object id as the wire carries it.
pub fn object_id(h: Handle) -> ObjectId {
    ObjectId::raw(h.raw())
}
