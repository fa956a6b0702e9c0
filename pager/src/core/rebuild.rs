//! A restarted pager takes over (issue 14): before it serves anything it
//! rebuilds its clients' objects, address spaces and views from the
//! journal (`crate::journal`) and the descriptors the keeper held, and
//! every page's state from the two places that know it.
//!
//! **Page states.** None are journaled; after a restart each page is
//! - **System** if its memfd holds data: the data in RAM is the page's.
//!   A copy back that landed (`UFFDIO_COPY`) before the predecessor died
//!   wrote the memfd, and the CPU may have written since; a migration to
//!   VRAM whose finalize did not punch the hole left the page in RAM,
//!   write-protected and unchanged. The GPU server's frame for such a page,
//!   if it holds one, is a stale copy and is freed (`FreePages`);
//! - **Device** at the frame the GPU server holds for it
//!   (`GpuNotify::Frames`) if the memfd has a hole there: a finalize
//!   punched it, so VRAM has the only copy;
//! - **Empty** otherwise: never touched.
//!
//! No page is locked: the collects in flight belonged to the dead pager's
//! session; the GPU server's calls for them fail `PeerRestarted`, keeping
//! the frames of a finalize that went unanswered
//! (`FinalizeError::Restarted`), which the rule above then sorts out. Its
//! first `Frames` answer waits until those migrations ended (xe-svm's
//! `frames.rs`).
//!
//! **Ids.** Each client gets back the session slot its ids carry, and
//! every object, view and the GPU server's object ids come back under the
//! ids that were issued (`HandleTable::insert_at`), charged to the same
//! budgets. A record that fails a check (no descriptor, a range outside
//! its object, an id out of its session's range, over budget) is dropped
//! and cleared; what depends on it goes with it.
//!
//! **Waiting faults.** The client userfaultfds outlived the dead pager
//! (the keeper held them), so their ranges stayed registered and faults
//! waited in the kernel. Faults it had read but not served are woken
//! (`Runtime::wake`) once the spaces are served again, and raised anew;
//! write protection a migration left is cleared, waking blocked writers.

use session::Handle;

use super::budget::{object_bytes, objects, IDS_PER_SESSION};
use super::client::{pages_in, view_range};
use super::object::Object;
use super::runtime::{Kept, RtError, Runtime};
use super::session::{ClientSession, GpuSession};
use super::view::{Space, ViewSpec};
use super::Core;
use crate::journal::{Record, ViewRecord};
use crate::migrate::Chunk;
use crate::state::{PageTable, Residency, WordStore, MAX_PFN};
use crate::sync::Arc;
use ipc_protocol::types::PageMask;

/// What a rebuild restored and dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rebuilt {
    pub objects: usize,
    pub spaces: usize,
    pub views: usize,
    /// Records that failed a check (cleared).
    pub dropped: usize,
    /// Pages found in VRAM (Device).
    pub device_pages: u64,
    /// Frames the GPU server held for pages whose data is in RAM: freed.
    pub stale_frames: u64,
}

/// Why a rebuild could not finish: serving now could hand out wrong data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebuildError {
    /// The GPU server did not say which frames it holds: a page whose
    /// memfd has a hole may be in VRAM, and must not be zero-filled.
    GpuFrames,
}

impl<R: Runtime> Core<R> {
    /// Restores `records` (what `Journal::open` found), taking each
    /// descriptor from `kept`. Runs before anything is served.
    pub fn rebuild(
        self: &Arc<Self>,
        records: &[(u32, Record)],
        kept: &mut dyn FnMut(Kept) -> Option<R::Handle>,
    ) -> Result<Rebuilt, RebuildError> {
        let mut out = Rebuilt::default();
        let keep = |slot: u32, r: &Record, ok: bool, out: &mut Rebuilt| {
            if let Some(j) = self.journal() {
                if ok {
                    j.keep(slot, r);
                } else {
                    j.discard(slot);
                }
            }
            out.dropped += usize::from(!ok);
        };
        for (slot, r) in records {
            if let Record::Gpu { badge, gpu } = r {
                let ok = self.gpu_session(*badge, *gpu).is_ok();
                keep(*slot, r, ok, &mut out);
            }
        }
        for (slot, r) in records {
            if let Record::Object { .. } = r {
                let ok = self.restore_object(r, kept).is_some();
                out.objects += usize::from(ok);
                keep(*slot, r, ok, &mut out);
            }
        }
        for (slot, r) in records {
            if let Record::Space { owner, id, forked } = *r {
                let ok = self.restore_space(owner, id, forked, kept).is_some();
                out.spaces += usize::from(ok);
                keep(*slot, r, ok, &mut out);
            }
        }
        for (slot, r) in records {
            if let Record::View(v) = r {
                let ok = self.restore_view(v).is_some();
                out.views += usize::from(ok);
                keep(*slot, r, ok, &mut out);
            }
        }
        self.restore_device_pages(&mut out)?;
        self.serve_restored_spaces();
        Ok(out)
    }

    /// Object record `r`: its memory from the keeper, its pages System
    /// where the memfd holds data, under its id in its owner's slot.
    fn restore_object(
        &self,
        r: &Record,
        kept: &mut dyn FnMut(Kept) -> Option<R::Handle>,
    ) -> Option<Arc<Object<R>>> {
        let Record::Object {
            owner,
            id,
            gpu_ids,
            bytes,
        } = *r
        else {
            return None;
        };
        let id = Handle::from_raw(id);
        let s = self.client_in_slot(owner, id.index() / IDS_PER_SESSION)?;
        let pages = self.object_pages(bytes).ok()?;
        let memory =
            kept(Kept::Object(id.raw())).and_then(|h| self.rt.adopt_memory(h, bytes).ok())?;
        let data = self.rt.data_pages(&memory, pages).ok()?;
        let table = PageTable::new_in(pages, WordStore::Arena(s.meta.clone())).ok()?;
        for (page, _) in data.iter().enumerate().filter(|(_, d)| **d) {
            set_state(&table, page, Residency::System);
        }
        let charge = s
            .ledger
            .charge(&[(objects, 1), (object_bytes, bytes)])
            .ok()?;
        let o = s
            .insert_object_at(id, Object::new(id, owner, memory, table, charge))
            .ok()?;
        o.seq
            .store(self.first_seq(), crate::sync::Ordering::Release);
        for (gpu, gpu_id) in (0u8..).zip(gpu_ids).filter(|(_, g)| *g != 0) {
            match self.gpu_of(gpu) {
                Some(g) if g.open_at(Handle::from_raw(gpu_id), &o) => {}
                _ => log::warn!(
                    "pager: object {:#x}: GPU {gpu}'s id {gpu_id:#x} not restored",
                    id.raw()
                ),
            }
        }
        Some(o)
    }

    fn restore_space(
        &self,
        owner: u64,
        id: u64,
        forked: bool,
        kept: &mut dyn FnMut(Kept) -> Option<R::Handle>,
    ) -> Option<Arc<Space<R>>> {
        let s = self.find_client(owner)?;
        let port = kept(Kept::Space(id)).and_then(|h| self.rt.reopen_port(h).ok())?;
        self.add_space(&s, port, forked, Some(id)).ok()
    }

    fn restore_view(&self, r: &ViewRecord) -> Option<()> {
        let s: Arc<ClientSession<R>> = self.find_client(r.owner)?;
        let object = s.object(Handle::from_raw(r.object))?;
        let space = s.spaces().into_iter().find(|sp| sp.id == r.space)?;
        // The checks `AttachView` makes.
        pages_in(r.first_page, r.pages, object.pages()).ok()?;
        view_range(r.addr, r.pages).ok()?;
        let spec = ViewSpec {
            object,
            addr: r.addr,
            first_page: usize::try_from(r.first_page).ok()?,
            pages: usize::try_from(r.pages).ok()?,
            space,
            forked: r.forked,
        };
        let client = (r.client_id != 0).then(|| Handle::from_raw(r.client_id));
        let view = s
            .insert_view_at(Handle::from_raw(r.id), client, spec)
            .ok()?;
        view.object.add_view(view.clone());
        view.space.add_view(view.clone());
        Some(())
    }

    /// Asks each GPU server which frames it holds: Device where the memfd
    /// has a hole, freed where it holds data (module docs).
    fn restore_device_pages(&self, out: &mut Rebuilt) -> Result<(), RebuildError> {
        for g in self.gpu_sessions() {
            self.restore_frames_of(&g, out)?;
        }
        Ok(())
    }

    /// The frames GPU server `g` holds, asked for run by run. An answer
    /// naming another GPU than its own is refused like no answer.
    fn restore_frames_of(&self, g: &GpuSession<R>, out: &mut Rebuilt) -> Result<(), RebuildError> {
        let mut from = (0, 0);
        loop {
            let answer = self
                .rt
                .gpu_frames(g.gpu, from)
                .ok()
                .filter(|a| a.gpu == g.gpu)
                .ok_or(RebuildError::GpuFrames)?;
            for &(object, first, pages, pfn) in &answer.runs {
                let Some(o) = g.object(Handle::from_raw(object)) else {
                    continue;
                };
                self.restore_run(&o, (first, pages, pfn), g.gpu, out)?;
            }
            match answer.next {
                Some(next) if next > from => from = next,
                _ => return Ok(()),
            }
        }
    }

    /// One run of frames of `o`, checked against its size.
    /// A frame past what a state word holds (`MAX_PFN`) cannot be
    /// recorded: written, it would name another frame. Refused like no
    /// answer (the pager exits rather than serve wrong data).
    fn restore_run(
        &self,
        o: &Object<R>,
        run: (u64, u32, u64),
        gpu: u8,
        out: &mut Rebuilt,
    ) -> Result<(), RebuildError> {
        let (first, pages, pfn) = run;
        let end = first.saturating_add(u64::from(pages)).min(o.pages() as u64);
        let mut stale: Vec<(Chunk, PageMask)> = Vec::new();
        for page in first..end {
            let at = page as usize;
            let frame = pfn
                .checked_add(page - first)
                .filter(|f| *f <= MAX_PFN)
                .ok_or(RebuildError::GpuFrames)?;
            if o.table
                .info(at)
                .is_ok_and(|i| i.residency == Residency::System)
            {
                let chunk = Chunk::around(at, o.pages());
                match stale.last_mut() {
                    Some((c, m)) if *c == chunk => m.set(at - c.first),
                    _ => {
                        let mut m = PageMask::EMPTY;
                        m.set(at - chunk.first);
                        stale.push((chunk, m));
                    }
                }
            } else {
                set_state(&o.table, at, Residency::Device { gpu, pfn: frame });
                out.device_pages += 1;
            }
        }
        let Some(id) = o.gpu_id(gpu) else {
            return Ok(());
        };
        for (chunk, mask) in stale {
            out.stale_frames += mask.count() as u64;
            if let Err(e) = self.rt.free_pages(gpu, id, chunk.first, chunk.count, &mask) {
                log::warn!(
                    "pager: freeing stale frames of object {:#x}: {e:?}",
                    o.id.raw()
                );
            }
        }
        Ok(())
    }

    /// Starts every restored space (a space left with no view goes), then
    /// clears the write protection the predecessor's migrations left and
    /// wakes the faults it read and never served. A space whose process
    /// is gone (a fork's child that exited while no pager ran: nothing
    /// would ever tell) goes now: clearing the protection finds it
    /// (`RtError::Gone`), or it would hold its owner's `spaces` budget for
    /// good and forks past it would not be followed.
    fn serve_restored_spaces(self: &Arc<Self>) {
        for s in self.clients() {
            for space in s.spaces() {
                let views = space.views();
                if views.is_empty() || self.rt.start_space(self, &space).is_err() {
                    self.space_gone(&space);
                    continue;
                }
                for v in views {
                    let cleared = self.rt.write_protect(&space.port, v.addr, v.len(), false);
                    if cleared == Err(RtError::Gone) {
                        self.space_gone(&space);
                        break;
                    }
                    let _ = self.rt.wake(&space.port, v.addr, v.len());
                }
            }
        }
    }
}

/// Publishes `now` as the state of unlocked `page` (nothing else can
/// hold it before the rebuilt pager serves).
fn set_state(table: &PageTable, page: usize, now: Residency) {
    if let Ok(Some(_)) = table.try_lock(page) {
        let _ = table.unlock(page, now);
    }
}
