//! The Redox adapter, client side: a [`Transport`] over one endpoint
//! handle (a descriptor of `/scheme/<server>/<endpoint>`), so that
//! `client::Client` and every typed stub work unchanged. Built only for
//! `target_os = "redox"`; the frame layout of a call is [`super::call`]'s.
//!
//! A scheme `call` blocks its thread until the server answers, and the
//! kernel has no timeout for it. So the calls run on one thread per handle
//! ([`caller`]): `send` queues the frame and returns, `recv` waits for a
//! reply with the caller's deadline. A server that never answers costs that
//! thread, never the caller: later sends fail at once when the bounded
//! queue is full (`TimedOut`), and the `Client`'s own deadline applies to
//! every call. One thread per handle also serialises the calls that carry
//! descriptors, which a kernel that drops the `sendfd`/`recvfd` tag needs
//! (`endpoints.rs`, token 0). The payload is our frames by default; a
//! [`Framing`] makes it another record format (the device's control
//! records, `hw::control`).
//!
//! **Locking rule:** `Inbox` is a leaf lock, never held across a syscall.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use syscall::error::{Error, EBADF, ECONNRESET, EMSGSIZE, ENODEV, EPIPE};
use syscall::flag::CallFlags;

use super::call::{Framing, FRAMES};
use crate::transport::{Received, Transport, TransportError};
use crate::{MAX_FRAME, MAX_HANDLES};

/// Frames queued behind the call in progress before `send` refuses.
const QUEUE: usize = 64;

type Job = (Vec<u8>, Vec<OwnedFd>);

#[derive(Default)]
struct Inbox {
    replies: VecDeque<Received>,
    /// The handle failed: every later `recv` says why.
    dead: Option<TransportError>,
}

type Mailbox = Arc<(Mutex<Inbox>, Condvar)>;

/// One endpoint handle, as a transport.
pub struct SchemeTransport {
    jobs: SyncSender<Job>,
    inbox: Mailbox,
}

fn transport_error(e: Error) -> TransportError {
    match e.errno {
        EPIPE | ECONNRESET | ENODEV | EBADF => TransportError::Disconnected,
        n => TransportError::Host(n),
    }
}

impl SchemeTransport {
    /// Opens endpoint `path` (only the launcher may; docs/redox.md).
    pub fn open(path: &str) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        Self::from_fd(OwnedFd::from(file))
    }

    /// Wraps a handle this process was given (inherited, or `recvfd`).
    pub fn from_fd(fd: OwnedFd) -> std::io::Result<Self> {
        Self::framed(fd, FRAMES)
    }

    /// Wraps a handle whose calls carry `framing`'s records.
    pub fn framed(fd: OwnedFd, framing: Framing) -> std::io::Result<Self> {
        let (jobs, rx) = sync_channel(QUEUE);
        let inbox: Mailbox = Arc::default();
        let mailbox = inbox.clone();
        std::thread::Builder::new()
            .name(format!("scheme-call-{}", fd.as_raw_fd()))
            .spawn(move || caller(fd, framing, rx, mailbox))?;
        Ok(Self { jobs, inbox })
    }
}

/// The thread that makes the calls of one handle.
fn caller(fd: OwnedFd, framing: Framing, jobs: Receiver<Job>, inbox: Mailbox) {
    for (frame, handles) in jobs {
        let result = call_once(&fd, framing, &frame, handles);
        let (lock, arrived) = &*inbox;
        let mut inbox = lock.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(Some(rx)) => inbox.replies.push_back(rx),
            Ok(None) => continue,
            Err(e) => inbox.dead = Some(e),
        }
        arrived.notify_all();
        if inbox.dead.is_some() {
            return;
        }
    }
}

/// `sendfd` of a frame's descriptors, the `call`, and `recvfd` of the
/// reply's. `None`: a notification (no reply).
fn call_once(
    fd: &OwnedFd,
    framing: Framing,
    frame: &[u8],
    handles: Vec<OwnedFd>,
) -> Result<Option<Received>, TransportError> {
    let raw = fd.as_raw_fd() as usize;
    let token = (framing.token)(frame);
    if !handles.is_empty() {
        let fds: Vec<usize> = handles.iter().map(|h| h.as_raw_fd() as usize).collect();
        let bytes: Vec<u8> = fds.iter().flat_map(|f| f.to_ne_bytes()).collect();
        syscall::call_wo(raw, &bytes, CallFlags::FD, &[token]).map_err(transport_error)?;
        // The kernel moved them out of our table: not ours to close.
        for h in handles {
            let _moved = h.into_raw_fd();
        }
    }
    let mut buf = vec![0u8; MAX_FRAME];
    buf[..frame.len()].copy_from_slice(frame);
    let meta = [framing.kind, frame.len() as u64];
    let n = syscall::call_rw(raw, &mut buf, CallFlags::empty(), &meta).map_err(transport_error)?;
    if n == 0 {
        return Ok(None);
    }
    buf.truncate(n.min(MAX_FRAME));
    let count = (framing.reply_handles)(&buf).min(MAX_HANDLES);
    let mut received = Vec::new();
    if count > 0 {
        let mut slots = [0usize; MAX_HANDLES];
        let bytes: &mut [u8] = bytemuck_slots(&mut slots[..count]);
        let got = syscall::call_ro(raw, bytes, CallFlags::FD, &[token]).map_err(transport_error)?;
        received = slots[..got.min(count)]
            .iter()
            // SAFETY: the kernel just added these descriptors to our
            // table; nothing else in this process knows their numbers.
            .map(|&f| unsafe { OwnedFd::from_raw_fd(f as i32) })
            .collect();
    }
    Ok(Some(Received {
        bytes: buf,
        handles: received,
        truncated: false,
        handles_truncated: false,
    }))
}

/// The descriptor slots as the byte buffer `SYS_CALL` fills.
fn bytemuck_slots(slots: &mut [usize]) -> &mut [u8] {
    let len = std::mem::size_of_val(slots);
    // SAFETY: `usize` has no invalid bit patterns and no padding; the
    // byte view covers exactly the slots and borrows them mutably.
    unsafe { std::slice::from_raw_parts_mut(slots.as_mut_ptr().cast::<u8>(), len) }
}

impl Transport for SchemeTransport {
    fn send(&self, frame: &[u8], handles: Vec<OwnedFd>) -> Result<(), TransportError> {
        if frame.len() > MAX_FRAME || handles.len() > MAX_HANDLES {
            return Err(TransportError::Host(EMSGSIZE));
        }
        match self.jobs.try_send((frame.to_vec(), handles)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(TransportError::TimedOut),
            Err(TrySendError::Disconnected(_)) => Err(TransportError::Disconnected),
        }
    }

    fn recv(&self, timeout: Option<Duration>) -> Result<Received, TransportError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let (lock, arrived) = &*self.inbox;
        let mut inbox = lock.lock().map_err(|_| TransportError::Disconnected)?;
        loop {
            if let Some(rx) = inbox.replies.pop_front() {
                return Ok(rx);
            }
            if let Some(e) = inbox.dead {
                return Err(e);
            }
            inbox = match deadline {
                None => arrived
                    .wait(inbox)
                    .map_err(|_| TransportError::Disconnected)?,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(TransportError::TimedOut);
                    }
                    let waited = arrived.wait_timeout(inbox, left);
                    waited.map_err(|_| TransportError::Disconnected)?.0
                }
            };
        }
    }
}
