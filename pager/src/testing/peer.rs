//! A model of several GPUs for the peer-migration tests (issue 17), shared
//! by the race test on real threads (`tests/peer.rs`) and the explorer
//! (`tests/explore.rs`). It runs the real protocols of `migrate.rs`.
//!
//! - Each GPU has its own frames and its own page table behind its own lock
//!   (its server's; no lock is shared between GPUs). Page `p` sits at frame
//!   `p` of whichever GPU holds it.
//! - A page's data lives where its word says: RAM while SYSTEM, the named
//!   GPU's frame while DEVICE. A copy from anywhere else is a bug the counts
//!   show.
//! - A GPU access adds one to the page where that GPU maps it, so a write
//!   lost to a stale mapping, or a copy from the wrong place, leaves a
//!   count that is off at the end. CPU threads read; their reads never go
//!   backwards.
//!
//! [`Design::PerRangeLock`] is the design issue 17 asks the tests to catch,
//! one lock per range shared by every device:
//! - a GPU migration holds it from its collect to its finalize and waits
//!   there for the whole range;
//! - a CPU fault's migration back takes it while it holds its page, as a
//!   fault handler that locks the range would.
//!
//! On real threads its waits are bounded ([`SPIN_BOUND`]), so a deadlock
//! shows as a fault that made no progress instead of a hang; under the
//! explorer they block, and the explorer reports the deadlock itself.

use ipc_protocol::types::PageMask;

use crate::migrate::{
    collect, cpu_fault, finalize, Backend, BackendError, Chunk, Collected, FaultError, Peers,
    Policy, Pushed,
};
use crate::state::{PageTable, Residency};
use crate::sync::{lock, yield_now, AtomicBool, AtomicU64, Mutex, MutexGuard, Ordering};

/// Tries of one access, and spins of one wait, before it counts as no
/// progress (smaller under the explorer, where each is a scheduling point).
#[cfg(not(feature = "shuttle"))]
pub const SPIN_BOUND: u32 = 200_000;
#[cfg(feature = "shuttle")]
pub const SPIN_BOUND: u32 = 60;

/// Which design the model's GPU migrations follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Design {
    /// Page locks alone (DESIGN.md rules 1 to 4).
    Rules,
    /// One lock per range across devices (the rejected design).
    PerRangeLock,
}

/// An access or a fault that made no progress within [`SPIN_BOUND`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stuck {
    /// A GPU access on this page.
    Gpu(usize),
    /// A CPU read of this page.
    Cpu(usize),
}

pub struct PeerModel {
    gpus: usize,
    pages: usize,
    design: Design,
    ram: Vec<AtomicU64>,
    /// RAM holds the page (a hole once it moved to VRAM).
    ram_valid: Vec<AtomicBool>,
    /// Orders a CPU read against the hole punch of its page.
    cpu: Vec<Mutex<()>>,
    /// Frame `pfn` of GPU `g` at `g * pages + pfn`.
    frames: Vec<AtomicU64>,
    /// Whether that frame holds a page (a leak or a double use shows).
    held: Vec<AtomicBool>,
    /// Each GPU's page table: page `p` mapped at frame `ptes[g][p] - 1`.
    ptes: Vec<Mutex<Vec<u64>>>,
    /// The one range lock of [`Design::PerRangeLock`].
    range: Mutex<()>,
    /// Pages pushed GPU to GPU, and copied VRAM to RAM.
    pub pushes: AtomicU64,
    pub to_ram: AtomicU64,
    /// A directed schedule for [`Design::PerRangeLock`] on real threads: a
    /// CPU fault holding its pages and a GPU migration holding the range
    /// meet here once, before either goes on ([`PeerModel::meet_once`]).
    meeting: Option<std::sync::Arc<Meeting>>,
}

/// Where the two sides of a directed schedule meet, each once.
struct Meeting {
    both: std::sync::Barrier,
    cpu_met: core::sync::atomic::AtomicBool,
    gpu_met: core::sync::atomic::AtomicBool,
}

impl PeerModel {
    /// `pages` pages (one chunk at most), page `p` in RAM holding `value(p)`
    /// or, where `on(p)` names a GPU, in that GPU's frame `p`.
    pub fn new(
        gpus: usize,
        pages: usize,
        design: Design,
        on: impl Fn(usize) -> Option<u8>,
        value: impl Fn(usize) -> u64,
    ) -> (PageTable, Self) {
        assert!(pages <= crate::migrate::CHUNK_PAGES && gpus <= 16);
        let words = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect::<Vec<_>>();
        let flags = |n: usize| (0..n).map(|_| AtomicBool::new(false)).collect::<Vec<_>>();
        let m = Self {
            gpus,
            pages,
            design,
            ram: words(pages),
            ram_valid: flags(pages),
            cpu: (0..pages).map(|_| Mutex::new(())).collect(),
            frames: words(gpus * pages),
            held: flags(gpus * pages),
            ptes: (0..gpus).map(|_| Mutex::new(vec![0; pages])).collect(),
            range: Mutex::new(()),
            pushes: AtomicU64::new(0),
            to_ram: AtomicU64::new(0),
            meeting: None,
        };
        let t = PageTable::new(pages);
        for p in 0..pages {
            assert!(t.try_lock(p).ok().flatten().is_some(), "a fresh page locks");
            let now = match on(p) {
                Some(g) => {
                    m.frames[m.frame(g, p as u64)].store(value(p), Ordering::Release);
                    m.held[m.frame(g, p as u64)].store(true, Ordering::Release);
                    Residency::Device {
                        gpu: g,
                        pfn: p as u64,
                    }
                }
                None => {
                    m.ram[p].store(value(p), Ordering::Release);
                    m.ram_valid[p].store(true, Ordering::Release);
                    Residency::System
                }
            };
            t.unlock(p, now).expect("seeding a page");
        }
        (t, m)
    }

    /// Forces the schedule of the rejected design's deadlock (real threads
    /// only): the first CPU fault that holds its pages and the first GPU
    /// migration that holds the range wait for each other once, then go on.
    pub fn meet_once(mut self) -> Self {
        self.meeting = Some(std::sync::Arc::new(Meeting {
            both: std::sync::Barrier::new(2),
            cpu_met: false.into(),
            gpu_met: false.into(),
        }));
        self
    }

    /// One side's arrival at the meeting, the first time only.
    fn meet(&self, cpu: bool) {
        let Some(m) = &self.meeting else { return };
        let met = if cpu { &m.cpu_met } else { &m.gpu_met };
        if !met.swap(true, core::sync::atomic::Ordering::AcqRel) {
            m.both.wait();
        }
    }

    fn frame(&self, gpu: u8, pfn: u64) -> usize {
        assert!((gpu as usize) < self.gpus && (pfn as usize) < self.pages);
        gpu as usize * self.pages + pfn as usize
    }

    fn chunk(&self) -> Chunk {
        Chunk {
            first: 0,
            count: self.pages,
        }
    }

    /// GPU `gpu` adds one to page `p`, faulting it in as its server would
    /// (collect with peers, copy, map, finalize). Returns the faults taken.
    pub fn gpu_access(&self, t: &PageTable, gpu: u8, p: usize) -> Result<u32, Stuck> {
        for faults in 0..SPIN_BOUND {
            if self.try_access(gpu, p) {
                return Ok(faults);
            }
            // The access replays right after its fault, as a GPU's does.
            self.gpu_fault(t, gpu).map_err(|_| Stuck::Gpu(p))?;
            if self.try_access(gpu, p) {
                return Ok(faults + 1);
            }
            // Another migration holds the page: the next fault waits for
            // it to end, as a CPU faulter does (rule 3).
            t.wait_unlocked(p).map_err(|_| Stuck::Gpu(p))?;
        }
        Err(Stuck::Gpu(p))
    }

    /// The access itself, if `gpu` maps `p`.
    fn try_access(&self, gpu: u8, p: usize) -> bool {
        let ptes = lock(&self.ptes[gpu as usize]);
        let Some(pfn) = ptes[p].checked_sub(1) else {
            return false;
        };
        self.frames[self.frame(gpu, pfn)].fetch_add(1, Ordering::AcqRel);
        true
    }

    /// One GPU fault on the chunk, and the mapping of what then sits on
    /// `gpu`.
    fn gpu_fault(&self, t: &PageTable, gpu: u8) -> Result<(), FaultError> {
        let chunk = self.chunk();
        let _range;
        let c = match self.design {
            Design::Rules => collect(t, self, chunk, gpu, Peers::Take)?,
            Design::PerRangeLock => {
                _range = self
                    .take_range()
                    .ok_or(FaultError::Backend(BackendError::Gpu))?;
                self.meet(false);
                self.collect_whole_range(t, gpu)?
            }
        };
        self.fill_and_finalize(t, gpu, &c)?;
        self.map_resident(t, gpu);
        Ok(())
    }

    /// [`Design::PerRangeLock`]: under the range lock, collects until the
    /// whole range is this GPU's, holding what it got while it waits; then
    /// finalizes it under the lock.
    fn collect_whole_range(&self, t: &PageTable, gpu: u8) -> Result<Collected, FaultError> {
        let chunk = self.chunk();
        let mut all = collect(t, self, chunk, gpu, Peers::Take)?;
        for _ in 0..SPIN_BOUND {
            let have = all.got.or(&all.device);
            let Some(missing) = (0..self.pages).find(|&i| !have.get(i)) else {
                return Ok(all);
            };
            self.wait_for_page(t, missing);
            let more = collect(t, self, chunk, gpu, Peers::Take)?;
            all.got = all.got.or(&more.got);
            all.zero = all.zero.or(&more.zero);
            all.peer = all.peer.or(&more.peer);
            all.device = all.device.or(&more.device);
        }
        // No progress: what it holds goes back.
        crate::migrate::abort_collect(t, chunk, &all)?;
        Err(FaultError::Backend(BackendError::Gpu))
    }

    /// Copies the collected RAM pages into this GPU's frames (a peer page's
    /// source pushes it at finalize), maps every collected page at its new
    /// frame while the pages are still locked, and finalizes them.
    ///
    /// Mapping before the unlock is what keeps racing GPUs from
    /// livelocking: a page this fault got is mapped the moment another
    /// migration can take it, so losing it again takes another fault's
    /// completed access. Mapped after the unlock, two GPUs faulting the
    /// same chunk can take every page from each other between each one's
    /// finalize and its map, forever (the race test found it).
    fn fill_and_finalize(&self, t: &PageTable, gpu: u8, c: &Collected) -> Result<(), FaultError> {
        let chunk = self.chunk();
        for (i, p) in chunk.pages() {
            if c.got.get(i) && !c.peer.get(i) {
                let v = if c.zero.get(i) {
                    0
                } else {
                    self.ram[p].load(Ordering::Acquire)
                };
                self.fill_frame(gpu, p as u64, v);
            }
        }
        {
            let mut ptes = lock(&self.ptes[gpu as usize]);
            for (i, p) in chunk.pages() {
                if c.got.get(i) {
                    ptes[p] = chunk.first as u64 + i as u64 + 1;
                }
            }
        }
        // Every push lands and every RAM page moves in this model.
        let done = finalize(t, self, chunk, c, &c.got, gpu, chunk.first as u64)?;
        assert_eq!((done.device, done.returned), (c.got, 0));
        Ok(())
    }

    fn fill_frame(&self, gpu: u8, pfn: u64, v: u64) {
        let f = self.frame(gpu, pfn);
        assert!(
            !self.held[f].swap(true, Ordering::AcqRel),
            "GPU {gpu} frame {pfn} filled while it holds a page"
        );
        self.frames[f].store(v, Ordering::Release);
    }

    /// Maps every page that sits on `gpu`, unlocked, under the GPU's own
    /// page-table lock: a migration locks the page before it unmaps it
    /// here, so a page seen unlocked here is unmapped after, never before.
    fn map_resident(&self, t: &PageTable, gpu: u8) {
        let mut ptes = lock(&self.ptes[gpu as usize]);
        for (p, pte) in ptes.iter_mut().enumerate() {
            let info = t.info(p).expect("a page of the model");
            match info.residency {
                Residency::Device { gpu: g, pfn } if g == gpu && !info.locked => *pte = pfn + 1,
                _ => {}
            }
        }
    }

    /// Rule 8 on one GPU: its mapping of `p` goes.
    fn unmap(&self, gpu: u8, p: usize) {
        lock(&self.ptes[gpu as usize])[p] = 0;
    }

    /// A CPU thread reads page `p`, faulting it back to RAM as needed.
    pub fn cpu_read(&self, t: &PageTable, p: usize) -> Result<u64, Stuck> {
        for _ in 0..SPIN_BOUND {
            {
                let _c = lock(&self.cpu[p]);
                if self.ram_valid[p].load(Ordering::Acquire) {
                    return Ok(self.ram[p].load(Ordering::Acquire));
                }
            }
            cpu_fault(t, self, p, Policy::Rules).map_err(|_| Stuck::Cpu(p))?;
        }
        Err(Stuck::Cpu(p))
    }

    /// Takes the range lock: bounded on real threads, blocking under the
    /// explorer (which reports a deadlock).
    fn take_range(&self) -> Option<MutexGuard<'_, ()>> {
        if cfg!(feature = "shuttle") {
            return Some(lock(&self.range));
        }
        for _ in 0..SPIN_BOUND {
            if let Ok(g) = self.range.try_lock() {
                return Some(g);
            }
            yield_now();
        }
        None
    }

    /// The whole-range wait for page `p`: a spin on real threads (bounded
    /// by the caller), a sleep on the page under the explorer.
    fn wait_for_page(&self, t: &PageTable, p: usize) {
        if cfg!(feature = "shuttle") {
            let _ = t.wait_unlocked(p);
        } else {
            yield_now();
        }
    }

    /// The end of a run: every page read back is `want(p)`, no page is
    /// locked, no GPU frame is held or mapped (every page is in RAM now).
    pub fn check_end(&self, t: &PageTable, want: impl Fn(usize) -> u64) {
        for p in 0..self.pages {
            assert_eq!(self.cpu_read(t, p), Ok(want(p)), "page {p}");
            let info = t.info(p).expect("a page");
            assert!(!info.locked, "page {p} left locked");
            assert_eq!(info.residency, Residency::System, "page {p}");
        }
        for g in 0..self.gpus {
            for pfn in 0..self.pages {
                assert!(
                    !self.held[self.frame(g as u8, pfn as u64)].load(Ordering::Acquire),
                    "GPU {g} frame {pfn} leaked"
                );
            }
            assert!(
                lock(&self.ptes[g]).iter().all(|&e| e == 0),
                "GPU {g} maps a page in RAM"
            );
        }
    }

    /// Whether RAM holds page `p` now.
    pub fn in_ram(&self, p: usize) -> bool {
        self.ram_valid[p].load(Ordering::Acquire)
    }

    /// What GPU `gpu`'s frame `p` holds, if it holds a page.
    pub fn frame_value(&self, gpu: u8, p: usize) -> Option<u64> {
        let f = self.frame(gpu, p as u64);
        self.held[f]
            .load(Ordering::Acquire)
            .then(|| self.frames[f].load(Ordering::Acquire))
    }
}

impl Backend for PeerModel {
    fn migrate_to_ram(
        &self,
        chunk: Chunk,
        pages: &PageMask,
        from: &[Residency],
    ) -> Result<PageMask, BackendError> {
        // The rejected design: the fault handler locks the range while it
        // holds its page.
        let _range = match self.design {
            Design::PerRangeLock => {
                self.meet(true);
                Some(self.take_range().ok_or(BackendError::Gpu)?)
            }
            Design::Rules => None,
        };
        for (i, p) in chunk.pages() {
            if !pages.get(i) {
                continue;
            }
            let Residency::Device { gpu, pfn } = from[i] else {
                panic!("page {p} moved back to RAM from {:?}", from[i]);
            };
            self.unmap(gpu, p);
            let f = self.frame(gpu, pfn);
            let _c = lock(&self.cpu[p]);
            self.ram[p].store(self.frames[f].load(Ordering::Acquire), Ordering::Release);
            self.ram_valid[p].store(true, Ordering::Release);
            assert!(
                self.held[f].swap(false, Ordering::AcqRel),
                "GPU {gpu} frame {pfn}"
            );
            self.to_ram.fetch_add(1, Ordering::AcqRel);
        }
        Ok(*pages)
    }

    fn zero_fill(&self, chunk: Chunk, pages: &PageMask) -> Result<PageMask, BackendError> {
        for (i, p) in chunk.pages() {
            if pages.get(i) {
                let _c = lock(&self.cpu[p]);
                self.ram[p].store(0, Ordering::Release);
                self.ram_valid[p].store(true, Ordering::Release);
            }
        }
        Ok(*pages)
    }

    // No CPU thread writes in this model: nothing to block.
    fn protect(&self, _: Chunk, _: &PageMask) -> Result<(), BackendError> {
        Ok(())
    }

    fn moved_to_device(&self, chunk: Chunk, pages: &PageMask) -> Result<(), BackendError> {
        for (i, p) in chunk.pages() {
            if pages.get(i) {
                let _c = lock(&self.cpu[p]);
                self.ram_valid[p].store(false, Ordering::Release);
            }
        }
        Ok(())
    }

    fn unprotect(&self, _: Chunk, _: &PageMask) -> Result<(), BackendError> {
        Ok(())
    }

    fn push_to_peer(
        &self,
        chunk: Chunk,
        pages: &PageMask,
        from: &[Residency],
        to: u8,
        first_pfn: u64,
    ) -> Result<Pushed, BackendError> {
        for (i, p) in chunk.pages() {
            if !pages.get(i) {
                continue;
            }
            let Residency::Device { gpu, pfn } = from[i] else {
                panic!("page {p} pushed from {:?}", from[i]);
            };
            assert_ne!(gpu, to, "page {p} pushed to the GPU that holds it");
            assert!(!self.in_ram(p), "page {p} is in RAM and VRAM at once");
            // Rule 8: the source unmaps before its copy engine reads.
            self.unmap(gpu, p);
            let v = self.frames[self.frame(gpu, pfn)].load(Ordering::Acquire);
            self.fill_frame(to, first_pfn + i as u64, v);
            self.pushes.fetch_add(1, Ordering::AcqRel);
        }
        Ok(Pushed {
            landed: *pages,
            unanswered: PageMask::EMPTY,
        })
    }

    fn free_peer_frames(&self, chunk: Chunk, pages: &PageMask, from: &[Residency]) {
        for (i, p) in chunk.pages() {
            if let (true, Residency::Device { gpu, pfn }) = (pages.get(i), from[i]) {
                let f = self.frame(gpu, pfn);
                assert!(
                    self.held[f].swap(false, Ordering::AcqRel),
                    "page {p}'s source frame"
                );
            }
        }
    }
}
