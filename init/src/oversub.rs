//! Oversubscription: an SVM working set larger than VRAM, touched by the
//! GPU and the CPU in turn, while a second GPU context runs jobs on buffer
//! objects that together want half of VRAM. The two worlds compete for
//! VRAM; mm-server's eviction loop presses on both equally (rule 7).
//!
//! Every word of the SVM buffer and of every buffer object is checked at
//! the end: SVM word `i` must be `i + 2 * passes` (one GPU and one CPU
//! increment per pass), and every word of buffer object `b` must equal the
//! number of jobs run on it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ipc_protocol::client::CallError;
use ipc_protocol::interfaces::gpu::{
    self as g, BindView, CreateBo, DestroyBo, GpuError, MapBo, ReadBo, Stats, Submit, Unbind, Wait,
};
use ipc_protocol::interfaces::pressure::{PressureStatus, Status};
use ipc_protocol::types::{BoId, JobStatus, KernelKind, VmId};

use crate::client::{destroy_vm, scoped_buffer, scoped_vm, SvmBuffer};
use crate::supervisor::Clients;
use scopeguard::ScopeGuard;

const MIB: u64 = 1 << 20;
/// Where buffer objects are mapped in their own GPU context.
const BO_BASE: u64 = 1 << 40;

#[derive(Debug, Clone)]
pub struct Config {
    /// SVM working set as a multiple of usable VRAM.
    pub ratio: f64,
    /// GPU-then-CPU passes over the working set.
    pub passes: usize,
    /// Buffer objects competing for VRAM (0: SVM alone).
    pub bos: usize,
    /// Share of VRAM the buffer objects want together.
    pub bo_share: f64,
    /// Client threads submitting buffer-object jobs (each over its share).
    pub bo_threads: usize,
    pub gpu_threads: u16,
    pub cpu_threads: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ratio: 2.0,
            passes: 2,
            bos: 8,
            bo_share: 0.5,
            bo_threads: 4,
            gpu_threads: 32,
            cpu_threads: 4,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Report {
    pub vram_bytes: u64,
    pub svm_bytes: u64,
    pub bo_bytes: u64,
    pub passes: usize,
    pub bo_jobs: u64,
    pub elapsed_s: f64,
    /// SVM pages and buffer objects with any wrong word.
    pub bad_pages: u64,
    pub bad_bos: u64,
    /// mm-server's status at the end; `None` if it did not answer.
    pub pressure: Option<PressureStatus>,
    pub gpu: g::GpuStats,
}

impl Report {
    /// The larger world's eviction bytes over the smaller's (1.0 is equal).
    pub fn pressure_ratio(&self) -> f64 {
        let p = self.pressure.clone().unwrap_or(ZERO);
        let (b, s) = (p.bo_evicted_bytes as f64, p.svm_evicted_bytes as f64);
        if b.min(s) == 0.0 {
            return f64::INFINITY;
        }
        b.max(s) / b.min(s)
    }

    pub fn text(&self) -> String {
        let p = &self.pressure.clone().unwrap_or(ZERO);
        format!(
            "oversub  vram={} MiB  svm working set={} MiB ({:.1}x)  bo={} MiB  passes={}  bo jobs={}  elapsed={:.2}s\n\
             eviction  rounds={}  stalled reservations={}\n\
             \x20 bo world : evicted {:8.1} MiB  ({} object evictions, {} restores)\n\
             \x20 svm world: evicted {:8.1} MiB  (pages to VRAM {}, to RAM {})\n\
             \x20 equal pressure: larger/smaller = {:.2}\n\
             bad pages={}  bad buffer objects={}{}",
            self.vram_bytes / MIB,
            self.svm_bytes / MIB,
            self.svm_bytes as f64 / self.vram_bytes as f64,
            self.bo_bytes / MIB,
            self.passes,
            self.bo_jobs,
            self.elapsed_s,
            p.rounds,
            p.stalled_reservations,
            p.bo_evicted_bytes as f64 / MIB as f64,
            self.gpu.bo_evictions,
            self.gpu.bo_restores,
            p.svm_evicted_bytes as f64 / MIB as f64,
            self.gpu.pages_to_vram,
            self.gpu.pages_to_ram,
            self.pressure_ratio(),
            self.bad_pages,
            self.bad_bos,
            if self.pressure.is_none() { "\n(mm-server did not answer: eviction figures unknown)" } else { "" }
        )
    }

    pub fn json(&self) -> String {
        let p = &self.pressure.clone().unwrap_or(ZERO);
        format!(
            "{{\"vram_bytes\":{},\"svm_bytes\":{},\"bo_bytes\":{},\"passes\":{},\"bo_jobs\":{},\"elapsed_s\":{:.3},\"rounds\":{},\"stalled_reservations\":{},\"bo_evicted_bytes\":{},\"svm_evicted_bytes\":{},\"bo_evictions\":{},\"bo_restores\":{},\"pages_to_vram\":{},\"pages_to_ram\":{},\"bad_pages\":{},\"bad_bos\":{}}}",
            self.vram_bytes,
            self.svm_bytes,
            self.bo_bytes,
            self.passes,
            self.bo_jobs,
            self.elapsed_s,
            p.rounds,
            p.stalled_reservations,
            p.bo_evicted_bytes,
            p.svm_evicted_bytes,
            self.gpu.bo_evictions,
            self.gpu.bo_restores,
            self.gpu.pages_to_vram,
            self.gpu.pages_to_ram,
            self.bad_pages,
            self.bad_bos
        )
    }
}

const ZERO: PressureStatus = PressureStatus {
    vram_total: 0,
    vram_used: 0,
    low_watermark: 0,
    high_watermark: 0,
    bo_vram_bytes: 0,
    svm_vram_bytes: 0,
    svm_sram_bytes: 0,
    bo_evicted_bytes: 0,
    svm_evicted_bytes: 0,
    rounds: 0,
    stalled_reservations: 0,
};

#[derive(Debug)]
pub enum OversubError {
    Pager(String),
    Gpu(GpuError),
    Transport(String),
    Job(JobStatus),
}

impl std::fmt::Display for OversubError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pager(e) => write!(f, "pager: {e}"),
            Self::Gpu(e) => write!(f, "GPU server: error {e:?}"),
            Self::Transport(e) => write!(f, "GPU server: {e}"),
            Self::Job(s) => write!(f, "a GPU job ended {s:?}, not Completed"),
        }
    }
}

fn gpu_err(e: CallError<GpuError>) -> OversubError {
    match e {
        CallError::Server(e) => OversubError::Gpu(e),
        e => OversubError::Transport(e.to_string()),
    }
}

fn run_job(c: &Clients, vm: VmId, addr: u64, len: u64, threads: u16) -> Result<(), OversubError> {
    let job = c
        .gpu
        .call(Submit {
            vm,
            kernel: KernelKind::IncrementAll,
            addr,
            len,
            stride: 4,
            value: 1,
            threads,
        })
        .map_err(gpu_err)?
        .job;
    let done = c
        .gpu
        .call(Wait {
            job,
            timeout_ms: 300_000,
        })
        .map_err(gpu_err)?;
    match done.status {
        JobStatus::Completed => Ok(()),
        s => Err(OversubError::Job(s)),
    }
}

/// The buffer-object side: jobs round-robin over the objects until told to
/// stop; returns the jobs run on each.
fn bo_jobs(
    c: &Clients,
    vm: VmId,
    bos: &[(BoId, u64)],
    mine: &[usize],
    stop: &AtomicBool,
) -> Result<Vec<u64>, OversubError> {
    let mut runs = vec![0u64; bos.len()];
    for k in 0.. {
        if stop.load(Ordering::Acquire) {
            break;
        }
        let i = mine[k % mine.len()];
        run_job(c, vm, BO_BASE + i as u64 * (64 * MIB), bos[i].1, 8)?;
        runs[i] += 1;
    }
    Ok(runs)
}

/// Counts the words of `bo` that are not `expect`.
fn check_bo(c: &Clients, bo: BoId, expect: u32) -> Result<u64, OversubError> {
    let (data, mut fds) = c
        .gpu
        .call_with_handles(ReadBo { bo }, vec![])
        .map_err(gpu_err)?;
    let fd = fds
        .pop()
        .ok_or_else(|| OversubError::Transport("ReadBo sent no memfd".into()))?;
    let region = hw::shm::Region::map(fd, data.size_bytes as usize)
        .map_err(|e| OversubError::Transport(e.to_string()))?;
    let mut buf = vec![0u8; data.size_bytes as usize];
    if !region.read(0, &mut buf) {
        return Err(OversubError::Transport("ReadBo memfd too short".into()));
    }
    Ok(buf
        .chunks_exact(4)
        .filter(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]) != expect)
        .count() as u64)
}

pub fn run(c: &Clients, cfg: &Config) -> Result<Report, OversubError> {
    let t0 = Instant::now();
    let before = c.gpu.call(Stats {}).map_err(gpu_err)?;
    let vram = before.vram_total;
    let svm_bytes = ((vram as f64 * cfg.ratio) as u64).div_ceil(2 * MIB) * 2 * MIB;
    let bo_size = if cfg.bos == 0 {
        0
    } else {
        ((vram as f64 * cfg.bo_share) as u64 / cfg.bos as u64).max(4096) & !4095
    };

    // The buffer-object context: its own VM, objects mapped 64 MiB apart.
    // What this makes goes whatever path it leaves by (client.rs).
    let scoped_bo_vm = scoped_vm(&c.gpu).map_err(gpu_err)?;
    let bo_vm = *scoped_bo_vm;
    let mut bos = scopeguard::guard(Vec::new(), |bos: Vec<(BoId, u64)>| {
        for (bo, _) in bos {
            let _ = c.gpu.call(DestroyBo { bo });
        }
    });
    for i in 0..cfg.bos {
        let bo = c
            .gpu
            .call(CreateBo {
                size_bytes: bo_size,
            })
            .map_err(gpu_err)?
            .bo;
        c.gpu
            .call(MapBo {
                vm: bo_vm,
                bo,
                gpu_addr: BO_BASE + i as u64 * (64 * MIB),
            })
            .map_err(gpu_err)?;
        bos.push((bo, bo_size));
    }

    // The SVM context.
    let scoped = scoped_vm(&c.gpu).map_err(gpu_err)?;
    let vm = *scoped;
    let buf = SvmBuffer::new(&c.pager, svm_bytes as usize)
        .map_err(|e| OversubError::Pager(e.to_string()))?;
    let buf = scoped_buffer(&c.pager, buf);
    c.gpu
        .call(BindView {
            vm,
            view: buf.view,
            gpu_addr: buf.addr,
            flags: 0,
        })
        .map_err(gpu_err)?;
    // SAFETY: the buffer is ours until `release`; the GPU writes it only
    // inside jobs we wait for, and the CPU threads below split it.
    let words = unsafe { buf.words() };
    for (i, w) in words.iter_mut().enumerate() {
        *w = i as u32;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let result = std::thread::scope(|s| {
        let bo_side: Vec<_> = (0..cfg.bo_threads.min(bos.len()))
            .map(|t| {
                let (stop, bos) = (stop.clone(), &bos);
                let mine: Vec<usize> = (t..bos.len()).step_by(cfg.bo_threads).collect();
                s.spawn(move || bo_jobs(c, bo_vm, bos, &mine, &stop))
            })
            .collect();
        let svm_side = (|| {
            for pass in 0..cfg.passes {
                log::info!("oversub: pass {}/{}: GPU", pass + 1, cfg.passes);
                run_job(c, vm, buf.addr, svm_bytes, cfg.gpu_threads)?;
                log::info!("oversub: pass {}/{}: CPU", pass + 1, cfg.passes);
                let per = words.len().div_ceil(cfg.cpu_threads);
                std::thread::scope(|cs| {
                    for part in words.chunks_mut(per) {
                        cs.spawn(move || {
                            for w in part.iter_mut() {
                                // SAFETY: a valid, exclusive element; volatile
                                // because the pager moves the page under us.
                                unsafe {
                                    std::ptr::write_volatile(
                                        w,
                                        std::ptr::read_volatile(w).wrapping_add(1),
                                    )
                                };
                            }
                        });
                    }
                });
            }
            Ok::<(), OversubError>(())
        })();
        stop.store(true, Ordering::Release);
        let mut runs = vec![0u64; bos.len()];
        for h in bo_side {
            let r = h
                .join()
                .unwrap_or_else(|_| Err(OversubError::Transport("BO thread panicked".into())))?;
            runs.iter_mut().zip(r).for_each(|(a, b)| *a += b);
        }
        svm_side.map(|()| runs)
    });
    let runs = result?;

    // Every word of every page, and of every buffer object.
    let expect = 2 * cfg.passes as u32;
    let bad_pages = words
        .chunks(1024)
        .enumerate()
        .filter(|(pg, page)| {
            page.iter()
                .enumerate()
                .any(|(i, w)| *w != (pg * 1024 + i) as u32 + expect)
        })
        .count() as u64;
    let mut bad_bos = 0;
    for ((bo, _), n) in bos.iter().zip(&runs) {
        if check_bo(c, *bo, *n as u32)? > 0 {
            bad_bos += 1;
        }
    }
    let pressure = match c.pressure.call(Status {}) {
        Ok(p) => Some(p),
        Err(e) => {
            log::warn!("oversub: mm-server status: {e}");
            None
        }
    };
    let after = c.gpu.call(Stats {}).map_err(gpu_err)?;
    c.gpu
        .call(Unbind {
            vm,
            gpu_addr: buf.addr,
        })
        .map_err(gpu_err)?;
    ScopeGuard::into_inner(buf)
        .release(&c.pager)
        .map_err(|e| OversubError::Pager(e.to_string()))?;
    for (bo, _) in ScopeGuard::into_inner(bos) {
        c.gpu.call(DestroyBo { bo }).map_err(gpu_err)?;
    }
    destroy_vm(&c.gpu, scoped).map_err(gpu_err)?;
    destroy_vm(&c.gpu, scoped_bo_vm).map_err(gpu_err)?;
    let gpu = g::GpuStats {
        // Saturating: a GPU server restart starts its counters again.
        pages_to_vram: after.pages_to_vram.saturating_sub(before.pages_to_vram),
        pages_to_ram: after.pages_to_ram.saturating_sub(before.pages_to_ram),
        bo_evictions: after.bo_evictions.saturating_sub(before.bo_evictions),
        bo_restores: after.bo_restores.saturating_sub(before.bo_restores),
        gpu_faults: after.gpu_faults.saturating_sub(before.gpu_faults),
        invalidations: after.invalidations.saturating_sub(before.invalidations),
        ..after
    };
    Ok(Report {
        vram_bytes: vram,
        svm_bytes,
        bo_bytes: bo_size * cfg.bos as u64,
        passes: cfg.passes,
        bo_jobs: runs.iter().sum(),
        elapsed_s: t0.elapsed().as_secs_f64(),
        bad_pages,
        bad_bos,
        pressure,
        gpu,
    })
}
