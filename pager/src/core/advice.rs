//! `Pager::Advise` (issue 16 item 2): where a range of an object prefers
//! to live, and what that changes.
//!
//! - `PreferSystem`: a GPU fault maps the range's pages where they are, in
//!   system memory (collect reports them `remote`), instead of migrating
//!   them; pages in VRAM when the advice is given move back to RAM now
//!   (eviction restricted to the range, trylocks: rule 1).
//! - `PreferDevice`: a GPU fault migrates, as without advice, and a CPU
//!   fault on another page of the chunk leaves the range in VRAM.
//! - `DeviceOnly`: as `PreferDevice`, and a CPU fault on a page of the
//!   range in VRAM is refused instead of moving it back: the runtime ends
//!   the access (host: `UFFDIO_POISON`, `SIGBUS`), the page stays in VRAM
//!   with its data. Linux keeps a poisoned address poisoned in that
//!   mapping until it is zapped, so later CPU accesses there get `SIGBUS`
//!   too until the range is discarded (`MADV_DONTNEED`) or unmapped; other
//!   views of the object are not poisoned. Where the runtime cannot end an
//!   access, the fault moves the page back as without advice (a warning
//!   says so). Pages in RAM serve the CPU; memory pressure may still
//!   evict the range to RAM (data first).
//! - Atomics, an attribute of its own (setting one keeps the preferred
//!   location): `AtomicDevice` makes GPU faults migrate even where the
//!   range prefers system memory (an atomic needs VRAM, and a collect does
//!   not know the access); `AtomicGlobal` lets GPU atomics run wherever
//!   the pages are (system memory too: nothing moves for them);
//!   `AtomicCpu` refuses GPU atomics: collect reports the pages
//!   `cpu_atomics`, the GPU server maps them without the PTE's atomic
//!   enable, and a GPU atomic there faults and is refused (the job ends
//!   `Faulted`), wherever the page is; reads and writes go on.
//! - `PreferGpuK` (xe's preferred location on another device's
//!   `devmem_fd`): GPU K's faults migrate the pages into its VRAM, VRAM
//!   to VRAM from a peer too; any other GPU's collect reports them
//!   `remote` (in place: through its peer window when in a peer's VRAM,
//!   else system memory), so they never move to a GPU that does not
//!   prefer them. They reach GPU K at its own fault or `Gpu::Prefetch`:
//!   rule 9 keeps the pager from asking GPU K to pull them meanwhile. A
//!   CPU fault on another page of the chunk leaves them in VRAM, as with
//!   `PreferDevice`.
//! - `Default` puts both attributes back.
//! - Any advice unmaps the range from the GPU first (a new invalidation
//!   sequence, rule 8), so the next GPU access faults and sees it, as xe's
//!   madvise invalidates a range whose attributes change.
//!
//! **Lifetime.** Advice belongs to the object's pages, never to a view or
//! an address: it moves with the pages (mremap, another view of the same
//! object sees it), and goes back to the default when the pages are
//! discarded (`Pager::Discard`, `MADV_DONTNEED`/`MADV_REMOVE` through a
//! view, libsvm's `free` and `munmap` of a page range, which discard) or
//! the object ends. So fresh memory never inherits stale advice, whether
//! its range was unmapped and mapped again or freed and allocated again;
//! and a range never faulted takes its advice at its first fault. (A small
//! `malloc` shares pages with its neighbours: advice on it covers its whole
//! pages and lasts until they are discarded.)
//!
//! Each object keeps at most
//! [`MAX_ADVICE_RANGES`](super::object::MAX_ADVICE_RANGES) advised ranges
//! (`OverBudget` past it).

use ipc_protocol::interfaces::pager::PagerError;
use ipc_protocol::types::{Advice, PageMask};

use super::object::Object;
use super::runtime::Runtime;
use super::Core;
use crate::migrate::{Chunk, CHUNK_PAGES};
use crate::state::Residency;
use crate::sync::lock;

/// Eviction rounds `PreferSystem` tries before it leaves pages in VRAM
/// (each waits out a migration that held one).
const EMPTY_ROUNDS: usize = 64;

impl<R: Runtime> Core<R> {
    /// Advises `[first, end)` of `o` (already checked against it).
    pub fn advise(
        &self,
        o: &Object<R>,
        first: usize,
        end: usize,
        advice: Advice,
    ) -> Result<(), PagerError> {
        let (lo, hi) = (first as u64, end as u64);
        let set = match advice {
            Advice::Default => lock(&o.advice).update(lo, hi, |_| (advice, advice)),
            Advice::AtomicDevice | Advice::AtomicGlobal | Advice::AtomicCpu => {
                lock(&o.advice).update(lo, hi, |(location, _)| (location, advice))
            }
            // The locations: PreferSystem, PreferDevice, DeviceOnly,
            // AccessInPlace and PreferGpuK.
            _ => lock(&o.advice).update(lo, hi, |(_, atomics)| (advice, atomics)),
        };
        set.map_err(|_| PagerError::OverBudget)?;
        self.unmap_from_gpu(o, first, end)?;
        if advice == Advice::PreferSystem {
            self.empty_vram_of(o, first, end);
        }
        Ok(())
    }

    /// Moves `[first, end)`'s pages out of VRAM. Eviction takes trylocks
    /// (rule 1) and skips a page a GPU migration holds; such a migration
    /// collected before the caller changed what GPU faults may do there
    /// (advice set, bindings gone) and may still finish in VRAM, so wait
    /// it out (holding nothing) and evict again. Migrations that collect
    /// from then on move nothing there: this ends.
    fn empty_vram_of(&self, o: &Object<R>, first: usize, end: usize) {
        for _ in 0..EMPTY_ROUNDS {
            self.all_to_ram(o, first, end);
            let busy = (first..end).find_map(|p| match o.table.info(p) {
                Ok(i) if i.locked => Some(Some(p)),
                Ok(i) if matches!(i.residency, Residency::Device { .. }) => Some(None),
                _ => None,
            });
            match busy {
                None => return,
                Some(Some(p)) => {
                    let _ = o.table.wait_unlocked(p);
                }
                Some(None) => crate::sync::yield_now(),
            }
        }
        log::warn!(
            "pager: object {:#x}: pages of {first}..{end} stay in VRAM after {EMPTY_ROUNDS} rounds",
            o.id.raw()
        );
    }

    /// Rule 8's invalidation of `[first, end)`, chunk by chunk, with a new
    /// sequence: a GPU fault that read the old advice refuses to map.
    fn unmap_from_gpu(&self, o: &Object<R>, first: usize, end: usize) -> Result<(), PagerError> {
        let mut at = first;
        while at < end {
            let stop = end.min((at / CHUNK_PAGES + 1) * CHUNK_PAGES);
            self.invalidate_gpus(o, (at, stop - at), |_| true)
                .map_err(|_| PagerError::GpuUnavailable)?;
            at = stop;
        }
        Ok(())
    }
}

/// The pages of `got` (relative to `chunk`) GPU `gpu` must map where they
/// are: they prefer system memory, stay in place wherever they are, or
/// prefer another GPU's VRAM; and GPU atomics do not need VRAM.
pub fn remote_pages<R: Runtime>(o: &Object<R>, chunk: Chunk, got: &PageMask, gpu: u8) -> PageMask {
    pages_where(o, chunk, |(location, atomics)| {
        let in_place = match location.preferred_gpu() {
            Some(preferred) => preferred != gpu,
            None => matches!(location, Advice::PreferSystem | Advice::AccessInPlace),
        };
        in_place && atomics != Advice::AtomicDevice
    })
    .and(got)
}

/// The pages of `chunk` (relative to it) whose GPU atomics are refused.
pub fn cpu_atomic_pages<R: Runtime>(o: &Object<R>, chunk: Chunk) -> PageMask {
    pages_where(o, chunk, |(_, atomics)| atomics == Advice::AtomicCpu)
}

/// The pages of `chunk` (relative to it) that prefer a device (any, or a
/// named GPU) or live only there.
pub fn device_preferred<R: Runtime>(o: &Object<R>, chunk: Chunk) -> PageMask {
    pages_where(o, chunk, |(location, _)| {
        matches!(location, Advice::PreferDevice | Advice::DeviceOnly)
            || location.preferred_gpu().is_some()
    })
}

/// Whether page `p` of `o` lives only in VRAM (`DeviceOnly`): a CPU fault
/// there is refused.
pub fn device_only<R: Runtime>(o: &Object<R>, p: usize) -> bool {
    let map = lock(&o.advice);
    !map.is_empty() && map.at(p as u64).0 == Advice::DeviceOnly
}

/// The pages of `chunk` (relative to it) whose advice `wanted` accepts.
fn pages_where<R: Runtime>(
    o: &Object<R>,
    chunk: Chunk,
    wanted: impl Fn((Advice, Advice)) -> bool,
) -> PageMask {
    let map = lock(&o.advice);
    let mut mask = PageMask::EMPTY;
    if map.is_empty() {
        return mask;
    }
    for (i, p) in chunk.pages() {
        if wanted(map.at(p as u64)) {
            mask.set(i);
        }
    }
    mask
}
