//! Host transport: a connected `AF_UNIX` `SOCK_SEQPACKET` socket. One frame
//! is one datagram; handles ride along as `SCM_RIGHTS`.
//!
//! A send waits while the peer's receive queue is full, at most
//! [`SEND_TIMEOUT`]: a peer that reads nothing for that long (hung, or a
//! hostile client that never takes its replies) ends the send with
//! `TimedOut` instead of holding the sender, and whatever locks it holds,
//! for good.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{
    recvmsg, sendmsg, socketpair, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage,
    RecvFlags, ReturnFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags,
    SocketType,
};

use super::{Received, Transport, TransportError};
use crate::{MAX_FRAME, MAX_HANDLES};

/// How long a send waits for room in the peer's receive queue.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// One end of a seqpacket link.
pub struct SeqPacket {
    fd: OwnedFd,
    /// Serialises receivers so one frame is never split between threads.
    recv_lock: Mutex<()>,
    /// How long a send waits for room ([`SEND_TIMEOUT`]).
    send_timeout: Duration,
}

impl SeqPacket {
    /// Two connected ends (close-on-exec; `init` clears the flag on the end
    /// it hands to a child).
    pub fn pair() -> Result<(Self, Self), TransportError> {
        let (a, b) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        Ok((Self::from_fd(a), Self::from_fd(b)))
    }

    /// Wraps an already connected seqpacket socket (one inherited from `init`).
    pub fn from_fd(fd: OwnedFd) -> Self {
        Self {
            fd,
            recv_lock: Mutex::new(()),
            send_timeout: SEND_TIMEOUT,
        }
    }

    /// The same end, its sends waiting at most `t` for room.
    pub fn with_send_timeout(self, t: Duration) -> Self {
        Self {
            send_timeout: t,
            ..self
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Whether the peer closed its end (the socket reports a hang-up now).
    fn peer_hung_up(&self) -> bool {
        let mut fds = [PollFd::new(&self.fd, PollFlags::RDHUP)];
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        match poll(&mut fds, Some(&zero)) {
            Ok(_) => fds[0]
                .revents()
                .intersects(PollFlags::HUP | PollFlags::RDHUP | PollFlags::ERR),
            // Cannot tell: take it for a close, as before.
            Err(_) => true,
        }
    }

    /// Waits until the socket reports `ready` (or an error or hang-up,
    /// which the next call reports), or `deadline` passes.
    fn wait_for(&self, ready: PollFlags, deadline: Option<Instant>) -> Result<(), TransportError> {
        loop {
            let timeout = match deadline {
                None => None,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(TransportError::TimedOut);
                    }
                    Some(Timespec {
                        tv_sec: left.as_secs() as i64,
                        tv_nsec: left.subsec_nanos() as _,
                    })
                }
            };
            let mut fds = [PollFd::new(&self.fd, ready)];
            match poll(&mut fds, timeout.as_ref()) {
                Ok(0) => continue, // re-check the deadline
                Ok(_) => return Ok(()),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Transport for SeqPacket {
    fn send(&self, frame: &[u8], handles: Vec<OwnedFd>) -> Result<(), TransportError> {
        let borrowed: Vec<BorrowedFd<'_>> = handles.iter().map(|h| h.as_fd()).collect();
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_HANDLES))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !borrowed.is_empty() && !control.push(SendAncillaryMessage::ScmRights(&borrowed)) {
            return Err(TransportError::Host(Errno::TOOMANYREFS.raw_os_error()));
        }
        // Set when the queue is first found full: most sends never wait.
        let mut deadline = None;
        loop {
            match sendmsg(
                &self.fd,
                &[IoSlice::new(frame)],
                &mut control,
                SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
            ) {
                Ok(_) => return Ok(()),
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => {
                    let d = *deadline.get_or_insert_with(|| Instant::now() + self.send_timeout);
                    self.wait_for(PollFlags::OUT, Some(d))?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        // `handles` drop here: the peer holds its own copies now.
    }

    fn recv(&self, timeout: Option<Duration>) -> Result<Received, TransportError> {
        let _guard = self
            .recv_lock
            .lock()
            .map_err(|_| TransportError::Disconnected)?;
        let deadline = timeout.map(|t| Instant::now() + t);
        // One byte more than a frame may hold, so an oversized datagram is
        // seen as such even without MSG_TRUNC.
        let mut bytes = vec![0u8; MAX_FRAME + 1];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_HANDLES))];
        loop {
            if deadline.is_some() {
                self.wait_for(PollFlags::IN, deadline)?;
            }
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let res = recvmsg(
                &self.fd,
                &mut [IoSliceMut::new(&mut bytes)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC
                    | if deadline.is_some() {
                        RecvFlags::DONTWAIT
                    } else {
                        RecvFlags::empty()
                    },
            );
            let msg = match res {
                Ok(m) => m,
                Err(Errno::INTR) | Err(Errno::AGAIN) => continue,
                Err(e) => return Err(e.into()),
            };
            let mut handles = Vec::new();
            collect_fds(&mut control, &mut handles);
            if msg.bytes == 0 {
                // A zero-length read is the peer closing its end, or an
                // empty datagram a hostile peer sent: only a hang-up on the
                // socket tells them apart. An empty frame is handed on (it
                // is refused as truncated), never taken for a close: that
                // would end the sender's session under its open endpoint.
                if self.peer_hung_up() {
                    return Err(TransportError::Disconnected);
                }
                return Ok(Received {
                    bytes: Vec::new(),
                    handles,
                    truncated: false,
                    handles_truncated: msg.flags.contains(ReturnFlags::CTRUNC),
                });
            }
            let truncated = msg.flags.contains(ReturnFlags::TRUNC) || msg.bytes > MAX_FRAME;
            bytes.truncate(msg.bytes.min(MAX_FRAME + 1));
            let handles_truncated = msg.flags.contains(ReturnFlags::CTRUNC);
            return Ok(Received {
                bytes,
                handles,
                truncated,
                handles_truncated,
            });
        }
    }
}

fn collect_fds(control: &mut RecvAncillaryBuffer<'_>, out: &mut Vec<OwnedFd>) {
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = msg {
            out.extend(fds);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that reads nothing cannot hold a sender: once its queue is
    /// full a send ends `TimedOut` after the send timeout, and sends go
    /// through again as soon as it reads.
    #[test]
    fn a_send_to_a_peer_that_reads_nothing_times_out() {
        let (a, b) = SeqPacket::pair().expect("a socket pair");
        let a = a.with_send_timeout(Duration::from_millis(50));
        let started = Instant::now();
        let mut sent = 0u32;
        let full = loop {
            match a.send(&[7u8; 64], Vec::new()) {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
            assert!(sent < 1_000_000, "the queue never filled");
        };
        assert_eq!(full, TransportError::TimedOut);
        assert!(sent > 0, "frames went before the queue filled");
        assert!(started.elapsed() < Duration::from_secs(20), "bounded");
        let got = b
            .recv(Some(Duration::from_secs(5)))
            .expect("a queued frame");
        assert_eq!(got.bytes, [7u8; 64]);
        a.send(b"XSVM", Vec::new())
            .expect("room again once the peer reads");
    }

    /// An empty datagram is a frame (refused later as truncated), not the
    /// peer closing; closing is still seen as closing.
    #[test]
    fn an_empty_frame_is_not_a_close() {
        let (a, b) = SeqPacket::pair().expect("a socket pair");
        a.send(&[], Vec::new()).expect("an empty frame is sent");
        let got = b.recv(Some(Duration::from_secs(5))).expect("it arrives");
        assert!(got.bytes.is_empty() && got.handles.is_empty());
        a.send(b"XSVM", Vec::new()).expect("the link still works");
        let got = b
            .recv(Some(Duration::from_secs(5)))
            .expect("the next frame arrives");
        assert_eq!(got.bytes, b"XSVM");
        drop(a);
        assert_eq!(
            b.recv(Some(Duration::from_secs(5))).map(|r| r.bytes),
            Err(TransportError::Disconnected)
        );
    }
}
