//! The simulated machine: memory (each GPU's VRAM, the object's system
//! pages, the pager's staging buffer), each GPU's page tables and TLB, the
//! CPU's view mappings, and the checks made at every access.
//!
//! Device addresses, as each GPU sees them: its own VRAM frame `f` is at
//! `f * PAGE`; object page `p` at [`SYS_BASE`]` + p * PAGE`; staging page
//! `i` at [`STAGING_BASE`]` + i * PAGE`; a zero page at [`ZERO_BASE`]. Each
//! page holds one `u64`: the data a test tracks.
//!
//! **Several GPUs** (issue 17): each GPU is a [`Device`] of its own (VRAM,
//! page tables by ASID, TLB, driver epoch). With more than one, each has a
//! peer window on every other's VRAM, as xe-model's `--peer-vram` maps
//! them: GPU `h`'s frame `f` at `hw::xe::layout::peer_address(h, f *
//! PAGE)`. A copy through a window goes VRAM to VRAM in one step, and the
//! machine counts the pages each kind of copy moves ([`Copies`]).
//!
//! The GPU reaches memory only through its page tables, under the access
//! gate that a TLB invalidation takes for writing (accesses in flight drain
//! before the invalidation returns, as in `hw`'s model). The CPU reaches an
//! object page through a view: the page must be present (in the object's
//! page cache) and, for a write, not write-protected in that view; else it
//! faults into the pager.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use hw::xe::layout::{peer_address, PEER_BASE, PEER_WINDOW_BYTES};
use hw::xe::pte::{PageSize, Target};
use shuttle::rand::{thread_rng, Rng};
use shuttle::sync::{Arc, Mutex, RwLock};

pub const PAGE: u64 = 4096;
/// VRAM frames (the allocator's smallest size: one 2 MiB block).
pub const VRAM_PAGES: u64 = 512;
pub const SYS_BASE: u64 = 1 << 40;
pub const STAGING_BASE: u64 = 2 << 40;
pub const ZERO_BASE: u64 = 3 << 40;
/// The BO world's SRAM pool (evicted buffer objects' homes).
pub const BO_POOL_BASE: u64 = 4 << 40;
/// Its pages: one 2 MiB block, the pool allocator's unit.
pub const BO_POOL_PAGES: u64 = 512;
pub const STAGING_SLOTS: usize = 2;

/// One GPU page-table entry (4 KiB granularity here).
#[derive(Debug, Clone, Copy)]
pub struct Pte {
    pub addr: u64,
    pub target: Target,
    /// The machine clock when it was written (rule 8's check).
    pub made_at: u64,
    /// A write through it lands; else the access faults.
    pub writable: bool,
}

pub type PteMap = HashMap<u64, Pte>;

/// A VM's page tables as the GPU core holds them.
pub struct SimTables(pub Arc<Mutex<PteMap>>);

/// The CPU side of the object: page cache presence, and per view the
/// write protection the pager set.
pub struct Mmu {
    pub present: Vec<bool>,
    /// `wp[view][page]`, one vector per view there ever was; a view that
    /// moved away has an empty one.
    pub wp: Vec<Vec<bool>>,
    /// (view, page) addresses the pager poisoned (`UFFDIO_POISON`): an
    /// access there ends in `SIGBUS`.
    pub poisoned: std::collections::HashSet<(usize, usize)>,
}

/// One GPU: its VRAM, page tables, TLB and driver epoch.
pub struct Device {
    pub vram: Vec<AtomicU64>,
    tables: Mutex<HashMap<u32, Arc<Mutex<PteMap>>>>,
    /// Its GPU accesses hold it for reading; its TLB invalidation for
    /// writing.
    gate: RwLock<()>,
    /// Per object page: the clock of the last invalidation this GPU
    /// acknowledged.
    last_ack: Vec<AtomicU64>,
    /// Which driver the device serves: raised by [`Machine::reset`] when
    /// its GPU server dies, as xe-model's driver epoch (`hw`).
    driver_epoch: AtomicU32,
}

impl Device {
    fn new(object_pages: usize) -> Self {
        Self {
            vram: cells(VRAM_PAGES as usize),
            tables: Mutex::new(HashMap::new()),
            gate: RwLock::new(()),
            last_ack: cells(object_pages),
            driver_epoch: AtomicU32::new(1),
        }
    }
}

/// Pages the copy engines moved, by kind (several GPUs: a page that moves
/// between GPUs must go VRAM to VRAM, never through RAM).
#[derive(Default)]
pub struct Copies {
    /// From one GPU's VRAM straight into another's, through a peer window.
    pub peer: AtomicU64,
    /// From VRAM into RAM or staging.
    pub out_of_vram: AtomicU64,
    /// From RAM, staging or the zero page into VRAM.
    pub into_vram: AtomicU64,
}

/// What a device address names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// GPU `.0`'s VRAM frame `.1` (its own, or a peer's through a window).
    Vram(u8, u64),
    /// System memory: object pages, staging, the BO pool.
    Ram,
    /// The zero page.
    Zero,
}

fn cells(n: usize) -> Vec<AtomicU64> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

pub struct Machine {
    /// The victim's object pages (system pages `0..pages`).
    pub pages: usize,
    /// System pages after them, for other clients' objects (`pages..pages + spare`).
    pub spare: usize,
    /// The GPUs, by GPU id (GPU 0 first).
    devices: Vec<Device>,
    pub ram: Vec<AtomicU64>,
    staging: Vec<AtomicU64>,
    pub bo_pool: Vec<AtomicU64>,
    /// Orders PTE writes and invalidation acknowledgements.
    clock: AtomicU64,
    pub mmu: Mutex<Mmu>,
    /// A copy fails one time in this many (0: never): the copy engine's
    /// error, as `xe-model --fail-copy-every` injects.
    pub fail_copy_one_in: u32,
    /// What the copy engines moved.
    pub copies: Copies,
    /// The peer windows drop what is copied through them, the copy still
    /// reported done (a broken push: the negative check of several GPUs).
    pub drop_peer_copies: bool,
}

/// Where a GPU access landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reached {
    /// GPU `.0`'s VRAM (the accessing GPU's own, or a peer's in place).
    Vram(u8),
    Ram,
}

/// What a GPU access found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuAccess {
    /// Done; the value after the access.
    Done(u64),
    /// No PTE: the hardware thread raises a fault.
    Fault,
}

impl Machine {
    pub fn new(pages: usize, fail_copy_one_in: u32) -> Self {
        Self::with_spare(pages, 0, fail_copy_one_in)
    }

    /// A machine whose system memory has `spare` pages more than the
    /// victim's object needs (for other clients' objects).
    pub fn with_spare(pages: usize, spare: usize, fail_copy_one_in: u32) -> Self {
        Self::with_gpus(pages, spare, fail_copy_one_in, 1)
    }

    /// A machine with `gpus` GPUs (ids `0..gpus`), each with a peer window
    /// on every other's VRAM.
    pub fn with_gpus(pages: usize, spare: usize, fail_copy_one_in: u32, gpus: u8) -> Self {
        let all = pages + spare;
        Self {
            pages,
            spare,
            devices: (0..gpus.max(1)).map(|_| Device::new(all)).collect(),
            ram: cells(all),
            staging: cells(STAGING_SLOTS * 512),
            bo_pool: cells(BO_POOL_PAGES as usize),
            clock: AtomicU64::new(1),
            mmu: Mutex::new(Mmu {
                present: vec![false; all],
                wp: vec![vec![false; all]],
                poisoned: Default::default(),
            }),
            fail_copy_one_in,
            copies: Copies::default(),
            drop_peer_copies: false,
        }
    }

    /// How many GPUs it has.
    pub fn gpus(&self) -> u8 {
        self.devices.len() as u8
    }

    fn device(&self, gpu: u8) -> &Device {
        self.devices
            .get(gpu as usize)
            .unwrap_or_else(|| panic!("the machine has no GPU {gpu}"))
    }

    /// GPU `gpu`'s VRAM, by frame.
    pub fn vram(&self, gpu: u8) -> &[AtomicU64] {
        &self.device(gpu).vram
    }

    /// The clock of the last invalidation of object page `page` that GPU
    /// `gpu` acknowledged.
    pub fn last_ack(&self, gpu: u8, page: usize) -> u64 {
        self.device(gpu).last_ack[page].load(Ordering::Acquire)
    }

    /// The device address of GPU `gpu`'s window on GPU `peer`'s VRAM, if
    /// it has one (every other GPU of the machine).
    pub fn peer_window(&self, gpu: u8, peer: u8) -> Option<u64> {
        (gpu != peer && peer < self.gpus()).then(|| peer_address(peer, 0))
    }

    /// The driver GPU 0's device serves now.
    pub fn driver_epoch(&self) -> u32 {
        self.driver_epoch_of(0)
    }

    /// The driver GPU `gpu`'s device serves now.
    pub fn driver_epoch_of(&self, gpu: u8) -> u32 {
        self.device(gpu).driver_epoch.load(Ordering::Acquire)
    }

    /// GPU 0's device reset when its driver died (issue 14): from now on it
    /// serves epoch `n + 1` only. The lost driver's page tables are gone
    /// (its GPU accesses fault), its TLB entries dropped, and its copies
    /// stop at the next page ([`Machine::copy`]); VRAM keeps its data.
    pub fn reset(&self) -> u32 {
        let d = self.device(0);
        let epoch = d.driver_epoch.fetch_add(1, Ordering::AcqRel) + 1;
        d.tables.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.invalidate_tlb(0);
        epoch
    }

    /// The machine clock now (and on).
    /// The clock without advancing it.
    pub fn now(&self) -> u64 {
        self.clock.load(Ordering::Acquire)
    }

    pub fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::AcqRel)
    }

    /// What device address `addr` names for GPU `gpu`.
    pub fn place(&self, gpu: u8, addr: u64) -> Place {
        match addr {
            a if a < VRAM_PAGES * PAGE => Place::Vram(gpu, a / PAGE),
            a if a >= PEER_BASE => {
                let peer = (a - PEER_BASE) / PEER_WINDOW_BYTES;
                let offset = (a - PEER_BASE) % PEER_WINDOW_BYTES;
                let open = u8::try_from(peer)
                    .ok()
                    .filter(|&p| self.peer_window(gpu, p).is_some());
                match open {
                    Some(p) if offset < VRAM_PAGES * PAGE => Place::Vram(p, offset / PAGE),
                    _ => panic!("GPU {gpu} touched {a:#x}, in no peer window it has"),
                }
            }
            a if a == ZERO_BASE || (ZERO_BASE..ZERO_BASE + (2 << 20)).contains(&a) => Place::Zero,
            _ => Place::Ram,
        }
    }

    /// The cell at GPU 0's device address `addr`, or `None` for the zero
    /// page.
    pub fn cell(&self, addr: u64) -> Option<&AtomicU64> {
        self.cell_on(0, addr)
    }

    /// The cell at GPU `gpu`'s device address `addr`, or `None` for the
    /// zero page.
    pub fn cell_on(&self, gpu: u8, addr: u64) -> Option<&AtomicU64> {
        if let Place::Vram(g, f) = self.place(gpu, addr) {
            return Some(&self.device(g).vram[f as usize]);
        }
        let cell = match addr {
            a if (SYS_BASE..SYS_BASE + (self.pages + self.spare) as u64 * PAGE).contains(&a) => {
                &self.ram[((a - SYS_BASE) / PAGE) as usize]
            }
            a if (STAGING_BASE..STAGING_BASE + self.staging.len() as u64 * PAGE).contains(&a) => {
                &self.staging[((a - STAGING_BASE) / PAGE) as usize]
            }
            a if (BO_POOL_BASE..BO_POOL_BASE + BO_POOL_PAGES * PAGE).contains(&a) => {
                &self.bo_pool[((a - BO_POOL_BASE) / PAGE) as usize]
            }
            a if a == ZERO_BASE || (ZERO_BASE..ZERO_BASE + (2 << 20)).contains(&a) => return None,
            a => panic!("the device touched address {a:#x}, which is no memory"),
        };
        Some(cell)
    }

    pub fn staging_cell(&self, slot: usize, i: usize) -> &AtomicU64 {
        &self.staging[slot * 512 + i]
    }

    /// GPU `gpu`'s copy engine, for the driver of `epoch`: page by page,
    /// each a scheduling point; fails now and then when asked to (before
    /// copying anything, like a copy whose error status comes back). A
    /// copy of a driver the device was reset from writes nothing more.
    pub fn copy(&self, gpu: u8, epoch: u32, copies: &[(u64, u64, u64)]) -> bool {
        if self.fail_copy_one_in > 0 && thread_rng().gen_range(0..self.fail_copy_one_in) == 0 {
            return false;
        }
        for &(src, dst, len) in copies {
            for off in (0..len).step_by(PAGE as usize) {
                let v = self
                    .cell_on(gpu, src + off)
                    .map_or(0, |c| c.load(Ordering::Acquire));
                shuttle::thread::yield_now();
                if self.driver_epoch_of(gpu) != epoch {
                    return false;
                }
                if self.count_copy(gpu, src + off, dst + off) && self.drop_peer_copies {
                    continue;
                }
                self.cell_on(gpu, dst + off)
                    .expect("copies never target the zero page")
                    .store(v, Ordering::Release);
            }
        }
        true
    }

    /// Counts one page copied by GPU `gpu`; whether it is a push. A copy
    /// into a peer's VRAM is a push: it comes straight from the pusher's
    /// own VRAM.
    fn count_copy(&self, gpu: u8, src: u64, dst: u64) -> bool {
        let (kind, push) = match (self.place(gpu, src), self.place(gpu, dst)) {
            (Place::Vram(s, _), Place::Vram(d, _)) if s != d => {
                assert!(
                    s == gpu && d != gpu,
                    "GPU {gpu} copied VRAM of GPU {s} into GPU {d}'s: not a push"
                );
                (&self.copies.peer, true)
            }
            (Place::Vram(..), Place::Vram(..)) => return false, // within one GPU
            (_, Place::Vram(d, _)) => {
                assert_eq!(d, gpu, "GPU {gpu} wrote a peer's VRAM from RAM");
                (&self.copies.into_vram, false)
            }
            (Place::Vram(..), _) => (&self.copies.out_of_vram, false),
            _ => return false,
        };
        kind.fetch_add(1, Ordering::AcqRel);
        push
    }

    pub fn new_tables(&self, gpu: u8, asid: u32) -> SimTables {
        let t = Arc::new(Mutex::new(HashMap::new()));
        self.device(gpu)
            .tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(asid, t.clone());
        SimTables(t)
    }

    pub fn drop_tables(&self, gpu: u8, asid: u32) {
        self.device(gpu)
            .tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&asid);
    }

    pub fn map(&self, t: &SimTables, va: u64, addr: u64, size: PageSize, target: Target, w: bool) {
        let pages = if size == PageSize::Size2M {
            512
        } else if size == PageSize::Size64K {
            16
        } else {
            1
        };
        let made_at = self.tick();
        let mut ptes = t.0.lock().unwrap_or_else(|e| e.into_inner());
        for i in 0..pages {
            ptes.insert(
                va + i * PAGE,
                Pte {
                    addr: addr + i * PAGE,
                    target,
                    made_at,
                    writable: w,
                },
            );
        }
    }

    /// Clears the entries of `[va, va + len)`; whether one was present.
    pub fn unmap(&self, t: &SimTables, va: u64, len: u64) -> bool {
        let mut ptes = t.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut cleared = false;
        for off in (0..len).step_by(PAGE as usize) {
            cleared |= ptes.remove(&(va + off)).is_some();
        }
        cleared
    }

    /// GPU `gpu`'s TLB invalidation: returns once every access through an
    /// old entry has drained.
    pub fn invalidate_tlb(&self, gpu: u8) {
        let _drained = self
            .device(gpu)
            .gate
            .write()
            .unwrap_or_else(|e| e.into_inner());
    }

    /// GPU `gpu` acknowledged an invalidation of object pages `[first,
    /// first + count)` sent at clock `sent`: no mapping of them it made
    /// before `sent` may exist any more. (Mappings made since were made
    /// after the GPU server's unmap, or were unmapped by it: a later fault
    /// may map a page of the range again, within the sequence check.)
    pub fn note_invalidation_acked(&self, gpu: u8, first: usize, count: usize, sent: u64) {
        let end = (first + count).min(self.pages + self.spare);
        let acks = self
            .device(gpu)
            .last_ack
            .get(first..end)
            .unwrap_or_default();
        for ack in acks {
            ack.fetch_max(sent, Ordering::AcqRel);
        }
    }

    /// A GPU hardware thread of `asid` adds `add` to object page `page`
    /// at GPU address `va`. `state` tells where the pager says the page is
    /// (`Some(frame)`: in VRAM at that frame; `None`: in system memory) and
    /// `holds(frame)` whether that frame's block is still allocated.
    ///
    /// The checks (rule 8 and rule 6 at the moment of use): a PTE used must
    /// be younger than the page's last acknowledged invalidation; a VRAM
    /// PTE must point at the frame that holds the page, in a block that is
    /// still allocated; a system PTE must not be used for a page in VRAM.
    pub fn gpu_access(
        &self,
        asid: u32,
        va: u64,
        page: usize,
        add: u64,
        state: impl Fn() -> (bool, Option<u64>),
        holds: impl Fn(u64) -> bool,
    ) -> GpuAccess {
        let state = || {
            let (locked, frame) = state();
            (locked, frame.map(|f| (0, f)))
        };
        match self.gpu_access_on(0, asid, va, page, add, state, |_, f| holds(f)) {
            Some((v, _)) => GpuAccess::Done(v),
            None => GpuAccess::Fault,
        }
    }

    /// [`Self::gpu_access`] by a hardware thread of GPU `gpu`: `state`
    /// tells the page's (GPU, frame) if in VRAM, `holds(gpu, frame)`
    /// whether that GPU's block is still allocated. Returns the value
    /// after the access and where it landed; `None`: it faulted.
    #[allow(clippy::too_many_arguments)]
    pub fn gpu_access_on(
        &self,
        gpu: u8,
        asid: u32,
        va: u64,
        page: usize,
        add: u64,
        state: impl Fn() -> (bool, Option<(u8, u64)>),
        holds: impl Fn(u8, u64) -> bool,
    ) -> Option<(u64, Reached)> {
        let d = self.device(gpu);
        let _in_flight = d.gate.read().unwrap_or_else(|e| e.into_inner());
        let tables = d
            .tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&asid)
            .cloned()?;
        let pte = tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(va & !(PAGE - 1)))
            .copied()?;
        if add > 0 && !pte.writable {
            return None; // a write access violation
        }
        let acked = d.last_ack[page].load(Ordering::Acquire);
        assert!(pte.made_at > acked, "rule 8: the GPU used a mapping of page {page} made (t={}) before its invalidation was acknowledged (t={acked})", pte.made_at);
        let (locked, in_vram) = state();
        let (cell, reached) = match (pte.target, self.pte_place(gpu, &pte)) {
            (_, Some((g, frame))) => {
                assert_eq!(
                    in_vram,
                    Some((g, frame)),
                    "rule 8: the GPU reached VRAM frame {frame} of GPU {g} for page {page}, \
                     which is not there (pager: {in_vram:?}, locked {locked})"
                );
                assert!(
                    holds(g, frame),
                    "rule 6: the GPU reached page {page} in frame {frame} of GPU {g}, whose \
                     block was freed"
                );
                (&self.device(g).vram[frame as usize], Reached::Vram(g))
            }
            (Target::Device, None) => panic!("a device PTE for page {page} points at RAM"),
            (Target::System, None) => {
                assert_eq!(
                    in_vram, None,
                    "the GPU used a system-memory mapping of page {page}, which lives in VRAM"
                );
                assert_eq!(
                    pte.addr,
                    SYS_BASE + page as u64 * PAGE,
                    "a system PTE for page {page} points elsewhere"
                );
                (&self.ram[page], Reached::Ram)
            }
        };
        Some((cell.fetch_add(add, Ordering::AcqRel) + add, reached))
    }

    /// The VRAM frame (GPU, frame) a PTE of GPU `gpu` points at: its own
    /// VRAM for a device PTE, a peer's through a window for a system PTE
    /// (a page mapped in place); `None` for RAM.
    pub fn pte_place(&self, gpu: u8, pte: &Pte) -> Option<(u8, u64)> {
        match (pte.target, pte.addr) {
            (Target::Device, a) => Some((gpu, a / PAGE)),
            (Target::System, a) if a >= PEER_BASE => match self.place(gpu, a) {
                Place::Vram(g, f) => Some((g, f)),
                _ => None,
            },
            _ => None,
        }
    }

    /// A job of `asid` on GPU 0 adds `add` to the buffer-object word at GPU
    /// address `va`, wherever its PTE points (VRAM or the SRAM pool); `None` when
    /// nothing is mapped there (the job faults: its VM is gone). A VRAM
    /// PTE must point into an allocated block (`holds`), or the BO world
    /// let a job reach VRAM it gave back.
    pub fn bo_access(
        &self,
        asid: u32,
        va: u64,
        add: u64,
        holds: impl Fn(u64) -> bool,
    ) -> Option<u64> {
        let d = self.device(0);
        let _in_flight = d.gate.read().unwrap_or_else(|e| e.into_inner());
        let tables = d
            .tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&asid)
            .cloned()?;
        let pte = tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(va & !(PAGE - 1)))
            .copied()?;
        if pte.target == Target::Device {
            let frame = pte.addr / PAGE;
            assert!(
                holds(frame),
                "a job reached VRAM frame {frame}, whose block was freed"
            );
        }
        let cell = self
            .cell(pte.addr)
            .expect("buffer objects never map the zero page");
        Some(cell.fetch_add(add, Ordering::AcqRel) + add)
    }

    /// Every PTE of `asid` on GPU 0 (the end-of-run check).
    pub fn ptes(&self, asid: u32) -> Vec<(u64, Pte)> {
        self.ptes_on(0, asid)
    }

    /// Every PTE of `asid` on GPU `gpu`.
    pub fn ptes_on(&self, gpu: u8, asid: u32) -> Vec<(u64, Pte)> {
        let tables = self
            .device(gpu)
            .tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&asid)
            .cloned();
        tables
            .map(|t| {
                t.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .map(|(va, p)| (*va, *p))
                    .collect()
            })
            .unwrap_or_default()
    }
}
