//! Random 4 KiB GPU reads over a buffer larger than VRAM (4x by default):
//! how many bytes migrations move for the bytes the GPU touches, from
//! `Gpu::Stats`. The buffer is filled by the CPU first and every word is
//! checked after the job (pages still in VRAM come back for the check).

use std::time::Instant;

use ipc_protocol::interfaces::gpu::{BindView, CreateVm, DestroyVm, Stats, Submit, Unbind, Wait};
use ipc_protocol::types::{JobStatus, KernelKind};
use serde::Serialize;

use super::BenchError;
use crate::client::SvmBuffer;
use crate::supervisor::Clients;

const MIB: u64 = 1 << 20;
/// Reads per hardware thread of the device model's `RandomRead` kernel.
const READS_PER_THREAD: u64 = 64;

#[derive(Debug, Clone)]
pub struct RandomConfig {
    /// The buffer as a multiple of VRAM.
    pub ratio: f64,
    /// GPU threads of the job (each reads 64 random pages).
    pub gpu_threads: u16,
    /// The device model's hardware threads (the job gets at most these).
    pub hw_threads: u16,
    pub seed: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct RandomAccess {
    pub vram_mib: u64,
    pub buffer_mib: u64,
    pub reads: u64,
    /// 4 KiB per read: each read touches one page (a page read twice
    /// counts twice, so the ratio below is at worst a little low).
    pub touched_bytes: u64,
    /// Pages migrated to VRAM by the job's faults, in bytes.
    pub moved_to_vram_bytes: u64,
    /// Pages evicted or migrated back meanwhile, in bytes.
    pub moved_to_ram_bytes: u64,
    pub moved_over_touched: f64,
    pub gpu_faults: u64,
    pub job_ms: f64,
    pub bad_pages: u64,
}

fn system(e: impl std::fmt::Display) -> BenchError {
    BenchError::System(e.to_string())
}

pub fn run(c: &Clients, cfg: &RandomConfig) -> Result<RandomAccess, BenchError> {
    let vram = c.gpu.call(Stats {}).map_err(system)?.vram_total;
    let bytes = ((vram as f64 * cfg.ratio) as u64).div_ceil(2 * MIB) * 2 * MIB;
    let vm = c.gpu.call(CreateVm {}).map_err(system)?.vm;
    let buf = SvmBuffer::new(&c.pager, bytes as usize).map_err(system)?;
    c.gpu
        .call(BindView {
            vm,
            view: buf.view,
            gpu_addr: buf.addr,
            flags: 0,
        })
        .map_err(system)?;
    // SAFETY: the buffer is ours until `release`; the GPU only reads it,
    // inside the job we wait for.
    let words = unsafe { buf.words() };
    for (i, w) in words.iter_mut().enumerate() {
        *w = i as u32;
    }
    let before = c.gpu.call(Stats {}).map_err(system)?;
    let threads = cfg.gpu_threads.clamp(1, cfg.hw_threads.max(1));
    let t = Instant::now();
    let job = c
        .gpu
        .call(Submit {
            vm,
            kernel: KernelKind::RandomRead,
            addr: buf.addr,
            len: bytes,
            stride: 4096,
            value: cfg.seed,
            threads,
        })
        .map_err(system)?
        .job;
    let done = c
        .gpu
        .call(Wait {
            job,
            timeout_ms: 600_000,
        })
        .map_err(system)?;
    let job_ms = t.elapsed().as_secs_f64() * 1e3;
    let after = c.gpu.call(Stats {}).map_err(system)?;
    if done.status != JobStatus::Completed {
        return Err(BenchError::System(format!(
            "random reads: {:?}",
            done.status
        )));
    }
    let bad_pages = words
        .chunks(1024)
        .enumerate()
        .filter(|(pg, page)| {
            page.iter()
                .enumerate()
                .any(|(i, w)| *w != (pg * 1024 + i) as u32)
        })
        .count() as u64;
    c.gpu
        .call(Unbind {
            vm,
            gpu_addr: buf.addr,
        })
        .map_err(system)?;
    buf.release(&c.pager).map_err(system)?;
    c.gpu.call(DestroyVm { vm }).map_err(system)?;
    let reads = threads as u64 * READS_PER_THREAD;
    let to_vram = after.pages_to_vram.saturating_sub(before.pages_to_vram) * 4096;
    Ok(RandomAccess {
        vram_mib: vram / MIB,
        buffer_mib: bytes / MIB,
        reads,
        touched_bytes: reads * 4096,
        moved_to_vram_bytes: to_vram,
        moved_to_ram_bytes: after.pages_to_ram.saturating_sub(before.pages_to_ram) * 4096,
        moved_over_touched: to_vram as f64 / (reads * 4096) as f64,
        gpu_faults: after.gpu_faults.saturating_sub(before.gpu_faults),
        job_ms,
        bad_pages,
    })
}
