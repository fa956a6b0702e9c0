//! The `Pager` interface: requests of one client, served for its session.
//! Every number a client sends is checked before use (checked arithmetic,
//! ranges against the object, addresses in the user half, page-aligned);
//! every id is looked up in the caller's own tables, so another client's
//! id (or a stale or guessed one) names nothing.

use ipc_protocol::interfaces::pager::{self as p, PagerError as E};
use ipc_protocol::types::{Location, ObjectId, PageStateCode, ViewId};
use ipc_protocol::wire::BoundedVec;
use session::Handle;

use super::budget::{object_bytes, objects};
use super::object::Object;
use super::runtime::{RtError, Runtime};
use super::session::ClientSession;
use super::view::{ViewSpec, PAGE};
use super::Core;
use crate::state::{PageInfo, PageTable, Residency, StateError, WordStore};
use crate::sync::Arc;

/// The end of the user half of a 47-bit address space: no view reaches it.
pub const USER_END: u64 = 1 << 47;

type Answer<R> = Result<(p::Reply, Vec<<R as Runtime>::Handle>), E>;

/// Checks a range of `pages` pages from `first` against an object of
/// `object_pages` pages; returns its end.
pub(super) fn pages_in(first: u64, pages: u64, object_pages: usize) -> Result<u64, E> {
    let end = first.checked_add(pages).ok_or(E::OutOfRange)?;
    if pages == 0 || end > object_pages as u64 {
        return Err(E::OutOfRange);
    }
    Ok(end)
}

/// Checks `AttachView`'s client range: page-aligned, not empty, no wrap,
/// inside the user half. Returns its length in bytes.
pub fn view_range(addr: u64, pages: u64) -> Result<u64, E> {
    let len = pages.checked_mul(PAGE).ok_or(E::OutOfRange)?;
    let end = addr.checked_add(len).ok_or(E::OutOfRange)?;
    if pages == 0 || addr % PAGE != 0 || addr == 0 || end > USER_END {
        return Err(E::OutOfRange);
    }
    Ok(len)
}

fn state_code(i: PageInfo) -> PageStateCode {
    if i.locked {
        return PageStateCode::Migrating;
    }
    match i.residency {
        Residency::Empty => PageStateCode::Empty,
        Residency::System => PageStateCode::System,
        Residency::Device { .. } => PageStateCode::Device,
    }
}

impl<R: Runtime> Core<R> {
    /// Serves one `Pager` request of client session `s`.
    pub fn pager_request(
        self: &Arc<Self>,
        s: &Arc<ClientSession<R>>,
        req: p::Request,
        handles: Vec<R::Handle>,
    ) -> Answer<R> {
        use p::{Reply, Request};
        let done = |r: Reply| Ok((r, Vec::new()));
        match req {
            Request::CreateObject(c) => {
                let (o, h) = self.create_object(s, c.size_bytes)?;
                let reply = p::ObjectCreated {
                    object: ObjectId::raw(o.id.raw()),
                    size_bytes: c.size_bytes,
                };
                Ok((Reply::CreateObject(reply), vec![h]))
            }
            Request::DestroyObject(d) => {
                self.destroy_object(s, Handle::from_raw(d.object.get()))?;
                done(Reply::DestroyObject(p::Done {}))
            }
            Request::AttachView(a) => {
                let view = self.attach_view(s, &a, handles)?;
                done(Reply::AttachView(p::ViewAttached {
                    view: ViewId::raw(view.raw()),
                }))
            }
            Request::DetachView(d) => {
                self.detach_view(s, Handle::from_raw(d.view.get()))?;
                done(Reply::DetachView(p::Done {}))
            }
            Request::Advise(a) => {
                let o = s
                    .object(Handle::from_raw(a.object.get()))
                    .ok_or(E::NoSuchObject)?;
                let end = pages_in(a.first_page, a.pages, o.pages())?;
                self.advise(&o, a.first_page as usize, end as usize, a.advice)?;
                done(Reply::Advise(p::Done {}))
            }
            Request::Prefetch(f) => {
                let o = s
                    .object(Handle::from_raw(f.object.get()))
                    .ok_or(E::NoSuchObject)?;
                let end = pages_in(f.first_page, f.count.get() as u64, o.pages())?;
                if o.is_dying() {
                    return Err(E::NoSuchObject);
                }
                if f.to != Location::System {
                    // To VRAM: `Gpu::Prefetch` (core/prefetch.rs says why).
                    return Err(E::NotSupported);
                }
                // Both ends fit the object, whose page count is a usize.
                let moved =
                    self.prefetch_to_ram(&o, f.first_page as usize, end as usize, f.gpu.get());
                // At most `count` (a u16) pages moved.
                let moved = u16::try_from(moved).unwrap_or(u16::MAX);
                done(Reply::Prefetch(p::Prefetched { moved }))
            }
            Request::Snapshot(q) => {
                let o = s
                    .object(Handle::from_raw(q.object.get()))
                    .ok_or(E::NoSuchObject)?;
                let end = pages_in(q.first_page, q.count.get() as u64, o.pages())?;
                let states = (q.first_page..end)
                    .map(|pg| {
                        o.table
                            .info(pg as usize)
                            .map(state_code)
                            .map_err(|_| E::OutOfRange)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                done(Reply::Snapshot(p::PageStates {
                    states: BoundedVec::new(states).ok_or(E::OutOfRange)?,
                }))
            }
            Request::Accounting(_) => done(Reply::Accounting(self.accounting())),
            Request::Discard(d) => {
                let o = s
                    .object(Handle::from_raw(d.object.get()))
                    .ok_or(E::NoSuchObject)?;
                let end = pages_in(d.first_page, d.pages, o.pages())?;
                if o.is_dying() {
                    return Err(E::NoSuchObject);
                }
                // Both ends fit the object, whose page count is a usize.
                self.discard(&o, d.first_page as usize, end as usize)?;
                done(Reply::Discard(p::Done {}))
            }
            Request::FindView(f) => {
                let v = s.view_covering(f.addr).ok_or(E::NoSuchView)?;
                done(Reply::FindView(p::ViewFound {
                    view: ViewId::raw(v.client_id().unwrap_or(v.id).raw()),
                    object: ObjectId::raw(v.object.id.raw()),
                    addr: v.addr,
                    object_first_page: v.first_page as u64,
                    pages: v.pages as u64,
                }))
            }
            Request::SyncViews(_) => {
                self.sync_views(s)?;
                done(Reply::SyncViews(p::Done {}))
            }
        }
    }

    /// A new object of `size_bytes`, charged to `s`; the handle is the
    /// client's (sealed: it can neither shrink nor grow the object).
    fn create_object(
        &self,
        s: &Arc<ClientSession<R>>,
        size_bytes: u64,
    ) -> Result<(Arc<Object<R>>, R::Handle), E> {
        let pages = self.object_pages(size_bytes)?;
        let charge = s
            .ledger
            .charge(&[(objects, 1), (object_bytes, size_bytes)])
            .map_err(|_| E::OverBudget)?;
        let words = (pages as u64).saturating_mul(PageTable::BYTES_PER_PAGE as u64);
        let table =
            PageTable::new_in(pages, WordStore::Arena(s.meta.clone())).map_err(|e| match e {
                StateError::OutOfMetadata if s.ledger.metadata_over(words) => E::OverBudget,
                _ => E::OutOfMetadata,
            })?;
        let (memory, handle) = self.rt.create_memory(size_bytes).map_err(|_| E::Host)?;
        let o = s.insert_object(|id| Object::new(id, s.badge, memory, table, charge))?;
        // Generation 1 counts from 0, as a new object does.
        if self.first_seq() != 0 {
            o.seq
                .store(self.first_seq(), crate::sync::Ordering::Release);
        }
        self.remember_object(&o);
        Ok((o, handle))
    }

    /// Checks an object size (`CreateObject`'s, or a journal record's):
    /// whole pages, not empty, within the `object_bytes` budget; returns
    /// its pages.
    pub(super) fn object_pages(&self, size_bytes: u64) -> Result<usize, E> {
        if size_bytes == 0 || size_bytes % PAGE != 0 || size_bytes > self.cfg.budget.object_bytes {
            return Err(E::BadSize);
        }
        usize::try_from(size_bytes / PAGE).map_err(|_| E::BadSize)
    }

    fn destroy_object(&self, s: &Arc<ClientSession<R>>, id: Handle) -> Result<(), E> {
        let o = s.object(id).ok_or(E::NoSuchObject)?;
        if o.views().iter().any(|v| !v.forked) {
            return Err(E::Busy);
        }
        // Views a fork made go with the object: the child's mapping
        // becomes the kernel's (the memfd), with every page in RAM.
        self.end_object(s, &o)
    }

    /// Registers a view: the client mapped pages of its object at `addr`;
    /// the handle is its fault channel (host: its userfaultfd).
    fn attach_view(
        self: &Arc<Self>,
        s: &Arc<ClientSession<R>>,
        a: &p::AttachView,
        mut handles: Vec<R::Handle>,
    ) -> Result<Handle, E> {
        let o = s
            .object(Handle::from_raw(a.object.get()))
            .ok_or(E::NoSuchObject)?;
        pages_in(a.object_first_page, a.pages, o.pages())?;
        let len = view_range(a.addr, a.pages)?;
        let handle = handles.pop().ok_or(E::BadUserfaultfd)?;
        let port = self.rt.open_port(handle).map_err(|e| match e {
            RtError::Unsupported(call) => {
                log::warn!("pager: no fault delivery here (needs {})", call.proposal());
                E::NotSupported
            }
            _ => E::BadUserfaultfd,
        })?;
        let space = self.new_space(s, port, false)?;
        // Recorded before it is registered: every fault the range raises
        // finds its view.
        let spec = ViewSpec {
            object: o.clone(),
            addr: a.addr,
            first_page: a.object_first_page as usize,
            pages: a.pages as usize,
            space: space.clone(),
            forked: false,
        };
        let view = match self.record_view(spec) {
            Ok(v) => v,
            Err(e) => {
                self.stop_space(&space);
                return Err(e);
            }
        };
        view.set_client_id(view.id);
        self.note_view(&view);
        if o.is_dying() {
            // Its end took its views before this one was added.
            self.retire_view(&view, false);
            return Err(E::NoSuchObject);
        }
        if let Err(e) = self.rt.start_space(self, &space) {
            log::error!("pager: starting space {}: {e:?}", space.id);
            self.retire_view(&view, false);
            return Err(E::Host);
        }
        if self.rt.register(&space.port, a.addr, len).is_err() {
            self.retire_view(&view, false);
            return Err(E::BadUserfaultfd);
        }
        Ok(view.id)
    }

    fn detach_view(&self, s: &Arc<ClientSession<R>>, id: Handle) -> Result<(), E> {
        // A fork's twin is not the client's to detach.
        let v = s.view(id).filter(|v| !v.forked).ok_or(E::NoSuchView)?;
        self.retire_view(&v, true);
        self.tell_gone(&v);
        Ok(())
    }
}
