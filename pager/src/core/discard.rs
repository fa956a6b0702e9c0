//! `Pager::Discard`: the client no longer needs the data of a range of its
//! object (its allocator freed it). Every page of the range becomes EMPTY
//! wherever it was: VRAM goes back to the GPU server's allocator, RAM
//! copies are punched out of the memfd (which zaps every view's mapping),
//! and nothing is copied anywhere. The next touch, by a CPU or a GPU, is a
//! first touch: a fresh zero page, no migration back.
//!
//! Locking (rules 1 and 8): each page is taken with its own page lock,
//! waiting out a migration in flight as an object's end does (it ends);
//! no range lock is held. The GPU unmaps the pages (`Invalidate`, with a
//! new sequence, so a GPU fault that read the old state refuses to map)
//! before their VRAM is freed or their RAM copy goes. Discarding an
//! EMPTY page does nothing, so the request is idempotent.

use ipc_protocol::interfaces::pager::PagerError;
use ipc_protocol::types::PageMask;

use super::object::Object;
use super::runtime::Runtime;
use super::Core;
use crate::migrate::Chunk;
use crate::state::Residency;

/// The pages of one chunk a discard holds locked.
struct Held {
    /// Every page locked, relative to the chunk.
    all: PageMask,
    /// Those in VRAM (of any GPU).
    device: PageMask,
    /// Each locked page and the state it had.
    states: Vec<(usize, Residency)>,
}

impl Held {
    /// The pages in GPU `gpu`'s VRAM, relative to `chunk`.
    fn device_of(&self, chunk: Chunk, gpu: u8) -> PageMask {
        let mut m = PageMask::EMPTY;
        for &(p, r) in &self.states {
            if matches!(r, Residency::Device { gpu: g, .. } if g == gpu) {
                m.set(p - chunk.first);
            }
        }
        m
    }
}

impl<R: Runtime> Core<R> {
    /// Discards pages `[first, end)` of `o` (already checked against it).
    pub fn discard(&self, o: &Object<R>, first: usize, end: usize) -> Result<(), PagerError> {
        // Fresh pages take no advice from the data that was there.
        crate::sync::lock(&o.advice).clear(first as u64, end as u64);
        let mut page = first;
        while page < end {
            let chunk = Chunk::around(page, o.pages());
            let stop = end.min(chunk.first + chunk.count);
            self.discard_in_chunk(o, chunk, page, stop)?;
            page = stop;
        }
        Ok(())
    }

    /// Discards `[from, to)`, which lies in `chunk`.
    fn discard_in_chunk(
        &self,
        o: &Object<R>,
        chunk: Chunk,
        from: usize,
        to: usize,
    ) -> Result<(), PagerError> {
        let held = self.lock_for_discard(o, chunk, from, to);
        if held.all.is_empty() {
            return Ok(());
        }
        let r = self.drop_held(o, chunk, from, to, &held);
        // On success every page is EMPTY. On failure each page keeps the
        // state it had (the GPU may still map it, or its RAM copy is still
        // there): nothing is lost, and the client may ask again.
        for &(p, was) in &held.states {
            let now = if r.is_ok() { Residency::Empty } else { was };
            let _ = o.table.unlock(p, now);
        }
        r
    }

    /// Locks every non-EMPTY page of `[from, to)`, waiting out migrations.
    fn lock_for_discard(&self, o: &Object<R>, chunk: Chunk, from: usize, to: usize) -> Held {
        let mut held = Held {
            all: PageMask::EMPTY,
            device: PageMask::EMPTY,
            states: Vec::new(),
        };
        for p in from..to {
            let i = p - chunk.first;
            loop {
                match o.table.try_lock(p) {
                    Ok(Some(Residency::Empty)) => {
                        let _ = o.table.unlock(p, Residency::Empty);
                        break;
                    }
                    Ok(Some(r)) => {
                        held.all.set(i);
                        held.states.push((p, r));
                        if matches!(r, Residency::Device { .. }) {
                            held.device.set(i);
                        }
                        break;
                    }
                    Ok(None) => {
                        let _ = o.table.wait_unlocked(p);
                        crate::sync::yield_now();
                    }
                    Err(_) => break,
                }
            }
        }
        held
    }

    /// Unmaps the held pages from the GPU, frees their VRAM and punches
    /// their RAM copies out.
    fn drop_held(
        &self,
        o: &Object<R>,
        chunk: Chunk,
        from: usize,
        to: usize,
        held: &Held,
    ) -> Result<(), PagerError> {
        // Every GPU whose server opened the object may map its pages.
        self.invalidate_gpus(o, (from, to - from), |_| true)
            .map_err(|_| PagerError::GpuUnavailable)?;
        for (gpu, id) in o.gpu_ids().iter() {
            let device = held.device_of(chunk, gpu);
            if device.is_empty() || !self.rt.gpu_attached(gpu) {
                continue;
            }
            self.rt
                .free_pages(gpu, id, chunk.first, chunk.count, &device)
                .map_err(|_| PagerError::GpuUnavailable)?;
        }
        let ram = held.all.and_not(&held.device);
        for (start, len) in super::backend::runs(chunk, &ram) {
            self.rt
                .drop_pages(&o.memory, chunk.first + start, len)
                .map_err(|_| PagerError::Host)?;
        }
        Ok(())
    }
}
