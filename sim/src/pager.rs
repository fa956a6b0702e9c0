//! The pager in the simulation: its core (`pager::state`, `pager::migrate`,
//! built on shuttle through its sync shim) unchanged, with a
//! [`Backend`] whose side effects act on the simulated machine and call
//! the GPU server's core over the simulated network.
//!
//! What is simulated here rather than run: the host runtime's glue (the
//! handlers' bookkeeping of collects awaiting their finalize, the staging
//! slots) and the CPU's view mappings (`machine.rs`). View changes (fork,
//! mremap) are applied to the pager's view records and the CPU mappings in
//! one step; the host's guard between the kernel delivering a view change
//! and the pager applying it (`pager/src/host/space.rs`) is not modelled.

use std::sync::OnceLock;

use ipc_protocol::interfaces::pager_migrate as m;
use ipc_protocol::types::{PageMask, Seq};
use pager::migrate::{
    collect, cpu_fault, evict, finalize, Backend, BackendError, Chunk, Collected, Policy,
};
use pager::state::{PageTable, Residency};
use pager::sync::{AtomicU64, Ordering};
use shuttle::sync::{Arc, Condvar, Mutex};

use crate::machine::{Machine, PAGE, STAGING_SLOTS};
use crate::net::Endpoint;
use crate::GpuCore;

pub const OBJECT: u32 = 1;
const GPU: u8 = 0;
/// A CPU fault that fails this many times in a row made no progress: the
/// run fails (every fault completes, within a bound).
pub const FAULT_RETRIES: u32 = 50;

pub struct SimPager {
    pub table: PageTable,
    pub machine: Arc<Machine>,
    pub policy: Policy,
    /// Rule 8 broken on purpose (the checker's negative test): pages go
    /// back to RAM without the GPU being told to unmap them first.
    pub skip_invalidate: bool,
    seq: AtomicU64,
    collections: Mutex<Vec<(Chunk, Collected)>>,
    free_slots: Mutex<Vec<usize>>,
    slot_free: Condvar,
    pub gpu: OnceLock<Arc<GpuCore>>,
    pub notify: OnceLock<Arc<Endpoint>>,
}

pub struct SimBackend<'a> {
    pager: &'a SimPager,
    /// The view that faulted.
    view: Option<usize>,
}

impl SimPager {
    pub fn new(machine: Arc<Machine>, policy: Policy, skip_invalidate: bool) -> Self {
        Self {
            table: PageTable::new(machine.pages),
            machine,
            policy,
            skip_invalidate,
            seq: AtomicU64::new(0),
            collections: Mutex::new(Vec::new()),
            free_slots: Mutex::new((0..STAGING_SLOTS).collect()),
            slot_free: Condvar::new(),
            gpu: OnceLock::new(),
            notify: OnceLock::new(),
        }
    }

    fn gpu(&self) -> Result<(Arc<GpuCore>, Arc<Endpoint>), BackendError> {
        match (self.gpu.get(), self.notify.get()) {
            (Some(g), Some(n)) if !n.is_dead() => Ok((g.clone(), n.clone())),
            _ => Err(BackendError::Gpu),
        }
    }

    /// Puts `value` in page `p`, in RAM (state SYSTEM, present).
    pub fn seed_ram(&self, p: usize, value: u64) {
        let r = self.table.try_lock(p).expect("page in range");
        assert!(r.is_some(), "seeding a page that is busy");
        self.machine.ram[p].store(value, std::sync::atomic::Ordering::Release);
        self.machine
            .mmu
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .present[p] = true;
        self.table
            .unlock(p, Residency::System)
            .expect("page in range");
    }

    /// A CPU thread faulted on `page` through `view` (not present).
    pub fn cpu_fault(&self, view: usize, page: usize) {
        let backend = SimBackend {
            pager: self,
            view: Some(view),
        };
        for _ in 0..FAULT_RETRIES {
            if cpu_fault(&self.table, &backend, page, self.policy).is_ok() {
                return;
            }
            shuttle::thread::yield_now();
        }
        panic!("a CPU fault on page {page} made no progress in {FAULT_RETRIES} tries");
    }

    /// A writer met write protection: once no migration holds the page,
    /// the protection is cleared under the page lock (as the host's
    /// `clear_stale_protection`).
    pub fn wp_fault(&self, view: usize, page: usize) {
        loop {
            self.table.wait_unlocked(page).expect("page in range");
            if let Some(state) = self.table.try_lock(page).expect("page in range") {
                if state == Residency::System {
                    if let Some(wp) = self
                        .machine
                        .mmu
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .wp
                        .get_mut(view)
                        .and_then(|w| w.get_mut(page))
                    {
                        *wp = false;
                    }
                }
                self.table.unlock(page, state).expect("page in range");
                return;
            }
            shuttle::thread::yield_now();
        }
    }

    /// `PagerMigrate::Collect`, as the host handler serves it.
    pub fn collect(&self, c: m::Collect) -> Option<m::Collected> {
        let first = c.first_page as usize;
        if c.object.get() != OBJECT || first + c.count.get() as usize > self.table.len() {
            return None;
        }
        let chunk = Chunk {
            first,
            count: c.count.get() as usize,
        };
        let seq = self.seq.load(Ordering::Acquire);
        let got = collect(
            &self.table,
            &SimBackend {
                pager: self,
                view: None,
            },
            chunk,
            c.gpu.get(),
        )
        .ok()?;
        if !got.got.is_empty() {
            self.collections
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((chunk, got));
        }
        Some(m::Collected {
            seq: Seq::raw(seq),
            got: got.got,
            zero: got.zero,
            device: got.device,
        })
    }

    /// `PagerMigrate::Finalize`, matching the collect it names.
    pub fn finalize(&self, f: m::Finalize) -> bool {
        if f.got.is_empty() {
            return true;
        }
        let found = {
            let mut cols = self.collections.lock().unwrap_or_else(|e| e.into_inner());
            let at = cols.iter().position(|(ch, c)| {
                ch.first == f.first_page as usize
                    && ch.count == f.count.get() as usize
                    && c.got == f.got
            });
            at.map(|i| cols.swap_remove(i))
        };
        let Some((chunk, c)) = found else {
            return false;
        };
        finalize(
            &self.table,
            &SimBackend {
                pager: self,
                view: None,
            },
            chunk,
            &c,
            &f.migrated.and(&c.got),
            f.gpu.get(),
            f.vram_first_pfn,
        )
        .is_ok()
    }

    /// `PagerReclaim::Evict`: up to `bytes` of VRAM pages back to RAM.
    pub fn evict(&self, bytes: u64) -> u64 {
        let want = bytes.div_ceil(PAGE);
        let mut moved = 0u64;
        for first in (0..self.table.len()).step_by(pager::migrate::CHUNK_PAGES) {
            if moved >= want {
                break;
            }
            let chunk = Chunk::around(first, self.table.len());
            moved += evict(
                &self.table,
                &SimBackend {
                    pager: self,
                    view: None,
                },
                chunk,
                GPU,
            )
            .unwrap_or(0) as u64;
        }
        moved * PAGE
    }

    /// A fork: a new view whose mappings (and their write protection) are
    /// copies of `parent`'s. Returns its number.
    pub fn fork_view(&self, parent: usize) -> usize {
        let mut mmu = self.machine.mmu.lock().unwrap_or_else(|e| e.into_inner());
        let wp = mmu.wp[parent].clone();
        mmu.wp.push(wp);
        mmu.wp.len() - 1
    }

    /// A plain mremap of all of `old`: its mappings (write protection
    /// included) move to a new view and `old` is gone. Returns the new one.
    pub fn move_view(&self, old: usize) -> usize {
        let mut mmu = self.machine.mmu.lock().unwrap_or_else(|e| e.into_inner());
        let wp = std::mem::take(&mut mmu.wp[old]);
        mmu.wp.push(wp);
        mmu.wp.len() - 1
    }

    /// Moves the locked DEVICE pages `held` of `chunk` back to RAM through
    /// view 0 (the negative checks drive their own locking with it).
    pub fn migrate_locked(&self, chunk: Chunk, held: &PageMask, from: &[Residency]) -> PageMask {
        SimBackend {
            pager: self,
            view: Some(0),
        }
        .migrate_to_ram(chunk, held, from)
        .unwrap_or(PageMask::EMPTY)
    }

    /// Sets or clears write protection of `pages` in every view there is
    /// (a view that moved away has no mappings left to protect).
    fn set_protection(&self, chunk: Chunk, pages: &PageMask, on: bool) {
        let mut mmu = self.machine.mmu.lock().unwrap_or_else(|e| e.into_inner());
        for wp in mmu.wp.iter_mut().filter(|w| !w.is_empty()) {
            for i in pages.iter() {
                wp[chunk.first + i] = on;
            }
        }
    }

    fn take_slot(&self) -> usize {
        let mut free = self.free_slots.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(s) = free.pop() {
                return s;
            }
            free = self.slot_free.wait(free).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn put_slot(&self, s: usize) {
        self.free_slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(s);
        self.slot_free.notify_one();
    }
}

impl Backend for SimBackend<'_> {
    fn migrate_to_ram(
        &self,
        chunk: Chunk,
        pages: &PageMask,
        _from: &[Residency],
    ) -> Result<PageMask, BackendError> {
        let p = self.pager;
        let (gpu, notify) = p.gpu()?;
        let object = OBJECT;
        // Rule 8: the GPU unmaps before the pages change.
        let seq = p.seq.fetch_add(1, Ordering::AcqRel) + 1;
        if !p.skip_invalidate {
            let g = gpu.clone();
            let (first, count) = (chunk.first as u64, chunk.count as u64);
            let sent = p.machine.tick();
            notify
                .call(move || g.invalidate(object, first, count, seq))
                .ok_or(BackendError::Gpu)?
                .map_err(|_| BackendError::Gpu)?;
            p.machine
                .note_invalidation_acked(chunk.first, chunk.count, sent);
        }
        let slot = p.take_slot();
        let (g, first, mask) = (gpu.clone(), chunk.first as u64, *pages);
        let offset = slot as u64 * 512 * PAGE;
        let copied = notify.call(move || g.migrate_to_ram(object, first, &mask, offset));
        let result = match copied {
            Some(Ok(copied)) => {
                // UFFDIO_COPY from the staging slot: each page appears whole.
                let mut mmu = p.machine.mmu.lock().unwrap_or_else(|e| e.into_inner());
                for i in copied.iter() {
                    let v = p
                        .machine
                        .staging_cell(slot, i)
                        .load(std::sync::atomic::Ordering::Acquire);
                    p.machine.ram[chunk.first + i].store(v, std::sync::atomic::Ordering::Release);
                    mmu.present[chunk.first + i] = true;
                }
                Ok(copied)
            }
            _ => Err(BackendError::Gpu),
        };
        p.put_slot(slot);
        result
    }

    fn zero_fill(&self, chunk: Chunk, pages: &PageMask) -> Result<PageMask, BackendError> {
        let mut mmu = self
            .pager
            .machine
            .mmu
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for i in pages.iter() {
            self.pager.machine.ram[chunk.first + i].store(0, std::sync::atomic::Ordering::Release);
            mmu.present[chunk.first + i] = true;
        }
        let _ = self.view;
        Ok(*pages)
    }

    fn protect(&self, chunk: Chunk, pages: &PageMask) -> Result<(), BackendError> {
        self.pager.set_protection(chunk, pages, true);
        Ok(())
    }

    fn moved_to_device(&self, chunk: Chunk, pages: &PageMask) -> Result<(), BackendError> {
        // The hole punch: the page leaves every view; then no protection.
        {
            let mut mmu = self
                .pager
                .machine
                .mmu
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for i in pages.iter() {
                mmu.present[chunk.first + i] = false;
            }
        }
        self.pager.set_protection(chunk, pages, false);
        Ok(())
    }

    fn unprotect(&self, chunk: Chunk, pages: &PageMask) -> Result<(), BackendError> {
        self.pager.set_protection(chunk, pages, false);
        Ok(())
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
