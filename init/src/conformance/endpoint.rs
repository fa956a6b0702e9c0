//! One endpoint to the implementation under test, spoken to in raw frames
//! (the suite must send frames our own client stubs never would), and the
//! strict check of every frame that comes back: our decoder must accept
//! it, and it must answer the call it claims to answer.

use std::cell::RefCell;
use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use ipc_protocol::client::RawError;
use ipc_protocol::frame::encode_message;
use ipc_protocol::transport::{Received, SeqPacket, Transport, TransportError};
use ipc_protocol::{Call, Frame, Header, Interface, Kind, Message, Writer};

/// Most handles the suite sends with one frame.
pub const MAX_SENT_HANDLES: usize = 8;

/// A connected endpoint and the deadline of every exchange on it.
pub struct RawEndpoint {
    link: SeqPacket,
    timeout: Duration,
    /// Calls given up on (a restart failed them): their late answers are
    /// dropped on arrival, as a caller does (ipc.md, "Checking an answer").
    given_up: RefCell<HashSet<u64>>,
}

impl RawEndpoint {
    pub fn new(fd: OwnedFd, timeout: Duration) -> Self {
        Self {
            link: SeqPacket::from_fd(fd),
            timeout,
            given_up: RefCell::new(HashSet::new()),
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Gives up on call `id`: an answer to it that arrives later is dropped.
    pub fn give_up(&self, id: u64) {
        self.given_up.borrow_mut().insert(id);
    }

    /// The next frame within `wait` that is not a late answer to a call
    /// given up on.
    fn next_frame(&self, wait: Duration) -> Result<Received, TransportError> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let rx = self.link.recv(Some(left))?;
            let answer = matches!(rx.bytes.get(10), Some(2 | 3));
            let id = Header::peek_request_id(&rx.bytes);
            if !(answer && self.given_up.borrow_mut().remove(&id)) {
                return Ok(rx);
            }
            log::info!("svm conformance: dropped a late answer to call {id:#x}");
        }
    }

    /// Sends one frame with `handles` (up to [`MAX_SENT_HANDLES`]: more than
    /// a frame may carry, which our own transport refuses to send).
    pub fn send(&self, frame: &[u8], handles: Vec<OwnedFd>) -> Result<(), TransportError> {
        use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
        use std::os::fd::{AsFd, BorrowedFd};
        let borrowed: Vec<BorrowedFd<'_>> = handles.iter().map(|h| h.as_fd()).collect();
        let mut space =
            [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SENT_HANDLES))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !borrowed.is_empty() && !control.push(SendAncillaryMessage::ScmRights(&borrowed)) {
            return Err(TransportError::Host(
                rustix::io::Errno::TOOMANYREFS.raw_os_error(),
            ));
        }
        let iov = [std::io::IoSlice::new(frame)];
        loop {
            match sendmsg(self.link.fd(), &iov, &mut control, SendFlags::NOSIGNAL) {
                Ok(_) => return Ok(()),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The next frame, within the deadline.
    pub fn recv(&self) -> Result<Received, TransportError> {
        self.next_frame(self.timeout)
    }

    /// Whether a frame arrives within `wait` (for "no answer" checks).
    pub fn quiet_for(&self, wait: Duration) -> Result<(), String> {
        match self.next_frame(wait) {
            Err(TransportError::TimedOut) => Ok(()),
            Err(TransportError::Disconnected) => Err("the endpoint closed".into()),
            Err(e) => Err(format!("transport: {e}")),
            Ok(rx) => Err(format!("an unexpected frame: {}", hex(&rx.bytes))),
        }
    }

    pub fn exchange(&self, frame: &[u8], handles: Vec<OwnedFd>) -> Answer {
        if let Err(e) = self.send(frame, handles) {
            return Answer::from_transport(e);
        }
        match self.recv() {
            Ok(rx) => Answer::Frame(rx),
            Err(e) => Answer::from_transport(e),
        }
    }

    /// Calls `req` and decodes the answer strictly: the reply, or why not.
    pub fn call<C: Call>(&self, req: C, handles: Vec<OwnedFd>) -> CallResult<C> {
        let id = next_id();
        let request: <C::Interface as Interface>::Request = req.into();
        let frame = encode_message(C::Interface::ID, Kind::Request, id, &request);
        match self
            .exchange(&frame, handles)
            .check::<C::Interface>(id, C::OPCODE)
        {
            Checked::Reply(reply, handles) => {
                let reply = C::reply_from(reply)
                    .ok_or_else(|| Failure::Other("a reply for another call".into()))?;
                Ok((reply, handles))
            }
            Checked::Error(RawError::Server(e)) => Err(Failure::Server(e)),
            Checked::Error(e) => Err(Failure::Other(format!("error frame {e:?}"))),
            Checked::Closed => Err(Failure::Other("the endpoint closed".into())),
            Checked::Bad(why) => Err(Failure::Other(why)),
        }
    }
}

/// A typed call's reply and its handles, or why there is none.
pub type CallResult<C> = Result<
    (<C as Call>::Reply, Vec<OwnedFd>),
    Failure<<<C as Call>::Interface as Interface>::Error>,
>;

/// Why a typed call did not return its reply.
#[derive(Debug)]
pub enum Failure<E> {
    /// The implementation's own typed error.
    Server(E),
    /// Anything else, described.
    Other(String),
}

impl<E: std::fmt::Debug> std::fmt::Display for Failure<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Server(e) => write!(f, "server error {e:?}"),
            Self::Other(s) => f.write_str(s),
        }
    }
}

/// Request ids of the suite's own calls: distinct from the golden id.
fn next_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A fresh request id.
pub fn fresh_id() -> u64 {
    next_id()
}

/// What came back for one sent frame.
pub enum Answer {
    Frame(Received),
    Closed,
    /// Nothing within the deadline, or a host error, described.
    Silent(String),
}

/// An answer checked against the call it must answer.
pub enum Checked<I: Interface> {
    Reply(I::Reply, Vec<OwnedFd>),
    Error(RawError<I::Error>),
    Closed,
    /// No answer, or a frame our decoder refuses or that answers another
    /// call: described.
    Bad(String),
}

impl Answer {
    fn from_transport(e: TransportError) -> Self {
        match e {
            TransportError::Disconnected => Self::Closed,
            TransportError::TimedOut => Self::Silent("no answer within the deadline".into()),
            e => Self::Silent(format!("transport: {e}")),
        }
    }

    /// Checks the answer to a frame with request id `id` and opcode
    /// `opcode` on an endpoint of `I` (ipc.md, "Answers").
    pub fn check<I: Interface>(self, id: u64, opcode: u16) -> Checked<I> {
        let rx = match self {
            Self::Frame(rx) => rx,
            Self::Closed => return Checked::Closed,
            Self::Silent(why) => return Checked::Bad(why),
        };
        match check_frame::<I>(rx, id, opcode) {
            Ok(c) => c,
            Err(why) => Checked::Bad(why),
        }
    }
}

fn check_frame<I: Interface>(rx: Received, id: u64, opcode: u16) -> Result<Checked<I>, String> {
    if rx.truncated {
        return Err("an answer longer than a frame may be".into());
    }
    let frame = Frame::parse(&rx.bytes, rx.handles.len())
        .map_err(|e| format!("our decoder refuses the answer ({e:?}): {}", hex(&rx.bytes)))?;
    let h = frame.header;
    if h.interface != I::ID {
        return Err(format!(
            "answered as interface {}, not {}",
            h.interface,
            I::ID
        ));
    }
    if h.request_id != id {
        return Err(format!(
            "answered request id {:#x}, not {id:#x}",
            h.request_id
        ));
    }
    if h.opcode != opcode {
        return Err(format!("answered opcode {}, not {opcode}", h.opcode));
    }
    match h.kind {
        Kind::Reply => {
            let reply = I::Reply::decode_payload(h.opcode, frame.payload, rx.handles.len())
                .map_err(|e| format!("our decoder refuses the reply ({e:?})"))?;
            let mut w = Writer::new();
            reply.encode_payload(&mut w);
            if w.into_bytes() != frame.payload {
                return Err("the reply is not in canonical form".into());
            }
            Ok(Checked::Reply(reply, rx.handles))
        }
        Kind::Error if rx.handles.is_empty() => RawError::<I::Error>::decode(frame.payload)
            .map(Checked::Error)
            .map_err(|e| format!("our decoder refuses the error frame ({e:?})")),
        Kind::Error => Err("an error frame with handles".into()),
        k => Err(format!("answered with a frame of kind {k:?}")),
    }
}

pub fn hex(b: &[u8]) -> String {
    let shown: String = b.iter().take(48).map(|x| format!("{x:02x}")).collect();
    if b.len() > 48 {
        format!("{shown}... ({} bytes)", b.len())
    } else {
        shown
    }
}
