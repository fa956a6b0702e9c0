//! Starting a server process without forking `init` (issue 14).
//!
//! **Why not fork.** `init`'s workloads map pager memory: its address
//! space has userfaultfd-registered ranges, and a `fork` of it raises a
//! fork event on each of those userfaultfds that the forking thread waits
//! on until the pager *reads* it. When the pager is the server being
//! restarted, nobody reads it: the supervisor would wait forever for the
//! pager it is trying to start. So no server is started by a fork of
//! `init`:
//! - `init` starts `svm spawn-helper` with `posix_spawn` (`std` takes that
//!   path when no `pre_exec` closure is set; glibc spawns with
//!   `CLONE_VM | CLONE_VFORK`, which copies no address space and raises no
//!   fork event), its standard input a socket;
//! - the helper, a fresh process with no registered range, receives what
//!   the server needs on that socket (the executable, its arguments, each
//!   endpoint end and the descriptor it must be, the lifeline), puts the
//!   descriptors in place and `exec`s the server in its own process. The
//!   server thus keeps the helper's process id: the `Child` `init` holds
//!   is the server's.
//!
//! The spec is one JSON frame, then one frame per descriptor in the
//! spec's order (a frame carries few handles), then the lifeline's read
//! end when there is one.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ipc_protocol::transport::{pass_fds_to_child, SeqPacket, Transport, TransportError};
use serde::{Deserialize, Serialize};

/// The helper's executable, beside the servers' (`svm`).
pub const HELPER: &str = "svm";

/// What the helper is to become.
#[derive(Debug, Serialize, Deserialize)]
struct Spec {
    exe: PathBuf,
    args: Vec<String>,
    /// The descriptor each following frame's handle must be, in order.
    targets: Vec<i32>,
    /// Whether a last frame carries the lifeline (stdin); else `/dev/null`.
    lifeline: bool,
}

/// How long the helper waits for its spec.
const SPEC_DEADLINE: Duration = Duration::from_secs(10);

/// A started server: its process, and the write end of its lifeline
/// (dropped: the server's stdin closes and it stops).
pub struct Spawned {
    pub child: Child,
    pub lifeline: Option<OwnedFd>,
}

/// Starts `exe` with `args`, each `(fd, target)` as descriptor `target`,
/// and a lifeline on stdin when `lifeline`, through the helper `helper`.
pub fn spawn(
    helper: &std::path::Path,
    exe: PathBuf,
    args: Vec<String>,
    fds: &[(&OwnedFd, i32)],
    lifeline: bool,
    stdout_to_stderr: bool,
) -> std::io::Result<Spawned> {
    let (ours, theirs) = SeqPacket::pair().map_err(std::io::Error::other)?;
    let theirs = theirs.fd().try_clone_to_owned()?;
    let mut cmd = Command::new(helper);
    cmd.arg("spawn-helper").stdin(Stdio::from(theirs));
    // A terminal's Ctrl-C goes to init alone, which then stops the servers
    // in order; without this the servers would die of SIGINT first.
    cmd.process_group(0);
    if stdout_to_stderr {
        cmd.stdout(Stdio::from(std::io::stderr().as_fd().try_clone_to_owned()?));
    }
    let child = cmd.spawn()?;
    let spec = Spec {
        exe,
        args,
        targets: fds.iter().map(|(_, t)| *t).collect(),
        lifeline,
    };
    let (read, write) = match lifeline {
        true => {
            let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
            (Some(r), Some(w))
        }
        false => (None, None),
    };
    let sent = send_spec(&ours, &spec, fds, read);
    if let Err(e) = sent {
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    Ok(Spawned {
        child,
        lifeline: write,
    })
}

fn send_spec(
    t: &SeqPacket,
    spec: &Spec,
    fds: &[(&OwnedFd, i32)],
    lifeline: Option<OwnedFd>,
) -> std::io::Result<()> {
    let io = std::io::Error::other::<TransportError>;
    let json = serde_json::to_vec(spec).map_err(std::io::Error::other)?;
    t.send(&json, Vec::new()).map_err(io)?;
    for (fd, _) in fds {
        t.send(&[0], vec![fd.try_clone()?]).map_err(io)?;
    }
    if let Some(r) = lifeline {
        t.send(&[0], vec![r]).map_err(io)?;
    }
    Ok(())
}

/// `svm spawn-helper`: becomes the server its spec on stdin names; returns
/// only on failure.
pub fn helper_main() -> std::io::Error {
    match server_command() {
        // In this process: the pre-exec step puts the descriptors in place.
        Ok((mut cmd, _staged)) => cmd.exec(),
        Err(e) => e,
    }
}

/// The server's command, its descriptors staged for the pre-exec step.
fn server_command() -> std::io::Result<(Command, Vec<OwnedFd>)> {
    let t = SeqPacket::from_fd(std::io::stdin().as_fd().try_clone_to_owned()?);
    let first = t.recv(Some(SPEC_DEADLINE)).map_err(std::io::Error::other)?;
    let spec: Spec = serde_json::from_slice(&first.bytes).map_err(std::io::Error::other)?;
    let mut held = Vec::with_capacity(spec.targets.len());
    for _ in &spec.targets {
        held.push(one_handle(&t)?);
    }
    let stdin = match spec.lifeline {
        true => Stdio::from(one_handle(&t)?),
        false => Stdio::null(),
    };
    let fds: Vec<(&OwnedFd, i32)> = held
        .iter()
        .zip(&spec.targets)
        .map(|(f, t)| (f, *t))
        .collect();
    let mut cmd = Command::new(&spec.exe);
    cmd.args(&spec.args).stdin(stdin);
    let staged = pass_fds_to_child(&mut cmd, &fds)?;
    Ok((cmd, staged))
}

fn one_handle(t: &SeqPacket) -> std::io::Result<OwnedFd> {
    let r = t.recv(Some(SPEC_DEADLINE)).map_err(std::io::Error::other)?;
    r.handles
        .into_iter()
        .next()
        .ok_or_else(|| std::io::Error::other("a spec frame without its descriptor"))
}
