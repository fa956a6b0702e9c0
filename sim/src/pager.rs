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

use ipc_protocol::interfaces::pager as p;
use ipc_protocol::interfaces::pager_migrate as m;
use ipc_protocol::types::{ObjectId, PageMask, ViewId};
use pager::core::backend::CoreBackend;
use pager::core::changes::PendingMove;
use pager::core::object::Object;
use pager::core::runtime::{PartNote, Pause, RtError, Runtime, Source};
use pager::core::session::{ClientSession, GpuSession};
use pager::core::view::Space;
use pager::core::{Config, Core};
use pager::migrate::{Backend, Chunk, Policy};
use pager::state::{PageTable, Residency};
use pager::sync::{lock, AtomicUsize, Ordering};
use session::Handle;
use shuttle::sync::{Arc, Mutex, Weak};

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

/// An object's pages in RAM.
pub enum SimMemory {
    /// System pages `base..base + pages` of the machine (the GPU reaches them).
    Machine { base: usize },
    /// Memory of its own (the GPU never binds it).
    Own(Vec<std::sync::atomic::AtomicU64>),
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

/// An address space's CPU mappings.
#[derive(Default)]
pub struct SimPort {
    maps: Mutex<Vec<Mapping>>,
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
pub enum SimHandle {
    Port(SimPort),
    Memory,
}

pub struct SimRuntime {
    pub machine: Arc<Machine>,
    /// The next machine system page for an object.
    next_page: AtomicUsize,
    slots: pager::slots::SlotPool,
    /// The GPU core now and its notifier endpoint.
    pub gpu: Arc<Link<GpuLink>>,
    /// Held across a GPU server restart (`World::restart_gpu`).
    pub restart_gate: Mutex<()>,
}

impl SimRuntime {
    /// Waits out a GPU server restart in progress: who found the server
    /// dead blocks here instead of spinning (the host's callers wait with
    /// a deadline longer than a restart takes).
    pub fn wait_for_gpu(&self) {
        drop(lock(&self.restart_gate));
    }

    fn gpu(&self) -> Result<(Arc<GpuCore>, Arc<Endpoint>), RtError> {
        match self.gpu.get() {
            Some((g, n)) if !n.is_dead() => Ok((g.upgrade().ok_or(RtError::Gpu)?, n)),
            _ => Err(RtError::Gpu),
        }
    }

    /// Calls the GPU server's notifier with `f`. An idempotent call that
    /// finds the server dead is sent again to its successor, as the host's
    /// client stub does after `PeerRestarted` (`ipc_protocol::client`).
    fn call_gpu<T: Send + 'static>(
        &self,
        idempotent: bool,
        f: impl Fn(&GpuCore) -> T + Clone + Send + 'static,
    ) -> Result<T, RtError> {
        let mut tries = 0;
        loop {
            let reply = self.gpu().ok().and_then(|(gpu, notify)| {
                let f = f.clone();
                notify.call(move || f(&gpu))
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
    fn put(&self, m: &SimMemory, page: usize, v: u64) {
        use std::sync::atomic::Ordering::Release;
        match m {
            SimMemory::Machine { base } => {
                self.machine.ram[base + page].store(v, Release);
                lock(&self.machine.mmu).present[base + page] = true;
            }
            SimMemory::Own(words) => words[page].store(v, Release),
        }
    }
}

impl Runtime for SimRuntime {
    type Handle = SimHandle;
    type Memory = SimMemory;
    type Port = SimPort;

    fn create_memory(&self, bytes: u64) -> Result<(SimMemory, SimHandle), RtError> {
        let pages = (bytes / PAGE) as usize;
        let all = self.machine.pages + self.machine.spare;
        let base = self.next_page.load(Ordering::Acquire);
        if base + pages <= all
            && self
                .next_page
                .compare_exchange(base, base + pages, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return Ok((SimMemory::Machine { base }, SimHandle::Memory));
        }
        let words = (0..pages)
            .map(|_| std::sync::atomic::AtomicU64::new(0))
            .collect();
        Ok((SimMemory::Own(words), SimHandle::Memory))
    }

    fn share_memory(&self, _m: &SimMemory) -> Result<SimHandle, RtError> {
        Ok(SimHandle::Memory)
    }

    /// The hole punch: the pages leave every view.
    fn drop_pages(&self, m: &SimMemory, first: usize, pages: usize) -> Result<(), RtError> {
        if let SimMemory::Machine { base } = m {
            let mut mmu = lock(&self.machine.mmu);
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
            self.put(m, first + k, self.value(src, src_index + k));
        }
        Ok(())
    }

    fn open_port(&self, h: SimHandle) -> Result<SimPort, RtError> {
        match h {
            SimHandle::Port(p) => Ok(p),
            SimHandle::Memory => Err(RtError::BadHandle),
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
            self.put(m, page + k, self.value(src, src_index + k));
        }
        (pages, None)
    }

    /// `UFFDIO_POISON`: the view's accesses to those pages get `SIGBUS`.
    fn poison(&self, p: &SimPort, addr: u64, len: u64) -> Result<(), RtError> {
        let mut mmu = lock(&self.machine.mmu);
        for a in (addr..addr + len).step_by(PAGE as usize) {
            let m = p.mapping(a).ok_or(RtError::Unmapped)?;
            let page = m.base + ((a - m.start) / PAGE) as usize;
            mmu.poisoned.insert((m.wp, page));
        }
        Ok(())
    }

    fn wake(&self, _p: &SimPort, _addr: u64, _len: u64) -> Result<(), RtError> {
        Ok(())
    }

    fn start_space(&self, _core: &Arc<Core<Self>>, _s: &Arc<Space<Self>>) -> Result<(), RtError> {
        Ok(()) // the actors deliver faults themselves
    }

    fn stop_space(&self, _space: &Space<Self>) {}

    fn threads_per_space(&self) -> u64 {
        5
    }

    fn pause(&self, why: Pause, attempt: u32) {
        if why == Pause::FaultRetry && attempt + 1 >= FAULT_RETRIES {
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

    fn gpu_attached(&self) -> bool {
        self.gpu().is_ok()
    }

    fn invalidate(
        &self,
        m: &SimMemory,
        object: Handle,
        first: usize,
        count: usize,
        seq: u64,
    ) -> Result<(), RtError> {
        let sent = self.machine.tick();
        let (o, f, n) = (object.raw(), first as u64, count as u64);
        self.call_gpu(true, move |gpu| gpu.invalidate(o, f, n, seq))?
            .map_err(|_| RtError::Gpu)?;
        if let SimMemory::Machine { base } = m {
            self.machine
                .note_invalidation_acked(base + first, count, sent);
        }
        Ok(())
    }

    fn migrate_to_ram(
        &self,
        object: Handle,
        first: usize,
        _count: usize,
        pages: &PageMask,
        slot: usize,
    ) -> Result<PageMask, RtError> {
        let (gpu, notify) = self.gpu()?;
        let (o, f, mask) = (object.raw(), first as u64, *pages);
        let offset = slot as u64 * 512 * PAGE;
        match notify.call(move || gpu.migrate_to_ram(o, f, &mask, offset)) {
            Some(Ok(copied)) => Ok(copied),
            _ => Err(RtError::Gpu),
        }
    }

    fn free_pages(
        &self,
        object: Handle,
        first: usize,
        count: usize,
        pages: &PageMask,
    ) -> Result<(), RtError> {
        let (o, f, n, mask) = (object.raw(), first as u64, count as u64, *pages);
        match self.call_gpu(true, move |gpu| gpu.free_pages(o, f, n, &mask)) {
            Ok(Ok(_)) => Ok(()),
            _ => Err(RtError::Gpu),
        }
    }

    fn view_gone(&self, view: Handle) {
        let v = view.raw();
        let _ = self.call_gpu(true, move |gpu| gpu.view_gone(v));
    }

    fn view_copied(&self, view: Handle, new_view: Handle, from: u64, to: u64) {
        let (v, n) = (view.raw(), new_view.raw());
        let _ = self.call_gpu(true, move |gpu| gpu.view_copied(v, n, from, to));
    }

    /// The machine's logical clock: a schedule's events, not wall time.
    fn now_us(&self) -> u64 {
        self.machine.now()
    }

    fn view_grown(&self, view: Handle, tail: Handle, first_page: usize, pages: usize) {
        let (v, t) = (view.raw(), tail.raw());
        let pages = first_page as u64..(first_page + pages) as u64;
        let _ = self.call_gpu(true, move |gpu| gpu.view_grown(v, t, pages.clone()));
    }

    fn view_part(&self, p: &PartNote) {
        let (v, n, p) = (p.view.raw(), p.new_view.raw(), *p);
        let pages = p.first_page as u64..(p.first_page + p.pages) as u64;
        let _ = self.call_gpu(true, move |gpu| {
            gpu.view_part(v, n, pages.clone(), p.from, p.to)
        });
    }
}

pub type SimCore = Core<SimRuntime>;

/// A CPU view of the victim's: its space and the address of object page 0.
#[derive(Clone)]
struct CpuView {
    space: Arc<Space<SimRuntime>>,
    base: u64,
}

/// The pager as the simulation drives it: the core, the victim's session
/// and the CPU views it has (by their index in the CPU model).
pub struct SimPager {
    pub core: Arc<SimCore>,
    pub victim: Arc<ClientSession<SimRuntime>>,
    object: Arc<Object<SimRuntime>>,
    /// The victim's view id (its binding's, for the GPU server).
    pub view: Handle,
    views: Mutex<Vec<Option<CpuView>>>,
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
    pub fn new(machine: Arc<Machine>, cfg: Config) -> Self {
        let gpu = Arc::new(Link::default());
        let rt = SimRuntime {
            machine: machine.clone(),
            next_page: AtomicUsize::new(0),
            slots: pager::slots::SlotPool::new(STAGING_SLOTS),
            gpu: gpu.clone(),
            restart_gate: Mutex::new(()),
        };
        let core = match Core::new(rt, cfg) {
            Ok(c) => Arc::new(c),
            Err(e) => panic!("the simulated pager: {e}"),
        };
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
        let object = victim.object(object).expect("the victim's object");
        let space = victim.view(view).expect("the view").space.clone();
        Self {
            core,
            victim,
            object,
            view,
            views: Mutex::new(vec![Some(CpuView {
                space,
                base: VIEW_BASE,
            })]),
            gpu,
        }
    }

    /// The victim object's state table.
    pub fn table(&self) -> &PageTable {
        &self.object.table
    }

    /// `Pager::Advise` on the victim's pages `[first, end)`.
    pub fn advise(&self, first: usize, end: usize, advice: ipc_protocol::types::Advice) {
        self.core
            .advise(&self.object, first, end, advice)
            .expect("advice within budget");
    }

    /// The victim's id for its object.
    pub fn object_id(&self) -> Handle {
        self.object.id
    }

    /// The id the GPU server knows the victim's object by (0: none).
    pub fn gpu_object(&self) -> u32 {
        self.object.gpu_id().map_or(0, |h| h.raw())
    }

    /// The GPU server's session.
    pub fn gpu_session(&self) -> Arc<GpuSession<SimRuntime>> {
        self.core.gpu_session(GPU_SERVER).expect("one GPU server")
    }

    /// The GPU server opens the victim's view for its binding: the object
    /// id it knows the object by.
    pub fn open_for_gpu(&self) -> u32 {
        gpu_open(&self.core, &self.gpu_session(), CLIENT, self.view)
            .expect("the victim's view opens")
    }

    /// Puts `value` in page `p`, in RAM (state SYSTEM, present).
    pub fn seed_ram(&self, p: usize, value: u64) {
        let t = self.table();
        let r = t.try_lock(p).expect("page in range");
        assert!(r.is_some(), "seeding a page that is busy");
        self.core.rt.put(&self.object.memory, p, value);
        t.unlock(p, Residency::System).expect("page in range");
    }

    fn cpu_view(&self, view: usize) -> CpuView {
        lock(&self.views)
            .get(view)
            .cloned()
            .flatten()
            .expect("a CPU view of that number")
    }

    /// A CPU thread faulted on `page` through `view` (not present).
    pub fn cpu_fault(&self, view: usize, page: usize) {
        let v = self.cpu_view(view);
        self.core
            .serve_fault(&v.space, v.base + page as u64 * PAGE, false);
    }

    /// A writer met write protection in `view`.
    pub fn wp_fault(&self, view: usize, page: usize) {
        let v = self.cpu_view(view);
        self.core
            .serve_fault(&v.space, v.base + page as u64 * PAGE, true);
    }

    /// `PagerMigrate::Collect` from the GPU server.
    pub fn collect(&self, c: m::Collect) -> Option<m::Collected> {
        match self
            .core
            .migrate_request(&self.gpu_session(), m::Request::Collect(c))
        {
            Ok((m::Reply::Collect(c), _)) => Some(c),
            _ => None,
        }
    }

    /// `PagerMigrate::Finalize` from the GPU server.
    pub fn finalize(&self, f: m::Finalize) -> bool {
        matches!(
            self.core
                .migrate_request(&self.gpu_session(), m::Request::Finalize(f)),
            Ok((m::Reply::Finalize(_), _))
        )
    }

    /// `PagerMigrate::Resident` from a restarted GPU server.
    pub fn resident(&self, r: m::Resident) -> Option<m::ResidentRuns> {
        match self
            .core
            .migrate_request(&self.gpu_session(), m::Request::Resident(r))
        {
            Ok((m::Reply::Resident(runs), _)) => Some(runs),
            _ => None,
        }
    }

    /// `PagerReclaim::Evict`: up to `bytes` of VRAM pages back to RAM.
    pub fn evict(&self, bytes: u64) -> u64 {
        self.core.evict(GPU, bytes) * PAGE
    }

    /// A fork: the child's mappings (and their write protection) are copies
    /// of `parent`'s, and the core follows the child's space. Returns the
    /// child view's number.
    pub fn fork_view(&self, parent: usize) -> usize {
        let v = self.cpu_view(parent);
        let _changing = v.space.applying_changes();
        let child = SimPort::default();
        let index = {
            let mut mmu = lock(&self.core.rt.machine.mmu);
            let wp = mmu.wp[parent].clone();
            mmu.wp.push(wp);
            mmu.wp.len() - 1
        };
        let pages = self.object.pages() as u64;
        child.map(Mapping {
            start: v.base,
            end: v.base + pages * PAGE,
            wp: index,
            base: 0,
        });
        let space = self
            .core
            .follow_fork(&v.space, child)
            .expect("the fork is followed");
        self.set_view(index, space, v.base);
        index
    }

    fn set_view(&self, index: usize, space: Arc<Space<SimRuntime>>, base: u64) {
        let mut views = lock(&self.views);
        if views.len() <= index {
            views.resize(index + 1, None);
        }
        views[index] = Some(CpuView { space, base });
    }

    /// The first half of a plain mremap of all of `old` to `to`: the CPU
    /// mappings (write protection included) move to a new view, the core
    /// records the moved view and tells the GPU server (`ViewCopied`).
    /// Returns the new view's number and the move to finish.
    pub fn move_view(&self, old: usize, to: u64) -> (usize, Move) {
        let v = self.cpu_view(old);
        let len = self.object.pages() as u64 * PAGE;
        let mut notes = Vec::new();
        let (index, pending) = {
            let _changing = v.space.applying_changes();
            let index = {
                let mut mmu = lock(&self.core.rt.machine.mmu);
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
            let pending = self
                .core
                .follow_remap(&v.space, v.base, to, len, &mut notes);
            (index, pending)
        };
        self.core.send_notes(&mut notes);
        self.set_view(index, v.space.clone(), to);
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
        let v = self.cpu_view(view);
        let (start, stop) = (v.base + first as u64 * PAGE, v.base + end as u64 * PAGE);
        let mut notes = Vec::new();
        {
            let _changing = v.space.applying_changes();
            v.space.port.unmap_part(start, stop);
            self.core
                .follow_unmap(&v.space, start, stop, None, &mut notes);
        }
        self.core.send_notes(&mut notes);
    }

    /// The second half: the old range's unmap ends the old view
    /// (`ViewGone`); the client's id names the moved view from then on.
    pub fn finish_move(&self, m: Move) {
        let mut notes = Vec::new();
        {
            let _changing = m.space.applying_changes();
            self.core.follow_unmap(
                &m.space,
                m.from,
                m.from + m.len,
                Some(m.pending),
                &mut notes,
            );
        }
        self.core.send_notes(&mut notes);
    }

    /// Moves the locked DEVICE pages `held` of `chunk` back to RAM through
    /// view 0 (the negative checks drive their own locking with it).
    pub fn migrate_locked(&self, chunk: Chunk, held: &PageMask, from: &[Residency]) -> PageMask {
        let v = self.victim.view(self.view);
        CoreBackend::new(&self.core, &self.object, v.as_deref())
            .migrate_to_ram(chunk, held, from)
            .unwrap_or(PageMask::EMPTY)
    }
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

/// The CPU model of `machine` (the hostile scenarios add views to it).
pub fn lock_mmu(machine: &Machine) -> pager::sync::MutexGuard<'_, crate::machine::Mmu> {
    lock(&machine.mmu)
}

/// An object id as the wire carries it.
pub fn object_id(h: Handle) -> ObjectId {
    ObjectId::raw(h.raw())
}
