//! Sessions: what the pager keeps per client, and per peer server (STYLE:
//! "a session is the unit a server reasons about").
//!
//! A client session ([`ClientSession`], one per client badge) holds the
//! client's handle tables (objects and views, generation-tagged ids, at
//! most its budget of each, stored in the metadata arena), its address
//! spaces and its [`Ledger`]. The GPU server's `PagerMigrate` endpoint has
//! a [`GpuSession`]: the objects it opened (by the ids it knows them by)
//! and its collects awaiting their finalize. Handlers take the session they
//! act for; every table is per session, so a handler cannot name another
//! client's entry. The one place a session ends is in `end.rs`.

use allocator_api2::vec::Vec as AllocVec;
use ipc_protocol::interfaces::pager::PagerError;
use ipc_protocol::interfaces::pager_migrate::MigrateError;
use session::{Handle, HandleTable, Meta, TableError};

use super::budget::{views, Charge, Ledger};
use super::object::Object;
use super::runtime::Runtime;
use super::sync_views::ChangeTickets;
use super::view::{Space, View, ViewSpec};
use crate::migrate::{Chunk, Collected};
use crate::sync::{lock, Arc, AtomicBool, AtomicU32, AtomicUsize, Mutex, Ordering};

/// A view table entry: the record the id names now, and the id's place in
/// the owner's view budget.
pub struct ViewEntry<R: Runtime> {
    pub view: Arc<View<R>>,
    _charge: Charge,
}

pub struct ClientSession<R: Runtime> {
    pub badge: u64,
    /// Its slot: the range of handle indices its tables issue.
    pub slot: u32,
    pub ledger: Arc<Ledger>,
    pub meta: Meta,
    objects: Mutex<HandleTable<Arc<Object<R>>, Meta>>,
    views: Mutex<HandleTable<ViewEntry<R>, Meta>>,
    spaces: Mutex<AllocVec<Arc<Space<R>>, Meta>>,
    ended: AtomicBool,
    /// Reads of its spaces' view changes not applied yet (`SyncViews`).
    pub changes: ChangeTickets,
    /// Ranges (space id, start, end) that view changes took from views of
    /// its spaces, whose `ViewGone` the GPU server has not heard yet
    /// (`changes.rs`, "Order across spaces"). Bounded by its view budget:
    /// each entry is a view retired, and goes once its notes are sent.
    leaving: Mutex<Vec<(u64, u64, u64)>>,
}

/// Turns a table's error into the client's: its own budget, or the
/// server's arena (when the arena has less room than the client's quota).
pub fn table_error(e: TableError, ledger: &Ledger, meta: &Meta) -> PagerError {
    match e {
        TableError::Full => PagerError::OverBudget,
        TableError::OutOfMetadata => {
            let quota_left = ledger
                .metadata
                .limit()
                .saturating_sub(ledger.metadata.used());
            let arena = meta.arena();
            let arena_left = arena.size().saturating_sub(arena.used()) as u64;
            if arena_left < quota_left {
                PagerError::OutOfMetadata
            } else {
                PagerError::OverBudget
            }
        }
    }
}

impl<R: Runtime> ClientSession<R> {
    pub fn new(badge: u64, slot: u32, ledger: Arc<Ledger>, meta: Meta) -> Self {
        use super::budget::IDS_PER_SESSION;
        let limits = |n: u64| n.min(IDS_PER_SESSION as u64) as usize;
        let first = slot * IDS_PER_SESSION;
        let q = ledger.quotas();
        Self {
            badge,
            slot,
            objects: Mutex::new(HandleTable::in_range(
                first,
                IDS_PER_SESSION,
                limits(q.objects.limit()),
                meta.clone(),
            )),
            views: Mutex::new(HandleTable::in_range(
                first,
                IDS_PER_SESSION,
                limits(q.views.limit()),
                meta.clone(),
            )),
            spaces: Mutex::new(AllocVec::new_in(meta.clone())),
            changes: ChangeTickets::default(),
            leaving: Mutex::new(Vec::new()),
            ledger,
            meta,
            ended: AtomicBool::new(false),
        }
    }

    fn error(&self, e: TableError) -> PagerError {
        table_error(e, &self.ledger, &self.meta)
    }

    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// From now on nothing new is recorded (the session's end).
    pub fn mark_ended(&self) -> bool {
        !self.ended.swap(true, Ordering::AcqRel)
    }

    /// The caller's live object `id`.
    pub fn object(&self, id: Handle) -> Option<Arc<Object<R>>> {
        lock(&self.objects)
            .get(id)
            .filter(|o| !o.is_dying())
            .cloned()
    }

    /// Every object it holds now.
    pub fn objects(&self) -> Vec<Arc<Object<R>>> {
        lock(&self.objects).iter().map(|(_, o)| o.clone()).collect()
    }

    /// Records the object `make` builds from its new id.
    pub fn insert_object(
        &self,
        make: impl FnOnce(Handle) -> Object<R>,
    ) -> Result<Arc<Object<R>>, PagerError> {
        let mut t = lock(&self.objects);
        if self.is_ended() {
            return Err(PagerError::NoSuchObject);
        }
        let id = t
            .insert_with(|id| Arc::new(make(id)))
            .map_err(|e| self.error(e))?;
        t.get(id).cloned().ok_or(PagerError::NoSuchObject)
    }

    /// Records `o` under the id `id` a predecessor issued (a restart,
    /// `rebuild.rs`).
    pub fn insert_object_at(&self, id: Handle, o: Object<R>) -> Result<Arc<Object<R>>, PagerError> {
        let mut t = lock(&self.objects);
        let o = Arc::new(o);
        t.insert_at(id, o.clone()).map_err(|e| self.error(e))?;
        Ok(o)
    }

    /// Forgets object `o` (its end).
    pub fn remove_object(&self, o: &Object<R>) {
        let mut t = lock(&self.objects);
        if t.get(o.id).is_some_and(|x| core::ptr::eq(&**x, o)) {
            t.remove(o.id);
        }
    }

    /// The record the client's view id names now.
    pub fn view(&self, id: Handle) -> Option<Arc<View<R>>> {
        lock(&self.views).get(id).map(|e| e.view.clone())
    }

    /// Records a view: charges one view, gives it an id.
    pub fn insert_view(&self, spec: ViewSpec<R>) -> Result<Arc<View<R>>, PagerError> {
        let charge = self
            .ledger
            .charge(&[(views, 1)])
            .map_err(|_| PagerError::OverBudget)?;
        let mut t = lock(&self.views);
        if self.is_ended() {
            return Err(PagerError::NoSuchView);
        }
        let id = t
            .insert_with(|id| ViewEntry {
                view: Arc::new(View::new(id, spec)),
                _charge: charge,
            })
            .map_err(|e| self.error(e))?;
        t.get(id)
            .map(|e| e.view.clone())
            .ok_or(PagerError::NoSuchView)
    }

    /// Records a view under the id `id` a predecessor issued, and under
    /// the client's id `client` too when it is another (a moved view; a
    /// restart, `rebuild.rs`). Each id is charged one view, as when they
    /// were issued.
    pub fn insert_view_at(
        &self,
        id: Handle,
        client: Option<Handle>,
        spec: ViewSpec<R>,
    ) -> Result<Arc<View<R>>, PagerError> {
        let view = Arc::new(View::new(id, spec));
        let ids = [Some(id), client.filter(|c| *c != id)];
        let mut t = lock(&self.views);
        for (n, at) in ids.into_iter().flatten().enumerate() {
            let charge = self.ledger.charge(&[(views, 1)]);
            let entry = charge.map(|c| ViewEntry {
                view: view.clone(),
                _charge: c,
            });
            let put = entry
                .map_err(|_| PagerError::OverBudget)
                .and_then(|e| t.insert_at(at, e).map_err(|e| self.error(e)));
            if let Err(e) = put {
                if n == 1 {
                    t.remove(id);
                }
                return Err(e);
            }
        }
        if let Some(c) = client {
            view.set_client_id(c);
        }
        Ok(view)
    }

    /// The client's id `id` names `to` from now on, if it named `from`.
    pub fn repoint(&self, id: Handle, from: &View<R>, to: &Arc<View<R>>) -> bool {
        let mut t = lock(&self.views);
        match t.get_mut(id) {
            Some(e) if core::ptr::eq(&*e.view, from) => {
                e.view = to.clone();
                true
            }
            _ => false,
        }
    }

    /// Drops the ids that name `v` (its own, and the client's if it still
    /// names it).
    pub fn remove_view_ids(&self, v: &View<R>) {
        let mut t = lock(&self.views);
        for id in [Some(v.id), v.client_id()].into_iter().flatten() {
            if t.get(id).is_some_and(|e| core::ptr::eq(&*e.view, v)) {
                t.remove(id);
            }
        }
    }

    /// The client's view that covers client address `addr` now (not a
    /// fork's twin): the one with the lowest id if several do.
    pub fn view_covering(&self, addr: u64) -> Option<Arc<View<R>>> {
        let t = lock(&self.views);
        t.iter()
            .map(|(_, e)| &e.view)
            .filter(|v| !v.forked && !v.space.stopped() && addr >= v.addr && addr < v.end())
            .min_by_key(|v| v.id.raw())
            .cloned()
    }

    /// Every view record its ids name (for its end).
    pub fn view_records(&self) -> Vec<Arc<View<R>>> {
        let t = lock(&self.views);
        let mut v: Vec<Arc<View<R>>> = Vec::new();
        for (_, e) in t.iter() {
            if !v.iter().any(|x| Arc::ptr_eq(x, &e.view)) {
                v.push(e.view.clone());
            }
        }
        v
    }

    /// Forgets every id left (after its end retired their views).
    pub fn clear_views(&self) {
        lock(&self.views).drain(|_, _| {});
    }

    pub fn add_space(&self, s: Arc<Space<R>>) -> Result<(), PagerError> {
        let mut spaces = lock(&self.spaces);
        if self.is_ended() {
            return Err(PagerError::NoSuchView);
        }
        spaces
            .try_reserve(1)
            .map_err(|_| self.error(TableError::OutOfMetadata))?;
        spaces.push(s);
        Ok(())
    }

    pub fn remove_space(&self, s: &Space<R>) {
        lock(&self.spaces).retain(|x| !core::ptr::eq(&**x, s));
    }

    pub fn spaces(&self) -> Vec<Arc<Space<R>>> {
        lock(&self.spaces).iter().cloned().collect()
    }

    /// Whether a space other than `space` still shows the GPU server a
    /// view over part of `[start, end)`: a view it records there, or one
    /// that left whose `ViewGone` is not sent yet. Forked spaces (another
    /// address space, with no GPU bindings) do not count.
    pub fn shown_elsewhere(&self, space: u64, start: u64, end: u64) -> bool {
        let overlaps = |lo: u64, hi: u64| lo < end && start < hi;
        // Views first: a view is marked leaving before it is retired
        // (`follow_unmap`), so one retired after this look is found below.
        let recorded = self
            .spaces()
            .iter()
            .filter(|sp| sp.id != space && !sp.forked)
            .any(|sp| sp.views().iter().any(|v| overlaps(v.addr, v.end())));
        recorded
            || lock(&self.leaving)
                .iter()
                .any(|&(s, lo, hi)| s != space && overlaps(lo, hi))
    }
}

/// A range a view change took from a view, shown to the GPU server until
/// its `ViewGone` is sent: dropped after that note (or with the notes, were
/// they never sent), so it never outlives them.
pub struct Leaving<R: Runtime> {
    session: Arc<ClientSession<R>>,
    entry: (u64, u64, u64),
}

impl<R: Runtime> Leaving<R> {
    /// `[start, end)` of `session`'s space `space` left a view; the GPU
    /// server hears it (`ViewGone`) before the mark is dropped.
    pub fn new(session: &Arc<ClientSession<R>>, space: u64, start: u64, end: u64) -> Self {
        let entry = (space, start, end);
        lock(&session.leaving).push(entry);
        Self {
            session: session.clone(),
            entry,
        }
    }
}

impl<R: Runtime> Drop for Leaving<R> {
    fn drop(&mut self) {
        let mut l = lock(&self.session.leaving);
        if let Some(i) = l.iter().position(|e| *e == self.entry) {
            l.swap_remove(i);
        }
    }
}

/// Set in a GPU session's `in_flight` once its GPU is retired
/// (`Core::evacuate`). One atomic holds both, so a collect's reservation
/// and the retirement are ordered: a collect was reserved before (the
/// evacuation waits for its finalize) or it is refused; none slips
/// between the evacuation's last look and its end.
const RETIRED: usize = 1 << (usize::BITS - 1);

/// A collect the GPU server has not finalized yet.
pub struct InFlight<R: Runtime> {
    pub object: Arc<Object<R>>,
    pub chunk: Chunk,
    pub gpu: u8,
    pub collected: Collected,
    /// When it was collected (`Runtime::now_us`): past the lease it is
    /// undone (`Core::expire_collects`).
    pub since_us: u64,
    /// The GPU server generation that collected it (`Collect`).
    pub generation: u32,
}

/// The GPU server's `PagerMigrate` session.
pub struct GpuSession<R: Runtime> {
    pub badge: u64,
    /// The objects it opened views of, by the ids it knows them by.
    opened: Mutex<HandleTable<Arc<Object<R>>, Meta>>,
    collects: Mutex<AllocVec<InFlight<R>, Meta>>,
    /// Collects recorded or being made (at most `limit`).
    in_flight: AtomicUsize,
    limit: usize,
    ended: AtomicBool,
    /// The newest GPU server generation that took over (`Resident`):
    /// collects of older ones are refused or undone (`core/resident.rs`).
    generation: AtomicU32,
    /// Finalizes that took their collect and have not ended. Changed only
    /// with `collects` locked, so a collect is always either recorded or
    /// counted here (a plain atomic: the lock orders every change, and
    /// `Resident` reads it between pauses).
    finalizing: core::sync::atomic::AtomicUsize,
    /// The GPU whose VRAM this server owns (one server per GPU, by the
    /// endpoint it calls from): it moves pages into its own VRAM only,
    /// and the pager's notes about its objects go to that GPU's notifier.
    pub gpu: u8,
}

/// A finalize's collect, taken from the session: counted in `finalizing`
/// until dropped.
pub struct Taken<'a, R: Runtime> {
    pub rec: InFlight<R>,
    session: &'a GpuSession<R>,
}

impl<R: Runtime> Drop for Taken<'_, R> {
    fn drop(&mut self) {
        self.session
            .finalizing
            .fetch_sub(1, core::sync::atomic::Ordering::AcqRel);
    }
}

impl<R: Runtime> GpuSession<R> {
    pub fn new(badge: u64, gpu: u8, meta: Meta, objects: usize, collects: usize) -> Self {
        Self {
            badge,
            gpu,
            opened: Mutex::new(HandleTable::new_in(objects, meta.clone())),
            collects: Mutex::new(AllocVec::new_in(meta)),
            in_flight: AtomicUsize::new(0),
            limit: collects,
            ended: AtomicBool::new(false),
            generation: AtomicU32::new(0),
            finalizing: core::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Whether `gpu` is this server's GPU.
    pub fn owns_gpu(&self, gpu: u8) -> bool {
        self.gpu == gpu
    }

    /// Finalizes in progress (`Taken`).
    pub fn finalizing(&self) -> usize {
        self.finalizing.load(core::sync::atomic::Ordering::Acquire)
    }

    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// The id it knows `o` by, giving it one if it has none yet.
    pub fn open(&self, o: &Arc<Object<R>>) -> Option<Handle> {
        let mut t = lock(&self.opened);
        // A dying object's end closes it under this lock after marking it
        // dying: checked here, no entry can outlive the end.
        if self.is_ended() || o.is_dying() {
            return None;
        }
        if let Some(id) = o.gpu_id(self.gpu) {
            if t.get(id).is_some_and(|x| Arc::ptr_eq(x, o)) {
                return Some(id);
            }
        }
        let id = t.insert(o.clone()).ok()?;
        o.set_gpu_id(self.gpu, Some(id));
        Some(id)
    }

    /// Knows `o` as `id` again, the id a predecessor of the pager gave it
    /// (a restart, `rebuild.rs`).
    pub fn open_at(&self, id: Handle, o: &Arc<Object<R>>) -> bool {
        let mut t = lock(&self.opened);
        if t.insert_at(id, o.clone()).is_err() {
            return false;
        }
        o.set_gpu_id(self.gpu, Some(id));
        true
    }

    /// The object it knows as `id`.
    pub fn object(&self, id: Handle) -> Option<Arc<Object<R>>> {
        lock(&self.opened).get(id).cloned()
    }

    /// Forgets `o` (its end: the GPU server freed its VRAM).
    pub fn close(&self, o: &Object<R>) {
        let mut t = lock(&self.opened);
        if let Some(id) = o.gpu_id(self.gpu) {
            if t.get(id).is_some_and(|x| core::ptr::eq(&**x, o)) {
                t.remove(id);
            }
        }
        o.set_gpu_id(self.gpu, None);
    }

    /// Takes a place for one more collect, if the limit allows and the
    /// GPU is not retired.
    pub fn reserve_collect(&self) -> Result<(), MigrateError> {
        let mut cur = self.in_flight.load(Ordering::Acquire);
        loop {
            if cur & RETIRED != 0 {
                return Err(MigrateError::Retired);
            }
            if cur >= self.limit {
                return Err(MigrateError::OverBudget);
            }
            match self.in_flight.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(now) => cur = now,
            }
        }
    }

    /// Retires the GPU: no collect is reserved from now on. Returns the
    /// collects reserved before, which the evacuation waits out.
    pub fn retire(&self) -> usize {
        self.in_flight.fetch_or(RETIRED, Ordering::AcqRel) & !RETIRED
    }

    pub fn is_retired(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) & RETIRED != 0
    }

    pub fn unreserve_collect(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// Records a collect (its place reserved); gives it back when the
    /// session ended meanwhile or the arena has no room.
    pub fn record(&self, f: InFlight<R>) -> Result<(), Box<InFlight<R>>> {
        let mut c = lock(&self.collects);
        if self.is_ended() || c.try_reserve(1).is_err() {
            return Err(Box::new(f));
        }
        c.push(f);
        Ok(())
    }

    /// Takes the collect a finalize names.
    pub fn take(
        &self,
        o: &Object<R>,
        chunk: Chunk,
        gpu: u8,
        got: &ipc_protocol::types::PageMask,
    ) -> Option<Taken<'_, R>> {
        let mut c = lock(&self.collects);
        let at = c.iter().position(|f| {
            core::ptr::eq(&*f.object, o)
                && f.chunk == chunk
                && f.gpu == gpu
                && f.collected.got == *got
        })?;
        self.finalizing
            .fetch_add(1, core::sync::atomic::Ordering::AcqRel);
        Some(Taken {
            rec: c.swap_remove(at),
            session: self,
        })
    }

    /// Takes the collects recorded `lease_us` or longer before `now_us`.
    pub fn expired(&self, now_us: u64, lease_us: u64) -> Vec<InFlight<R>> {
        self.take_where(|f| now_us.saturating_sub(f.since_us) >= lease_us)
    }

    /// Takes the collects `pick` names.
    fn take_where(&self, pick: impl Fn(&InFlight<R>) -> bool) -> Vec<InFlight<R>> {
        let mut c = lock(&self.collects);
        let mut out = Vec::new();
        let mut i = 0;
        while i < c.len() {
            if pick(&c[i]) {
                out.push(c.swap_remove(i));
            } else {
                i += 1;
            }
        }
        out
    }

    /// Collects awaiting their finalize now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire) & !RETIRED
    }

    /// The newest GPU server generation that took over (0: none yet).
    pub fn generation(&self) -> u32 {
        self.generation.load(Ordering::Acquire)
    }

    /// Generation `g` took over (never lowers it).
    pub fn raise_generation(&self, g: u32) {
        self.generation.fetch_max(g, Ordering::AcqRel);
    }

    /// Takes the collects of generations before `g`, the session going on
    /// (a restarted server's predecessors will finalize none of them).
    pub fn take_older_than(&self, g: u32) -> Vec<InFlight<R>> {
        self.take_where(|f| f.generation < g)
    }

    /// The objects it opened, by the ids it knows them by, in id order.
    pub fn opened_objects(&self) -> Vec<(Handle, Arc<Object<R>>)> {
        let mut v: Vec<_> = lock(&self.opened)
            .iter()
            .map(|(h, o)| (h, o.clone()))
            .collect();
        v.sort_by_key(|(h, _)| h.raw());
        v
    }

    /// Ends it: nothing new is recorded; returns the collects in flight
    /// and the objects it opened.
    pub fn end(&self) -> (Vec<InFlight<R>>, Vec<Arc<Object<R>>>) {
        self.ended.store(true, Ordering::Release);
        let collects: Vec<InFlight<R>> = lock(&self.collects).drain(..).collect();
        let mut opened = Vec::new();
        lock(&self.opened).drain(|_, o| opened.push(o));
        (collects, opened)
    }
}
