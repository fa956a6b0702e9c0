//! The GPU server's SVM core: GPU VMs binding client views, the GPU fault
//! path and the notifier the pager calls. It runs the same on the host
//! (`host.rs`) and in the deterministic simulation (`sim/`): everything
//! outside it comes through [`Platform`].
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
//!
//! Per-object frame words and per-VM fault logs come from the metadata
//! arena (`arena.rs`), allocated with no lock of ours held; the arena's
//! spin lock is a leaf.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use hw::xe::layout;
use hw::xe::pte::{LeafAccess, PageSize, Target};
use ipc_protocol::interfaces::gpu::{GpuError, PROT_READ, PROT_WRITE};
use ipc_protocol::interfaces::gpu_notify::NotifyError;
use ipc_protocol::interfaces::pager_migrate::{self, Collect, Collected, Finalize};
use ipc_protocol::types::{ObjectId, PageCount, PageMask, World};

use allocator_api2::alloc::Global;
use allocator_api2::vec::Vec as MetaVec;
use session::{Arena, Handle, HandleTable, Meta, Quota};

use crate::arena::Config;
use crate::bo::{BoMap, BoStore};
use crate::budget::GpuBudget;
use crate::density;
use crate::job_table::JobTable;
use crate::platform::{FinalizeError, Platform};
use crate::protect::permits;
use crate::session::{self as ses, GpuSession, Sessions};
use crate::sync::{lock, Mutex, MutexGuard};
use crate::vram::Vram;

pub(crate) const PAGE: u64 = 4096;
/// Client GPU addresses lie below 2^47 (the user half of a 4-level PPGTT).
pub const USER_VA_END: u64 = 1 << 47;
/// Bytes of server metadata per object page (its frame word).
const META_PER_PAGE: u64 = 4;
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
    pub(crate) first_page: u64,
    pub(crate) pages: u64,
    /// Bound with `BIND_READ_ONLY`: the GPU may only read through it,
    /// whatever the VM's access at its addresses (`protect.rs`).
    pub(crate) read_only: bool,
}

impl Binding {
    /// The access this binding allows on top of the VM's (`Protect` bits).
    pub(crate) fn access_mask(&self) -> u32 {
        if self.read_only {
            PROT_READ
        } else {
            PROT_READ | PROT_WRITE
        }
    }

    /// What the journal keeps of it (`journal.rs`).
    pub(crate) fn record(&self) -> crate::journal::BindingRecord {
        crate::journal::BindingRecord {
            view: self.view,
            gpu_addr: self.gpu_addr,
            object: self.object,
            first_page: self.first_page,
            pages: self.pages,
            read_only: self.read_only,
        }
    }

    /// The same object pages bound for view `view` at `gpu_addr`.
    pub(crate) fn twin(&self, id: u64, view: u32, gpu_addr: u64) -> Self {
        Self {
            id,
            view,
            gpu_addr,
            object: self.object,
            first_page: self.first_page,
            pages: self.pages,
            read_only: self.read_only,
        }
    }
    /// The part of this binding over object pages `pages`, `shift` bytes
    /// away (wrapping: the caller checks where it lands); `None` if they
    /// share no page.
    pub(crate) fn part(&self, pages: &core::ops::Range<u64>, shift: u64) -> Option<Self> {
        let lo = self.first_page.max(pages.start);
        let hi = (self.first_page + self.pages).min(pages.end);
        (lo < hi).then(|| Self {
            gpu_addr: (self.gpu_addr + (lo - self.first_page) * PAGE).wrapping_add(shift),
            first_page: lo,
            pages: hi - lo,
            ..*self
        })
    }
    /// One past the binding's last byte (checked below [`USER_VA_END`] at bind).
    pub(crate) fn end(&self) -> u64 {
        self.gpu_addr + self.pages * PAGE
    }
    pub(crate) fn contains(&self, va: u64) -> bool {
        va >= self.gpu_addr && va < self.end()
    }
    /// The GPU address of object page `page`, if bound here.
    pub(crate) fn va_of(&self, page: u64) -> Option<u64> {
        (page >= self.first_page && page < self.first_page + self.pages)
            .then(|| self.gpu_addr + (page - self.first_page) * PAGE)
    }
}

pub(crate) struct Vm<T> {
    pub(crate) owner: u64,
    /// The client's id for this VM (its handle; the index is the ASID).
    pub(crate) id: u32,
    /// The device job id of the last job submitted in this VM (0: none):
    /// a binding is not unbound while it runs (`Busy`).
    pub(crate) last_job: u32,
    pub(crate) tables: T,
    pub(crate) bindings: Vec<Binding>,
    /// Buffer objects mapped here (`bo.rs`).
    pub(crate) bos: Vec<BoMap>,
    /// Where the GPU may not write, or not access at all (`protect.rs`).
    pub(crate) protections: crate::protect::Protections,
    /// Its GPU faults that could not be served (`fault_log.rs`).
    pub(crate) faults: crate::fault_log::FaultLogRing,
}

pub(crate) struct ObjectState {
    slot: u32,
    dma: u64,
    _memfd: Option<OwnedFd>,
    /// Newest invalidation sequence seen (rule 8).
    inval_seq: u64,
    /// Per object page: its VRAM page frame + 1 while resident here,
    /// [`SYSTEM_MAPPED`] while some VM may map it as a system page, else 0.
    /// 4 bytes per page, inside the 16-byte per-page metadata budget,
    /// from the metadata arena.
    frames: MetaVec<u32, Meta>,
    resident_pages: u64,
    /// GPU-fault migrations of this object in flight ([`Migrating`]): the
    /// object is not forgotten while one runs, or its copy would land in
    /// VRAM no object names while the pager records the pages there.
    migrations: u32,
    /// The session whose bind made the server know the object: charged
    /// its DMA slot, its frame words and its pages in VRAM (`None` for
    /// objects added without a session, as the simulation does).
    charged: Option<Arc<GpuSession>>,
}

/// The DMA slot of an object a restarted server adopted (`adopt.rs`) and
/// no bind has mapped since: its pages are reachable in VRAM only.
pub(crate) const NO_SLOT: u32 = u32::MAX;

/// The frame word of a page a GPU fault mapped from system memory: before
/// such a page moves (to VRAM), that mapping must go (rule 8, `resolve`).
const SYSTEM_MAPPED: u32 = u32::MAX;

impl ObjectState {
    /// An object adopted after a restart, with no DMA mapping and charged
    /// to nobody: `frames` sized, no page resident yet.
    pub(crate) fn adopted(frames: MetaVec<u32, Meta>) -> Self {
        Self {
            slot: NO_SLOT,
            dma: 0,
            _memfd: None,
            inval_seq: 0,
            frames,
            resident_pages: 0,
            migrations: 0,
            charged: None,
        }
    }

    /// A bind meets an object a restarted server adopted: it gets the
    /// bind's DMA mapping, and its VRAM pages are charged to the bind's
    /// session from now on (`OverBudget` if they do not fit). `Ok(false)`:
    /// mapped already (the caller undoes its own mapping).
    fn map_adopted(
        &mut self,
        session: Option<Arc<GpuSession>>,
        slot: u32,
        dma: u64,
        memfd: Option<OwnedFd>,
    ) -> Result<bool, GpuError> {
        if self.slot != NO_SLOT {
            return Ok(false);
        }
        if let Some(s) = &session {
            s.charge(ses::vram_bytes, self.resident_pages * PAGE)?;
        }
        (self.slot, self.dma, self._memfd, self.charged) = (slot, dma, memfd, session);
        Ok(true)
    }

    /// Pages it has frame words for.
    pub(crate) fn frame_words(&self) -> usize {
        self.frames.len()
    }

    pub(crate) fn frame(&self, page: u64) -> Option<u64> {
        match self.frames.get(page as usize) {
            Some(&f) if f != 0 && f != SYSTEM_MAPPED => Some(f as u64 - 1),
            _ => None,
        }
    }
    pub(crate) fn set_frame(&mut self, page: u64, pfn: u64) {
        if let Some(f) = self.frames.get_mut(page as usize) {
            // Its VRAM was charged before the block was allocated (`resolve`).
            if *f == 0 || *f == SYSTEM_MAPPED {
                self.resident_pages += 1;
            }
            // VRAM frames fit in 32 bits up to 16 TiB of VRAM.
            *f = u32::try_from(pfn + 1)
                .ok()
                .filter(|v| *v != SYSTEM_MAPPED)
                .unwrap_or(0);
        }
    }
    /// Whether frame `f` holds this object's page `f - pfn` pages away
    /// from `page` (in `pfn`): a migration's block holds its pages in
    /// order, so this names the block's resident frames.
    fn holds_near(&self, page: u64, pfn: u64, f: u64) -> bool {
        let p = match f.checked_sub(pfn) {
            Some(d) => page.checked_add(d),
            None => page.checked_sub(pfn - f),
        };
        p.is_some_and(|p| self.frame(p) == Some(f))
    }

    /// Rule 6, then trimmed: the pages `left` (page, frame) left VRAM; the
    /// parts of their blocks that hold none of this object's pages now go
    /// back (`Vram::trim`), not only blocks whose last page left.
    fn trim_blocks(&self, vram: &Vram, left: &[(u64, u64)]) {
        for &(page, pfn) in left {
            vram.trim(pfn, |f| self.holds_near(page, pfn, f));
        }
    }

    fn take_frame(&mut self, page: u64) -> Option<u64> {
        let pfn = self.frame(page)?;
        self.frames[page as usize] = 0;
        self.resident_pages -= 1;
        if let Some(s) = &self.charged {
            s.release(ses::vram_bytes, PAGE);
        }
        Some(pfn)
    }
    fn mark_system_mapped(&mut self, page: u64) {
        if let Some(f) = self.frames.get_mut(page as usize).filter(|f| **f == 0) {
            *f = SYSTEM_MAPPED;
        }
    }
    /// Forgets system mappings of `[first, first + count)` (they were
    /// unmapped); returns whether there were any.
    fn clear_system_mapped(&mut self, first: u64, count: u64) -> bool {
        let mut any = false;
        for f in self
            .frames
            .iter_mut()
            .skip(first as usize)
            .take(count as usize)
            .filter(|f| **f == SYSTEM_MAPPED)
        {
            *f = 0;
            any = true;
        }
        any
    }
}

pub(crate) struct State<T> {
    /// VMs by ASID.
    pub(crate) vms: BTreeMap<u32, Vm<T>>,
    /// The ASIDs in use: a VM's id is its handle here (its index is the
    /// ASID), so ASIDs are reused after `DestroyVm` and a stale VM id
    /// names nothing. Entries hold the owner's badge.
    vm_ids: HandleTable<u64, Global>,
    pub(crate) objects: BTreeMap<u32, ObjectState>,
    /// The pager's staging buffer: (device address, bytes).
    pub(crate) staging: Option<(u64, u64)>,
}

#[derive(Default)]
pub struct Counters {
    pub gpu_faults: AtomicU64,
    /// Prefetch (speculative) faults acknowledged and dropped.
    pub prefetch_faults: AtomicU64,
    pub pages_to_vram: AtomicU64,
    pub pages_to_ram: AtomicU64,
    pub invalidations: AtomicU64,
    /// Frames kept out of use for a late peer push (`quarantine_frames`).
    pub frames_quarantined: AtomicU64,
    /// Migrations per page size, each way (`size_stats.rs`).
    pub by_size: crate::size_stats::SizeCounters,
}

/// The core: `hw` is everything outside it.
pub struct Inner<P: Platform> {
    pub hw: P,
    /// VRAM for SVM pages and buffer objects alike: the two worlds compete.
    pub vram: Vram,
    state: Mutex<State<P::Tables>>,
    pub(crate) next_job: AtomicU32,
    /// Which start of the server this is (1 at boot; `restart.rs`).
    pub(crate) generation: AtomicU32,
    /// GPU-fault migrations whose collect the pager answered and whose
    /// finalize is not answered yet (`frames.rs`: a restarted pager's
    /// `Frames` waits for them).
    pub(crate) answered_collects: AtomicU32,
    next_binding: AtomicU64,
    /// Every client's jobs and their results (`job_table.rs`). Locked
    /// after the BO store's submit lock, never with the VM lock held.
    pub(crate) jobs: Mutex<JobTable>,
    /// One session per client badge (`session.rs`, `end.rs`).
    pub sessions: Sessions,
    /// The BO world (`bo.rs`): buffer objects in VRAM or their SRAM homes.
    pub bos: BoStore,
    /// The metadata arena (`arena.rs`), charging a server-wide unlimited
    /// quota: sessions are charged their frame words explicitly (`bind.rs`).
    meta: Meta,
    pub counters: Counters,
    /// Where VMs and bindings are described for the next generation
    /// (`journal.rs`); none in the simulation and most tests.
    pub(crate) journal: std::sync::OnceLock<crate::journal::Journal>,
}

impl<P: Platform> Inner<P> {
    /// A core over `hw`, with VRAM frames `[first_pfn, first_pfn + pages)`
    /// for data (SVM pages and buffer objects), sized by the default
    /// [`Config`] (the simulation's). Panics if the host will not give its
    /// arena; a server boots with [`Config::arena`] and [`Self::with_arena`].
    pub fn new(hw: P, first_pfn: u64, pages: u64) -> Self {
        let cfg = Config::default();
        let arena = cfg.arena().expect("the default metadata arena");
        Self::with_arena(hw, first_pfn, pages, cfg.budget, arena)
    }

    /// As [`Self::new`], each client session limited by `budget`, its
    /// metadata from `arena`.
    pub fn with_arena(
        hw: P,
        first_pfn: u64,
        pages: u64,
        budget: GpuBudget,
        arena: Arc<Arena>,
    ) -> Self {
        // ASID 0 is the device's "no context": VMs get 1..MAX_ASIDS.
        let asids = layout::MAX_ASIDS as u32 - 1;
        let (pool_dma, pool_bytes) = hw.bo_pool();
        Self {
            bos: BoStore::new(pool_dma, pool_bytes),
            hw,
            vram: Vram::new(first_pfn, pages),
            state: Mutex::new(State {
                vms: BTreeMap::new(),
                vm_ids: HandleTable::in_range(1, asids, asids as usize, Global),
                objects: BTreeMap::new(),
                staging: None,
            }),
            next_job: AtomicU32::new(1),
            generation: AtomicU32::new(1),
            answered_collects: AtomicU32::new(0),
            next_binding: AtomicU64::new(1),
            jobs: Mutex::new(JobTable::new()),
            sessions: Sessions::new(budget),
            meta: Meta::new(arena, Arc::new(Quota::new(u64::MAX))),
            counters: Counters::default(),
            journal: std::sync::OnceLock::new(),
        }
    }

    /// The metadata arena (accounting and tests).
    pub fn arena(&self) -> &Arc<Arena> {
        self.meta.arena()
    }

    /// An empty vector in the metadata arena (records a client's requests
    /// make the server keep: bounded by its `metadata_bytes`).
    pub(crate) fn meta_vec<T>(&self) -> MetaVec<T, Meta> {
        MetaVec::new_in(self.meta.clone())
    }

    /// `owner`'s session (made on its first request).
    pub fn session(&self, owner: u64) -> Arc<GpuSession> {
        self.sessions.get_or_open(owner)
    }

    /// The ASID of `owner`'s VM `vm` (its id); another client's, a stale or
    /// a guessed id is `NoSuchVm`.
    pub(crate) fn vm_asid(st: &State<P::Tables>, owner: u64, vm: u32) -> Result<u32, GpuError> {
        let h = Handle::from_raw(vm);
        match st.vm_ids.get(h) {
            Some(&o) if o == owner => Ok(h.index()),
            _ => Err(GpuError::NoSuchVm),
        }
    }

    /// The ASID of `owner`'s VM `vm`, if it has one.
    pub fn asid_of(&self, owner: u64, vm: u32) -> Option<u32> {
        Self::vm_asid(&self.lock(), owner, vm).ok()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State<P::Tables>> {
        lock(&self.state)
    }

    /// Forgets an object no VM binds and no VRAM page holds, giving back
    /// its DMA slot.
    pub(crate) fn drop_object_if_unused(&self, st: &mut State<P::Tables>, object: u32) {
        let bound = st
            .vms
            .values()
            .any(|v| v.bindings.iter().any(|b| b.object == object));
        if !bound
            && st
                .objects
                .get(&object)
                .is_some_and(|o| o.resident_pages == 0 && o.migrations == 0)
        {
            if let Some(o) = st.objects.remove(&object) {
                if o.slot != NO_SLOT {
                    self.hw.dma_unmap(o.slot);
                }
                if let Some(s) = &o.charged {
                    s.release(ses::dma_slots, 1);
                    s.release(ses::metadata_bytes, o.frames.len() as u64 * META_PER_PAGE);
                }
            }
        }
    }

    /// Forgets `object` if no VM binds it and no VRAM page holds it.
    pub(crate) fn forget_if_unused(&self, object: u32) {
        self.drop_object_if_unused(&mut self.lock(), object);
    }

    /// VRAM held by (buffer objects, SVM pages).
    pub fn vram_by_world(&self) -> (u64, u64) {
        let bo = self.bos.vram_pages.load(Ordering::Relaxed) * PAGE;
        (bo, (self.vram.used_pages() * PAGE).saturating_sub(bo))
    }

    /// Tells mm-server how much VRAM each world holds now.
    pub(crate) fn report_usage(&self) {
        let (bo, svm) = self.vram_by_world();
        self.hw.report_usage(bo, svm);
    }

    /// TLB invalidation of each (asid, address, length), after the PTEs went.
    pub(crate) fn invalidate_ranges(&self, ranges: &[(u32, u64, u64)]) -> Result<(), GpuError> {
        for &(asid, va, len) in ranges {
            self.hw
                .invalidate_tlb(asid, va, len)
                .map_err(|_| GpuError::DeviceLost)?;
        }
        Ok(())
    }

    /// A new VM for `owner`; returns its id (a handle whose index is its
    /// ASID). Past the client's `vms` budget: `OverBudget`; every ASID
    /// taken: `OutOfMetadata`.
    pub fn create_vm(&self, owner: u64) -> Result<u32, GpuError> {
        let session = self.session(owner);
        session.charge(ses::vms, 1)?;
        let r = self.create_vm_charged(owner);
        if r.is_err() {
            session.release(ses::vms, 1);
        }
        r
    }

    fn create_vm_charged(&self, owner: u64) -> Result<u32, GpuError> {
        self.make_vm(owner, None)
    }

    /// A VM for `owner`, charged already: under a new id, or under the id
    /// `at.0` a predecessor issued, whose journal record is in slot `at.1`
    /// (`rebuild.rs`; a taken or impossible id is `NoSuchVm`).
    pub(crate) fn make_vm(&self, owner: u64, at: Option<(u32, u32)>) -> Result<u32, GpuError> {
        let faults = crate::fault_log::FaultLogRing::new_in(self.meta.clone())
            .ok_or(GpuError::OutOfMetadata)?;
        let h = {
            let mut st = self.lock();
            match at {
                None => st.vm_ids.insert(owner),
                Some((id, _)) => st
                    .vm_ids
                    .insert_at(Handle::from_raw(id), owner)
                    .map(|()| Handle::from_raw(id)),
            }
            .map_err(|_| match at {
                None => GpuError::OutOfMetadata,
                Some(_) => GpuError::NoSuchVm,
            })?
        };
        let asid = h.index();
        let tables = match self.hw.new_tables(asid) {
            Ok(t) => t,
            Err(_) => {
                self.lock().vm_ids.remove(h);
                return Err(GpuError::OutOfVram);
            }
        };
        let journaled = match at {
            None => self.journal_vm(owner, h.raw()),
            Some((_, slot)) => self.keep_vm_record(owner, slot, h.raw()),
        };
        if let Err(e) = journaled {
            self.hw.drop_tables(asid, tables);
            self.lock().vm_ids.remove(h);
            return Err(e);
        }
        let vm = Vm {
            owner,
            id: h.raw(),
            last_job: 0,
            tables,
            bindings: Vec::new(),
            bos: Vec::new(),
            protections: Default::default(),
            faults,
        };
        self.lock().vms.insert(asid, vm);
        Ok(h.raw())
    }

    /// Destroys `owner`'s VM `vm` (unmapped, invalidated, tables freed);
    /// its ASID is free for the next `CreateVm`.
    pub fn destroy_vm(&self, owner: u64, vm: u32) -> Result<(), GpuError> {
        let mut st = self.lock();
        let asid = Self::vm_asid(&st, owner, vm)?;
        let v = st.vms.remove(&asid).ok_or(GpuError::NoSuchVm)?;
        let objects: Vec<u32> = v.bindings.iter().map(|b| b.object).collect();
        for b in &v.bindings {
            self.unjournal_binding(owner, b.id);
        }
        self.unjournal_vm(owner, vm);
        // Tables go (and the TLB forgets them) before the ASID is reusable.
        self.hw.drop_tables(asid, v.tables);
        st.vm_ids.remove(Handle::from_raw(vm));
        for o in objects {
            self.drop_object_if_unused(&mut st, o);
        }
        drop(st);
        if let Some(s) = self.sessions.find(owner) {
            s.release(ses::vms, 1);
        }
        Ok(())
    }

    /// Every VM of a client that went away; returns how many.
    pub fn destroy_vms_of(&self, owner: u64) -> usize {
        let vms: Vec<u32> = self
            .lock()
            .vms
            .values()
            .filter(|v| v.owner == owner)
            .map(|v| v.id)
            .collect();
        vms.iter()
            .filter(|&&vm| self.destroy_vm(owner, vm).is_ok())
            .count()
    }

    /// VMs alive, server-wide.
    pub fn vm_count(&self) -> usize {
        self.lock().vms.len()
    }

    /// Objects the server knows (each holds a DMA slot), server-wide.
    pub fn object_count(&self) -> usize {
        self.lock().objects.len()
    }

    /// Knows object `object` (its pages DMA-mapped at `dma` through `slot`)
    /// from now on; `false` if it was known already, or the metadata arena
    /// has no room for its frame words (the new mapping is the caller's to
    /// undo).
    pub fn add_object(
        &self,
        object: u32,
        slot: u32,
        dma: u64,
        memfd: Option<OwnedFd>,
        pages: u64,
    ) -> bool {
        self.add_object_for(None, object, slot, dma, memfd, pages)
            .unwrap_or(false)
    }

    /// As [`Self::add_object`], charged to `session` (its DMA slot and
    /// frame words were charged by the caller, and go back with the object).
    /// `Ok(false)`: known and mapped already; `OutOfMetadata`: the arena is
    /// full. An adopted object (`adopt.rs`) takes this mapping.
    pub fn add_object_for(
        &self,
        session: Option<Arc<GpuSession>>,
        object: u32,
        slot: u32,
        dma: u64,
        memfd: Option<OwnedFd>,
        pages: u64,
    ) -> Result<bool, GpuError> {
        let mut frames = MetaVec::new_in(self.meta.clone());
        let len = usize::try_from(pages).map_err(|_| GpuError::OutOfMetadata)?;
        if frames.try_reserve_exact(len).is_err() {
            log::debug!("xe-svm: no metadata for object {object}'s {pages} frame words");
            return Err(GpuError::OutOfMetadata);
        }
        frames.resize(len, 0);
        let mut st = self.lock();
        if let Some(o) = st.objects.get_mut(&object) {
            return o.map_adopted(session, slot, dma, memfd);
        }
        st.objects.insert(
            object,
            ObjectState {
                slot,
                dma,
                _memfd: memfd,
                inval_seq: 0,
                frames,
                resident_pages: 0,
                migrations: 0,
                charged: session,
            },
        );
        Ok(true)
    }

    pub fn knows_object(&self, object: u32) -> bool {
        self.lock().objects.contains_key(&object)
    }

    /// Whether `object` is known and DMA-mapped (not only adopted).
    pub fn object_mapped(&self, object: u32) -> bool {
        self.lock()
            .objects
            .get(&object)
            .is_some_and(|o| o.slot != NO_SLOT)
    }

    /// Binds view `view` (object pages `[first_page, first_page + pages)`)
    /// at `gpu_addr` of `owner`'s VM `vm`. The object must be known.
    #[allow(clippy::too_many_arguments)]
    pub fn bind(
        &self,
        owner: u64,
        vm: u32,
        view: u32,
        object: u32,
        first_page: u64,
        pages: u64,
        gpu_addr: u64,
        read_only: bool,
    ) -> Result<(), GpuError> {
        let b = crate::journal::BindingRecord {
            view,
            gpu_addr,
            object,
            first_page,
            pages,
            read_only,
        };
        self.insert_binding(owner, vm, &b, None)
    }

    /// Adds binding `r` to `owner`'s VM `vm` after the checks a client's
    /// bind passes; its journal record is new, or the one in `slot` a
    /// predecessor wrote (`rebuild.rs`).
    pub(crate) fn insert_binding(
        &self,
        owner: u64,
        vm: u32,
        r: &crate::journal::BindingRecord,
        slot: Option<u32>,
    ) -> Result<(), GpuError> {
        let end = r
            .pages
            .checked_mul(PAGE)
            .and_then(|len| r.gpu_addr.checked_add(len))
            .filter(|&end| end <= USER_VA_END && end > r.gpu_addr);
        let (Some(end), 0) = (end, r.gpu_addr % PAGE) else {
            return Err(GpuError::BadRange);
        };
        let mut st = self.lock();
        if !st.objects.contains_key(&r.object) {
            return Err(GpuError::NoSuchView);
        }
        let asid = Self::vm_asid(&st, owner, vm)?;
        let v = st.vms.get_mut(&asid).ok_or(GpuError::NoSuchVm)?;
        if v.bindings
            .iter()
            .any(|b| r.gpu_addr < b.end() && b.gpu_addr < end)
            || v.bos
                .iter()
                .any(|m| m.overlaps(r.gpu_addr, end - r.gpu_addr))
        {
            return Err(GpuError::AddressInUse);
        }
        let b = Binding {
            id: self.next_binding.fetch_add(1, Ordering::Relaxed),
            view: r.view,
            gpu_addr: r.gpu_addr,
            object: r.object,
            first_page: r.first_page,
            pages: r.pages,
            read_only: r.read_only,
        };
        match slot {
            None => self.journal_binding(owner, vm, &b)?,
            Some(slot) => self.keep_binding_record(owner, slot, b.id)?,
        }
        v.bindings.push(b);
        Ok(())
    }

    /// Removes the binding at `gpu_addr` of `owner`'s VM `vm`. Its pages
    /// still in VRAM stay until the pager moves or frees them (they are the
    /// object's, not the binding's).
    /// A binding a job of the VM may still use is `Busy`.
    pub fn unbind(&self, owner: u64, vm: u32, gpu_addr: u64) -> Result<(), GpuError> {
        let mut st = self.lock();
        let asid = Self::vm_asid(&st, owner, vm)?;
        let v = st.vms.get_mut(&asid).ok_or(GpuError::NoSuchVm)?;
        let at = v
            .bindings
            .iter()
            .position(|b| b.gpu_addr == gpu_addr)
            .ok_or(GpuError::BadRange)?;
        if !self.hw.job_retired(v.last_job) {
            return Err(GpuError::Busy);
        }
        let b = v.bindings.remove(at);
        self.unjournal_binding(owner, b.id);
        self.hw.unmap(&mut v.tables, b.gpu_addr, b.pages * PAGE);
        self.hw
            .invalidate_tlb(asid, b.gpu_addr, b.pages * PAGE)
            .map_err(|_| GpuError::DeviceLost)?;
        self.drop_object_if_unused(&mut st, b.object);
        Ok(())
    }

    pub(crate) fn new_binding_id(&self) -> u64 {
        self.next_binding.fetch_add(1, Ordering::Relaxed)
    }

    /// Records that device job `job` runs in VM `asid` (`Unbind` waits
    /// for it: `Busy`).
    pub(crate) fn note_vm_job(&self, asid: u32, job: u32) {
        if let Some(v) = self.lock().vms.get_mut(&asid) {
            v.last_job = job;
        }
    }

    /// Resolves a GPU fault at `va` of `asid`. `false`: nothing is bound
    /// there (the access fails); `true`: replay (it may fault again for
    /// pages another migration holds, rule 4).
    /// `batch`: the addresses of the other faults of the same batch
    /// (they count as touched when sizing the migration).
    pub fn resolve(&self, asid: u32, va: u64, batch: &[u64]) -> bool {
        // Size the migration by how densely its region is touched
        // (`density`), then fall back to 64 KiB and 4 KiB if VRAM cannot
        // give that much; always inside the binding and aligned the same
        // way in GPU and object space.
        let (object, dma, page, sizes, binding, charged) = {
            let mut st = self.lock();
            let picked = {
                let Some(vm) = st.vms.get(&asid) else {
                    return false;
                };
                let Some(b) = vm.bindings.iter().find(|b| b.contains(va)) else {
                    return false;
                };
                let Some(obj) = st.objects.get(&b.object) else {
                    return false;
                };
                let page = b.first_page + (va - b.gpu_addr) / PAGE;
                let fits = |pages: u64| {
                    let first = page & !(pages - 1);
                    first >= b.first_page
                        && first + pages <= b.first_page + b.pages
                        && b.va_of(first).is_some_and(|v| v % (pages * PAGE) == 0)
                };
                let touched: Vec<u64> = batch
                    .iter()
                    .filter(|v| b.contains(**v))
                    .map(|v| b.first_page + (v - b.gpu_addr) / PAGE)
                    .collect();
                let want = density::Sizing::configured().pages(
                    &|p| obj.frame(p).is_some(),
                    &touched,
                    page,
                    fits,
                );
                let sizes: Vec<(u64, u32)> = [want, 16, 1]
                    .into_iter()
                    .filter(|p| *p <= want && fits(*p))
                    .map(|p| (p, p.trailing_zeros()))
                    .fold(Vec::new(), |mut v, s| {
                        if !v.contains(&s) {
                            v.push(s);
                        }
                        v
                    });
                (b.object, obj.dma, page, sizes, b.id, obj.charged.clone())
            };
            if let Some(o) = st.objects.get_mut(&picked.0) {
                o.migrations += 1;
            }
            picked
        };
        // Declared before every later lock guard, so dropped after them.
        let _migrating = Migrating {
            inner: self,
            object,
        };
        // The largest chunk the binding allows and VRAM can give. Rule 5:
        // the block is allocated before any page lock is taken, and with no
        // lock of ours held.
        // Each block is charged to the object's session first: past its
        // VRAM share the pages stay in RAM (system pages). What the copy
        // does not fill is given back below.
        let charge = |bytes: u64| {
            charged
                .as_ref()
                .is_none_or(|s| s.charge(ses::vram_bytes, bytes).is_ok())
        };
        let uncharge = |bytes: u64| {
            if let Some(s) = &charged {
                s.release(ses::vram_bytes, bytes);
            }
        };
        let try_alloc = || {
            sizes.iter().find_map(|&(pages, order)| {
                if !charge(pages * PAGE) {
                    return None;
                }
                match self.vram.alloc(order) {
                    Ok(b) => Some((pages, Some(b))),
                    Err(_) => {
                        uncharge(pages * PAGE);
                        None
                    }
                }
            })
        };
        let mut pick = try_alloc();
        if pick.is_none() && self.hw.has_broker() {
            // No VRAM: stall in mm-server for one granule (not the whole
            // range) while its eviction loop makes room, then try again.
            let granule = sizes.first().map_or(PAGE, |(p, _)| p * PAGE);
            let granted = self
                .hw
                .reserve(World::Svm, granule, FAULT_RESERVE_TIMEOUT_MS);
            if granted > 0 {
                pick = try_alloc();
                self.report_usage();
                self.hw.release(World::Svm, granted);
            }
        }
        // Still none: the page stays in RAM and is mapped as a system page.
        let (pages, block) = pick.unwrap_or((1, None));
        let (first, count) = (page & !(pages - 1), pages as u16);
        let free_block = |b: Option<u64>| {
            if let Some(b) = b {
                let _ = self.vram.free_unused(b);
                uncharge(pages * PAGE);
            }
        };
        let Some(count_pc) = PageCount::new(count) else {
            free_block(block);
            return false;
        };
        let object_id = ObjectId::raw(object);
        let gpu = self.hw.gpu();
        let started = std::time::Instant::now();
        let Ok(c) = self.hw.collect(Collect {
            object: object_id,
            first_page: first,
            count: count_pc,
            gpu,
            generation: self.generation.load(Ordering::Acquire),
            pager_generation: self.hw.pager_generation(),
        }) else {
            free_block(block);
            // No hang (issue 14): with the pager gone the access fails
            // (the job ends `Faulted`); a pager that only failed this
            // collect gets the replayed fault again.
            if self.hw.pager_gone() {
                log::error!("xe-svm: the pager is gone; a GPU fault at {va:#x} fails");
                return false;
            }
            // The device is going away: nothing moves into it any more.
            if self.hw.retired() {
                log::warn!("xe-svm: this GPU is retired; a GPU fault at {va:#x} fails");
                return false;
            }
            log::warn!("xe-svm: collect failed");
            return true;
        };
        let _answered = self.collect_answered();
        let mut migrated = PageMask::EMPTY;
        if c.got.is_empty() {
            free_block(block);
        } else {
            // Rule 8 for our own mappings: a collected page a VM maps as a
            // system page must not be reached through that mapping while
            // it moves (a GPU write would land in the RAM copy the pager is
            // about to drop, a read in its hole). Unmap before the copy.
            let mut st = self.lock();
            if st
                .objects
                .get_mut(&object)
                .is_some_and(|o| o.clear_system_mapped(first, count as u64))
            {
                if let Err(e) = self.zap(&mut st, object, first, count as u64) {
                    log::warn!("xe-svm: unmapping system pages before a migration: {e:?}");
                }
            }
            drop(st);
            // Pages whose preferred location is system memory stay where
            // they are and are mapped there (`remote`, `Pager::Advise`).
            let moving = c.got.and_not(&c.remote);
            let block = if moving.is_empty() {
                free_block(block);
                None
            } else {
                block
            };
            let block = match block {
                Some(block) => {
                    let mut copies = Vec::new();
                    let mut i = 0usize;
                    // A peer page gets its frame but no copy: its source
                    // pushes it there at finalize (several GPUs).
                    let copying = moving.and_not(&c.peer);
                    while i < count as usize {
                        if !copying.get(i) {
                            i += 1;
                            continue;
                        }
                        let zero = c.zero.get(i);
                        let start = i;
                        while i < count as usize && copying.get(i) && c.zero.get(i) == zero {
                            i += 1;
                        }
                        let len = (i - start) as u64 * PAGE;
                        let src = if zero {
                            self.hw.zero_source()
                        } else {
                            dma + (first + start as u64) * PAGE
                        };
                        copies.push((src, (block + start as u64) * PAGE, len));
                    }
                    match self.hw.copy(&copies) {
                        Ok(true) => {
                            migrated = moving;
                            Some(block)
                        }
                        r => {
                            log::warn!("xe-svm: copy to VRAM failed: {r:?}");
                            free_block(Some(block));
                            None
                        }
                    }
                }
                // No VRAM: the pages stay in RAM, mapped as system pages below.
                None => None,
            };
            if let Some(block) = block {
                // Only the pages that moved hold VRAM (and its charge).
                uncharge((pages - migrated.count() as u64) * PAGE);
                let _ = self.vram.keep(block, |i| migrated.get(i as usize));
                let mut st = self.lock();
                if let Some(obj) = st.objects.get_mut(&object) {
                    for i in migrated.iter() {
                        // A frame the page still had is one a restarted
                        // pager never learned (`frames.rs`): the pager
                        // gave the page to us to fill, so it is not the
                        // page's home. Given back, not leaked.
                        if let Some(stale) = obj.take_frame(first + i as u64) {
                            let _ = self.vram.release_page(stale);
                        }
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
            let finalized = self.hw.finalize(f);
            if let Ok(done) = &finalized {
                // A page the pager did not make ours (a peer's push that
                // did not land) gives its frame back and is not mapped;
                // one whose push went unanswered keeps it out of use.
                let lost = migrated.and_not(&done.device_pages);
                let late = lost.and(&done.late);
                if !lost.is_empty() {
                    let mut st = self.lock();
                    self.quarantine_frames(&mut st, object, first, &late);
                    self.give_back_frames(&mut st, object, first, &lost.and_not(&late));
                }
                migrated = migrated.and(&done.device_pages);
            }
            if finalized == Err(FinalizeError::Restarted) {
                log::warn!("xe-svm: the pager restarted during a finalize; the fault replays");
                return true;
            }
            if finalized == Err(FinalizeError::Unanswered) {
                // Unknown whether the pager took them: keep the frames (a
                // page it names in VRAM must be there), map nothing, fail
                // the access (the pager is unresponsive, issue 14).
                log::error!("xe-svm: no answer to a finalize; the fault at {va:#x} fails");
                return false;
            }
            if finalized.is_err() {
                // The pager did not take the pages (its object went away
                // meanwhile, the collect's lease ran out, or it is gone):
                // the copies are nobody's. Give their VRAM back rather than
                // keep frames no page names.
                log::warn!("xe-svm: finalize failed; dropping the copies");
                let mut st = self.lock();
                self.give_back_frames(&mut st, object, first, &migrated);
                self.drop_object_if_unused(&mut st, object);
                drop(st);
                self.report_usage();
                return true;
            }
            self.counters
                .pages_to_vram
                .fetch_add(migrated.count() as u64, Ordering::Relaxed);
            self.counters
                .by_size
                .to_vram(pages, migrated.count() as u64, micros(started));
            self.report_usage();
        }
        // Map what is ours, unless an invalidation raced (rule 8).
        let mut st = self.lock();
        let st = &mut *st;
        let Some(obj) = st.objects.get(&object) else {
            return true;
        };
        if obj.inval_seq > c.seq.get() {
            return true; // the device faults again and we start over
        }
        // Only pages this fault migrated, or that collect saw in our VRAM
        // and unlocked: a page locked by a CPU migration may be leaving.
        let allowed =
            |i: usize| (c.got.get(i) && obj.frame(first + i as u64).is_some()) || c.device.get(i);
        let pages: Vec<(u64, Option<u64>)> = (first..first + count as u64)
            .enumerate()
            .map(|(i, p)| (p, if allowed(i) { obj.frame(p) } else { None }))
            .collect();
        // Pages the pager left in RAM. Not a page this fault moved whose
        // frame is gone since (its object's end freed it, or the pager
        // took it back): the pager's state for it is not a system page,
        // so it is left unmapped and the device faults on it again.
        // Not a peer page that stayed with its source: it is in VRAM there.
        let not_migrated = c
            .got
            .and_not(&migrated)
            .and_not(&c.peer)
            .iter()
            .filter(|i| obj.frame(first + *i as u64).is_none())
            .collect::<Vec<_>>();
        let Some(vm) = st.vms.get_mut(&asid) else {
            return true;
        };
        // The same binding, still there: it may have moved or gone (its
        // view was unmapped) while we migrated.
        let Some(b) = vm
            .bindings
            .iter()
            .find(|b| b.id == binding && b.contains(va))
        else {
            return true;
        };
        let base_va = b.va_of(first);
        // The VM's access (`protect.rs`) and the binding's: no access, no
        // mapping; read-only, a mapping a GPU write faults on.
        let mask = b.access_mask();
        let access = |v: u64| vm.protections.at(v) & mask;
        // Writes as the VM's access allows; atomics with them, unless the
        // page's atomics are CPU-only (`Advice::AtomicCpu`).
        let leaf = |v: u64, i: usize| {
            let w = permits(access(v), true);
            LeafAccess {
                writable: w,
                atomics: w && !c.cpu_atomics.get(i),
            }
        };
        let atomics_uniform = c.cpu_atomics.is_empty() || c.cpu_atomics.count() == 512;
        let whole = count == 512
            && atomics_uniform
            && base_va.is_some_and(|v| vm.protections.uniform(v, v + (2 << 20)))
            && pages
                .iter()
                .enumerate()
                .all(|(i, (_, pfn))| *pfn == pages[0].1.map(|p| p + i as u64));
        if let (true, Some(v), Some(pfn)) = (whole, base_va, pages[0].1) {
            let prot = access(v);
            if permits(prot, false) {
                let (size, target) = (PageSize::Size2M, Target::Device);
                self.hw
                    .map(&mut vm.tables, v, pfn * PAGE, size, target, leaf(v, 0));
            }
            return true;
        }
        for (i, (p, pfn)) in pages.iter().enumerate() {
            if let (Some(v), Some(pfn)) = (b.va_of(*p), pfn) {
                if permits(access(v), false) {
                    let (size, target) = (PageSize::Size4K, Target::Device);
                    self.hw
                        .map(&mut vm.tables, v, pfn * PAGE, size, target, leaf(v, i));
                }
            }
        }
        // Pages that stayed in RAM are mapped as system pages.
        let mut system = Vec::new();
        for i in not_migrated {
            let p = first + i as u64;
            if let Some(v) = b.va_of(p).filter(|v| permits(access(*v), false)) {
                let (size, target) = (PageSize::Size4K, Target::System);
                self.hw
                    .map(&mut vm.tables, v, dma + p * PAGE, size, target, leaf(v, i));
                system.push(p);
            }
        }
        // Peer pages that stay in a peer's VRAM (`Advice::AccessInPlace`)
        // are mapped there, through our window on that peer.
        for (i, addr) in self.in_place_frames(&c) {
            if let Some(v) = b
                .va_of(first + i as u64)
                .filter(|v| permits(access(*v), false))
            {
                let (size, target) = (PageSize::Size4K, Target::System);
                self.hw
                    .map(&mut vm.tables, v, addr, size, target, leaf(v, i));
            }
        }
        if let Some(obj) = st.objects.get_mut(&object) {
            for p in system {
                obj.mark_system_mapped(p);
            }
        }
        true
    }

    /// The pages of a collect to map in a peer's VRAM, in place: (index in
    /// the chunk, device address through our peer window). None where the
    /// pager's frames do not match its masks, or we have no window there.
    fn in_place_frames(&self, c: &Collected) -> Vec<(usize, u64)> {
        let in_place = c.peer.and(&c.remote);
        let frames = c.peer_frames.as_slice();
        if in_place.count() as usize != frames.len() {
            return Vec::new();
        }
        let at = |frame: u32| {
            let (gpu, pfn) = pager_migrate::split_peer_frame(frame);
            let offset = pfn.checked_mul(PAGE)?;
            let window = self.hw.peer_window(gpu)?;
            // Inside that peer's window, never into the next one.
            (offset < hw::xe::layout::PEER_WINDOW_BYTES).then(|| window + offset)
        };
        in_place
            .iter()
            .zip(frames)
            .filter_map(|(i, &f)| Some((i, at(f)?)))
            .collect()
    }

    /// Unmaps the object's pages `[first, first + count)` from every VM and
    /// invalidates the TLBs (under the VM lock, never waiting on the pager).
    fn zap(
        &self,
        st: &mut State<P::Tables>,
        object: u32,
        first: u64,
        count: u64,
    ) -> Result<(), NotifyError> {
        if let Some(o) = st.objects.get_mut(&object) {
            o.clear_system_mapped(first, count);
        }
        let mut ranges = Vec::new();
        // The pager's numbers: a range past u64 ends there.
        let end = first.saturating_add(count);
        for (asid, vm) in st.vms.iter_mut() {
            for b in vm.bindings.iter().filter(|b| b.object == object) {
                let lo = first.max(b.first_page);
                let hi = end.min(b.first_page + b.pages);
                if lo >= hi {
                    continue;
                }
                let va = b.gpu_addr + (lo - b.first_page) * PAGE;
                // Only what was mapped needs a TLB invalidation (`unmap`):
                // `FreePages` after a copy back finds the range cleared.
                if self.hw.unmap(&mut vm.tables, va, (hi - lo) * PAGE) {
                    ranges.push((*asid, va, (hi - lo) * PAGE));
                }
            }
        }
        self.invalidate_ranges(&ranges)
            .map_err(|_| NotifyError::CopyFailed)?;
        self.counters.invalidations.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// `GpuNotify::Invalidate` (rule 8): unmap and invalidate, then the
    /// caller acknowledges. No page lock is taken and the pager is never
    /// called.
    pub fn invalidate(
        &self,
        object: u32,
        first: u64,
        count: u64,
        seq: u64,
    ) -> Result<(), NotifyError> {
        let mut st = self.lock();
        if let Some(obj) = st.objects.get_mut(&object) {
            obj.inval_seq = obj.inval_seq.max(seq);
        }
        self.zap(&mut st, object, first, count)
    }

    /// The pager's staging buffer, at `dma` in device address space.
    pub fn attach_staging(&self, dma: u64, bytes: u64) {
        self.lock().staging = Some((dma, bytes));
    }

    /// `GpuNotify::MigrateToRam`: copies the chunk's `pages` that live here
    /// into the staging buffer at `staging_offset`. Returns the pages
    /// copied.
    ///
    /// The copy changes nothing here: the pages keep their frames until
    /// the pager's `FreePages`, which it sends once the copies landed in
    /// RAM, still holding the page locks. So a pager that gave up waiting
    /// for this reply (its deadline) loses nothing: the data is still in
    /// VRAM, the page still says so, and a late copy lands in a staging
    /// slot the pager quarantined. A collect cannot see these pages
    /// meanwhile (the pager holds their locks), so no fault maps a frame
    /// that is on its way out.
    pub fn migrate_to_ram(
        &self,
        object: u32,
        first: u64,
        pages: &PageMask,
        staging_offset: u64,
    ) -> Result<PageMask, NotifyError> {
        let (staging, list) = {
            let st = self.lock();
            let (dma, size) = st.staging.ok_or(NotifyError::NoStaging)?;
            // A chunk's slot must lie inside the staging memfd.
            match staging_offset.checked_add(512 * PAGE) {
                Some(end) if end <= size => {}
                _ => return Err(NotifyError::NoStaging),
            }
            let obj = st.objects.get(&object).ok_or(NotifyError::NoSuchObject)?;
            (dma + staging_offset, frames_of(obj, first, pages))
        };
        let started = std::time::Instant::now();
        let copied = self.copy_frames(&list, |i| staging + i as u64 * PAGE)?;
        let took = micros(started);
        self.counters
            .pages_to_ram
            .fetch_add(copied.count() as u64, Ordering::Relaxed);
        if !copied.is_empty() {
            self.counters.by_size.to_ram(copied.count() as u64, took);
        }
        Ok(copied)
    }

    /// Gives back the frames the chunk's `pages` of `object` hold here.
    /// Frames a late peer push may still write (`Finalized::late`: their
    /// source missed its deadline and its copy engine may push later): no
    /// page holds them any more, and they stay allocated, never reused,
    /// for this server's life, so no other page's data is overwritten.
    fn quarantine_frames(
        &self,
        st: &mut State<P::Tables>,
        object: u32,
        first: u64,
        pages: &PageMask,
    ) {
        let Some(obj) = st.objects.get_mut(&object) else {
            return;
        };
        let kept = pages
            .iter()
            .filter(|&i| obj.take_frame(first + i as u64).is_some())
            .count() as u64;
        if kept > 0 {
            log::error!(
                "xe-svm: {kept} frames of object {object} quarantined: a peer's push to them \
                 went unanswered and may land later"
            );
            self.counters
                .frames_quarantined
                .fetch_add(kept, Ordering::Relaxed);
        }
    }

    fn give_back_frames(
        &self,
        st: &mut State<P::Tables>,
        object: u32,
        first: u64,
        pages: &PageMask,
    ) {
        if let Some(obj) = st.objects.get_mut(&object) {
            for i in pages.iter() {
                if let Some(pfn) = obj.take_frame(first + i as u64) {
                    let _ = self.vram.release_page(pfn);
                }
            }
        }
    }

    /// `GpuNotify::PushToPeer` (several GPUs, issue 17): unmaps the chunk's
    /// `count` pages here as `invalidate` with `seq` does (rule 8), then
    /// pushes the `pages` of it this GPU holds into GPU `to`'s VRAM at
    /// frames `to_first_pfn + i`, through this device's peer window on
    /// `to`; the pages keep their frames here until `FreePages`, as
    /// `migrate_to_ram`'s do. The pager holds their locks. Pages this GPU
    /// holds no frame for are not pushed.
    #[allow(clippy::too_many_arguments)]
    pub fn push_to_peer(
        &self,
        object: u32,
        first: u64,
        count: u64,
        pages: &PageMask,
        to: u8,
        to_first_pfn: u64,
        seq: u64,
    ) -> Result<PageMask, NotifyError> {
        let window = (to != self.hw.gpu().get())
            .then(|| self.hw.peer_window(to))
            .flatten()
            .ok_or(NotifyError::NoPeer)?;
        // Every frame the chunk can name must have an address (the device
        // refuses a copy past the peer's VRAM).
        let dst_base = to_first_pfn
            .checked_add(511)
            .and_then(|last| last.checked_mul(PAGE))
            .and_then(|last| window.checked_add(last))
            .map(|_| window + to_first_pfn * PAGE)
            .ok_or(NotifyError::BadRange)?;
        self.invalidate(object, first, count, seq)?;
        let list = {
            let st = self.lock();
            let obj = st.objects.get(&object).ok_or(NotifyError::NoSuchObject)?;
            frames_of(obj, first, pages)
        };
        self.copy_frames(&list, |i| dst_base + i as u64 * PAGE)
    }

    /// Copies each listed page (its index in the chunk, its frame here) to
    /// `dst(index)`, runs of consecutive frames and destinations as one copy
    /// each; the pages copied.
    fn copy_frames(
        &self,
        list: &[(usize, u64)],
        dst: impl Fn(usize) -> u64,
    ) -> Result<PageMask, NotifyError> {
        let mut copies: Vec<(u64, u64, u64)> = Vec::new();
        for &(i, pfn) in list {
            let to = dst(i);
            match copies.last_mut() {
                Some((s, d, len)) if *s + *len == pfn * PAGE && *d + *len == to => *len += PAGE,
                _ => copies.push((pfn * PAGE, to, PAGE)),
            }
        }
        if !self.hw.copy(&copies).map_err(|_| NotifyError::CopyFailed)? {
            return Err(NotifyError::CopyFailed);
        }
        let mut copied = PageMask::EMPTY;
        for &(i, _) in list {
            copied.set(i);
        }
        Ok(copied)
    }

    /// `GpuNotify::FreePages`: pages no view reaches any more; returns how
    /// many held VRAM here.
    pub fn free_pages(
        &self,
        object: u32,
        first: u64,
        count: u64,
        pages: &PageMask,
    ) -> Result<u16, NotifyError> {
        let mut st = self.lock();
        self.zap(&mut st, object, first, count)?;
        let obj = st
            .objects
            .get_mut(&object)
            .ok_or(NotifyError::NoSuchObject)?;
        let left: Vec<(u64, u64)> = pages
            .iter()
            .filter_map(|i| {
                // The pager's `first`: a page past `u64` holds no frame.
                let page = first.checked_add(i as u64)?;
                Some((page, obj.take_frame(page)?))
            })
            .collect();
        // Rule 6: the block goes with its last page.
        let frames: Vec<u64> = left.iter().map(|&(_, pfn)| pfn).collect();
        let refused = self.vram.release_pages(&frames);
        if refused > 0 {
            log::debug!("xe-svm: {refused} frames freed were not allocated");
        }
        obj.trim_blocks(&self.vram, &left);
        let freed = left.len() as u16;
        self.drop_object_if_unused(&mut st, object);
        drop(st);
        self.report_usage();
        Ok(freed)
    }
}

/// A GPU-fault migration of `object` in flight (`ObjectState::migrations`).
/// When it ends the object may be forgotten, if nothing else holds it (a
/// view that went meanwhile unbound it, and no page stayed in VRAM).
struct Migrating<'a, P: Platform> {
    inner: &'a Inner<P>,
    object: u32,
}

impl<P: Platform> Drop for Migrating<'_, P> {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        if let Some(o) = st.objects.get_mut(&self.object) {
            o.migrations = o.migrations.saturating_sub(1);
        }
        self.inner.drop_object_if_unused(&mut st, self.object);
    }
}

/// Microseconds since `t` (saturating).
fn micros(t: std::time::Instant) -> u64 {
    u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// The chunk's `pages` of `obj` that hold a frame here: (index, frame).
/// The pager's `first` is checked: a page past `u64` holds none.
fn frames_of(obj: &ObjectState, first: u64, pages: &PageMask) -> Vec<(usize, u64)> {
    pages
        .iter()
        .filter_map(|i| {
            let page = first.checked_add(i as u64)?;
            obj.frame(page).map(|pfn| (i, pfn))
        })
        .collect()
}
