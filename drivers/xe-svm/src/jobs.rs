//! GPU jobs as clients see them: a batch job checked and submitted, and a
//! job's end as the device's job table records it.
//!
//! A batch job (`Gpu::SubmitBatch`) names a batch buffer of MI
//! instructions by its GPU address; the device fetches and runs it through
//! the VM's page tables (`hw::model`), so the batch, its data and its fence
//! may all be SVM memory the GPU faults in. Every number is checked here
//! before it reaches the device.

use std::sync::atomic::Ordering;

use hw::xe::commands::{BatchSubmit, Command};
use hw::xe::layout::{JobState, Ring};
use ipc_protocol::interfaces::gpu::{GpuError, SubmitBatch};
use ipc_protocol::types::JobStatus;

use crate::host::HostPlatform;
use crate::server::Inner;

/// Client GPU addresses lie below 2^47 (the user half of the VA space),
/// as bindings do.
const USER_VA_END: u64 = 1 << 47;

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

/// Checks and submits `req` for `owner`; returns the job id.
pub fn submit_batch(
    inner: &Inner<HostPlatform>,
    owner: u64,
    req: &SubmitBatch,
) -> Result<u32, GpuError> {
    check_batch(req)?;
    let vm = req.vm.get();
    if !inner.owns_vm(owner, vm) {
        return Err(GpuError::NoSuchVm);
    }
    // A batch may reach any buffer object of its VM: all are locked and
    // placed before it runs, and marked busy with it.
    inner.submit_with_bos(vm, 0, USER_VA_END, || {
        let job = inner.next_job.fetch_add(1, Ordering::Relaxed);
        inner.note_job(job, owner);
        let b = BatchSubmit {
            job,
            asid: vm,
            batch_addr: req.batch_addr,
            fence_addr: req.fence_addr,
            fence_value: req.fence_value,
        };
        inner
            .hw
            .dev
            .bar
            .submit(Ring::Compute, job, &Command::Batch(b))
            .map_err(|_| GpuError::DeviceLost)?;
        Ok(job)
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
