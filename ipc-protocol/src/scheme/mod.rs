//! Endpoints as Redox schemes: the plain logic of the Redox runtime, built
//! and tested on the host (`tests/tests/ipc_scheme.rs` drives it with
//! hand-built request records and the golden frames).
//!
//! | host (today) | Redox |
//! | --- | --- |
//! | a `SOCK_SEQPACKET` socket pair made by init | a path of the server's scheme, opened once by init ([`endpoints`]) |
//! | the capability minted for the socket | the capability declared for the path, bound to the handle |
//! | one datagram per frame | one scheme `call`: frame in, reply frame back in the same buffer ([`call`]) |
//! | descriptors by `SCM_RIGHTS` with the frame | `sendfd` before the call, `recvfd` after it, keyed by request id |
//! | the peer closed its socket | the handle's last descriptor closed (`on_close`) |
//!
//! `redox.rs` (built for `target_os = "redox"` only) is the thin adapter
//! onto `redox-scheme`'s `SchemeSync` and its request loop. See
//! `docs/redox.md`.

pub mod call;
pub mod endpoints;
pub mod record;

#[cfg(target_os = "redox")]
pub mod redox;

pub use call::{on_call, CALL_FRAME_V1};
pub use endpoints::{Endpoint, Endpoints, Opener, Session};
pub use record::{Caller, Cqe, Errno, Request, Sqe};
