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
//! a trylock eviction (rule 1) that waits out, holding nothing, a GPU
//! migration that collected pages there before their bindings went.

use ipc_protocol::types::PageMask;

use super::object::Object;
use super::runtime::Runtime;
use super::Core;
use crate::migrate::Chunk;

impl<R: Runtime> Core<R> {
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
            self.empty_vram_of(o, start, p);
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
