//! Pages no view reaches (DESIGN.md 5, "Unmap / mremap / fork / exit"). A
//! munmap of part of a view, or of a whole view, leaves the object's pages
//! there unreached by that view: they are still the object's data (another
//! view of the same pages may come, and `DestroyObject` ends them), but
//! nothing can use them in VRAM. Pages no view of the object reaches any
//! more leave VRAM for RAM, so an unmapped range gives its VRAM back at
//! once instead of at `DestroyObject`, and loses no word.
//!
//! This runs after the change is applied and its notes sent (`ViewGone`
//! first: no binding reaches the pages), holding no view-change guard: the
//! eviction's write-protect pass takes the guards for reading. It is
//! a trylock eviction (rule 1) in bounded rounds that give a GPU migration
//! which collected pages there before their bindings went time to end; it
//! never waits on a page lock (see `evict_without_waiting`).

use ipc_protocol::types::PageMask;

use super::object::Object;
use super::runtime::{Pause, Runtime};
use super::Core;
use crate::migrate::Chunk;
use crate::state::Residency;

/// Eviction rounds for pages no view reaches (the host pauses 1 ms each).
const EVICT_ROUNDS: u32 = 64;

impl<R: Runtime> Core<R> {
    /// Evicts `[first, end)` in a bounded number of trylock rounds, pausing
    /// between them but never waiting on a page lock: this runs on the
    /// thread that reads the client's view changes, and a GPU collect
    /// holding a page here may itself wait for that thread to read a
    /// pending event (its write-protect pass), so a blocking wait could
    /// deadlock. A page a migration still holds after the last round stays
    /// in VRAM until pressure or `DestroyObject` (no later GPU fault brings
    /// more in: they are `remote`).
    fn evict_without_waiting(&self, o: &Object<R>, first: usize, end: usize) {
        for round in 0..EVICT_ROUNDS {
            self.all_to_ram(o, first, end);
            let in_vram = (first..end).any(|p| {
                o.table
                    .info(p)
                    .is_ok_and(|i| i.locked || matches!(i.residency, Residency::Device { .. }))
            });
            if !in_vram {
                return;
            }
            self.rt.pause(Pause::BringBack, round);
        }
        log::info!(
            "pager: object {:#x}: pages of {first}..{end} no view reaches stay in VRAM for now \
             (a migration holds them)",
            o.id.raw()
        );
    }

    /// Moves the pages of `[first, end)` that no view of `o` reaches out of
    /// VRAM.
    pub fn release_unreached(&self, o: &Object<R>, first: usize, end: usize) {
        if o.is_dying() {
            return;
        }
        let views = o.views();
        let reached = |p: usize| views.iter().any(|v| v.address_of(p).is_some());
        let mut p = first;
        while p < end {
            if reached(p) {
                p += 1;
                continue;
            }
            let start = p;
            while p < end && !reached(p) {
                p += 1;
            }
            log::debug!(
                "pager: object {:#x}: pages {start}..{p}: no view reaches them; out of VRAM",
                o.id.raw()
            );
            self.evict_without_waiting(o, start, p);
        }
    }
}

/// The pages of `chunk` (relative to it) no view of `o` reaches: a GPU
/// migration of the chunk leaves them where they are (`Collected.remote`),
/// so a neighbour's fault does not drag a hole's pages back into VRAM.
pub fn unreached_pages<R: Runtime>(o: &Object<R>, chunk: Chunk) -> PageMask {
    let views = o.views();
    let mut mask = PageMask::EMPTY;
    for (i, p) in chunk.pages() {
        if !views.iter().any(|v| v.address_of(p).is_some()) {
            mask.set(i);
        }
    }
    mask
}
