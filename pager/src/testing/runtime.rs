//! A runtime under the session core for tests and the explorer: object
//! memory is one word of data per page, an address space records what is
//! registered and write-protected, and a GPU server keeps "VRAM" pages in a
//! map. Nothing runs by itself: a test delivers faults with
//! [`Core::serve_fault`] and plays the GPU server through the core's
//! `PagerMigrate` requests ([`gpu_migrate`]).

use std::collections::{BTreeMap, BTreeSet};

use ipc_protocol::interfaces::pager as p;
use ipc_protocol::interfaces::pager_migrate as m;
use ipc_protocol::types::{GpuId, ObjectId, PageCount, PageMask};
use session::Handle;

use crate::core::runtime::{
    FileId, FileMapping, FrameRuns, Kept, KernelCall, PartNote, Pause, RtError, Runtime, Source,
};
use crate::core::session::{ClientSession, GpuSession};
use crate::core::view::{Space, PAGE};
use crate::core::{Config, Core};
use crate::sync::{lock, Arc, AtomicBool, AtomicU64, Mutex, Ordering};

/// What a page holds once its RAM copy was dropped (moved to VRAM).
pub const POISON: u64 = u64::MAX;
/// Staging slots of the model.
pub const SLOTS: usize = 2;
const SLOT_PAGES: usize = 512;

/// An object's memory: one data word per page.
pub struct ModelMemory {
    pub words: Vec<AtomicU64>,
}

/// The file identity `mapping_at` answers for `m` (its address).
pub fn model_file(m: &ModelMemory) -> FileId {
    FileId {
        major: 0,
        minor: 0,
        ino: m as *const ModelMemory as u64,
    }
}

/// What a client passes: its memory back (never valid as a port), a
/// fault channel, or a handle of a kernel that delivers no faults (Redox
/// today: the runtime names the missing call). `GonePort`: the fault
/// channel of a process that exited (what a keeper may give back).
pub enum ModelHandle {
    Memory(Arc<ModelMemory>),
    Port,
    GonePort,
    NoFaults,
}

/// An address space: registered ranges and write-protected pages.
#[derive(Default)]
pub struct ModelPort {
    pub registered: Mutex<Vec<(u64, u64)>>,
    /// Ranges handed back to the kernel, in order.
    pub unregistered: Mutex<Vec<(u64, u64)>>,
    pub protected: Mutex<BTreeSet<u64>>,
    /// Its process exited: calls on it fail `Gone` (host: `ESRCH`).
    pub gone: bool,
}

impl ModelPort {
    /// Whether the page at `addr` is write-protected.
    pub fn is_protected(&self, addr: u64) -> bool {
        lock(&self.protected).contains(&(addr & !(PAGE - 1)))
    }
}

/// A page in a model GPU's VRAM: (GPU, object id its server knows, page).
pub type VramKey = (u8, u32, usize);

/// The model runtime and its GPU servers (one per GPU that opened a view).
pub struct ModelRuntime {
    /// Every GPU's VRAM, by [`VramKey`].
    pub vram: Mutex<BTreeMap<VramKey, u64>>,
    /// Frames a peer push wrote, by (GPU, frame): the collecting GPU's
    /// model reads them into its VRAM once its finalize says they landed.
    pub frames: Mutex<BTreeMap<(u8, u64), u64>>,
    /// Every invalidation, in order: (GPU, object id it knows, first page).
    pub invalidated: Mutex<Vec<(u8, u32, usize)>>,
    /// Every push to a peer, in order: (from GPU, to GPU, pages).
    pub pushes: Mutex<Vec<(u8, u8, u32)>>,
    /// The next frame a collect with peer pages takes (`gpu_migrate`).
    pub next_pfn: AtomicU64,
    staging: Vec<AtomicU64>,
    slots: crate::slots::SlotPool,
    /// Views the GPU server heard went, and copies (view, new view).
    pub gone: Mutex<Vec<u32>>,
    pub copied: Mutex<Vec<(u32, u32)>>,
    /// Every `view_part` note, in order.
    pub parts: Mutex<Vec<PartNote>>,
    /// `ViewPart`, `ViewCopied` and `ViewGone` as the GPU server heard
    /// them, in order: (`'p'`, the part's id), (`'c'`, the copy's id) or
    /// (`'g'`, the view that went).
    pub heard: Mutex<Vec<(char, u32)>>,
    /// The clock `now_us` reads; tests move it.
    pub clock_us: AtomicU64,
    /// What `mapping_at` answers, for any thread.
    pub maps: Mutex<Vec<FileMapping>>,
    /// Every copy back to RAM fails (a GPU server that lost the device).
    pub fail_to_ram: AtomicBool,
    /// Every push to a peer goes unanswered (a source server that hangs
    /// past the deadline); its copy is kept in `late_pushes` instead.
    pub push_unanswered: AtomicBool,
    /// Pushes that went unanswered: (to, frame, value), to land later.
    pub late_pushes: Mutex<Vec<(u8, u64, u64)>>,
    /// Pages `poison` ended: (address, length).
    pub poisoned: Mutex<Vec<(u64, u64)>>,
    /// `ViewGrown` as the GPU server heard it: (view, tail, first page, pages).
    pub grown: Mutex<Vec<(u32, u32, usize, usize)>>,
    /// `poison` fails (a kernel without `UFFDIO_POISON`).
    pub no_poison: AtomicBool,
    pub invalidations: AtomicU64,
    /// Runs as the GPU server is asked to free pages, before it does: a
    /// test puts another party's call there (a restarted server's
    /// `Resident`, racing the free).
    pub on_free: OnFree,
    /// The keeper (`keep_memory`, `keep_port`): what a restarted core
    /// would get back, by key.
    pub kept: Mutex<BTreeMap<u64, ModelHandle>>,
    /// Added to every frame `gpu_frames` reports (a test makes the GPU
    /// server name frames past what a state word holds).
    pub frames_from: AtomicU64,
}

/// [`ModelRuntime::on_free`].
pub type OnFree = Mutex<Option<Box<dyn Fn() + Send + Sync>>>;

impl Default for ModelRuntime {
    fn default() -> Self {
        Self {
            vram: Mutex::new(BTreeMap::new()),
            frames: Mutex::new(BTreeMap::new()),
            invalidated: Mutex::new(Vec::new()),
            pushes: Mutex::new(Vec::new()),
            next_pfn: AtomicU64::new(1 << 20),
            staging: (0..SLOTS * SLOT_PAGES).map(|_| AtomicU64::new(0)).collect(),
            slots: crate::slots::SlotPool::new(SLOTS),
            gone: Mutex::new(Vec::new()),
            copied: Mutex::new(Vec::new()),
            parts: Mutex::new(Vec::new()),
            heard: Mutex::new(Vec::new()),
            clock_us: AtomicU64::new(0),
            maps: Mutex::new(Vec::new()),
            fail_to_ram: AtomicBool::new(false),
            push_unanswered: AtomicBool::new(false),
            late_pushes: Mutex::new(Vec::new()),
            poisoned: Mutex::new(Vec::new()),
            grown: Mutex::new(Vec::new()),
            no_poison: AtomicBool::new(false),
            invalidations: AtomicU64::new(0),
            on_free: Mutex::new(None),
            kept: Mutex::new(BTreeMap::new()),
            frames_from: AtomicU64::new(0),
        }
    }
}

impl ModelRuntime {
    fn value(&self, src: Source, index: usize) -> u64 {
        match src {
            Source::Zeros => 0,
            Source::Staging(slot) => {
                self.staging[slot * SLOT_PAGES + index].load(Ordering::Acquire)
            }
        }
    }

    /// GPU `gpu` unmapped the chunk of `o` at `first` (an `Invalidate`,
    /// or the one a push makes first).
    fn heard_invalidate(&self, gpu: u8, o: Handle, first: usize) {
        self.invalidations.fetch_add(1, Ordering::AcqRel);
        lock(&self.invalidated).push((gpu, o.raw(), first));
    }
}

impl Runtime for ModelRuntime {
    type Handle = ModelHandle;
    type Memory = Arc<ModelMemory>;
    type Port = ModelPort;

    fn keep_memory(&self, kept: Kept, m: &Self::Memory) {
        lock(&self.kept).insert(kept.key(), ModelHandle::Memory(m.clone()));
    }

    fn keep_port(&self, kept: Kept, _p: &ModelPort) {
        lock(&self.kept).insert(kept.key(), ModelHandle::Port);
    }

    fn drop_kept(&self, kept: Kept) {
        lock(&self.kept).remove(&kept.key());
    }

    fn adopt_memory(&self, h: ModelHandle, bytes: u64) -> Result<Self::Memory, RtError> {
        match h {
            ModelHandle::Memory(m) if m.words.len() as u64 * PAGE == bytes => Ok(m),
            _ => Err(RtError::BadHandle),
        }
    }

    fn reopen_port(&self, h: ModelHandle) -> Result<ModelPort, RtError> {
        self.open_port(h)
    }

    /// A page holds data unless its RAM copy was dropped (`POISON`) or
    /// never written (0: the model's zero page reads as a hole, which
    /// rebuilds as Empty, the same zeros).
    fn data_pages(&self, m: &Self::Memory, pages: usize) -> Result<Vec<bool>, RtError> {
        let word = |p: usize| m.words.get(p).map_or(0, |w| w.load(Ordering::Acquire));
        Ok((0..pages).map(|p| !matches!(word(p), 0 | POISON)).collect())
    }

    /// The model GPU's pages, each at the frame numbered as its page plus
    /// `frames_from` (it finds a page by object and page, never by frame).
    fn gpu_frames(&self, gpu: u8, from: (u32, u64)) -> Result<FrameRuns, RtError> {
        let vram = lock(&self.vram);
        let base = self.frames_from.load(Ordering::Acquire);
        let runs = vram
            .keys()
            .filter(|(g, o, p)| *g == gpu && (*o, *p as u64) >= from)
            .map(|&(_, o, p)| (o, p as u64, 1, base.wrapping_add(p as u64)))
            .collect();
        Ok(FrameRuns {
            gpu,
            runs,
            next: None,
        })
    }

    fn create_memory(&self, bytes: u64) -> Result<(Self::Memory, ModelHandle), RtError> {
        let pages = (bytes / PAGE) as usize;
        let mem = Arc::new(ModelMemory {
            words: (0..pages).map(|_| AtomicU64::new(0)).collect(),
        });
        Ok((mem.clone(), ModelHandle::Memory(mem)))
    }

    fn share_memory(&self, m: &Self::Memory) -> Result<ModelHandle, RtError> {
        Ok(ModelHandle::Memory(m.clone()))
    }

    fn drop_pages(&self, m: &Self::Memory, first: usize, pages: usize) -> Result<(), RtError> {
        for w in &m.words[first..first + pages] {
            w.store(POISON, Ordering::Release);
        }
        Ok(())
    }

    fn write_pages(
        &self,
        m: &Self::Memory,
        first: usize,
        src: Source,
        src_index: usize,
        pages: usize,
    ) -> Result<(), RtError> {
        for k in 0..pages {
            m.words[first + k].store(self.value(src, src_index + k), Ordering::Release);
        }
        Ok(())
    }

    fn open_port(&self, h: ModelHandle) -> Result<ModelPort, RtError> {
        match h {
            ModelHandle::Port => Ok(ModelPort::default()),
            ModelHandle::GonePort => Ok(ModelPort {
                gone: true,
                ..ModelPort::default()
            }),
            ModelHandle::Memory(_) => Err(RtError::BadHandle),
            ModelHandle::NoFaults => Err(RtError::Unsupported(KernelCall::FaultUpcall)),
        }
    }

    fn register(&self, p: &ModelPort, addr: u64, len: u64) -> Result<(), RtError> {
        lock(&p.registered).push((addr, len));
        Ok(())
    }

    fn unregister(&self, p: &ModelPort, addr: u64, len: u64) -> Result<(), RtError> {
        lock(&p.unregistered).push((addr, len));
        lock(&p.registered).retain(|r| *r != (addr, len));
        Ok(())
    }

    fn write_protect(&self, p: &ModelPort, addr: u64, len: u64, on: bool) -> Result<(), RtError> {
        if p.gone {
            return Err(RtError::Gone);
        }
        let mut wp = lock(&p.protected);
        for a in (addr..addr + len).step_by(PAGE as usize) {
            if on {
                wp.insert(a);
            } else {
                wp.remove(&a);
            }
        }
        Ok(())
    }

    fn install(
        &self,
        _p: &ModelPort,
        m: &Self::Memory,
        _dst: u64,
        page: usize,
        src: Source,
        src_index: usize,
        pages: usize,
    ) -> (usize, Option<RtError>) {
        for k in 0..pages {
            m.words[page + k].store(self.value(src, src_index + k), Ordering::Release);
        }
        (pages, None)
    }

    fn wake(&self, _p: &ModelPort, _addr: u64, _len: u64) -> Result<(), RtError> {
        Ok(())
    }

    fn start_space(
        &self,
        _core: &Arc<Core<Self>>,
        _space: &Arc<Space<Self>>,
    ) -> Result<(), RtError> {
        Ok(())
    }

    fn stop_space(&self, _space: &Space<Self>) {}

    fn threads_per_space(&self) -> u64 {
        5
    }

    /// A retried fault's pause moves the clock 10 ms (the model has no
    /// other time), so fault deadlines pass. A wait for other threads'
    /// work (`FinalizeDrain`) sleeps as the host's does, so its bound is
    /// the host's too.
    fn process_gone(&self, p: &ModelPort, _spare: u64) -> bool {
        p.gone
    }

    fn pause(&self, why: Pause, attempt: u32) {
        if why == Pause::FaultRetry {
            self.clock_us.fetch_add(10_000, Ordering::AcqRel);
        }
        #[cfg(not(feature = "shuttle"))]
        if why == Pause::FinalizeDrain {
            std::thread::sleep(crate::notifier::pause_for(why, attempt));
            return;
        }
        let _ = attempt;
        crate::sync::yield_now();
    }

    fn poison(&self, _p: &ModelPort, addr: u64, len: u64) -> Result<(), RtError> {
        if self.no_poison.load(Ordering::Acquire) {
            return Err(RtError::Host(0));
        }
        lock(&self.poisoned).push((addr, len));
        Ok(())
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

    fn gpu_attached(&self, _gpu: u8) -> bool {
        true
    }

    fn invalidate(
        &self,
        _m: &Self::Memory,
        gpu: u8,
        o: Handle,
        first: usize,
        _n: usize,
        _seq: u64,
    ) -> Result<(), RtError> {
        self.heard_invalidate(gpu, o, first);
        Ok(())
    }

    /// The source's pages land in the peer's frames (read by
    /// [`gpu_migrate`] once its finalize says they are its own).
    fn push_to_peer(
        &self,
        gpu: u8,
        o: Handle,
        first: usize,
        _n: usize,
        pages: &PageMask,
        to: u8,
        to_first_pfn: u64,
        seq: u64,
    ) -> Result<PageMask, RtError> {
        // The push unmaps the chunk on its source first, as `invalidate`.
        let _ = seq;
        self.heard_invalidate(gpu, o, first);
        let vram = lock(&self.vram);
        if self.push_unanswered.load(Ordering::Acquire) {
            let mut late = lock(&self.late_pushes);
            for i in pages.iter() {
                if let Some(&v) = vram.get(&(gpu, o.raw(), first + i)) {
                    late.push((to, to_first_pfn + i as u64, v));
                }
            }
            return Err(RtError::Unanswered(u64::from(gpu) << 56));
        }
        let mut frames = lock(&self.frames);
        let mut pushed = PageMask::EMPTY;
        for i in pages.iter() {
            if let Some(&v) = vram.get(&(gpu, o.raw(), first + i)) {
                frames.insert((to, to_first_pfn + i as u64), v);
                pushed.set(i);
            }
        }
        lock(&self.pushes).push((gpu, to, pushed.count()));
        Ok(pushed)
    }

    fn migrate_to_ram(
        &self,
        gpu: u8,
        o: Handle,
        first: usize,
        _n: usize,
        pages: &PageMask,
        slot: usize,
    ) -> Result<PageMask, RtError> {
        if self.fail_to_ram.load(Ordering::Acquire) {
            return Err(RtError::Gpu);
        }
        let vram = lock(&self.vram);
        let mut copied = PageMask::EMPTY;
        for i in pages.iter() {
            // Copied, not dropped: the VRAM goes with `free_pages`.
            if let Some(&v) = vram.get(&(gpu, o.raw(), first + i)) {
                self.staging[slot * SLOT_PAGES + i].store(v, Ordering::Release);
                copied.set(i);
            }
        }
        Ok(copied)
    }

    fn free_pages(
        &self,
        gpu: u8,
        o: Handle,
        first: usize,
        _n: usize,
        pages: &PageMask,
    ) -> Result<(), RtError> {
        if let Some(hook) = lock(&self.on_free).as_ref() {
            hook();
        }
        let mut vram = lock(&self.vram);
        for i in pages.iter() {
            vram.remove(&(gpu, o.raw(), first + i));
        }
        Ok(())
    }

    fn view_gone(&self, view: Handle) {
        lock(&self.gone).push(view.raw());
        lock(&self.heard).push(('g', view.raw()));
    }

    fn view_copied(&self, view: Handle, new_view: Handle, _from: u64, _to: u64) {
        lock(&self.copied).push((view.raw(), new_view.raw()));
        lock(&self.heard).push(('c', new_view.raw()));
    }

    fn now_us(&self) -> u64 {
        self.clock_us.load(Ordering::Acquire)
    }

    fn mapping_at(&self, _tid: u32, addr: u64) -> Option<FileMapping> {
        lock(&self.maps)
            .iter()
            .find(|m| addr >= m.start && addr < m.end)
            .copied()
    }

    fn is_file(&self, m: &Arc<ModelMemory>, file: FileId) -> bool {
        model_file(m) == file
    }

    fn view_grown(&self, view: Handle, tail: Handle, first_page: usize, pages: usize) {
        lock(&self.grown).push((view.raw(), tail.raw(), first_page, pages));
    }

    fn view_part(&self, p: &PartNote) {
        lock(&self.parts).push(*p);
        lock(&self.heard).push(('p', p.new_view.raw()));
    }
}

pub type ModelCore = Core<ModelRuntime>;

/// A core on the model runtime with a small arena.
pub fn model_core(cfg: Config) -> Arc<ModelCore> {
    match Core::new(ModelRuntime::default(), cfg) {
        Ok(c) => Arc::new(c),
        Err(e) => panic!("a model core: {e}"),
    }
}

/// A small configuration for tests: an 8 MiB arena, budgets as given.
pub fn small_config(budget: &str) -> Config {
    let mut cfg = Config::default();
    cfg.budget.metadata_bytes = 256 << 10;
    cfg.budget.object_bytes = 64 << 20;
    if let Err(e) = cfg.budget.apply(budget) {
        panic!("budget {budget:?}: {e:?}");
    }
    cfg.max_clients = 4;
    cfg.arena_bytes = cfg.budget.metadata_bytes * 4 + crate::core::PEER_METADATA;
    cfg
}

/// Puts `value(p)` in every page of `o`, in RAM (state SYSTEM).
pub fn seed(o: &crate::core::object::Object<ModelRuntime>, value: impl Fn(usize) -> u64) {
    for p in 0..o.pages() {
        match o.table.try_lock(p) {
            Ok(Some(_)) => {}
            other => panic!("seeding page {p}: {other:?}"),
        }
        o.memory.words[p].store(value(p), Ordering::Release);
        let _ = o.table.unlock(p, crate::state::Residency::System);
    }
}

/// A CPU write adding `add` to page `page` at `addr` of `space`: applied
/// at once unless the page is write-protected there (checked and written
/// in one step, as the MMU does), else a write-protect fault first.
pub fn cpu_write(core: &ModelCore, space: &Space<ModelRuntime>, addr: u64, page: usize, add: u64) {
    let Some(view) = space.view_at(addr) else {
        panic!("no view at {addr:#x}");
    };
    for _ in 0..1000 {
        {
            let wp = lock(&space.port.protected);
            let present = view.object.memory.words[page].load(Ordering::Acquire) != POISON;
            if present && !wp.contains(&(addr & !(PAGE - 1))) {
                view.object.memory.words[page].fetch_add(add, Ordering::AcqRel);
                return;
            }
            if !present {
                drop(wp);
                core.serve_fault(space, addr, false);
                continue;
            }
        }
        core.serve_fault(space, addr, true);
    }
    panic!("a CPU write to page {page} never completed");
}

/// A client's object of `pages` pages with a view at `addr`; returns the
/// client's object and view ids.
pub fn object_with_view(
    core: &Arc<ModelCore>,
    s: &Arc<ClientSession<ModelRuntime>>,
    pages: u64,
    addr: u64,
) -> Result<(Handle, Handle), p::PagerError> {
    let (r, _) = core.pager_request(
        s,
        p::Request::CreateObject(p::CreateObject {
            size_bytes: pages * PAGE,
        }),
        vec![],
    )?;
    let p::Reply::CreateObject(o) = r else {
        return Err(p::PagerError::Host);
    };
    let attach = p::AttachView {
        object: o.object,
        addr,
        object_first_page: 0,
        pages,
    };
    let (r, _) = core.pager_request(s, p::Request::AttachView(attach), vec![ModelHandle::Port])?;
    let p::Reply::AttachView(v) = r else {
        return Err(p::PagerError::Host);
    };
    Ok((
        Handle::from_raw(o.object.get()),
        Handle::from_raw(v.view.get()),
    ))
}

/// The GPU server opens client `client`'s view: the id it knows the
/// object by.
pub fn gpu_open(
    core: &ModelCore,
    g: &GpuSession<ModelRuntime>,
    client: u64,
    view: Handle,
) -> Result<ObjectId, m::MigrateError> {
    let req = m::Request::OpenView(m::OpenView {
        view: ipc_protocol::types::ViewId::raw(view.raw()),
        client,
    });
    match core.migrate_request(g, req)? {
        (m::Reply::OpenView(o), _) => Ok(o.object),
        _ => Err(m::MigrateError::Host),
    }
}

/// The GPU server collects `[first, first + count)` of the object it
/// knows as `object`.
pub fn gpu_collect(
    core: &ModelCore,
    g: &GpuSession<ModelRuntime>,
    object: ObjectId,
    first: u64,
    count: u16,
) -> Result<m::Collected, m::MigrateError> {
    let req = m::Request::Collect(m::Collect {
        object,
        first_page: first,
        count: PageCount::new(count).ok_or(m::MigrateError::OutOfRange)?,
        gpu: GpuId::new(g.gpu).ok_or(m::MigrateError::Host)?,
        generation: 1,
        pager_generation: 0,
    });
    match core.migrate_request(g, req)? {
        (m::Reply::Collect(c), _) => Ok(c),
        _ => Err(m::MigrateError::Host),
    }
}

/// What a GPU fault does: collect the chunk, copy what it got into VRAM
/// (from `memory`; a peer's pages are pushed by their source), finalize
/// it all as migrated. Returns the pages moved.
pub fn gpu_migrate(
    core: &ModelCore,
    g: &GpuSession<ModelRuntime>,
    object: ObjectId,
    memory: &ModelMemory,
    first: u64,
    count: u16,
) -> Result<u16, m::MigrateError> {
    let c = gpu_collect(core, g, object, first, count)?;
    {
        let mut vram = lock(&core.rt.vram);
        for i in c.got.and_not(&c.peer).iter() {
            let p = first as usize + i;
            let v = if c.zero.get(i) {
                0
            } else {
                memory.words[p].load(Ordering::Acquire)
            };
            vram.insert((g.gpu, object.get(), p), v);
        }
    }
    // The model's frames mean nothing but where a peer pushes: a collect
    // with peer pages takes frames no other collect has.
    let vram_first_pfn = match c.peer.is_empty() {
        true => 0,
        false => core
            .rt
            .next_pfn
            .fetch_add(u64::from(count), Ordering::AcqRel),
    };
    let req = m::Request::Finalize(m::Finalize {
        object,
        first_page: first,
        count: PageCount::new(count).ok_or(m::MigrateError::OutOfRange)?,
        gpu: GpuId::new(g.gpu).ok_or(m::MigrateError::Host)?,
        vram_first_pfn,
        got: c.got,
        migrated: c.got,
    });
    let (m::Reply::Finalize(f), _) = core.migrate_request(g, req)? else {
        return Err(m::MigrateError::Host);
    };
    let mut vram = lock(&core.rt.vram);
    let mut frames = lock(&core.rt.frames);
    for i in c.peer.iter() {
        let landed = frames.remove(&(g.gpu, vram_first_pfn + i as u64));
        if let Some(v) = landed.filter(|_| f.device_pages.get(i)) {
            vram.insert((g.gpu, object.get(), first as usize + i), v);
        }
    }
    Ok(f.device)
}
