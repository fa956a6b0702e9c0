//! The simulated machine: memory (VRAM, the object's system pages, the
//! pager's staging buffer), the GPU's page tables and TLB, the CPU's view
//! mappings, and the checks made at every access.
//!
//! Device addresses: VRAM frame `f` is at `f * PAGE`; object page `p` at
//! [`SYS_BASE`]` + p * PAGE`; staging page `i` at [`STAGING_BASE`]` + i *
//! PAGE`; a zero page at [`ZERO_BASE`]. Each page holds one `u64`: the
//! data a test tracks.
//!
//! The GPU reaches memory only through its page tables, under the access
//! gate that a TLB invalidation takes for writing (accesses in flight drain
//! before the invalidation returns, as in `hw`'s model). The CPU reaches an
//! object page through a view: the page must be present (in the object's
//! page cache) and, for a write, not write-protected in that view; else it
//! faults into the pager.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

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

pub struct Machine {
    /// The victim's object pages (system pages `0..pages`).
    pub pages: usize,
    /// System pages after them, for other clients' objects (`pages..pages + spare`).
    pub spare: usize,
    pub vram: Vec<AtomicU64>,
    pub ram: Vec<AtomicU64>,
    staging: Vec<AtomicU64>,
    pub bo_pool: Vec<AtomicU64>,
    tables: Mutex<HashMap<u32, Arc<Mutex<PteMap>>>>,
    /// GPU accesses hold it for reading; a TLB invalidation for writing.
    gate: RwLock<()>,
    /// Orders PTE writes and invalidation acknowledgements.
    clock: AtomicU64,
    /// Per object page: the clock of its last acknowledged invalidation.
    pub last_ack: Vec<AtomicU64>,
    pub mmu: Mutex<Mmu>,
    /// A copy fails one time in this many (0: never): the copy engine's
    /// error, as `xe-model --fail-copy-every` injects.
    pub fail_copy_one_in: u32,
    /// Which driver the device serves: raised by [`Machine::reset`] when
    /// the GPU server dies, as xe-model's driver epoch (`hw`).
    driver_epoch: AtomicU32,
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
        let cells = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect::<Vec<_>>();
        let all = pages + spare;
        Self {
            pages,
            spare,
            vram: cells(VRAM_PAGES as usize),
            ram: cells(all),
            staging: cells(STAGING_SLOTS * 512),
            bo_pool: cells(BO_POOL_PAGES as usize),
            tables: Mutex::new(HashMap::new()),
            gate: RwLock::new(()),
            clock: AtomicU64::new(1),
            last_ack: cells(all),
            mmu: Mutex::new(Mmu {
                present: vec![false; all],
                wp: vec![vec![false; all]],
                poisoned: Default::default(),
            }),
            fail_copy_one_in,
            driver_epoch: AtomicU32::new(1),
        }
    }

    /// The driver the device serves now.
    pub fn driver_epoch(&self) -> u32 {
        self.driver_epoch.load(Ordering::Acquire)
    }

    /// The device reset when its driver died (issue 14): from now on it
    /// serves epoch `n + 1` only. The lost driver's page tables are gone
    /// (its GPU accesses fault), its TLB entries dropped, and its copies
    /// stop at the next page ([`Machine::copy`]); VRAM keeps its data.
    pub fn reset(&self) -> u32 {
        let epoch = self.driver_epoch.fetch_add(1, Ordering::AcqRel) + 1;
        self.tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.invalidate_tlb();
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

    /// The cell at device address `addr`, or `None` for the zero page.
    pub fn cell(&self, addr: u64) -> Option<&AtomicU64> {
        let cell = match addr {
            a if a < VRAM_PAGES * PAGE => &self.vram[(a / PAGE) as usize],
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

    /// The copy engine, for the driver of `epoch`: page by page, each a
    /// scheduling point; fails now and then when asked to (before copying
    /// anything, like a copy whose error status comes back). A copy of a
    /// driver the device was reset from writes nothing more.
    pub fn copy(&self, epoch: u32, copies: &[(u64, u64, u64)]) -> bool {
        if self.fail_copy_one_in > 0 && thread_rng().gen_range(0..self.fail_copy_one_in) == 0 {
            return false;
        }
        for &(src, dst, len) in copies {
            for off in (0..len).step_by(PAGE as usize) {
                let v = self
                    .cell(src + off)
                    .map_or(0, |c| c.load(Ordering::Acquire));
                shuttle::thread::yield_now();
                if self.driver_epoch() != epoch {
                    return false;
                }
                self.cell(dst + off)
                    .expect("copies never target the zero page")
                    .store(v, Ordering::Release);
            }
        }
        true
    }

    pub fn new_tables(&self, asid: u32) -> SimTables {
        let t = Arc::new(Mutex::new(HashMap::new()));
        self.tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(asid, t.clone());
        SimTables(t)
    }

    pub fn drop_tables(&self, asid: u32) {
        self.tables
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

    /// A TLB invalidation: returns once every access through an old entry
    /// has drained.
    pub fn invalidate_tlb(&self) {
        let _drained = self.gate.write().unwrap_or_else(|e| e.into_inner());
    }

    /// An invalidation of object pages `[first, first + count)` sent at
    /// clock `sent` was acknowledged: no GPU mapping made before `sent` may
    /// exist for them any more. (Mappings made since were made after the
    /// GPU server's unmap, or were unmapped by it: a later fault may map a
    /// page of the range again, within the sequence check.)
    pub fn note_invalidation_acked(&self, first: usize, count: usize, sent: u64) {
        for p in first..(first + count).min(self.pages + self.spare) {
            self.last_ack[p].fetch_max(sent, Ordering::AcqRel);
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
        let _in_flight = self.gate.read().unwrap_or_else(|e| e.into_inner());
        let tables = self
            .tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&asid)
            .cloned();
        let Some(tables) = tables else {
            return GpuAccess::Fault;
        };
        let Some(pte) = tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(va & !(PAGE - 1)))
            .copied()
        else {
            return GpuAccess::Fault;
        };
        if add > 0 && !pte.writable {
            return GpuAccess::Fault; // a write access violation
        }
        let acked = self.last_ack[page].load(Ordering::Acquire);
        assert!(pte.made_at > acked, "rule 8: the GPU used a mapping of page {page} made (t={}) before its invalidation was acknowledged (t={acked})", pte.made_at);
        let (locked, in_vram) = state();
        let cell = match pte.target {
            Target::Device => {
                let frame = pte.addr / PAGE;
                assert_eq!(in_vram, Some(frame), "rule 8: the GPU reached VRAM frame {frame} for page {page}, which is not there (pager: {in_vram:?}, locked {locked})");
                assert!(
                    holds(frame),
                    "rule 6: the GPU reached page {page} in frame {frame}, whose block was freed"
                );
                &self.vram[frame as usize]
            }
            Target::System => {
                assert_eq!(
                    in_vram, None,
                    "the GPU used a system-memory mapping of page {page}, which lives in VRAM"
                );
                assert_eq!(
                    pte.addr,
                    SYS_BASE + page as u64 * PAGE,
                    "a system PTE for page {page} points elsewhere"
                );
                &self.ram[page]
            }
        };
        GpuAccess::Done(cell.fetch_add(add, Ordering::AcqRel) + add)
    }

    /// A job of `asid` adds `add` to the buffer-object word at GPU address
    /// `va`, wherever its PTE points (VRAM or the SRAM pool); `None` when
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
        let _in_flight = self.gate.read().unwrap_or_else(|e| e.into_inner());
        let tables = self
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

    /// Every PTE of `asid` (the end-of-run check).
    pub fn ptes(&self, asid: u32) -> Vec<(u64, Pte)> {
        let tables = self
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
