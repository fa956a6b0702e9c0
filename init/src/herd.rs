//! The anchor workload (the UVM herd, `bench/uvm_herd.cu`): the CPU fills a
//! buffer, the GPU touches every page (migration to VRAM), then N CPU
//! threads read every page concurrently, each starting at a different page
//! (migration back under a thundering herd), and every page is checked.
//!
//! With several GPUs (`gpus`), the buffer is cut in as many stripes and GPU
//! `k` touches stripe `k`, all at once: the herd then brings pages back
//! from every GPU together (issue 17).

use std::time::{Duration, Instant};

use ipc_protocol::client::{CallError, Client};
use ipc_protocol::interfaces::gpu::{Gpu, GpuError, Stats, Submit, Unbind, Wait};
use ipc_protocol::types::{JobStatus, KernelKind, VmId};
use scopeguard::ScopeGuard;

use crate::client::{destroy_vm, scoped_buffer, scoped_vm, SvmBuffer};
use crate::supervisor::Clients;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `p[page * 1024] += 1` on the GPU; the CPU checks that word.
    Touch,
    /// Every word `+= 1` on the GPU; the CPU checks the first and last word.
    IncAll,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Touch => "touch-pg",
            Self::IncAll => "inc-all",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    pub bytes: usize,
    pub threads: usize,
    pub reps: usize,
    /// GPU hardware threads for the kernel.
    pub gpu_threads: u16,
    /// Every CPU thread starts at page 0 and walks the same order: the
    /// whole herd lands on one DEVICE page at a time (rule 3's case).
    pub same_start: bool,
    /// GPUs the pages are spread over (the system must have them; 0 or 1:
    /// GPU 0 alone).
    pub gpus: u8,
}

#[derive(Debug, Clone)]
pub struct Result {
    pub mode: Mode,
    pub size_kib: usize,
    pub threads: usize,
    pub gpu_phase_med_us: f64,
    pub cpu_phase_med_us: f64,
    pub per_page_cpu_us: f64,
    /// Pages with any wrong word (every word of every page is checked
    /// after the timed phase).
    pub bad: u64,
    pub pages_to_vram: u64,
    pub pages_to_ram: u64,
}

impl Result {
    pub fn line(&self) -> String {
        format!(
            "svm        size={:6}KiB {:8} threads={:2} gpu_phase_med={:10.1}us cpu_phase_med={:10.1}us cpu_GBps={:6.2} per_page_cpu_us={:6.2} bad={}",
            self.size_kib,
            self.mode.name(),
            self.threads,
            self.gpu_phase_med_us,
            self.cpu_phase_med_us,
            (self.size_kib as f64 * 1024.0) / self.cpu_phase_med_us / 1e3,
            self.per_page_cpu_us,
            self.bad
        )
    }
    pub fn json(&self) -> String {
        format!(
            "{{\"mode\":\"{}\",\"size_kib\":{},\"threads\":{},\"gpu_phase_med_us\":{:.1},\"cpu_phase_med_us\":{:.1},\"per_page_cpu_us\":{:.3},\"bad\":{},\"pages_to_vram\":{},\"pages_to_ram\":{}}}",
            self.mode.name(),
            self.size_kib,
            self.threads,
            self.gpu_phase_med_us,
            self.cpu_phase_med_us,
            self.per_page_cpu_us,
            self.bad,
            self.pages_to_vram,
            self.pages_to_ram
        )
    }
}

#[derive(Debug)]
pub enum HerdError {
    Pager(String),
    Gpu(String),
    /// The GPU job did not complete.
    Job(JobStatus),
}

impl std::fmt::Display for HerdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pager(e) => write!(f, "pager: {e}"),
            Self::Gpu(e) => write!(f, "GPU server: {e}"),
            Self::Job(s) => write!(f, "a GPU job ended {s:?}, not Completed"),
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs one configuration `cfg.reps` times.
pub fn run(c: &Clients, cfg: &Config) -> std::result::Result<Result, HerdError> {
    let gpu_err = |e: ipc_protocol::client::CallError<ipc_protocol::interfaces::gpu::GpuError>| {
        HerdError::Gpu(e.to_string())
    };
    let gpus: Vec<&Client<Gpu>> = (0..cfg.gpus.max(1))
        .map(|g| {
            c.gpu_of(g)
                .ok_or(HerdError::Gpu(format!("the system has no GPU {g}")))
        })
        .collect::<std::result::Result<_, _>>()?;
    // The VMs and each buffer go whatever path this leaves by.
    let scoped: Vec<_> = gpus
        .iter()
        .map(|g| scoped_vm(g))
        .collect::<std::result::Result<_, _>>()
        .map_err(gpu_err)?;
    let vms: Vec<VmId> = scoped.iter().map(|v| **v).collect();
    let before = counters(&gpus).map_err(gpu_err)?;
    let pages = cfg.bytes / 4096;
    let (mut gpu_t, mut cpu_t, mut bad) = (Vec::new(), Vec::new(), 0u64);
    for _ in 0..cfg.reps {
        let buf =
            SvmBuffer::new(&c.pager, cfg.bytes).map_err(|e| HerdError::Pager(e.to_string()))?;
        let buf = scoped_buffer(&c.pager, buf);
        for (g, &vm) in gpus.iter().zip(&vms) {
            buf.bind(g, vm).map_err(gpu_err)?;
        }
        // SAFETY: the buffer is ours until `release`; the GPU writes it only
        // inside the submitted job, which we wait for before reading.
        let words = unsafe { buf.words() };
        for (i, w) in words.iter_mut().enumerate() {
            *w = i as u32;
        }
        let t0 = Instant::now();
        gpu_phase(&gpus, &vms, buf.addr, cfg)?;
        let t1 = Instant::now();
        let base = buf.addr as usize;
        let mode = cfg.mode;
        let threads: Vec<_> = (0..cfg.threads)
            .map(|t| {
                let threads = cfg.threads;
                let same = cfg.same_start;
                std::thread::spawn(move || {
                    let mut b = 0u64;
                    for k in 0..pages {
                        let pg = if same {
                            k
                        } else {
                            (k + t * pages / threads) % pages
                        };
                        let w = pg * 1024;
                        // SAFETY: inside the buffer; volatile because other
                        // threads and the pager touch the same memory.
                        let first = unsafe { std::ptr::read_volatile((base as *const u32).add(w)) };
                        if first != w as u32 + 1 {
                            b += 1;
                        }
                        if mode == Mode::IncAll {
                            // SAFETY: as above.
                            let last = unsafe {
                                std::ptr::read_volatile((base as *const u32).add(w + 1023))
                            };
                            if last != (w + 1023) as u32 + 1 {
                                b += 1;
                            }
                        }
                    }
                    b
                })
            })
            .collect();
        let timed_bad: u64 = threads
            .into_iter()
            .map(|h| h.join().unwrap_or(u64::MAX))
            .sum();
        let t2 = Instant::now();
        // Untimed: every word of every page.
        let mut bad_pages = 0u64;
        for pg in 0..pages {
            let expect = |w: usize| match mode {
                Mode::IncAll => w as u32 + 1,
                Mode::Touch if w % 1024 == 0 => w as u32 + 1,
                Mode::Touch => w as u32,
            };
            let first_bad = (pg * 1024..(pg + 1) * 1024).find(|&w| words[w] != expect(w));
            if let Some(w) = first_bad {
                // Which word and what it held: a lost write reads one less,
                // a replayed one more, a lost page something else.
                if bad_pages < 4 {
                    log::error!(
                        "herd: page {pg} of {pages}: word {w} is {:#x}, not {:#x}",
                        words[w],
                        expect(w)
                    );
                }
                bad_pages += 1;
            }
        }
        bad += bad_pages.max(if timed_bad > 0 { 1 } else { 0 });
        gpu_t.push((t1 - t0).as_secs_f64() * 1e6);
        cpu_t.push((t2 - t1).as_secs_f64() * 1e6);
        for (g, &vm) in gpus.iter().zip(&vms) {
            g.call(Unbind {
                vm,
                gpu_addr: buf.addr,
            })
            .map_err(gpu_err)?;
        }
        ScopeGuard::into_inner(buf)
            .release(&c.pager)
            .map_err(|e| HerdError::Pager(e.to_string()))?;
    }
    let after = counters(&gpus).map_err(gpu_err)?;
    for (g, vm) in gpus.iter().zip(scoped) {
        destroy_vm(g, vm).map_err(gpu_err)?;
    }
    let cpu = median(cpu_t);
    Ok(Result {
        mode: cfg.mode,
        size_kib: cfg.bytes / 1024,
        threads: cfg.threads,
        gpu_phase_med_us: median(gpu_t),
        cpu_phase_med_us: cpu,
        per_page_cpu_us: cpu / pages as f64,
        bad,
        // Saturating: a GPU server restart starts its counters again.
        pages_to_vram: after.0.saturating_sub(before.0),
        pages_to_ram: after.1.saturating_sub(before.1),
    })
}

/// Pages to VRAM and to RAM so far, over every GPU.
fn counters(gpus: &[&Client<Gpu>]) -> std::result::Result<(u64, u64), CallError<GpuError>> {
    let mut sum = (0u64, 0u64);
    for g in gpus {
        let s = g.call(Stats {})?;
        sum = (sum.0 + s.pages_to_vram, sum.1 + s.pages_to_ram);
    }
    Ok(sum)
}

/// GPU `k` of `gpus` runs the kernel over stripe `k` of the buffer at
/// `addr`, all of them at once (one GPU: the whole buffer).
fn gpu_phase(
    gpus: &[&Client<Gpu>],
    vms: &[VmId],
    addr: u64,
    cfg: &Config,
) -> std::result::Result<(), HerdError> {
    let gpu_err = |e: CallError<GpuError>| HerdError::Gpu(e.to_string());
    let (kernel, stride) = match cfg.mode {
        Mode::Touch => (KernelKind::AtomicAdd, 4096),
        Mode::IncAll => (KernelKind::IncrementAll, 4),
    };
    // Stripes of whole pages; the last one takes what is left.
    let pages = (cfg.bytes / 4096) as u64;
    let per = pages.div_ceil(gpus.len() as u64);
    let mut jobs = Vec::new();
    for (k, (g, &vm)) in gpus.iter().zip(vms).enumerate() {
        let first = (k as u64 * per).min(pages);
        let n = per.min(pages - first);
        if n == 0 {
            continue;
        }
        let job = g
            .call(Submit {
                vm,
                kernel,
                addr: addr + first * 4096,
                len: n * 4096,
                stride,
                value: 1,
                threads: cfg.gpu_threads,
            })
            .map_err(gpu_err)?
            .job;
        jobs.push((g, job));
    }
    for (g, job) in jobs {
        let done = g
            .call(Wait {
                job,
                timeout_ms: 120_000,
            })
            .map_err(gpu_err)?;
        if done.status != JobStatus::Completed {
            return Err(HerdError::Job(done.status));
        }
    }
    Ok(())
}

/// How long to allow one configuration (used by tests as a bound).
pub fn budget(cfg: &Config) -> Duration {
    Duration::from_secs(30 + (cfg.bytes as u64 >> 20) * cfg.reps as u64)
}
