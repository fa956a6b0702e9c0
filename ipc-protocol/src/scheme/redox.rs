//! The Redox adapter: `redox-scheme` 0.12's `SchemeSync` over
//! [`Endpoints`] and [`on_call`], and its request loop. Built only for
//! `target_os = "redox"` (this machine has no Redox target library, so it
//! is not compiled here; everything it calls is, and is tested on the
//! host). Kept to forwarding: no decision is made in this file.
//!
//! One loop serves one scheme on one thread. A server that serves two
//! directions on separate threads on the host (rule 9: xe-svm's `Gpu` and
//! `GpuNotify`) registers one scheme per direction (`xe-svm.gpu`,
//! `xe-svm.notify`), each with its own loop and thread.

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};

use redox_scheme::scheme::{register_sync_scheme, SchemeState, SchemeSync};
use redox_scheme::{
    CallerCtx, OpenResult, RecvFdRequest, RequestKind, Response, SendFdRequest, SignalBehavior,
    Socket,
};
use syscall::error::{Error, Result};
use syscall::flag::{FmoveFdFlags, FobtainFdFlags};
use syscall::schemev2::NewFdFlags;

use super::call::{on_call, Dispatch};
use super::endpoints::{Endpoints, Session};
use super::record::{Caller, Errno};
use crate::MAX_HANDLES;

/// The id of the scheme's root, from which endpoints are opened (never an
/// endpoint handle: those count up from 0).
const ROOT: usize = usize::MAX;

pub struct SchemeServer<'a> {
    socket: &'a Socket,
    endpoints: Endpoints,
    dispatch: Box<Dispatch<'a>>,
    /// Called once per closed handle (`Handler::disconnected`).
    closed: Box<dyn FnMut(&Session) + 'a>,
}

fn caller(ctx: &CallerCtx) -> Caller {
    Caller {
        pid: ctx.pid as u64,
        uid: ctx.uid,
        gid: ctx.gid,
    }
}

fn errno(e: Errno) -> Error {
    Error::new(e as i32)
}

impl SchemeSync for SchemeServer<'_> {
    fn scheme_root(&mut self) -> Result<usize> {
        Ok(ROOT)
    }

    fn openat(
        &mut self,
        fd: usize,
        path: &str,
        _flags: usize,
        _fcntl_flags: u32,
        ctx: &CallerCtx,
    ) -> Result<OpenResult> {
        if fd != ROOT {
            return Err(errno(Errno::NotSupported));
        }
        let id = self.endpoints.open(path, caller(ctx)).map_err(errno)?;
        Ok(OpenResult::ThisScheme {
            number: id as usize,
            flags: NewFdFlags::empty(),
        })
    }

    fn call(
        &mut self,
        id: usize,
        payload: &mut [u8],
        metadata: &[u64],
        _ctx: &CallerCtx,
    ) -> Result<usize> {
        on_call(
            &mut self.endpoints,
            id as u64,
            payload,
            metadata,
            &mut *self.dispatch,
        )
        .map_err(errno)
    }

    fn on_sendfd(&mut self, req: &SendFdRequest) -> Result<usize> {
        let n = req.num_fds();
        if n == 0 || n > MAX_HANDLES {
            return Err(errno(Errno::MessageSize));
        }
        let mut raw = [usize::MAX; MAX_HANDLES];
        req.obtain_fd(self.socket, FobtainFdFlags::EXCLUSIVE, &mut raw[..n])?;
        let fds = raw[..n]
            .iter()
            // SAFETY: the kernel just put these descriptors in our table,
            // exclusively (no other reference to them exists).
            .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd as i32) })
            .collect();
        self.endpoints
            .send_fds(req.id() as u64, req.arg(), fds)
            .map_err(errno)
    }

    fn on_recvfd(&mut self, req: &RecvFdRequest) -> Result<OpenResult> {
        let token = req.metadata()[0];
        let fds = self
            .endpoints
            .receive_fds(req.id() as u64, token, req.num_fds() as u64)
            .map_err(errno)?;
        let raw: Vec<usize> = fds
            .into_iter()
            .map(|fd| fd.into_raw_fd() as usize)
            .collect();
        if let [fd] = raw[..] {
            return Ok(OpenResult::OtherScheme { fd });
        }
        req.move_fd(self.socket, FmoveFdFlags::EXCLUSIVE, &raw)?;
        Ok(OpenResult::OtherSchemeMultiple { num_fds: raw.len() })
    }

    fn on_close(&mut self, id: usize) {
        if let Some(session) = self.endpoints.close(id as u64) {
            (self.closed)(&session);
        }
    }
}

/// Registers scheme `name` and serves it until the kernel closes it.
pub fn serve(
    name: &str,
    endpoints: Endpoints,
    dispatch: Box<Dispatch<'_>>,
    closed: Box<dyn FnMut(&Session) + '_>,
) -> Result<()> {
    let socket = Socket::create()?;
    let mut server = SchemeServer {
        socket: &socket,
        endpoints,
        dispatch,
        closed,
    };
    let mut state = SchemeState::new();
    register_sync_scheme(&socket, name, &mut server)?;
    loop {
        let Some(request) = socket.next_request(SignalBehavior::Restart)? else {
            return Ok(());
        };
        let response = match request.kind() {
            RequestKind::Call(call) => call.handle_sync(&mut server, &mut state),
            RequestKind::SendFd(req) => {
                let result = server.on_sendfd(&req);
                Response::new(result, req)
            }
            RequestKind::RecvFd(req) => {
                let result = server.on_recvfd(&req);
                Response::open_dup_like(result, req)
            }
            RequestKind::OnClose { id } => {
                server.on_close(id);
                continue;
            }
            // Lazy-mapping upcalls (MmapMsg) are what the pager needs from
            // the kernel (docs/redox.md); nothing sends them yet.
            _ => continue,
        };
        socket.write_response(response, SignalBehavior::Restart)?;
    }
}
