//! `Pager::Prefetch` (issue 16 item 1), the CPU side: a range of an object
//! moved back to RAM ahead of CPU use. It is eviction restricted to the
//! range (`migrate::evict` on each piece of a 2 MiB chunk inside it): every
//! page is taken with a trylock (rule 1), so pages another migration holds
//! are skipped and left out of the count, never waited for, and data comes
//! back through the same invalidate-then-copy path (rule 8).
//!
//! Moving to VRAM is the GPU server's (it owns VRAM, and rule 9 keeps the
//! pager's notifier from asking it to call back): `Gpu::Prefetch`, a VM
//! operation as in xe. The pager answers `to: Device` with `NotSupported`.

use super::backend::CoreBackend;
use super::object::Object;
use super::runtime::Runtime;
use super::Core;
use crate::migrate::{evict, Chunk, CHUNK_PAGES};
use crate::state::Residency;

impl<R: Runtime> Core<R> {
    /// Moves the pages of `[first, end)` of `o` that are in `gpu`'s VRAM
    /// back to RAM; returns how many moved.
    pub fn prefetch_to_ram(&self, o: &Object<R>, first: usize, end: usize, gpu: u8) -> u64 {
        let backend = CoreBackend::new(self, o, None);
        let mut moved = 0u64;
        let mut at = first;
        while at < end {
            let chunk_end = ((at / CHUNK_PAGES) + 1) * CHUNK_PAGES;
            let piece = Chunk {
                first: at,
                count: chunk_end.min(end) - at,
            };
            match evict(&o.table, &backend, piece, gpu) {
                Ok(n) => moved += n as u64,
                Err(e) => log::warn!("pager: prefetch of object {:#x}: {e:?}", o.id.raw()),
            }
            at += piece.count;
        }
        moved
    }

    /// Moves the pages of `[first, end)` of `o` back to RAM from whichever
    /// GPU holds each (several GPUs); returns how many moved.
    pub fn all_to_ram(&self, o: &Object<R>, first: usize, end: usize) -> u64 {
        let mut gpus = 0u16;
        for p in first..end {
            if let Ok(Residency::Device { gpu, .. }) = o.table.info(p).map(|i| i.residency) {
                gpus |= 1u16.checked_shl(u32::from(gpu)).unwrap_or(0);
            }
        }
        (0..super::object::MAX_GPUS as u8)
            .filter(|g| gpus & (1 << g) != 0)
            .map(|g| self.prefetch_to_ram(o, first, end, g))
            .sum()
    }
}
