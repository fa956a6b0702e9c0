//! The `PagerReclaim` interface: mm-server's half of rule 7 (evict SVM
//! pages of a GPU back to RAM, page by page under rule 1) and the usage
//! it presses by. Usage is kept as pages change (`PageTable::counts`), so
//! reporting it scans nothing and takes no lock a fault needs.

use ipc_protocol::interfaces::pager_reclaim::{self as r, ReclaimError};

use super::backend::CoreBackend;
use super::runtime::{Pause, Runtime};
use super::view::PAGE;
use super::{all_objects, Core};
use crate::migrate::{evict, Chunk, CHUNK_PAGES};
use crate::state::Residency;
use crate::sync::lock;

/// Pauses an evacuation waits for the collects in flight of the GPU that
/// goes (2 s on the host; past them it evacuates anyway, and rounds on).
const EVACUATE_WAITS: u32 = 10_000;
/// Rounds of eviction an evacuation makes while pages stay locked.
const EVACUATE_ROUNDS: u32 = 1_000;

/// Where the last eviction stopped: (owner badge, object id, page).
/// Eviction sweeps on from here like a clock hand, so the pages it takes
/// are the ones longest since the hand passed, not always the first
/// object's.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hand(u64, u32, usize);

impl<R: Runtime> Core<R> {
    /// Serves one `PagerReclaim` request.
    pub fn reclaim_request(&self, req: r::Request) -> Result<r::Reply, ReclaimError> {
        match req {
            r::Request::Evict(e) => {
                if !self.rt.gpu_attached(e.gpu.get()) {
                    return Err(ReclaimError::GpuUnavailable);
                }
                let pages = self.evict(e.gpu.get(), e.bytes);
                Ok(r::Reply::Evict(r::Evicted {
                    bytes: pages.saturating_mul(PAGE),
                    pages,
                }))
            }
            r::Request::Evacuate(e) => {
                let (pages, left) = self.evacuate(e.gpu.get())?;
                Ok(r::Reply::Evacuate(r::Evacuated { pages, left }))
            }
            r::Request::Usage(_) => {
                let (sram, vram) = self.usage();
                Ok(r::Reply::Usage(r::SvmUsage {
                    sram_bytes: sram.saturating_mul(PAGE),
                    vram_bytes: vram.saturating_mul(PAGE),
                }))
            }
        }
    }

    /// Pages in RAM and in VRAM over every object (counted as they change).
    pub fn usage(&self) -> (u64, u64) {
        all_objects(self)
            .iter()
            .map(|(_, o)| o.table.counts())
            .fold((0, 0), |(s, v), (a, b)| (s + a, v + b))
    }

    /// GPU `gpu` goes away (`Evacuate`): nothing moves to it from now on
    /// (its collects are refused, `Retired`); the collects it has in
    /// flight end (finalized, or undone past their lease); then every page
    /// in its VRAM comes back to RAM, round after round while some are
    /// locked by a migration. Returns (pages brought back, pages left).
    pub fn evacuate(&self, gpu: u8) -> Result<(u64, u64), ReclaimError> {
        if usize::from(gpu) >= super::object::MAX_GPUS {
            return Err(ReclaimError::NoSuchGpu);
        }
        self.retired
            .fetch_or(1 << gpu, core::sync::atomic::Ordering::SeqCst);
        if let Some(g) = self.gpu_of(gpu) {
            g.retire();
            for round in 0..EVACUATE_WAITS {
                if g.in_flight() == 0 {
                    break;
                }
                self.rt.pause(Pause::FinalizeDrain, round);
            }
        }
        let mut moved = 0;
        for round in 0..EVACUATE_ROUNDS {
            moved += self.evict(gpu, u64::MAX);
            let left = self.device_pages_of(gpu);
            if left == 0 || !self.rt.gpu_attached(gpu) {
                log::info!("pager: GPU {gpu} evacuated: {moved} page(s) back, {left} left");
                return Ok((moved, left));
            }
            self.rt.pause(Pause::BringBack, round);
        }
        let left = self.device_pages_of(gpu);
        log::warn!("pager: GPU {gpu}: {left} page(s) stay in its VRAM after evacuating");
        Ok((moved, left))
    }

    /// Pages in GPU `gpu`'s VRAM now, over every object (a scan).
    fn device_pages_of(&self, gpu: u8) -> u64 {
        let on = |r: Residency| matches!(r, Residency::Device { gpu: g, .. } if g == gpu);
        all_objects(self)
            .iter()
            .map(|(_, o)| {
                (0..o.pages())
                    .filter(|&p| o.table.info(p).is_ok_and(|i| on(i.residency)))
                    .count() as u64
            })
            .sum()
    }

    /// Moves up to `bytes` of `gpu`'s VRAM pages back to RAM, chunk by chunk
    /// with trylocks (rule 1); returns the pages moved.
    pub fn evict(&self, gpu: u8, bytes: u64) -> u64 {
        let want = bytes.div_ceil(PAGE);
        let mut objects = all_objects(self);
        objects.sort_by_key(|(badge, o)| (*badge, o.id.raw()));
        let mut hand = lock(&self.hand);
        // Every chunk once, starting at the hand.
        let chunks: Vec<(usize, usize)> = objects
            .iter()
            .enumerate()
            .flat_map(|(i, (_, o))| (0..o.pages()).step_by(CHUNK_PAGES).map(move |p| (i, p)))
            .collect();
        let key = |i: usize, p: usize| Hand(objects[i].0, objects[i].1.id.raw(), p);
        let start = chunks
            .iter()
            .position(|&(i, p)| key(i, p) >= *hand)
            .unwrap_or(0);
        let mut moved = 0u64;
        for k in 0..chunks.len() {
            if moved >= want {
                break;
            }
            let (i, first) = chunks[(start + k) % chunks.len()];
            let o = &objects[i].1;
            *hand = key(i, first + CHUNK_PAGES);
            if o.is_dying() {
                continue;
            }
            let backend = CoreBackend::new(self, o, None);
            match evict(&o.table, &backend, Chunk::around(first, o.pages()), gpu) {
                Ok(n) => moved += n as u64,
                Err(e) => log::warn!("pager: evicting object {:#x}: {e:?}", o.id.raw()),
            }
        }
        moved
    }
}
