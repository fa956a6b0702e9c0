//! `svm run recovery` (issue 14): how long a restart of the GPU server
//! (or, `--kill pager`, of the pager) keeps a client waiting. Each round
//! puts a buffer in VRAM with a GPU job, SIGKILLs the server and at once
//! reads the buffer on the CPU: the first read waits for the next
//! generation to start and take over (the GPU server adopts the pages,
//! the pager rebuilds its objects, views and page states) and copy the
//! first chunk back (kill to first completed fault); the rest of the
//! buffer follows (kill to all pages back); then a GPU job in the same
//! VM and binding, the client doing nothing to restore them (kill to the
//! first GPU job done). Every word is checked.

use std::time::{Duration, Instant};

use ipc_protocol::client::CallError;
use ipc_protocol::interfaces::gpu::{GpuError, Stats};
use ipc_protocol::interfaces::pager::Accounting;
use ipc_protocol::types::{JobStatus, KernelKind};

use crate::client::{run_kernel, scoped_buffer, scoped_vm, ScopedBuffer, ScopedVm, SvmBuffer};
use crate::supervisor::{Clients, System};

#[derive(Debug, Clone)]
pub struct Config {
    pub rounds: usize,
    pub bytes: usize,
    /// The server killed: `xe-svm` or `pager`.
    pub server: &'static str,
}

/// One round's times, in milliseconds from the kill.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    /// The next generation running (its process started).
    pub restarted_ms: f64,
    /// The first CPU fault on a page the dead server left in VRAM done.
    pub first_fault_ms: f64,
    /// Every page of the buffer back in RAM.
    pub all_back_ms: f64,
    /// A GPU job in the client's VM done, as the new server rebuilt it (no
    /// new VM, no new binding; its faults served by the new server).
    pub first_gpu_job_ms: f64,
}

#[derive(Debug, Default)]
pub struct Report {
    pub rounds: Vec<Round>,
    pub bad_words: u64,
}

#[derive(Debug)]
pub enum RecoveryError {
    Gpu(String),
    Pager(String),
    NotBack,
}

impl std::fmt::Display for RecoveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Gpu(e) => write!(f, "GPU server: {e}"),
            Self::Pager(e) => write!(f, "pager: {e}"),
            Self::NotBack => f.write_str("the server was not back within 15 s"),
        }
    }
}

fn gpu_err(e: ipc_protocol::client::CallError<GpuError>) -> RecoveryError {
    RecoveryError::Gpu(e.to_string())
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// A VM with a buffer of `bytes` bound in it, word `i` holding `i + 1`,
/// every page put in VRAM by a GPU job; both are the caller's, and both
/// outlive the GPU server.
fn buffer_in_vram(
    c: &Clients,
    bytes: usize,
) -> Result<(ScopedVm<'_>, ScopedBuffer<'_>), RecoveryError> {
    let vm = scoped_vm(&c.gpu).map_err(gpu_err)?;
    let buf = SvmBuffer::new(&c.pager, bytes).map_err(|e| RecoveryError::Pager(e.to_string()))?;
    let buf = scoped_buffer(&c.pager, buf);
    // SAFETY: ours; no job runs on it yet.
    for (i, w) in unsafe { buf.words() }.iter_mut().enumerate() {
        *w = i as u32;
    }
    buf.bind(&c.gpu, *vm).map_err(gpu_err)?;
    increment(c, *vm, &buf, "the fill job")?;
    Ok((vm, buf))
}

/// Adds 1 to each word of `buf`, bound in `vm`, on the GPU.
fn increment(
    c: &Clients,
    vm: ipc_protocol::types::VmId,
    buf: &SvmBuffer,
    what: &str,
) -> Result<(), RecoveryError> {
    let len = buf.len as u64;
    let done =
        run_kernel(&c.gpu, vm, KernelKind::IncrementAll, buf.addr, len, 1).map_err(gpu_err)?;
    match done.status {
        JobStatus::Completed => Ok(()),
        s => Err(RecoveryError::Gpu(format!("{what} ended {s:?}"))),
    }
}

/// Reads word `w` (volatile: the pager fills the page behind our back).
fn word(buf: &SvmBuffer, w: usize) -> u32 {
    // SAFETY: inside the buffer, which lives until the caller releases it.
    unsafe { std::ptr::read_volatile((buf.addr as *const u32).add(w)) }
}

fn round(
    system: &mut System,
    c: &Clients,
    bytes: usize,
    server: &'static str,
) -> Result<(Round, u64), RecoveryError> {
    let (vm, buf) = buffer_in_vram(c, bytes)?;
    let generation = system.generation(server).unwrap_or(1);
    let kill = Instant::now();
    system
        .kill(server)
        .map_err(|e| RecoveryError::Gpu(e.to_string()))?;
    let system = &*system;
    let (restarted, first_fault_ms, all_back_ms, mut bad) = std::thread::scope(|s| {
        let restart = s.spawn(|| {
            let back = system.wait_generation(server, generation + 1, Duration::from_secs(15));
            back.then(|| ms(kill))
        });
        let mut bad = u64::from(word(&buf, 0) != 1);
        let first = ms(kill);
        bad += (1..bytes / 4)
            .filter(|&w| word(&buf, w) != w as u32 + 1)
            .count() as u64;
        let all = ms(kill);
        (restart.join().ok().flatten(), first, all, bad)
    });
    let restarted_ms = restarted.ok_or(RecoveryError::NotBack)?;
    // An idempotent call first takes the new generation's announcement
    // (a call it catches fails with `PeerRestarted` unless idempotent).
    if server == "pager" {
        let pager_err = |e: CallError<_>| RecoveryError::Pager(e.to_string());
        c.pager.call(Accounting {}).map_err(pager_err)?;
    } else {
        c.gpu.call(Stats {}).map_err(gpu_err)?;
    }
    increment(c, *vm, &buf, "the job in the rebuilt VM")?;
    let first_gpu_job_ms = ms(kill);
    bad += (0..bytes / 4)
        .filter(|&w| word(&buf, w) != w as u32 + 2)
        .count() as u64;
    drop(vm);
    scopeguard::ScopeGuard::into_inner(buf)
        .release(&c.pager)
        .map_err(|e| RecoveryError::Pager(e.to_string()))?;
    let r = Round {
        restarted_ms,
        first_fault_ms,
        all_back_ms,
        first_gpu_job_ms,
    };
    Ok((r, bad))
}

/// Runs `cfg.rounds` kills of `cfg.server` on a booted system.
pub fn run(system: &mut System, c: &Clients, cfg: &Config) -> Result<Report, RecoveryError> {
    let mut report = Report::default();
    for _ in 0..cfg.rounds {
        let (r, bad) = round(system, c, cfg.bytes, cfg.server)?;
        report.rounds.push(r);
        report.bad_words += bad;
    }
    Ok(report)
}
