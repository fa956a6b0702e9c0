//! `Gpu::FaultLog` (issue 16 item 7): a GPU access where nothing is bound
//! ends its job `Faulted` and shows in the VM's log (address, access,
//! type); the log keeps the last `FAULT_LOG_LEN` and counts all; it names
//! only the caller's VMs.

mod common;

use common::{World, PAGE};
use ipc_protocol::interfaces::gpu::{self as g, GpuError, FAULT_LOG_LEN};
use ipc_protocol::types::{JobStatus, VmId};
use xe_svm::budget::GpuBudget;

const A: u64 = 101;
const B: u64 = 102;
const HOLE: u64 = 0x4000_0000;

fn log(w: &World, badge: u64, vm: u32) -> Result<g::Faults, GpuError> {
    let req = g::FaultLog { vm: VmId::raw(vm) };
    match w.call(badge, g::Request::FaultLog(req))? {
        g::Reply::FaultLog(f) => Ok(f),
        other => panic!("not a fault log: {other:?}"),
    }
}

fn fault_at(w: &World, vm: u32, addr: u64) {
    let job = w.touch(A, vm, addr, PAGE).unwrap();
    assert_eq!(w.wait(A, job, 10_000).unwrap().status, JobStatus::Faulted);
}

#[test]
fn an_access_where_nothing_is_bound_is_logged() {
    let w = World::new(GpuBudget::default());
    let vm = w.create_vm(A).unwrap().vm.get();
    assert_eq!(log(&w, A, vm).unwrap().total, 0);
    fault_at(&w, vm, HOLE);
    let l = log(&w, A, vm).unwrap();
    let faults = l.faults.into_vec();
    assert_eq!((faults.len(), l.total), (1, 1));
    assert_eq!(faults[0].address, HOLE);
    assert_eq!(faults[0].fault_type, 0, "not present");
    assert_eq!(
        log(&w, B, vm).err(),
        Some(GpuError::NoSuchVm),
        "another client's VM"
    );
}

#[test]
fn the_log_keeps_the_last_entries_and_counts_all() {
    let w = World::new(GpuBudget::default());
    let vm = w.create_vm(A).unwrap().vm.get();
    let n = FAULT_LOG_LEN as u64 + 6;
    for i in 0..n {
        fault_at(&w, vm, HOLE + i * PAGE);
    }
    let l = log(&w, A, vm).unwrap();
    let faults = l.faults.into_vec();
    assert_eq!((faults.len(), l.total), (FAULT_LOG_LEN, n));
    assert_eq!(faults[0].address, HOLE + 6 * PAGE, "the oldest went first");
    assert_eq!(faults.last().unwrap().address, HOLE + (n - 1) * PAGE);
}
