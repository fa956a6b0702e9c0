//! The descriptor keeper's channel (issue 14): a server whose state must
//! outlive it hands `init` a duplicate of each descriptor its clients
//! gave it or it made for them (the pager: object memfds, client
//! userfaultfds), and its next generation gets them all back before it
//! serves. `init` files each under the server's key and never uses it;
//! holding the userfaultfds is what keeps a client's registrations alive
//! (and its faults waiting) while the pager is down.
//!
//! The journal a restartable server writes its records into is a memfd
//! `init` holds the same way; [`map_journal`] maps it.
//!
//! One fixed 16-byte frame per message: the operation (`u32`, little
//! endian), four zero bytes, the key (`u64`); `Keep` and `Kept` carry one
//! descriptor. The server sends `Keep` and `Drop`; at the start of each
//! generation past the first, `init` sends `Kept` for every descriptor it
//! holds and then `End` with their number.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use crate::transport::{Transport, TransportError};

/// A message on the keeper channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeeperMsg {
    /// Hold the attached descriptor as `key` (replacing one held so).
    Keep(u64),
    /// Close what is held as `key`.
    Drop(u64),
    /// To a new generation: the attached descriptor was held as `key`.
    Kept(u64),
    /// To a new generation: that was all, `n` descriptors.
    End(u64),
}

const KEEP: u32 = 1;
const DROP: u32 = 2;
const KEPT: u32 = 3;
const END: u32 = 4;

/// Bytes of every frame.
pub const FRAME: usize = 16;

impl KeeperMsg {
    pub fn encode(self) -> [u8; FRAME] {
        let (op, key) = match self {
            Self::Keep(k) => (KEEP, k),
            Self::Drop(k) => (DROP, k),
            Self::Kept(k) => (KEPT, k),
            Self::End(n) => (END, n),
        };
        let mut f = [0u8; FRAME];
        f[..4].copy_from_slice(&op.to_le_bytes());
        f[8..].copy_from_slice(&key.to_le_bytes());
        f
    }

    /// The message in `f`; `None` for anything but a well-formed frame.
    pub fn decode(f: &[u8]) -> Option<Self> {
        if f.len() != FRAME || f[4..8] != [0; 4] {
            return None;
        }
        let op = u32::from_le_bytes(f[..4].try_into().ok()?);
        let key = u64::from_le_bytes(f[8..].try_into().ok()?);
        match op {
            KEEP => Some(Self::Keep(key)),
            DROP => Some(Self::Drop(key)),
            KEPT => Some(Self::Kept(key)),
            END => Some(Self::End(key)),
            _ => None,
        }
    }

    /// Whether a descriptor travels with it.
    pub fn carries_handle(self) -> bool {
        matches!(self, Self::Keep(_) | Self::Kept(_))
    }
}

/// Maps the journal memfd `memfd` (`--journal-fd`) for the process's
/// life, grown to `bytes` (rounded up to a page) if it is smaller, as
/// words.
pub fn map_journal(
    memfd: OwnedFd,
    bytes: u64,
) -> Result<&'static [std::sync::atomic::AtomicU64], String> {
    use rustix::mm::{mmap, MapFlags, ProtFlags};
    let have = rustix::fs::fstat(&memfd)
        .map_err(|e| e.to_string())?
        .st_size;
    let have = u64::try_from(have).map_err(|_| "a negative size".to_string())?;
    let want = bytes
        .checked_next_multiple_of(4096)
        .ok_or_else(|| "a journal larger than memory".to_string())?
        .max(have);
    if want > have {
        rustix::fs::ftruncate(&memfd, want).map_err(|e| e.to_string())?;
    }
    let len = usize::try_from(want).map_err(|_| "too large".to_string())?;
    if len == 0 {
        return Err("an empty journal".into());
    }
    let flags = ProtFlags::READ | ProtFlags::WRITE;
    // SAFETY: a new shared mapping of `len` bytes of the memfd, never
    // unmapped (the journal outlives every request of this process).
    let at = unsafe {
        mmap(
            std::ptr::null_mut(),
            len,
            flags,
            MapFlags::SHARED,
            &memfd,
            0,
        )
    }
    .map_err(|e| e.to_string())?;
    // SAFETY: page-aligned, `len` bytes, mapped for the process's life;
    // `AtomicU64` has the layout of `u64` and every bit pattern is valid;
    // only this process writes it while it runs (init holds it unread).
    Ok(unsafe { std::slice::from_raw_parts(at.cast(), len / 8) })
}

/// Why a new generation did not get back what was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeBackError {
    /// No `End` within the deadline.
    TimedOut,
    /// A frame that is not `Kept` or `End`, or a `Kept` without its
    /// descriptor, or an `End` whose count is not what arrived.
    Malformed,
    Transport(TransportError),
}

/// Sends `msg` (with `handle` when it carries one).
pub fn send(
    t: &dyn Transport,
    msg: KeeperMsg,
    handle: Option<OwnedFd>,
) -> Result<(), TransportError> {
    t.send(&msg.encode(), handle.into_iter().collect())
}

/// A new generation's first step: receives every `Kept` descriptor up to
/// `End`, within `deadline`.
pub fn take_back(
    t: &dyn Transport,
    deadline: Duration,
) -> Result<HashMap<u64, OwnedFd>, TakeBackError> {
    let until = Instant::now() + deadline;
    let mut kept = HashMap::new();
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(TakeBackError::TimedOut);
        }
        let r = t.recv(Some(left)).map_err(|e| match e {
            TransportError::TimedOut => TakeBackError::TimedOut,
            e => TakeBackError::Transport(e),
        })?;
        match KeeperMsg::decode(&r.bytes) {
            Some(KeeperMsg::Kept(key)) if r.handles.len() == 1 => {
                kept.insert(
                    key,
                    r.handles
                        .into_iter()
                        .next()
                        .ok_or(TakeBackError::Malformed)?,
                );
            }
            Some(KeeperMsg::End(n)) if n == kept.len() as u64 => return Ok(kept),
            _ => return Err(TakeBackError::Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::InProc;

    #[test]
    fn frames_read_back_and_anything_else_is_refused() {
        for m in [
            KeeperMsg::Keep(7),
            KeeperMsg::Drop(u64::MAX),
            KeeperMsg::Kept(0),
            KeeperMsg::End(3),
        ] {
            assert_eq!(KeeperMsg::decode(&m.encode()), Some(m));
        }
        let mut f = KeeperMsg::Keep(1).encode();
        f[5] = 1;
        assert_eq!(KeeperMsg::decode(&f), None);
        assert_eq!(KeeperMsg::decode(&f[..15]), None);
        f = KeeperMsg::Keep(1).encode();
        f[0] = 9;
        assert_eq!(KeeperMsg::decode(&f), None);
    }

    fn fd() -> OwnedFd {
        rustix::io::dup(std::io::stdin()).unwrap()
    }

    #[test]
    fn a_new_generation_takes_back_every_kept_descriptor() {
        let (init, server) = InProc::pair();
        send(&init, KeeperMsg::Kept(5), Some(fd())).unwrap();
        send(&init, KeeperMsg::Kept(6), Some(fd())).unwrap();
        send(&init, KeeperMsg::End(2), None).unwrap();
        let kept = take_back(&server, Duration::from_secs(1)).unwrap();
        let mut keys: Vec<u64> = kept.keys().copied().collect();
        keys.sort();
        assert_eq!(keys, [5, 6]);
        // A wrong count, a Kept without its descriptor, silence: refused.
        send(&init, KeeperMsg::End(1), None).unwrap();
        assert_eq!(
            take_back(&server, Duration::from_secs(1)).err(),
            Some(TakeBackError::Malformed)
        );
        send(&init, KeeperMsg::Kept(1), None).unwrap();
        assert_eq!(
            take_back(&server, Duration::from_secs(1)).err(),
            Some(TakeBackError::Malformed)
        );
        let quiet = take_back(&server, Duration::from_millis(20));
        assert_eq!(quiet.err(), Some(TakeBackError::TimedOut));
    }
}
