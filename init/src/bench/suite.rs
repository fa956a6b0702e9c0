//! The whole `svm bench` run: for each herd configuration, in turn, the
//! copy floor, the minor floor, ours on the booted system and memcpy (so
//! drift on a shared machine hits all of them alike); then the IPC round
//! trip, the copy engine and per-page metadata; then random access on a
//! system of its own, oversubscribed.

use std::path::Path;

use super::floor::{self, FloorConfig};
use super::machine::Machine;
use super::progress::Progress;
use super::random::{self, RandomConfig};
use super::report::Report;
use super::sample::{Impl, Sample};
use super::uffd::Resolve;
use super::{copy_engine, ipc, memcpy, metadata, BenchError};
use crate::herd::{self, Mode};
use crate::supervisor::{BootOptions, Clients, System};

#[derive(Debug, Clone)]
pub struct SuiteConfig {
    pub sizes: Vec<usize>,
    pub threads: Vec<usize>,
    pub modes: Vec<Mode>,
    pub reps: usize,
    /// IPC: batches, and round trips per batch.
    pub ipc_reps: usize,
    pub ipc_calls: usize,
    /// The buffer whose metadata is measured (0: skip).
    pub meta_bytes: usize,
    /// Random access: its system's VRAM (0: skip), and the workload.
    pub random_vram_bytes: u64,
    pub random: RandomConfig,
    pub boot: BootOptions,
    /// UVM's samples (from its herd's output), shown beside ours.
    pub uvm: Vec<Sample>,
}

fn boot(opts: &BootOptions) -> Result<(System, Clients), BenchError> {
    match System::boot(opts) {
        Ok((s, Some(c))) => Ok((s, c)),
        Ok((s, None)) => {
            s.shutdown();
            Err(BenchError::System("booted without clients".into()))
        }
        Err(e) => Err(BenchError::System(format!("boot failed: {e}"))),
    }
}

fn shutdown(system: System, clients: Clients, errors: &mut Vec<String>) {
    drop(clients);
    errors.extend(system.shutdown().into_iter().map(|e| e.to_string()));
}

fn ours(
    c: &Clients,
    mode: Mode,
    bytes: usize,
    threads: usize,
    reps: usize,
) -> Result<Sample, BenchError> {
    let cfg = herd::Config {
        mode,
        bytes,
        threads,
        reps,
        gpu_threads: 64,
        same_start: false,
    };
    let r = herd::run(c, &cfg).map_err(|e| BenchError::System(format!("herd: {e}")))?;
    Ok(Sample {
        imp: Impl::Ours,
        mode,
        size_kib: r.size_kib as u64,
        threads: threads as u64,
        per_page_cpu_us: r.per_page_cpu_us,
        cpu_phase_med_us: Some(r.cpu_phase_med_us),
        gpu_phase_med_us: Some(r.gpu_phase_med_us),
        bad: r.bad,
        reps: Some(reps as u64),
    })
}

/// One configuration's four measurements, in turn.
fn configuration(
    svm: &Path,
    system: Option<&(System, Clients)>,
    cfg: &SuiteConfig,
    (mode, bytes, threads): (Mode, usize, usize),
    progress: &Progress,
    samples: &mut Vec<Sample>,
    errors: &mut Vec<String>,
) {
    let what = format!("{} {} KiB, {threads} threads", mode.name(), bytes >> 10);
    let mut record = |name: &str, r: Result<Sample, BenchError>| {
        match r {
            Ok(s) => samples.push(s),
            Err(e) => errors.push(format!("{name} {what}: {e}")),
        }
        progress.done();
    };
    for resolve in [Resolve::Copy, Resolve::Minor] {
        progress.step(format!("{resolve:?} floor, {what}"));
        let fc = FloorConfig {
            resolve,
            mode,
            bytes,
            threads,
            reps: cfg.reps,
        };
        record("floor", floor::run(svm, &fc));
    }
    progress.step(format!("ours, {what}"));
    match system {
        Some((_, c)) => record("ours", ours(c, mode, bytes, threads, cfg.reps)),
        None => record("ours", Err(BenchError::System("no system".into()))),
    }
    progress.step(format!("memcpy, {what}"));
    record("memcpy", memcpy::sample(mode, bytes, threads, cfg.reps));
}

fn configurations(cfg: &SuiteConfig) -> Vec<(Mode, usize, usize)> {
    let mut out = Vec::new();
    for &bytes in &cfg.sizes {
        for &mode in &cfg.modes {
            for &t in &cfg.threads {
                out.push((mode, bytes, t));
            }
        }
    }
    out
}

pub fn run(svm: &Path, cfg: &SuiteConfig) -> Report {
    let mut machine = Machine::now();
    let configs = configurations(cfg);
    let progress = Progress::new(configs.len() as u64 * 4 + 5);
    let (mut samples, mut errors) = (Vec::new(), Vec::new());
    progress.step("booting the system".into());
    let mut system = match boot(&cfg.boot) {
        Ok(s) => Some(s),
        Err(e) => {
            errors.push(e.to_string());
            None
        }
    };
    progress.done();
    for c in configs {
        configuration(
            svm,
            system.as_ref(),
            cfg,
            c,
            &progress,
            &mut samples,
            &mut errors,
        );
        if let Some((s, _)) = system.as_mut() {
            if let Err(e) = s.check_alive() {
                errors.push(e.to_string());
            }
        }
    }
    let mut extra_bad = 0;
    progress.step("IPC round trip".into());
    let ipc = system.as_ref().and_then(|(_, c)| {
        ipc::measure(svm, c, cfg.ipc_reps, cfg.ipc_calls)
            .map_err(|e| errors.push(format!("ipc: {e}")))
            .ok()
    });
    extra_bad += ipc.as_ref().map_or(0, |i| i.bad);
    progress.done();
    progress.step("copy engine".into());
    let engine = copy_engine::measure()
        .map_err(|e| errors.push(format!("copy engine: {e}")))
        .ok();
    extra_bad += engine.as_ref().map_or(0, |c| c.bad_bytes);
    progress.done();
    progress.step("per-page metadata".into());
    let meta = system
        .as_ref()
        .filter(|_| cfg.meta_bytes > 0)
        .and_then(|(s, c)| {
            metadata::measure(s, c, cfg.meta_bytes)
                .map_err(|e| errors.push(format!("metadata: {e}")))
                .ok()
        });
    extra_bad += meta.as_ref().map_or(0, |m| m.bad_pages);
    if let Some((s, c)) = system.take() {
        shutdown(s, c, &mut errors);
    }
    progress.done();
    progress.step("random 4 KiB GPU reads, oversubscribed".into());
    let random = random_access(cfg, &mut errors);
    extra_bad += random.as_ref().map_or(0, |r| r.bad_pages);
    progress.done();
    progress.finish();
    machine.finish();
    samples.extend(cfg.uvm.iter().cloned());
    let mut report = Report::new(machine, Some(cfg.reps as u64), samples);
    report.ipc = ipc;
    report.copy_engine = engine;
    report.metadata = meta;
    report.random = random;
    report.errors = errors;
    report.add_bad(extra_bad);
    report
}

fn random_access(cfg: &SuiteConfig, errors: &mut Vec<String>) -> Option<random::RandomAccess> {
    if cfg.random_vram_bytes == 0 {
        return None;
    }
    let mut opts = cfg.boot.clone();
    opts.device.vram_bytes = cfg.random_vram_bytes;
    let (s, c) = boot(&opts)
        .map_err(|e| errors.push(format!("random access: {e}")))
        .ok()?;
    let r = random::run(&c, &cfg.random)
        .map_err(|e| errors.push(format!("random access: {e}")))
        .ok();
    shutdown(s, c, errors);
    r
}
