//! `Pager::SyncViews`: waiting for the view changes a client's `munmap`,
//! `mremap` or `fork` already returned from.
//!
//! **Why tickets, and why before the read.** The kernel lets those calls
//! return once the pager has *read* their event; the pager applies it and
//! tells the GPU server afterwards. A runtime's reader takes a ticket from
//! the space's session *before* it reads and hands it back once what it
//! read is applied and every GPU note is sent. So a client whose `munmap`
//! returned finds a ticket open for its event, and `SyncViews` waits until
//! no ticket taken before the call is open. Tickets belong to the session,
//! not the space, so a space that stops because its last view went (and
//! leaves the session's list) is still waited for until its notes are sent.
//! Later tickets (a busy space reading faults) never hold the wait up.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ipc_protocol::interfaces::pager::PagerError;

use super::runtime::{Pause, Runtime};
use super::session::ClientSession;
use super::Core;
use crate::sync::{lock, Mutex};

/// How long `SyncViews` waits before it answers `Busy`.
pub const SYNC_LIMIT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Tickets {
    next: u64,
    open: BTreeSet<u64>,
}

/// The reads of a session's spaces whose changes are not all applied yet.
#[derive(Default)]
pub struct ChangeTickets {
    t: Mutex<Tickets>,
}

/// An open ticket; handed back when dropped (whatever path the reader
/// leaves by).
pub struct Ticket<'a> {
    of: &'a ChangeTickets,
    n: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        lock(&self.of.t).open.remove(&self.n);
    }
}

impl ChangeTickets {
    /// A reader is about to read view changes.
    pub fn open(&self) -> Ticket<'_> {
        let mut t = lock(&self.t);
        let n = t.next;
        t.next += 1;
        t.open.insert(n);
        Ticket { of: self, n }
    }

    /// Tickets issued so far.
    pub fn issued(&self) -> u64 {
        lock(&self.t).next
    }

    /// Whether every ticket issued before `mark` is handed back.
    pub fn closed_before(&self, mark: u64) -> bool {
        lock(&self.t).open.first().is_none_or(|&n| n >= mark)
    }
}

impl<R: Runtime> Core<R> {
    /// `Pager::SyncViews` for session `s`.
    pub fn sync_views(&self, s: &ClientSession<R>) -> Result<(), PagerError> {
        let mark = s.changes.issued();
        let deadline = Instant::now() + SYNC_LIMIT;
        let mut attempt = 0;
        while !s.changes.closed_before(mark) {
            if Instant::now() >= deadline {
                log::warn!("pager: client {:#x}: view changes still pending", s.badge);
                return Err(PagerError::Busy);
            }
            self.rt.pause(Pause::SyncViews, attempt);
            attempt = attempt.saturating_add(1);
        }
        Ok(())
    }
}

#[cfg(all(test, not(feature = "shuttle")))]
mod tests {
    use super::*;

    #[test]
    fn only_tickets_taken_before_the_mark_count() {
        let c = ChangeTickets::default();
        assert!(
            c.closed_before(c.issued()),
            "nothing read: nothing to wait for"
        );
        let first = c.open();
        let mark = c.issued();
        assert!(!c.closed_before(mark));
        let later = c.open();
        drop(first);
        assert!(
            c.closed_before(mark),
            "a read started after the mark does not count"
        );
        assert!(!c.closed_before(c.issued()));
        drop(later);
        assert!(c.closed_before(c.issued()));
    }
}
