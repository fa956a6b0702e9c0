//! The two-process userfaultfd floors of the herd's CPU phase. This process
//! is the client: it maps an object memfd, hands its userfaultfd to a pager
//! process (`floor_pager.rs`), has it empty the object (hole punch, as a
//! migration to VRAM does) and times N readers over the view, as the herd
//! does on our system. Every word is checked after each rep.

use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipc_protocol::transport::{pass_fds_to_child, SeqPacket};

use super::floor_wire::{self, Answer, Control, PagerStats, ANSWER_TIMEOUT};
use super::memory::{self, Mapping, CHUNK};
use super::readers::{self, herd_contents};
use super::sample::{Impl, Sample};
use super::uffd::{self, Resolve};
use super::{median, BenchError};
use crate::herd::Mode;

#[derive(Debug, Clone)]
pub struct FloorConfig {
    pub resolve: Resolve,
    pub mode: Mode,
    pub bytes: usize,
    pub threads: usize,
    pub reps: usize,
}

/// How long one rep's readers may take before the floor counts as hung.
fn rep_budget(bytes: usize) -> Duration {
    Duration::from_secs(5 + (bytes >> 22) as u64)
}

/// The floor's pager process, killed if still there when dropped.
struct PagerProcess {
    child: Child,
    link: SeqPacket,
}

impl PagerProcess {
    fn spawn(svm: &Path) -> Result<Self, BenchError> {
        let (mine, theirs) = SeqPacket::pair().map_err(|e| BenchError::Host(e.to_string()))?;
        let theirs = theirs
            .fd()
            .try_clone_to_owned()
            .map_err(|e| BenchError::Host(e.to_string()))?;
        let mut cmd = Command::new(svm);
        cmd.args(["bench-helper", "floor-pager", "--control-fd", "3"])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let _held = pass_fds_to_child(&mut cmd, &[(&theirs, 3)])
            .map_err(|e| BenchError::Host(e.to_string()))?;
        let child = cmd
            .spawn()
            .map_err(|e| BenchError::Helper(format!("starting the floor pager: {e}")))?;
        Ok(Self { child, link: mine })
    }

    fn ask(&self, msg: &Control, fds: Vec<std::os::fd::OwnedFd>) -> Result<Answer, BenchError> {
        floor_wire::send(&self.link, msg, fds)?;
        let (answer, _) = floor_wire::recv::<Answer>(&self.link, ANSWER_TIMEOUT)?;
        match answer {
            Answer::Failed { what } => Err(BenchError::Helper(format!("floor pager: {what}"))),
            a => Ok(a),
        }
    }

    /// Asks for the pager's counts and waits for it to exit.
    fn stop(mut self) -> Result<PagerStats, BenchError> {
        let stats = match self.ask(&Control::Stop, vec![])? {
            Answer::Stopped(s) => s,
            a => return Err(BenchError::Helper(format!("expected Stopped, got {a:?}"))),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Ok(stats);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Err(BenchError::TimedOut("the floor pager's exit"))
    }
}

impl Drop for PagerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs one floor configuration `cfg.reps` times; the per-page cost is the
/// median rep's. A floor that hangs is ended and counted bad.
pub fn run(svm: &Path, cfg: &FloorConfig) -> Result<Sample, BenchError> {
    if cfg.bytes == 0 || cfg.bytes % 4096 != 0 || cfg.threads == 0 || cfg.reps == 0 {
        return Err(BenchError::Config(format!(
            "bad floor configuration {cfg:?}"
        )));
    }
    let object = memory::memfd("floor-object", cfg.bytes)?;
    let vram = memory::memfd("floor-vram", cfg.bytes)?;
    memory::fill(&vram, &herd_contents(cfg.mode, cfg.bytes))?;
    let view = Mapping::shared(&object, cfg.bytes, true)?;
    let pager = PagerProcess::spawn(svm)?;
    let uffd = uffd::create().map_err(|e| BenchError::Host(format!("userfaultfd: {e}")))?;
    let dup = |fd: &std::os::fd::OwnedFd| {
        fd.as_fd()
            .try_clone_to_owned()
            .map_err(|e| BenchError::Host(e.to_string()))
    };
    let setup = Control::Setup {
        resolve: cfg.resolve,
        base: view.addr() as u64,
        len: cfg.bytes as u64,
        chunk: CHUNK as u64,
    };
    match pager.ask(&setup, vec![uffd, dup(&object)?, vram])? {
        Answer::Ready => {}
        a => return Err(BenchError::Helper(format!("expected Ready, got {a:?}"))),
    }
    let mut times = Vec::with_capacity(cfg.reps);
    let mut bad = 0u64;
    for _ in 0..cfg.reps {
        match pager.ask(&Control::Arm, vec![])? {
            Answer::Armed { .. } => {}
            a => return Err(BenchError::Helper(format!("expected Armed, got {a:?}"))),
        }
        let herd = readers::start(view.addr(), cfg.bytes, cfg.threads, cfg.mode);
        let (elapsed, timed_bad) = match herd.finish(Instant::now() + rep_budget(cfg.bytes)) {
            Ok(r) => r,
            Err(stuck) => {
                // What the pager did, for the error (its fault thread stops).
                let seen = match pager.ask(&Control::Stop, vec![]) {
                    Ok(Answer::Stopped(s)) => format!("{s:?}"),
                    other => format!("no counts ({other:?})"),
                };
                // Ending the pager closes the last userfaultfd: the kernel
                // wakes the readers and serves the rest from the object,
                // so they end.
                drop(pager);
                if stuck
                    .finish(Instant::now() + Duration::from_secs(10))
                    .is_err()
                {
                    // Readers still inside the view: never unmap it under them.
                    std::mem::forget(view);
                }
                return Err(BenchError::Helper(format!(
                    "the CPU phase ran past {:?}; the pager saw {seen}",
                    rep_budget(cfg.bytes)
                )));
            }
        };
        // SAFETY: the view is mapped; the readers are done.
        let bad_pages = unsafe { readers::bad_pages(view.addr(), cfg.bytes, cfg.mode) };
        bad += bad_pages.max(u64::from(timed_bad > 0));
        times.push(elapsed.as_secs_f64() * 1e6);
    }
    let stats = pager.stop()?;
    if stats.errors > 0 {
        bad += stats.errors;
    }
    let cpu = median(&times);
    Ok(Sample {
        imp: match cfg.resolve {
            Resolve::Copy => Impl::FloorCopy,
            Resolve::Minor => Impl::FloorMinor,
        },
        mode: cfg.mode,
        size_kib: (cfg.bytes / 1024) as u64,
        threads: cfg.threads as u64,
        per_page_cpu_us: cpu / (cfg.bytes / 4096) as f64,
        cpu_phase_med_us: Some(cpu),
        gpu_phase_med_us: None,
        bad,
        reps: Some(cfg.reps as u64),
    })
}
