//! `svm run peer`: the whole peer migration through the servers (several
//! GPUs, issue 17), beside its floor.
//!
//! Each rep: a buffer of `bytes` filled with a known pattern; GPU 0 touches
//! every page (the pages go to VRAM 0; not timed); then GPU 1 touches every
//! page, timed from its submit to its job's end: every chunk moves VRAM to
//! VRAM (the pager collects it from GPU 0, GPU 0's copy engine pushes it
//! into GPU 1's VRAM through its peer window, finalize). The GPU servers'
//! counters must say so (GPU 1 took `bytes / 4096` pages to VRAM, GPU 0
//! sent none to RAM); then GPU 1 touches the pages again, now resident (the
//! kernel's own time, untimed for the throughput), and the CPU reads back
//! every word against the pattern.
//!
//! The floor is the bare copy the issue names: one memmove of the same
//! bytes between two memfd mappings (`hw::shm::Region::copy_to`, the copy
//! `svm bench`'s `peer_copy` times between the two VRAM memfds), pages
//! already there on both sides.

use std::time::Instant;

use hw::shm::Region;
use ipc_protocol::client::{CallError, Client};
use ipc_protocol::interfaces::gpu::{
    Gpu, GpuError, GpuStats, Prefetch, Stats, Submit, Unbind, Wait,
};
use ipc_protocol::types::{JobStatus, KernelKind, VmId};
use scopeguard::ScopeGuard;
use serde::Serialize;

use crate::client::{destroy_vm, scoped_buffer, scoped_vm, SvmBuffer};
use crate::supervisor::Connection;

/// The target: the peer migration at least this share of memcpy.
pub const TARGET: f64 = 0.8;

/// VRAM per device, MiB, when `--vram-mib` is not given: the usual 256,
/// or the buffer and 32 MiB more (the GPU server keeps some for itself),
/// even.
pub fn default_vram_mib(bytes: usize) -> u64 {
    let want = (bytes as u64).div_ceil(1 << 20) + 32;
    want.next_multiple_of(2).max(256)
}

/// Refuses, before booting, a buffer larger than each device's VRAM
/// (`run` also checks the GPU servers' free VRAM once booted).
pub fn check_fits(bytes: usize, vram_bytes: u64) -> Result<(), String> {
    match bytes as u64 <= vram_bytes {
        true => Ok(()),
        false => Err(format!(
            "--size {} KiB does not fit {} MiB of VRAM per GPU: raise --vram-mib",
            bytes >> 10,
            vram_bytes >> 20
        )),
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Buffer size: a non-zero multiple of 4 KiB.
    pub bytes: usize,
    pub reps: usize,
    /// GPU hardware threads for the kernels.
    pub gpu_threads: u16,
    /// What moves the pages to GPU 1 (the timed step).
    pub by: Mover,
}

/// What moves the pages VRAM 0 -> VRAM 1 in the timed step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
pub enum Mover {
    /// GPU 1's kernel touches every page: a GPU fault per chunk (and
    /// per hardware thread), the kernel's own time included.
    Touch,
    /// One `Gpu::Prefetch` of the whole range on GPU 1: the migration
    /// alone, chunk after chunk, no fault and no kernel.
    Prefetch,
}

/// One rep.
#[derive(Debug, Clone, Serialize)]
pub struct Rep {
    pub rep: usize,
    /// GPU 0's touch: RAM to VRAM 0 (not the measured step).
    pub gpu0_touch_us: f64,
    /// GPU 1's touch: the peer migration, submit to the job's end.
    pub migrate_us: f64,
    pub migrate_gbps: f64,
    /// Counter deltas over GPU 0's touch and GPU 1's touch.
    pub gpu0_pages_to_vram: u64,
    pub gpu1_pages_to_vram: u64,
    /// Over GPU 1's touch: pages GPU 0 sent to RAM (0: none went through RAM).
    pub gpu0_pages_to_ram: u64,
    /// GPU 0's VRAM in use after GPU 1's touch.
    pub gpu0_vram_used_after: u64,
    /// GPU 1's migrations to VRAM during its touch, and the microseconds
    /// they took summed (collect to finalize, its `by_size` counters).
    pub gpu1_migrations: u64,
    pub gpu1_migrate_us_sum: u64,
    /// GPU faults GPU 1 took during its touch.
    pub gpu1_faults: u64,
    /// GPU 1 touching the pages again once they are in its VRAM (no
    /// fault, no migration): the kernel's own share of `migrate_us`.
    pub gpu1_resident_touch_us: f64,
    /// Every page went VRAM 0 -> VRAM 1 and none through RAM.
    pub vram_to_vram: bool,
    /// Words the CPU read back that differ from the pattern.
    pub bad_words: u64,
}

impl Rep {
    pub fn line(&self) -> String {
        format!(
            "peer rep={} migrate={:10.1}us migrate_GBps={:6.2} gpu0_touch={:10.1}us \
             gpu1_to_vram={} gpu0_to_ram={} migrations={} in_migrations={}us faults={} \
             resident_touch={:.1}us vram_to_vram={} bad={}",
            self.rep,
            self.migrate_us,
            self.migrate_gbps,
            self.gpu0_touch_us,
            self.gpu1_pages_to_vram,
            self.gpu0_pages_to_ram,
            self.gpu1_migrations,
            self.gpu1_migrate_us_sum,
            self.gpu1_faults,
            self.gpu1_resident_touch_us,
            if self.vram_to_vram { "yes" } else { "no" },
            self.bad_words
        )
    }
}

/// The floor: memcpy of the same bytes between two memfd mappings.
#[derive(Debug, Clone, Serialize)]
pub struct Floor {
    pub copy_us_med: f64,
    pub gbps: f64,
    /// Words of the destination that differ from the source afterwards.
    pub bad_words: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub size_kib: usize,
    pub pages: u64,
    pub reps: Vec<Rep>,
    pub migrate_us_med: f64,
    pub migrate_gbps: f64,
    pub floor: Floor,
    /// Migration throughput over the floor's (the target: 0.8).
    pub ratio: f64,
    pub target: f64,
    pub meets_target: bool,
    /// Bad words over every rep and the floor's copy.
    pub bad: u64,
    /// Every rep moved every page VRAM to VRAM.
    pub vram_to_vram: bool,
}

impl Report {
    /// The summary line.
    pub fn line(&self) -> String {
        format!(
            "peer size={}KiB reps={} migrate_med={:.1}us migrate_GBps={:.2} \
             memcpy_med={:.1}us memcpy_GBps={:.2} ratio={:.3} target={} meets_target={} \
             vram_to_vram={} bad={}",
            self.size_kib,
            self.reps.len(),
            self.migrate_us_med,
            self.migrate_gbps,
            self.floor.copy_us_med,
            self.floor.gbps,
            self.ratio,
            self.target,
            if self.meets_target { "yes" } else { "no" },
            if self.vram_to_vram { "yes" } else { "no" },
            self.bad
        )
    }

    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Every word right and every page moved VRAM to VRAM.
    pub fn passed(&self) -> bool {
        self.bad == 0 && self.vram_to_vram
    }
}

#[derive(Debug)]
pub enum PeerError {
    Pager(String),
    Gpu(String),
    /// The GPU job did not complete.
    Job(JobStatus),
    /// The system cannot run it (fewer than two GPUs, too little VRAM).
    System(String),
    Host(String),
}

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pager(e) => write!(f, "pager: {e}"),
            Self::Gpu(e) => write!(f, "GPU server: {e}"),
            Self::Job(s) => write!(f, "a GPU job ended {s:?}, not Completed"),
            Self::System(e) => write!(f, "{e}"),
            Self::Host(e) => write!(f, "host: {e}"),
        }
    }
}

impl std::error::Error for PeerError {}

fn gpu_err(e: CallError<GpuError>) -> PeerError {
    PeerError::Gpu(e.to_string())
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// GB/s (10^9 bytes per second) of `bytes` in `us` microseconds.
fn gbps(bytes: usize, us: f64) -> f64 {
    bytes as f64 / us / 1e3
}

/// Word `i` of rep `rep`'s buffer: differs from page to page and rep to rep.
fn pattern(rep: usize, i: usize) -> u32 {
    (i as u32) ^ (rep as u32).wrapping_add(1).wrapping_mul(0x9e37_79b9)
}

/// What moved, from one `Stats` to the next.
#[derive(Default)]
struct Delta {
    to_vram: u64,
    to_ram: u64,
    faults: u64,
    migrations: u64,
    migrate_us: u64,
}

fn delta(a: &GpuStats, b: &GpuStats) -> Delta {
    // Saturating: a GPU server restart starts its counters again.
    let sum = |s: &GpuStats, f: fn(&ipc_protocol::interfaces::gpu::SizeStat) -> u64| {
        s.by_size.as_slice().iter().map(f).sum::<u64>()
    };
    Delta {
        to_vram: b.pages_to_vram.saturating_sub(a.pages_to_vram),
        to_ram: b.pages_to_ram.saturating_sub(a.pages_to_ram),
        faults: b.gpu_faults.saturating_sub(a.gpu_faults),
        migrations: sum(b, |s| s.to_vram).saturating_sub(sum(a, |s| s.to_vram)),
        migrate_us: sum(b, |s| s.to_vram_us).saturating_sub(sum(a, |s| s.to_vram_us)),
    }
}

/// Runs `TouchPages` over `[addr, addr + len)` on `gpu` and waits; the
/// microseconds from submit to the job's end.
fn touch(gpu: &Client<Gpu>, vm: VmId, addr: u64, len: u64, threads: u16) -> Result<f64, PeerError> {
    let t = Instant::now();
    let job = gpu
        .call(Submit {
            vm,
            kernel: KernelKind::TouchPages,
            addr,
            len,
            stride: 4096,
            value: 0,
            threads,
        })
        .map_err(gpu_err)?
        .job;
    let done = gpu
        .call(Wait {
            job,
            timeout_ms: 120_000,
        })
        .map_err(gpu_err)?;
    let us = t.elapsed().as_secs_f64() * 1e6;
    match done.status {
        JobStatus::Completed => Ok(us),
        s => Err(PeerError::Job(s)),
    }
}

/// Runs `Prefetch` of `[addr, addr + len)` on `gpu`; the microseconds the
/// call took. Every page must be in VRAM when it returns.
fn prefetch(gpu: &Client<Gpu>, vm: VmId, addr: u64, len: u64) -> Result<f64, PeerError> {
    let t = Instant::now();
    let done = gpu
        .call(Prefetch {
            vm,
            gpu_addr: addr,
            len,
        })
        .map_err(gpu_err)?;
    let us = t.elapsed().as_secs_f64() * 1e6;
    match done.in_vram == done.pages {
        true => Ok(us),
        false => Err(PeerError::Gpu(format!(
            "the prefetch left {} of {} pages out of VRAM",
            done.pages - done.in_vram.min(done.pages),
            done.pages
        ))),
    }
}

/// The floor: `reps` memcpys of `bytes` between two memfd mappings whose
/// pages are already there (one untimed copy first), checked word for
/// word afterwards.
pub fn memcpy_floor(bytes: usize, reps: usize) -> Result<Floor, PeerError> {
    let host = |e: rustix::io::Errno| PeerError::Host(format!("memfd: {e}"));
    let src = Region::create("peer-floor-src", bytes).map_err(host)?;
    let dst = Region::create("peer-floor-dst", bytes).map_err(host)?;
    let words = bytes / 4;
    let fill: Vec<u8> = (0..words)
        .flat_map(|i| pattern(usize::MAX, i).to_le_bytes())
        .collect();
    if !src.write(0, &fill) || !dst.write(0, &vec![0u8; bytes]) {
        return Err(PeerError::Host("the floor's memfds are too small".into()));
    }
    let copy = || match src.copy_to(0, &dst, 0, bytes as u64) {
        true => Ok(()),
        false => Err(PeerError::Host("memcpy out of the floor's mappings".into())),
    };
    copy()?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        copy()?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let mut landed = vec![0u8; bytes];
    let bad_words = if dst.read(0, &mut landed) {
        landed
            .chunks_exact(4)
            .zip(fill.chunks_exact(4))
            .filter(|(a, b)| a != b)
            .count() as u64
    } else {
        words as u64
    };
    let copy_us_med = median(&times);
    Ok(Floor {
        copy_us_med,
        gbps: gbps(bytes, copy_us_med),
        bad_words,
    })
}

/// Runs `cfg.reps` peer migrations on a system of at least two GPUs, then
/// the floor; `each` sees every rep as it ends.
pub fn run(c: &Connection, cfg: &Config, mut each: impl FnMut(&Rep)) -> Result<Report, PeerError> {
    if cfg.bytes == 0 || cfg.bytes % 4096 != 0 {
        return Err(PeerError::System(format!(
            "{} bytes is not a non-zero multiple of 4 KiB",
            cfg.bytes
        )));
    }
    let no_gpu = |g| PeerError::System(format!("the system has no GPU {g} (boot two GPUs)"));
    let g0 = c.gpu_of(0).ok_or_else(|| no_gpu(0))?;
    let g1 = c.gpu_of(1).ok_or_else(|| no_gpu(1))?;
    for (k, g) in [g0, g1].into_iter().enumerate() {
        let s = g.call(Stats {}).map_err(gpu_err)?;
        let free = s.vram_total.saturating_sub(s.vram_used);
        if cfg.bytes as u64 > free {
            return Err(PeerError::System(format!(
                "{} KiB does not fit GPU {k}'s free VRAM ({} KiB): raise --vram-mib",
                cfg.bytes >> 10,
                free >> 10
            )));
        }
    }
    let vm0 = scoped_vm(g0).map_err(gpu_err)?;
    let vm1 = scoped_vm(g1).map_err(gpu_err)?;
    let pages = (cfg.bytes / 4096) as u64;
    let len = cfg.bytes as u64;
    let mut reps = Vec::with_capacity(cfg.reps);
    for rep in 0..cfg.reps {
        let buf =
            SvmBuffer::new(&c.pager, cfg.bytes).map_err(|e| PeerError::Pager(e.to_string()))?;
        let buf = scoped_buffer(&c.pager, buf);
        for (g, vm) in [(g0, *vm0), (g1, *vm1)] {
            buf.bind(g, vm).map_err(gpu_err)?;
        }
        // SAFETY: the buffer is ours until `release`; the GPUs only read
        // it, inside jobs we wait for.
        let words = unsafe { buf.words() };
        for (i, w) in words.iter_mut().enumerate() {
            *w = pattern(rep, i);
        }
        let s0 = g0.call(Stats {}).map_err(gpu_err)?;
        let gpu0_touch_us = touch(g0, *vm0, buf.addr, len, cfg.gpu_threads)?;
        let (s0_mid, s1_mid) = (
            g0.call(Stats {}).map_err(gpu_err)?,
            g1.call(Stats {}).map_err(gpu_err)?,
        );
        // The measured step: every page VRAM 0 -> VRAM 1.
        let migrate_us = match cfg.by {
            Mover::Touch => touch(g1, *vm1, buf.addr, len, cfg.gpu_threads)?,
            Mover::Prefetch => prefetch(g1, *vm1, buf.addr, len)?,
        };
        let (s0_end, s1_end) = (
            g0.call(Stats {}).map_err(gpu_err)?,
            g1.call(Stats {}).map_err(gpu_err)?,
        );
        let (d0_in, d0_out, d1) = (
            delta(&s0, &s0_mid),
            delta(&s0_mid, &s0_end),
            delta(&s1_mid, &s1_end),
        );
        // Untimed: GPU 1 again, its pages resident (the kernel alone).
        let gpu1_resident_touch_us = touch(g1, *vm1, buf.addr, len, cfg.gpu_threads)?;
        // Untimed: the CPU reads every word back (from GPU 1's VRAM).
        let base = buf.addr as *const u32;
        let bad_words = (0..words.len())
            // SAFETY: inside the buffer; volatile: the pager moves the
            // pages under these reads.
            .filter(|&i| unsafe { std::ptr::read_volatile(base.add(i)) } != pattern(rep, i))
            .count() as u64;
        for (g, vm) in [(g0, *vm0), (g1, *vm1)] {
            g.call(Unbind {
                vm,
                gpu_addr: buf.addr,
            })
            .map_err(gpu_err)?;
        }
        ScopeGuard::into_inner(buf)
            .release(&c.pager)
            .map_err(|e| PeerError::Pager(e.to_string()))?;
        let r = Rep {
            rep,
            gpu0_touch_us,
            migrate_us,
            migrate_gbps: gbps(cfg.bytes, migrate_us),
            gpu0_pages_to_vram: d0_in.to_vram,
            gpu1_pages_to_vram: d1.to_vram,
            gpu0_pages_to_ram: d0_out.to_ram,
            gpu0_vram_used_after: s0_end.vram_used,
            gpu1_migrations: d1.migrations,
            gpu1_migrate_us_sum: d1.migrate_us,
            gpu1_faults: d1.faults,
            gpu1_resident_touch_us,
            vram_to_vram: d0_in.to_vram == pages && d1.to_vram == pages && d0_out.to_ram == 0,
            bad_words,
        };
        each(&r);
        reps.push(r);
    }
    destroy_vm(g0, vm0).map_err(gpu_err)?;
    destroy_vm(g1, vm1).map_err(gpu_err)?;
    let floor = memcpy_floor(cfg.bytes, cfg.reps)?;
    let migrate_us_med = median(&reps.iter().map(|r| r.migrate_us).collect::<Vec<_>>());
    let migrate_gbps = gbps(cfg.bytes, migrate_us_med);
    let ratio = migrate_gbps / floor.gbps;
    Ok(Report {
        size_kib: cfg.bytes >> 10,
        pages,
        migrate_us_med,
        migrate_gbps,
        ratio,
        target: TARGET,
        meets_target: ratio >= TARGET,
        bad: reps.iter().map(|r| r.bad_words).sum::<u64>() + floor.bad_words,
        vram_to_vram: !reps.is_empty() && reps.iter().all(|r| r.vram_to_vram),
        floor,
        reps,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_floor_copies_every_word() {
        let f = super::memcpy_floor(1 << 20, 3).expect("the floor");
        assert_eq!(f.bad_words, 0);
        assert!(f.gbps > 0.0);
    }

    #[test]
    fn vram_grows_to_fit_and_too_small_is_refused() {
        assert_eq!(super::default_vram_mib(64 << 20), 256);
        assert_eq!(super::default_vram_mib(1 << 30), 1024 + 32);
        assert_eq!(super::default_vram_mib((1 << 30) + 4096), 1024 + 34);
        assert!(super::check_fits(64 << 20, 32 << 20).is_err());
        assert!(super::check_fits(16 << 20, 32 << 20).is_ok());
    }

    #[test]
    fn the_pattern_differs_between_reps_and_pages() {
        assert_ne!(super::pattern(0, 0), super::pattern(1, 0));
        assert_ne!(super::pattern(0, 0), super::pattern(0, 1024));
    }
}
