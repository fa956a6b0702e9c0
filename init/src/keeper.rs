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
use std::sync::atomic::{AtomicBool, Ordering};
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
    hand_over: AtomicBool,
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

    /// A new generation started: it gets everything kept.
    pub fn hand_over(&self) {
        self.shared.hand_over.store(true, Ordering::Release);
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
        if shared.hand_over.swap(false, Ordering::AcqRel) {
            // What the dead generation sent is all queued by now (a zero
            // timeout would not even look).
            while let Ok(r) = end.recv(Some(Duration::from_millis(1))) {
                apply(r, &mut held);
            }
            give_back(end, &held);
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

/// Sends the new generation a duplicate of each descriptor, then `End`.
fn give_back(end: &SeqPacket, held: &HashMap<u64, OwnedFd>) {
    let mut sent = 0u64;
    for (key, fd) in held {
        let dup = match rustix::io::fcntl_dupfd_cloexec(fd, 0) {
            Ok(d) => d,
            Err(e) => {
                log::error!("init: keeper: duplicating {key:#x}: {e}");
                continue;
            }
        };
        match keeper::send(end, KeeperMsg::Kept(*key), Some(dup)) {
            Ok(()) => sent += 1,
            Err(e) => log::error!("init: keeper: handing over {key:#x}: {e}"),
        }
    }
    if let Err(e) = keeper::send(end, KeeperMsg::End(sent), None) {
        log::error!("init: keeper: ending the hand-over: {e}");
    }
    log::info!("init: keeper: handed {sent} descriptor(s) to the new generation");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd() -> OwnedFd {
        rustix::io::dup(std::io::stdin()).unwrap()
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
        k.hand_over();
        let kept = keeper::take_back(&pager, Duration::from_secs(5)).unwrap();
        let mut keys: Vec<u64> = kept.keys().copied().collect();
        keys.sort();
        assert_eq!(keys, [1, 3]);
        // And again for the generation after (nothing was dropped since).
        k.hand_over();
        assert_eq!(
            keeper::take_back(&pager, Duration::from_secs(5))
                .unwrap()
                .len(),
            2
        );
    }
}
