//! The serve loop: receive, check, decode, authorise, dispatch, reply.
//!
//! A server core implements [`Handler`] and never sees bytes. Every frame
//! is checked in one place here; a malformed one is answered with its
//! [`ProtocolError`], a request the endpoint's capability does not allow
//! with `Denied`, and the loop keeps serving.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::frame::{encode_message, encode_raw, ErrorPayload, Header};
use crate::read_fence::ReadFence;
use crate::transport::{Received, Transport, TransportError};
use crate::{Capability, Control, Frame, Interface, Kind, Message, ProtocolError};

/// A server core's dispatch for interface `I`.
pub trait Handler<I: Interface>: Send + Sync + 'static {
    /// Handles one request from the endpoint holding `caller`. The reply
    /// must carry as many handles as the reply message declares.
    fn handle(
        &self,
        caller: &Capability,
        req: I::Request,
        handles: Vec<OwnedFd>,
    ) -> Result<(I::Reply, Vec<OwnedFd>), I::Error>;

    /// The endpoint's peer is gone (it exited or crashed): release what
    /// it held. Called once per endpoint, after its last request.
    fn disconnected(&self, _caller: &Capability) {}

    /// The process calling on this endpoint was restarted (its
    /// `Control::Restarted` arrived): what the old process held here is
    /// nobody's now. The endpoint stays open: the new process calls on it.
    /// By default the same release as a disconnection.
    fn peer_restarted(&self, caller: &Capability, generation: u32) {
        log::info!(
            "{}: {:?} restarted (generation {generation})",
            I::NAME,
            caller.badge
        );
        self.disconnected(caller);
    }
}

/// Tells the process at the other end of a served endpoint that this
/// server was restarted and is now `generation`: its calls still waiting
/// fail with `PeerRestarted` (idempotent ones are sent again).
pub fn announce_restart<I: Interface>(
    transport: &dyn Transport,
    generation: u32,
) -> Result<(), TransportError> {
    transport.send(&Control::Restarted { generation }.encode(I::ID), Vec::new())
}

/// [`announce_restart`] for a server started as `generation` by its
/// supervisor: nothing at 1 (its first start); a failure is logged, since
/// a caller that is gone needs no announcement.
pub fn announce_if_restarted<I: Interface>(transport: &dyn Transport, generation: u32) {
    if generation > 1 {
        if let Err(e) = announce_restart::<I>(transport, generation) {
            log::warn!("{}: announcing generation {generation}: {e}", I::NAME);
        }
    }
}

/// What to send back for one received frame (`None`: a notification).
pub fn dispatch<I: Interface, H: Handler<I> + ?Sized>(
    caller: &Capability,
    handler: &H,
    rx: Received,
) -> Option<(Vec<u8>, Vec<OwnedFd>)> {
    let id = Header::peek_request_id(&rx.bytes);
    let opcode = rx
        .bytes
        .get(8..10)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .unwrap_or(0);
    let fail = |e: ErrorPayload<I::Error>| {
        Some((
            encode_raw(I::ID, opcode, Kind::Error, 0, id, &e.encode()),
            Vec::new(),
        ))
    };
    if rx.truncated {
        return fail(ErrorPayload::Protocol(ProtocolError::Oversized));
    }
    if rx.handles_truncated {
        return fail(ErrorPayload::Protocol(ProtocolError::WrongHandleCount));
    }
    let frame = match Frame::parse(&rx.bytes, rx.handles.len()) {
        Ok(f) => f,
        Err(e) => return fail(ErrorPayload::Protocol(e)),
    };
    if frame.header.interface != I::ID {
        return fail(ErrorPayload::Protocol(ProtocolError::UnknownInterface));
    }
    let one_way = match frame.header.kind {
        Kind::Request => false,
        Kind::Notification => true,
        Kind::Control => {
            match Control::decode(&frame) {
                Ok(Control::Restarted { generation }) => handler.peer_restarted(caller, generation),
                Err(e) => log::warn!(
                    "{}: bad control frame from {:?}: {e:?}",
                    I::NAME,
                    caller.badge
                ),
            }
            return None;
        }
        _ => return fail(ErrorPayload::Protocol(ProtocolError::BadKind)),
    };
    let req = match I::Request::decode_payload(frame.header.opcode, frame.payload, rx.handles.len())
    {
        Ok(r) => r,
        Err(e) if one_way => {
            log::warn!(
                "{}: dropped a malformed notification from {:?}: {e:?}",
                I::NAME,
                caller.badge
            );
            return None;
        }
        Err(e) => return fail(ErrorPayload::Protocol(e)),
    };
    if request_is_one_way::<I>(&req) != one_way {
        return if one_way {
            None
        } else {
            fail(ErrorPayload::Protocol(ProtocolError::BadKind))
        };
    }
    let missing = caller.missing(required_rights::<I>(&req));
    if !missing.is_empty() {
        log::info!("{}: {:?} lacks {missing:?}", I::NAME, caller.badge);
        return if one_way {
            None
        } else {
            fail(ErrorPayload::Denied(missing))
        };
    }
    let result = handler.handle(caller, req, rx.handles);
    if one_way {
        if let Err(e) = result {
            log::warn!(
                "{}: notification from {:?} failed: {e:?}",
                I::NAME,
                caller.badge
            );
        }
        return None;
    }
    match result {
        Ok((reply, handles))
            if reply.opcode() == frame.header.opcode && reply.handle_count() == handles.len() =>
        {
            Some((encode_message(I::ID, Kind::Reply, id, &reply), handles))
        }
        Ok((reply, handles)) => {
            log::error!(
                "{}: handler answered opcode {} with {:?} and {} handles: a server bug",
                I::NAME,
                frame.header.opcode,
                reply,
                handles.len()
            );
            fail(ErrorPayload::Protocol(ProtocolError::WrongHandleCount))
        }
        Err(e) => fail(ErrorPayload::Server(e)),
    }
}

// The generated request enums expose these as inherent methods; a tiny
// trait would need every interface to implement it, so go through the
// message's own encoding instead: rights and one-wayness are looked up from
// the `Call` impls by opcode in the generated code.
fn required_rights<I: Interface>(req: &I::Request) -> crate::Rights {
    <I::Request as RequestInfo>::rights(req)
}

fn request_is_one_way<I: Interface>(req: &I::Request) -> bool {
    <I::Request as RequestInfo>::one_way(req)
}

/// Per-request facts the serve loop needs (implemented by `interface!`).
pub trait RequestInfo {
    fn rights(&self) -> crate::Rights;
    fn one_way(&self) -> bool;
}

/// Serves one endpoint until its peer disconnects.
pub fn serve<I: Interface, H: Handler<I> + ?Sized>(
    transport: &dyn Transport,
    caller: Capability,
    handler: &H,
) -> Result<(), TransportError> {
    serve_fenced::<I, H>(transport, caller, handler, None)
}

/// [`serve`], each request counted in `fence` from its read until its
/// reply is sent.
fn serve_fenced<I: Interface, H: Handler<I> + ?Sized>(
    transport: &dyn Transport,
    caller: Capability,
    handler: &H,
    fence: Option<&ReadFence>,
) -> Result<(), TransportError> {
    loop {
        let read = match fence {
            Some(f) => f.read(transport).map(|(rx, n)| (rx, Some(n))),
            None => transport.recv(None).map(|rx| (rx, None)),
        };
        let (rx, _in_flight) = match read {
            Ok(r) => r,
            Err(TransportError::Disconnected) => return Ok(()),
            Err(e) => return Err(e),
        };
        if let Some((frame, handles)) = dispatch::<I, H>(&caller, handler, rx) {
            match transport.send(&frame, handles) {
                Ok(()) => {}
                Err(TransportError::Disconnected) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}

/// Serves one endpoint on `threads` threads (frames are handed out whole,
/// so calls from one client run concurrently). Returns the threads.
pub fn spawn<I: Interface, H: Handler<I>>(
    name: &str,
    transport: Arc<dyn Transport>,
    caller: Capability,
    handler: Arc<H>,
    threads: usize,
) -> Vec<JoinHandle<()>> {
    spawn_fenced(name, transport, caller, handler, threads, None)
}

/// [`spawn`], counting every request in `fence` from its read
/// (`crate::read_fence`).
pub fn spawn_fenced<I: Interface, H: Handler<I>>(
    name: &str,
    transport: Arc<dyn Transport>,
    caller: Capability,
    handler: Arc<H>,
    threads: usize,
    fence: Option<Arc<ReadFence>>,
) -> Vec<JoinHandle<()>> {
    let threads = threads.max(1);
    // The last serving thread to leave reports the disconnection, so the
    // handler sees it once and after every request of the endpoint.
    let live = Arc::new(std::sync::atomic::AtomicUsize::new(threads));
    (0..threads)
        .map(|i| {
            let t = transport.clone();
            let h = handler.clone();
            let live = live.clone();
            let fence = fence.clone();
            let label = format!("{name}-{i}");
            std::thread::Builder::new()
                .name(label.clone())
                .spawn(move || {
                    if let Err(e) = serve_fenced::<I, H>(&*t, caller, &*h, fence.as_deref()) {
                        log::warn!("{label}: endpoint closed: {e}");
                    }
                    if live.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
                        h.disconnected(&caller);
                    }
                })
                .expect("spawning a server thread") // only fails when the host is out of threads at boot
        })
        .collect()
}
