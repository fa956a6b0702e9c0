//! View changes the runtime reports, applied to the records (DESIGN.md 5,
//! "Unmap / mremap / fork / exit"), in the order the client made them.
//! The runtime applies each while it holds `Space::applying_changes` and
//! sends the GPU notes they return once it has let go of it, before it
//! takes the next change (`host/space.rs` tells why).
//!
//! **Moves.** A remap of `[from, from + len)` to `to` gives the moved part
//! of each view a record at once (faults there are served right away), and
//! a view that moved whole gets its bindings twinned at the new address
//! (`ViewCopied`, for every id the GPU server may bind it by). A plain
//! move then unmaps the old range: the client's id of a view that moved
//! whole names the moved record from then on, and the old record goes
//! (`ViewGone`). With `MREMAP_DONTUNMAP` both records stay.
//!
//! **Splits.** A munmap or a move of part of a view splits it: each part
//! left or moved gets a record, and each id the GPU server may bind the old
//! view by gets a twin binding over the part (`ViewPart`), sent before
//! `ViewGone` ends the old one, so GPU work on a part never meets a range
//! that is bound by nothing. The client finds the parts' ids with
//! `FindView`. Pages no view reaches then leave VRAM (`unreached.rs`).
//!
//! **Order across spaces.** Each userfaultfd is a space with its own
//! reader, and a process may have several (one per attached view), so the
//! kernel's order holds within a space only. One thread's buffer may leave
//! `X` and another's move into `X` at once; the second reader can then
//! twin its bindings at `X` while the GPU server still binds the first
//! view there (its `ViewGone` not sent yet): the twin cannot follow and
//! GPU work at `X` faults. The kernel moved a view into a range only once
//! nothing was mapped there, so any other view the pager still shows there
//! is stale and its end is read or on its way. A move's notes therefore
//! wait (`GpuNote::Moved`) until no other space of the client's address
//! space shows a view over the destination: none records one there, and
//! the `ViewGone` of each that left is sent (`GpuNote::Left`). The wait is
//! outside the view-change guard and holds no page lock; the view it waits
//! for left earlier in the kernel's order, so waits never form a cycle.
//!
//! **Budget.** A change the client's budget has no room for (a split or a
//! fork past its views or spaces) is not followed: that range is handed
//! back to the kernel (the object's RAM pages stay reachable there; pages
//! in VRAM read as zeros through it), and the pager logs it. A whole fork
//! child past the spaces budget is guarded instead on the host: it
//! becomes an orphan whose faults end with `SIGBUS` (`host/orphans.rs`).

use std::time::Instant;

use session::Handle;

use super::object::Object;
use super::runtime::{PartNote, Pause, Runtime};
use super::session::Leaving;
use super::sync_views::SYNC_LIMIT;
use super::view::{Space, View, PAGE};
use super::Core;
use crate::sync::Arc;

/// What the GPU server must hear about a change, and what is done after.
pub enum GpuNote<R: Runtime> {
    Gone(Handle),
    Copied {
        view: Handle,
        new_view: Handle,
        from: u64,
        to: u64,
    },
    Part(PartNote),
    /// Views of the space moved into `[start, end)`: the notes after this
    /// wait until no other space shows the GPU server a view there.
    Moved(Arc<Space<R>>, u64, u64),
    /// The GPU server heard the notes before this (the `ViewGone` of a
    /// view that left): dropping the mark lets moves into its range go on.
    Left(Leaving<R>),
    /// Pages `first..end` of the object lost a view: those no view
    /// reaches now leave VRAM (`unreached.rs`).
    Lost(Arc<Object<R>>, usize, usize),
}

/// A view's part a remap moved: (old view, the record made for its moved
/// part, whether all of it moved).
type MovedPart<R> = (Arc<View<R>>, Arc<View<R>>, bool);

/// A move seen as a remap whose old range has not been unmapped (yet).
pub struct PendingMove<R: Runtime> {
    from: u64,
    len: u64,
    parts: Vec<MovedPart<R>>,
}

impl<R: Runtime> Core<R> {
    /// The client forked: the child's copies of the registered ranges
    /// report to `child` now. Each view gets a twin in the child reaching
    /// the same object (shared memory, not copy-on-write).
    pub fn follow_fork(&self, parent: &Arc<Space<R>>, child: R::Port) -> Option<Arc<Space<R>>> {
        let views = parent.views();
        if views.is_empty() {
            // The parent's views went meanwhile: nothing to follow. Dropping
            // the channel hands the child's ranges back to the kernel.
            return None;
        }
        let child = match self.new_space(&parent.session, child, true) {
            Ok(c) => c,
            Err(e) => {
                log::warn!(
                    "pager: space {}: fork not followed ({e:?}): the child's ranges are the \
                     kernel's",
                    parent.id
                );
                return None;
            }
        };
        for v in views {
            let spec = v.part(v.addr, v.first_page, v.pages, child.clone(), true);
            match self.record_view(spec) {
                Ok(twin) => log::info!(
                    "pager: fork: view {:#x} of object {:#x} has a twin {:#x} in space {}",
                    v.id.raw(),
                    v.object.id.raw(),
                    twin.id.raw(),
                    child.id
                ),
                Err(e) => self.not_followed(&child, v.addr, v.len(), e),
            }
        }
        if child.views().is_empty() {
            self.stop_space(&child);
            return None;
        }
        Some(child)
    }

    /// A change the budget has no room for: its range goes to the kernel.
    fn not_followed(&self, space: &Space<R>, addr: u64, len: u64, e: impl core::fmt::Debug) {
        log::warn!(
            "pager: space {}: {addr:#x}+{len:#x} not followed ({e:?}); handed to the kernel",
            space.id
        );
        let _ = self.rt.unregister(&space.port, addr, len);
    }

    /// `[from, from + len)` now also appears at `to`: each view's moved part
    /// becomes a view there at once, and the bindings of a view that moved
    /// whole get twins there.
    pub fn follow_remap(
        &self,
        space: &Arc<Space<R>>,
        from: u64,
        to: u64,
        len: u64,
        notes: &mut Vec<GpuNote<R>>,
    ) -> PendingMove<R> {
        let mut parts = Vec::new();
        let end = from.saturating_add(len);
        if !space.forked {
            notes.push(GpuNote::Moved(space.clone(), to, to.saturating_add(len)));
        }
        for v in space.views() {
            let (lo, hi) = (v.addr.max(from), v.end().min(end));
            if lo >= hi {
                continue;
            }
            let first = v.first_page + ((lo - v.addr) / PAGE) as usize;
            let addr = to.saturating_add(lo - from);
            let pages = ((hi - lo) / PAGE) as usize;
            let moved = match self.record_view(v.part(addr, first, pages, space.clone(), v.forked))
            {
                Ok(m) => m,
                Err(e) => {
                    self.not_followed(space, addr, hi - lo, e);
                    continue;
                }
            };
            log::info!(
                "pager: remap: view {:#x} pages {first}.. also at {addr:#x} (view {:#x})",
                v.id.raw(),
                moved.id.raw()
            );
            let whole = lo == v.addr && hi == v.end();
            if whole && !v.forked {
                for id in v.gpu_ids() {
                    notes.push(GpuNote::Copied {
                        view: id,
                        new_view: moved.id,
                        from: v.addr,
                        to: moved.addr,
                    });
                }
            } else if !v.forked {
                Self::note_part(&v, &moved, lo, notes);
            }
            parts.push((v, moved, whole));
        }
        PendingMove { from, len, parts }
    }

    /// `[start, end)` was unmapped: views lose that part. When it is the old
    /// range of the move just seen, the client's id of a view that moved
    /// whole names the moved record from now on.
    pub fn follow_unmap(
        &self,
        space: &Arc<Space<R>>,
        start: u64,
        end: u64,
        pending: Option<PendingMove<R>>,
        notes: &mut Vec<GpuNote<R>>,
    ) {
        if let Some(m) = pending.filter(|m| start == m.from && end <= m.from.saturating_add(m.len))
        {
            for (old, moved, whole) in m.parts {
                if whole && old.end() <= end {
                    self.alias(&old, &moved);
                }
            }
        }
        for v in space.views() {
            let (lo, hi) = (v.addr.max(start), v.end().min(end));
            if lo >= hi {
                continue;
            }
            log::info!("pager: unmap: view {:#x} lost {lo:#x}..{hi:#x}", v.id.raw());
            for (a, b) in [(v.addr, lo), (hi, v.end())] {
                if a < b {
                    let first = v.first_page + ((a - v.addr) / PAGE) as usize;
                    let spec = v.part(a, first, ((b - a) / PAGE) as usize, space.clone(), v.forked);
                    match self.record_view(spec) {
                        Ok(part) if !v.forked => Self::note_part(&v, &part, a, notes),
                        Ok(_) => {}
                        Err(e) => self.not_followed(space, a, b - a, e),
                    }
                }
            }
            // Marked leaving before it stops being a view of the space: a
            // move into its range (`Moved`) finds it as one or the other.
            let leaving =
                (!v.forked).then(|| Leaving::new(&space.session, space.id, v.addr, v.end()));
            self.retire_view(&v, false);
            if let Some(leaving) = leaving {
                notes.extend(v.gpu_ids().map(GpuNote::Gone));
                notes.push(GpuNote::Left(leaving));
            }
            // After `Gone`: no binding of the view reaches the lost pages.
            let first = v.first_page + ((lo - v.addr) / PAGE) as usize;
            let end = first + ((hi - lo) / PAGE) as usize;
            notes.push(GpuNote::Lost(v.object.clone(), first, end));
        }
    }

    /// Rule 8 for split views: the GPU bindings of `old` over the pages of
    /// `part` (which shows what `old` showed at `was`) get twins for
    /// `part` before `old` goes, so GPU work there keeps running. The
    /// client learns `part`'s id from `Pager::FindView`.
    fn note_part(old: &View<R>, part: &View<R>, was: u64, notes: &mut Vec<GpuNote<R>>) {
        for id in old.gpu_ids() {
            notes.push(GpuNote::Part(PartNote {
                view: id,
                new_view: part.id,
                first_page: part.first_page,
                pages: part.pages,
                from: was,
                to: part.addr,
            }));
        }
    }

    /// A plain move: the client's id of `old` names `moved` from now on.
    fn alias(&self, old: &View<R>, moved: &Arc<View<R>>) {
        let Some(id) = old.client_id() else { return };
        if old.space.session.repoint(id, old, moved) {
            moved.set_client_id(id);
            self.note_view(moved);
            log::info!(
                "pager: move: view {:#x} now at {:#x} (record {:#x})",
                id.raw(),
                moved.addr,
                moved.id.raw()
            );
        }
    }

    /// Tells the GPU server what the changes just applied need it to know.
    pub fn send_notes(&self, notes: &mut Vec<GpuNote<R>>) {
        for n in notes.drain(..) {
            match n {
                GpuNote::Gone(view) => self.rt.view_gone(view),
                GpuNote::Copied {
                    view,
                    new_view,
                    from,
                    to,
                } => self.rt.view_copied(view, new_view, from, to),
                GpuNote::Part(p) => self.rt.view_part(&p),
                GpuNote::Moved(space, start, end) => self.wait_shown_only_here(&space, start, end),
                GpuNote::Left(leaving) => drop(leaving),
                GpuNote::Lost(o, first, end) => self.release_unreached(&o, first, end),
            }
        }
    }

    /// Waits until no other space of `space`'s client shows the GPU server
    /// a view over `[start, end)`, where views of `space` just moved
    /// ("Order across spaces"). A session whose spaces are not one address
    /// space (a client's own doing) stops waiting after [`SYNC_LIMIT`]:
    /// its twins there may then not follow, as its changes are its own.
    fn wait_shown_only_here(&self, space: &Space<R>, start: u64, end: u64) {
        let deadline = Instant::now() + SYNC_LIMIT;
        let mut attempt = 0;
        while space.session.shown_elsewhere(space.id, start, end) {
            if Instant::now() >= deadline {
                log::warn!(
                    "pager: space {}: another space still shows {start:#x}..{end:#x}",
                    space.id
                );
                return;
            }
            self.rt.pause(Pause::ViewOrder, attempt);
            attempt = attempt.saturating_add(1);
        }
    }
}
