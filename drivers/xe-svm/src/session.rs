//! Sessions: what the GPU server keeps per client badge (DESIGN 2).
//!
//! A session holds the client's quotas ([`GpuQuotas`], limits from the
//! manifest). The client's VMs, buffer objects and jobs live in server-wide
//! handle tables (`session::HandleTable`: generation-tagged ids, so a
//! stale or guessed id names nothing) whose entries carry their owner's
//! badge; every lookup checks it, so another client's id is `NoSuch*`
//! too. The tables are server-wide because what they index is: a VM's
//! handle index is its ASID (the device's), a job's record is keyed by the
//! device's job table slot.
//!
//! A session is created by its client's first request and ends in one
//! place (`end.rs`), when its endpoint closes.
//!
//! Locking: the session map's lock is a leaf (nothing else is taken while
//! it is held); quotas are atomics.

use std::collections::BTreeMap;
use std::sync::Arc;

use ipc_protocol::interfaces::gpu::GpuError;
use session::{OverBudget, Quota};

use crate::budget::{GpuBudget, GpuQuotas};
use crate::sync::{lock, Mutex};

/// Picks one quota of a [`GpuQuotas`].
pub type Pick = fn(&GpuQuotas) -> &Quota;

/// One client's session.
#[derive(Debug)]
pub struct GpuSession {
    pub badge: u64,
    pub quotas: GpuQuotas,
}

impl GpuSession {
    /// Takes `n` of the quota `pick` chooses, or answers `OverBudget`.
    pub fn charge(&self, pick: Pick, n: u64) -> Result<(), GpuError> {
        pick(&self.quotas)
            .try_charge(n)
            .map_err(|OverBudget| GpuError::OverBudget)
    }

    pub fn release(&self, pick: Pick, n: u64) {
        pick(&self.quotas).release(n);
    }
}

/// Every live session, by badge.
pub struct Sessions {
    budget: GpuBudget,
    map: Mutex<BTreeMap<u64, Arc<GpuSession>>>,
}

impl Sessions {
    pub fn new(budget: GpuBudget) -> Self {
        Self {
            budget,
            map: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn budget(&self) -> &GpuBudget {
        &self.budget
    }

    /// `badge`'s session, made on its first request.
    pub fn get_or_open(&self, badge: u64) -> Arc<GpuSession> {
        lock(&self.map)
            .entry(badge)
            .or_insert_with(|| {
                Arc::new(GpuSession {
                    badge,
                    quotas: GpuQuotas::new(&self.budget),
                })
            })
            .clone()
    }

    pub fn find(&self, badge: u64) -> Option<Arc<GpuSession>> {
        lock(&self.map).get(&badge).cloned()
    }

    /// Removes `badge`'s session (its end, `end.rs`).
    pub fn take(&self, badge: u64) -> Option<Arc<GpuSession>> {
        lock(&self.map).remove(&badge)
    }

    pub fn count(&self) -> usize {
        lock(&self.map).len()
    }
}

pub fn vms(q: &GpuQuotas) -> &Quota {
    &q.vms
}
pub fn bindings(q: &GpuQuotas) -> &Quota {
    &q.bindings
}
pub fn bos(q: &GpuQuotas) -> &Quota {
    &q.bos
}
pub fn bo_bytes(q: &GpuQuotas) -> &Quota {
    &q.bo_bytes
}
pub fn jobs_in_flight(q: &GpuQuotas) -> &Quota {
    &q.jobs_in_flight
}
pub fn result_slots(q: &GpuQuotas) -> &Quota {
    &q.result_slots
}
pub fn dma_slots(q: &GpuQuotas) -> &Quota {
    &q.dma_slots
}
pub fn vram_bytes(q: &GpuQuotas) -> &Quota {
    &q.vram_bytes
}
pub fn metadata_bytes(q: &GpuQuotas) -> &Quota {
    &q.metadata_bytes
}
