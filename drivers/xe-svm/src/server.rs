//! The GPU server core: GPU VMs binding client views, the GPU fault path,
//! and the notifier the pager calls.
//!
//! Locking (one lock, `State`, the "VM lock"):
//! - it guards VMs, bindings, page tables, the residency map and each
//!   object's invalidation sequence;
//! - it is never held across a call to the pager (rule 9: the fault path
//!   calls the pager without it; the notifier handlers never call the
//!   pager), and the notifier never waits on a page lock (rule 8);
//! - the fault path writes PTEs only if no invalidation newer than the
//!   sequence it read from the pager arrived (`inval_seq <= seq`), checked
//!   under this lock, like `mmu_interval_read_retry`.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hw::xe::commands::{Command, KernelLaunch, KernelOp};
use hw::xe::fault::FaultDescriptor;
use hw::xe::layout::{self, Ring};
use hw::xe::pte::{PageSize, Target};
use ipc_protocol::client::Client;
use ipc_protocol::interfaces::gpu::{self as g, GpuError};
use ipc_protocol::interfaces::gpu_notify::{self as n, NotifyError};
use ipc_protocol::interfaces::pager_migrate::{Collect, Finalize, OpenView, PagerMigrate};
use ipc_protocol::server::Handler;
use ipc_protocol::types::{BoId, GpuId, JobId, JobStatus, KernelKind, ObjectId, PageCount, PageMask, VmId};
use ipc_protocol::Capability;

use ipc_protocol::interfaces::gpu_shrink as sh;
use ipc_protocol::interfaces::pressure::{Pressure, Release, Reserve, ReportUsage};
use ipc_protocol::types::{MemoryKind, World};

use crate::bo::{BoMap, BoStore};
use crate::device::Device;
use crate::ppgtt::Ppgtt;
use crate::vram::Vram;

const PAGE: u64 = 4096;
const STAGING_SLOT: u32 = 1;
const ZERO_SLOT: u32 = 62;
const FIRST_OBJECT_SLOT: u32 = 2;
const GPU: u8 = 0;
/// How long a GPU fault waits in mm-server for VRAM before it maps the
/// pages from system memory instead.
const FAULT_RESERVE_TIMEOUT_MS: u32 = 2_000;

pub(crate) struct Binding {
    /// Unique for the server's life: a fault path that looked a binding up
    /// maps into it only if it is still the same binding (it may have moved
    /// or gone meanwhile, `views.rs`).
    pub(crate) id: u64,
    /// The pager's view it binds: the binding follows the view (`views.rs`).
    pub(crate) view: u32,
    pub(crate) gpu_addr: u64,
    pub(crate) object: u32,
    first_page: u64,
    pub(crate) pages: u64,
}

impl Binding {
    fn contains(&self, va: u64) -> bool {
        va >= self.gpu_addr && va < self.gpu_addr + self.pages * PAGE
    }
    /// The GPU address of object page `page`, if bound here.
    fn va_of(&self, page: u64) -> Option<u64> {
        (page >= self.first_page && page < self.first_page + self.pages).then(|| self.gpu_addr + (page - self.first_page) * PAGE)
    }
}

pub(crate) struct Vm {
    pub(crate) owner: u64,
    pub(crate) ppgtt: Ppgtt,
    pub(crate) bindings: Vec<Binding>,
    /// Buffer objects mapped here (`bo.rs`).
    pub(crate) bos: Vec<BoMap>,
}

struct ObjectState {
    slot: u32,
    dma: u64,
    _memfd: OwnedFd,
    /// Newest invalidation sequence seen (rule 8).
    inval_seq: u64,
    /// VRAM page frame + 1 of each object page resident here, 0 when not:
    /// 4 bytes per page, inside the 16-byte per-page metadata budget.
    frames: Vec<u32>,
    resident_pages: u64,
}

impl ObjectState {
    fn new(slot: u32, dma: u64, memfd: OwnedFd, pages: u64) -> Self {
        Self { slot, dma, _memfd: memfd, inval_seq: 0, frames: vec![0; pages as usize], resident_pages: 0 }
    }
    fn frame(&self, page: u64) -> Option<u64> {
        match self.frames.get(page as usize) {
            Some(&f) if f != 0 => Some(f as u64 - 1),
            _ => None,
        }
    }
    fn set_frame(&mut self, page: u64, pfn: u64) {
        if let Some(f) = self.frames.get_mut(page as usize) {
            if *f == 0 {
                self.resident_pages += 1;
            }
            // VRAM frames fit in 32 bits up to 16 TiB of VRAM.
            *f = u32::try_from(pfn + 1).unwrap_or(0);
        }
    }
    fn take_frame(&mut self, page: u64) -> Option<u64> {
        let pfn = self.frame(page)?;
        self.frames[page as usize] = 0;
        self.resident_pages -= 1;
        Some(pfn)
    }
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) vms: HashMap<u32, Vm>,
    objects: HashMap<u32, ObjectState>,
    next_slot: u32,
    free_slots: Vec<u32>,
    staging: Option<(u64, u64)>,
}

#[derive(Default)]
pub struct Counters {
    pub gpu_faults: AtomicU64,
    pub pages_to_vram: AtomicU64,
    pub pages_to_ram: AtomicU64,
    pub invalidations: AtomicU64,
}

pub struct Inner {
    pub(crate) dev: Arc<Device>,
    /// VRAM for SVM pages and buffer objects alike: the two worlds compete.
    pub(crate) vram: Vram,
    pub(crate) pt: Vram,
    migrate: Client<PagerMigrate>,
    state: Mutex<State>,
    next_asid: AtomicU32,
    next_job: AtomicU32,
    /// mm-server: told our VRAM usage after each change (rule 7's
    /// accounting), and where allocations that find no VRAM wait (rule 5).
    pub(crate) pressure: Option<Client<Pressure>>,
    pub(crate) bos: BoStore,
    next_binding: AtomicU64,
    /// The client that submitted each job, by the device's job slot
    /// (`layout::JOB_SLOTS`): a client waits only on its own jobs.
    job_owners: Mutex<Vec<(u32, u64)>>,
    zero_dma: u64,
    _zero: hw::shm::Region,
    pub counters: Counters,
}

#[derive(Clone)]
pub struct GpuServer {
    pub inner: Arc<Inner>,
}

/// VRAM kept for page tables: 1/32 of VRAM, at its top.
fn pt_pages(total: u64) -> u64 {
    (total / 32).max(512) & !511
}

impl GpuServer {
    /// `bo_pool_bytes`: the SRAM pool that holds evicted buffer objects.
    pub fn new(dev: Arc<Device>, migrate: Client<PagerMigrate>, pressure: Option<Client<Pressure>>, bo_pool_bytes: u64) -> Result<Self, String> {
        let total = dev.bar.vram_bytes() / PAGE;
        let pt = pt_pages(total);
        // The probe used the last 2 MiB: it is free again now.
        let data_pages = (total - pt) & !511;
        let zero = hw::shm::Region::create("xe-svm-zero", 2 << 20).map_err(|e| e.to_string())?;
        let zero_dma = dev.bar.dma_map(ZERO_SLOT, zero.dup_fd().map_err(|e| e.to_string())?, 2 << 20).map_err(|e| e.to_string())?;
        let bos = BoStore::new(&dev.bar, bo_pool_bytes)?;
        Ok(Self {
            inner: Arc::new(Inner {
                bos,
                vram: Vram::new(0, data_pages),
                pt: Vram::new(total - pt, pt),
                dev,
                migrate,
                state: Mutex::new(State { next_slot: FIRST_OBJECT_SLOT, ..Default::default() }),
                next_asid: AtomicU32::new(1),
                next_job: AtomicU32::new(1),
                next_binding: AtomicU64::new(1),
                job_owners: Mutex::new(vec![(0, 0); layout::JOB_SLOTS]),
                pressure,
                zero_dma,
                _zero: zero,
                counters: Counters::default(),
            }),
        })
    }

    /// The fault worker: batches faults, resolves each 2 MiB group once,
    /// replies to every fault of the group.
    pub fn fault_worker(self, faults: Receiver<FaultDescriptor>) {
        while let Ok(first) = faults.recv() {
            let mut batch = vec![first];
            while batch.len() < 64 {
                match faults.try_recv() {
                    Ok(f) => batch.push(f),
                    Err(_) => break,
                }
            }
            self.inner.counters.gpu_faults.fetch_add(batch.len() as u64, Ordering::Relaxed);
            let mut groups: Vec<((u32, u64), Vec<FaultDescriptor>)> = Vec::new();
            for f in batch {
                let key = (f.asid, f.address >> 21);
                match groups.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, v)) => v.push(f),
                    None => groups.push((key, vec![f])),
                }
            }
            for (_, group) in groups {
                let ok = self.inner.resolve(group[0].asid, group[0].address);
                for f in &group {
                    if let Err(e) = self.inner.dev.reply(f, ok) {
                        log::error!("xe-svm: fault reply: {e}");
                    }
                }
            }
        }
    }
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets an object no VM binds and no VRAM page holds, giving back
    /// its DMA slot.
    pub(crate) fn drop_object_if_unused(&self, st: &mut State, object: u32) {
        let bound = st.vms.values().any(|v| v.bindings.iter().any(|b| b.object == object));
        if !bound && st.objects.get(&object).is_some_and(|o| o.resident_pages == 0) {
            if let Some(o) = st.objects.remove(&object) {
                let _ = self.dev.bar.dma_unmap(o.slot);
                st.free_slots.push(o.slot);
            }
        }
    }

    /// VRAM held by (buffer objects, SVM pages).
    pub(crate) fn vram_by_world(&self) -> (u64, u64) {
        let bo = self.bos.vram_pages.load(Ordering::Relaxed) * PAGE;
        (bo, (self.vram.used_pages() * PAGE).saturating_sub(bo))
    }

    /// Tells mm-server how much VRAM each world holds now (one-way).
    pub(crate) fn report_usage(&self) {
        if let Some(p) = &self.pressure {
            let (bo, svm) = self.vram_by_world();
            for (world, bytes) in [(World::Bo, bo), (World::Svm, svm)] {
                if let Err(e) = p.notify(ReportUsage { memory: MemoryKind::Vram, world, bytes }) {
                    log::debug!("xe-svm: mm-server unreachable: {e}");
                }
            }
        }
    }

    /// Waits in mm-server for `bytes` of VRAM for `world` (rule 5: callers
    /// hold no page or reservation lock). Returns the bytes granted, 0 when
    /// mm-server refused, timed out or is gone (a typed error, logged).
    pub(crate) fn reserve(&self, world: World, bytes: u64, timeout_ms: u32) -> u64 {
        let Some(p) = &self.pressure else { return 0 };
        match p.call(Reserve { memory: MemoryKind::Vram, world, bytes, timeout_ms }) {
            Ok(r) => r.bytes,
            Err(e) => {
                log::debug!("xe-svm: no VRAM reservation for {bytes} bytes: {e}");
                0
            }
        }
    }

    /// Gives back a reservation once what it made room for is allocated
    /// (and reported).
    pub(crate) fn release(&self, world: World, bytes: u64) {
        if let (Some(p), true) = (&self.pressure, bytes > 0) {
            if let Err(e) = p.call(Release { memory: MemoryKind::Vram, world, bytes }) {
                log::debug!("xe-svm: releasing a reservation: {e}");
            }
        }
    }

    /// Resolves a GPU fault at `va` of `asid`. `false`: nothing is bound
    /// there (the access fails); `true`: replay (it may fault again for
    /// pages another migration holds, rule 4).
    fn resolve(&self, asid: u32, va: u64) -> bool {
        // Pick the chunk: 2 MiB, then 64 KiB, then 4 KiB, inside the binding
        // and aligned the same way in GPU and object space.
        let (object, dma, page, sizes, binding) = {
            let st = self.lock();
            let Some(vm) = st.vms.get(&asid) else { return false };
            let Some(b) = vm.bindings.iter().find(|b| b.contains(va)) else { return false };
            let Some(obj) = st.objects.get(&b.object) else { return false };
            let page = b.first_page + (va - b.gpu_addr) / PAGE;
            let fits = |pages: u64| {
                let first = page & !(pages - 1);
                first >= b.first_page && first + pages <= b.first_page + b.pages && b.va_of(first).is_some_and(|v| v % (pages * PAGE) == 0)
            };
            let sizes: Vec<(u64, u32)> = [(512u64, 9u32), (16, 4), (1, 0)].into_iter().filter(|(p, _)| fits(*p)).collect();
            (b.object, obj.dma, page, sizes, b.id)
        };
        // The largest chunk the binding allows and VRAM can give. Rule 5:
        // the block is allocated before any page lock is taken, and with no
        // lock of ours held.
        let try_alloc = || sizes.iter().find_map(|&(pages, order)| self.vram.alloc(order).ok().map(|b| (pages, Some(b))));
        let mut pick = try_alloc();
        if pick.is_none() && self.pressure.is_some() {
            // No VRAM: stall in mm-server for one granule (not the whole
            // range) while its eviction loop makes room, then try again.
            let granule = sizes.first().map_or(PAGE, |(p, _)| p * PAGE);
            let granted = self.reserve(World::Svm, granule, FAULT_RESERVE_TIMEOUT_MS);
            if granted > 0 {
                pick = try_alloc();
                self.report_usage();
                self.release(World::Svm, granted);
            }
        }
        // Still none: the page stays in RAM and is mapped as a system page.
        let (pages, block) = pick.unwrap_or((1, None));
        let (first, count) = (page & !(pages - 1), pages as u16);
        let free_block = |b: Option<u64>| {
            if let Some(b) = b {
                let _ = self.vram.free_unused(b);
            }
        };
        let Some(count_pc) = PageCount::new(count) else {
            free_block(block);
            return false;
        };
        let object_id = ObjectId::raw(object);
        let gpu = GpuId::new(GPU).unwrap_or(GpuId::new(0).expect("GPU id 0 is in range"));
        let c = match self.migrate.call(Collect { object: object_id, first_page: first, count: count_pc, gpu }) {
            Ok(c) => c,
            Err(e) => {
                log::warn!("xe-svm: collect failed: {e}");
                free_block(block);
                return true;
            }
        };
        if c.got.is_empty() {
            free_block(block);
        } else {
            let (block, migrated) = match block {
                Some(block) => {
                    let mut copies = Vec::new();
                    let mut i = 0usize;
                    while i < count as usize {
                        if !c.got.get(i) {
                            i += 1;
                            continue;
                        }
                        let zero = c.zero.get(i);
                        let start = i;
                        while i < count as usize && c.got.get(i) && c.zero.get(i) == zero {
                            i += 1;
                        }
                        let len = (i - start) as u64 * PAGE;
                        let src = if zero { self.zero_dma } else { dma + (first + start as u64) * PAGE };
                        copies.push((src, (block + start as u64) * PAGE, len));
                    }
                    match self.dev.copy(&copies) {
                        Ok(true) => (Some(block), c.got),
                        r => {
                            log::warn!("xe-svm: copy to VRAM failed: {r:?}");
                            let _ = self.vram.free_unused(block);
                            (None, PageMask::EMPTY)
                        }
                    }
                }
                // No VRAM: the pages stay in RAM, mapped as system pages below.
                None => (None, PageMask::EMPTY),
            };
            if let Some(block) = block {
                let _ = self.vram.add_refs(block, migrated.count());
                let mut st = self.lock();
                if let Some(obj) = st.objects.get_mut(&object) {
                    for i in migrated.iter() {
                        obj.set_frame(first + i as u64, block + i as u64);
                    }
                }
            }
            let f = Finalize {
                object: object_id,
                first_page: first,
                count: count_pc,
                gpu,
                vram_first_pfn: block.unwrap_or(0),
                got: c.got,
                migrated,
            };
            if let Err(e) = self.migrate.call(f) {
                // The pager did not take the pages (its object went away
                // meanwhile, or it is gone): the copies are nobody's. Give
                // their VRAM back rather than keep frames no page names.
                log::warn!("xe-svm: finalize failed: {e}; dropping the copies");
                let mut st = self.lock();
                if let Some(obj) = st.objects.get_mut(&object) {
                    for i in migrated.iter() {
                        if let Some(pfn) = obj.take_frame(first + i as u64) {
                            let _ = self.vram.release_page(pfn);
                        }
                    }
                }
                self.drop_object_if_unused(&mut st, object);
                drop(st);
                self.report_usage();
                return true;
            }
            self.counters.pages_to_vram.fetch_add(migrated.count() as u64, Ordering::Relaxed);
            self.report_usage();
        }
        // Map what is ours, unless an invalidation raced (rule 8).
        let mut st = self.lock();
        let st = &mut *st;
        let Some(obj) = st.objects.get(&object) else { return true };
        if obj.inval_seq > c.seq.get() {
            return true; // the device faults again and we start over
        }
        // Only pages this fault migrated, or that collect saw in our VRAM
        // and unlocked: a page locked by a CPU migration may be leaving.
        let mappable = migrated_mask(&c.got, obj, first);
        let allowed = |i: usize| mappable.get(i) || c.device.get(i);
        let pages: Vec<(u64, Option<u64>)> =
            (first..first + count as u64).enumerate().map(|(i, p)| (p, if allowed(i) { obj.frame(p) } else { None })).collect();
        let not_migrated = c.got.iter().filter(|i| obj.frame(first + *i as u64).is_none()).collect::<Vec<_>>();
        let Some(vm) = st.vms.get_mut(&asid) else { return true };
        // The same binding, still there: it may have moved or gone (its
        // view was unmapped) while we migrated.
        let Some(b) = vm.bindings.iter().find(|b| b.id == binding && b.contains(va)) else { return true };
        let base_va = b.va_of(first);
        let bar = &self.dev.bar;
        let whole = count == 512 && pages.iter().enumerate().all(|(i, (_, pfn))| *pfn == pages[0].1.map(|p| p + i as u64));
        if let (true, Some(v), Some(pfn)) = (whole, base_va, pages[0].1) {
            let _ = vm.ppgtt.map(bar, &self.pt, v, pfn * PAGE, PageSize::Size2M, Target::Device);
            return true;
        }
        for (p, pfn) in &pages {
            if let (Some(v), Some(pfn)) = (b.va_of(*p), pfn) {
                let _ = vm.ppgtt.map(bar, &self.pt, v, pfn * PAGE, PageSize::Size4K, Target::Device);
            }
        }
        // Pages that stayed in RAM are mapped as system pages.
        for i in not_migrated {
            let p = first + i as u64;
            if let Some(v) = b.va_of(p) {
                let _ = vm.ppgtt.map(bar, &self.pt, v, dma + p * PAGE, PageSize::Size4K, Target::System);
            }
        }
        true
    }

    /// Unmaps the object's pages `[first, first + count)` from every VM and
    /// invalidates the TLBs (under the VM lock, never waiting on the pager).
    pub(crate) fn zap(&self, st: &mut State, object: u32, first: u64, count: u64) -> Result<(), NotifyError> {
        let mut ranges = Vec::new();
        for (asid, vm) in st.vms.iter_mut() {
            for b in vm.bindings.iter().filter(|b| b.object == object) {
                let lo = first.max(b.first_page);
                let hi = (first + count).min(b.first_page + b.pages);
                if lo < hi {
                    let va = b.gpu_addr + (lo - b.first_page) * PAGE;
                    let _ = vm.ppgtt.unmap(&self.dev.bar, &self.pt, va, (hi - lo) * PAGE);
                    ranges.push((*asid, va, (hi - lo) * PAGE));
                }
            }
        }
        for (asid, va, len) in ranges {
            self.dev.invalidate(asid, va, len).map_err(|_| NotifyError::CopyFailed)?;
        }
        self.counters.invalidations.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl Handler<n::GpuNotify> for GpuServer {
    fn handle(&self, _caller: &Capability, req: n::Request, mut handles: Vec<OwnedFd>) -> Result<(n::Reply, Vec<OwnedFd>), NotifyError> {
        let inner = &self.inner;
        match req {
            n::Request::AttachStaging(n::AttachStaging { size_bytes }) => {
                let fd = handles.pop().ok_or(NotifyError::NoStaging)?;
                let dma = inner.dev.bar.dma_map(STAGING_SLOT, fd, size_bytes).map_err(|_| NotifyError::NoStaging)?;
                inner.lock().staging = Some((dma, size_bytes));
                Ok((n::Reply::AttachStaging(n::Done {}), vec![]))
            }
            n::Request::Invalidate(n::Invalidate { object, first_page, count, seq }) => {
                // Rule 8: unmap and invalidate, then acknowledge. No page
                // lock is taken here and the pager is never called.
                let mut st = inner.lock();
                if let Some(obj) = st.objects.get_mut(&object.get()) {
                    obj.inval_seq = obj.inval_seq.max(seq.get());
                }
                inner.zap(&mut st, object.get(), first_page, count.get() as u64)?;
                Ok((n::Reply::Invalidate(n::Invalidated { seq }), vec![]))
            }
            n::Request::MigrateToRam(n::MigrateToRam { object, first_page, count: _, pages, staging_offset }) => {
                let (staging, list) = {
                    let st = inner.lock();
                    let (dma, size) = st.staging.ok_or(NotifyError::NoStaging)?;
                    if staging_offset + 512 * PAGE > size {
                        return Err(NotifyError::NoStaging);
                    }
                    let obj = st.objects.get(&object.get()).ok_or(NotifyError::NoSuchObject)?;
                    let list: Vec<(usize, u64)> = pages.iter().filter_map(|i| obj.frame(first_page + i as u64).map(|pfn| (i, pfn))).collect();
                    (dma + staging_offset, list)
                };
                // Runs of pages whose frames are consecutive make one copy each.
                let mut copies: Vec<(u64, u64, u64)> = Vec::new();
                for &(i, pfn) in &list {
                    let dst = staging + i as u64 * PAGE;
                    match copies.last_mut() {
                        Some((s, d, len)) if *s + *len == pfn * PAGE && *d + *len == dst => *len += PAGE,
                        _ => copies.push((pfn * PAGE, dst, PAGE)),
                    }
                }
                if !inner.dev.copy(&copies).map_err(|_| NotifyError::CopyFailed)? {
                    return Err(NotifyError::CopyFailed);
                }
                let mut copied = PageMask::EMPTY;
                let mut st = inner.lock();
                if let Some(obj) = st.objects.get_mut(&object.get()) {
                    for &(i, pfn) in &list {
                        obj.take_frame(first_page + i as u64);
                        // Rule 6: the block goes when its last page has left.
                        let _ = inner.vram.release_page(pfn);
                        copied.set(i);
                    }
                }
                inner.counters.pages_to_ram.fetch_add(copied.count() as u64, Ordering::Relaxed);
                drop(st);
                inner.report_usage();
                Ok((n::Reply::MigrateToRam(n::MigratedToRam { copied }), vec![]))
            }
            n::Request::FreePages(n::FreePages { object, first_page, count, pages }) => {
                let mut st = inner.lock();
                inner.zap(&mut st, object.get(), first_page, count.get() as u64)?;
                let obj = st.objects.get_mut(&object.get()).ok_or(NotifyError::NoSuchObject)?;
                let mut freed = 0u16;
                for i in pages.iter() {
                    if let Some(pfn) = obj.take_frame(first_page + i as u64) {
                        // Rule 6: the block goes with its last page.
                        let _ = inner.vram.release_page(pfn);
                        freed += 1;
                    }
                }
                inner.drop_object_if_unused(&mut st, object.get());
                drop(st);
                inner.report_usage();
                Ok((n::Reply::FreePages(n::Freed { pages: freed }), vec![]))
            }
            n::Request::ViewGone(n::ViewGone { view }) => {
                let bindings = inner.view_gone(view.get())?;
                Ok((n::Reply::ViewGone(n::Unbound { bindings }), vec![]))
            }
            n::Request::ViewMoved(n::ViewMoved { view, from, to }) => {
                let (bindings, dropped) = inner.view_moved(view.get(), from, to)?;
                Ok((n::Reply::ViewMoved(n::Moved { bindings, dropped }), vec![]))
            }
        }
    }
}

/// The pages of `got` that are resident here (the ones this fault moved).
fn migrated_mask(got: &PageMask, obj: &ObjectState, first: u64) -> PageMask {
    let mut m = PageMask::EMPTY;
    for i in got.iter() {
        if obj.frame(first + i as u64).is_some() {
            m.set(i);
        }
    }
    m
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
        let inner = &self.inner;
        let mut st = inner.lock();
        let vms: Vec<u32> = st.vms.iter().filter(|(_, v)| v.owner == caller.badge.0).map(|(a, _)| *a).collect();
        for asid in vms {
            if let Some(v) = st.vms.remove(&asid) {
                inner.dev.bar.set_context(asid, 0);
                let _ = inner.dev.invalidate(asid, 0, 1 << 47);
                let objects: Vec<u32> = v.bindings.iter().map(|b| b.object).collect();
                v.ppgtt.release(&inner.pt);
                for o in objects {
                    inner.drop_object_if_unused(&mut st, o);
                }
            }
        }
        drop(st);
        inner.destroy_bos_of(caller.badge.0);
        log::info!("xe-svm: client {} gone; its VMs and buffer objects were destroyed", caller.badge.0);
    }

    fn handle(&self, caller: &Capability, req: g::Request, _handles: Vec<OwnedFd>) -> Result<(g::Reply, Vec<OwnedFd>), GpuError> {
        let inner = &self.inner;
        let owner = caller.badge.0;
        match req {
            g::Request::CreateVm(_) => {
                let asid = inner.next_asid.fetch_add(1, Ordering::Relaxed);
                if asid as usize >= layout::MAX_ASIDS {
                    return Err(GpuError::OutOfMetadata);
                }
                let ppgtt = Ppgtt::new(&inner.dev.bar, &inner.pt, asid).map_err(|_| GpuError::OutOfVram)?;
                inner.lock().vms.insert(asid, Vm { owner, ppgtt, bindings: Vec::new(), bos: Vec::new() });
                Ok((g::Reply::CreateVm(g::VmCreated { vm: VmId::raw(asid), asid }), vec![]))
            }
            g::Request::DestroyVm(g::DestroyVm { vm }) => {
                let mut st = inner.lock();
                match st.vms.get(&vm.get()) {
                    Some(v) if v.owner == owner => {}
                    _ => return Err(GpuError::NoSuchVm),
                }
                let v = st.vms.remove(&vm.get()).ok_or(GpuError::NoSuchVm)?;
                inner.dev.bar.set_context(vm.get(), 0);
                let _ = inner.dev.invalidate(vm.get(), 0, 1 << 47);
                v.ppgtt.release(&inner.pt);
                Ok((g::Reply::DestroyVm(g::Done {}), vec![]))
            }
            g::Request::BindView(g::BindView { vm, view, gpu_addr }) => {
                {
                    let st = inner.lock();
                    if !st.vms.get(&vm.get()).is_some_and(|v| v.owner == owner) {
                        return Err(GpuError::NoSuchVm);
                    }
                }
                // The pager checks that the view is this client's.
                let (opened, mut fds) = inner.migrate.call_with_handles(OpenView { view, client: owner }, vec![]).map_err(|e| match e {
                    ipc_protocol::client::CallError::Server(_) => GpuError::NoSuchView,
                    _ => GpuError::PagerUnavailable,
                })?;
                let memfd = fds.pop().ok_or(GpuError::PagerUnavailable)?;
                if gpu_addr % PAGE != 0 || gpu_addr >> 47 != 0 {
                    return Err(GpuError::BadRange);
                }
                let mut st = inner.lock();
                let object = opened.object.get();
                if !st.objects.contains_key(&object) {
                    let slot = match st.free_slots.pop() {
                        Some(s) => s,
                        None if st.next_slot < ZERO_SLOT => {
                            st.next_slot += 1;
                            st.next_slot - 1
                        }
                        None => return Err(GpuError::OutOfMetadata),
                    };
                    let size = rustix::fs::fstat(&memfd).map_err(|_| GpuError::PagerUnavailable)?.st_size as u64;
                    let dup = rustix::io::fcntl_dupfd_cloexec(&memfd, 0).map_err(|_| GpuError::PagerUnavailable)?;
                    let dma = inner.dev.bar.dma_map(slot, dup, size).map_err(|_| GpuError::DeviceLost)?;
                    st.objects.insert(object, ObjectState::new(slot, dma, memfd, size / PAGE));
                }
                let v = st.vms.get_mut(&vm.get()).ok_or(GpuError::NoSuchVm)?;
                let end = gpu_addr + opened.pages * PAGE;
                if v.bindings.iter().any(|b| gpu_addr < b.gpu_addr + b.pages * PAGE && b.gpu_addr < end) || v.bos.iter().any(|m| m.overlaps(gpu_addr, end - gpu_addr)) {
                    return Err(GpuError::AddressInUse);
                }
                let id = inner.next_binding.fetch_add(1, Ordering::Relaxed);
                v.bindings.push(Binding { id, view: view.get(), gpu_addr, object, first_page: opened.object_first_page, pages: opened.pages });
                Ok((g::Reply::BindView(g::Done {}), vec![]))
            }
            g::Request::Unbind(g::Unbind { vm, gpu_addr }) => {
                let mut st = inner.lock();
                let v = st.vms.get_mut(&vm.get()).filter(|v| v.owner == owner).ok_or(GpuError::NoSuchVm)?;
                let at = v.bindings.iter().position(|b| b.gpu_addr == gpu_addr).ok_or(GpuError::BadRange)?;
                let b = v.bindings.remove(at);
                let _ = v.ppgtt.unmap(&inner.dev.bar, &inner.pt, b.gpu_addr, b.pages * PAGE);
                inner.dev.invalidate(vm.get(), b.gpu_addr, b.pages * PAGE).map_err(|_| GpuError::DeviceLost)?;
                // Its pages still in VRAM stay until the pager moves or frees
                // them (they are the object's, not the binding's).
                inner.drop_object_if_unused(&mut st, b.object);
                Ok((g::Reply::Unbind(g::Done {}), vec![]))
            }
            g::Request::Submit(g::Submit { vm, kernel, addr, len, stride, value, threads }) => {
                if !inner.lock().vms.get(&vm.get()).is_some_and(|v| v.owner == owner) {
                    return Err(GpuError::NoSuchVm);
                }
                // Buffer objects the job reaches are locked and placed first.
                let job = inner.submit_with_bos(vm.get(), addr, len, || {
                    let job = inner.next_job.fetch_add(1, Ordering::Relaxed);
                    inner.job_owners.lock().unwrap_or_else(|e| e.into_inner())[job as usize % layout::JOB_SLOTS] = (job, owner);
                    let k = KernelLaunch { job, asid: vm.get(), op: kernel_op(kernel), addr, len, stride: stride as u32, value, threads };
                    inner.dev.bar.submit(Ring::Compute, job, &Command::Launch(k)).map_err(|_| GpuError::DeviceLost)?;
                    Ok(job)
                })?;
                Ok((g::Reply::Submit(g::Submitted { job: JobId::raw(job as u64) }), vec![]))
            }
            g::Request::Wait(g::Wait { job, timeout_ms }) => {
                let id = u32::try_from(job.get()).map_err(|_| GpuError::NoSuchJob)?;
                // Only the caller's own jobs, and only while the device
                // still keeps their result slot.
                if inner.job_owners.lock().unwrap_or_else(|e| e.into_inner())[id as usize % layout::JOB_SLOTS] != (id, owner) || id == 0 {
                    return Err(GpuError::NoSuchJob);
                }
                let t0 = Instant::now();
                match inner.dev.bar.wait_seqno(layout::REG_CCS_DONE, id, Duration::from_millis(timeout_ms as u64)) {
                    Ok(()) => {
                        let (status, faults) = inner.dev.bar.job_result(id).ok_or(GpuError::NoSuchJob)?;
                        let status = if status == 1 { JobStatus::Completed } else { JobStatus::Faulted };
                        Ok((g::Reply::Wait(g::JobDone { status, faults: faults as u64, elapsed_us: t0.elapsed().as_micros() as u64 }), vec![]))
                    }
                    Err(_) => Ok((g::Reply::Wait(g::JobDone { status: JobStatus::Running, faults: 0, elapsed_us: t0.elapsed().as_micros() as u64 }), vec![])),
                }
            }
            g::Request::CreateBo(g::CreateBo { size_bytes }) => {
                let bo = inner.create_bo(owner, size_bytes)?;
                Ok((g::Reply::CreateBo(g::BoCreated { bo: BoId::raw(bo) }), vec![]))
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
                        bo_evictions: inner.bos.evictions.load(Ordering::Relaxed),
                        bo_restores: inner.bos.restores.load(Ordering::Relaxed),
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
    fn handle(&self, _caller: &Capability, req: sh::Request, _: Vec<OwnedFd>) -> Result<(sh::Reply, Vec<OwnedFd>), sh::ShrinkError> {
        let inner = &self.inner;
        match req {
            sh::Request::Shrink(sh::Shrink { bytes }) => {
                let (bytes, bos) = inner.shrink_bos(bytes).map_err(|_| sh::ShrinkError::DeviceLost)?;
                Ok((sh::Reply::Shrink(sh::Shrunk { bytes, bos }), vec![]))
            }
            sh::Request::Usage(_) => {
                let (bo_bytes, svm_bytes) = inner.vram_by_world();
                Ok((sh::Reply::Usage(sh::VramUsage { total: inner.vram.total_pages() * PAGE, bo_bytes, svm_bytes }), vec![]))
            }
        }
    }
}
