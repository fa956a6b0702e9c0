//! Address spaces on the host: one client userfaultfd each, and the
//! threads that deliver its events to the core (DESIGN.md 2 and 5,
//! "Unmap / mremap / fork / exit").
//!
//! **Events in order.** One reader thread per space reads the userfaultfd
//! and has the core apply view changes (fork, remap, unmap) in the order
//! the kernel queued them, before it reads more; page faults go to a queue
//! that the space's workers serve. The reader never migrates a page, so a
//! view change (which holds the client's `fork`/`mremap`/`munmap` until it
//! is read) is never stuck behind a fault that waits on a page. A
//! `madvise` removal is discarded after the guard is let go, and the faults
//! read after it in the same batch wait for that (`core/removed.rs`).
//! Spaces of one process (one userfaultfd per attached view) have no order
//! between them: a move into a range another space's view just left waits
//! for that view's end (`core/changes.rs`, "Order across spaces").
//!
//! **The view-change guard.** The kernel completes a view-change event when
//! it is *read*; the pager updates its views when it has *applied* it. In
//! between, a new mapping of an object's pages exists that the pager does
//! not know (the child's copy after fork, the moved range after mremap), and
//! a collect that write-protected only the known views would leave writers
//! there free to write into a page being copied to VRAM. So the reader holds
//! the space's guard (`Space::applying_changes`) from its `read` to the end
//! of applying what it read, and the core's write-protect pass
//! (`core/backend.rs`, `protect`) holds it for reading across its pass,
//! then checks the object's views did not change. A write-protect that
//! finds an event pending (`EAGAIN`) drops the guards and starts over;
//! ranges protected before a fork or a move carry their protection to the
//! copies.
//!
//! **Moves.** `mremap` sends `REMAP(from, to, len)`; a plain move then sends
//! `UNMAP(from, from + len)` for the old range, `MREMAP_DONTUNMAP` does not
//! (the old range stays mapped and registered). The core gives the new
//! range a view at once (faults there are served right away) and the reader
//! tells the GPU server before it reads the next event (`ViewCopied`: the
//! old view's bindings get twins at the new address), so by the time the
//! unmap of a plain move lets the client's mremap return, GPU work at the
//! new address finds it bound. The unmap then ends the old view
//! (`ViewGone`) and the client's id for it names the moved view from then
//! on (`core/changes.rs`). Without that unmap both ranges stay views.

use std::collections::VecDeque;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rustix::event::{eventfd, EventfdFlags};

use super::runtime::HostRuntime;
use super::uffd::{Event, Uffd};
use crate::core::changes::PendingMove;
use crate::core::runtime::Runtime;
use crate::core::view::Space;
use crate::core::Core;

type HostCore = Core<HostRuntime>;
type HostSpace = Space<HostRuntime>;

/// A fault read from a space's userfaultfd, waiting for a worker.
#[derive(Debug, Clone, Copy)]
pub struct Fault {
    pub address: u64,
    pub wp: bool,
    /// The faulting thread (0: unknown).
    pub tid: u32,
}

/// A client userfaultfd and the queue of faults read from it.
pub struct HostPort {
    pub uffd: Uffd,
    /// Wakes the reader out of its poll when the space stops, so its
    /// threads exit (and give back their budget) at once.
    wake: OwnedFd,
    faults: Mutex<VecDeque<Fault>>,
    ready: Condvar,
    stop: AtomicBool,
}

impl HostPort {
    pub fn new(uffd: Uffd) -> std::io::Result<Self> {
        let flags = EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK;
        Ok(Self {
            uffd,
            wake: eventfd(0, flags)?,
            faults: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            stop: AtomicBool::new(false),
        })
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// The workers exit once the queue is empty; the reader at its next poll.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
        let _q = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        self.ready.notify_all();
    }

    fn push(&self, f: Fault) {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(f);
        self.ready.notify_one();
    }

    /// The next fault to serve; `None` once the space stopped.
    fn pop(&self) -> Option<Fault> {
        let mut q = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(f) = q.pop_front() {
                return Some(f);
            }
            if self.stopped() {
                return None;
            }
            q = self.ready.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Starts the reader and `workers` fault workers of `space`.
pub fn start(core: &Arc<HostCore>, space: &Arc<HostSpace>, workers: usize) -> std::io::Result<()> {
    let (c, s) = (core.clone(), space.clone());
    std::thread::Builder::new()
        .name(format!("pager-space{}-events", space.id))
        .spawn(move || read_events(c, s))?;
    for t in 0..workers.max(1) {
        let (c, s) = (core.clone(), space.clone());
        std::thread::Builder::new()
            .name(format!("pager-space{}-fault{t}", space.id))
            .spawn(move || serve_faults(c, s))?;
    }
    Ok(())
}

/// Idle rounds of a space's reader (100 ms each) between two asks
/// whether its process is gone.
const IDLE_ROUNDS_PER_PROBE: u32 = 10;

fn read_events(core: Arc<HostCore>, space: Arc<HostSpace>) {
    let mut events = Vec::with_capacity(16);
    let mut pending: Option<PendingMove<HostRuntime>> = None;
    let mut notes = Vec::new();
    let mut removed = Vec::new();
    let mut held_back = Vec::new();
    let mut idle = 0u32;
    while !space.stopped() && !space.port.stopped() {
        events.clear();
        if !space
            .port
            .uffd
            .wait_readable_or(&space.port.wake, Duration::from_millis(100))
        {
            // No event says a process ended: ask now and then (`reap.rs`).
            idle += 1;
            if idle.is_multiple_of(IDLE_ROUNDS_PER_PROBE) {
                core.reap_if_gone(&space);
            }
            continue;
        }
        // Taken before the read, handed back once the notes are sent: a
        // munmap this read lets return is waited for (`core/sync_views.rs`).
        let ticket = space.session.changes.open();
        {
            let changing = space.applying_changes();
            if let Err(e) = space.port.uffd.read_events(&mut events) {
                log::warn!(
                    "pager: space {}: userfaultfd read failed: {e}; stopping it",
                    space.id
                );
                drop(changing);
                core.space_gone(&space);
                break;
            }
            for ev in &events {
                match *ev {
                    // A fault after a removal waits for the discard.
                    Event::PageFault {
                        address, wp, tid, ..
                    } if !removed.is_empty() => held_back.push(Fault { address, wp, tid }),
                    Event::PageFault {
                        address, wp, tid, ..
                    } => space.port.push(Fault { address, wp, tid }),
                    Event::Remove { start, end } => {
                        removed.extend(core.removed_ranges(&space, start, end))
                    }
                    Event::Fork { fd } => {
                        pending = None;
                        follow_fork(&core, &space, fd);
                    }
                    Event::Remap { from, to, len } => {
                        pending = Some(core.follow_remap(&space, from, to, len, &mut notes))
                    }
                    Event::Unmap { start, end } => {
                        core.follow_unmap(&space, start, end, pending.take(), &mut notes)
                    }
                    other => log::debug!("pager: space {}: {other:?} ignored", space.id),
                }
            }
        }
        core.send_notes(&mut notes);
        core.discard_removed(&mut removed);
        for f in held_back.drain(..) {
            space.port.push(f);
        }
        drop(ticket);
    }
    space.port.stop();
}

fn serve_faults(core: Arc<HostCore>, space: Arc<HostSpace>) {
    while let Some(f) = space.port.pop() {
        core.serve_fault_from(&space, f.address, f.wp, f.tid);
    }
}

/// The client forked: the child's copies of the registered ranges report
/// to the new descriptor `fd`, which the core follows as a new space.
fn follow_fork(core: &Arc<HostCore>, parent: &Arc<HostSpace>, fd: i32) {
    if fd < 0 {
        log::error!(
            "pager: space {}: fork event without a descriptor",
            parent.id
        );
        return;
    }
    // SAFETY: the kernel installed `fd` in our table for this event and
    // nothing else owns it.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // Kept apart from the port: a child that is not followed is made an
    // orphan on it (`orphans.rs`), not handed to the kernel.
    let kept = rustix::io::fcntl_dupfd_cloexec(&owned, 0)
        .ok()
        .map(Uffd::new);
    let port = match HostPort::new(Uffd::new(owned)) {
        Ok(p) => p,
        Err(e) => {
            log::error!("pager: space {}: fork not followed: {e}", parent.id);
            orphan(core, parent, kept);
            return;
        }
    };
    let Some(child) = core.follow_fork(parent, port) else {
        orphan(core, parent, kept);
        return;
    };
    if let Err(e) = core.rt.start_space(core, &child) {
        log::error!("pager: fork: starting space {}: {e:?}", child.id);
        core.space_gone(&child);
    }
}

/// A fork child `parent`'s client has no room for becomes an orphan: its
/// faults end with `SIGBUS` instead of reading VRAM pages as zeros. With no
/// views in `parent` there is nothing to guard.
fn orphan(core: &Arc<HostCore>, parent: &Arc<HostSpace>, uffd: Option<Uffd>) {
    let ranges: Vec<(u64, u64)> = parent.views().iter().map(|v| (v.addr, v.len())).collect();
    let (Some(uffd), false) = (uffd, ranges.is_empty()) else {
        return;
    };
    let client = parent.session.badge;
    let spare = crate::core::reap::spare_page(parent);
    match core.rt.orphans.adopt(uffd, client, &ranges, spare) {
        Ok(()) => log::error!(
            "pager: space {}: a fork child of client {client:#x} is not followed; its \
             accesses to the client's memory get SIGBUS",
            parent.id
        ),
        Err(e) => log::error!(
            "pager: space {}: a fork child of client {client:#x} is not followed and not \
             guarded ({e:?}): its ranges are the kernel's (pages in VRAM read as zeros)",
            parent.id
        ),
    }
}
