//! Starting, watching and stopping server processes.
//!
//! Each server gets its endpoints as inherited descriptors (3, 4, ...) and
//! a lifeline on stdin: when init exits for any reason, the pipe closes and
//! the servers stop, so no server outlives the system it belongs to.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hw::model::Config;
use ipc_protocol::transport::{pass_fds_to_child, SeqPacket};

#[derive(Debug)]
pub enum BootError {
    /// A server's executable is not beside `svm` (build the workspace).
    MissingExecutable(PathBuf),
    Spawn { server: &'static str, error: std::io::Error },
    Endpoint(String),
    /// A server exited while the system was up.
    ServerDied { server: &'static str, status: ExitStatus },
    /// A server did not stop within the grace period and was killed.
    KilledOnShutdown(&'static str),
}

impl std::fmt::Display for BootError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MissingExecutable(p) => write!(f, "{} not found: run `cargo build --release` first", p.display()),
            Self::Spawn { server, error } => write!(f, "starting {server}: {error}"),
            Self::Endpoint(e) => write!(f, "creating an endpoint: {e}"),
            Self::ServerDied { server, status } => write!(f, "{server} died: {status}"),
            Self::KilledOnShutdown(s) => write!(f, "{s} did not stop in time and was killed"),
        }
    }
}
impl std::error::Error for BootError {}

/// Where the server executables are: `$SVM_BIN_DIR`, else beside this one.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SVM_BIN_DIR") {
        return PathBuf::from(d);
    }
    std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_else(|| PathBuf::from("."))
}

fn exe(name: &str) -> Result<PathBuf, BootError> {
    let p = bin_dir().join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(BootError::MissingExecutable(p))
    }
}

struct Server {
    name: &'static str,
    child: Child,
}

/// The client ends `init` keeps for running workloads.
pub struct Clients {
    pub gpu: ipc_protocol::client::Client<ipc_protocol::interfaces::gpu::Gpu>,
    pub pager: ipc_protocol::client::Client<ipc_protocol::interfaces::pager::Pager>,
    /// mm-server's status (watermarks, usage, eviction counts).
    pub pressure: ipc_protocol::client::Client<ipc_protocol::interfaces::pressure::Pressure>,
}

impl Clients {
    fn new(gpu: OwnedFd, pager: OwnedFd, pressure: OwnedFd) -> Self {
        let t = |fd| -> std::sync::Arc<dyn ipc_protocol::transport::Transport> { std::sync::Arc::new(SeqPacket::from_fd(fd)) };
        let timeout = Duration::from_secs(120);
        Self {
            gpu: ipc_protocol::client::Client::new(t(gpu)).with_timeout(timeout),
            pager: ipc_protocol::client::Client::new(t(pager)).with_timeout(timeout),
            pressure: ipc_protocol::client::Client::new(t(pressure)).with_timeout(Duration::from_secs(10)),
        }
    }
}

/// A booted system.
pub struct System {
    servers: Vec<Server>,
}

#[derive(Debug, Clone, Default)]
pub struct BootOptions {
    pub device: Config,
    /// Ask the GPU server to probe and exit (a self-check of the boot).
    pub probe_only: bool,
    /// Extra arguments for the pager (tests use them to break a rule).
    pub pager_args: Vec<String>,
}

fn spawn(name: &'static str, exe: &Path, args: &[String], endpoints: &[(&OwnedFd, i32)], lifeline: bool) -> Result<Server, BootError> {
    let mut cmd = Command::new(exe);
    cmd.args(args).stdin(if lifeline { Stdio::piped() } else { Stdio::null() });
    // A terminal's Ctrl-C goes to init alone, which then stops the servers
    // in order; without this the servers would die of SIGINT first.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let _held = pass_fds_to_child(&mut cmd, endpoints).map_err(|error| BootError::Spawn { server: name, error })?;
    let child = cmd.spawn().map_err(|error| BootError::Spawn { server: name, error })?;
    log::info!("init: started {name} (pid {})", child.id());
    Ok(Server { name, child })
}

fn endpoint_pair() -> Result<(OwnedFd, OwnedFd), BootError> {
    let (a, b) = SeqPacket::pair().map_err(|e| BootError::Endpoint(e.to_string()))?;
    let dup = |s: &SeqPacket| s.fd().as_fd().try_clone_to_owned().map_err(|e| BootError::Endpoint(e.to_string()));
    Ok((dup(&a)?, dup(&b)?))
}

impl System {
    /// Starts the device model, the GPU server and the pager, joined per
    /// [`crate::manifest::MANIFEST`]. With `probe_only`, only the device
    /// model and a GPU server that probes and exits.
    pub fn boot(opts: &BootOptions) -> Result<(Self, Option<Clients>), BootError> {
        use crate::manifest::{CLIENT_BADGE, MANIFEST, START_ORDER};
        // With `probe_only`, just the device and a GPU server that probes.
        let started: &[&str] = if opts.probe_only { &["xe-model", "xe-svm"] } else { &START_ORDER };
        let wanted = |e: &crate::manifest::Endpoint| {
            started.contains(&e.server.process) && e.client.as_ref().map_or(!opts.probe_only, |c| started.contains(&c.process))
        };
        let mut ends: Vec<Option<(OwnedFd, OwnedFd)>> = Vec::new();
        for e in MANIFEST {
            ends.push(if wanted(e) { Some(endpoint_pair()?) } else { None });
        }
        let mut system = Self { servers: Vec::new() };
        for &process in started {
            let exe = match exe(process) {
                Ok(p) => p,
                Err(e) => {
                    system.shutdown();
                    return Err(e);
                }
            };
            let mut args: Vec<String> = match process {
                "xe-model" => opts.device.to_args(),
                "mm-server" => vec![format!("--vram-bytes={}", opts.device.vram_bytes)],
                "xe-svm" if opts.probe_only => vec!["--probe-only".into()],
                "xe-svm" => vec![format!("--client-badge={CLIENT_BADGE}")],
                "pager" => std::iter::once(format!("--client-badge={CLIENT_BADGE}")).chain(opts.pager_args.iter().cloned()).collect(),
                _ => Vec::new(),
            };
            let mut fds: Vec<(&OwnedFd, i32)> = Vec::new();
            for (e, pair) in MANIFEST.iter().zip(&ends) {
                let Some((server_end, client_end)) = pair else { continue };
                if e.server.process == process {
                    fds.push((server_end, e.server.fd));
                    args.push(format!("{}={}", e.server.flag, e.server.fd));
                    if !e.rights.is_empty() {
                        // `--client-fd` -> `--client-rights`: the capability to mint.
                        args.push(format!("{}-rights={}", e.server.flag.trim_end_matches("-fd"), e.rights.bits()));
                    }
                }
                if let Some(c) = e.client.as_ref().filter(|c| c.process == process) {
                    fds.push((client_end, c.fd));
                    args.push(format!("{}={}", c.flag, c.fd));
                }
            }
            match spawn(process, &exe, &args, &fds, process != "xe-model") {
                Ok(s) => system.servers.push(s),
                Err(e) => {
                    system.shutdown();
                    return Err(e);
                }
            }
        }
        if opts.probe_only {
            return Ok((system, None));
        }
        // The client ends `init` keeps.
        let mut mine = MANIFEST.iter().zip(ends).filter(|(e, _)| e.client.is_none()).filter_map(|(e, p)| p.map(|(_, c)| (e.interface, c)));
        let (mut gpu, mut pager, mut pressure) = (None, None, None);
        for (interface, fd) in mine.by_ref() {
            match interface {
                "Gpu" => gpu = Some(fd),
                "Pager" => pager = Some(fd),
                "Pressure status" => pressure = Some(fd),
                _ => {}
            }
        }
        match (gpu, pager, pressure) {
            (Some(g), Some(p), Some(s)) => Ok((system, Some(Clients::new(g, p, s)))),
            _ => {
                system.shutdown();
                Err(BootError::Endpoint("the manifest gives init no Gpu, Pager or Pressure status endpoint".into()))
            }
        }
    }

    /// Waits for `name` to exit on its own (a probe-only server).
    pub fn wait_for(&mut self, name: &str, timeout: Duration) -> Result<ExitStatus, BootError> {
        let deadline = Instant::now() + timeout;
        let server = self.servers.iter_mut().find(|s| s.name == name).ok_or_else(|| BootError::Endpoint(format!("no server {name}")))?;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(BootError::KilledOnShutdown(server.name));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills `name` with SIGKILL and reaps it (tests of a dead peer).
    pub fn kill(&mut self, name: &str) -> Result<(), BootError> {
        let server = self.servers.iter_mut().find(|s| s.name == name).ok_or_else(|| BootError::Endpoint(format!("no server {name}")))?;
        let _ = server.child.kill();
        let _ = server.child.wait();
        Ok(())
    }

    /// Reports a server that died, if any.
    pub fn check_alive(&mut self) -> Result<(), BootError> {
        for s in self.servers.iter_mut() {
            if let Ok(Some(status)) = s.child.try_wait() {
                return Err(BootError::ServerDied { server: s.name, status });
            }
        }
        Ok(())
    }

    /// Supervises until `stop` is set (Ctrl-C) or a server dies.
    pub fn watch(&mut self, stop: &AtomicBool) -> Result<(), BootError> {
        while !stop.load(Ordering::Acquire) {
            for s in self.servers.iter_mut() {
                if let Ok(Some(status)) = s.child.try_wait() {
                    return Err(BootError::ServerDied { server: s.name, status });
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Stops every server: closes lifelines (GPU server first, whose exit
    /// closes the device's control channel), waits, then kills stragglers.
    pub fn shutdown(mut self) -> Vec<BootError> {
        let mut errors = Vec::new();
        for s in self.servers.iter_mut().rev() {
            drop(s.child.stdin.take());
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match s.child.try_wait() {
                    Ok(Some(status)) => {
                        log::info!("init: {} stopped ({status})", s.name);
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                    _ => {
                        let _ = s.child.kill();
                        let _ = s.child.wait();
                        errors.push(BootError::KilledOnShutdown(s.name));
                        break;
                    }
                }
            }
        }
        errors
    }
}
