//! The host's memcpy bandwidth: one thread copying a buffer in 2 MiB pieces
//! between two shared mappings whose pages are already there (a pure copy,
//! no page allocation). The ceiling for our GPU phase and a floor under the
//! herd's per-page cost. The copy is checked word for word.

use std::time::Instant;

use super::memory::{self, Mapping, CHUNK};
use super::sample::{Impl, Sample};
use super::{median, BenchError};
use crate::herd::Mode;

pub struct Bandwidth {
    /// Microseconds to copy the whole buffer (median rep).
    pub copy_us: f64,
    /// Words that differ after the copy.
    pub bad_words: u64,
}

pub fn measure(bytes: usize, reps: usize) -> Result<Bandwidth, BenchError> {
    let src_fd = memory::memfd("memcpy-src", bytes)?;
    let dst_fd = memory::memfd("memcpy-dst", bytes)?;
    let pattern: Vec<u8> = (0..bytes / 4)
        .flat_map(|w| (w as u32 ^ 0x5a5a_5a5a).to_le_bytes())
        .collect();
    memory::fill(&src_fd, &pattern)?;
    memory::fill(&dst_fd, &vec![0u8; bytes])?;
    let src = Mapping::shared(&src_fd, bytes, false)?;
    let dst = Mapping::shared(&dst_fd, bytes, true)?;
    // SAFETY: two distinct mappings of `bytes` each; only this thread uses them.
    let (from, to) = unsafe {
        (
            std::slice::from_raw_parts(src.addr() as *const u8, bytes),
            std::slice::from_raw_parts_mut(dst.addr() as *mut u8, bytes),
        )
    };
    // One untimed pass maps every page on both sides.
    to.copy_from_slice(from);
    let mut times = Vec::with_capacity(reps.max(1));
    for _ in 0..reps.max(1) {
        to.fill(0);
        let t = Instant::now();
        for (d, s) in to.chunks_mut(CHUNK).zip(from.chunks(CHUNK)) {
            d.copy_from_slice(s);
        }
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let bad_words = to
        .chunks_exact(4)
        .zip(pattern.chunks_exact(4))
        .filter(|(a, b)| a != b)
        .count() as u64;
    Ok(Bandwidth {
        copy_us: median(&times),
        bad_words,
    })
}

/// The bandwidth as a herd sample: microseconds per 4 KiB page.
pub fn sample(mode: Mode, bytes: usize, threads: usize, reps: usize) -> Result<Sample, BenchError> {
    let b = measure(bytes, reps)?;
    let pages = (bytes / 4096).max(1) as f64;
    Ok(Sample {
        imp: Impl::Memcpy,
        mode,
        size_kib: (bytes / 1024) as u64,
        threads: threads as u64,
        per_page_cpu_us: b.copy_us / pages,
        cpu_phase_med_us: Some(b.copy_us),
        gpu_phase_med_us: None,
        bad: b.bad_words,
        reps: Some(reps as u64),
    })
}
