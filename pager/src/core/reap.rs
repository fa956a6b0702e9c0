//! Spaces whose process is gone.
//!
//! **Why a probe.** Linux sends no userfaultfd event when an address space
//! ends: a forked child that exits says nothing, and its space would keep
//! its place in its owner's `spaces` budget (and its threads') until a
//! collect tried to write-protect one of its views and found the process
//! gone (`backend.rs`). A client that forks children over pages no collect
//! touches would, after [`super::budget`]'s 16 of them, have its next fork
//! not followed, and that child would read its VRAM pages as the memfd's
//! holes. So the runtime answers [`Runtime::process_gone`], a probe that
//! changes nothing in a live process, and two places ask it:
//! - a space's idle event reader, now and then ([`Core::reap_if_gone`]);
//! - a new space that finds its owner's budget full asks of every space of
//!   the owner first, and waits a little for the threads of those it
//!   stopped to give their budget back ([`Core::charge_space`]).
//!
//! **The probe's page.** The host probes with a write-protect clear on one
//! page, which answers `ESRCH` once the process is gone. On a page of a
//! view it would lift the protection a collect set there, so the page
//! probed is one no view of the space covers ([`spare_page`]).

use ipc_protocol::interfaces::pager::PagerError;

use super::budget::{fault_threads, spaces, Charge, Pick};
use super::runtime::{Pause, Runtime};
use super::session::ClientSession;
use super::view::Space;
use super::Core;
use crate::sync::Arc;

/// The lowest page a probe uses: Linux's default `mmap_min_addr`, below
/// which the kernel refuses a range outright.
const SPARE_FROM: u64 = 0x1_0000;

/// Pauses a new space waits, at most, for the threads of the spaces it
/// found gone to exit and give their budget back.
const BUDGET_WAITS: u32 = 20;

impl<R: Runtime> Core<R> {
    /// Stops `space` if its process is gone; returns whether it was.
    pub fn reap_if_gone(&self, space: &Space<R>) -> bool {
        if space.stopped() || !self.rt.process_gone(&space.port, spare_page(space)) {
            return false;
        }
        log::info!(
            "pager: space {}: its process is gone; retiring it",
            space.id
        );
        self.space_gone(space);
        true
    }

    /// Stops every space of `session` whose process is gone; returns how
    /// many it stopped.
    pub fn reap_gone_spaces(&self, session: &ClientSession<R>) -> usize {
        let spaces = session.spaces();
        spaces.iter().filter(|s| self.reap_if_gone(s)).count()
    }

    /// Charges a space and its threads to `session`. A `new` one that finds
    /// the budget full first retires the spaces whose process is gone, then
    /// waits a little for their threads to give their places back.
    pub(super) fn charge_space(
        &self,
        session: &Arc<ClientSession<R>>,
        new: bool,
    ) -> Result<Charge, PagerError> {
        let threads = self.rt.threads_per_space();
        let picks: [(Pick, u64); 2] = [(spaces, 1), (fault_threads, threads)];
        let mut reaped = false;
        let mut attempt = 0;
        loop {
            if let Ok(c) = session.ledger.charge(&picks) {
                return Ok(c);
            }
            if !new || attempt >= BUDGET_WAITS {
                return Err(PagerError::OverBudget);
            }
            if !reaped {
                reaped = true;
                if self.reap_gone_spaces(session) == 0 {
                    return Err(PagerError::OverBudget);
                }
            }
            self.rt.pause(Pause::SpaceBudget, attempt);
            attempt += 1;
        }
    }
}

/// A page of `space`'s addresses that none of its views covers.
pub fn spare_page<R: Runtime>(space: &Space<R>) -> u64 {
    let mut views = space.views();
    views.sort_by_key(|v| v.addr);
    let mut at = SPARE_FROM;
    for v in views {
        if at >= v.addr && at < v.end() {
            at = v.end();
        }
    }
    at
}
