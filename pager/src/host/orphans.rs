//! Fork children the pager cannot follow: an error, never silent zeros
//! (DESIGN.md 5, "View changes").
//!
//! A child past its client's space budget is not followed. Closing its
//! userfaultfd would hand its ranges to the kernel, and the child would
//! read every page in VRAM as the memfd's hole: zeros, with no error. So
//! the pager keeps the descriptor and the child becomes an *orphan*:
//! - every fault it takes ends with `SIGBUS`: a page not mapped in it is
//!   poisoned (`UFFDIO_POISON`, as a CPU fault past its deadline is), and
//!   a write to a page mapped in it (a RAM page it inherited, which the
//!   pager write-protects) sends `SIGBUS` to the writing thread;
//! - reads of RAM pages it inherited still see the shared, current data;
//! - a child it forks is an orphan too (its ranges are the same).
//!
//! **Ordering.** The child runs as soon as its fork event is read, so it
//! may fork or move memory before it is adopted; while such an event of
//! its own is unread, write protection answers `EAGAIN`. So an orphan is
//! listed first (the serving thread reads its events from then on) and
//! protected after: `adopt` retries for up to [`PROTECT_WAIT`], and the
//! serving thread retries every round an orphan that is not protected
//! yet (an orphan's own fork is adopted on that thread, which cannot wait
//! for itself).
//!
//! One thread serves every orphan. Orphans are budgeted per client
//! ([`MAX_PER_CLIENT`]) and in all ([`MAX_ORPHANS`]); past that the child
//! is handed to the kernel as before, and the pager says so. An orphan
//! whose process ended goes within about a second (the probe of
//! `core/reap.rs`: clearing write protection on a page no view covers
//! answers `ESRCH` once the process is gone). Orphans are not kept across
//! a pager restart.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;

use super::uffd::{Event, Uffd};

/// Orphans one client may have at once.
pub const MAX_PER_CLIENT: usize = 64;
/// Orphans of every client together.
pub const MAX_ORPHANS: usize = 512;
/// How long `adopt` retries write protection while the child's own view
/// changes are being delivered.
pub const PROTECT_WAIT: Duration = Duration::from_secs(2);
/// How long one round waits for the orphans' events.
const TICK: Duration = Duration::from_millis(100);
/// Rounds between two probes for ended processes.
const ROUNDS_PER_PROBE: u32 = 10;
const PAGE: u64 = 4096;

/// A child the pager does not follow (cloned: the serving thread works
/// on a snapshot of the list, not under its lock).
#[derive(Clone)]
struct Orphan {
    uffd: Arc<Uffd>,
    client: u64,
    /// The ranges it was given (the forking space's views).
    ranges: Arc<[(u64, u64)]>,
    /// A page no range of the child covers (the probe's page).
    spare: u64,
    /// Its ranges are write-protected.
    protected: Arc<AtomicBool>,
}

/// A child an orphan forked, to adopt: its descriptor and its parent.
struct Forked {
    fd: OwnedFd,
    parent: Orphan,
}

/// Every orphan of the pager, and whether their thread runs.
#[derive(Default)]
pub struct Orphans {
    all: Mutex<Vec<Orphan>>,
    serving: Mutex<bool>,
}

/// Why a child could not be made an orphan.
#[derive(Debug, PartialEq, Eq)]
pub enum AdoptError {
    /// The client has [`MAX_PER_CLIENT`] orphans, or the pager
    /// [`MAX_ORPHANS`].
    OverBudget,
    /// The serving thread could not be started.
    Thread,
}

impl Orphans {
    /// Makes the child behind `uffd` an orphan of `client`, whose `ranges`
    /// it inherited; `spare`: a page none of them covers. From now on each
    /// of its faults ends with `SIGBUS`; its ranges are write-protected
    /// before this returns unless its own view changes kept them from it
    /// for [`PROTECT_WAIT`] (then the serving thread goes on trying).
    pub fn adopt(
        self: &Arc<Self>,
        uffd: Uffd,
        client: u64,
        ranges: &[(u64, u64)],
        spare: u64,
    ) -> Result<(), AdoptError> {
        let o = self.list(uffd, client, ranges.into(), spare)?;
        let deadline = Instant::now() + PROTECT_WAIT;
        while !try_protect(&o) {
            if Instant::now() >= deadline {
                log::error!(
                    "pager: an orphan of client {client:#x} is not write-protected yet; \
                     the serving thread goes on trying"
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// The orphans of `client` now.
    pub fn of(&self, client: u64) -> usize {
        lock(&self.all)
            .iter()
            .filter(|o| o.client == client)
            .count()
    }

    /// Puts a new orphan in the list (its faults are served from now on)
    /// and starts the serving thread unless it runs.
    fn list(
        self: &Arc<Self>,
        uffd: Uffd,
        client: u64,
        ranges: Arc<[(u64, u64)]>,
        spare: u64,
    ) -> Result<Orphan, AdoptError> {
        let o = Orphan {
            uffd: Arc::new(uffd),
            client,
            ranges,
            spare,
            protected: Arc::new(AtomicBool::new(false)),
        };
        {
            let mut all = lock(&self.all);
            let mine = all.iter().filter(|o| o.client == client).count();
            if mine >= MAX_PER_CLIENT || all.len() >= MAX_ORPHANS {
                return Err(AdoptError::OverBudget);
            }
            all.push(o.clone());
        }
        self.serve()?;
        Ok(o)
    }

    /// Starts the serving thread unless it runs.
    fn serve(self: &Arc<Self>) -> Result<(), AdoptError> {
        let mut serving = lock(&self.serving);
        if *serving {
            return Ok(());
        }
        let me = self.clone();
        std::thread::Builder::new()
            .name("pager-orphans".into())
            .spawn(move || me.run())
            .map_err(|_| AdoptError::Thread)?;
        *serving = true;
        Ok(())
    }

    fn run(self: Arc<Self>) {
        let mut round = 0u32;
        loop {
            round = round.wrapping_add(1);
            if round.is_multiple_of(ROUNDS_PER_PROBE) {
                self.forget_ended();
            }
            for Forked { fd, parent } in self.wait_and_end_faults() {
                // On this thread: listed now, protected by the next rounds.
                let (client, ranges, spare) = (parent.client, parent.ranges, parent.spare);
                if let Err(e) = self.list(Uffd::new(fd), client, ranges, spare) {
                    log::error!(
                        "pager: an orphan of client {client:#x} forked; the child is not \
                         guarded ({e:?}): its ranges are the kernel's"
                    );
                }
            }
            self.protect_the_rest();
        }
    }

    /// One round: waits up to a tick for the orphans' events and ends
    /// each fault; returns the children they forked. The list is not held
    /// across the wait (`adopt` must not wait behind it).
    fn wait_and_end_faults(&self) -> Vec<Forked> {
        let orphans = lock(&self.all).clone();
        if orphans.is_empty() {
            std::thread::sleep(TICK);
            return Vec::new();
        }
        let mut fds: Vec<PollFd<'_>> = orphans
            .iter()
            .map(|o| PollFd::from_borrowed_fd(o.uffd.as_fd(), PollFlags::IN))
            .collect();
        let tick = Timespec {
            tv_sec: 0,
            tv_nsec: TICK.as_nanos() as _,
        };
        if !matches!(poll(&mut fds, Some(&tick)), Ok(n) if n > 0) {
            return Vec::new();
        }
        let ready: Vec<usize> = (0..fds.len())
            .filter(|&i| !fds[i].revents().is_empty())
            .collect();
        drop(fds);
        let mut forked = Vec::new();
        for o in ready.into_iter().map(|i| &orphans[i]) {
            let mut events = Vec::new();
            if o.uffd.read_events(&mut events).is_err() {
                continue;
            }
            for e in events {
                match e {
                    Event::Fork { fd } if fd >= 0 => forked.push(Forked {
                        // SAFETY: the kernel installed `fd` for this event;
                        // nothing else owns it.
                        fd: unsafe { OwnedFd::from_raw_fd(fd) },
                        parent: o.clone(),
                    }),
                    e => end_fault(&o.uffd, &e),
                }
            }
        }
        forked
    }

    /// Tries once more to write-protect each orphan that is not yet.
    fn protect_the_rest(&self) {
        let waiting: Vec<Orphan> = lock(&self.all)
            .iter()
            .filter(|o| !o.protected.load(Ordering::Acquire))
            .cloned()
            .collect();
        for o in &waiting {
            try_protect(o);
        }
    }

    /// Drops the orphans whose process ended (their descriptor closes).
    fn forget_ended(&self) {
        lock(&self.all).retain(|o| {
            let gone = o.uffd.write_protect(o.spare, PAGE, false) == Err(Errno::SRCH);
            if gone {
                log::info!("pager: an orphan of client {:#x} ended", o.client);
            }
            !gone
        });
    }
}

/// Write-protects every range of an orphan; `false` while a view change
/// of its address space is being delivered (`EAGAIN`: try again). Other
/// errors (a range the child unmapped) leave that range as it is.
fn try_protect(o: &Orphan) -> bool {
    for &(addr, len) in o.ranges.iter() {
        match o.uffd.write_protect(addr, len, true) {
            Err(Errno::AGAIN) => return false,
            Err(e) => log::warn!("pager: write-protecting an orphan's {addr:#x}+{len:#x}: {e}"),
            Ok(()) => {}
        }
    }
    o.protected.store(true, Ordering::Release);
    true
}

/// Ends an orphan's fault with `SIGBUS`; other events (moves, unmaps)
/// are read and left alone: reading them lets the child go on.
fn end_fault(uffd: &Uffd, e: &Event) {
    let Event::PageFault { address, tid, .. } = *e else {
        return;
    };
    let page = address & !(PAGE - 1);
    match uffd.poison(page, PAGE) {
        Ok(()) => log::warn!("pager: an orphan's access at {page:#x} gets SIGBUS"),
        // Mapped in the child: a write to a write-protected page.
        Err(_) => {
            log::warn!("pager: an orphan's write at {page:#x}: SIGBUS to thread {tid}");
            if let Err(e) = sigbus_thread(tid) {
                log::error!("pager: SIGBUS to thread {tid} of an orphan: {e}");
            }
        }
    }
}

/// Sends `SIGBUS` to thread `tid` alone (a thread pidfd, Linux 6.9).
fn sigbus_thread(tid: u32) -> Result<(), Errno> {
    use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags};
    let pid = i32::try_from(tid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or(Errno::SRCH)?;
    // `PIDFD_THREAD` is `O_EXCL` (`include/uapi/linux/pidfd.h`).
    let thread = PidfdFlags::from_bits_retain(rustix::fs::OFlags::EXCL.bits());
    let fd = pidfd_open(pid, thread)?;
    pidfd_send_signal(&fd, rustix::process::Signal::BUS)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
