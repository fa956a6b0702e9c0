//! Starting, watching and stopping server processes.
//!
//! Each server gets its endpoints as inherited descriptors (3, 4, ...) and
//! a lifeline on stdin: when init exits for any reason, the pipe closes and
//! the servers stop, so no server outlives the system it belongs to.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hw::model::Config;
use ipc_protocol::client::Client;
use ipc_protocol::interfaces::{
    gpu::Gpu, pager::Pager, pager_reclaim::PagerReclaim, pressure::Pressure,
};
use ipc_protocol::transport::{pass_fds_to_child, SeqPacket};

use crate::process::{DeviceAttach, Recipe, Supervised};

#[derive(Debug)]
pub enum BootError {
    /// A server's executable is not beside `svm` (build the workspace).
    MissingExecutable(PathBuf),
    Spawn {
        server: &'static str,
        error: std::io::Error,
    },
    Endpoint(String),
    /// A server exited while the system was up.
    ServerDied {
        server: &'static str,
        status: ExitStatus,
    },
    /// A server did not stop within the grace period and was killed.
    KilledOnShutdown(&'static str),
    /// The device that outlives `server` (its driver) could not be handed
    /// a control socket for the next generation, so none was started.
    Reattach {
        server: &'static str,
        error: ipc_protocol::transport::TransportError,
    },
}

impl std::fmt::Display for BootError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MissingExecutable(p) => write!(
                f,
                "{} not found: run `cargo build --release` first",
                p.display()
            ),
            Self::Spawn { server, error } => write!(f, "starting {server}: {error}"),
            Self::Endpoint(e) => write!(f, "creating an endpoint: {e}"),
            Self::ServerDied { server, status } => write!(f, "{server} died: {status}"),
            Self::KilledOnShutdown(s) => write!(f, "{s} did not stop in time and was killed"),
            Self::Reattach { server, error } => {
                write!(f, "reattaching the device for {server}: {error}")
            }
        }
    }
}
impl std::error::Error for BootError {}

/// Where the server executables are: `$SVM_BIN_DIR`, else beside this one.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SVM_BIN_DIR") {
        return PathBuf::from(d);
    }
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The executable of server `name`, beside `svm` (or in `$SVM_BIN_DIR`).
pub(crate) fn exe(name: &str) -> Result<PathBuf, BootError> {
    let p = bin_dir().join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(BootError::MissingExecutable(p))
    }
}

/// One client's connections: its `Gpu` and `Pager` endpoints.
pub struct Connection {
    /// The badge every server knows this client by.
    pub badge: u64,
    /// GPU 0's server.
    pub gpu: Client<Gpu>,
    pub pager: Client<Pager>,
    /// GPUs 1..'s servers, in GPU order (a system booted with several).
    pub more_gpus: Vec<Client<Gpu>>,
}

impl Connection {
    /// GPU `gpu`'s server, if the system has that GPU.
    pub fn gpu_of(&self, gpu: u8) -> Option<&Client<Gpu>> {
        match gpu {
            0 => Some(&self.gpu),
            g => self.more_gpus.get(usize::from(g) - 1),
        }
    }
}

fn seqpacket(fd: OwnedFd) -> std::sync::Arc<dyn ipc_protocol::transport::Transport> {
    std::sync::Arc::new(SeqPacket::from_fd(fd))
}

impl Connection {
    /// The endpoints a client process inherited from `init`
    /// ([`ClientSlot::spawn`]).
    ///
    /// # Safety
    /// `gpu_fd` and `pager_fd` must be descriptors this process owns and
    /// nothing else uses.
    pub unsafe fn inherited(badge: u64, gpu_fd: i32, pager_fd: i32) -> Self {
        use ipc_protocol::transport::inherited_fd;
        // SAFETY: the caller vouches for both descriptors.
        let (gpu, pager) = unsafe { (inherited_fd(gpu_fd), inherited_fd(pager_fd)) };
        let more_gpus = Vec::new();
        ClientSlot {
            badge,
            gpu,
            pager,
            more_gpus,
        }
        .connect()
    }
}

/// How long a workload waits for a server's reply before calling it gone.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// The client ends `init` keeps for running workloads: client slot 0's
/// connections (a `Clients` derefs to them), mm-server's status, and the
/// unconnected endpoints of the other client slots.
pub struct Clients {
    pub own: Connection,
    /// mm-server's status (watermarks, usage, eviction counts).
    pub pressure: Client<Pressure>,
    /// Client slots 1.. , to connect here or hand to a client process.
    pub slots: Vec<ClientSlot>,
    /// The calling ends of the conformance endpoints
    /// (`BootOptions::conformance`; empty otherwise).
    pub conformance: Vec<ConformanceEnds>,
    /// The pager's `PagerReclaim`, for evacuating a device that goes away
    /// (a boot of several GPUs; `devices.rs`).
    pub reclaim: Option<Client<PagerReclaim>>,
}

/// The calling ends of one interface's conformance endpoints
/// ([`crate::manifest::CONFORMANCE`]).
pub struct ConformanceEnds {
    pub interface: &'static str,
    /// The server process that serves it.
    pub process: &'static str,
    /// Holds every right the interface defines.
    pub full: OwnedFd,
    pub full_badge: u64,
    pub rights: ipc_protocol::Rights,
    /// Holds no right.
    pub denied: OwnedFd,
    pub denied_badge: u64,
}

impl std::ops::Deref for Clients {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.own
    }
}

/// The endpoints of one client slot, not yet connected.
pub struct ClientSlot {
    pub badge: u64,
    gpu: OwnedFd,
    pager: OwnedFd,
    /// GPUs 1..'s `Gpu` endpoints (kept in `init`: a client process
    /// started with [`Self::spawn`] reaches GPU 0 only).
    more_gpus: Vec<OwnedFd>,
}

impl ClientSlot {
    /// Connects here, in this process.
    pub fn connect(self) -> Connection {
        self.connect_with_timeout(CALL_TIMEOUT)
    }

    /// Connects here, waiting at most `timeout` for any reply.
    pub fn connect_with_timeout(self, timeout: Duration) -> Connection {
        let client = |fd| Client::new(seqpacket(fd)).with_timeout(timeout);
        Connection {
            badge: self.badge,
            gpu: client(self.gpu),
            pager: Client::new(seqpacket(self.pager)).with_timeout(timeout),
            more_gpus: self.more_gpus.into_iter().map(client).collect(),
        }
    }

    /// Makes this slot's `Gpu` endpoint descriptor `gpu_fd` and its
    /// `Pager` endpoint `pager_fd` in the child `cmd` starts; keep the
    /// returned descriptors until it is spawned.
    pub fn inherit(
        &self,
        cmd: &mut Command,
        gpu_fd: i32,
        pager_fd: i32,
    ) -> std::io::Result<Vec<OwnedFd>> {
        pass_fds_to_child(cmd, &[(&self.gpu, gpu_fd), (&self.pager, pager_fd)])
    }

    /// Starts `svm client --badge B --gpu-fd 3 --pager-fd 4 <args>` as this
    /// client: it inherits the `Gpu` endpoint as descriptor 3 and the
    /// `Pager` endpoint as 4, and its stdout is piped back. The endpoints
    /// stay open here too, so the servers see the client go only when both
    /// the process and this slot are gone.
    pub fn spawn(&self, svm: &Path, args: &[&str]) -> std::io::Result<Child> {
        let mut cmd = Command::new(svm);
        cmd.args([
            "client",
            "--badge",
            &self.badge.to_string(),
            "--gpu-fd",
            "3",
            "--pager-fd",
            "4",
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
        let _held = pass_fds_to_child(&mut cmd, &[(&self.gpu, 3), (&self.pager, 4)])?;
        cmd.spawn()
    }
}

/// A booted system: its servers under supervision ([`crate::process`]).
pub struct System {
    servers: Supervised,
}

/// What `init` does when a server dies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Supervision {
    /// Start the restartable servers again (`manifest::RESTARTABLE`).
    #[default]
    Restart,
    /// Restart nothing: a dead server is reported (tests of a dead peer).
    Report,
}

#[derive(Debug, Clone, Default)]
pub struct BootOptions {
    pub device: Config,
    /// Ask the GPU server to probe and exit (a self-check of the boot).
    pub probe_only: bool,
    /// Extra arguments for the pager (tests use them to break a rule).
    pub pager_args: Vec<String>,
    /// Extra arguments for the GPU server (tests shorten its deadlines).
    pub gpu_args: Vec<String>,
    /// Client slots (each with its own badge); 0 means 1.
    pub clients: usize,
    pub supervision: Supervision,
    /// Also make the conformance suite's endpoints to every server.
    pub conformance: bool,
    /// The servers write their standard output to our standard error.
    pub stdout_to_stderr: bool,
    /// GPUs, each a device model and a GPU server (0 or 1: one; up to
    /// `manifest::MAX_GPUS`; `devices.rs`).
    pub gpus: u8,
    /// How long a started server has to say it serves before it is killed
    /// (`process.rs`, "Readiness"; `None`: [`crate::process::READY_DEADLINE`];
    /// tests shorten it).
    pub ready_deadline: Option<Duration>,
}

impl BootOptions {
    /// Has every GPU server move `chunks` chunks ahead of a stream of
    /// faults (`--fault-ahead`; 0 is off). Past
    /// [`crate::args::MAX_FAULT_AHEAD`]: an error naming it and the range.
    pub fn set_fault_ahead(&mut self, chunks: u8) -> Result<(), String> {
        let max = crate::args::MAX_FAULT_AHEAD;
        match chunks {
            0 => {}
            n if n <= max => self.gpu_args.push(format!("--fault-ahead={n}")),
            n => return Err(format!("{n}: 0 to {max}")),
        }
        Ok(())
    }
}

/// A duplicate of an endpoint end, for a server's recipe.
fn dup(fd: &OwnedFd) -> Result<OwnedFd, BootError> {
    fd.as_fd()
        .try_clone_to_owned()
        .map_err(|e| BootError::Endpoint(e.to_string()))
}

/// A duplicate of a seqpacket end, to hand to a child.
fn dup_seqpacket(s: &SeqPacket) -> Result<OwnedFd, BootError> {
    s.fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| BootError::Endpoint(e.to_string()))
}

fn endpoint_pair() -> Result<(OwnedFd, OwnedFd), BootError> {
    let (a, b) = SeqPacket::pair().map_err(|e| BootError::Endpoint(e.to_string()))?;
    Ok((dup_seqpacket(&a)?, dup_seqpacket(&b)?))
}

/// One interface's conformance endpoints before the servers start: the
/// (server end, calling end) pairs, where the server end goes, and what
/// the server is told (`--extra-endpoint`).
struct ConformancePair {
    interface: &'static str,
    process: &'static str,
    rights: ipc_protocol::Rights,
    /// Every right, then none.
    ends: [(OwnedFd, OwnedFd); 2],
    specs: [ipc_protocol::transport::ExtraEndpoint; 2],
}

impl ConformancePair {
    fn into_ends(self) -> ConformanceEnds {
        let [(_, full), (_, denied)] = self.ends;
        ConformanceEnds {
            interface: self.interface,
            process: self.process,
            full,
            full_badge: self.specs[0].badge,
            rights: self.rights,
            denied,
            denied_badge: self.specs[1].badge,
        }
    }
}

fn conformance_pairs() -> Result<Vec<ConformancePair>, BootError> {
    use crate::manifest::{conformance_badge, conformance_fd, CONFORMANCE};
    use ipc_protocol::transport::ExtraEndpoint;
    let mut out = Vec::new();
    for (i, c) in CONFORMANCE.iter().enumerate() {
        let rights = ipc_protocol::interfaces::all()
            .into_iter()
            .find(|d| d.name == c.interface)
            .map(|d| d.all_rights())
            .ok_or_else(|| BootError::Endpoint(format!("no interface {}", c.interface)))?;
        let spec = |denied: bool| ExtraEndpoint {
            interface: c.interface.into(),
            fd: conformance_fd(i, denied),
            badge: conformance_badge(i, denied),
            rights: if denied {
                ipc_protocol::Rights::empty()
            } else {
                rights
            },
        };
        out.push(ConformancePair {
            interface: c.interface,
            process: c.process,
            rights,
            ends: [endpoint_pair()?, endpoint_pair()?],
            specs: [spec(false), spec(true)],
        });
    }
    Ok(out)
}

/// Whether `init` starts `process` again when it dies: a restartable
/// server ([`crate::manifest::RESTARTABLE`]) under [`Supervision::Restart`],
/// except in a probe-only boot, whose GPU server exits on purpose.
pub(crate) fn restarted(opts: &BootOptions, process: &str) -> bool {
    opts.supervision == Supervision::Restart
        && crate::manifest::RESTARTABLE.contains(&process)
        && !opts.probe_only
}

/// The device model's attach channel (`xe-model --attach-fd`), made when
/// the GPU server is restarted: the device then outlives it and takes each
/// new generation's control socket here. Empty otherwise (the device stops
/// with its driver, as a dead GPU server is then reported).
pub(crate) struct Attach {
    /// Kept by `init` in the GPU server's recipe.
    pub(crate) kept: Option<DeviceAttach>,
    /// The device's end, until it is started.
    device: Option<OwnedFd>,
}

impl Attach {
    /// The channel, if `opts` has the GPU server restarted.
    pub(crate) fn new(opts: &BootOptions) -> Result<Self, BootError> {
        use crate::manifest::MANIFEST;
        let wanted = restarted(opts, "xe-svm");
        // The descriptor the GPU server gets the device control socket as.
        let control = MANIFEST
            .iter()
            .find(|e| e.interface == "device control")
            .and_then(|e| e.client.as_ref());
        let (Some(control), true) = (control, wanted) else {
            return Ok(Self {
                kept: None,
                device: None,
            });
        };
        let (kept, device) = SeqPacket::pair().map_err(|e| BootError::Endpoint(e.to_string()))?;
        Ok(Self {
            kept: Some(DeviceAttach {
                attach: kept,
                fd: control.fd,
            }),
            device: Some(dup_seqpacket(&device)?),
        })
    }

    /// Gives the device model its end as `--attach-fd`.
    pub(crate) fn give_device(&mut self, fds: &mut Vec<(OwnedFd, i32)>, args: &mut Vec<String>) {
        use crate::manifest::DEVICE_ATTACH_FD;
        if let Some(end) = self.device.take() {
            fds.push((end, DEVICE_ATTACH_FD));
            args.push(format!("--attach-fd={DEVICE_ATTACH_FD}"));
        }
    }
}

/// How long `process` has to say it serves, for the servers that say it
/// (`--ready-fd`; the device model does not).
pub(crate) fn ready_deadline(process: &str, opts: &BootOptions) -> Option<Duration> {
    matches!(process, "pager" | "xe-svm" | "mm-server").then(|| {
        opts.ready_deadline
            .unwrap_or(crate::process::READY_DEADLINE)
    })
}

/// The arguments `opts` gives server `process`, before its endpoints.
pub(crate) fn server_args(process: &str, opts: &BootOptions) -> Vec<String> {
    match process {
        "xe-model" => opts.device.to_args(),
        "mm-server" => vec![format!("--vram-bytes={}", opts.device.vram_bytes)],
        "xe-svm" if opts.probe_only => vec!["--probe-only".into()],
        "xe-svm" => {
            let mut a = crate::manifest::budget_args("xe-svm");
            a.extend(opts.gpu_args.iter().cloned());
            a
        }
        "pager" => {
            // The manifest's budget, unless a test gives its own.
            let own = opts.pager_args.iter().any(|a| a.starts_with("--budget"));
            let mut a = if own {
                Vec::new()
            } else {
                crate::manifest::budget_args("pager")
            };
            a.extend(opts.pager_args.iter().cloned());
            a
        }
        _ => Vec::new(),
    }
}

/// The ends of manifest row `e` (`pairs`: one per client slot for a
/// per-client row, else one; none when the row is not wired) that
/// `process` gets: its descriptors, and the flags naming them.
pub(crate) fn wire_row(
    e: &crate::manifest::Endpoint,
    pairs: &[(OwnedFd, OwnedFd)],
    process: &str,
    fds: &mut Vec<(OwnedFd, i32)>,
    args: &mut Vec<String>,
) -> Result<(), BootError> {
    use crate::manifest::{client_badge, client_fd};
    if e.server.process == process && !pairs.is_empty() {
        for (slot, (server_end, _)) in pairs.iter().enumerate() {
            let fd = client_fd(e.server.fd, slot);
            fds.push((dup(server_end)?, fd));
            args.push(format!("{}={fd}", e.server.flag));
            if e.per_client {
                args.push(format!("--client-badge={}", client_badge(slot)));
            }
        }
        if !e.rights.is_empty() {
            // `--client-fd` -> `--client-rights`: the capability to mint.
            let flag = e.server.flag.trim_end_matches("-fd");
            args.push(format!("{flag}-rights={}", e.rights.bits()));
        }
    }
    if let (Some(c), Some((_, client_end))) = (
        e.client.as_ref().filter(|c| c.process == process),
        pairs.first(),
    ) {
        fds.push((dup(client_end)?, c.fd));
        args.push(format!("{}={}", c.flag, c.fd));
    }
    Ok(())
}

/// A restartable server's journal, a memfd its recipe keeps for every
/// generation (`--journal-fd`); the server sizes it.
pub(crate) fn give_journal(
    process: &str,
    fds: &mut Vec<(OwnedFd, i32)>,
    args: &mut Vec<String>,
) -> Result<(), BootError> {
    use crate::manifest::JOURNAL_FD;
    use rustix::fs::{memfd_create, MemfdFlags};
    let memfd = memfd_create(format!("{process}-journal"), MemfdFlags::CLOEXEC)
        .map_err(|e| BootError::Endpoint(format!("{process}'s journal: {e}")))?;
    fds.push((memfd, JOURNAL_FD));
    args.push(format!("--journal-fd={JOURNAL_FD}"));
    Ok(())
}

/// The pager's descriptor keeper (`--keep-fd`): its end goes in the
/// recipe, ours to the keeper's thread.
fn give_keeper(
    fds: &mut Vec<(OwnedFd, i32)>,
    args: &mut Vec<String>,
) -> Result<crate::keeper::Keeper, BootError> {
    use crate::manifest::KEEP_FD;
    let err = |e: String| BootError::Endpoint(format!("the pager's keeper: {e}"));
    let (ours, pager) = SeqPacket::pair().map_err(|e| err(e.to_string()))?;
    fds.push((dup_seqpacket(&pager)?, KEEP_FD));
    args.push(format!("--keep-fd={KEEP_FD}"));
    crate::keeper::Keeper::start(ours).map_err(|e| err(e.to_string()))
}

impl System {
    /// Starts the device model, the GPU server and the pager, joined per
    /// [`crate::manifest::MANIFEST`]. With `probe_only`, only the device
    /// model and a GPU server that probes and exits.
    pub fn boot(opts: &BootOptions) -> Result<(Self, Option<Clients>), BootError> {
        use crate::manifest::{client_badge, MANIFEST, MAX_CLIENTS, START_ORDER};
        let clients = opts.clients.clamp(1, MAX_CLIENTS);
        // With `probe_only`, just the device and a GPU server that probes.
        let started: &[&str] = if opts.probe_only {
            &["xe-model", "xe-svm"]
        } else {
            &START_ORDER
        };
        let wanted = |e: &crate::manifest::Endpoint| {
            started.contains(&e.server.process)
                && e.client
                    .as_ref()
                    .map_or(!opts.probe_only, |c| started.contains(&c.process))
        };
        // Each endpoint's (server end, client end) pairs: one per client
        // slot for per-client endpoints, else one.
        let mut ends: Vec<Vec<(OwnedFd, OwnedFd)>> = Vec::new();
        for e in MANIFEST {
            let n = if !wanted(e) {
                0
            } else if e.per_client {
                clients
            } else {
                1
            };
            ends.push((0..n).map(|_| endpoint_pair()).collect::<Result<_, _>>()?);
        }
        let conformance = if opts.conformance && !opts.probe_only {
            conformance_pairs()?
        } else {
            Vec::new()
        };
        let mut attach = Attach::new(opts)?;
        let mut devices = crate::devices::Devices::new(opts, clients)?;
        let system = Self {
            servers: Supervised::new(),
        };
        for &process in started {
            let exe = match exe(process) {
                Ok(p) => p,
                Err(e) => {
                    system.shutdown();
                    return Err(e);
                }
            };
            let mut args = server_args(process, opts);
            let mut fds: Vec<(OwnedFd, i32)> = Vec::new();
            for (e, pairs) in MANIFEST.iter().zip(&ends) {
                wire_row(e, pairs, process, &mut fds, &mut args)?;
            }
            for c in conformance.iter().filter(|c| c.process == process) {
                for ((server_end, _), spec) in c.ends.iter().zip(&c.specs) {
                    fds.push((dup(server_end)?, spec.fd));
                    args.push(format!("--extra-endpoint={spec}"));
                }
            }
            if process == "xe-model" {
                attach.give_device(&mut fds, &mut args);
            }
            if let Some(d) = &devices {
                match process {
                    "xe-model" => d.give_model0(&mut fds, &mut args)?,
                    "xe-svm" => d.give_peers(0, &mut fds, &mut args)?,
                    "pager" => d.give_pager(&mut fds, &mut args)?,
                    _ => {}
                }
            }
            let journaled = matches!(process, "xe-svm" | "pager");
            if journaled && restarted(opts, process) {
                give_journal(process, &mut fds, &mut args)?;
            }
            let keeper = match process {
                "pager" if restarted(opts, process) => Some(give_keeper(&mut fds, &mut args)?),
                _ => None,
            };
            let recipe = Recipe {
                exe,
                args,
                fds,
                lifeline: process != "xe-model",
                restartable: restarted(opts, process),
                stdout_to_stderr: opts.stdout_to_stderr,
                device: match process {
                    "xe-svm" => attach.kept.take(),
                    _ => None,
                },
                keeper,
                ready_deadline: ready_deadline(process, opts),
            };
            if let Err(e) = system.servers.start(process, recipe) {
                system.shutdown();
                return Err(e);
            }
            // Devices 1.. start beside device 0's GPU server, before the
            // pager that calls them all.
            if let (Some(d), "xe-svm") = (&devices, process) {
                if let Err(e) = system.start_devices(d, opts) {
                    system.shutdown();
                    return Err(e);
                }
            }
        }
        if opts.probe_only {
            return Ok((system, None));
        }
        // The client ends `init` keeps, by interface and slot.
        let (mut gpu, mut pager, mut pressure) = (Vec::new(), Vec::new(), None);
        for (e, pairs) in MANIFEST.iter().zip(ends) {
            if e.client.is_some() {
                continue;
            }
            let mine = pairs.into_iter().map(|(_, c)| c);
            match e.interface {
                "Gpu" => gpu.extend(mine),
                "Pager" => pager.extend(mine),
                "Pressure status" => pressure = mine.into_iter().next(),
                _ => {}
            }
        }
        let (Some(status), true) = (pressure, gpu.len() == clients && pager.len() == clients)
        else {
            system.shutdown();
            return Err(BootError::Endpoint(
                "the manifest gives init no Gpu, Pager or Pressure status endpoint".into(),
            ));
        };
        let reclaim = devices
            .as_mut()
            .and_then(|d| d.take_reclaim())
            .map(|fd| Client::new(seqpacket(fd)).with_timeout(CALL_TIMEOUT));
        let mut more = match devices.as_mut() {
            Some(d) => d.client_gpus(clients),
            None => Vec::new(),
        }
        .into_iter();
        let mut slots: Vec<ClientSlot> = gpu
            .into_iter()
            .zip(pager)
            .enumerate()
            .map(|(i, (gpu, pager))| ClientSlot {
                badge: client_badge(i),
                gpu,
                pager,
                more_gpus: more.next().unwrap_or_default(),
            })
            .collect();
        let own = slots.remove(0).connect();
        let pressure = Client::new(seqpacket(status)).with_timeout(Duration::from_secs(10));
        let conformance = conformance
            .into_iter()
            .map(ConformancePair::into_ends)
            .collect();
        Ok((
            system,
            Some(Clients {
                own,
                pressure,
                slots,
                conformance,
                reclaim,
            }),
        ))
    }

    /// Starts devices 1..: each one's model, then its GPU server.
    fn start_devices(
        &self,
        devices: &crate::devices::Devices,
        opts: &BootOptions,
    ) -> Result<(), BootError> {
        for d in 1..=devices.more() {
            let names = crate::devices::Devices::names(d);
            for (name, recipe) in names.into_iter().zip(devices.recipes(d, opts)?) {
                self.servers.start(name, recipe)?;
            }
        }
        Ok(())
    }

    /// Waits for `name` to exit on its own (a probe-only server).
    pub fn wait_for(&mut self, name: &str, timeout: Duration) -> Result<ExitStatus, BootError> {
        self.servers.wait_for(name, timeout)
    }

    /// The process id of server `name` (`svm bench` reads its memory use).
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.servers.pid(name)
    }

    /// SIGKILLs `name` (a crash); a restartable server comes back as its
    /// next generation ([`Self::wait_generation`]).
    pub fn kill(&mut self, name: &str) -> Result<(), BootError> {
        self.servers.kill(name)
    }

    /// Whether `name` comes back when it dies (`manifest::RESTARTABLE`
    /// and [`Supervision::Restart`], in a boot that is not probe-only).
    pub fn restartable(&self, name: &str) -> Option<bool> {
        self.servers.restartable(name)
    }

    /// The generation `name` runs as now (1 until its first restart).
    pub fn generation(&self, name: &str) -> Option<u32> {
        self.servers.generation(name)
    }

    /// Waits until `name` runs as generation `at_least` or later.
    pub fn wait_generation(&self, name: &str, at_least: u32, timeout: Duration) -> bool {
        self.servers.wait_generation(name, at_least, timeout)
    }

    /// Restarts so far, all servers together.
    pub fn restarts(&self) -> u64 {
        self.servers.restarts()
    }

    /// Servers killed so far for not saying they serve within their
    /// readiness deadline (`process.rs`, "Readiness").
    pub fn not_ready_kills(&self) -> u64 {
        self.servers.not_ready_kills()
    }

    /// Reports a server that died and was not restarted, if any.
    pub fn check_alive(&mut self) -> Result<(), BootError> {
        self.servers.check()
    }

    /// Supervises until `stop` is set (Ctrl-C) or a server dies for good
    /// (restartable ones come back meanwhile).
    pub fn watch(&mut self, stop: &AtomicBool) -> Result<(), BootError> {
        while !stop.load(Ordering::Acquire) {
            self.servers.check()?;
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Stops every server: no more restarts, lifelines close in reverse
    /// start order (GPU server first, whose exit closes the device's
    /// control channel), then stragglers are killed.
    pub fn shutdown(self) -> Vec<BootError> {
        self.servers.shutdown()
    }
}
