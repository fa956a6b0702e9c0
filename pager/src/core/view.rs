//! Views and address spaces (DESIGN.md 2 and 5, "Unmap / mremap / fork /
//! exit"). A view is a record only: a range of a client address space
//! that shows pages of one object; a changed mapping gets a new record.
//!
//! **Ids.** Every record has an id in its owner session's view table (its
//! own entry). The id a client got from `AttachView` keeps naming the view
//! when the view moves whole (a plain mremap): that entry is pointed at
//! the moved record, whose `client_id` it becomes. The GPU server binds by
//! the client's id and learns a moved record's own id from `ViewCopied`,
//! so the ids it may hold for a record are [`View::gpu_ids`]: both go
//! (`ViewGone`) when the record does.

use session::Handle;

use super::budget::Charge;
use super::object::Object;
use super::runtime::Runtime;
use super::session::ClientSession;
use crate::sync::RwLockWriteGuard;
use crate::sync::{read, write, Arc, AtomicBool, AtomicU32, Ordering, RwLock, RwLockReadGuard};

pub const PAGE: u64 = 4096;

pub struct View<R: Runtime> {
    /// Its own entry in the owner's view table.
    pub id: Handle,
    /// The client's id that names this record now (raw; 0: none).
    client_id: AtomicU32,
    pub object: Arc<Object<R>>,
    /// Client address of the view's first page.
    pub addr: u64,
    pub first_page: usize,
    pub pages: usize,
    /// The address space it is registered with.
    pub space: Arc<Space<R>>,
    /// Born from a fork: the child's copy of a view. The client did not
    /// attach it and cannot detach or bind it; it goes when the child
    /// unmaps it or dies, or with the object.
    pub forked: bool,
}

/// What a new record shows: the object's pages `first_page..+pages` at
/// `addr` of `space`.
pub struct ViewSpec<R: Runtime> {
    pub object: Arc<Object<R>>,
    pub addr: u64,
    pub first_page: usize,
    pub pages: usize,
    pub space: Arc<Space<R>>,
    pub forked: bool,
}

impl<R: Runtime> View<R> {
    pub fn new(id: Handle, spec: ViewSpec<R>) -> Self {
        Self {
            id,
            client_id: AtomicU32::new(0),
            object: spec.object,
            addr: spec.addr,
            first_page: spec.first_page,
            pages: spec.pages,
            space: spec.space,
            forked: spec.forked,
        }
    }

    pub fn len(&self) -> u64 {
        self.pages as u64 * PAGE
    }

    pub fn is_empty(&self) -> bool {
        self.pages == 0
    }

    pub fn end(&self) -> u64 {
        self.addr.saturating_add(self.len())
    }

    /// The part of the same object pages seen from `[addr, addr + pages)`
    /// of `space`: the spec of a moved, split or forked record.
    pub fn part(
        &self,
        addr: u64,
        first_page: usize,
        pages: usize,
        space: Arc<Space<R>>,
        forked: bool,
    ) -> ViewSpec<R> {
        ViewSpec {
            object: self.object.clone(),
            addr,
            first_page,
            pages,
            space,
            forked,
        }
    }

    pub fn client_id(&self) -> Option<Handle> {
        match self.client_id.load(Ordering::Acquire) {
            0 => None,
            raw => Some(Handle::from_raw(raw)),
        }
    }

    pub fn set_client_id(&self, id: Handle) {
        self.client_id.store(id.raw(), Ordering::Release);
    }

    /// The ids the GPU server may have bindings of this record under.
    pub fn gpu_ids(&self) -> impl Iterator<Item = Handle> {
        let own = self.id;
        let client = self.client_id().filter(|c| *c != own);
        core::iter::once(own).chain(client)
    }

    /// The client address of object page `page`, if this view maps it.
    pub fn address_of(&self, page: usize) -> Option<u64> {
        let off = page.checked_sub(self.first_page)?;
        (off < self.pages).then(|| self.addr + off as u64 * PAGE)
    }

    /// The object page at client address `addr`, if inside the view.
    pub fn page_at(&self, addr: u64) -> Option<usize> {
        let off = addr.checked_sub(self.addr)? / PAGE;
        (off < self.pages as u64).then(|| self.first_page + off as usize)
    }
}

/// One client address space (host: one client userfaultfd), the views
/// registered with it, and what its runtime delivers faults through.
pub struct Space<R: Runtime> {
    /// For logs.
    pub id: u64,
    /// The session it belongs to (a fork's child keeps its parent's).
    pub session: Arc<ClientSession<R>>,
    pub port: R::Port,
    /// Born of a fork: the child's copy of a client address space.
    pub forked: bool,
    views: RwLock<Vec<Arc<View<R>>>>,
    /// Held for writing while view changes are read and applied; for
    /// reading by a write-protect pass over this space's views (the
    /// view-change guard, `host/space.rs`).
    changing: RwLock<()>,
    stopped: AtomicBool,
    /// Its place in the owner's budget (and its threads'), given back once
    /// the last reference, its threads' included, is gone.
    _charge: Charge,
}

impl<R: Runtime> Space<R> {
    pub fn new(
        id: u64,
        session: Arc<ClientSession<R>>,
        port: R::Port,
        forked: bool,
        charge: Charge,
    ) -> Self {
        Self {
            id,
            session,
            port,
            forked,
            views: RwLock::new(Vec::new()),
            changing: RwLock::new(()),
            stopped: AtomicBool::new(false),
            _charge: charge,
        }
    }

    pub fn views(&self) -> Vec<Arc<View<R>>> {
        read(&self.views).clone()
    }

    /// The view that covers `addr` now.
    pub fn view_at(&self, addr: u64) -> Option<Arc<View<R>>> {
        read(&self.views)
            .iter()
            .find(|v| addr >= v.addr && addr < v.end())
            .cloned()
    }

    pub fn add_view(&self, v: Arc<View<R>>) {
        write(&self.views).push(v);
    }

    /// Removes `v`; returns whether the space has no view left.
    pub fn remove_view(&self, v: &View<R>) -> bool {
        let mut views = write(&self.views);
        views.retain(|x| !core::ptr::eq(&**x, v));
        views.is_empty()
    }

    /// Keeps view changes from being applied while the guard lives
    /// (waiting for one being applied to finish).
    pub fn hold_changes(&self) -> RwLockReadGuard<'_, ()> {
        read(&self.changing)
    }

    /// Held by the runtime from reading view changes to applying them.
    pub fn applying_changes(&self) -> RwLockWriteGuard<'_, ()> {
        write(&self.changing)
    }

    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Marks it stopped; returns whether this call did.
    pub(super) fn mark_stopped(&self) -> bool {
        !self.stopped.swap(true, Ordering::AcqRel)
    }
}
