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
//! endian), the generation a hand-over is for (`u32`; zero in the
//! server's messages), the key (`u64`); `Keep` and `Kept` carry one
//! descriptor. The server sends `Keep` and `Drop`; at the start of each
//! generation past the first, `init` sends `Kept` for every descriptor it
//! holds and then `End` with their number.
//!
//! **Why the generation.** The channel outlives every generation, so a
//! hand-over meant for one that died before reading it stays queued. Its
//! successor skips every frame not meant for it: taking a dead
//! generation's hand-over for its own would miss what was kept since, and
//! would leave its own hand-over queued for the next, one behind for good.

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
    /// To generation `generation`: the attached descriptor was held as
    /// `key`.
    Kept { key: u64, generation: u32 },
    /// To generation `generation`: that was all, `count` descriptors.
    End { count: u64, generation: u32 },
}

const KEEP: u32 = 1;
const DROP: u32 = 2;
const KEPT: u32 = 3;
const END: u32 = 4;

/// Bytes of every frame.
pub const FRAME: usize = 16;

impl KeeperMsg {
    pub fn encode(self) -> [u8; FRAME] {
        let (op, generation, key) = match self {
            Self::Keep(k) => (KEEP, 0, k),
            Self::Drop(k) => (DROP, 0, k),
            Self::Kept { key, generation } => (KEPT, generation, key),
            Self::End { count, generation } => (END, generation, count),
        };
        let mut f = [0u8; FRAME];
        f[..4].copy_from_slice(&op.to_le_bytes());
        f[4..8].copy_from_slice(&generation.to_le_bytes());
        f[8..].copy_from_slice(&key.to_le_bytes());
        f
    }

    /// The message in `f`; `None` for anything but a well-formed frame.
    pub fn decode(f: &[u8]) -> Option<Self> {
        if f.len() != FRAME {
            return None;
        }
        let op = u32::from_le_bytes(f[..4].try_into().ok()?);
        let generation = u32::from_le_bytes(f[4..8].try_into().ok()?);
        let key = u64::from_le_bytes(f[8..].try_into().ok()?);
        match (op, generation) {
            (KEEP, 0) => Some(Self::Keep(key)),
            (DROP, 0) => Some(Self::Drop(key)),
            (KEPT, generation) => Some(Self::Kept { key, generation }),
            (END, generation) => Some(Self::End {
                count: key,
                generation,
            }),
            _ => None,
        }
    }

    /// Whether a descriptor travels with it.
    pub fn carries_handle(self) -> bool {
        matches!(self, Self::Keep(_) | Self::Kept { .. })
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

/// Generation `generation`'s first step: receives every `Kept`
/// descriptor meant for it up to its `End`, within `deadline`, skipping
/// (and closing) what was meant for a generation before it.
pub fn take_back(
    t: &dyn Transport,
    generation: u32,
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
            Some(KeeperMsg::Kept { generation: g, .. } | KeeperMsg::End { generation: g, .. })
                if g != generation =>
            {
                log::debug!("keeper: skipping a hand-over for generation {g}");
            }
            Some(KeeperMsg::Kept { key, .. }) if r.handles.len() == 1 => {
                kept.insert(
                    key,
                    r.handles
                        .into_iter()
                        .next()
                        .ok_or(TakeBackError::Malformed)?,
                );
            }
            Some(KeeperMsg::End { count, .. }) if count == kept.len() as u64 => return Ok(kept),
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
            KeeperMsg::Kept {
                key: 0,
                generation: 2,
            },
            KeeperMsg::End {
                count: 3,
                generation: u32::MAX,
            },
        ] {
            assert_eq!(KeeperMsg::decode(&m.encode()), Some(m));
        }
        // The server's messages name no generation.
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
        let kept = |key| KeeperMsg::Kept { key, generation: 2 };
        let end = |count| KeeperMsg::End {
            count,
            generation: 2,
        };
        send(&init, kept(5), Some(fd())).unwrap();
        send(&init, kept(6), Some(fd())).unwrap();
        send(&init, end(2), None).unwrap();
        let kept_back = take_back(&server, 2, Duration::from_secs(1)).unwrap();
        let mut keys: Vec<u64> = kept_back.keys().copied().collect();
        keys.sort();
        assert_eq!(keys, [5, 6]);
        // A wrong count, a Kept without its descriptor, silence: refused.
        send(&init, end(1), None).unwrap();
        assert_eq!(
            take_back(&server, 2, Duration::from_secs(1)).err(),
            Some(TakeBackError::Malformed)
        );
        send(&init, kept(1), None).unwrap();
        assert_eq!(
            take_back(&server, 2, Duration::from_secs(1)).err(),
            Some(TakeBackError::Malformed)
        );
        let quiet = take_back(&server, 2, Duration::from_millis(20));
        assert_eq!(quiet.err(), Some(TakeBackError::TimedOut));
    }

    /// A hand-over for a generation that died unread is skipped whole: the
    /// next one takes only its own, what was kept since included.
    #[test]
    fn a_hand_over_for_a_dead_generation_is_skipped() {
        let (init, server) = InProc::pair();
        for (generation, keys) in [(2, &[1u64][..]), (3, &[1, 9][..])] {
            for &key in keys {
                send(&init, KeeperMsg::Kept { key, generation }, Some(fd())).unwrap();
            }
            let count = keys.len() as u64;
            send(&init, KeeperMsg::End { count, generation }, None).unwrap();
        }
        let back = take_back(&server, 3, Duration::from_secs(1)).unwrap();
        let mut keys: Vec<u64> = back.keys().copied().collect();
        keys.sort();
        assert_eq!(keys, [1, 9]);
    }
}
