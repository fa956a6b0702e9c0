//! A simulated Xe GPU.
//!
//! It shares with its driver only what a real device shares: VRAM and a
//! register/ring region (memfds it hands over at probe), page tables the
//! driver writes (in VRAM or DMA-mapped system memory), and the system
//! memfds the driver DMA-maps. Nothing here calls driver code.
//!
//! Engines, each a thread:
//! - copy engines (`copy.rs`): execute `MEM_COPY` between any two device
//!   addresses; the copy ring's engine splits a large copy by rows across
//!   [`Config::copy_engines`] engines;
//! - GuC: takes fault responses and TLB invalidations from the driver,
//!   reports invalidation completion;
//! - compute engine: runs a kernel with many hardware threads; an access
//!   that misses raises a fault descriptor on the GuC-to-host ring and
//!   stalls that hardware thread until the reply, then replays it. Many
//!   faults are outstanding at once (one per hardware thread);
//! - command streamer (`cs.rs`): the compute engine also runs batch
//!   buffers of real Xe MI instructions (`crate::xe::mi`: store data,
//!   atomics, semaphore waits, copies, GPR loads and stores, chained and
//!   second-level batch starts) from GPU virtual addresses. Each batch job
//!   takes one hardware thread from the pool (`jobs.rs`) and runs on it
//!   while the engine takes further jobs, so batch jobs run at once (up to
//!   the hardware threads) and a semaphore wait in one is released by a
//!   store in another. Instruction fetches (reads) and data accesses fault
//!   and replay like a kernel's. A batch ends `Done` (then its user fence
//!   is written through the PPGTT), `Faulted`, `BadCommand` (an
//!   instruction the model cannot decode) or `Hung` (past
//!   [`BatchLimits`]); none of them stops the device.
//!
//! Jobs retire into the job table in any order; `REG_JOBS_RETIRED` counts
//! them, and `REG_CCS_DONE` moves past a job only once every job before it
//! on the compute ring retired.
//!
//! An invalidation completes only after accesses in flight drain (the
//! access gate), as on hardware: once the driver sees the completion, no
//! access through the old translation can still land. Batch accesses hold
//! the gate only while each lands, never across a fault or a poll.

/// The control channel's records (kept at `hw::model::control` too).
pub use crate::control;
mod copy;
mod cs;
mod engines;
mod jobs;
pub mod memory;
#[cfg(target_os = "redox")]
pub mod scheme;
pub mod translate;

use std::time::Duration;

use ipc_protocol::transport::TransportError;

#[cfg(target_os = "linux")]
pub use engines::run_attached;
pub use engines::{run, start, Running};

/// Fault injection for tests.
#[derive(Debug, Clone, Default)]
pub struct Injection {
    /// Hold every fault response this long before the stalled thread sees it.
    pub fault_reply_delay: Duration,
    /// Drop every Nth TLB invalidation (still reported complete); 0: never.
    pub drop_tlb_invalidation_every: u32,
    /// Fail every Nth copy (`REG_BCS_ERROR`); 0: never.
    pub fail_copy_every: u32,
}

/// Bounds on one batch job: past them it ends `Hung` and frees its
/// hardware thread, where real hardware would need a reset.
#[derive(Debug, Clone)]
pub struct BatchLimits {
    /// Instructions one batch job may execute (an endless loop meets it).
    pub max_instructions: u32,
    /// How long one `MI_SEMAPHORE_WAIT` polls before the job is hung.
    pub semaphore_timeout: Duration,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_instructions: 1 << 20,
            semaphore_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub vram_bytes: u64,
    /// Hardware threads of the compute engine.
    pub hw_threads: u16,
    /// Copy engines a large `MEM_COPY` is split across (at least one).
    pub copy_engines: u16,
    pub inject: Injection,
    pub batch: BatchLimits,
    /// VRAM as an inherited memfd of `vram_bytes` (the `xe-model`
    /// process's `--vram-fd`): `init` makes each device's VRAM so that it
    /// can hand it to the other devices' drivers as their peer window
    /// (several GPUs, standing for PCIe BARs). None: the device makes its
    /// own.
    pub vram_fd: Option<i32>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            vram_bytes: 256 << 20,
            hw_threads: 64,
            copy_engines: default_copy_engines(),
            inject: Injection::default(),
            batch: BatchLimits::default(),
            vram_fd: None,
        }
    }
}

/// Copy engines by default: `XE_MODEL_COPY_ENGINES` when set (1 to 64),
/// else one. Several (`--copy-engines N`) are opt-in until the pages that
/// `init::oversub`'s eviction race loses (more often with two engines,
/// also with one under CPU load) are explained (BENCHMARKS.md, 2026-12-02
/// H200).
pub fn default_copy_engines() -> u16 {
    std::env::var("XE_MODEL_COPY_ENGINES")
        .ok()
        .and_then(|v| v.parse::<u16>().ok())
        .filter(|n| (1..=64).contains(n))
        .unwrap_or(1)
}

impl Config {
    /// Command-line arguments for `xe-model` that reproduce this config.
    pub fn to_args(&self) -> Vec<String> {
        vec![
            format!("--vram-mib={}", self.vram_bytes >> 20),
            format!("--hw-threads={}", self.hw_threads),
            format!("--copy-engines={}", self.copy_engines),
            format!(
                "--fault-reply-delay-us={}",
                self.inject.fault_reply_delay.as_micros()
            ),
            format!(
                "--drop-tlb-invalidation-every={}",
                self.inject.drop_tlb_invalidation_every
            ),
            format!("--fail-copy-every={}", self.inject.fail_copy_every),
            format!("--batch-max-instructions={}", self.batch.max_instructions),
            format!(
                "--semaphore-timeout-ms={}",
                self.batch.semaphore_timeout.as_millis()
            ),
        ]
    }
}

#[derive(Debug)]
pub enum ModelError {
    /// Creating or mapping device memory failed.
    Memory(rustix::io::Errno),
    Control(TransportError),
    BadConfig(&'static str),
}

impl std::fmt::Display for ModelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}
impl std::error::Error for ModelError {}

/// A device running in this process on a thread (tests). The returned
/// transport is the driver's end of the control channel.
#[cfg(target_os = "linux")]
pub fn spawn_in_process(
    cfg: Config,
) -> Result<
    (
        std::sync::Arc<dyn ipc_protocol::transport::Transport>,
        std::thread::JoinHandle<Result<(), ModelError>>,
    ),
    ModelError,
> {
    use ipc_protocol::transport::{SeqPacket, Transport};
    use std::sync::Arc;
    let (driver, device) = SeqPacket::pair().map_err(ModelError::Control)?;
    let device: Arc<dyn Transport> = Arc::new(device);
    let handle = std::thread::Builder::new()
        .name("xe-model".into())
        .spawn(move || run(cfg, device))
        .map_err(|_| ModelError::BadConfig("cannot spawn the device thread"))?;
    Ok((Arc::new(driver), handle))
}

/// A device running as its own process (`xe-model` at `exe`). Returns the
/// driver's end of the control channel and the child.
#[cfg(target_os = "linux")]
pub fn spawn_process(
    exe: &std::path::Path,
    cfg: &Config,
) -> std::io::Result<(
    std::sync::Arc<dyn ipc_protocol::transport::Transport>,
    std::process::Child,
)> {
    use ipc_protocol::transport::SeqPacket;
    use std::os::fd::AsFd;
    use std::sync::Arc;
    let (driver, device) = SeqPacket::pair().map_err(|e| std::io::Error::other(e.to_string()))?;
    let device_fd = device.fd().as_fd().try_clone_to_owned()?;
    drop(device);
    let mut cmd = std::process::Command::new(exe);
    cmd.args(cfg.to_args())
        .arg("--control-fd=3")
        .stdin(std::process::Stdio::null());
    let _held = ipc_protocol::transport::pass_fds_to_child(&mut cmd, &[(&device_fd, 3)])?;
    let child = cmd.spawn()?;
    Ok((Arc::new(driver), child))
}
