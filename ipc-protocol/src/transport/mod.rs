//! Transports: how frames and handles travel. One trait, two substrates:
//! in-process channels (tests, the model) and `SOCK_SEQPACKET` unix sockets
//! between host processes, with handles passed by `SCM_RIGHTS`.

use std::os::fd::OwnedFd;
use std::time::Duration;

mod extra;
mod inproc;
// Unix seqpacket sockets with `SCM_RIGHTS` are the host's substrate; on
// Redox an endpoint is a scheme handle (`crate::scheme::redox`).
#[cfg(not(target_os = "redox"))]
mod seqpacket;

pub use extra::ExtraEndpoint;
pub use inproc::InProc;
#[cfg(not(target_os = "redox"))]
pub use seqpacket::SeqPacket;

/// One received frame.
#[derive(Debug)]
pub struct Received {
    pub bytes: Vec<u8>,
    pub handles: Vec<OwnedFd>,
    /// The datagram was longer than the receive buffer (bytes hold a prefix).
    pub truncated: bool,
    /// More handles arrived than a frame may carry; the excess was closed.
    pub handles_truncated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportError {
    /// The peer closed its end (it exited or crashed).
    Disconnected,
    /// Nothing arrived within the timeout.
    TimedOut,
    /// The host refused the operation (errno).
    Host(i32),
    /// The peer process was restarted (it is now this generation) before
    /// it answered: the call may or may not have taken effect.
    PeerRestarted(u32),
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Disconnected => write!(f, "peer disconnected"),
            Self::TimedOut => write!(f, "timed out"),
            Self::Host(e) => write!(f, "host error {}", rustix::io::Errno::from_raw_os_error(*e)),
            Self::PeerRestarted(g) => write!(f, "peer restarted (now generation {g})"),
        }
    }
}

impl std::error::Error for TransportError {}

impl From<rustix::io::Errno> for TransportError {
    fn from(e: rustix::io::Errno) -> Self {
        match e {
            rustix::io::Errno::PIPE | rustix::io::Errno::CONNRESET | rustix::io::Errno::NOTCONN => {
                Self::Disconnected
            }
            e => Self::Host(e.raw_os_error()),
        }
    }
}

/// A bidirectional, message-preserving, reliable link to one peer.
pub trait Transport: Send + Sync + 'static {
    /// Sends one frame; the handles are moved to the peer.
    fn send(&self, frame: &[u8], handles: Vec<OwnedFd>) -> Result<(), TransportError>;
    /// Receives one frame; `None` waits forever.
    fn recv(&self, timeout: Option<Duration>) -> Result<Received, TransportError>;
}

/// Descriptor numbers at or above this are never a child's target, so a
/// source moved up here cannot be overwritten by another endpoint's `dup2`.
const FD_STAGING_BASE: i32 = 256;

/// Makes each `(fd, target)` appear as descriptor `target` in the child
/// started by `cmd` (how `init` hands endpoints to a server process).
///
/// Every source is first duplicated above all targets in the parent, so
/// handing fd 3 to target 4 and fd 4 to target 3 (or any overlap between a
/// source number and an earlier target) cannot clobber one with another.
/// Keep the returned descriptors until the child is spawned.
pub fn pass_fds_to_child(
    cmd: &mut std::process::Command,
    fds: &[(&OwnedFd, i32)],
) -> std::io::Result<Vec<OwnedFd>> {
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::process::CommandExt;
    let mut high = Vec::with_capacity(fds.len());
    let mut plan = Vec::with_capacity(fds.len());
    for (fd, target) in fds {
        if *target >= FD_STAGING_BASE || *target < 0 {
            return Err(std::io::Error::other(
                "endpoint target descriptor out of range",
            ));
        }
        let h =
            rustix::io::fcntl_dupfd_cloexec(*fd, FD_STAGING_BASE).map_err(std::io::Error::from)?;
        plan.push((h.as_raw_fd(), *target));
        high.push(h);
    }
    // SAFETY: the closure runs in the forked child before exec and only
    // makes raw dup2 syscalls (async-signal-safe) on descriptors that the
    // parent keeps open until spawn returns; the targets are leaked into the
    // exec'd image on purpose (dup2 clears close-on-exec on them).
    unsafe {
        cmd.pre_exec(move || {
            for &(src, target) in &plan {
                let src = std::mem::ManuallyDrop::new(OwnedFd::from_raw_fd(src));
                let mut dst = std::mem::ManuallyDrop::new(OwnedFd::from_raw_fd(target));
                rustix::io::dup2(&*src, &mut dst)?;
            }
            Ok(())
        });
    }
    Ok(high)
}

/// Says "serving" on the readiness pipe `init` gave this server
/// (`--ready-fd`): one byte, then the pipe closes. `init` kills a server
/// that has not said it within its readiness deadline (a start that hangs
/// is restarted, not waited on for good).
///
/// # Safety
/// `fd` must be open and owned by nobody else in this process.
pub unsafe fn say_ready(fd: i32) {
    // SAFETY: the caller vouches for the descriptor.
    let pipe = unsafe { inherited_fd(fd) };
    if let Err(e) = rustix::io::write(&pipe, b"R") {
        log::warn!("telling init we serve (--ready-fd {fd}): {e}");
    }
}

/// Takes ownership of an inherited descriptor named on the command line.
///
/// # Safety
/// `fd` must be open and owned by nobody else in this process.
pub unsafe fn inherited_fd(fd: i32) -> OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: the caller guarantees `fd` is open and unowned.
    unsafe { OwnedFd::from_raw_fd(fd) }
}
