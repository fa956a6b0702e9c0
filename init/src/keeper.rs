//! The descriptor keeper (issue 14; the channel is `ipc_protocol::keeper`):
//! `init` holds a duplicate of every descriptor a restartable pager was
//! given or made for its clients (object memfds, client userfaultfds), and
//! hands them all to each new generation before it serves.
//!
//! **Why `init`.** It outlives every server. Holding a client's
//! userfaultfd is what keeps the client's registrations when the pager
//! dies: without it the kernel drops them with the pager's last
//! descriptor, and the pages whose only copy is in VRAM (memfd holes)
//! read as zeros. Held here, a fault on them waits for the next
//! generation instead. `init` never uses a descriptor it keeps.
//!
//! **One thread, in order.** The thread that reads the pager's `Keep` and
//! `Drop` messages also hands everything over after a restart, and first
//! reads what the dead generation sent before it died (its messages stay
//! queued in the socket), so the new generation gets exactly what its
//! predecessor kept.
//!
//! **Budget.** At most [`MAX_KEPT`] descriptors; past that a `Keep` is
//! refused (logged: that object or space would not survive a restart).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use ipc_protocol::keeper::{self, KeeperMsg};
use ipc_protocol::transport::{Received, SeqPacket, Transport, TransportError};

/// Descriptors kept at most: every client slot at the pager's default
/// budget holds 256 objects and 16 address spaces (2176 for 8 clients),
/// with room for a manifest that raises them.
pub const MAX_KEPT: usize = 8192;

/// How often the thread looks for a hand-over or the end.
const POLL: Duration = Duration::from_millis(20);

pub struct Keeper {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    /// The generation to hand everything to next (0: none waiting).
    hand_over: AtomicU32,
    stop: AtomicBool,
}

impl Keeper {
    /// Keeps what arrives on `end` (init's end of the keeper channel).
    pub fn start(end: SeqPacket) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("init-keeper".into())
            .spawn(move || run(&end, &s))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Generation `generation` started: it gets everything kept, in
    /// frames that name it (a hand-over for a generation that died unread
    /// stays queued, and its successor skips it: `ipc_protocol::keeper`).
    pub fn hand_over(&self, generation: u32) {
        self.shared.hand_over.store(generation, Ordering::Release);
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(end: &SeqPacket, shared: &Shared) {
    let mut held: HashMap<u64, OwnedFd> = HashMap::new();
    while !shared.stop.load(Ordering::Acquire) {
        let generation = shared.hand_over.swap(0, Ordering::AcqRel);
        if generation != 0 {
            // What the dead generation sent is all queued by now (a zero
            // timeout would not even look).
            while let Ok(r) = end.recv(Some(Duration::from_millis(1))) {
                apply(r, &mut held);
            }
            give_back(end, &held, generation);
        }
        match end.recv(Some(POLL)) {
            Ok(r) => apply(r, &mut held),
            Err(TransportError::TimedOut) => {}
            // The pager's end closed: the system is stopping (the recipe
            // holds that end for every generation until then).
            Err(TransportError::Disconnected) => break,
            Err(e) => {
                log::warn!("init: keeper: {e}");
                std::thread::sleep(POLL);
            }
        }
    }
}

/// One message of the pager.
fn apply(r: Received, held: &mut HashMap<u64, OwnedFd>) {
    let msg = KeeperMsg::decode(&r.bytes);
    let mut handles = r.handles;
    match msg {
        Some(KeeperMsg::Keep(key)) if handles.len() == 1 => {
            if held.len() >= MAX_KEPT && !held.contains_key(&key) {
                log::error!("init: keeper: {MAX_KEPT} descriptors kept; {key:#x} refused");
                return;
            }
            if let Some(fd) = handles.pop() {
                held.insert(key, fd);
            }
        }
        Some(KeeperMsg::Drop(key)) if handles.is_empty() => {
            held.remove(&key);
        }
        other => log::warn!(
            "init: keeper: unexpected {other:?} ({} handles)",
            handles.len()
        ),
    }
}

/// Sends generation `generation` a duplicate of each descriptor, then
/// `End`.
fn give_back(end: &SeqPacket, held: &HashMap<u64, OwnedFd>, generation: u32) {
    let mut sent = 0u64;
    for (key, fd) in held {
        let dup = match rustix::io::fcntl_dupfd_cloexec(fd, 0) {
            Ok(d) => d,
            Err(e) => {
                log::error!("init: keeper: duplicating {key:#x}: {e}");
                continue;
            }
        };
        let kept = KeeperMsg::Kept {
            key: *key,
            generation,
        };
        match keeper::send(end, kept, Some(dup)) {
            Ok(()) => sent += 1,
            Err(e) => log::error!("init: keeper: handing over {key:#x}: {e}"),
        }
    }
    let last = KeeperMsg::End {
        count: sent,
        generation,
    };
    if let Err(e) = keeper::send(end, last, None) {
        log::error!("init: keeper: ending the hand-over: {e}");
    }
    log::info!("init: keeper: handed {sent} descriptor(s) to generation {generation}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd() -> OwnedFd {
        rustix::io::dup(std::io::stdin()).unwrap()
    }

    /// Whether something is queued for the pager within `ms`.
    fn queued_within(pager: &SeqPacket, ms: i64) -> bool {
        let fd = pager.fd();
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        let t = rustix::event::Timespec {
            tv_sec: ms / 1000,
            tv_nsec: (ms % 1000) * 1_000_000,
        };
        rustix::event::poll(&mut fds, Some(&t)) == Ok(1)
    }

    /// What a generation kept and did not drop, the next gets back,
    /// messages sent just before the hand-over included.
    #[test]
    fn a_new_generation_gets_what_was_kept_and_not_dropped() {
        let (init_end, pager) = SeqPacket::pair().unwrap();
        let k = Keeper::start(init_end).unwrap();
        for key in [1u64, 2, 3] {
            keeper::send(&pager, KeeperMsg::Keep(key), Some(fd())).unwrap();
        }
        keeper::send(&pager, KeeperMsg::Drop(2), None).unwrap();
        // A malformed message is ignored.
        pager.send(&[1, 2, 3], vec![]).unwrap();
        k.hand_over(2);
        let kept = keeper::take_back(&pager, 2, Duration::from_secs(5)).unwrap();
        let mut keys: Vec<u64> = kept.keys().copied().collect();
        keys.sort();
        assert_eq!(keys, [1, 3]);
        // And again for the generation after (nothing was dropped since).
        k.hand_over(3);
        assert_eq!(
            keeper::take_back(&pager, 3, Duration::from_secs(5))
                .unwrap()
                .len(),
            2
        );
    }

    /// Generation 2 died before it read its hand-over; generation 3 kept
    /// one more descriptor and died: generation 4 gets everything, that
    /// one included.
    #[test]
    fn a_generation_after_one_that_died_unread_gets_what_was_kept_since() {
        let (init_end, pager) = SeqPacket::pair().unwrap();
        let k = Keeper::start(init_end).unwrap();
        keeper::send(&pager, KeeperMsg::Keep(1), Some(fd())).unwrap();
        k.hand_over(2);
        assert!(queued_within(&pager, 5000));
        k.hand_over(3);
        let third = keeper::take_back(&pager, 3, Duration::from_secs(5)).unwrap();
        assert_eq!(third.len(), 1);
        // Had it taken generation 2's hand-over for its own, its own would
        // be queued now, unread, when it dies.
        let _ = queued_within(&pager, 300);
        keeper::send(&pager, KeeperMsg::Keep(7), Some(fd())).unwrap();
        k.hand_over(4);
        let fourth = keeper::take_back(&pager, 4, Duration::from_secs(5)).unwrap();
        let mut keys: Vec<u64> = fourth.keys().copied().collect();
        keys.sort();
        assert_eq!(keys, [1, 7]);
    }
}
