//! Where a client's session ends: its endpoint closed (it exited or
//! crashed). Everything it held goes, in one place and in this order:
//! - its VMs: bindings unmapped, TLBs invalidated, page tables freed, ASIDs
//!   free again (objects no VM binds any more give back their DMA slot);
//! - its buffer objects, even if a job of theirs still runs: no PTE reaches
//!   them once its VMs are gone, so the job cannot touch their memory;
//! - its jobs: results dropped; jobs still running keep their device job
//!   slot, ownerless, until they retire (`job_table.rs`).
//!
//! Its quotas come back as the records go; `Gpu::Accounting` shows the
//! server-wide totals back where they were.

use crate::platform::Platform;
use crate::server::Inner;
use crate::sync::lock;

impl<P: Platform> Inner<P> {
    /// Client `badge` is gone: its session ends.
    pub fn end_session(&self, badge: u64) {
        let vms = self.destroy_vms_of(badge);
        let bos = self.destroy_bos_of(badge);
        let Some(session) = self.sessions.take(badge) else {
            return;
        };
        let retired = |j: u32| self.hw.job_result(j);
        lock(&self.jobs).end(&session, &retired);
        let left: Vec<_> = session
            .quotas
            .usage()
            .filter(|(_, used, _)| *used > 0)
            .collect();
        log::info!("xe-svm: client {badge} gone; {vms} VM(s), {bos} buffer object(s) destroyed");
        if !left.is_empty() {
            // Objects it bound stay known while their VRAM pages do (the
            // pager frees them when it ends the client's objects).
            log::debug!("xe-svm: client {badge} still charged after its end: {left:?}");
        }
    }
}
