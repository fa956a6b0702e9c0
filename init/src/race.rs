//! GPU faults racing CPU faults on one buffer: GPU kernels increment every
//! word while CPU threads keep reading pages (pulling them back to RAM), so
//! pages ping-pong between VRAM and RAM mid-kernel. No increment may be
//! lost: at the end every word is its start value plus the number of
//! kernels, and no read ever sees a value outside that range.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use ipc_protocol::interfaces::gpu::{BindView, CreateVm, DestroyVm, Stats, Submit, Unbind, Wait};
use ipc_protocol::types::{JobStatus, KernelKind};

use crate::client::SvmBuffer;
use crate::supervisor::Clients;

#[derive(Debug, Clone)]
pub struct RaceResult {
    /// Words out of range during the race, or wrong at the end.
    pub bad_words: u64,
    pub gpu_faults: u64,
    pub pages_to_ram: u64,
    pub cpu_reads: u64,
}

pub fn run(
    c: &Clients,
    bytes: usize,
    kernels: u32,
    cpu_threads: usize,
    job_timeout_ms: u32,
) -> Result<RaceResult, String> {
    let vm = c.gpu.call(CreateVm {}).map_err(|e| e.to_string())?.vm;
    let before = c.gpu.call(Stats {}).map_err(|e| e.to_string())?;
    let buf = SvmBuffer::new(&c.pager, bytes).map_err(|e| e.to_string())?;
    c.gpu
        .call(BindView {
            vm,
            view: buf.view,
            gpu_addr: buf.addr,
        })
        .map_err(|e| e.to_string())?;
    // SAFETY: ours until release; shared with the GPU during the race, read
    // there only with volatile loads.
    let words = unsafe { buf.words() };
    for (i, w) in words.iter_mut().enumerate() {
        *w = i as u32 * 16;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let bad = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(AtomicU64::new(0));
    let pages = bytes / 4096;
    let base = buf.addr as usize;
    let readers: Vec<_> = (0..cpu_threads)
        .map(|t| {
            let (stop, bad, reads) = (stop.clone(), bad.clone(), reads.clone());
            std::thread::spawn(move || {
                let mut rng = 0x9e37_79b9u64 * (t as u64 + 1) | 1;
                while !stop.load(Ordering::Acquire) {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let w = (rng as usize % pages) * 1024 + (rng >> 32) as usize % 1024;
                    // SAFETY: inside the buffer.
                    let v = unsafe { std::ptr::read_volatile((base as *const u32).add(w)) };
                    let start = w as u32 * 16;
                    if v < start || v > start + kernels {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut result = Ok(());
    for _ in 0..kernels {
        let job = match c.gpu.call(Submit {
            vm,
            kernel: KernelKind::IncrementAll,
            addr: buf.addr,
            len: bytes as u64,
            stride: 4,
            value: 1,
            threads: 64,
        }) {
            Ok(s) => s.job,
            Err(e) => {
                result = Err(e.to_string());
                break;
            }
        };
        match c.gpu.call(Wait {
            job,
            timeout_ms: job_timeout_ms,
        }) {
            Ok(d) if d.status == JobStatus::Completed => {}
            Ok(d) => {
                result = Err(format!("GPU job ended {:?}", d.status));
                break;
            }
            Err(e) => {
                result = Err(e.to_string());
                break;
            }
        }
    }
    stop.store(true, Ordering::Release);
    for r in readers {
        let _ = r.join();
    }
    result?;
    let end_bad = words
        .iter()
        .enumerate()
        .filter(|(i, v)| **v != *i as u32 * 16 + kernels)
        .count() as u64;
    let after = c.gpu.call(Stats {}).map_err(|e| e.to_string())?;
    c.gpu
        .call(Unbind {
            vm,
            gpu_addr: buf.addr,
        })
        .map_err(|e| e.to_string())?;
    buf.release(&c.pager).map_err(|e| e.to_string())?;
    c.gpu.call(DestroyVm { vm }).map_err(|e| e.to_string())?;
    Ok(RaceResult {
        bad_words: bad.load(Ordering::Relaxed) + end_bad,
        gpu_faults: after.gpu_faults - before.gpu_faults,
        pages_to_ram: after.pages_to_ram - before.pages_to_ram,
        cpu_reads: reads.load(Ordering::Relaxed),
    })
}
