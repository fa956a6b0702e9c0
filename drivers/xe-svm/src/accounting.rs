//! `Gpu::Accounting`: what the caller's session holds against its budget,
//! and what the whole server holds, counted from its tables (not from the
//! quotas), so a test can see that an ended session left nothing behind.

use ipc_protocol::interfaces::gpu::GpuUsage;

use crate::host::HostPlatform;
use crate::server::Inner;
use crate::sync::lock;

impl Inner<HostPlatform> {
    pub fn accounting(&self, owner: u64) -> GpuUsage {
        let session = self.session(owner);
        let retired = |j: u32| self.hw.dev.bar.job_result(j);
        let all_jobs = {
            let mut jobs = lock(&self.jobs);
            jobs.harvest(&session, &retired);
            jobs.in_flight(&retired)
        };
        let q = &session.quotas;
        let (all_bos, _) = self.bos.count();
        GpuUsage {
            vms: q.vms.used(),
            bos: q.bos.used(),
            bo_bytes: q.bo_bytes.used(),
            jobs_in_flight: q.jobs_in_flight.used(),
            dma_slots: q.dma_slots.used(),
            metadata_bytes: q.metadata_bytes.used(),
            sessions: self.sessions.count() as u64,
            all_vms: self.vm_count() as u64,
            all_bos: all_bos as u64,
            all_jobs_in_flight: all_jobs as u64,
            all_dma_slots: self.object_count() as u64,
        }
    }
}
