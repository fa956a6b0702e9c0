//! The frame header and whole-frame encode/decode (see the crate docs for
//! the layout).

use alloc::vec::Vec;

use crate::schema::{ControlDesc, Field, Int, Struct, Type};
use crate::{ErrorClass, Message, ProtocolError, Reader, Rights, Wire, WireError, Writer};

pub const MAGIC: [u8; 4] = *b"XSVM";
pub const VERSION: u16 = 1;
pub const HEADER_LEN: usize = 24;
/// Largest frame, header included. One page: a message that needs more
/// (a bulk copy) passes a memfd instead.
pub const MAX_FRAME: usize = 4096;
pub const MAX_PAYLOAD: usize = MAX_FRAME - HEADER_LEN;
/// Most handles one frame may carry.
pub const MAX_HANDLES: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Request = 1,
    Reply = 2,
    Error = 3,
    Notification = 4,
    /// About the link itself, not a message of its interface: see [`Control`].
    Control = 5,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Request,
            2 => Self::Reply,
            3 => Self::Error,
            4 => Self::Notification,
            5 => Self::Control,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u16,
    pub interface: u16,
    pub opcode: u16,
    pub kind: Kind,
    pub handles: u8,
    pub payload_len: u32,
    pub request_id: u64,
}

impl Header {
    pub fn encode(&self, w: &mut Writer) {
        w.put(&MAGIC);
        self.version.encode(w);
        self.interface.encode(w);
        self.opcode.encode(w);
        (self.kind as u8).encode(w);
        self.handles.encode(w);
        self.payload_len.encode(w);
        self.request_id.encode(w);
    }

    /// The request id of a frame whose header may be otherwise invalid, so
    /// that an error reply can still be matched to its call.
    pub fn peek_request_id(bytes: &[u8]) -> u64 {
        bytes
            .get(16..24)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            .unwrap_or(0)
    }
}

/// A checked frame: header plus a payload slice of exactly the declared length.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub header: Header,
    pub payload: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Checks a received frame in a fixed order, so every malformed class
    /// maps to one error: size, magic, version, kind, lengths, handles.
    pub fn parse(bytes: &'a [u8], handles_received: usize) -> Result<Self, ProtocolError> {
        if bytes.len() > MAX_FRAME {
            return Err(ProtocolError::Oversized);
        }
        if bytes.len() < HEADER_LEN {
            return Err(ProtocolError::Truncated);
        }
        let mut r = Reader::new(&bytes[..HEADER_LEN]);
        if r.take_array::<4>()? != MAGIC {
            return Err(ProtocolError::BadMagic);
        }
        let version = u16::decode(&mut r)?;
        if version != VERSION {
            return Err(ProtocolError::UnknownVersion);
        }
        let interface = u16::decode(&mut r)?;
        let opcode = u16::decode(&mut r)?;
        let kind = Kind::from_u8(u8::decode(&mut r)?).ok_or(ProtocolError::BadKind)?;
        let handles = u8::decode(&mut r)?;
        let payload_len = u32::decode(&mut r)?;
        let request_id = u64::decode(&mut r)?;
        if payload_len as usize > MAX_PAYLOAD {
            return Err(ProtocolError::Oversized);
        }
        let body = &bytes[HEADER_LEN..];
        if body.len() < payload_len as usize {
            return Err(ProtocolError::Truncated);
        }
        if body.len() > payload_len as usize {
            return Err(ProtocolError::TrailingBytes);
        }
        if handles as usize > MAX_HANDLES || handles as usize != handles_received {
            return Err(ProtocolError::WrongHandleCount);
        }
        let header = Header {
            version,
            interface,
            opcode,
            kind,
            handles,
            payload_len,
            request_id,
        };
        Ok(Self {
            header,
            payload: body,
        })
    }
}

/// A control frame (kind 5): news about the endpoint rather than a message
/// of its interface. Its opcode says which; request id 0, no handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Opcode 1, payload `generation: u32`. The process at the other end of
    /// this endpoint was restarted and is now generation `generation`
    /// (1 at first boot). Whatever it was doing for this endpoint is gone:
    /// a call waiting for its reply fails with `PeerRestarted` (an
    /// idempotent one may be sent again); a server drops the session of
    /// the restarted client, as if it had disconnected.
    Restarted { generation: u32 },
}

impl Control {
    pub const RESTARTED: u16 = 1;

    /// Every control message as data, for `docs/ipc.md` (the encoding
    /// below is hand-written; the test at the end of this file checks the
    /// two agree).
    pub fn schema() -> Vec<ControlDesc> {
        alloc::vec![ControlDesc {
            opcode: Self::RESTARTED,
            message: Struct {
                name: "Restarted",
                doc: &[
                    " The process at the other end of this endpoint was restarted: it is a",
                    " new process, generation `generation`, and whatever the old one was",
                    " doing for this endpoint is gone.",
                ],
                fields: alloc::vec![Field {
                    name: "generation",
                    doc: &[
                        " How many times it has been started: 1 at first boot (never announced)."
                    ],
                    ty: Type::Int(Int::U32),
                }],
            },
        }]
    }

    /// The whole frame, on an endpoint of interface `interface`.
    pub fn encode(&self, interface: u16) -> Vec<u8> {
        match *self {
            Self::Restarted { generation } => {
                let mut w = Writer::new();
                generation.encode(&mut w);
                encode_raw(
                    interface,
                    Self::RESTARTED,
                    Kind::Control,
                    0,
                    0,
                    &w.into_bytes(),
                )
            }
        }
    }

    /// The control message of a checked frame of kind [`Kind::Control`].
    pub fn decode(frame: &Frame<'_>) -> Result<Self, ProtocolError> {
        if frame.header.kind != Kind::Control || frame.header.handles != 0 {
            return Err(ProtocolError::BadKind);
        }
        let mut r = Reader::new(frame.payload);
        let c = match frame.header.opcode {
            Self::RESTARTED => Self::Restarted {
                generation: u32::decode(&mut r)?,
            },
            _ => return Err(ProtocolError::UnknownOpcode),
        };
        if r.remaining() != 0 {
            return Err(ProtocolError::TrailingBytes);
        }
        Ok(c)
    }
}

/// Encodes a whole frame for message `msg` of interface `interface`.
pub fn encode_message<M: Message>(interface: u16, kind: Kind, request_id: u64, msg: &M) -> Vec<u8> {
    let mut payload = Writer::new();
    msg.encode_payload(&mut payload);
    encode_raw(
        interface,
        msg.opcode(),
        kind,
        msg.handle_count() as u8,
        request_id,
        &payload.into_bytes(),
    )
}

/// Encodes a frame around an already-encoded payload.
pub fn encode_raw(
    interface: u16,
    opcode: u16,
    kind: Kind,
    handles: u8,
    request_id: u64,
    payload: &[u8],
) -> Vec<u8> {
    let header = Header {
        version: VERSION,
        interface,
        opcode,
        kind,
        handles,
        payload_len: payload.len() as u32,
        request_id,
    };
    let mut w = Writer::with_bytes(Vec::with_capacity(HEADER_LEN + payload.len()));
    header.encode(&mut w);
    w.put(payload);
    w.into_bytes()
}

/// The error carried by an error frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorPayload<E> {
    Protocol(ProtocolError),
    /// The caller's badge lacks these rights.
    Denied(Rights),
    Server(E),
}

impl<E: WireError> ErrorPayload<E> {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match *self {
            Self::Protocol(e) => {
                (ErrorClass::Protocol as u8).encode(&mut w);
                e.code().encode(&mut w);
            }
            Self::Denied(missing) => {
                (ErrorClass::Denied as u8).encode(&mut w);
                0u16.encode(&mut w);
                missing.bits().encode(&mut w);
            }
            Self::Server(e) => {
                (ErrorClass::Server as u8).encode(&mut w);
                e.code().encode(&mut w);
            }
        }
        w.into_bytes()
    }

    pub fn decode(payload: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(payload);
        let class = u8::decode(&mut r)?;
        let code = u16::decode(&mut r)?;
        let out = match class {
            1 => Self::Protocol(
                ProtocolError::from_code(code).ok_or(ProtocolError::FieldOutOfRange)?,
            ),
            2 => Self::Denied(
                Rights::from_bits(u32::decode(&mut r)?).ok_or(ProtocolError::FieldOutOfRange)?,
            ),
            3 => Self::Server(E::from_code(code).ok_or(ProtocolError::FieldOutOfRange)?),
            _ => return Err(ProtocolError::FieldOutOfRange),
        };
        r.finish()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_schema_describes_what_control_encodes() {
        let descs = Control::schema();
        let restarted = Control::Restarted {
            generation: 0x0a0b_0c0d,
        };
        let frame = restarted.encode(3);
        let f = Frame::parse(&frame, 0).unwrap();
        let d = descs.iter().find(|d| d.opcode == f.header.opcode).unwrap();
        assert_eq!(d.message.name, "Restarted");
        let sizes: Vec<usize> = d
            .message
            .fields
            .iter()
            .map(|f| match f.ty {
                Type::Int(i) => i.size(),
                _ => panic!("a control field that is not an integer"),
            })
            .collect();
        assert_eq!(sizes, [4]);
        assert_eq!(f.payload, 0x0a0b_0c0du32.to_le_bytes());
        assert_eq!(
            (
                f.header.kind,
                f.header.handles,
                f.header.request_id,
                f.header.interface
            ),
            (Kind::Control, 0, 0, 3)
        );
    }
}
