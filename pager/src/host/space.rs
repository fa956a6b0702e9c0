//! Address spaces: one client userfaultfd each, the views registered with
//! it, and the threads that serve it (DESIGN.md 2 and 5, "Unmap / mremap /
//! fork / exit").
//!
//! **Events in order.** One reader thread per space reads the userfaultfd
//! and applies view changes (fork, remap, unmap) in the order the kernel
//! queued them, before it reads more; page faults go to a queue that the
//! space's workers serve. The reader never migrates a page, so a view
//! change (which holds the client's `fork`/`mremap`/`munmap` until it is
//! read) is never stuck behind a fault that waits on a page.
//!
//! **The view-change guard.** The kernel completes a view-change event when
//! it is *read*; the pager updates its views when it has *applied* it. In
//! between, a new mapping of an object's pages exists that the pager does
//! not know (the child's copy after fork, the moved range after mremap), and
//! a collect that write-protected only the known views would leave writers
//! there free to write into a page being copied to VRAM. So the reader holds
//! [`Space::changing`] for writing from its `read` to the end of applying
//! what it read, and [`protect_views`](super::backend) holds it for reading
//! across its write-protect pass, then checks the object's views did not
//! change. A write-protect that finds an event pending (`EAGAIN`) drops the
//! guards and starts over; ranges protected before a fork or a move carry
//! their protection to the copies.
//!
//! **Moves.** `mremap` sends `REMAP(from, to, len)`; a plain move then sends
//! `UNMAP(from, from + len)` for the old range, `MREMAP_DONTUNMAP` does not
//! (the old range stays mapped and registered). The pager gives the new
//! range a view at once (faults there are served right away) and tells the
//! GPU server before it reads the next event (`GpuNotify::ViewCopied`: the
//! old view's bindings get twins at the new address), so by the time the
//! unmap of a plain move lets the client's mremap return, GPU work at the
//! new address finds it bound. The unmap then ends the old view
//! (`ViewGone`) and the client's id for it names the new view from then on
//! (an alias). Without that unmap both ranges stay views of the object.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

use super::objects::View;
use super::uffd::{Event, Uffd};
use super::Inner;

/// A fault read from a space's userfaultfd, waiting for a worker.
#[derive(Debug, Clone, Copy)]
pub struct Fault {
    pub address: u64,
    pub wp: bool,
}

/// One client userfaultfd and the views registered with it.
pub struct Space {
    pub id: u32,
    /// Badge of the client (a forked child's space keeps its parent's).
    pub owner: u64,
    pub uffd: Uffd,
    /// Born of a fork: the child's copy of a client's address space.
    pub forked: bool,
    views: RwLock<Vec<Arc<View>>>,
    /// Held for writing while view-change events are read and applied;
    /// for reading by a write-protect pass over this space's views.
    changing: RwLock<()>,
    stop: AtomicBool,
    faults: Mutex<VecDeque<Fault>>,
    fault_ready: Condvar,
}

impl Space {
    pub fn new(id: u32, owner: u64, uffd: Uffd, forked: bool) -> Self {
        Self {
            id,
            owner,
            uffd,
            forked,
            views: RwLock::new(Vec::new()),
            changing: RwLock::new(()),
            stop: AtomicBool::new(false),
            faults: Mutex::new(VecDeque::new()),
            fault_ready: Condvar::new(),
        }
    }

    pub fn views(&self) -> Vec<Arc<View>> {
        self.views.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The view that covers `addr` now.
    pub fn view_at(&self, addr: u64) -> Option<Arc<View>> {
        self.views
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|v| addr >= v.addr && addr < v.end())
            .cloned()
    }

    pub(super) fn add_view(&self, v: Arc<View>) {
        self.views
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(v);
    }

    /// Removes `v`; returns whether the space has no view left.
    pub(super) fn remove_view(&self, v: &View) -> bool {
        let mut views = self.views.write().unwrap_or_else(|e| e.into_inner());
        views.retain(|x| !std::ptr::eq(&**x, v));
        views.is_empty()
    }

    /// Waits for view changes being applied to finish and keeps new ones
    /// from being applied while the guard lives.
    pub fn hold_changes(&self) -> RwLockReadGuard<'_, ()> {
        self.changing.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Stops the reader and, once the queue is empty, the workers.
    /// Returns whether this call stopped it (false: it was stopped).
    pub fn stop(&self) -> bool {
        let first = !self.stop.swap(true, Ordering::AcqRel);
        let _q = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        self.fault_ready.notify_all();
        first
    }

    fn push(&self, f: Fault) {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(f);
        self.fault_ready.notify_one();
    }

    /// The next fault to serve; `None` once the space stopped.
    fn pop(&self) -> Option<Fault> {
        let mut q = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(f) = q.pop_front() {
                return Some(f);
            }
            if self.stopped() {
                return None;
            }
            q = self.fault_ready.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Starts the reader and `workers` fault workers of `space`.
pub fn start(inner: &Arc<Inner>, space: &Arc<Space>, workers: usize) -> std::io::Result<()> {
    let (i, s) = (inner.clone(), space.clone());
    std::thread::Builder::new()
        .name(format!("pager-space{}-events", space.id))
        .spawn(move || read_events(i, s))?;
    for t in 0..workers.max(1) {
        let (i, s) = (inner.clone(), space.clone());
        std::thread::Builder::new()
            .name(format!("pager-space{}-fault{t}", space.id))
            .spawn(move || serve_faults(i, s))?;
    }
    Ok(())
}

/// A move seen as `REMAP` whose old range has not been unmapped (yet).
struct PendingMove {
    from: u64,
    len: u64,
    /// (old view, the view made for its moved part, whether all of it moved).
    parts: Vec<(Arc<View>, Arc<View>, bool)>,
}

/// What the reader tells the GPU server once the guard is dropped, before
/// it reads the next event.
enum GpuNote {
    Gone(u32),
    Copied {
        view: u32,
        new_view: u32,
        from: u64,
        to: u64,
    },
}

fn read_events(inner: Arc<Inner>, space: Arc<Space>) {
    let mut events = Vec::with_capacity(16);
    let mut pending: Option<PendingMove> = None;
    let mut notes = Vec::new();
    while !space.stopped() {
        events.clear();
        if !space.uffd.wait_readable(Duration::from_millis(100)) {
            continue;
        }
        {
            log::trace!("space {}: taking the change lock", space.id);
            let _changing = space.changing.write().unwrap_or_else(|e| e.into_inner());
            log::trace!("space {}: reading", space.id);
            if let Err(e) = space.uffd.read_events(&mut events) {
                log::warn!(
                    "pager: space {}: userfaultfd read failed: {e}; stopping it",
                    space.id
                );
                drop(_changing);
                inner.space_gone(&space);
                break;
            }
            for ev in &events {
                match *ev {
                    Event::PageFault { address, wp, .. } => space.push(Fault { address, wp }),
                    Event::Fork { fd } => {
                        pending = None;
                        follow_fork(&inner, &space, fd);
                    }
                    Event::Remap { from, to, len } => {
                        pending = Some(follow_remap(&inner, &space, from, to, len, &mut notes))
                    }
                    Event::Unmap { start, end } => {
                        follow_unmap(&inner, &space, start, end, pending.take(), &mut notes)
                    }
                    other => log::debug!("pager: space {}: {other:?} ignored", space.id),
                }
            }
            log::trace!("space {}: applied {:?}", space.id, events);
        }
        for n in notes.drain(..) {
            match n {
                GpuNote::Gone(view) => inner.tell_gpu_view_gone(view),
                GpuNote::Copied {
                    view,
                    new_view,
                    from,
                    to,
                } => inner.tell_gpu_view_copied(view, new_view, from, to),
            }
        }
    }
    space.stop();
}

fn serve_faults(inner: Arc<Inner>, space: Arc<Space>) {
    while let Some(f) = space.pop() {
        inner.serve_fault(&space, f);
    }
}

/// The client forked: the child's copies of the registered ranges report to
/// the new descriptor `fd`. Each view gets a twin in the child reaching the
/// same object (shared memory, not copy-on-write).
fn follow_fork(inner: &Arc<Inner>, parent: &Arc<Space>, fd: i32) {
    if fd < 0 {
        log::error!(
            "pager: space {}: fork event without a descriptor",
            parent.id
        );
        return;
    }
    // SAFETY: the kernel installed `fd` in our table for this event and
    // nothing else owns it.
    let uffd = Uffd::new(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) });
    let child = Arc::new(Space::new(inner.new_id(), parent.owner, uffd, true));
    let views = parent.views();
    if views.is_empty() {
        // The parent's views went meanwhile: nothing to follow. Dropping
        // the descriptor hands the child's ranges back to the kernel.
        return;
    }
    for v in views {
        let twin = inner.record_view(v.derive(
            inner.new_id(),
            v.addr,
            v.first_page,
            v.pages,
            child.clone(),
            true,
        ));
        log::info!(
            "pager: fork: view {} of object {} has a twin {} in space {}",
            v.id,
            v.object,
            twin.id,
            child.id
        );
    }
    if let Err(e) = inner.start_space(&child) {
        log::error!("pager: fork: starting space {}: {e}", child.id);
    }
}

/// `[from, from + len)` now also appears at `to`: each view's moved part
/// becomes a view there at once, and the bindings of a view that moved
/// whole get twins there.
fn follow_remap(
    inner: &Arc<Inner>,
    space: &Arc<Space>,
    from: u64,
    to: u64,
    len: u64,
    notes: &mut Vec<GpuNote>,
) -> PendingMove {
    let mut parts = Vec::new();
    for v in space.views() {
        let (lo, hi) = (v.addr.max(from), v.end().min(from + len));
        if lo >= hi {
            continue;
        }
        let first = v.first_page + ((lo - v.addr) / 4096) as usize;
        let moved = inner.record_view(v.derive(
            inner.new_id(),
            to + (lo - from),
            first,
            ((hi - lo) / 4096) as usize,
            space.clone(),
            v.forked,
        ));
        log::info!(
            "pager: remap: view {} pages {first}.. also at {:#x} (view {})",
            v.id,
            moved.addr,
            moved.id
        );
        let whole = lo == v.addr && hi == v.end();
        if whole && !v.forked {
            notes.push(GpuNote::Copied {
                view: v.id,
                new_view: moved.id,
                from: v.addr,
                to: moved.addr,
            });
        }
        parts.push((v, moved, whole));
    }
    PendingMove { from, len, parts }
}

/// `[start, end)` was unmapped: views lose that part. When it is the old
/// range of the move just seen, the client's id of a view that moved whole
/// names the moved view from now on.
fn follow_unmap(
    inner: &Arc<Inner>,
    space: &Arc<Space>,
    start: u64,
    end: u64,
    pending: Option<PendingMove>,
    notes: &mut Vec<GpuNote>,
) {
    if let Some(m) = pending.filter(|m| start == m.from && end <= m.from + m.len) {
        for (old, moved, whole) in m.parts {
            if whole && old.end() <= end {
                // A plain move: the client's id of the old view names the
                // moved one from now on.
                inner.alias_view(old.id, moved.id);
                log::info!(
                    "pager: move: view {} now at {:#x} (view {})",
                    old.id,
                    moved.addr,
                    moved.id
                );
            }
        }
    }
    for v in space.views() {
        let (lo, hi) = (v.addr.max(start), v.end().min(end));
        if lo < hi {
            log::info!("pager: unmap: view {} lost {lo:#x}..{hi:#x}", v.id);
            for (a, b) in [(v.addr, lo), (hi, v.end())] {
                if a < b {
                    let first = v.first_page + ((a - v.addr) / 4096) as usize;
                    inner.record_view(v.derive(
                        inner.new_id(),
                        a,
                        first,
                        ((b - a) / 4096) as usize,
                        space.clone(),
                        v.forked,
                    ));
                }
            }
            inner.retire_view(&v, false);
            if !v.forked {
                notes.push(GpuNote::Gone(v.id));
            }
        }
    }
}
