//! A restarted GPU server's first questions (`PagerMigrate::Resident`,
//! issue 14): which pages its predecessor left in VRAM, and where.
//!
//! The pager's page-state words are the source of truth for residency: a
//! page is `Device { gpu, pfn }` from its finalize until its copy back
//! landed in RAM, whatever the GPU server knew. VRAM belongs to the device
//! and survives its driver, so a new GPU server that learns these frames
//! can copy the pages back and must not hand the frames out again.
//!
//! **The session goes on.** A restart is not an end (`end.rs`): the
//! objects keep the ids the predecessor knew them by, since the pager's
//! notifier names pages by them (`Object::gpu_id`), and the new server
//! rebuilds its object table with the same ids. Only the collects in
//! flight are undone: nobody will finalize them.
//!
//! **Collects carry their server's generation.** The predecessor's last
//! `Collect` may still wait in the socket when the new server's first
//! `Resident` arrives, and the pager serves an endpoint with several
//! threads, so the two may run in either order. `Resident` raises the
//! session's generation, then undoes the older collects; a `Collect`
//! checks its generation before it locks pages and again after it
//! recorded them (undoing every older one then). Whichever runs first,
//! an old collect is refused or undone, never left waiting for a
//! finalize (`explore_a_restarted_gpu_server_takes_over_mid_migration`).
//!
//! **Locked pages are listed too.** A page being copied back by a CPU
//! fault is locked while the copy waits for the new server; its frame is
//! still its home until that copy lands, so it must be known.

use ipc_protocol::interfaces::pager_migrate::{self as m, MigrateError as E, RunGather};

use super::object::Object;
use super::runtime::{Pause, Runtime};
use super::session::GpuSession;
use super::Core;
use crate::state::Residency;

/// Pauses `Resident` waits for finalizes in progress (2 s on the host).
const FINALIZE_DRAIN_PAUSES: u32 = 10_000;

impl<R: Runtime> Core<R> {
    /// Serves `Resident` for the GPU server's session `g`.
    pub(super) fn resident(&self, g: &GpuSession<R>, q: m::Resident) -> Result<m::ResidentRuns, E> {
        if (q.from_object, q.from_page) == (0, 0) {
            g.raise_generation(q.generation);
            self.undo_older_collects(g, q.generation);
            self.wait_for_finalizes(g);
        }
        let mut gather = RunGather::default();
        for (id, o) in g.opened_objects() {
            let id = id.raw();
            if id < q.from_object {
                continue;
            }
            let from = if id == q.from_object { q.from_page } else { 0 };
            gather_object(&mut gather, id, &o, from, q.gpu.get());
            if gather.full() {
                break;
            }
        }
        let (runs, more, next_object, next_page) = gather.finish();
        Ok(m::ResidentRuns {
            runs,
            more,
            next_object,
            next_page,
            pager_generation: self.cfg.generation,
        })
    }

    /// A finalize of the predecessor's that took its collect before the
    /// undo above is still publishing its pages (locked, their old state
    /// in the words): answered now, they would be missing from the runs
    /// and then turn `Device` at frames the new server hands out again.
    /// Waits until they are done (bounded: a finalize waits on nothing).
    fn wait_for_finalizes(&self, g: &GpuSession<R>) {
        let mut attempt = 0;
        while g.finalizing() > 0 {
            if attempt >= FINALIZE_DRAIN_PAUSES {
                log::error!("pager: GPU server {}: finalizes still in progress", g.badge);
                return;
            }
            self.rt.pause(Pause::FinalizeDrain, attempt);
            attempt += 1;
        }
    }

    /// The collects of generations before `generation`: their pages go
    /// back to their state, unlocked (as at a GPU server's end, `end.rs`).
    pub(super) fn undo_older_collects(&self, g: &GpuSession<R>, generation: u32) -> usize {
        let collects = g.take_older_than(generation);
        self.undo_collects(g, &collects);
        if !collects.is_empty() {
            log::info!(
                "pager: GPU server {} generation {generation}: {} collect(s) of its \
                 predecessors undone",
                g.badge,
                collects.len()
            );
        }
        collects.len()
    }
}

/// Adds `o`'s pages from `from` on that sit in GPU `gpu`'s VRAM.
fn gather_object<R: Runtime>(gather: &mut RunGather, id: u32, o: &Object<R>, from: u64, gpu: u8) {
    let pages = o.pages() as u64;
    for page in from..pages {
        let Ok(info) = o.table.info(page as usize) else {
            break;
        };
        if let Residency::Device { gpu: g, pfn } = info.residency {
            if g == gpu {
                gather.add(id, pages, page, pfn);
                if gather.full() {
                    return;
                }
            }
        }
    }
}
