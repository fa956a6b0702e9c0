//! The whole `svm bench` run: per-page metadata on the freshly booted
//! system; for each herd configuration, in turn, the copy floor, the minor
//! floor, ours and memcpy (so drift on a shared machine hits all of them
//! alike); then the IPC round trip and the copy engine; then random access
//! on a system of its own, oversubscribed.

use std::path::Path;

use super::floor::{self, FloorConfig};
use super::machine::Machine;
use super::progress::Progress;
use super::random::{self, RandomConfig};
use super::report::Report;
use super::sample::{Impl, Sample};
use super::uffd::Resolve;
use super::{copy_engine, ipc, memcpy, metadata, peer_copy, BenchError};
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
        gpus: 1,
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

/// What a run gathers besides the herd samples.
#[derive(Default)]
struct Gathered {
    samples: Vec<Sample>,
    errors: Vec<String>,
    bad: u64,
    ipc: Option<ipc::RoundTrip>,
    engine: Option<copy_engine::CopyEngine>,
    peer: Option<peer_copy::PeerCopy>,
    meta: Option<metadata::Metadata>,
    random: Option<random::RandomAccess>,
}

impl Gathered {
    /// Keeps a step's result, or its error; `bad` counts its wrong words.
    fn keep<T>(
        &mut self,
        what: &str,
        r: Result<T, BenchError>,
        bad: impl Fn(&T) -> u64,
    ) -> Option<T> {
        match r {
            Ok(v) => {
                self.bad += bad(&v);
                Some(v)
            }
            Err(e) => {
                self.errors.push(format!("{what}: {e}"));
                None
            }
        }
    }
}

pub fn run(svm: &Path, cfg: &SuiteConfig) -> Report {
    let mut machine = Machine::now();
    let configs = configurations(cfg);
    let progress = Progress::new(configs.len() as u64 * 4 + 6);
    let mut g = Gathered::default();
    on_one_system(svm, cfg, &configs, &progress, &mut g);
    progress.step("random 4 KiB GPU reads, oversubscribed".into());
    if cfg.random_vram_bytes > 0 {
        let r = random_access(cfg, &mut g.errors);
        g.random = g.keep("random access", r, |r| r.bad_pages);
    }
    progress.done();
    progress.finish();
    machine.finish();
    g.samples.extend(cfg.uvm.iter().cloned());
    let mut report = Report::new(machine, Some(cfg.reps as u64), g.samples);
    report.ipc = g.ipc;
    report.copy_engine = g.engine;
    report.peer_copy = g.peer;
    report.metadata = g.meta;
    report.random = g.random;
    report.errors = g.errors;
    report.add_bad(g.bad);
    report
}

/// Everything measured on the main system: metadata first, while the
/// servers' heaps hold nothing freed to reuse; the herd configurations;
/// the IPC round trip; and the copy engine (its own device model).
fn on_one_system(
    svm: &Path,
    cfg: &SuiteConfig,
    configs: &[(Mode, usize, usize)],
    progress: &Progress,
    g: &mut Gathered,
) {
    progress.step("booting the system".into());
    let mut system = boot(&cfg.boot)
        .map_err(|e| g.errors.push(e.to_string()))
        .ok();
    progress.done();
    progress.step("per-page metadata".into());
    if let (Some((s, c)), true) = (system.as_ref(), cfg.meta_bytes > 0) {
        let m = metadata::measure(s, c, cfg.meta_bytes);
        g.meta = g.keep("metadata", m, |m| m.bad_pages);
    }
    progress.done();
    for &c in configs {
        configuration(
            svm,
            system.as_ref(),
            cfg,
            c,
            progress,
            &mut g.samples,
            &mut g.errors,
        );
        if let Some(Err(e)) = system.as_mut().map(|(s, _)| s.check_alive()) {
            g.errors.push(e.to_string());
        }
    }
    progress.step("IPC round trip".into());
    if let Some((_, c)) = system.as_ref() {
        let r = ipc::measure(svm, c, cfg.ipc_reps, cfg.ipc_calls);
        g.ipc = g.keep("ipc", r, |i| i.bad);
    }
    progress.done();
    progress.step("copy engine".into());
    g.engine = g.keep("copy engine", copy_engine::measure(), |c| c.bad_bytes);
    progress.done();
    progress.step("peer copy (two device models)".into());
    g.peer = g.keep("peer copy", peer_copy::measure(), |c| c.bad_bytes);
    if let Some((s, c)) = system.take() {
        shutdown(s, c, &mut g.errors);
    }
    progress.done();
}

fn random_access(
    cfg: &SuiteConfig,
    errors: &mut Vec<String>,
) -> Result<random::RandomAccess, BenchError> {
    let mut opts = cfg.boot.clone();
    opts.device.vram_bytes = cfg.random_vram_bytes;
    let (s, c) = boot(&opts)?;
    let r = random::run(&c, &cfg.random);
    shutdown(s, c, errors);
    r
}
