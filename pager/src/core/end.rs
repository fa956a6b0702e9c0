//! Where things end: an object (`DestroyObject`, its owner's end), a
//! client session (the client exited or crashed: its endpoint closed) and
//! the GPU server's session (its endpoint closed: it died).
//!
//! A session's end releases everything it held, in one place: a client's
//! views (their GPU bindings first, rule 8), its address spaces, its
//! objects with their VRAM; the GPU server's collects in flight (every page
//! it collected and never finalized goes back to its state, unlocked and
//! writable) and the ids it knew objects by. Quotas come back as the
//! records go (`budget.rs`).

use ipc_protocol::interfaces::pager::PagerError;
use ipc_protocol::types::PageMask;

use super::backend::CoreBackend;
use super::object::{Object, MAX_GPUS};
use super::runtime::{Pause, Runtime};
use super::session::{ClientSession, GpuSession, InFlight};
use super::Core;
use crate::migrate::{evict, release_collect, Chunk, CHUNK_PAGES};
use crate::state::Residency;
use crate::sync::Arc;

/// Tries to bring one chunk back before an object's end gives up on it.
const BRING_BACK_TRIES: u32 = 100;

impl<R: Runtime> Core<R> {
    /// Client `badge` is gone: its views stop and go, and its objects go
    /// with their pages, VRAM included (DESIGN.md 6: other clients see
    /// nothing).
    pub fn end_client(&self, badge: u64) {
        let Some(s) = self.take_client(badge) else {
            return;
        };
        s.mark_ended();
        // Its objects first: each ends with its views (below).
        for o in s.objects() {
            if let Err(e) = self.end_object(&s, &o) {
                log::warn!(
                    "pager: freeing VRAM of object {:#x} of client {badge}: {e:?}",
                    o.id.raw()
                );
            }
        }
        for v in s.view_records() {
            self.retire_view(&v, true);
            self.tell_gone(&v);
        }
        for space in s.spaces() {
            for v in space.views() {
                self.retire_view(&v, true);
                self.tell_gone(&v);
            }
            self.stop_space(&space);
        }
        s.clear_views();
        log::info!("pager: client {badge} gone; its views and objects were released");
    }

    /// The pager stops without ending its clients: its process is killed
    /// and the next generation takes over from the journal (issue 14; the
    /// simulation's pager kill). The journal takes no more writes, every
    /// space stops (a fault being served returns at its next failure) and
    /// the collects in flight are undone, so no thread of this generation
    /// waits on their pages. Stopping what the runtime still does for it
    /// (memory, fault channels, calls to the GPU server) is the runtime's:
    /// a dead process does nothing more.
    pub fn shut_down(&self) {
        if let Some(j) = self.journal() {
            j.close();
        }
        for s in self.clients() {
            for space in s.spaces() {
                space.mark_stopped();
            }
        }
        for g in self.gpu_sessions() {
            self.end_gpu(g.badge);
        }
    }

    /// The GPU server at `badge` is gone: its collects in flight are undone
    /// (pages back to their state, writers let go), and it can name no
    /// object any more.
    pub fn end_gpu(&self, badge: u64) {
        let g = {
            let mut gpus = crate::sync::lock(&self.gpus);
            let at = gpus.iter().position(|s| s.badge == badge);
            at.map(|at| gpus.swap_remove(at))
        };
        let Some(g) = g else { return };
        self.forget_gpu(badge, g.gpu);
        // The objects keep the ids the GPU server knew them by: its
        // notifier, if it still answers, frees their VRAM by those ids.
        let (collects, _opened) = g.end();
        let n = collects.len();
        self.undo_collects(&g, &collects);
        log::info!("pager: GPU server {badge} gone; {n} collect(s) in flight undone");
    }

    /// Undoes the collects that awaited their finalize longer than
    /// `collect_lease_us` (the GPU server gave up on them, or hangs): as
    /// at its end, their pages go back to their state, unlocked. A late
    /// finalize of one finds nothing (`NotCollected`). The runtime calls
    /// this periodically (`startup::spawn_lease_reaper`); returns how many.
    pub fn expire_collects(&self) -> usize {
        let mut undone = 0;
        for g in self.gpu_sessions() {
            let old = g.expired(self.rt.now_us(), self.cfg.collect_lease_us);
            self.undo_collects(&g, &old);
            if !old.is_empty() {
                log::warn!(
                    "pager: GPU {}: {} collect(s) never finalized within {} ms undone",
                    g.gpu,
                    old.len(),
                    self.cfg.collect_lease_us / 1000
                );
            }
            undone += old.len();
        }
        undone
    }

    /// Collects of `g` taken from it that nobody will finalize: each one's
    /// pages go back unlocked and its place comes back.
    pub(super) fn undo_collects(&self, g: &GpuSession<R>, collects: &[InFlight<R>]) {
        for f in collects {
            self.undo_collect(f);
            g.unreserve_collect();
        }
    }

    /// A collect that will never be finalized: its pages go back unlocked.
    pub(super) fn undo_collect(&self, f: &InFlight<R>) {
        let backend = CoreBackend::new(self, &f.object, None);
        if let Err(e) = release_collect(&f.object.table, &backend, f.chunk, &f.collected) {
            log::warn!(
                "pager: undoing a collect of object {:#x}: {e:?}",
                f.object.id.raw()
            );
        }
    }

    /// Ends object `o` of `session`: no new migration starts, its views go
    /// (forked ones get the data back in RAM first), its VRAM is freed, it
    /// is forgotten.
    ///
    /// The GPU server hears that the views went only once every migration
    /// in flight on the object has ended and its VRAM was freed: until then
    /// its bindings keep the object known to it, so a GPU fault that
    /// collected pages can still record and finalize them, and the pages'
    /// VRAM is then freed by id (`FreePages` unmaps them first, rule 8).
    pub fn end_object(
        &self,
        session: &ClientSession<R>,
        o: &Arc<Object<R>>,
    ) -> Result<(), PagerError> {
        if !o.start_dying() {
            return Ok(()); // another caller ends it
        }
        let views = o.views();
        if views.iter().any(|v| v.forked) {
            self.bring_all_back(o);
        }
        for v in &views {
            self.retire_view(v, true);
        }
        let r = self.free_device_pages(o);
        for v in &views {
            self.tell_gone(v);
        }
        for (gpu, _) in o.gpu_ids().iter() {
            match self.gpu_of(gpu) {
                Some(g) => g.close(o),
                None => o.set_gpu_id(gpu, None),
            }
        }
        o.clear_views();
        session.remove_object(o);
        self.forget_object(o);
        r
    }

    /// Locks `page` for the object's end, waiting out any migration that
    /// holds it (it ends: no new one starts on a dying object, and a dead
    /// GPU server's collects are undone by its session's end).
    fn lock_for_end(&self, o: &Object<R>, page: usize) -> Option<Residency> {
        loop {
            match o.table.try_lock(page) {
                Ok(Some(r)) => return Some(r),
                Ok(None) => {
                    let _ = o.table.wait_unlocked(page);
                    crate::sync::yield_now();
                }
                Err(_) => return None,
            }
        }
    }

    /// No view reaches `o` any more: its pages in VRAM go back to the GPU
    /// server's allocator (their data is dropped with the object). Waits
    /// for migrations in flight, so none finishes into a forgotten object.
    fn free_device_pages(&self, o: &Object<R>) -> Result<(), PagerError> {
        for first in (0..o.pages()).step_by(CHUNK_PAGES) {
            let chunk = Chunk::around(first, o.pages());
            let mut held = [PageMask::EMPTY; MAX_GPUS];
            for (i, p) in chunk.pages() {
                match self.lock_for_end(o, p) {
                    Some(Residency::Device { gpu, .. }) if (gpu as usize) < MAX_GPUS => {
                        held[gpu as usize].set(i)
                    }
                    Some(r) => {
                        let _ = o.table.unlock(p, r);
                    }
                    None => {}
                }
            }
            let mut r = Ok(());
            for (gpu, pages) in (0u8..).zip(&held).filter(|(_, m)| !m.is_empty()) {
                // Without its GPU server (it died) its VRAM is gone anyway.
                if let Some(id) = o.gpu_id(gpu).filter(|_| self.rt.gpu_attached(gpu)) {
                    r = r.and(self.rt.free_pages(gpu, id, chunk.first, chunk.count, pages));
                }
                for i in pages.iter() {
                    let _ = o.table.unlock(chunk.first + i, Residency::Empty);
                }
            }
            r.map_err(|_| PagerError::GpuUnavailable)?;
        }
        Ok(())
    }

    /// Moves every page of `o` in VRAM back to RAM (waiting out migrations
    /// in flight): used before an object's forked views are handed to the
    /// kernel, so the child keeps the data.
    fn bring_all_back(&self, o: &Object<R>) {
        for first in (0..o.pages()).step_by(CHUNK_PAGES) {
            let chunk = Chunk::around(first, o.pages());
            for attempt in 0..BRING_BACK_TRIES {
                let backend = CoreBackend::new(self, o, None);
                let _ = evict(&o.table, &backend, chunk, 0);
                let left = chunk.pages().map(|(_, p)| p).find(|p| {
                    o.table
                        .info(*p)
                        .is_ok_and(|i| matches!(i.residency, Residency::Device { .. }))
                });
                match left {
                    None => break,
                    Some(p) => {
                        let _ = o.table.wait_unlocked(p);
                        self.rt.pause(Pause::BringBack, attempt);
                    }
                }
            }
        }
    }
}
