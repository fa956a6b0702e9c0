//! The pager's Linux runtime: memfd objects, views registered with the
//! client's userfaultfd, fault service threads, and the IPC handlers for
//! clients (`Pager`) and GPU servers (`PagerMigrate`).

pub mod backend;
pub mod objects;
pub mod space;
pub mod uffd;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ipc_protocol::client::Client;
use ipc_protocol::interfaces::gpu_notify::{AttachStaging, GpuNotify, ViewCopied, ViewGone};
use ipc_protocol::interfaces::{pager as p, pager_migrate as m, pager_reclaim as r};
use ipc_protocol::server::Handler;
use ipc_protocol::types::{ObjectId, PageMask, PageStateCode, Seq, ViewId};
use ipc_protocol::wire::BoundedVec;
use ipc_protocol::Capability;

use self::backend::HostBackend;
use self::objects::{Object, Staging, View};
use self::space::{Fault, Space};
use self::uffd::Uffd;
use crate::migrate::{collect, cpu_fault, evict, finalize, Chunk, Policy};
use crate::state::Residency;
use crate::sync::Ordering;

/// Limits and sizes of one pager.
#[derive(Debug, Clone)]
pub struct Config {
    /// Fault workers per address space (client userfaultfd).
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
        Self {
            threads_per_view: 4,
            max_object_bytes: 4 << 30,
            staging_slots: 8,
            skip_invalidate: false,
        }
    }
}

pub struct Inner {
    cfg: Config,
    objects: Mutex<HashMap<u32, Arc<Object>>>,
    /// Every view by id (a view's parts and copies get ids of their own).
    views: Mutex<HashMap<u32, Arc<View>>>,
    spaces: Mutex<HashMap<u32, Arc<Space>>>,
    /// A moved view's old id -> its new view's id (the client keeps using
    /// the id it was given).
    aliases: Mutex<HashMap<u32, u32>>,
    next_id: AtomicU32,
    gpu: OnceLock<Arc<Client<GpuNotify>>>,
    pub staging: Staging,
    /// A 2 MiB zero buffer for first-touch fills.
    pub zeros: Vec<u8>,
}

/// Follows `id` through the aliases of moved views to a view that exists.
fn resolve_alias(
    views: &HashMap<u32, Arc<View>>,
    aliases: &HashMap<u32, u32>,
    mut id: u32,
) -> Option<u32> {
    for _ in 0..16 {
        if views.contains_key(&id) {
            return Some(id);
        }
        id = *aliases.get(&id)?;
    }
    None
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    pub fn gpu(&self) -> Option<&Arc<Client<GpuNotify>>> {
        self.gpu.get()
    }

    pub fn skips_invalidate(&self) -> bool {
        self.cfg.skip_invalidate
    }

    fn object(&self, id: u32) -> Option<Arc<Object>> {
        locked(&self.objects).get(&id).cloned()
    }

    fn own_object(&self, caller: &Capability, id: ObjectId) -> Result<Arc<Object>, p::PagerError> {
        self.object(id.get())
            .filter(|o| o.owner == caller.badge.0 && !o.dying.load(Ordering::Acquire))
            .ok_or(p::PagerError::NoSuchObject)
    }

    fn new_id(&self) -> u32 {
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Records `view` with its object and its space (replacing the record
    /// of its id, which the caller retires).
    fn record_view(&self, view: View) -> Arc<View> {
        let view = Arc::new(view);
        if let Some(o) = self.object(view.object) {
            o.add_view(view.clone());
        }
        view.space.add_view(view.clone());
        locked(&self.views).insert(view.id, view.clone());
        view
    }

    /// Forgets `view`: the object no longer reaches its addresses. With
    /// `unregister`, the range is handed back to the kernel first. A space
    /// left without views stops (closing its userfaultfd).
    fn retire_view(&self, view: &View, unregister: bool) {
        if unregister {
            let _ = view.uffd().unregister(view.addr, view.len());
        }
        {
            let mut views = locked(&self.views);
            if views
                .get(&view.id)
                .is_some_and(|v| std::ptr::eq(&**v, view))
            {
                views.remove(&view.id);
            }
        }
        if let Some(o) = self.object(view.object) {
            o.remove_view(view);
        }
        if view.space.remove_view(view) {
            let _ = self.stop_space(&view.space);
        }
    }

    fn start_space(self: &Arc<Self>, space: &Arc<Space>) -> std::io::Result<()> {
        locked(&self.spaces).insert(space.id, space.clone());
        space::start(self, space, self.cfg.threads_per_view)
    }

    /// Stops `space`; returns whether this call stopped it.
    fn stop_space(&self, space: &Space) -> bool {
        let first = space.stop();
        locked(&self.spaces).remove(&space.id);
        first
    }

    /// The process behind `space` is gone: its views go (their GPU
    /// bindings too), the pages stay the object's.
    pub(crate) fn space_gone(&self, space: &Space) {
        if !self.stop_space(space) {
            return;
        }
        for v in space.views() {
            self.retire_view(&v, false);
            if !v.forked {
                self.tell_gpu_view_gone(v.id);
            }
        }
    }

    /// Rule 8 for views: a GPU binding of a view that went away is
    /// unmapped before the pager forgets it.
    fn tell_gpu_view_gone(&self, view: u32) {
        if let Some(gpu) = self.gpu() {
            if let Err(e) = gpu.call(ViewGone {
                view: ViewId::raw(view),
            }) {
                log::warn!("pager: telling the GPU server view {view} went away: {e}");
            }
        }
    }

    fn tell_gpu_view_copied(&self, view: u32, new_view: u32, from: u64, to: u64) {
        if let Some(gpu) = self.gpu() {
            if let Err(e) = gpu.call(ViewCopied {
                view: ViewId::raw(view),
                new_view: ViewId::raw(new_view),
                from,
                to,
            }) {
                log::warn!("pager: telling the GPU server view {view} is also at {to:#x}: {e}");
            }
        }
    }

    /// From now on the client's view id `old` names view `new` (a move).
    fn alias_view(&self, old: u32, new: u32) {
        locked(&self.aliases).insert(old, new);
    }

    /// The view a client's id names now: itself, or where it moved.
    fn view_by_id(&self, id: u32) -> Option<Arc<View>> {
        let views = locked(&self.views);
        let aliases = locked(&self.aliases);
        resolve_alias(&views, &aliases, id).and_then(|id| views.get(&id).cloned())
    }

    /// Serves one CPU fault of `space` and wakes the faulting thread.
    fn serve_fault(&self, space: &Space, f: Fault) {
        let page_addr = f.address & !4095;
        let mut delay = Duration::from_micros(100);
        loop {
            // The view that covers the address now: views move and go
            // while faults wait in the queue.
            let Some(view) = space.view_at(f.address) else {
                // Registered, but no view: an mremap grew a view (the
                // kernel sends no event for the new tail). Hand the page
                // back to the kernel rather than leave the thread faulting.
                log::warn!(
                    "pager: space {}: fault at {:#x} in no view; unregistering that page",
                    space.id,
                    f.address
                );
                let _ = space.uffd.unregister(page_addr, 4096);
                break;
            };
            let (Some(object), Some(page)) = (self.object(view.object), view.page_at(f.address))
            else {
                break;
            };
            log::trace!(
                "pager: space {} fault at {:#x} (view {}, object {} page {page}, wp {})",
                space.id,
                f.address,
                view.id,
                object.id,
                f.wp
            );
            let r = if f.wp {
                self.clear_stale_protection(&object, &view, page, page_addr)
            } else {
                let backend = HostBackend {
                    pager: self,
                    object: &object,
                    view: Some(&view),
                };
                cpu_fault(&object.table, &backend, page, Policy::Rules)
                    .map(|_| ())
                    .map_err(|e| format!("{e:?}"))
            };
            match r {
                Ok(()) => break,
                Err(e) if space.stopped() => {
                    log::debug!(
                        "pager: space {} stopped while a fault failed: {e}",
                        space.id
                    );
                    return;
                }
                Err(e) => {
                    log::warn!(
                        "pager: fault on page {page} of object {}: {e}; retrying",
                        object.id
                    );
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_millis(100));
                }
            }
        }
        match space.uffd.wake(page_addr, 4096) {
            Err(rustix::io::Errno::SRCH) => self.space_gone(space),
            Err(e) => log::debug!("pager: wake at {page_addr:#x}: {e}"),
            Ok(()) => {}
        }
    }

    /// A writer blocked by write protection: once no migration holds the
    /// page, clear the protection in this view under the page lock. Usually
    /// finalize already did; a mapping made while the page was protected
    /// (a fork's copy, a moved range) inherits it and is cleared here.
    fn clear_stale_protection(
        &self,
        object: &Object,
        view: &View,
        page: usize,
        page_addr: u64,
    ) -> Result<(), String> {
        loop {
            object
                .table
                .wait_unlocked(page)
                .map_err(|e| format!("{e:?}"))?;
            match object.table.try_lock(page).map_err(|e| format!("{e:?}"))? {
                Some(state) => {
                    let r = if state == Residency::System {
                        view.uffd().write_protect(page_addr, 4096, false)
                    } else {
                        Ok(())
                    };
                    let _ = object.table.unlock(page, state);
                    return match r {
                        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
                        Err(rustix::io::Errno::SRCH) => {
                            self.space_gone(&view.space);
                            Ok(())
                        }
                        Err(e) => Err(e.to_string()),
                    };
                }
                None => std::thread::yield_now(),
            }
        }
    }

    /// Locks `page` for the object's end, waiting out any migration that
    /// holds it (it ends: no new one starts on a dying object).
    fn lock_for_end(&self, o: &Object, page: usize) -> Option<Residency> {
        loop {
            match o.table.try_lock(page) {
                Ok(Some(r)) => return Some(r),
                Ok(None) => {
                    let _ = o.table.wait_unlocked(page);
                    std::thread::yield_now();
                }
                Err(_) => return None,
            }
        }
    }

    /// No view reaches `o` any more: its pages in VRAM go back to the GPU
    /// server's allocator (their data is dropped with the object). Waits
    /// for migrations in flight, so none finishes into a forgotten object.
    fn free_device_pages(&self, o: &Object) -> Result<(), p::PagerError> {
        use ipc_protocol::interfaces::gpu_notify::FreePages;
        use ipc_protocol::types::PageCount;
        for first in (0..o.pages()).step_by(crate::migrate::CHUNK_PAGES) {
            let chunk = Chunk::around(first, o.pages());
            let mut held = PageMask::EMPTY;
            for (i, p) in chunk.pages() {
                match self.lock_for_end(o, p) {
                    Some(Residency::Device { .. }) => held.set(i),
                    Some(r) => {
                        let _ = o.table.unlock(p, r);
                    }
                    None => {}
                }
            }
            if held.is_empty() {
                continue;
            }
            let gpu = self.gpu().ok_or(p::PagerError::GpuUnavailable)?;
            let count = PageCount::new(chunk.count as u16).ok_or(p::PagerError::OutOfRange)?;
            let r = gpu.call(FreePages {
                object: ObjectId::raw(o.id),
                first_page: chunk.first as u64,
                count,
                pages: held,
            });
            for i in held.iter() {
                let _ = o.table.unlock(chunk.first + i, Residency::Empty);
            }
            r.map_err(|_| p::PagerError::GpuUnavailable)?;
        }
        Ok(())
    }

    /// Moves every page of `o` in VRAM back to RAM (waiting out migrations
    /// in flight): used before an object's forked views are handed to the
    /// kernel, so the child keeps the data.
    fn bring_all_back(&self, o: &Object) {
        for first in (0..o.pages()).step_by(crate::migrate::CHUNK_PAGES) {
            let chunk = Chunk::around(first, o.pages());
            for _ in 0..100 {
                let backend = HostBackend {
                    pager: self,
                    object: o,
                    view: None,
                };
                let _ = evict(&o.table, &backend, chunk, 0);
                let left = chunk
                    .pages()
                    .filter(|(_, p)| {
                        o.table
                            .info(*p)
                            .is_ok_and(|i| matches!(i.residency, Residency::Device { .. }))
                    })
                    .map(|(_, p)| p)
                    .next();
                match left {
                    None => break,
                    Some(p) => {
                        let _ = o.table.wait_unlocked(p);
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
        }
    }

    /// Ends object `o`: no new collect starts, its views go (forked ones
    /// get the data back in RAM first), its VRAM is freed, it is forgotten.
    fn end_object(&self, o: &Arc<Object>) -> Result<(), p::PagerError> {
        o.dying.store(true, Ordering::Release);
        let views = o.views_snapshot();
        if views.iter().any(|v| v.forked) {
            self.bring_all_back(o);
        }
        for v in &views {
            self.retire_view(v, true);
            if !v.forked {
                self.tell_gpu_view_gone(v.id);
            }
        }
        let r = self.free_device_pages(o);
        locked(&self.objects).remove(&o.id);
        // Aliases that lead to no view name nothing any more.
        let views = locked(&self.views);
        let mut aliases = locked(&self.aliases);
        let dead: Vec<u32> = aliases
            .keys()
            .filter(|k| resolve_alias(&views, &aliases, **k).is_none())
            .copied()
            .collect();
        for k in dead {
            aliases.remove(&k);
        }
        r
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
                spaces: Mutex::new(HashMap::new()),
                aliases: Mutex::new(HashMap::new()),
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
        let dup = rustix::io::fcntl_dupfd_cloexec(&self.inner.staging.memfd, 0)
            .map_err(|e| e.to_string())?;
        let size = (self.inner.staging.slots * objects::SLOT_BYTES) as u64;
        gpu.call_with_handles(AttachStaging { size_bytes: size }, vec![dup])
            .map_err(|e| e.to_string())?;
        self.inner
            .gpu
            .set(Arc::new(gpu))
            .map_err(|_| "GPU already attached".to_string())
    }

    /// The views that reach `object` now: (client address, first page, pages, born of a fork).
    pub fn views_of_object(&self, object: u32) -> Vec<(u64, usize, usize, bool)> {
        let mut v: Vec<_> = self
            .inner
            .object(object)
            .map(|o| o.views_snapshot())
            .unwrap_or_default()
            .iter()
            .map(|v| (v.addr, v.first_page, v.pages, v.forked))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    pub fn object_state(&self, object: u32, page: usize) -> Option<Residency> {
        self.inner
            .object(object)
            .and_then(|o| o.table.info(page).ok())
            .map(|i| i.residency)
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
        let spaces: Vec<Arc<Space>> = locked(&inner.spaces)
            .values()
            .filter(|s| s.owner == badge)
            .cloned()
            .collect();
        for s in spaces {
            for v in s.views() {
                inner.retire_view(&v, true);
            }
            let _ = inner.stop_space(&s);
        }
        let objects: Vec<Arc<Object>> = locked(&inner.objects)
            .values()
            .filter(|o| o.owner == badge)
            .cloned()
            .collect();
        for o in objects {
            if let Err(e) = inner.end_object(&o) {
                log::warn!(
                    "pager: freeing VRAM of object {} of a dead client: {e:?}",
                    o.id
                );
            }
        }
        log::info!("pager: client {badge} gone; its views and objects were released");
    }
}

impl Handler<p::Pager> for PagerServer {
    fn disconnected(&self, caller: &Capability) {
        self.client_gone(caller.badge.0);
    }

    fn handle(
        &self,
        caller: &Capability,
        req: p::Request,
        mut handles: Vec<OwnedFd>,
    ) -> Result<(p::Reply, Vec<OwnedFd>), p::PagerError> {
        use p::{PagerError as E, Reply, Request};
        let inner = &self.inner;
        match req {
            Request::CreateObject(p::CreateObject { size_bytes }) => {
                if size_bytes == 0
                    || size_bytes % 4096 != 0
                    || size_bytes > inner.cfg.max_object_bytes
                {
                    return Err(E::BadSize);
                }
                let memfd = rustix::fs::memfd_create("svm-object", rustix::fs::MemfdFlags::CLOEXEC)
                    .map_err(|_| E::Host)?;
                rustix::fs::ftruncate(&memfd, size_bytes).map_err(|_| E::Host)?;
                let client_copy =
                    rustix::io::fcntl_dupfd_cloexec(&memfd, 0).map_err(|_| E::Host)?;
                let id = inner
                    .next_id
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let object = Arc::new(Object::new(
                    id,
                    caller.badge.0,
                    memfd,
                    (size_bytes / 4096) as usize,
                ));
                locked(&inner.objects).insert(id, object);
                Ok((
                    Reply::CreateObject(p::ObjectCreated {
                        object: ObjectId::raw(id),
                        size_bytes,
                    }),
                    vec![client_copy],
                ))
            }
            Request::DestroyObject(p::DestroyObject { object }) => {
                let o = inner.own_object(caller, object)?;
                if o.views_snapshot().iter().any(|v| !v.forked) {
                    return Err(E::Busy);
                }
                // Views a fork made go with the object: the child's mapping
                // becomes the kernel's (the memfd), with every page in RAM.
                inner.end_object(&o)?;
                Ok((Reply::DestroyObject(p::Done {}), vec![]))
            }
            Request::AttachView(p::AttachView {
                object,
                addr,
                object_first_page,
                pages,
            }) => {
                let o = inner.own_object(caller, object)?;
                let end = object_first_page.checked_add(pages).ok_or(E::OutOfRange)?;
                if pages == 0 || end > o.pages() as u64 || addr % 4096 != 0 {
                    return Err(E::OutOfRange);
                }
                let uffd = Uffd::new(handles.pop().ok_or(E::BadUserfaultfd)?);
                uffd.handshake(uffd::FEATURES)
                    .map_err(|_| E::BadUserfaultfd)?;
                let space = Arc::new(Space::new(inner.new_id(), caller.badge.0, uffd, false));
                // Recorded before it is registered: every fault the range
                // raises finds its view.
                let view = inner.record_view(View {
                    id: inner.new_id(),
                    owner: caller.badge.0,
                    object: o.id,
                    addr,
                    first_page: object_first_page as usize,
                    pages: pages as usize,
                    space: space.clone(),
                    forked: false,
                });
                if let Err(e) = inner.start_space(&space) {
                    log::error!("pager: starting space {}: {e}", space.id);
                    inner.retire_view(&view, false);
                    return Err(E::Host);
                }
                if space.uffd.register(addr, pages * 4096).is_err() {
                    inner.retire_view(&view, false);
                    return Err(E::BadUserfaultfd);
                }
                Ok((
                    Reply::AttachView(p::ViewAttached {
                        view: ViewId::raw(view.id),
                    }),
                    vec![],
                ))
            }
            Request::DetachView(p::DetachView { view }) => {
                let v = inner
                    .view_by_id(view.get())
                    .filter(|v| v.owner == caller.badge.0 && !v.forked)
                    .ok_or(E::NoSuchView)?;
                inner.retire_view(&v, true);
                inner.tell_gpu_view_gone(v.id);
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
            Request::Snapshot(p::Snapshot {
                object,
                first_page,
                count,
            }) => {
                let o = inner.own_object(caller, object)?;
                let end = first_page
                    .checked_add(count.get() as u64)
                    .ok_or(E::OutOfRange)?;
                if end > o.pages() as u64 {
                    return Err(E::OutOfRange);
                }
                let states = (first_page..end)
                    .map(|pg| {
                        o.table
                            .info(pg as usize)
                            .map(state_code)
                            .map_err(|_| E::OutOfRange)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((
                    Reply::Snapshot(p::PageStates {
                        states: BoundedVec::new(states).ok_or(E::OutOfRange)?,
                    }),
                    vec![],
                ))
            }
        }
    }
}

impl Handler<m::PagerMigrate> for PagerServer {
    fn handle(
        &self,
        _caller: &Capability,
        req: m::Request,
        _handles: Vec<OwnedFd>,
    ) -> Result<(m::Reply, Vec<OwnedFd>), m::MigrateError> {
        use m::{MigrateError as E, Reply, Request};
        let inner = &self.inner;
        let chunk_of = |o: &Object, first: u64, count: u16| -> Result<Chunk, E> {
            let end = first.checked_add(count as u64).ok_or(E::OutOfRange)?;
            if end > o.pages() as u64 {
                return Err(E::OutOfRange);
            }
            Ok(Chunk {
                first: first as usize,
                count: count as usize,
            })
        };
        match req {
            Request::OpenView(m::OpenView { view, client }) => {
                let v = inner.view_by_id(view.get()).ok_or(E::NoSuchView)?;
                // A fork's twin is not the client's to bind.
                if v.forked {
                    return Err(E::NoSuchView);
                }
                if v.owner != client {
                    return Err(E::NotOwner);
                }
                let o = inner.object(v.object).ok_or(E::NoSuchObject)?;
                let fd = rustix::io::fcntl_dupfd_cloexec(&o.memfd, 0).map_err(|_| E::Host)?;
                Ok((
                    Reply::OpenView(m::ViewOpened {
                        object: ObjectId::raw(o.id),
                        addr: v.addr,
                        object_first_page: v.first_page as u64,
                        pages: v.pages as u64,
                    }),
                    vec![fd],
                ))
            }
            Request::GetPages(m::GetPages {
                object,
                first_page,
                count,
            }) => {
                let o = inner
                    .object(object.get())
                    .filter(|o| !o.dying.load(Ordering::Acquire))
                    .ok_or(E::NoSuchObject)?;
                let chunk = chunk_of(&o, first_page, count.get())?;
                let seq = o.seq.load(Ordering::Acquire);
                let (mut system, mut device, mut empty) =
                    (PageMask::EMPTY, PageMask::EMPTY, PageMask::EMPTY);
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
                Ok((
                    Reply::GetPages(m::Pages {
                        seq: Seq::raw(seq),
                        system,
                        device,
                        empty,
                    }),
                    vec![],
                ))
            }
            Request::Collect(m::Collect {
                object,
                first_page,
                count,
                gpu,
            }) => {
                // A dying object takes no new migration (its end waits for
                // the ones in flight).
                let o = inner
                    .object(object.get())
                    .filter(|o| !o.dying.load(Ordering::Acquire))
                    .ok_or(E::NoSuchObject)?;
                let chunk = chunk_of(&o, first_page, count.get())?;
                let backend = HostBackend {
                    pager: inner,
                    object: &o,
                    view: None,
                };
                let seq = o.seq.load(Ordering::Acquire);
                let c = collect(&o.table, &backend, chunk, gpu.get()).map_err(|_| E::Host)?;
                if !c.got.is_empty() {
                    o.collections
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(first_page)
                        .or_default()
                        .push((gpu.get(), chunk, c));
                }
                Ok((
                    Reply::Collect(m::Collected {
                        seq: Seq::raw(seq),
                        got: c.got,
                        zero: c.zero,
                        device: c.device,
                    }),
                    vec![],
                ))
            }
            Request::Finalize(m::Finalize {
                object,
                first_page,
                count,
                gpu,
                vram_first_pfn,
                got,
                migrated,
            }) => {
                let o = inner.object(object.get()).ok_or(E::NoSuchObject)?;
                chunk_of(&o, first_page, count.get())?;
                if got.is_empty() {
                    // A collect that got nothing has nothing to finalize.
                    return Ok((
                        Reply::Finalize(m::Finalized {
                            device: 0,
                            returned: 0,
                        }),
                        vec![],
                    ));
                }
                let (chunk, c) = {
                    let mut cols = o.collections.lock().unwrap_or_else(|e| e.into_inner());
                    let list = cols.get_mut(&first_page).ok_or(E::NotCollected)?;
                    let at = list
                        .iter()
                        .position(|(g, ch, c)| {
                            *g == gpu.get() && ch.count == count.get() as usize && c.got == got
                        })
                        .ok_or(E::NotCollected)?;
                    let (_, chunk, c) = list.swap_remove(at);
                    if list.is_empty() {
                        cols.remove(&first_page);
                    }
                    (chunk, c)
                };
                let backend = HostBackend {
                    pager: inner,
                    object: &o,
                    view: None,
                };
                let (device, returned) = finalize(
                    &o.table,
                    &backend,
                    chunk,
                    &c,
                    &migrated.and(&c.got),
                    gpu.get(),
                    vram_first_pfn,
                )
                .map_err(|_| E::Host)?;
                Ok((
                    Reply::Finalize(m::Finalized {
                        device: device as u16,
                        returned: returned as u16,
                    }),
                    vec![],
                ))
            }
        }
    }
}

impl PagerServer {
    /// Moves up to `bytes` of `gpu`'s VRAM pages back to RAM, chunk by chunk
    /// with trylocks (rule 1); returns the pages moved.
    pub fn evict(&self, gpu: u8, bytes: u64) -> u64 {
        let want = bytes.div_ceil(4096);
        let mut objects: Vec<Arc<Object>> = locked(&self.inner.objects).values().cloned().collect();
        objects.sort_by_key(|o| o.id);
        let mut hand = self.evict_hand.lock().unwrap_or_else(|e| e.into_inner());
        // Every chunk once, starting at the hand.
        let chunks: Vec<(usize, usize)> = objects
            .iter()
            .enumerate()
            .flat_map(|(i, o)| {
                (0..o.pages())
                    .step_by(crate::migrate::CHUNK_PAGES)
                    .map(move |p| (i, p))
            })
            .collect();
        let start = chunks
            .iter()
            .position(|&(i, p)| (objects[i].id, p) >= *hand)
            .unwrap_or(0);
        let mut moved = 0u64;
        for k in 0..chunks.len() {
            if moved >= want {
                break;
            }
            let (i, first) = chunks[(start + k) % chunks.len()];
            let o = &objects[i];
            *hand = (o.id, first + crate::migrate::CHUNK_PAGES);
            let backend = HostBackend {
                pager: &self.inner,
                object: o,
                view: None,
            };
            match evict(&o.table, &backend, Chunk::around(first, o.pages()), gpu) {
                Ok(n) => moved += n as u64,
                Err(e) => log::warn!("pager: evicting object {}: {e:?}", o.id),
            }
        }
        moved
    }
}

impl Handler<r::PagerReclaim> for PagerServer {
    fn handle(
        &self,
        _caller: &Capability,
        req: r::Request,
        _handles: Vec<OwnedFd>,
    ) -> Result<(r::Reply, Vec<OwnedFd>), r::ReclaimError> {
        match req {
            r::Request::Evict(r::Evict { gpu, bytes }) => {
                if self.inner.gpu().is_none() {
                    return Err(r::ReclaimError::GpuUnavailable);
                }
                let pages = self.evict(gpu.get(), bytes);
                Ok((
                    r::Reply::Evict(r::Evicted {
                        bytes: pages * 4096,
                        pages,
                    }),
                    vec![],
                ))
            }
            r::Request::Usage(_) => {
                let (mut sram, mut vram) = (0u64, 0u64);
                for o in locked(&self.inner.objects).values() {
                    for p in 0..o.pages() {
                        match o.table.info(p).map(|i| i.residency) {
                            Ok(Residency::System) => sram += 4096,
                            Ok(Residency::Device { .. }) => vram += 4096,
                            _ => {}
                        }
                    }
                }
                Ok((
                    r::Reply::Usage(r::SvmUsage {
                        sram_bytes: sram,
                        vram_bytes: vram,
                    }),
                    vec![],
                ))
            }
        }
    }
}
