//! Test doubles for the core, for tests and the schedule explorer:
//! - [`ModelBackend`], a [`Backend`] that models the data of every page:
//!   each page has a RAM copy and a VRAM copy, and every move is counted
//!   per page so a test can check "each page moved once";
//! - [`runtime::ModelRuntime`], a whole runtime under the session core
//!   (memory, address spaces and a GPU server, all in memory).
//! - [`peer::PeerModel`], several GPUs with their own frames and page
//!   tables, for the peer-migration races.

pub mod peer;
pub mod runtime;
pub mod sequence;

use ipc_protocol::types::PageMask;

use crate::migrate::{collect, cpu_fault, finalize, Backend, BackendError, Chunk, Peers, Policy};
use crate::state::{PageTable, Residency};
use crate::sync::{Arc, AtomicU64, Ordering};

/// The data a test puts in page `p`.
pub fn pattern(p: usize) -> u64 {
    0xa5a5_0000_0000 | p as u64
}

/// `pages` pages, all in VRAM of GPU 0 with [`pattern`] data.
pub fn all_in_vram(pages: usize) -> (Arc<PageTable>, Arc<ModelBackend>) {
    seeded(pages, true)
}

/// `pages` pages, all in RAM with [`pattern`] data.
pub fn all_in_ram(pages: usize) -> (Arc<PageTable>, Arc<ModelBackend>) {
    seeded(pages, false)
}

fn seeded(pages: usize, in_vram: bool) -> (Arc<PageTable>, Arc<ModelBackend>) {
    let t = PageTable::new(pages);
    let b = ModelBackend::new(pages);
    for p in 0..pages {
        let locked = t.try_lock(p).ok().flatten();
        assert!(locked.is_some(), "a fresh page locks");
        let (state, copy) = if in_vram {
            (
                Residency::Device {
                    gpu: 0,
                    pfn: p as u64,
                },
                &b.vram,
            )
        } else {
            (Residency::System, &b.ram)
        };
        let _ = t.unlock(p, state);
        copy[p].store(pattern(p), Ordering::Release);
    }
    (Arc::new(t), Arc::new(b))
}

/// What a GPU fault does to `chunk`: collect what it can and finalize all
/// of it into VRAM at `first_pfn`.
pub fn gpu_migrate(t: &PageTable, b: &ModelBackend, chunk: Chunk, first_pfn: u64) {
    let c = collect(t, b, chunk, 0, Peers::Skip).expect("collect on the model backend");
    finalize(t, b, chunk, &c, &c.got, 0, first_pfn).expect("finalize on the model backend");
}

/// Faults every page back and checks its [`pattern`] data and that no
/// lock was left held: the end-of-run property of every race.
pub fn bring_back_and_check(t: &PageTable, b: &ModelBackend) {
    for p in 0..t.len() {
        cpu_fault(t, b, p, Policy::Rules).expect("fault back");
        assert_eq!(
            b.ram[p].load(Ordering::Acquire),
            pattern(p),
            "page {p} lost"
        );
        assert!(
            !t.info(p).map(|i| i.locked).unwrap_or(true),
            "page {p} left locked"
        );
    }
}

pub struct ModelBackend {
    /// What a CPU reading the page sees once it is resident.
    pub ram: Vec<AtomicU64>,
    pub vram: Vec<AtomicU64>,
    /// Moves back to RAM, per page.
    pub moves: Vec<AtomicU64>,
    /// Batches with more pages than this fail (0: never), to force rule 2.
    pub fail_batches_over: u32,
}

impl ModelBackend {
    pub fn new(pages: usize) -> Self {
        let v = || (0..pages).map(|_| AtomicU64::new(0)).collect::<Vec<_>>();
        Self {
            ram: v(),
            vram: v(),
            moves: v(),
            fail_batches_over: 0,
        }
    }
}

impl Backend for ModelBackend {
    fn migrate_to_ram(
        &self,
        chunk: Chunk,
        pages: &PageMask,
        from: &[Residency],
    ) -> Result<PageMask, BackendError> {
        if self.fail_batches_over != 0 && pages.count() > self.fail_batches_over {
            return Err(BackendError::Gpu);
        }
        for (i, p) in chunk.pages() {
            if pages.get(i) {
                assert!(
                    matches!(from[i], Residency::Device { .. }),
                    "moving page {p} that is not in VRAM"
                );
                self.ram[p].store(self.vram[p].load(Ordering::Acquire), Ordering::Release);
                self.moves[p].fetch_add(1, Ordering::AcqRel);
            }
        }
        Ok(*pages)
    }
    fn zero_fill(&self, chunk: Chunk, pages: &PageMask) -> Result<PageMask, BackendError> {
        for (i, p) in chunk.pages() {
            if pages.get(i) {
                self.ram[p].store(0, Ordering::Release);
            }
        }
        Ok(*pages)
    }
    fn protect(&self, _: Chunk, _: &PageMask) -> Result<(), BackendError> {
        Ok(())
    }
    fn moved_to_device(&self, chunk: Chunk, pages: &PageMask) -> Result<(), BackendError> {
        for (i, p) in chunk.pages() {
            if pages.get(i) {
                self.vram[p].store(self.ram[p].load(Ordering::Acquire), Ordering::Release);
                self.ram[p].store(u64::MAX, Ordering::Release); // poison: RAM copy is gone
            }
        }
        Ok(())
    }
    fn unprotect(&self, _: Chunk, _: &PageMask) -> Result<(), BackendError> {
        Ok(())
    }
}
