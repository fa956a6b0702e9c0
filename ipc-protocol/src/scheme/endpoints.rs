//! A server's scheme: the endpoints it declared at boot, the handles opened
//! on them, and the descriptors in flight on each handle.
//!
//! Identity. On the host an endpoint is one end of a socket pair that init
//! made, and the server knows the capability it minted for it. Here an
//! endpoint is a path of the server's scheme (`/scheme/xe-svm/gpu.100`),
//! declared with its capability when the server starts. Only the launcher
//! may open it ([`Opener`]: the process whose id the server was given, or
//! root for a server `pcid-spawner` starts), and only once: the launcher
//! opens every endpoint at boot, before any client runs, so a later open is
//! refused. The handle it gets is the capability; it hands it to the client
//! the way it hands a socket today (inherited at spawn, or `sendfd`). A
//! call's capability is
//! the handle's, whoever holds the handle now: the caller id the kernel
//! gives is used for the open check and for logs, never a payload field.
//!
//! Descriptors. A frame may carry up to [`MAX_HANDLES`] descriptors. On the
//! host they ride with the datagram (`SCM_RIGHTS`); here the client moves
//! them first with `sendfd` on the same handle, tagged with the frame's
//! request id, and the `call` that follows with that request id takes them.
//! Descriptors a reply carries wait on the handle until the client asks for
//! them with `recvfd`, tagged with the same request id. Both waits are
//! bounded per handle. Token 0 is "untagged": a kernel that does not pass
//! `sendfd`'s argument or `recvfd`'s metadata through `SYS_CALL` delivers
//! 0, and then descriptors go with the next call on the handle and a reply's
//! are collected oldest first (the client serialises such calls per handle).
//!
//! Calls in flight. The Redox adapter runs calls on worker threads, so a
//! handle may be closed while calls on it still run. **Locking rule:** the
//! adapter holds the `Endpoints` lock only inside these methods, never
//! across a dispatch; [`Endpoints::begin`] counts a call in and
//! [`Endpoints::end`] out, and a close that meets calls in flight is
//! reported by the `end` of the last one, so `Handler::disconnected` runs
//! once, after the handle's last request (as on the host).

use std::os::fd::OwnedFd;

use super::record::{Caller, Errno};
use crate::{Capability, MAX_HANDLES};

/// Handles a server keeps open at once (endpoints are declared, so this is
/// the declarations' bound too).
pub const MAX_ENDPOINTS: usize = 256;
/// Frames per handle whose descriptors may wait (sent before their call, or
/// produced by a reply and not yet received).
pub const MAX_PENDING: usize = 4;

/// One endpoint a server offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Its path inside the scheme, like `gpu.100`.
    pub path: String,
    /// The interface it serves (`Interface::ID`).
    pub interface: u16,
    pub capability: Capability,
}

#[derive(Debug)]
struct Pending {
    token: u64,
    fds: Vec<OwnedFd>,
}

#[derive(Debug)]
struct Open {
    endpoint: usize,
    /// Descriptors moved in with `sendfd`, waiting for their call.
    incoming: Vec<Pending>,
    /// Descriptors of replies, waiting for `recvfd`.
    outgoing: Vec<Pending>,
    /// Calls on this handle being dispatched now.
    busy: usize,
    /// The last descriptor was closed while calls were in flight: the
    /// handle takes no new call and is released by the last one's end.
    closing: bool,
}

/// What a handle id names: the endpoint's interface and capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub interface: u16,
    pub capability: Capability,
}

/// Who may open (mint) endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opener {
    /// The launcher's process id (a server the launcher started).
    Process(u64),
    /// Any root process (a driver `pcid-spawner` started, which cannot
    /// know the launcher's id); first open wins, at boot.
    Root,
}

impl Opener {
    fn allows(&self, caller: Caller) -> bool {
        match *self {
            Self::Process(pid) => caller.pid == pid,
            Self::Root => caller.uid == 0,
        }
    }
}

#[derive(Debug)]
pub struct Endpoints {
    declared: Vec<Endpoint>,
    /// Declared endpoints already opened (each is opened once).
    opened: Vec<bool>,
    /// Indexed by handle id.
    handles: Vec<Option<Open>>,
    opener: Opener,
}

impl Endpoints {
    /// The scheme of a server with these endpoints, opened by `opener`.
    /// More than [`MAX_ENDPOINTS`], or two of one path, is a boot
    /// configuration error.
    pub fn new(declared: Vec<Endpoint>, opener: Opener) -> Result<Self, Errno> {
        let mut paths: Vec<&str> = declared.iter().map(|e| e.path.as_str()).collect();
        paths.sort_unstable();
        if declared.len() > MAX_ENDPOINTS || paths.windows(2).any(|w| w[0] == w[1]) {
            return Err(Errno::Invalid);
        }
        Ok(Self {
            opened: vec![false; declared.len()],
            declared,
            handles: Vec::new(),
            opener,
        })
    }

    /// `openat` on the scheme: mints the handle of endpoint `path`.
    pub fn open(&mut self, path: &str, caller: Caller) -> Result<u64, Errno> {
        let endpoint = self
            .declared
            .iter()
            .position(|e| e.path == path)
            .ok_or(Errno::NoEntry)?;
        if !self.opener.allows(caller) {
            return Err(Errno::Access);
        }
        if self.opened[endpoint] {
            return Err(Errno::Exists);
        }
        let open = Open {
            endpoint,
            incoming: Vec::new(),
            outgoing: Vec::new(),
            busy: 0,
            closing: false,
        };
        let id = match self.handles.iter().position(Option::is_none) {
            Some(free) => free,
            None if self.handles.len() < MAX_ENDPOINTS => {
                self.handles.push(None);
                self.handles.len() - 1
            }
            None => return Err(Errno::TooManyHandles),
        };
        self.handles[id] = Some(open);
        self.opened[endpoint] = true;
        Ok(id as u64)
    }

    fn get(&mut self, id: u64) -> Result<&mut Open, Errno> {
        let i = usize::try_from(id).map_err(|_| Errno::BadHandle)?;
        self.handles
            .get_mut(i)
            .and_then(Option::as_mut)
            .filter(|o| !o.closing)
            .ok_or(Errno::BadHandle)
    }

    fn session_of(&self, endpoint: usize) -> Session {
        let e = &self.declared[endpoint];
        Session {
            interface: e.interface,
            capability: e.capability,
        }
    }

    /// The session a handle id names.
    pub fn session(&mut self, id: u64) -> Result<Session, Errno> {
        let endpoint = self.get(id)?.endpoint;
        Ok(self.session_of(endpoint))
    }

    /// A call on handle `id` starts: its session, and the descriptors sent
    /// for request id `token`. Every `Ok` must be matched by one
    /// [`Endpoints::end`].
    pub fn begin(&mut self, id: u64, token: u64) -> Result<(Session, Vec<OwnedFd>), Errno> {
        let open = self.get(id)?;
        let busy = open.busy.checked_add(1).ok_or(Errno::Again)?;
        let fds = take(&mut open.incoming, token).unwrap_or_default();
        open.busy = busy;
        let endpoint = open.endpoint;
        Ok((self.session_of(endpoint), fds))
    }

    /// A call on handle `id` is done. If the handle was closed meanwhile
    /// and this was its last call, the handle is released and its session
    /// returned: the server now releases what the client held.
    pub fn end(&mut self, id: u64) -> Option<Session> {
        let i = usize::try_from(id).ok()?;
        let open = self.handles.get_mut(i)?.as_mut()?;
        open.busy = open.busy.saturating_sub(1);
        if !open.closing || open.busy > 0 {
            return None;
        }
        let endpoint = open.endpoint;
        self.handles[i] = None;
        Some(self.session_of(endpoint))
    }

    /// `sendfd`: keeps `fds` for the call whose request id is `token`.
    pub fn send_fds(&mut self, id: u64, token: u64, fds: Vec<OwnedFd>) -> Result<usize, Errno> {
        let open = self.get(id)?;
        if fds.is_empty() || fds.len() > MAX_HANDLES {
            return Err(Errno::MessageSize);
        }
        if open.incoming.iter().any(|p| p.token == token) {
            return Err(Errno::Exists);
        }
        if open.incoming.len() == MAX_PENDING {
            return Err(Errno::TooManyHandles);
        }
        let n = fds.len();
        open.incoming.push(Pending { token, fds });
        Ok(n)
    }

    /// The descriptors sent for the call with request id `token` (none if
    /// none were sent).
    pub fn take_incoming(&mut self, id: u64, token: u64) -> Result<Vec<OwnedFd>, Errno> {
        let open = self.get(id)?;
        Ok(take(&mut open.incoming, token).unwrap_or_default())
    }

    /// Keeps a reply's descriptors for `recvfd`.
    pub fn stage_outgoing(&mut self, id: u64, token: u64, fds: Vec<OwnedFd>) -> Result<(), Errno> {
        let open = self.get(id)?;
        if fds.is_empty() {
            return Ok(());
        }
        if open.outgoing.len() == MAX_PENDING {
            // The client never collects: drop the oldest, not the server.
            open.outgoing.remove(0);
        }
        open.outgoing.retain(|p| p.token != token);
        open.outgoing.push(Pending { token, fds });
        Ok(())
    }

    /// `recvfd`: the reply's descriptors, exactly `num_fds` of them.
    pub fn receive_fds(
        &mut self,
        id: u64,
        token: u64,
        num_fds: u64,
    ) -> Result<Vec<OwnedFd>, Errno> {
        let open = self.get(id)?;
        let at = match token {
            // Untagged: the oldest reply's.
            0 if !open.outgoing.is_empty() => 0,
            _ => open
                .outgoing
                .iter()
                .position(|p| p.token == token)
                .ok_or(Errno::Again)?,
        };
        if open.outgoing[at].fds.len() as u64 != num_fds {
            return Err(Errno::Invalid);
        }
        Ok(open.outgoing.remove(at).fds)
    }

    /// The last descriptor of handle `id` is closed: its descriptors in
    /// flight are dropped and its session returned, so the server can
    /// release what the client held (`Handler::disconnected`). The endpoint
    /// is not opened again: its client is gone for good.
    /// If calls on it are in flight, their descriptors are dropped now and
    /// the session is returned by the last one's [`Endpoints::end`].
    pub fn close(&mut self, id: u64) -> Option<Session> {
        let i = usize::try_from(id).ok()?;
        let open = self.handles.get_mut(i)?.as_mut().filter(|o| !o.closing)?;
        if open.busy > 0 {
            open.closing = true;
            open.incoming.clear();
            open.outgoing.clear();
            return None;
        }
        let endpoint = open.endpoint;
        self.handles[i] = None;
        Some(self.session_of(endpoint))
    }
}

/// The descriptors sent for `token`; failing that, untagged ones (token 0,
/// from a kernel that does not pass `sendfd`'s argument).
fn take(list: &mut Vec<Pending>, token: u64) -> Option<Vec<OwnedFd>> {
    let at = list
        .iter()
        .position(|p| p.token == token)
        .or_else(|| list.iter().position(|p| p.token == 0))?;
    Some(list.remove(at).fds)
}
