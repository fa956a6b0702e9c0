//! Typed IPC for the xe-svm servers.
//!
//! Every interface of DESIGN.md section 5a is described once, in
//! [`interfaces`], with the [`interface!`] macro: its request and reply
//! messages, the rights each request needs, and its error enum. Encoding and
//! decoding of every message is generated from that one description by
//! [`wire_struct!`]; no server or client ever builds or parses bytes.
//!
//! # Wire format (version 1)
//! `docs/ipc.md` is the full reference, written so that another
//! implementation can be built from it alone; its second half is generated
//! from these descriptions through [`schema`]. In short: one message is one
//! frame (one `SOCK_SEQPACKET` datagram on the host). All integers are
//! little-endian. The 24-byte header:
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | magic, `b"XSVM"` |
//! | 4 | 2 | protocol version (1) |
//! | 6 | 2 | interface id |
//! | 8 | 2 | opcode (request/notification: the operation; reply and error: the request's) |
//! | 10 | 1 | kind: 1 request, 2 reply, 3 error, 4 notification, 5 control ([`Control`]) |
//! | 11 | 1 | number of passed handles (file descriptors), at most [`MAX_HANDLES`] |
//! | 12 | 4 | payload length in bytes, at most [`MAX_PAYLOAD`] |
//! | 16 | 8 | request id (chosen by the caller, echoed in the reply; 0 for notifications) |
//!
//! The payload follows: the message's fields in declaration order, each
//! encoded by its [`wire::Wire`] impl (integers little-endian, `bool` as one
//! byte 0/1, enums as their `u8`/`u16` code, bounded lists as a `u16` count
//! then the elements). An error frame's payload is a class byte (1 protocol,
//! 2 denied, 3 server) and a `u16` code, and for "denied" the `u32` rights
//! that were missing.
//!
//! A decoder never panics and never allocates more than the frame's declared
//! and bounded length; each malformed frame maps to one [`ProtocolError`].
//! The golden vectors in `tests/golden/` pin this format byte for byte.

#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_op_in_unsafe_fn)]

extern crate alloc;

#[macro_use]
mod macros;

pub mod error;
pub mod frame;
pub mod fuzzing;
pub mod interfaces;
pub mod rights;
pub mod schema;
pub mod types;
pub mod wire;

#[cfg(feature = "std")]
pub mod client;
#[cfg(feature = "std")]
pub mod keeper;
#[cfg(feature = "std")]
pub mod read_fence;
#[cfg(feature = "std")]
pub mod scheme;
#[cfg(feature = "std")]
pub mod server;
#[cfg(feature = "std")]
pub mod transport;

pub use error::{ErrorClass, ProtocolError, WireError};
pub use frame::{
    Control, Frame, Header, Kind, HEADER_LEN, MAGIC, MAX_FRAME, MAX_HANDLES, MAX_PAYLOAD, VERSION,
};
pub use rights::{Badge, Capability, Rights};
pub use wire::{Call, Interface, Message, Reader, Wire, Writer};
