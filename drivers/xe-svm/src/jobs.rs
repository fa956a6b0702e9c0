//! GPU jobs as clients see them: a batch job checked and submitted, and a
//! job's end as the device's job table records it.
//!
//! A batch job (`Gpu::SubmitBatch`) names a batch buffer of MI
//! instructions by its GPU address; the device fetches and runs it through
//! the VM's page tables (`hw::model`), so the batch, its data and its fence
//! may all be SVM memory the GPU faults in. Every number is checked here
//! before it reaches the device.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hw::xe::commands::{BatchSubmit, Command, KernelLaunch, KernelOp};
use hw::xe::layout::{JobState, Ring};
use ipc_protocol::interfaces::gpu::{GpuError, JobDone, Submit, SubmitBatch};
use ipc_protocol::types::{JobStatus, KernelKind};

use crate::host::HostPlatform;
use crate::job_table::Lookup;
use crate::server::{Inner, USER_VA_END};
use crate::session::{self as ses, GpuSession};
use crate::sync::lock;

/// How long a submit waits for one of its client's own jobs to retire when
/// the client has `jobs_in_flight` running already (back-pressure on that
/// client only); then `OverBudget`.
const JOB_ROOM_WAIT: Duration = Duration::from_secs(30);
/// One wait on the device inside [`JOB_ROOM_WAIT`].
const JOB_ROOM_POLL: Duration = Duration::from_millis(200);

/// The batch dword aligned and the fence qword aligned (or 0), both
/// inside the user half: anything else is `BadRange`.
pub fn check_batch(req: &SubmitBatch) -> Result<(), GpuError> {
    let batch_ok = req.batch_addr < USER_VA_END && req.batch_addr % 4 == 0;
    let fence_ok = req.fence_addr == 0
        || (req.fence_addr % 8 == 0
            && req
                .fence_addr
                .checked_add(8)
                .is_some_and(|end| end <= USER_VA_END));
    if batch_ok && fence_ok {
        Ok(())
    } else {
        Err(GpuError::BadRange)
    }
}

/// A kernel's range inside the user half (no wrap) and a stride that
/// fits the device's 32 bits: anything else is `BadRange`.
pub fn check_kernel(req: &Submit) -> Result<(), GpuError> {
    let range_ok = req
        .addr
        .checked_add(req.len)
        .is_some_and(|end| end <= USER_VA_END);
    if range_ok && u32::try_from(req.stride).is_ok() {
        Ok(())
    } else {
        Err(GpuError::BadRange)
    }
}

fn kernel_op(k: KernelKind) -> KernelOp {
    match k {
        KernelKind::TouchPages => KernelOp::TouchPages,
        KernelKind::IncrementAll => KernelOp::IncrementAll,
        KernelKind::StridedWrite => KernelOp::StridedWrite,
        KernelKind::RandomRead => KernelOp::RandomRead,
        KernelKind::AtomicAdd => KernelOp::AtomicAdd,
        KernelKind::Speculative => KernelOp::Speculative,
    }
}

impl Inner<HostPlatform> {
    /// A device job's (status, faults) once it retired.
    fn device_result(&self, job: u32) -> Option<(u32, u32)> {
        self.hw.dev.bar.job_result(job)
    }

    /// Charges one of `session`'s jobs in flight, first waiting (holding
    /// no lock) for its own oldest job to retire while it has none left.
    fn reserve_job(&self, session: &GpuSession) -> Result<(), GpuError> {
        let retired = |j: u32| self.device_result(j);
        let t0 = Instant::now();
        loop {
            let oldest = {
                let mut jobs = lock(&self.jobs);
                jobs.harvest(session, &retired);
                if session.charge(ses::jobs_in_flight, 1).is_ok() {
                    return Ok(());
                }
                jobs.oldest_running(session.badge)
            };
            let (Some(job), true) = (oldest, t0.elapsed() < JOB_ROOM_WAIT) else {
                return Err(GpuError::OverBudget);
            };
            let _ = self.hw.dev.bar.wait_job(job, JOB_ROOM_POLL);
        }
    }

    /// Submits a job for `owner` with its job in flight charged first
    /// (given back if the submit fails).
    fn submit_charged<R>(
        &self,
        owner: u64,
        submit: impl FnOnce(&std::sync::Arc<GpuSession>) -> Result<R, GpuError>,
    ) -> Result<R, GpuError> {
        let session = self.session(owner);
        self.reserve_job(&session)?;
        submit(&session).inspect_err(|_| session.release(ses::jobs_in_flight, 1))
    }

    /// Admits the next device job for `session` (its job table record),
    /// pushes `cmd(job)` on the compute ring; returns the device job and
    /// the client's job id. Runs under the submit lock.
    fn push_job(
        &self,
        session: &std::sync::Arc<GpuSession>,
        cmd: impl FnOnce(u32) -> Command,
    ) -> Result<(u32, u64), GpuError> {
        let session = session.clone();
        let job = self.next_job.load(Ordering::Relaxed);
        let retired = |j: u32| self.device_result(j);
        let h = lock(&self.jobs).admit(&session, job, &retired)?;
        self.next_job.fetch_add(1, Ordering::Relaxed);
        let r = self.hw.dev.bar.submit(Ring::Compute, job, &cmd(job));
        if r.is_err() {
            lock(&self.jobs).cancel(&session, h);
            return Err(GpuError::DeviceLost);
        }
        Ok((job, self.client_job_id(h.raw())))
    }

    /// Checks and submits kernel `req` for `owner`; returns the job id.
    pub fn submit_kernel(&self, owner: u64, req: &Submit) -> Result<u64, GpuError> {
        check_kernel(req)?;
        let asid = self
            .asid_of(owner, req.vm.get())
            .ok_or(GpuError::NoSuchVm)?;
        // Buffer objects the job reaches are locked and placed first.
        self.submit_charged(owner, |s| {
            self.submit_with_bos(asid, req.addr, req.len, || {
                self.push_job(s, |job| {
                    Command::Launch(KernelLaunch {
                        job,
                        asid,
                        op: kernel_op(req.kernel),
                        addr: req.addr,
                        len: req.len,
                        stride: req.stride as u32,
                        value: req.value,
                        threads: req.threads,
                    })
                })
            })
        })
    }

    /// Waits up to `timeout_ms` for `owner`'s job `id`.
    pub fn wait_job(&self, owner: u64, id: u64, timeout_ms: u32) -> Result<JobDone, GpuError> {
        let t0 = Instant::now();
        let done = |state: u32, faults: u32| JobDone {
            status: job_status(state),
            faults: faults as u64,
            elapsed_us: t0.elapsed().as_micros() as u64,
        };
        let id = self.local_job_id(id)?;
        let device_job = match lock(&self.jobs).lookup(owner, id)? {
            Lookup::Done(state, faults) => return Ok(done(state, faults)),
            Lookup::Running(job) => job,
        };
        let timeout = Duration::from_millis(timeout_ms as u64);
        match self.hw.dev.bar.wait_job(device_job, timeout) {
            Ok(Some(r)) => {
                let session = self.session(owner);
                lock(&self.jobs).complete(&session, id, r);
                Ok(done(r.0, r.1))
            }
            // Its slot went to a later job: harvested meanwhile.
            Ok(None) => match lock(&self.jobs).lookup(owner, id)? {
                Lookup::Done(state, faults) => Ok(done(state, faults)),
                Lookup::Running(_) => Err(GpuError::NoSuchJob),
            },
            Err(_) => Ok(JobDone {
                status: JobStatus::Running,
                faults: 0,
                elapsed_us: t0.elapsed().as_micros() as u64,
            }),
        }
    }
}

/// Checks and submits `req` for `owner`; returns the job id.
pub fn submit_batch(
    inner: &Inner<HostPlatform>,
    owner: u64,
    req: &SubmitBatch,
) -> Result<u64, GpuError> {
    check_batch(req)?;
    let asid = inner
        .asid_of(owner, req.vm.get())
        .ok_or(GpuError::NoSuchVm)?;
    // A batch may reach any buffer object of its VM: all are locked and
    // placed before it runs, and marked busy with it.
    inner.submit_charged(owner, |s| {
        inner.submit_with_bos(asid, 0, USER_VA_END, || {
            inner.push_job(s, |job| {
                Command::Batch(BatchSubmit {
                    job,
                    asid,
                    batch_addr: req.batch_addr,
                    fence_addr: req.fence_addr,
                    fence_value: req.fence_value,
                })
            })
        })
    })
}

/// The client's view of a job table status word.
pub fn job_status(state: u32) -> JobStatus {
    match JobState::from_u32(state) {
        Some(JobState::Done) => JobStatus::Completed,
        Some(JobState::Faulted) => JobStatus::Faulted,
        Some(JobState::BadCommand) => JobStatus::BadCommand,
        Some(JobState::Hung) => JobStatus::Hung,
        None => {
            log::error!("xe-svm: the device reported job status {state}");
            JobStatus::Faulted
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipc_protocol::types::VmId;

    fn req(batch_addr: u64, fence_addr: u64) -> SubmitBatch {
        SubmitBatch {
            vm: VmId::raw(1),
            batch_addr,
            fence_addr,
            fence_value: 1,
        }
    }

    #[test]
    fn addresses_are_checked_before_the_device_sees_them() {
        assert_eq!(check_batch(&req(0x7fff_0000_1000, 0)), Ok(()));
        assert_eq!(check_batch(&req(0x1004, 0x7fff_ffff_fff8)), Ok(()));
        let bad = [
            (0x1002, 0),       // batch not dword aligned
            (1 << 47, 0),      // batch above the user half
            (!3, 0),           // non-canonical
            (0x1000, 0x2004),  // fence not qword aligned
            (0x1000, 1 << 47), // fence above the user half
            (0x1000, !7),      // fence whose end overflows
        ];
        for (batch, fence) in bad {
            assert_eq!(
                check_batch(&req(batch, fence)),
                Err(GpuError::BadRange),
                "{batch:#x} {fence:#x}"
            );
        }
    }

    #[test]
    fn every_device_status_has_a_client_status() {
        assert_eq!(job_status(1), JobStatus::Completed);
        assert_eq!(job_status(2), JobStatus::Faulted);
        assert_eq!(job_status(3), JobStatus::BadCommand);
        assert_eq!(job_status(4), JobStatus::Hung);
        assert_eq!(job_status(99), JobStatus::Faulted);
    }
}
