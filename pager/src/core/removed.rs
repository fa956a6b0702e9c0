//! `madvise(MADV_DONTNEED | MADV_REMOVE)` on a view (issue 16 item 3,
//! discard without copy). SVM memory is the client's anonymous memory, so
//! dropping it through any view drops the object's data: the pages become
//! EMPTY wherever they were (VRAM freed, nothing copied back) and read
//! zeros at their next touch, as `Pager::Discard` does.
//!
//! The kernel reports the range (`UFFD_EVENT_REMOVE`) after zapping the
//! caller's page-table entries and lets `madvise` return once the event is
//! read. The runtime finds the object ranges under the space's view-change
//! guard ([`Core::removed_ranges`], views only read) and discards them
//! after letting go of it (a discard waits on page locks, and a migration
//! holding one may wait for the guard in its write-protect pass), before
//! it serves any fault read after the event and before it hands back the
//! read's `SyncViews` ticket.

use super::object::Object;
use super::runtime::Runtime;
use super::view::{Space, PAGE};
use super::Core;
use crate::sync::Arc;

/// Pages `[first, end)` of an object a client dropped.
pub struct Removed<R: Runtime> {
    pub object: Arc<Object<R>>,
    pub first: usize,
    pub end: usize,
}

impl<R: Runtime> Core<R> {
    /// The object ranges under `[start, end)` of `space`'s views.
    pub fn removed_ranges(&self, space: &Space<R>, start: u64, end: u64) -> Vec<Removed<R>> {
        space
            .views()
            .into_iter()
            .filter_map(|v| {
                let (lo, hi) = (v.addr.max(start), v.end().min(end));
                if lo >= hi {
                    return None;
                }
                let first = v.first_page + ((lo - v.addr) / PAGE) as usize;
                let end = v.first_page + (hi - v.addr).div_ceil(PAGE) as usize;
                Some(Removed {
                    object: v.object.clone(),
                    first,
                    end,
                })
            })
            .collect()
    }

    /// Discards what [`Self::removed_ranges`] found; a range that fails is
    /// logged (its pages keep their data, as `discard` leaves them).
    pub fn discard_removed(&self, removed: &mut Vec<Removed<R>>) {
        for r in removed.drain(..) {
            if r.object.is_dying() {
                continue;
            }
            if let Err(e) = self.discard(&r.object, r.first, r.end) {
                log::warn!(
                    "pager: madvise removal of object {:#x} pages {}..{}: {e:?}",
                    r.object.id.raw(),
                    r.first,
                    r.end
                );
            }
        }
    }
}
