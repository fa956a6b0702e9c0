//! The pager's Linux runtime: memfd objects, views registered with the
//! client's userfaultfd, fault service threads, and the IPC handlers for
//! clients (`Pager`) and GPU servers (`PagerMigrate`).

pub mod backend;
pub mod objects;
pub mod uffd;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ipc_protocol::client::Client;
use ipc_protocol::interfaces::gpu_notify::{AttachStaging, GpuNotify};
use ipc_protocol::interfaces::{pager as p, pager_migrate as m, pager_reclaim as r};
use ipc_protocol::server::Handler;
use ipc_protocol::types::{ObjectId, PageMask, PageStateCode, Seq, ViewId};
use ipc_protocol::wire::BoundedVec;
use ipc_protocol::Capability;

use self::backend::HostBackend;
use self::objects::{Object, Staging, View};
use self::uffd::{Event, Uffd};
use crate::migrate::{collect, cpu_fault, evict, finalize, Chunk, Policy};
use crate::state::Residency;
use crate::sync::Ordering;

/// Limits and sizes of one pager.
#[derive(Debug, Clone)]
pub struct Config {
    /// Service threads reading each view's userfaultfd.
    pub threads_per_view: usize,
    /// Largest memory object.
    pub max_object_bytes: u64,
    pub staging_slots: usize,
    /// Breaks rule 8 on purpose: migrate pages back without telling the GPU
    /// server to unmap them first. Only for the test that shows the rule
    /// matters (`rule8_*` in `init/tests/race.rs`).
    pub skip_invalidate: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self { threads_per_view: 4, max_object_bytes: 4 << 30, staging_slots: 8, skip_invalidate: false }
    }
}

pub struct Inner {
    cfg: Config,
    objects: Mutex<HashMap<u32, Arc<Object>>>,
    views: Mutex<HashMap<u32, Arc<View>>>,
    next_id: AtomicU32,
    gpu: OnceLock<Arc<Client<GpuNotify>>>,
    pub staging: Staging,
    /// A 2 MiB zero buffer for first-touch fills.
    pub zeros: Vec<u8>,
}

impl Inner {
    pub fn gpu(&self) -> Option<&Arc<Client<GpuNotify>>> {
        self.gpu.get()
    }

    pub fn skips_invalidate(&self) -> bool {
        self.cfg.skip_invalidate
    }

    fn object(&self, id: u32) -> Option<Arc<Object>> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner()).get(&id).cloned()
    }

    /// No view reaches `o` any more: its pages in VRAM go back to the GPU
    /// server's allocator (their data is dropped with the object).
    fn free_device_pages(&self, o: &Object) -> Result<(), p::PagerError> {
        use ipc_protocol::interfaces::gpu_notify::FreePages;
        use ipc_protocol::types::PageCount;
        for first in (0..o.pages()).step_by(crate::migrate::CHUNK_PAGES) {
            let chunk = Chunk::around(first, o.pages());
            let mut held = PageMask::EMPTY;
            for (i, p) in chunk.pages() {
                // Without views no CPU fault can hold these; a GPU collect
                // may, and then it finalizes into an object about to go.
                if let Ok(Some(r)) = o.table.try_lock(p) {
                    if matches!(r, Residency::Device { .. }) {
                        held.set(i);
                    } else {
                        let _ = o.table.unlock(p, r);
                    }
                }
            }
            if held.is_empty() {
                continue;
            }
            let gpu = self.gpu().ok_or(p::PagerError::GpuUnavailable)?;
            let count = PageCount::new(chunk.count as u16).ok_or(p::PagerError::OutOfRange)?;
            let r = gpu.call(FreePages { object: ObjectId::raw(o.id), first_page: chunk.first as u64, count, pages: held });
            for i in held.iter() {
                let _ = o.table.unlock(chunk.first + i, Residency::Empty);
            }
            r.map_err(|_| p::PagerError::GpuUnavailable)?;
        }
        Ok(())
    }

    fn own_object(&self, caller: &Capability, id: ObjectId) -> Result<Arc<Object>, p::PagerError> {
        self.object(id.get()).filter(|o| o.owner == caller.badge.0).ok_or(p::PagerError::NoSuchObject)
    }
}

/// The pager server: one per system, shared by every endpoint it serves.
#[derive(Clone)]
pub struct PagerServer {
    inner: Arc<Inner>,
    /// Where the last eviction stopped: (object id, page). Eviction sweeps
    /// on from here like a clock hand, so the pages it takes are the ones
    /// longest since the hand passed, not always the first object's.
    evict_hand: Arc<Mutex<(u32, usize)>>,
}

impl PagerServer {
    pub fn new(cfg: Config) -> rustix::io::Result<Self> {
        let staging = Staging::new(cfg.staging_slots)?;
        Ok(Self {
            inner: Arc::new(Inner {
                cfg,
                objects: Mutex::new(HashMap::new()),
                views: Mutex::new(HashMap::new()),
                next_id: AtomicU32::new(1),
                gpu: OnceLock::new(),
                staging,
                zeros: vec![0u8; objects::SLOT_BYTES],
            }),
            evict_hand: Arc::new(Mutex::new((0, 0))),
        })
    }

    /// Connects the GPU server's notifier (rule 8 and migrate-to-RAM) and
    /// shares the staging buffer with it.
    pub fn attach_gpu(&self, gpu: Client<GpuNotify>) -> Result<(), String> {
        let dup = rustix::io::fcntl_dupfd_cloexec(&self.inner.staging.memfd, 0).map_err(|e| e.to_string())?;
        let size = (self.inner.staging.slots * objects::SLOT_BYTES) as u64;
        gpu.call_with_handles(AttachStaging { size_bytes: size }, vec![dup]).map_err(|e| e.to_string())?;
        self.inner.gpu.set(Arc::new(gpu)).map_err(|_| "GPU already attached".to_string())
    }

    pub fn object_state(&self, object: u32, page: usize) -> Option<Residency> {
        self.inner.object(object).and_then(|o| o.table.info(page).ok()).map(|i| i.residency)
    }

    fn service(inner: Arc<Inner>, view: Arc<View>) {
        let mut events = Vec::with_capacity(16);
        while !view.stop.load(std::sync::atomic::Ordering::Acquire) {
            events.clear();
            if let Err(e) = view.uffd.read_events(Duration::from_millis(100), &mut events) {
                log::warn!("pager: view {}: userfaultfd read failed: {e}; stopping its service", view.id);
                return;
            }
            for ev in &events {
                match *ev {
                    Event::PageFault { address, wp, .. } => Self::fault(&inner, &view, address, wp),
                    other => log::debug!("pager: view {}: {other:?} (view changes arrive with issue 6)", view.id),
                }
            }
        }
    }

    fn fault(inner: &Inner, view: &View, address: u64, wp: bool) {
        let page_addr = address & !4095;
        let Some(page) = view.page_at(address) else {
            log::error!("pager: fault at {address:#x} outside view {}", view.id);
            return;
        };
        let Some(object) = inner.object(view.object) else { return };
        if wp {
            // A writer blocked by a migration to VRAM: wait for its end,
            // then let it retry (it will take a missing fault if the page
            // left RAM).
            let _ = object.table.wait_unlocked(page);
        } else {
            let backend = HostBackend { pager: inner, object: &object, view: Some(view) };
            let mut delay = Duration::from_micros(100);
            while let Err(e) = cpu_fault(&object.table, &backend, page, Policy::Rules) {
                log::warn!("pager: fault on page {page} of object {}: {e:?}; retrying", object.id);
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(100));
                if view.stop.load(std::sync::atomic::Ordering::Acquire) {
                    return;
                }
            }
        }
        if let Err(e) = view.uffd.wake(page_addr, 4096) {
            log::warn!("pager: wake at {page_addr:#x}: {e}");
        }
    }
}

fn state_code(i: crate::state::PageInfo) -> PageStateCode {
    if i.locked {
        return PageStateCode::Migrating;
    }
    match i.residency {
        Residency::Empty => PageStateCode::Empty,
        Residency::System => PageStateCode::System,
        Residency::Device { .. } => PageStateCode::Device,
    }
}

impl PagerServer {
    /// A client is gone: its views stop and go, and its objects go with
    /// their pages, VRAM included (DESIGN.md 6: other clients see nothing).
    pub fn client_gone(&self, badge: u64) {
        let inner = &self.inner;
        let views: Vec<Arc<View>> = {
            let mut all = inner.views.lock().unwrap_or_else(|e| e.into_inner());
            let ids: Vec<u32> = all.values().filter(|v| v.owner == badge).map(|v| v.id).collect();
            ids.iter().filter_map(|id| all.remove(id)).collect()
        };
        for v in views {
            v.stop.store(true, std::sync::atomic::Ordering::Release);
            if let Some(o) = inner.object(v.object) {
                o.remove_view(v.id);
            }
        }
        let objects: Vec<Arc<Object>> = {
            let mut all = inner.objects.lock().unwrap_or_else(|e| e.into_inner());
            let ids: Vec<u32> = all.values().filter(|o| o.owner == badge).map(|o| o.id).collect();
            ids.iter().filter_map(|id| all.remove(id)).collect()
        };
        for o in objects {
            if let Err(e) = inner.free_device_pages(&o) {
                log::warn!("pager: freeing VRAM of object {} of a dead client: {e:?}", o.id);
            }
        }
        log::info!("pager: client {badge} gone; its views and objects were released");
    }
}

impl Handler<p::Pager> for PagerServer {
    fn disconnected(&self, caller: &Capability) {
        self.client_gone(caller.badge.0);
    }

    fn handle(&self, caller: &Capability, req: p::Request, mut handles: Vec<OwnedFd>) -> Result<(p::Reply, Vec<OwnedFd>), p::PagerError> {
        use p::{PagerError as E, Reply, Request};
        let inner = &self.inner;
        match req {
            Request::CreateObject(p::CreateObject { size_bytes }) => {
                if size_bytes == 0 || size_bytes % 4096 != 0 || size_bytes > inner.cfg.max_object_bytes {
                    return Err(E::BadSize);
                }
                let memfd = rustix::fs::memfd_create("svm-object", rustix::fs::MemfdFlags::CLOEXEC).map_err(|_| E::Host)?;
                rustix::fs::ftruncate(&memfd, size_bytes).map_err(|_| E::Host)?;
                let client_copy = rustix::io::fcntl_dupfd_cloexec(&memfd, 0).map_err(|_| E::Host)?;
                let id = inner.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let object = Arc::new(Object::new(id, caller.badge.0, memfd, (size_bytes / 4096) as usize));
                inner.objects.lock().unwrap_or_else(|e| e.into_inner()).insert(id, object);
                Ok((Reply::CreateObject(p::ObjectCreated { object: ObjectId::raw(id), size_bytes }), vec![client_copy]))
            }
            Request::DestroyObject(p::DestroyObject { object }) => {
                let o = inner.own_object(caller, object)?;
                if !o.views_snapshot().is_empty() {
                    return Err(E::Busy);
                }
                inner.free_device_pages(&o)?;
                inner.objects.lock().unwrap_or_else(|e| e.into_inner()).remove(&o.id);
                Ok((Reply::DestroyObject(p::Done {}), vec![]))
            }
            Request::AttachView(p::AttachView { object, addr, object_first_page, pages }) => {
                let o = inner.own_object(caller, object)?;
                let end = object_first_page.checked_add(pages).ok_or(E::OutOfRange)?;
                if pages == 0 || end > o.pages() as u64 || addr % 4096 != 0 {
                    return Err(E::OutOfRange);
                }
                let uffd = Uffd::new(handles.pop().ok_or(E::BadUserfaultfd)?);
                uffd.handshake(uffd::FEATURES).map_err(|_| E::BadUserfaultfd)?;
                uffd.register(addr, pages * 4096).map_err(|_| E::BadUserfaultfd)?;
                let id = inner.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let view = Arc::new(View {
                    id,
                    owner: caller.badge.0,
                    object: o.id,
                    addr,
                    first_page: object_first_page as usize,
                    pages: pages as usize,
                    uffd,
                    stop: AtomicBool::new(false),
                });
                o.add_view(view.clone());
                inner.views.lock().unwrap_or_else(|e| e.into_inner()).insert(id, view.clone());
                for t in 0..inner.cfg.threads_per_view {
                    let (i, v) = (inner.clone(), view.clone());
                    std::thread::Builder::new()
                        .name(format!("pager-view{id}-{t}"))
                        .spawn(move || PagerServer::service(i, v))
                        .map_err(|_| E::Host)?;
                }
                Ok((Reply::AttachView(p::ViewAttached { view: ViewId::raw(id) }), vec![]))
            }
            Request::DetachView(p::DetachView { view }) => {
                let v = {
                    let mut views = inner.views.lock().unwrap_or_else(|e| e.into_inner());
                    match views.get(&view.get()) {
                        Some(v) if v.owner == caller.badge.0 => views.remove(&view.get()),
                        _ => None,
                    }
                }
                .ok_or(E::NoSuchView)?;
                v.stop.store(true, std::sync::atomic::Ordering::Release);
                if let Some(o) = inner.object(v.object) {
                    o.remove_view(v.id);
                }
                Ok((Reply::DetachView(p::Done {}), vec![]))
            }
            Request::Advise(p::Advise { object, .. }) => {
                inner.own_object(caller, object)?;
                Ok((Reply::Advise(p::Done {}), vec![]))
            }
            Request::Prefetch(p::Prefetch { object, .. }) => {
                // Prefetch needs the GPU-side prefetch path, not built yet.
                inner.own_object(caller, object)?;
                Err(E::NotSupported)
            }
            Request::Snapshot(p::Snapshot { object, first_page, count }) => {
                let o = inner.own_object(caller, object)?;
                let end = first_page.checked_add(count.get() as u64).ok_or(E::OutOfRange)?;
                if end > o.pages() as u64 {
                    return Err(E::OutOfRange);
                }
                let states = (first_page..end).map(|pg| o.table.info(pg as usize).map(state_code).map_err(|_| E::OutOfRange)).collect::<Result<Vec<_>, _>>()?;
                Ok((Reply::Snapshot(p::PageStates { states: BoundedVec::new(states).ok_or(E::OutOfRange)? }), vec![]))
            }
        }
    }
}

impl Handler<m::PagerMigrate> for PagerServer {
    fn handle(&self, _caller: &Capability, req: m::Request, _handles: Vec<OwnedFd>) -> Result<(m::Reply, Vec<OwnedFd>), m::MigrateError> {
        use m::{MigrateError as E, Reply, Request};
        let inner = &self.inner;
        let chunk_of = |o: &Object, first: u64, count: u16| -> Result<Chunk, E> {
            let end = first.checked_add(count as u64).ok_or(E::OutOfRange)?;
            if end > o.pages() as u64 {
                return Err(E::OutOfRange);
            }
            Ok(Chunk { first: first as usize, count: count as usize })
        };
        match req {
            Request::OpenView(m::OpenView { view, client }) => {
                let v = inner.views.lock().unwrap_or_else(|e| e.into_inner()).get(&view.get()).cloned().ok_or(E::NoSuchView)?;
                if v.owner != client {
                    return Err(E::NotOwner);
                }
                let o = inner.object(v.object).ok_or(E::NoSuchObject)?;
                let fd = rustix::io::fcntl_dupfd_cloexec(&o.memfd, 0).map_err(|_| E::Host)?;
                Ok((
                    Reply::OpenView(m::ViewOpened { object: ObjectId::raw(o.id), addr: v.addr, object_first_page: v.first_page as u64, pages: v.pages as u64 }),
                    vec![fd],
                ))
            }
            Request::GetPages(m::GetPages { object, first_page, count }) => {
                let o = inner.object(object.get()).ok_or(E::NoSuchObject)?;
                let chunk = chunk_of(&o, first_page, count.get())?;
                let seq = o.seq.load(Ordering::Acquire);
                let (mut system, mut device, mut empty) = (PageMask::EMPTY, PageMask::EMPTY, PageMask::EMPTY);
                for (i, pg) in chunk.pages() {
                    let info = o.table.info(pg).map_err(|_| E::OutOfRange)?;
                    if info.locked {
                        continue;
                    }
                    match info.residency {
                        Residency::System => system.set(i),
                        Residency::Device { .. } => device.set(i),
                        Residency::Empty => empty.set(i),
                    }
                }
                Ok((Reply::GetPages(m::Pages { seq: Seq::raw(seq), system, device, empty }), vec![]))
            }
            Request::Collect(m::Collect { object, first_page, count, gpu }) => {
                let o = inner.object(object.get()).ok_or(E::NoSuchObject)?;
                let chunk = chunk_of(&o, first_page, count.get())?;
                let backend = HostBackend { pager: inner, object: &o, view: None };
                let seq = o.seq.load(Ordering::Acquire);
                let c = collect(&o.table, &backend, chunk, gpu.get()).map_err(|_| E::Host)?;
                if !c.got.is_empty() {
                    o.collections.lock().unwrap_or_else(|e| e.into_inner()).entry(first_page).or_default().push((gpu.get(), chunk, c));
                }
                Ok((Reply::Collect(m::Collected { seq: Seq::raw(seq), got: c.got, zero: c.zero, device: c.device }), vec![]))
            }
            Request::Finalize(m::Finalize { object, first_page, count, gpu, vram_first_pfn, got, migrated }) => {
                let o = inner.object(object.get()).ok_or(E::NoSuchObject)?;
                chunk_of(&o, first_page, count.get())?;
                if got.is_empty() {
                    // A collect that got nothing has nothing to finalize.
                    return Ok((Reply::Finalize(m::Finalized { device: 0, returned: 0 }), vec![]));
                }
                let (chunk, c) = {
                    let mut cols = o.collections.lock().unwrap_or_else(|e| e.into_inner());
                    let list = cols.get_mut(&first_page).ok_or(E::NotCollected)?;
                    let at = list.iter().position(|(g, ch, c)| *g == gpu.get() && ch.count == count.get() as usize && c.got == got).ok_or(E::NotCollected)?;
                    let (_, chunk, c) = list.swap_remove(at);
                    if list.is_empty() {
                        cols.remove(&first_page);
                    }
                    (chunk, c)
                };
                let backend = HostBackend { pager: inner, object: &o, view: None };
                let (device, returned) = finalize(&o.table, &backend, chunk, &c, &migrated.and(&c.got), gpu.get(), vram_first_pfn).map_err(|_| E::Host)?;
                Ok((Reply::Finalize(m::Finalized { device: device as u16, returned: returned as u16 }), vec![]))
            }
        }
    }
}

impl PagerServer {
    /// Moves up to `bytes` of `gpu`'s VRAM pages back to RAM, chunk by chunk
    /// with trylocks (rule 1); returns the pages moved.
    pub fn evict(&self, gpu: u8, bytes: u64) -> u64 {
        let want = bytes.div_ceil(4096);
        let mut objects: Vec<Arc<Object>> = self.inner.objects.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        objects.sort_by_key(|o| o.id);
        let mut hand = self.evict_hand.lock().unwrap_or_else(|e| e.into_inner());
        // Every chunk once, starting at the hand.
        let chunks: Vec<(usize, usize)> =
            objects.iter().enumerate().flat_map(|(i, o)| (0..o.pages()).step_by(crate::migrate::CHUNK_PAGES).map(move |p| (i, p))).collect();
        let start = chunks.iter().position(|&(i, p)| (objects[i].id, p) >= *hand).unwrap_or(0);
        let mut moved = 0u64;
        for k in 0..chunks.len() {
            if moved >= want {
                break;
            }
            let (i, first) = chunks[(start + k) % chunks.len()];
            let o = &objects[i];
            *hand = (o.id, first + crate::migrate::CHUNK_PAGES);
            let backend = HostBackend { pager: &self.inner, object: o, view: None };
            match evict(&o.table, &backend, Chunk::around(first, o.pages()), gpu) {
                Ok(n) => moved += n as u64,
                Err(e) => log::warn!("pager: evicting object {}: {e:?}", o.id),
            }
        }
        moved
    }
}

impl Handler<r::PagerReclaim> for PagerServer {
    fn handle(&self, _caller: &Capability, req: r::Request, _handles: Vec<OwnedFd>) -> Result<(r::Reply, Vec<OwnedFd>), r::ReclaimError> {
        match req {
            r::Request::Evict(r::Evict { gpu, bytes }) => {
                if self.inner.gpu().is_none() {
                    return Err(r::ReclaimError::GpuUnavailable);
                }
                let pages = self.evict(gpu.get(), bytes);
                Ok((r::Reply::Evict(r::Evicted { bytes: pages * 4096, pages }), vec![]))
            }
            r::Request::Usage(_) => {
                let (mut sram, mut vram) = (0u64, 0u64);
                for o in self.inner.objects.lock().unwrap_or_else(|e| e.into_inner()).values() {
                    for p in 0..o.pages() {
                        match o.table.info(p).map(|i| i.residency) {
                            Ok(Residency::System) => sram += 4096,
                            Ok(Residency::Device { .. }) => vram += 4096,
                            _ => {}
                        }
                    }
                }
                Ok((r::Reply::Usage(r::SvmUsage { sram_bytes: sram, vram_bytes: vram }), vec![]))
            }
        }
    }
}
