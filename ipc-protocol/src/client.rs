//! Client stubs: a typed call per request message. A client never builds
//! bytes: `client.call(CreateObject { size_bytes })` returns the typed
//! reply or a typed error. Many threads may call through one client;
//! replies are matched to calls by request id (one thread at a time reads
//! the transport and hands each reply to its caller).

use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::frame::{encode_message, encode_raw, ErrorPayload, Header};
use crate::transport::{Received, Transport, TransportError};
use crate::{Call, Control, Frame, Interface, Kind, Message, ProtocolError, Rights};

/// Why a call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallError<E> {
    /// The server (or this client, for the reply) refused a malformed frame.
    Protocol(ProtocolError),
    /// The endpoint's badge lacks these rights.
    Denied(Rights),
    /// The server's own typed error.
    Server(E),
    /// The link failed: the peer died, or the call timed out.
    Transport(TransportError),
    /// A well-formed reply that does not answer this call.
    UnexpectedReply,
}

impl<E: std::fmt::Debug> std::fmt::Display for CallError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Protocol(e) => write!(f, "protocol error: {e:?}"),
            Self::Denied(r) => write!(f, "denied: missing rights {r:?}"),
            Self::Server(e) => write!(f, "server error: {e:?}"),
            Self::Transport(e) => write!(f, "transport: {e}"),
            Self::UnexpectedReply => write!(f, "unexpected reply"),
        }
    }
}

impl<E: std::fmt::Debug> std::error::Error for CallError<E> {}

#[derive(Default)]
struct Pending {
    /// Calls waiting for a reply.
    waiting: HashSet<u64>,
    replies: HashMap<u64, Received>,
    /// Calls that were waiting when the server announced a restart: their
    /// request may have died with the old process (the new generation).
    restarted: HashMap<u64, u32>,
    /// The server's generation as last announced (0: never announced).
    generation: u32,
    /// Calls whose caller stopped waiting (their deadline passed), at most
    /// [`MAX_GIVEN_UP`]: a reply that comes later is noted, not dropped.
    given_up: HashSet<u64>,
    /// Calls given up on that were answered after all (the server did
    /// what they asked), until [`Client::take_answered_late`].
    answered_late: Vec<u64>,
    /// A thread is inside `transport.recv`.
    reading: bool,
    dead: Option<TransportError>,
}

/// A typed client of interface `I` over one endpoint.
pub struct Client<I: Interface> {
    transport: Arc<dyn Transport>,
    next_id: AtomicU64,
    pending: Mutex<Pending>,
    arrived: Condvar,
    timeout: Option<Duration>,
    _interface: PhantomData<fn() -> I>,
}

impl<I: Interface> Client<I> {
    pub fn new(transport: Arc<dyn Transport>) -> Self {
        Self {
            transport,
            next_id: AtomicU64::new(1),
            pending: Mutex::new(Pending::default()),
            arrived: Condvar::new(),
            timeout: None,
            _interface: PhantomData,
        }
    }

    /// Every call fails with `Transport(TimedOut)` after `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    /// Calls `req` and returns its typed reply.
    pub fn call<C: Call<Interface = I> + Clone>(
        &self,
        req: C,
    ) -> Result<C::Reply, CallError<I::Error>> {
        self.call_with_handles(req, Vec::new())
            .map(|(reply, _)| reply)
    }

    /// Calls `req` passing `handles`, returning the reply and its handles.
    ///
    /// When the server restarts before answering, the call fails with
    /// `Transport(PeerRestarted)`, unless the call is idempotent and passes
    /// no handles: then it is sent again, a few times at most.
    pub fn call_with_handles<C: Call<Interface = I> + Clone>(
        &self,
        req: C,
        handles: Vec<OwnedFd>,
    ) -> Result<(C::Reply, Vec<OwnedFd>), CallError<I::Error>> {
        if !(C::IDEMPOTENT && C::HANDLES_IN == 0) {
            return self.call_once(req, handles);
        }
        let mut tries = 0;
        loop {
            match self.call_once(req.clone(), Vec::new()) {
                Err(CallError::Transport(TransportError::PeerRestarted(g)))
                    if tries < RESTART_RETRIES =>
                {
                    log::info!(
                        "{}: {} retried after a restart (generation {g})",
                        I::NAME,
                        C::NAME
                    );
                    tries += 1;
                }
                r => return r,
            }
        }
    }

    /// The server's generation as it last announced it (0: never).
    pub fn generation(&self) -> u32 {
        lock(&self.pending).generation
    }

    /// Tells the server at the other end that this process was restarted
    /// and is now `generation` (a server restarted by `init` announces it
    /// on the endpoints it calls): the server drops what the old process
    /// left in its session.
    pub fn announce_restart(&self, generation: u32) -> Result<(), TransportError> {
        self.transport
            .send(&Control::Restarted { generation }.encode(I::ID), Vec::new())
    }

    /// Calls `req` (no handles, no resend after a restart) and returns its
    /// request id with the result: a caller that must know whether a call
    /// past its deadline was carried out after all looks for the id in
    /// [`Self::take_answered_late`].
    pub fn call_with_id<C: Call<Interface = I>>(
        &self,
        req: C,
    ) -> (u64, Result<C::Reply, CallError<I::Error>>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        (id, self.call_once_as(id, req, Vec::new()).map(|(r, _)| r))
    }

    /// Ids of calls that timed out and were answered since the last time
    /// this was asked (their replies are otherwise dropped).
    pub fn take_answered_late(&self) -> Vec<u64> {
        std::mem::take(&mut lock(&self.pending).answered_late)
    }

    fn call_once<C: Call<Interface = I>>(
        &self,
        req: C,
        handles: Vec<OwnedFd>,
    ) -> Result<(C::Reply, Vec<OwnedFd>), CallError<I::Error>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.call_once_as(id, req, handles)
    }

    fn call_once_as<C: Call<Interface = I>>(
        &self,
        id: u64,
        req: C,
        handles: Vec<OwnedFd>,
    ) -> Result<(C::Reply, Vec<OwnedFd>), CallError<I::Error>> {
        if handles.len() != C::HANDLES_IN {
            return Err(CallError::Protocol(ProtocolError::WrongHandleCount));
        }
        if C::ONE_WAY {
            self.send_notification(req, handles)?;
            return Err(CallError::UnexpectedReply);
        }
        let request: I::Request = req.into();
        let frame = encode_message(I::ID, Kind::Request, id, &request);
        let received = self
            .exchange(id, &frame, handles)
            .map_err(CallError::Transport)?;
        let (reply, handles) = decode_reply::<I>(id, received)?;
        let reply = C::reply_from(reply).ok_or(CallError::UnexpectedReply)?;
        if handles.len() != C::HANDLES_OUT {
            return Err(CallError::Protocol(ProtocolError::WrongHandleCount));
        }
        Ok((reply, handles))
    }

    /// Sends a one-way notification.
    pub fn notify<C: Call<Interface = I>>(&self, req: C) -> Result<(), CallError<I::Error>> {
        if !C::ONE_WAY {
            return Err(CallError::UnexpectedReply);
        }
        self.send_notification(req, Vec::new())
    }

    fn send_notification<C: Call<Interface = I>>(
        &self,
        req: C,
        handles: Vec<OwnedFd>,
    ) -> Result<(), CallError<I::Error>> {
        let request: I::Request = req.into();
        let frame = encode_message(I::ID, Kind::Notification, 0, &request);
        self.transport
            .send(&frame, handles)
            .map_err(CallError::Transport)
    }

    /// Sends raw bytes as a request with id `id` and returns the raw answer:
    /// for conformance tests that must send malformed frames.
    pub fn call_raw(
        &self,
        id: u64,
        frame: &[u8],
        handles: Vec<OwnedFd>,
    ) -> Result<Received, TransportError> {
        self.exchange(id, frame, handles)
    }

    /// A fresh request id for [`Self::call_raw`].
    pub fn next_request_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn exchange(
        &self,
        id: u64,
        frame: &[u8],
        handles: Vec<OwnedFd>,
    ) -> Result<Received, TransportError> {
        lock(&self.pending).waiting.insert(id);
        if let Err(e) = self.transport.send(frame, handles) {
            lock(&self.pending).waiting.remove(&id);
            return Err(e);
        }
        self.wait_reply(id)
    }

    fn wait_reply(&self, id: u64) -> Result<Received, TransportError> {
        let deadline = self.timeout.map(|t| Instant::now() + t);
        let mut p = lock(&self.pending);
        loop {
            if let Some(r) = p.replies.remove(&id) {
                p.waiting.remove(&id);
                return Ok(r);
            }
            if let Some(g) = p.restarted.remove(&id) {
                p.waiting.remove(&id);
                return Err(TransportError::PeerRestarted(g));
            }
            if let Some(e) = p.dead {
                p.waiting.remove(&id);
                return Err(e);
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                p.waiting.remove(&id);
                if p.given_up.len() < MAX_GIVEN_UP {
                    p.given_up.insert(id);
                }
                return Err(TransportError::TimedOut);
            }
            if !p.reading {
                // Become the reader for everyone.
                p.reading = true;
                drop(p);
                let res = self.transport.recv(left);
                let queued = match &res {
                    Ok(r) if is_control(r) => self.queued_announcements(),
                    _ => Vec::new(),
                };
                p = lock(&self.pending);
                p.reading = false;
                match res {
                    Ok(r) => {
                        for r in std::iter::once(r).chain(queued) {
                            self.take(&mut p, r);
                        }
                    }
                    Err(TransportError::TimedOut) => {}
                    Err(e) => p.dead = Some(e),
                }
                self.arrived.notify_all();
            } else {
                p = match left {
                    None => self.arrived.wait(p).unwrap_or_else(|e| e.into_inner()),
                    Some(t) => {
                        self.arrived
                            .wait_timeout(p, t)
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                    }
                };
            }
        }
    }
}

/// Times an idempotent call is sent again after its server restarted.
pub const RESTART_RETRIES: u32 = 3;

/// Calls given up on whose late answers are noted; past this many, a
/// later one's answer is dropped like any stray reply.
const MAX_GIVEN_UP: usize = 1024;

fn is_control(r: &Received) -> bool {
    r.bytes.get(10) == Some(&(Kind::Control as u8))
}

/// How long the reader looks for more frames queued behind an
/// announcement.
const QUEUED: Duration = Duration::from_millis(1);

impl<I: Interface> Client<I> {
    /// The frames queued right behind an announcement, up to the first
    /// that is not one. A client that called nothing while its server was
    /// restarted several times finds all their announcements waiting: taken
    /// together, they fail a waiting call once, not once each (an
    /// idempotent call would run out of retries on stale news).
    fn queued_announcements(&self) -> Vec<Received> {
        let mut more = Vec::new();
        while let Ok(r) = self.transport.recv(Some(QUEUED)) {
            let last = !is_control(&r);
            more.push(r);
            if last {
                break;
            }
        }
        more
    }

    /// One received frame: a control frame, or the reply of a call.
    fn take(&self, p: &mut Pending, r: Received) {
        if is_control(&r) {
            return self.on_control(p, &r);
        }
        let rid = Header::peek_request_id(&r.bytes);
        if p.waiting.contains(&rid) {
            p.replies.insert(rid, r);
        } else if p.given_up.remove(&rid) {
            log::info!("{}: call {rid} was answered after its deadline", I::NAME);
            p.answered_late.push(rid);
        } else {
            log::warn!(
                "{}: dropping a reply for no pending call (id {rid})",
                I::NAME
            );
        }
    }

    /// A control frame from the server: a restart fails every call still
    /// waiting (its request may have died with the old process).
    fn on_control(&self, p: &mut Pending, r: &Received) {
        let control = Frame::parse(&r.bytes, r.handles.len()).and_then(|f| {
            // News about another interface's endpoint is not about this one.
            if f.header.interface != I::ID {
                return Err(ProtocolError::UnknownInterface);
            }
            Control::decode(&f)
        });
        match control {
            Ok(Control::Restarted { generation }) => {
                log::info!(
                    "{}: the server restarted (generation {generation})",
                    I::NAME
                );
                p.generation = generation;
                let waiting: Vec<u64> = p.waiting.iter().copied().collect();
                for id in waiting.into_iter().filter(|id| !p.replies.contains_key(id)) {
                    p.restarted.insert(id, generation);
                }
            }
            Err(e) => log::warn!("{}: dropping a malformed control frame: {e:?}", I::NAME),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking caller cannot leave `Pending` inconsistent: every update
    // is a single insert or remove.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Checks and decodes the answer to call `id`.
pub fn decode_reply<I: Interface>(
    id: u64,
    r: Received,
) -> Result<(I::Reply, Vec<OwnedFd>), CallError<I::Error>> {
    if r.truncated {
        return Err(CallError::Protocol(ProtocolError::Oversized));
    }
    let frame = Frame::parse(&r.bytes, r.handles.len()).map_err(CallError::Protocol)?;
    if frame.header.interface != I::ID {
        return Err(CallError::Protocol(ProtocolError::UnknownInterface));
    }
    if frame.header.request_id != id {
        return Err(CallError::UnexpectedReply);
    }
    match frame.header.kind {
        Kind::Reply => {
            let reply =
                I::Reply::decode_payload(frame.header.opcode, frame.payload, r.handles.len())
                    .map_err(CallError::Protocol)?;
            Ok((reply, r.handles))
        }
        Kind::Error => Err(
            match ErrorPayload::<I::Error>::decode(frame.payload).map_err(CallError::Protocol)? {
                ErrorPayload::Protocol(e) => CallError::Protocol(e),
                ErrorPayload::Denied(r) => CallError::Denied(r),
                ErrorPayload::Server(e) => CallError::Server(e),
            },
        ),
        _ => Err(CallError::Protocol(ProtocolError::BadKind)),
    }
}

/// Decodes an error frame's payload (for raw conformance checks).
pub fn decode_error<I: Interface>(r: &Received) -> Option<ErrorPayload<I::Error>> {
    let frame = Frame::parse(&r.bytes, r.handles.len()).ok()?;
    (frame.header.kind == Kind::Error)
        .then(|| ErrorPayload::decode(frame.payload).ok())
        .flatten()
}

pub use crate::frame::ErrorPayload as RawError;

#[doc(hidden)]
pub fn encode_raw_frame(
    interface: u16,
    opcode: u16,
    kind: Kind,
    handles: u8,
    id: u64,
    payload: &[u8],
) -> Vec<u8> {
    encode_raw(interface, opcode, kind, handles, id, payload)
}
