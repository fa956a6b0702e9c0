//! Handing a server the endpoints it calls. On the host `init` makes every
//! socket pair before it starts anyone, so each process inherits its
//! calling ends. On Redox an endpoint exists only once its server's scheme
//! is registered, and the servers call each other (mm-server calls the GPU
//! server's `GpuShrink`, which reports to mm-server's `Pressure`), so the
//! launcher opens the calling ends after every scheme is up and hands each
//! to its process through that process's `control` endpoint:
//!
//! 1. `sendfd` of the handle on the `control` handle, tagged with the
//!    role (a kernel that drops the tag delivers 0: untagged);
//! 2. a `call` on the `control` handle with metadata
//!    `[CALL_HANDOFF_V1, role]` and an empty payload: the server takes the
//!    handle sent for `role` and keeps it.
//!
//! A role is the `Interface::ID` of the endpoint handed over: in the
//! manifest a process calls each interface through at most one endpoint
//! (per-client endpoints are called by the clients, not by servers).
//! The `control` endpoint, like every endpoint, is opened once and only by
//! the launcher, so nobody else can hand a server an endpoint.

use std::os::fd::OwnedFd;

use super::endpoints::Endpoints;
use super::record::Errno;

/// Metadata word 0 of a handoff call: `"XSVH"` and the version.
pub const CALL_HANDOFF_V1: u64 = (u32::from_be_bytes(*b"XSVH") as u64) << 32 | 1;

/// The `interface` of a `control` endpoint (no interface of ours has it).
pub const CONTROL_INTERFACE: u16 = u16::MAX;

/// The path of the `control` endpoint in every server's scheme.
pub const CONTROL_PATH: &str = "control";

/// A handle handed over: the role it plays and the descriptor.
#[derive(Debug)]
pub struct Handoff {
    pub role: u16,
    pub fd: OwnedFd,
}

/// Serves a handoff call on handle `id`.
pub fn on_handoff(endpoints: &mut Endpoints, id: u64, metadata: &[u64]) -> Result<Handoff, Errno> {
    if endpoints.session(id)?.interface != CONTROL_INTERFACE {
        return Err(Errno::NotSupported);
    }
    let role = metadata
        .get(1)
        .and_then(|&r| u16::try_from(r).ok())
        .ok_or(Errno::Invalid)?;
    let (_, mut fds) = endpoints.begin(id, u64::from(role))?;
    // Counted out at once: a handoff runs nothing outside the lock.
    let _ = endpoints.end(id);
    match (fds.pop(), fds.is_empty()) {
        (Some(fd), true) => Ok(Handoff { role, fd }),
        // None sent, or more than one handle for one role.
        _ => Err(Errno::Invalid),
    }
}

/// The path of endpoint `interface` with `badge` in a server's scheme, as
/// the launcher opens it: `pressure.1`, `pager.100`.
pub fn endpoint_path(interface: &str, badge: u64) -> String {
    format!("{}.{badge}", interface.to_ascii_lowercase())
}
