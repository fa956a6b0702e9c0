//! The pager's budgets: what one client may make it hold, declared once
//! (defaults, the manifest's `--budget name=value,...` flag, the README's
//! table), and the ledger a session charges.
//!
//! A session's [`Ledger`] charges its own quota and the server-wide totals
//! (the `Accounting` reply) in one step; a [`Charge`] gives both back when
//! it drops, so what a client holds is counted exactly as long as it
//! exists: an object until its last reference goes, an address space until
//! its threads have exited. Metadata (page-state words, handle tables) is
//! charged by the session's [`Meta`](session::Meta) allocator to
//! [`Ledger::metadata`] as it is allocated from the arena.

use session::{OverBudget, Quota};

use crate::sync::Arc;

session::budgets! {
    /// What one client may make the pager hold.
    pub struct PagerBudget, PagerQuotas {
        /// Memory objects.
        objects: 256,
        /// Bytes of all its memory objects together (one object may be as large).
        object_bytes: 8 << 30,
        /// View ids: attached views and the records the pager keeps when they move, split or fork.
        views: 1024,
        /// Address spaces (client userfaultfds, a fork's child included).
        spaces: 16,
        /// Threads serving those address spaces (an event reader and the fault workers each).
        fault_threads: 80,
        /// Bytes of the metadata arena: 8 per page of its objects, plus its handle tables.
        metadata_bytes: (8u64 << 30) / 4096 * 8 + (1 << 20),
    }
}

/// Ids a table of one session can issue: 12 bits of the 20-bit handle
/// index; the other 8 bits are the session's slot, so ids are unique
/// server-wide (the GPU server keys bindings by view id).
pub const IDS_PER_SESSION: u32 = 1 << 12;

impl PagerBudget {
    /// No limit at all: the server-wide totals.
    pub fn unlimited() -> Self {
        Self {
            objects: u64::MAX,
            object_bytes: u64::MAX,
            views: u64::MAX,
            spaces: u64::MAX,
            fault_threads: u64::MAX,
            metadata_bytes: u64::MAX,
        }
    }

    /// The arena bytes `clients` clients at their limits and the peers'
    /// `peer_bytes` need together (`None`: past `u64`).
    pub fn arena_bytes_needed(&self, clients: usize, peer_bytes: u64) -> Option<u64> {
        self.metadata_bytes
            .checked_mul(clients as u64)?
            .checked_add(peer_bytes)
    }
}

impl PagerBudget {
    /// The journal bytes `clients` clients at their `objects`, `spaces`
    /// and `views` limits need, with the GPU server's one record (`None`:
    /// past `u64`): one record each (`crate::journal`).
    pub fn journal_bytes_needed(&self, clients: usize) -> Option<u64> {
        self.objects
            .checked_add(self.spaces)?
            .checked_add(self.views)?
            .checked_mul(clients as u64)?
            // One record per GPU server's session.
            .checked_add(crate::core::object::MAX_GPUS as u64)?
            .checked_mul(crate::journal::RECORD_BYTES)
    }
}

/// Picks one quota of a [`PagerQuotas`].
pub type Pick = fn(&PagerQuotas) -> &Quota;

pub fn objects(q: &PagerQuotas) -> &Quota {
    &q.objects
}
pub fn object_bytes(q: &PagerQuotas) -> &Quota {
    &q.object_bytes
}
pub fn views(q: &PagerQuotas) -> &Quota {
    &q.views
}
pub fn spaces(q: &PagerQuotas) -> &Quota {
    &q.spaces
}
pub fn fault_threads(q: &PagerQuotas) -> &Quota {
    &q.fault_threads
}

/// One session's quotas, and the server-wide totals it adds to.
pub struct Ledger {
    quotas: PagerQuotas,
    totals: Arc<PagerQuotas>,
    /// Charged by the session's metadata allocator (its `metadata_bytes`
    /// limit; the field of the same name in the quotas stays unused).
    pub metadata: Arc<Quota>,
}

impl Ledger {
    pub fn new(budget: &PagerBudget, totals: Arc<PagerQuotas>) -> Self {
        Self {
            quotas: PagerQuotas::new(budget),
            totals,
            metadata: Arc::new(Quota::new(budget.metadata_bytes)),
        }
    }

    pub fn quotas(&self) -> &PagerQuotas {
        &self.quotas
    }

    /// Charges every item or none of them.
    pub fn charge(self: &Arc<Self>, items: &[(Pick, u64)]) -> Result<Charge, OverBudget> {
        let mut taken: [(Pick, u64); 2] = [(objects, 0), (objects, 0)];
        for (k, &(pick, n)) in items.iter().take(2).enumerate() {
            if let Err(e) = pick(&self.quotas).try_charge(n) {
                for &(p, m) in &taken[..k] {
                    p(&self.quotas).release(m);
                }
                return Err(e);
            }
            taken[k] = (pick, n);
        }
        for &(pick, n) in &taken {
            // The totals are unlimited; a failure here would be a u64 overflow.
            let _ = pick(&self.totals).try_charge(n);
        }
        Ok(Charge {
            ledger: self.clone(),
            items: taken,
        })
    }

    /// Whether a metadata allocation of `bytes` failed for the session's
    /// quota (rather than for the arena).
    pub fn metadata_over(&self, bytes: u64) -> bool {
        self.metadata
            .used()
            .checked_add(bytes)
            .is_none_or(|n| n > self.metadata.limit())
    }
}

/// What one record holds of its session's budget, given back on drop.
pub struct Charge {
    ledger: Arc<Ledger>,
    items: [(Pick, u64); 2],
}

impl Drop for Charge {
    fn drop(&mut self) {
        for &(pick, n) in &self.items {
            if n > 0 {
                pick(&self.ledger.quotas).release(n);
                pick(&self.ledger.totals).release(n);
            }
        }
    }
}

#[cfg(all(test, not(feature = "shuttle")))]
mod tests {
    use super::*;

    #[test]
    fn a_charge_is_all_or_nothing_and_goes_back_on_drop() {
        let totals = Arc::new(PagerQuotas::new(&PagerBudget::unlimited()));
        let mut b = PagerBudget::default();
        b.apply("objects=2,object_bytes=8K").unwrap();
        let l = Arc::new(Ledger::new(&b, totals.clone()));
        let a = l.charge(&[(objects, 1), (object_bytes, 4096)]).unwrap();
        assert!(l.charge(&[(objects, 1), (object_bytes, 8192)]).is_err());
        assert_eq!(
            l.quotas().objects.used(),
            1,
            "a refused charge takes nothing"
        );
        assert_eq!(totals.object_bytes.used(), 4096);
        drop(a);
        assert!(l.quotas().is_empty());
        assert!(totals.is_empty());
    }

    #[test]
    fn every_client_at_its_limits_fits_the_default_arena() {
        let b = PagerBudget::default();
        let need = b
            .arena_bytes_needed(
                super::super::MAX_CLIENT_SESSIONS,
                super::super::PEER_METADATA,
            )
            .unwrap();
        assert!(need <= super::super::Config::default().arena_bytes);
        // One page of metadata per 4 KiB page of objects: 8 bytes each.
        assert!(b.metadata_bytes >= b.object_bytes / 4096 * 8);
        assert!(b.views <= IDS_PER_SESSION as u64 && b.objects <= IDS_PER_SESSION as u64);
    }
}
