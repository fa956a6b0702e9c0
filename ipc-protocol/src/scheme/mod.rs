//! Endpoints as Redox schemes: the plain logic of the Redox runtime, built
//! and tested on the host (`tests/tests/ipc_scheme.rs` drives it with
//! hand-built request records and the golden frames).
//!
//! - an endpoint: on the host a `SOCK_SEQPACKET` socket pair made by init;
//!   here a path of the server's scheme, opened once by init ([`endpoints`]);
//! - its capability: minted for the socket; here declared for the path and
//!   bound to the handle;
//! - a frame: one datagram; here one scheme `call`, the reply frame back in
//!   the same buffer ([`call`]);
//! - descriptors: `SCM_RIGHTS` with the frame; here `sendfd` before the call
//!   and `recvfd` after it, keyed by the frame's request id;
//! - the peer gone: its socket closed; here the handle's last descriptor
//!   closed (`on_close`).
//!
//! `redox.rs` (built for `target_os = "redox"` only) is the thin server
//! adapter onto `redox-scheme`'s `SchemeSync` and its request loop;
//! `redox_client.rs` the client side, a `Transport` over one endpoint
//! handle. `scripts/check-redox.sh` type-checks both. See `docs/redox.md`.

pub mod call;
pub mod endpoints;
pub mod handoff;
pub mod launch;
pub mod record;

#[cfg(target_os = "redox")]
pub mod redox;
#[cfg(target_os = "redox")]
pub mod redox_client;
#[cfg(target_os = "redox")]
pub mod redox_launch;

pub use call::{on_call, Framing, CALL_FRAME_V1, FRAMES};
pub use endpoints::{Endpoint, Endpoints, Opener, Session};
pub use record::{Caller, Cqe, Errno, Request, Sqe};
