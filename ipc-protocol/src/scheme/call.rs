//! Our frames carried by the scheme `call`: the request frame, the same
//! bytes as on the host (`tests/golden/ipc-v1.txt`), in the call's payload
//! buffer; the reply frame written back into that buffer; the call's result
//! is the reply's length (0 for a notification).
//!
//! The client passes one [`MAX_FRAME`] buffer, so any reply fits and no
//! request runs whose answer could not be returned. Metadata word 0 says
//! what the payload is ([`CALL_FRAME_V1`]); word 1 is the request frame's
//! length. Everything else about the frame (magic, version, kinds, lengths,
//! handle counts, rights) is checked by the same `server::dispatch` the
//! host runtime uses, and answered with the same typed error frames.

use std::os::fd::OwnedFd;

use super::endpoints::{Endpoints, Session};
use super::record::Errno;
use crate::frame::Header;
use crate::transport::Received;
use crate::MAX_FRAME;

/// Metadata word 0 of a call that carries one of our frames: `"XSVM"` and
/// the wire format version.
pub const CALL_FRAME_V1: u64 = (u32::from_be_bytes(*b"XSVM") as u64) << 32 | 1;

/// A server's answer to one received frame (`server::dispatch` for the
/// session's interface): the reply frame and its descriptors, or `None`.
pub type Dispatch<'a> = dyn FnMut(&Session, Received) -> Option<(Vec<u8>, Vec<OwnedFd>)> + 'a;

/// A call whose frame was checked and whose descriptors were taken: what
/// runs without the `Endpoints` lock (the Redox adapter's workers).
#[derive(Debug)]
pub struct Started {
    pub session: Session,
    /// The frame's request id (the descriptors' token).
    pub token: u64,
    pub rx: Received,
}

/// First half of a `call` on handle `id`: checks the metadata and the
/// buffer and takes the frame and its descriptors. An `Ok` counts the call
/// in flight on the handle; [`finish_call`] counts it out.
pub fn start_call(
    endpoints: &mut Endpoints,
    id: u64,
    payload: &[u8],
    metadata: &[u64],
) -> Result<Started, Errno> {
    start_framed_call(endpoints, id, payload, metadata, &FRAMES)
}

/// [`start_call`] for a scheme whose calls carry `framing`'s records.
pub fn start_framed_call(
    endpoints: &mut Endpoints,
    id: u64,
    payload: &[u8],
    metadata: &[u64],
    framing: &Framing,
) -> Result<Started, Errno> {
    endpoints.session(id)?;
    if metadata.first() != Some(&framing.kind) {
        return Err(Errno::NotSupported);
    }
    let len = metadata
        .get(1)
        .and_then(|&l| usize::try_from(l).ok())
        .filter(|&l| l <= payload.len())
        .ok_or(Errno::Invalid)?;
    if payload.len() < MAX_FRAME {
        return Err(Errno::Invalid);
    }
    let bytes = payload[..len].to_vec();
    // Descriptors sent ahead for this frame (its request id).
    let token = (framing.token)(&bytes);
    let (session, handles) = endpoints.begin(id, token)?;
    let rx = Received {
        bytes,
        handles,
        truncated: false,
        handles_truncated: false,
    };
    Ok(Started { session, token, rx })
}

/// Second half: writes the reply into `payload`, keeps its descriptors for
/// `recvfd`, and ends the call. Returns the call's result and, when the
/// handle was closed during the call and this was its last one, the
/// session that ended (`Handler::disconnected` is due).
pub fn finish_call(
    endpoints: &mut Endpoints,
    id: u64,
    token: u64,
    payload: &mut [u8],
    reply: Option<(Vec<u8>, Vec<OwnedFd>)>,
) -> (Result<usize, Errno>, Option<Session>) {
    let result = match reply {
        None => Ok(0),
        Some((reply, fds)) => match payload.get_mut(..reply.len()) {
            None => Err(Errno::Invalid),
            Some(out) => {
                out.copy_from_slice(&reply);
                endpoints
                    .stage_outgoing(id, token, fds)
                    .map(|()| reply.len())
            }
        },
    };
    (result, endpoints.end(id))
}

/// Serves one `call` on handle `id`; the reply replaces the request in
/// `payload`. Returns the reply's length.
pub fn on_call(
    endpoints: &mut Endpoints,
    id: u64,
    payload: &mut [u8],
    metadata: &[u64],
    dispatch: &mut Dispatch<'_>,
) -> Result<usize, Errno> {
    let started = start_call(endpoints, id, payload, metadata)?;
    let reply = dispatch(&started.session, started.rx);
    // Nothing can close the handle between the halves here (one thread).
    finish_call(endpoints, id, started.token, payload, reply).0
}

/// How a client reads the calls it makes on one handle: what metadata
/// word 0 says the payload is, which tag its descriptors carry, and how
/// many descriptors a reply announces. Our frames are one framing; the
/// device's control records (`hw::control`) are another, carried by the
/// same client transport (`redox_client.rs`).
#[derive(Debug, Clone, Copy)]
pub struct Framing {
    /// Metadata word 0 of every call.
    pub kind: u64,
    /// The `sendfd`/`recvfd` tag of a request (0: untagged).
    pub token: fn(&[u8]) -> u64,
    /// How many descriptors a reply announces (at most [`MAX_HANDLES`]).
    pub reply_handles: fn(&[u8]) -> usize,
}

/// Our frames: tagged with the request id, replies count their handles.
pub const FRAMES: Framing = Framing {
    kind: CALL_FRAME_V1,
    token: Header::peek_request_id,
    reply_handles,
};

/// How many descriptors the client collects with `recvfd` after a reply:
/// the reply header's count, at most [`MAX_HANDLES`] (a reply that says
/// more is malformed, and `Frame::parse` says so once fewer arrived).
pub fn reply_handles(reply: &[u8]) -> usize {
    reply
        .get(11)
        .map_or(0, |&n| usize::from(n).min(crate::MAX_HANDLES))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::encode_raw;
    use crate::Kind;

    #[test]
    fn frames_are_tagged_with_their_request_id() {
        let request = encode_raw(3, 1, Kind::Request, 0, 0x1234, &[]);
        assert_eq!((FRAMES.token)(&request), 0x1234);
        assert_eq!(FRAMES.kind, CALL_FRAME_V1);
        let reply = encode_raw(3, 1, Kind::Reply, 1, 0x1234, &[]);
        assert_eq!((FRAMES.reply_handles)(&reply), 1);
    }

    #[test]
    fn the_reply_header_says_how_many_descriptors_to_collect() {
        let reply = encode_raw(3, 1, Kind::Reply, 2, 9, &[]);
        assert_eq!(reply_handles(&reply), 2);
        let mut hostile = reply.clone();
        hostile[11] = 200;
        assert_eq!(reply_handles(&hostile), crate::MAX_HANDLES);
        assert_eq!(reply_handles(&reply[..11]), 0, "a short reply has none");
    }
}
