//! Per-page-size migration counters (issue 16 item 7, as `GpuStats`
//! reports them): how many migrations of each size, the bytes they moved
//! and the time they took, each way. A migration to VRAM has the size the
//! fault path picked for it (`density.rs`: 4 KiB, 64 KiB or 2 MiB); a copy
//! back to RAM counts in the smallest size its pages fit.

use std::sync::atomic::{AtomicU64, Ordering};

use ipc_protocol::interfaces::gpu::SizeStat;

const PAGE: u64 = 4096;
/// The sizes, in pages.
const SIZES: [u64; 3] = [1, 16, 512];

#[derive(Default)]
struct Class {
    to_vram: AtomicU64,
    to_vram_bytes: AtomicU64,
    to_vram_us: AtomicU64,
    to_ram: AtomicU64,
    to_ram_bytes: AtomicU64,
    to_ram_us: AtomicU64,
}

#[derive(Default)]
pub struct SizeCounters {
    classes: [Class; 3],
}

/// The class of a region of `pages` pages: the smallest size it fits.
fn class_of(pages: u64) -> usize {
    SIZES
        .iter()
        .position(|s| pages <= *s)
        .unwrap_or(SIZES.len() - 1)
}

fn add(c: &AtomicU64, v: u64) {
    c.fetch_add(v, Ordering::Relaxed);
}

impl SizeCounters {
    /// A migration of a `region`-page region moved `moved` pages to VRAM
    /// in `us` microseconds.
    pub fn to_vram(&self, region: u64, moved: u64, us: u64) {
        let c = &self.classes[class_of(region)];
        add(&c.to_vram, 1);
        add(&c.to_vram_bytes, moved.saturating_mul(PAGE));
        add(&c.to_vram_us, us);
    }

    /// A copy of `pages` pages back to RAM took `us` microseconds.
    pub fn to_ram(&self, pages: u64, us: u64) {
        let c = &self.classes[class_of(pages)];
        add(&c.to_ram, 1);
        add(&c.to_ram_bytes, pages.saturating_mul(PAGE));
        add(&c.to_ram_us, us);
    }

    /// The counters now, smallest size first.
    pub fn snapshot(&self) -> Vec<SizeStat> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SIZES
            .iter()
            .zip(&self.classes)
            .map(|(pages, c)| SizeStat {
                page_bytes: pages * PAGE,
                to_vram: get(&c.to_vram),
                to_vram_bytes: get(&c.to_vram_bytes),
                to_vram_us: get(&c.to_vram_us),
                to_ram: get(&c.to_ram),
                to_ram_bytes: get(&c.to_ram_bytes),
                to_ram_us: get(&c.to_ram_us),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_migration_counts_in_its_size() {
        let s = SizeCounters::default();
        s.to_vram(512, 500, 40);
        s.to_vram(16, 16, 7);
        s.to_vram(1, 1, 3);
        s.to_ram(1, 2);
        s.to_ram(9, 5);
        s.to_ram(300, 9);
        let v = s.snapshot();
        let sizes: Vec<u64> = v.iter().map(|c| c.page_bytes).collect();
        assert_eq!(sizes, vec![4096, 65536, 2 << 20]);
        assert_eq!(
            (v[2].to_vram, v[2].to_vram_bytes, v[2].to_vram_us),
            (1, 500 * 4096, 40)
        );
        assert_eq!((v[1].to_vram, v[0].to_vram), (1, 1));
        let to_ram: Vec<(u64, u64)> = v.iter().map(|c| (c.to_ram, c.to_ram_bytes)).collect();
        assert_eq!(to_ram, vec![(1, 4096), (1, 9 * 4096), (1, 300 * 4096)]);
    }
}
