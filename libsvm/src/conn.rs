//! The connection to a running system: the `Gpu` and `Pager` endpoints
//! the launcher handed this process (`svm exec` passes them as inherited
//! descriptors named by environment variables, as `svm client` gets them
//! on its command line).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ipc_protocol::client::Client;
use ipc_protocol::interfaces::gpu::Gpu;
use ipc_protocol::interfaces::pager::Pager;
use ipc_protocol::transport::{inherited_fd, SeqPacket};

use crate::error::SvmError;

/// The descriptor of this process's `Gpu` endpoint.
pub const ENV_GPU_FD: &str = "SVM_GPU_FD";
/// The descriptor of this process's `Pager` endpoint.
pub const ENV_PAGER_FD: &str = "SVM_PAGER_FD";
/// The badge the servers know this client by (informational).
pub const ENV_BADGE: &str = "SVM_BADGE";
/// The process the endpoints belong to, set by the library when it
/// connects: the same process after an `exec` (a wrapper script that
/// execs the real program) connects again; a child that forked and
/// executed another program does not (the endpoints are its parent's).
pub const ENV_OWNER: &str = "SVM_OWNER";

/// How long any call to a server may take before it fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Conn {
    pub badge: u64,
    pub gpu: Client<Gpu>,
    pub pager: Client<Pager>,
}

/// Where this process stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// No system: every allocation is the internal heap's.
    Alone = 0,
    /// Connected: the heap is served by the pager.
    Connected = 1,
    /// A forked child of a connected process: the endpoints are the
    /// parent's (not ours to use); new allocations are the internal
    /// heap's and the shared pager heap is left to the parent.
    Forked = 2,
}

static MODE: AtomicU8 = AtomicU8::new(Mode::Alone as u8);
static CONN: OnceLock<Conn> = OnceLock::new();

pub fn mode() -> Mode {
    match MODE.load(Ordering::Acquire) {
        1 => Mode::Connected,
        2 => Mode::Forked,
        _ => Mode::Alone,
    }
}

/// In a forked child (the `pthread_atfork` child handler).
pub fn forked() {
    if mode() == Mode::Connected {
        MODE.store(Mode::Forked as u8, Ordering::Release);
    }
}

/// The connection, when this process is connected.
pub fn conn() -> Result<&'static Conn, SvmError> {
    match mode() {
        Mode::Connected => CONN.get().ok_or(SvmError::NotConnected),
        Mode::Forked => Err(SvmError::Forked),
        Mode::Alone => Err(SvmError::NotConnected),
    }
}

fn env_fd(name: &str) -> Result<i32, SvmError> {
    let v = std::env::var(name).map_err(|_| SvmError::NotConnected)?;
    v.trim().parse::<i32>().map_err(|_| SvmError::Invalid)
}

/// Takes descriptor `fd` if it is a `SOCK_SEQPACKET` socket.
fn take_endpoint(fd: i32) -> Result<OwnedFd, SvmError> {
    if fd < 0 {
        return Err(SvmError::Invalid);
    }
    // SAFETY: the launcher handed this descriptor to us alone; it is
    // checked to be a socket of the right type before it is kept.
    let owned = unsafe { inherited_fd(fd) };
    let ok = rustix::net::sockopt::socket_type(owned.as_fd())
        .is_ok_and(|t| t == rustix::net::SocketType::SEQPACKET);
    if !ok {
        // Not ours after all (a descriptor the program opened): leave it.
        std::mem::forget(owned);
        return Err(SvmError::NotConnected);
    }
    Ok(owned)
}

/// Closes endpoints this process inherited from a parent that owns them
/// (it forked and executed us): our copies would keep its sessions open.
fn drop_inherited(gpu_fd: i32, pager_fd: i32) {
    for fd in [gpu_fd, pager_fd] {
        if let Ok(owned) = take_endpoint(fd) {
            drop(owned);
        }
    }
    for v in [ENV_GPU_FD, ENV_PAGER_FD, ENV_BADGE, ENV_OWNER] {
        std::env::remove_var(v);
    }
}

/// Connects through the endpoints named by the environment, once, if
/// they are this process's ([`ENV_OWNER`]).
pub fn connect_from_env() -> Result<&'static Conn, SvmError> {
    if let Some(c) = CONN.get() {
        return conn().map(|_| c);
    }
    let gpu_fd = env_fd(ENV_GPU_FD)?;
    let pager_fd = env_fd(ENV_PAGER_FD)?;
    let me = std::process::id();
    let owner = std::env::var(ENV_OWNER)
        .ok()
        .and_then(|o| o.parse::<u32>().ok());
    if owner.is_some_and(|o| o != me) {
        drop_inherited(gpu_fd, pager_fd);
        return Err(SvmError::NotConnected);
    }
    let badge = std::env::var(ENV_BADGE)
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(0);
    let gpu = take_endpoint(gpu_fd)?;
    let pager = take_endpoint(pager_fd)?;
    std::env::set_var(ENV_OWNER, me.to_string());
    let seq = |fd: OwnedFd| -> Arc<dyn ipc_protocol::transport::Transport> {
        Arc::new(SeqPacket::from_fd(fd))
    };
    let c = Conn {
        badge,
        gpu: Client::new(seq(gpu)).with_timeout(CALL_TIMEOUT),
        pager: Client::new(seq(pager)).with_timeout(CALL_TIMEOUT),
    };
    let _ = CONN.set(c);
    MODE.store(Mode::Connected as u8, Ordering::Release);
    CONN.get().ok_or(SvmError::NotConnected)
}
