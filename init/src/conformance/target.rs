//! Where the implementation under test is: a command the suite starts
//! with its endpoint inherited (`--spawn`), a listening socket
//! (`--connect`), or the endpoints `init` made to a booted system's
//! servers (`--system`). Each opens endpoints with every right of the
//! interface, or with none, and where it can, one whose implementation the
//! suite may restart (`restarter.rs`).

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipc_protocol::schema::InterfaceDesc;
use ipc_protocol::transport::{pass_fds_to_child, SeqPacket};

use super::restarter::{NoRestart, Restartable, SpawnRestart, SystemRestart};

/// The descriptor a spawned implementation finds its endpoint at.
pub const ENDPOINT_FD: i32 = 3;
/// The descriptor a spawned client finds its endpoint without rights at.
pub const DENIED_FD: i32 = 4;
/// The badge a spawned server is told to give its endpoint.
pub const SPAWN_BADGE: u64 = 7;
/// The variable that tells a spawned implementation its generation.
pub const GENERATION_VAR: &str = "XSVM_GENERATION";

/// An endpoint and the means to restart what serves it.
pub type RestartableEndpoint<'a> = (OwnedFd, Box<dyn Restartable + 'a>);

pub trait Target {
    /// A new endpoint to the implementation of `iface`: with every right
    /// the interface defines, or (`denied`) with none.
    fn open(&mut self, iface: &InterfaceDesc, denied: bool) -> Result<OwnedFd, String>;
    /// A booted system: the suite must not send what would wedge it.
    fn is_live_system(&self) -> bool {
        false
    }
    /// An endpoint with every right to the implementation of `iface`, and
    /// the means to kill it and have it started again on that endpoint.
    fn open_restartable(
        &mut self,
        _iface: &InterfaceDesc,
    ) -> Result<RestartableEndpoint<'_>, NoRestart> {
        Err(NoRestart::Unsupported(
            "the suite did not start this implementation, so it cannot restart it".into(),
        ))
    }
}

/// Starts `sh -c CMD` per endpoint, the endpoint at descriptor 3 and the
/// facts about it in the environment (ipc.md, "Conformance endpoints").
pub struct Spawn {
    cmd: String,
    children: Vec<Child>,
}

impl Spawn {
    pub fn new(cmd: &str) -> Self {
        Self {
            cmd: cmd.into(),
            children: Vec::new(),
        }
    }
}

/// The environment that tells a spawned implementation what it serves or
/// calls, at its first start (generation 1).
pub fn endpoint_env(
    iface: &InterfaceDesc,
    role: &str,
    badge: u64,
    rights: u32,
) -> Vec<(String, String)> {
    [
        ("XSVM_ROLE", role.to_string()),
        ("XSVM_INTERFACE", iface.name.to_string()),
        ("XSVM_INTERFACE_ID", iface.id.to_string()),
        ("XSVM_ENDPOINT_FD", ENDPOINT_FD.to_string()),
        ("XSVM_BADGE", badge.to_string()),
        ("XSVM_RIGHTS", rights.to_string()),
        (GENERATION_VAR, "1".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Starts `sh -c cmd` in its own process group with `fds` inherited at
/// their target descriptors and `env` set; its stdout goes to our stderr
/// (our stdout carries the results).
pub fn spawn_with(
    cmd: &str,
    fds: &[(&OwnedFd, i32)],
    env: &[(String, String)],
    stdout: Stdio,
) -> Result<Child, String> {
    let mut c = Command::new("sh");
    c.arg("-c").arg(cmd).stdin(Stdio::null()).stdout(stdout);
    c.envs(env.iter().map(|(k, v)| (k, v)));
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    let _held = pass_fds_to_child(&mut c, fds).map_err(|e| format!("passing the endpoint: {e}"))?;
    c.spawn().map_err(|e| format!("starting {cmd:?}: {e}"))
}

/// A connected seqpacket pair as two descriptors.
pub fn pair() -> Result<(OwnedFd, OwnedFd), String> {
    let (a, b) = SeqPacket::pair().map_err(|e| format!("socketpair: {e}"))?;
    let dup = |s: &SeqPacket| {
        s.fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| e.to_string())
    };
    Ok((dup(&a)?, dup(&b)?))
}

/// Waits for `child` to exit on its own for up to `grace`, then kills its
/// process group (which the suite made for it) and reaps it.
pub fn stop(child: &mut Child, grace: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = child.wait();
    None
}

impl Target for Spawn {
    fn open(&mut self, iface: &InterfaceDesc, denied: bool) -> Result<OwnedFd, String> {
        let (mine, theirs) = pair()?;
        let rights = if denied { 0 } else { iface.all_rights().bits() };
        let env = endpoint_env(iface, "server", SPAWN_BADGE, rights);
        let stdout = Stdio::from(std::io::stderr());
        let child = spawn_with(&self.cmd, &[(&theirs, ENDPOINT_FD)], &env, stdout)?;
        self.children.push(child);
        Ok(mine)
    }

    /// A new implementation on a new endpoint whose server end the suite
    /// keeps, to start the next generation on.
    fn open_restartable(
        &mut self,
        iface: &InterfaceDesc,
    ) -> Result<RestartableEndpoint<'_>, NoRestart> {
        let (mine, theirs) = pair().map_err(NoRestart::NotRestartable)?;
        let env = endpoint_env(iface, "server", SPAWN_BADGE, iface.all_rights().bits());
        let r = SpawnRestart::start(&mut self.children, &self.cmd, env, theirs)
            .map_err(NoRestart::NotRestartable)?;
        Ok((mine, Box::new(r)))
    }
}

impl Drop for Spawn {
    /// Our ends are closed by now (the endpoints were dropped first); an
    /// implementation that does not exit then is killed.
    fn drop(&mut self) {
        for child in &mut self.children {
            if stop(child, Duration::from_secs(5)).is_none() {
                eprintln!(
                    "svm conformance: {:?} did not exit when its endpoint closed; killed",
                    self.cmd
                );
            }
        }
    }
}

/// Connects to a listening `SOCK_SEQPACKET` socket per endpoint.
pub struct Connect {
    pub path: PathBuf,
    /// A socket whose connections hold no right (optional: without it the
    /// rights cases are skipped).
    pub denied_path: Option<PathBuf>,
}

fn connect_to(path: &std::path::Path) -> Result<OwnedFd, String> {
    use rustix::net::{
        connect, socket_with, AddressFamily, SocketAddrUnix, SocketFlags, SocketType,
    };
    let fd = socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| format!("socket: {e}"))?;
    let addr = SocketAddrUnix::new(path).map_err(|e| format!("{}: {e}", path.display()))?;
    connect(&fd, &addr).map_err(|e| format!("connecting to {}: {e}", path.display()))?;
    Ok(fd)
}

impl Target for Connect {
    fn open(&mut self, _: &InterfaceDesc, denied: bool) -> Result<OwnedFd, String> {
        match (denied, &self.denied_path) {
            (false, _) => connect_to(&self.path),
            (true, Some(p)) => connect_to(p),
            (true, None) => Err(SKIP_NO_DENIED.into()),
        }
    }
}

/// Why the rights cases cannot run over `--connect` alone.
pub const SKIP_NO_DENIED: &str = "no endpoint without rights (give --connect-denied)";

/// One interface's conformance endpoints in a booted system.
struct SystemEnds {
    interface: &'static str,
    process: &'static str,
    /// Every right, then none; each handed out once.
    ends: [Option<OwnedFd>; 2],
    /// A copy of the end with every right, for the restart cases.
    full_copy: Option<OwnedFd>,
}

/// The conformance endpoints of a booted system: each can be opened once
/// (init cannot make another while the system runs); the restart cases get
/// a copy of the one with every right and restart its server through
/// init's supervisor.
pub struct System<'s> {
    ends: Vec<SystemEnds>,
    system: &'s mut crate::supervisor::System,
}

impl<'s> System<'s> {
    pub fn new(
        ends: Vec<crate::supervisor::ConformanceEnds>,
        system: &'s mut crate::supervisor::System,
    ) -> Self {
        let ends = ends
            .into_iter()
            .map(|e| SystemEnds {
                interface: e.interface,
                process: e.process,
                full_copy: e.full.try_clone().ok(),
                ends: [Some(e.full), Some(e.denied)],
            })
            .collect();
        Self { ends, system }
    }

    fn ends_of(&mut self, iface: &InterfaceDesc) -> Result<&mut SystemEnds, String> {
        self.ends
            .iter_mut()
            .find(|e| e.interface == iface.name)
            .ok_or_else(|| format!("the system has no conformance endpoint for {}", iface.name))
    }
}

/// Drops what waits on an end nobody has called on yet: only `Restarted`
/// announcements can, left by restarts of its server for another
/// interface's cases (a server announces on every endpoint it serves). A
/// caller that connects now would never have seen them.
fn drop_announcements(fd: &OwnedFd) -> Result<(), String> {
    use ipc_protocol::transport::{Transport, TransportError};
    let copy = fd.try_clone().map_err(|e| e.to_string())?;
    let end = SeqPacket::from_fd(copy);
    loop {
        // Already there: they were sent before the restart was done.
        match end.recv(Some(Duration::from_millis(1))) {
            Ok(_) => {}
            Err(TransportError::TimedOut | TransportError::Disconnected) => return Ok(()),
            Err(e) => return Err(format!("clearing the endpoint: {e}")),
        }
    }
}

impl Target for System<'_> {
    fn open(&mut self, iface: &InterfaceDesc, denied: bool) -> Result<OwnedFd, String> {
        let fd = self.ends_of(iface)?.ends[denied as usize]
            .take()
            .ok_or_else(|| {
                "the endpoint was closed and init cannot make another while the system runs"
                    .to_string()
            })?;
        drop_announcements(&fd)?;
        Ok(fd)
    }
    fn is_live_system(&self) -> bool {
        true
    }
    fn open_restartable(
        &mut self,
        iface: &InterfaceDesc,
    ) -> Result<RestartableEndpoint<'_>, NoRestart> {
        let ends = self.ends_of(iface).map_err(NoRestart::Unsupported)?;
        let process = ends.process;
        let fd = ends
            .full_copy
            .take()
            .ok_or_else(|| NoRestart::NotRestartable("the endpoint is gone".into()))?;
        let r = SystemRestart::new(self.system, process)?;
        Ok((fd, Box::new(r)))
    }
}
