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
    /// The first wrong words: where, what was seen and what was expected.
    pub wrong: Vec<WrongWord>,
    pub gpu_faults: u64,
    pub pages_to_ram: u64,
    pub cpu_reads: u64,
}

/// One word seen out of range (during the race) or wrong at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrongWord {
    /// `true`: at the end; `false`: a CPU read during the race.
    pub at_end: bool,
    pub page: usize,
    /// Word index within the page.
    pub word: usize,
    pub value: u32,
    /// The start value (before any kernel); a value in
    /// `[start, start + kernels]` counts as good during the race, only
    /// `start + kernels` at the end.
    pub start: u32,
    pub kernels: u32,
}

impl WrongWord {
    /// How the value relates to the expected one: zero, the start value,
    /// or `start + k` (`k` kernels' increments landed).
    pub fn kind(&self) -> String {
        if self.value == 0 {
            "zero".into()
        } else if self.value >= self.start && self.value <= self.start + self.kernels {
            format!("start+{}", self.value - self.start)
        } else {
            "foreign".into()
        }
    }
}

/// At most this many wrong words are described.
const WRONG_KEPT: usize = 32;

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
            flags: 0,
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
    let wrong = Arc::new(std::sync::Mutex::new(Vec::new()));
    let pages = bytes / 4096;
    let base = buf.addr as usize;
    let readers: Vec<_> = (0..cpu_threads)
        .map(|t| {
            let (stop, bad, reads) = (stop.clone(), bad.clone(), reads.clone());
            let wrong = wrong.clone();
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
                        let mut wr = wrong.lock().unwrap_or_else(|e| e.into_inner());
                        if wr.len() < WRONG_KEPT / 2 {
                            wr.push(WrongWord {
                                at_end: false,
                                page: w / 1024,
                                word: w % 1024,
                                value: v,
                                start,
                                kernels,
                            });
                        }
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
    let mut wrong = std::mem::take(&mut *wrong.lock().unwrap_or_else(|e| e.into_inner()));
    let mut end_bad = 0u64;
    for (i, v) in words.iter().enumerate() {
        let start = i as u32 * 16;
        if *v != start + kernels {
            end_bad += 1;
            if wrong.len() < WRONG_KEPT {
                wrong.push(WrongWord {
                    at_end: true,
                    page: i / 1024,
                    word: i % 1024,
                    value: *v,
                    start,
                    kernels,
                });
            }
        }
    }
    for w in &wrong {
        log::error!(
            "race: {} page {} word {}: {:#x}, expected {:#x} ({})",
            if w.at_end {
                "at the end"
            } else {
                "during the race"
            },
            w.page,
            w.word,
            w.value,
            w.start + if w.at_end { w.kernels } else { 0 },
            w.kind()
        );
    }
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
        wrong,
        gpu_faults: after.gpu_faults.saturating_sub(before.gpu_faults),
        pages_to_ram: after.pages_to_ram.saturating_sub(before.pages_to_ram),
        cpu_reads: reads.load(Ordering::Relaxed),
    })
}
