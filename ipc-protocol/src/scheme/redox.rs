//! The Redox adapter, server side: `redox-scheme` 0.12's `SchemeSync` over
//! [`Endpoints`], and its request loop with worker threads for calls.
//! Built only for `target_os = "redox"` (`scripts/check-redox.sh`
//! type-checks it; everything it calls is tested on the host). Kept to
//! forwarding: no decision is made in this file.
//!
//! One loop reads one scheme's requests. Opens, `sendfd`, `recvfd` and
//! closes are answered on the loop's thread; each `call` (one of our
//! frames) goes to one of `workers` threads, which answers it when its
//! dispatch returns, so a call that waits (a `Pressure` reservation, a GPU
//! fault waiting on the pager) does not stop the others, as the host's
//! several threads per endpoint do. The queue to the workers is bounded:
//! when it is full the loop stops reading, and the kernel holds the
//! callers.
//!
//! **Locking rule:** the `Endpoints` mutex is a leaf, held only inside
//! one `Endpoints` method call (or `start_call`/`finish_call`), never
//! across a dispatch, a syscall or a channel send.

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex, MutexGuard};

use redox_scheme::scheme::{register_sync_scheme, Op, OpCall, SchemeState, SchemeSync};
use redox_scheme::{
    CallerCtx, OpenResult, RecvFdRequest, RequestKind, Response, SendFdRequest, SignalBehavior,
    Socket,
};
use syscall::error::{Error, Result, EOPNOTSUPP};
use syscall::flag::{FmoveFdFlags, FobtainFdFlags};
use syscall::schemev2::NewFdFlags;

use super::call::{finish_call, start_framed_call, Framing, FRAMES};
use super::endpoints::{Endpoints, Session};
use super::handoff::{on_handoff, Handoff, CALL_HANDOFF_V1};
use super::record::{Caller, Errno};
use crate::transport::Received;
use crate::MAX_HANDLES;

/// The id of the scheme's root, from which endpoints are opened (never an
/// endpoint handle: those count up from 0).
const ROOT: usize = usize::MAX;

/// Calls queued for the workers, per worker, before the loop stops reading.
const QUEUE_PER_WORKER: usize = 4;

/// A server's answer to one frame (`server::dispatch` for the session's
/// interface), callable from every worker at once.
pub type SharedDispatch =
    dyn Fn(&Session, Received) -> Option<(Vec<u8>, Vec<OwnedFd>)> + Send + Sync;

/// Called once per closed handle, after its last call
/// (`Handler::disconnected`).
pub type Closed = dyn Fn(&Session) + Send + Sync;

/// What a server does with its side of the scheme.
#[derive(Clone)]
pub struct Callbacks {
    pub dispatch: Arc<SharedDispatch>,
    pub closed: Arc<Closed>,
    /// Receives the endpoints the launcher hands over (`handoff.rs`); an
    /// error (a role this server does not call) is the launcher's answer.
    pub handoff: Arc<dyn Fn(Handoff) -> std::result::Result<(), Errno> + Send + Sync>,
}

/// One scheme a server registers.
pub struct SchemeConfig {
    /// Its name: `/scheme/<name>/<endpoint path>`.
    pub name: String,
    pub endpoints: Endpoints,
    /// Threads that run calls (at least 1).
    pub workers: usize,
}

struct Shared {
    socket: Socket,
    endpoints: Mutex<Endpoints>,
    on: Callbacks,
    framing: Framing,
}

impl Shared {
    /// A poisoned lock means a worker panicked inside an `Endpoints`
    /// method; the table itself is still consistent (each method is one
    /// step), so serving goes on.
    fn endpoints(&self) -> MutexGuard<'_, Endpoints> {
        self.endpoints
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The `SchemeSync` side answered on the loop's thread.
struct Front<'a> {
    shared: &'a Shared,
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

impl SchemeSync for Front<'_> {
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
        let id = self.shared.endpoints().open(path, caller(ctx));
        Ok(OpenResult::ThisScheme {
            number: id.map_err(errno)? as usize,
            flags: NewFdFlags::empty(),
        })
    }

    /// Calls are the workers'; one reaching here was not ours to take
    /// (several handles at once).
    fn call(&mut self, _: usize, _: &mut [u8], _: &[u64], _: &CallerCtx) -> Result<usize> {
        Err(errno(Errno::NotSupported))
    }

    fn on_sendfd(&mut self, req: &SendFdRequest) -> Result<usize> {
        let n = req.num_fds();
        if n == 0 || n > MAX_HANDLES {
            return Err(errno(Errno::MessageSize));
        }
        let mut raw = [usize::MAX; MAX_HANDLES];
        let socket = &self.shared.socket;
        req.obtain_fd(socket, FobtainFdFlags::empty(), &mut raw[..n])?;
        let fds = raw[..n]
            .iter()
            // SAFETY: the kernel just put these descriptors in our table;
            // nothing else in this process knows their numbers.
            .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd as i32) })
            .collect();
        let sent = self
            .shared
            .endpoints()
            .send_fds(req.id() as u64, req.arg(), fds);
        sent.map_err(errno)
    }

    fn on_recvfd(&mut self, req: &RecvFdRequest) -> Result<OpenResult> {
        // A kernel that passes no metadata gives none: untagged (0).
        let token = req.metadata().first().copied().unwrap_or(0);
        let (id, n) = (req.id() as u64, req.num_fds() as u64);
        let fds = self.shared.endpoints().receive_fds(id, token, n);
        let raw: Vec<usize> = fds
            .map_err(errno)?
            .into_iter()
            .map(|fd| fd.into_raw_fd() as usize)
            .collect();
        // Always moved as a batch: the kernel answers a `Recvfd` completed
        // with one plain descriptor (`OtherScheme`) with EIO.
        req.move_fd(&self.shared.socket, FmoveFdFlags::empty(), &raw)?;
        Ok(OpenResult::OtherSchemeMultiple { num_fds: raw.len() })
    }

    fn on_close(&mut self, id: usize) {
        let closed = self.shared.endpoints().close(id as u64);
        if let Some(session) = closed {
            (self.shared.on.closed)(&session);
        }
    }
}

/// Runs one call: start under the lock, dispatch without it, finish under
/// it, answer.
fn run_call(shared: &Shared, mut op: OpCall) {
    let id = op.fd() as u64;
    let (payload, metadata) = op.payload_and_metadata();
    if metadata.first() == Some(&CALL_HANDOFF_V1) {
        let handoff = on_handoff(&mut shared.endpoints(), id, metadata);
        let result = handoff.and_then(|h| (shared.on.handoff)(h)).map(|()| 0);
        return answer(shared, op, result.map_err(errno));
    }
    let started = start_framed_call(
        &mut shared.endpoints(),
        id,
        payload,
        metadata,
        &shared.framing,
    );
    let (result, closed) = match started {
        Err(e) => (Err(e), None),
        Ok(s) => {
            let reply = (shared.on.dispatch)(&s.session, s.rx);
            finish_call(&mut shared.endpoints(), id, s.token, payload, reply)
        }
    };
    if let Some(session) = closed {
        (shared.on.closed)(&session);
    }
    answer(shared, op, result.map_err(errno));
}

fn answer(shared: &Shared, op: OpCall, result: Result<usize>) {
    let id = op.fd();
    let response = Response::new(result, op);
    if let Err(e) = shared
        .socket
        .write_response(response, SignalBehavior::Restart)
    {
        log::error!("scheme: answering a call on handle {id}: {e}");
    }
}

fn worker(shared: Arc<Shared>, jobs: Arc<Mutex<Receiver<OpCall>>>) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        match job {
            Ok(op) => run_call(&shared, op),
            // The loop ended: the scheme is gone.
            Err(_) => return,
        }
    }
}

/// Tells Redox init that this daemon is ready (`notify` in an init
/// script): one zero byte on the `INIT_NOTIFY` descriptor, as
/// `redox-daemon`'s `Daemon::ready` writes. Without the variable (started
/// by hand) there is nobody to tell.
pub fn notify_ready() -> std::io::Result<()> {
    use std::io::Write;
    let Ok(var) = std::env::var("INIT_NOTIFY") else {
        return Ok(());
    };
    let fd: i32 = var
        .parse()
        .map_err(|_| std::io::Error::other(format!("INIT_NOTIFY={var:?} is not a descriptor")))?;
    // SAFETY: init passed this descriptor for exactly this write; it is
    // ours and used once.
    let mut pipe = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    pipe.write_all(&[0])
}

/// A registered scheme, not yet served.
pub struct Registered {
    shared: Arc<Shared>,
    workers: usize,
}

/// Registers scheme `cfg.name`: after this, `/scheme/<name>/...` opens
/// reach [`Registered::serve`] (they wait in the kernel until it runs).
pub fn register(cfg: SchemeConfig, on: Callbacks) -> Result<Registered> {
    register_framed(cfg, on, FRAMES)
}

/// [`register`] for a scheme whose calls carry `framing`'s records (the
/// device model's control records, `hw::control`) instead of our frames.
pub fn register_framed(cfg: SchemeConfig, on: Callbacks, framing: Framing) -> Result<Registered> {
    let shared = Arc::new(Shared {
        socket: Socket::create()?,
        endpoints: Mutex::new(cfg.endpoints),
        on,
        framing,
    });
    let mut front = Front { shared: &shared };
    register_sync_scheme(&shared.socket, &cfg.name, &mut front)?;
    Ok(Registered {
        shared,
        workers: cfg.workers.max(1),
    })
}

impl Registered {
    /// Serves until the kernel closes the scheme.
    pub fn serve(self) -> Result<()> {
        let (tx, rx) = sync_channel::<OpCall>(self.workers * QUEUE_PER_WORKER);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..self.workers {
            let (shared, rx) = (self.shared.clone(), rx.clone());
            std::thread::Builder::new()
                .name(format!("scheme-worker-{i}"))
                .spawn(move || worker(shared, rx))
                .map_err(|_| Error::new(syscall::error::EAGAIN))?;
        }
        let shared = &*self.shared;
        let mut state = SchemeState::new();
        while let Some(request) = shared.socket.next_request(SignalBehavior::Restart)? {
            let response = match request.kind() {
                RequestKind::Call(call) => {
                    let ctx = call.caller();
                    match call.op() {
                        Ok(Op::Call(op)) if op.fds().len() == 1 => {
                            if tx.send(op).is_err() {
                                return Err(Error::new(syscall::error::EPIPE));
                            }
                            continue;
                        }
                        Ok(op) => op.handle_sync(ctx, &mut Front { shared }, &mut state),
                        Err(call) => Response::new(Err(Error::new(EOPNOTSUPP)), call),
                    }
                }
                RequestKind::SendFd(req) => {
                    let result = Front { shared }.on_sendfd(&req);
                    Response::new(result, req)
                }
                RequestKind::RecvFd(req) => {
                    let result = Front { shared }.on_recvfd(&req);
                    Response::open_dup_like(result, req)
                }
                RequestKind::OnClose { id } => {
                    Front { shared }.on_close(id);
                    continue;
                }
                // A call being cancelled completes anyway (its worker
                // answers it); lazy-mapping upcalls (MmapMsg) are what the
                // pager needs from the kernel (docs/redox.md section 5):
                // nothing sends them yet.
                _ => continue,
            };
            shared
                .socket
                .write_response(response, SignalBehavior::Restart)?;
        }
        Ok(())
    }
}
