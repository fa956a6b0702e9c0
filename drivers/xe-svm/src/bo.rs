//! The BO world: buffer objects for ordinary GPU jobs.
//!
//! A buffer object is a run of chunks (2 MiB down to 4 KiB). Each chunk has
//! a permanent home in the SRAM pool (one memfd, DMA-mapped once) and, while
//! it is placed in VRAM, a VRAM block. Eviction copies the chunk home and
//! points its PTEs at the home; the next job that uses the object restores
//! it (TTM's validate on exec).
//!
//! Locking:
//! - each object's reservation lock ([`WwMutex`]) guards its placement and
//!   busy job. A job locks all the objects it uses with one acquire context
//!   (wait-die backoff, so two jobs locking in different orders cannot
//!   deadlock). Order: reservation locks, then the VM lock (`State`).
//! - the shrinker takes reservation locks with trylock only and evicts only
//!   idle objects (their last job retired).
//! - no path here takes a page lock or calls the pager (rule 7): SVM VRAM
//!   goes back only through the pager's reclaim.
//! - waiting for VRAM (mm-server's `Reserve`) happens with no reservation
//!   lock held (rule 5): the job drops them all, waits, and starts over.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use allocator_api2::alloc::Global;
use allocator_api2::vec::Vec as MetaVec;
use hw::xe::pte::{LeafAccess, PageSize, Target};
use ipc_protocol::interfaces::gpu::GpuError;
use session::Meta;
use session::{Handle, HandleTable};

use crate::platform::Platform;
use crate::server::{Inner, State, USER_VA_END};
use crate::session::{self as ses, GpuSession};
use crate::sync::{lock, Mutex, MutexGuard};
use crate::vram::{Vram, MAX_ORDER};
use crate::ww::{self, WwClass, WwMutex};

const PAGE: u64 = 4096;
/// How long a job waits in mm-server for VRAM to restore its objects.
const RESERVE_TIMEOUT_MS: u32 = 5_000;
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most buffer objects server-wide (each client is held to its `bos`).
const MAX_BOS: usize = 1 << 16;

#[derive(Debug, Clone, Copy)]
struct Chunk {
    order: u32,
    /// First page of this chunk's home in the SRAM pool.
    sram_pfn: u64,
    /// Its VRAM block while placed in VRAM.
    vram_pfn: Option<u64>,
}

impl Chunk {
    fn pages(&self) -> u64 {
        1 << self.order
    }
}

struct Placement {
    /// In the metadata arena (charged as the object's `metadata_bytes`).
    chunks: MetaVec<Chunk, Meta>,
    /// The last job submitted that uses the object (0: none).
    busy_job: u32,
    /// Use clock at the last job, for least-recently-used eviction.
    last_use: u64,
}

pub struct Bo {
    /// Its handle in the store: generation-tagged, so a stale id names nothing.
    pub id: u32,
    pub owner: u64,
    /// The session charged for it (`bos`, `bo_bytes`, `metadata_bytes`, and
    /// `vram_bytes` while chunks are placed in VRAM).
    session: Arc<GpuSession>,
    pub pages: u64,
    /// The reservation lock.
    pub resv: WwMutex,
    placement: Mutex<Placement>,
}

impl Bo {
    /// Only the holder of `resv` touches the placement, so this never waits
    /// for long; the mutex makes that safe to express.
    fn placement(&self) -> MutexGuard<'_, Placement> {
        lock(&self.placement)
    }
}

/// Where an object is mapped in one VM.
#[derive(Debug, Clone, Copy)]
pub struct BoMap {
    pub gpu_addr: u64,
    pub bo: u32,
    pub pages: u64,
}

impl BoMap {
    /// Whether `[addr, addr + len)` meets this mapping (ranges checked
    /// below [`USER_VA_END`] when they were made; saturating otherwise).
    pub fn overlaps(&self, addr: u64, len: u64) -> bool {
        addr < self.gpu_addr + self.pages * PAGE && self.gpu_addr < addr.saturating_add(len)
    }
}

/// The BO world's records: the objects, their SRAM pool's allocator and
/// the counters. The pool's memory is the platform's (`Platform::bo_pool`).
pub struct BoStore {
    bos: Mutex<HandleTable<Arc<Bo>, Global>>,
    pub class: WwClass,
    /// Device address of the SRAM pool.
    pool_dma: u64,
    pool_alloc: Vram,
    /// VRAM pages BOs hold now.
    pub vram_pages: AtomicU64,
    pub evictions: AtomicU64,
    pub restores: AtomicU64,
    use_clock: AtomicU64,
    /// Job ids are allocated and pushed in one step so the compute engine's
    /// completion register orders them.
    pub submit: Mutex<()>,
}

impl BoStore {
    /// Records for a pool of `pool_bytes` (whole 2 MiB blocks are used) at
    /// device address `pool_dma`.
    pub fn new(pool_dma: u64, pool_bytes: u64) -> Self {
        let pool_pages = (pool_bytes / PAGE) & !((1 << MAX_ORDER) - 1);
        Self {
            bos: Mutex::new(HandleTable::new_in(MAX_BOS, Global)),
            class: WwClass::new(),
            pool_dma,
            pool_alloc: Vram::new(0, pool_pages),
            vram_pages: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            restores: AtomicU64::new(0),
            use_clock: AtomicU64::new(1),
            submit: Mutex::new(()),
        }
    }

    fn map(&self) -> MutexGuard<'_, HandleTable<Arc<Bo>, Global>> {
        lock(&self.bos)
    }

    /// The caller's object `id`; another client's is as unknown as a stale one.
    pub fn get(&self, owner: u64, id: u32) -> Result<Arc<Bo>, GpuError> {
        self.map()
            .get(Handle::from_raw(id))
            .filter(|b| b.owner == owner)
            .cloned()
            .ok_or(GpuError::NoSuchBo)
    }

    fn get_any(&self, id: u32) -> Option<Arc<Bo>> {
        self.map().get(Handle::from_raw(id)).cloned()
    }

    pub fn ids_of(&self, owner: u64) -> Vec<u32> {
        self.map()
            .iter()
            .filter(|(_, b)| b.owner == owner)
            .map(|(_, b)| b.id)
            .collect()
    }

    /// Buffer objects alive, server-wide, and their bytes.
    pub fn count(&self) -> (usize, u64) {
        let m = self.map();
        (m.len(), m.iter().map(|(_, b)| b.pages * PAGE).sum())
    }

    /// Bytes of the SRAM pool.
    pub fn pool_bytes(&self) -> u64 {
        self.pool_alloc.total_pages() * PAGE
    }

    fn sram_addr(&self, c: &Chunk) -> u64 {
        self.pool_dma + c.sram_pfn * PAGE
    }
}

/// How many chunks [`chunk_orders`] makes of `pages`, computed without
/// building them (checked against budgets first).
fn chunk_count(pages: u64) -> u64 {
    let top = 1u64 << MAX_ORDER;
    pages / top + (pages % top).count_ones() as u64
}

/// Splits `pages` into power-of-two chunks of at most 2 MiB.
fn chunk_orders(mut pages: u64) -> Vec<u32> {
    let mut v = Vec::with_capacity(chunk_count(pages) as usize);
    while pages > 0 {
        let order = (63 - pages.leading_zeros()).min(MAX_ORDER);
        v.push(order);
        pages -= 1 << order;
    }
    v
}

impl<P: Platform> Inner<P> {
    fn job_done(&self, job: u32) -> bool {
        self.hw.job_retired(job)
    }

    /// Creates an object of `size_bytes` (a multiple of 4 KiB). It starts
    /// zeroed in its SRAM home; its first job places it in VRAM. The size
    /// is checked against the pool and the client's budget before anything
    /// is allocated for it.
    pub fn create_bo(&self, owner: u64, size_bytes: u64) -> Result<u32, GpuError> {
        let s = &self.bos;
        if size_bytes == 0 || !size_bytes.is_multiple_of(PAGE) {
            return Err(GpuError::BadRange);
        }
        if size_bytes > s.pool_bytes() {
            return Err(GpuError::OutOfMetadata);
        }
        let session = self.session(owner);
        let meta = chunk_count(size_bytes / PAGE) * std::mem::size_of::<Chunk>() as u64;
        let charges: [(ses::Pick, u64); 3] = [
            (ses::bos, 1),
            (ses::bo_bytes, size_bytes),
            (ses::metadata_bytes, meta),
        ];
        for (k, &(pick, n)) in charges.iter().enumerate() {
            if let Err(e) = session.charge(pick, n) {
                for &(p, m) in &charges[..k] {
                    session.release(p, m);
                }
                return Err(e);
            }
        }
        let r = self.create_bo_charged(&session, size_bytes);
        if r.is_err() {
            for &(p, m) in &charges {
                session.release(p, m);
            }
        }
        r
    }

    fn create_bo_charged(
        &self,
        session: &Arc<GpuSession>,
        size_bytes: u64,
    ) -> Result<u32, GpuError> {
        let s = &self.bos;
        let orders = chunk_orders(size_bytes / PAGE);
        let mut chunks = self.meta_vec();
        chunks
            .try_reserve_exact(orders.len())
            .map_err(|_| GpuError::OutOfMetadata)?;
        for order in orders {
            match s.pool_alloc.alloc(order) {
                Ok(sram_pfn) => chunks.push(Chunk {
                    order,
                    sram_pfn,
                    vram_pfn: None,
                }),
                Err(_) => {
                    for c in &chunks {
                        let _ = s.pool_alloc.free_unused(c.sram_pfn);
                    }
                    return Err(GpuError::OutOfMetadata);
                }
            }
        }
        // A home may hold an old object's data: back to zeros.
        for c in &chunks {
            self.hw.clear_bo_home(s.sram_addr(c), c.pages() * PAGE);
        }
        let pages = size_bytes / PAGE;
        let placement = Placement {
            chunks,
            busy_job: 0,
            last_use: 0,
        };
        let mut map = s.map();
        match map.insert_with(|h| {
            Arc::new(Bo {
                id: h.raw(),
                owner: session.badge,
                session: session.clone(),
                pages,
                resv: WwMutex::new(),
                placement: Mutex::new(placement),
            })
        }) {
            Ok(h) => Ok(h.raw()),
            Err(_) => Err(GpuError::OutOfMetadata),
        }
    }

    /// Writes the PTEs of every mapping of `bo` for its current placement;
    /// returns the (asid, va, len) ranges to invalidate.
    fn write_bo_ptes(
        &self,
        st: &mut State<P::Tables>,
        bo: &Bo,
        chunks: &[Chunk],
    ) -> Vec<(u32, u64, u64)> {
        let mut ranges = Vec::new();
        for (asid, vm) in st.vms.iter_mut() {
            let maps: Vec<BoMap> = vm.bos.iter().filter(|m| m.bo == bo.id).copied().collect();
            for m in maps {
                let mut va = m.gpu_addr;
                for c in chunks {
                    let (base, target) = match c.vram_pfn {
                        Some(pfn) => (pfn * PAGE, Target::Device),
                        None => (self.bos.sram_addr(c), Target::System),
                    };
                    if c.order == MAX_ORDER && va % (2 << 20) == 0 {
                        self.hw.map(
                            &mut vm.tables,
                            va,
                            base,
                            PageSize::Size2M,
                            target,
                            LeafAccess::ALL,
                        );
                    } else {
                        for p in 0..c.pages() {
                            let (va, base) = (va + p * PAGE, base + p * PAGE);
                            self.hw.map(
                                &mut vm.tables,
                                va,
                                base,
                                PageSize::Size4K,
                                target,
                                LeafAccess::ALL,
                            );
                        }
                    }
                    va += c.pages() * PAGE;
                }
                ranges.push((*asid, m.gpu_addr, m.pages * PAGE));
            }
        }
        ranges
    }

    /// Maps `bo` at `gpu_addr` of the caller's VM `vm`.
    pub fn map_bo(&self, owner: u64, vm: u32, bo_id: u32, gpu_addr: u64) -> Result<(), GpuError> {
        let bo = self.bos.get(owner, bo_id)?;
        // Checked: an end past 2^64 must not wrap to a low address.
        let end = bo
            .pages
            .checked_mul(PAGE)
            .and_then(|len| gpu_addr.checked_add(len));
        if !gpu_addr.is_multiple_of(PAGE) || end.is_none_or(|end| end > USER_VA_END) {
            return Err(GpuError::BadRange);
        }
        if !bo.resv.lock_single(IDLE_TIMEOUT) {
            return Err(GpuError::Busy);
        }
        let r = (|| {
            let chunks = bo.placement().chunks.to_vec();
            let mut st = self.lock();
            let asid = Self::vm_asid(&st, owner, vm)?;
            let v = st.vms.get_mut(&asid).ok_or(GpuError::NoSuchVm)?;
            let len = bo.pages * PAGE;
            if v.bindings
                .iter()
                .any(|b| gpu_addr < b.gpu_addr + b.pages * PAGE && b.gpu_addr < gpu_addr + len)
                || v.bos.iter().any(|m| m.overlaps(gpu_addr, len))
            {
                return Err(GpuError::AddressInUse);
            }
            v.bos.push(BoMap {
                gpu_addr,
                bo: bo_id,
                pages: bo.pages,
            });
            // Only this new mapping needs writing, but rewriting all of the
            // object's mappings with the same placement is harmless.
            let _ = self.write_bo_ptes(&mut st, &bo, &chunks);
            Ok(())
        })();
        bo.resv.unlock();
        r
    }

    /// Destroys an idle object: unmapped everywhere, VRAM and home freed.
    pub fn destroy_bo(&self, owner: u64, bo_id: u32) -> Result<(), GpuError> {
        let bo = self.bos.get(owner, bo_id)?;
        self.destroy_bo_locked(&bo, false)
    }

    /// Destroys `bo`. `ended`: its owner's session ended and its VMs are
    /// gone already, so no PTE reaches it and a job still running cannot
    /// touch it: it goes even if busy.
    fn destroy_bo_locked(&self, bo: &Arc<Bo>, ended: bool) -> Result<(), GpuError> {
        if !bo.resv.lock_single(IDLE_TIMEOUT) {
            return Err(GpuError::Busy);
        }
        let busy = bo.placement().busy_job;
        if !ended && !self.job_done(busy) {
            bo.resv.unlock();
            return Err(GpuError::Busy);
        }
        if self.bos.map().remove(Handle::from_raw(bo.id)).is_none() {
            bo.resv.unlock();
            return Err(GpuError::NoSuchBo); // another call destroyed it
        }
        let r = self.unmap_bo_everywhere(bo);
        let mut p = bo.placement();
        let chunks = p.chunks.len() as u64;
        for c in p.chunks.drain(..) {
            if let Some(pfn) = c.vram_pfn {
                let _ = self.vram.free_unused(pfn);
                self.bos.vram_pages.fetch_sub(c.pages(), Ordering::Relaxed);
                bo.session.release(ses::vram_bytes, c.pages() * PAGE);
            }
            let _ = self.bos.pool_alloc.free_unused(c.sram_pfn);
        }
        drop(p);
        bo.resv.unlock();
        let meta = chunks * std::mem::size_of::<Chunk>() as u64;
        bo.session.release(ses::metadata_bytes, meta);
        bo.session.release(ses::bo_bytes, bo.pages * PAGE);
        bo.session.release(ses::bos, 1);
        self.report_usage();
        r
    }

    fn unmap_bo_everywhere(&self, bo: &Bo) -> Result<(), GpuError> {
        let mut ranges = Vec::new();
        let mut st = self.lock();
        for (asid, vm) in st.vms.iter_mut() {
            let maps: Vec<BoMap> = vm.bos.iter().filter(|m| m.bo == bo.id).copied().collect();
            vm.bos.retain(|m| m.bo != bo.id);
            for m in maps {
                self.hw.unmap(&mut vm.tables, m.gpu_addr, m.pages * PAGE);
                ranges.push((*asid, m.gpu_addr, m.pages * PAGE));
            }
        }
        self.invalidate_ranges(&ranges)
    }

    /// Drops every object of a client that went away (its VMs went
    /// first); returns how many.
    pub(crate) fn destroy_bos_of(&self, owner: u64) -> usize {
        let mut n = 0;
        for id in self.bos.ids_of(owner) {
            let Some(bo) = self.bos.get_any(id) else {
                continue;
            };
            match self.destroy_bo_locked(&bo, true) {
                Ok(()) => n += 1,
                Err(e) => log::warn!("xe-svm: object {id} of departed client {owner}: {e:?}"),
            }
        }
        n
    }

    /// Runs `read` over the device address and length of each chunk of
    /// `bo`, in order, once its jobs are done and with its reservation
    /// held (so no eviction or restore moves it meanwhile).
    pub fn read_bo_with<R>(
        &self,
        owner: u64,
        bo_id: u32,
        read: impl FnOnce(u64, &[(u64, u64)]) -> Result<R, GpuError>,
    ) -> Result<R, GpuError> {
        let bo = self.bos.get(owner, bo_id)?;
        if !bo.resv.lock_single(IDLE_TIMEOUT) {
            return Err(GpuError::Busy);
        }
        let r = (|| {
            let p = bo.placement();
            if !self.job_done(p.busy_job) && !self.hw.wait_job(p.busy_job, IDLE_TIMEOUT) {
                return Err(GpuError::Busy);
            }
            let runs: Vec<(u64, u64)> = p
                .chunks
                .iter()
                .map(|c| {
                    let addr = c.vram_pfn.map_or(self.bos.sram_addr(c), |pfn| pfn * PAGE);
                    (addr, c.pages() * PAGE)
                })
                .collect();
            read(bo.pages * PAGE, &runs)
        })();
        bo.resv.unlock();
        r
    }

    /// Locks the objects a job on `[addr, addr + len)` of `vm` uses, places
    /// them in VRAM (waiting in mm-server, with no lock held, when VRAM is
    /// short), submits the job with `push` and marks them busy with it.
    /// An object that cannot get VRAM runs from its SRAM home.
    /// `push` returns the device job id and what the caller answers.
    pub fn submit_with_bos<R>(
        &self,
        vm: u32,
        addr: u64,
        len: u64,
        push: impl FnOnce() -> Result<(u32, R), GpuError>,
    ) -> Result<R, GpuError> {
        let mut attempts = 0;
        // VRAM mm-server granted us for the previous attempt, released once
        // that attempt's allocations are accounted.
        let mut granted = 0u64;
        loop {
            let bos: Vec<Arc<Bo>> = {
                let st = self.lock();
                let v = st.vms.get(&vm).ok_or(GpuError::NoSuchVm)?;
                let map = self.bos.map();
                v.bos
                    .iter()
                    .filter(|m| m.overlaps(addr, len))
                    .filter_map(|m| map.get(Handle::from_raw(m.bo)).cloned())
                    .collect()
            };
            let ctx = self.bos.class.context();
            let set: Vec<&WwMutex> = bos.iter().map(|b| &b.resv).collect();
            let held = ww::lock_all(&set, &ctx);
            let unlock = || held.iter().for_each(|&h| set[h].unlock());
            let short = bos
                .iter()
                .try_fold(0u64, |acc, b| self.restore_bo(b).map(|s| acc + s));
            if granted > 0 {
                self.report_usage();
                self.hw
                    .release(ipc_protocol::types::World::Bo, std::mem::take(&mut granted));
            }
            let short = match short {
                Ok(s) => s,
                Err(e) => {
                    unlock();
                    return Err(e);
                }
            };
            attempts += 1;
            if short > 0 && attempts < 3 && self.hw.has_broker() {
                unlock();
                // Rule 5: wait for room holding nothing, then start over.
                granted = self.hw.reserve(
                    ipc_protocol::types::World::Bo,
                    short * PAGE,
                    RESERVE_TIMEOUT_MS,
                );
                if granted == 0 {
                    attempts = 3; // mm-server could not help: run from SRAM
                }
                continue;
            }
            let r = {
                let _order = lock(&self.bos.submit);
                push().inspect(|&(job, _)| {
                    self.note_vm_job(vm, job);
                    let now = self.bos.use_clock.fetch_add(1, Ordering::Relaxed);
                    for b in &bos {
                        let mut p = b.placement();
                        p.busy_job = job;
                        p.last_use = now;
                    }
                })
            };
            unlock();
            self.report_usage();
            return r.map(|(_, out)| out);
        }
    }

    /// Places every SRAM chunk of the locked `bo` in VRAM that can get a
    /// block now; returns the pages still left in SRAM.
    fn restore_bo(&self, bo: &Bo) -> Result<u64, GpuError> {
        let mut p = bo.placement();
        if p.chunks.iter().all(|c| c.vram_pfn.is_some()) {
            return Ok(0);
        }
        let mut copies = Vec::new();
        let mut placed = Vec::new();
        let mut short = 0;
        for (i, c) in p.chunks.iter().enumerate() {
            if c.vram_pfn.is_some() {
                continue;
            }
            // Past the client's VRAM share the chunk runs from SRAM.
            if bo
                .session
                .charge(ses::vram_bytes, c.pages() * PAGE)
                .is_err()
            {
                continue;
            }
            match self.vram.alloc(c.order) {
                Ok(pfn) => {
                    copies.push((self.bos.sram_addr(c), pfn * PAGE, c.pages() * PAGE));
                    placed.push((i, pfn));
                }
                Err(_) => {
                    bo.session.release(ses::vram_bytes, c.pages() * PAGE);
                    short += c.pages();
                }
            }
        }
        if placed.is_empty() {
            return Ok(short);
        }
        if !self.hw.copy(&copies).map_err(|_| GpuError::DeviceLost)? {
            for (i, pfn) in placed {
                let _ = self.vram.free_unused(pfn);
                bo.session
                    .release(ses::vram_bytes, p.chunks[i].pages() * PAGE);
            }
            return Err(GpuError::DeviceLost);
        }
        for &(i, pfn) in &placed {
            p.chunks[i].vram_pfn = Some(pfn);
            self.bos
                .vram_pages
                .fetch_add(p.chunks[i].pages(), Ordering::Relaxed);
        }
        let chunks = p.chunks.to_vec();
        drop(p);
        let ranges = self.write_bo_ptes(&mut self.lock(), bo, &chunks);
        self.invalidate_ranges(&ranges)?;
        self.bos.restores.fetch_add(1, Ordering::Relaxed);
        Ok(short)
    }

    /// The shrinker (`GpuShrink::Shrink`): evicts idle objects, least
    /// recently used first, until `bytes` have left VRAM. Trylock only.
    pub fn shrink_bos(&self, bytes: u64) -> Result<(u64, u32), GpuError> {
        let mut candidates: Vec<(u64, Arc<Bo>)> =
            self.bos.map().iter().map(|(_, b)| (0, b.clone())).collect();
        for (key, b) in candidates.iter_mut() {
            // Unlocked peek: only an ordering hint.
            *key = b
                .placement
                .try_lock()
                .map(|p| p.last_use)
                .unwrap_or(u64::MAX);
        }
        candidates.sort_by_key(|(k, _)| *k);
        let (mut freed, mut count) = (0u64, 0u32);
        for (_, bo) in candidates {
            if freed >= bytes {
                break;
            }
            if !bo.resv.try_lock() {
                continue;
            }
            let r = self.evict_bo(&bo);
            bo.resv.unlock();
            let pages = r?;
            if pages > 0 {
                freed += pages * PAGE;
                count += 1;
            }
        }
        if freed > 0 {
            self.report_usage();
        }
        Ok((freed, count))
    }

    /// Moves the locked, idle `bo` to its SRAM home; returns pages freed.
    fn evict_bo(&self, bo: &Bo) -> Result<u64, GpuError> {
        let mut p = bo.placement();
        if !self.job_done(p.busy_job) || p.chunks.iter().all(|c| c.vram_pfn.is_none()) {
            return Ok(0);
        }
        let copies: Vec<(u64, u64, u64)> = p
            .chunks
            .iter()
            .filter_map(|c| {
                c.vram_pfn
                    .map(|pfn| (pfn * PAGE, self.bos.sram_addr(c), c.pages() * PAGE))
            })
            .collect();
        if !self.hw.copy(&copies).map_err(|_| GpuError::DeviceLost)? {
            return Err(GpuError::DeviceLost);
        }
        let mut old = Vec::new();
        for c in p.chunks.iter_mut() {
            if let Some(pfn) = c.vram_pfn.take() {
                old.push((pfn, c.pages()));
            }
        }
        let chunks = p.chunks.to_vec();
        drop(p);
        // PTEs point home and the TLBs forget VRAM before the blocks go.
        let ranges = self.write_bo_ptes(&mut self.lock(), bo, &chunks);
        self.invalidate_ranges(&ranges)?;
        let mut pages = 0;
        for (pfn, n) in old {
            let _ = self.vram.free_unused(pfn);
            self.bos.vram_pages.fetch_sub(n, Ordering::Relaxed);
            bo.session.release(ses::vram_bytes, n * PAGE);
            pages += n;
        }
        self.bos.evictions.fetch_add(1, Ordering::Relaxed);
        Ok(pages)
    }
}

#[cfg(test)]
mod tests {
    use super::chunk_orders;

    #[test]
    fn chunks_cover_the_object_largest_first() {
        assert_eq!(chunk_orders(1), vec![0]);
        assert_eq!(chunk_orders(512), vec![9]);
        assert_eq!(chunk_orders(1024 + 17), vec![9, 9, 4, 0]);
        assert_eq!(chunk_orders(3).iter().map(|o| 1u64 << o).sum::<u64>(), 3);
    }
}
