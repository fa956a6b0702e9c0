//! Issue 12, fairness and checked jobs: one client's stalled GPU fault
//! does not delay another's (old: one fault worker served everyone), a
//! binding a job still uses cannot be unbound, and a job's range and
//! stride are checked before the device sees them.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{World, PAGE};
use ipc_protocol::interfaces::gpu::{self as g, GpuError};
use ipc_protocol::types::{JobStatus, KernelKind, VmId};
use xe_svm::budget::GpuBudget;

const A: u64 = 101;
const B: u64 = 102;
const BASE: u64 = 0x1000_0000;

fn bind(w: &World, badge: u64, vm: u32, view: u32) {
    w.bind(badge, vm, view, BASE);
}

fn unbind(w: &World, badge: u64, vm: u32) -> Result<g::Reply, GpuError> {
    let req = g::Unbind {
        vm: VmId::raw(vm),
        gpu_addr: BASE,
    };
    w.call(badge, g::Request::Unbind(req))
}

#[test]
fn a_stalled_fault_does_not_delay_another_clients_faults() {
    let w = World::new(GpuBudget::default());
    w.pager.stalled.lock().unwrap().push(10);
    let vm_a = w.create_vm(A).unwrap().vm.get();
    let vm_b = w.create_vm(B).unwrap().vm.get();
    bind(&w, A, vm_a, 10);
    bind(&w, B, vm_b, 20);
    // A batch job (the device runs those beside kernels) whose batch
    // buffer faults in A's stalled binding.
    let batch = g::SubmitBatch {
        vm: VmId::raw(vm_a),
        batch_addr: BASE,
        fence_addr: 0,
        fence_value: 0,
    };
    let stuck = match w.call(A, g::Request::SubmitBatch(batch)).unwrap() {
        g::Reply::SubmitBatch(s) => s.job.get(),
        r => panic!("{r:?}"),
    };
    std::thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    let ok = w.touch(B, vm_b, BASE, 4 * PAGE).unwrap();
    let done = w.wait(B, ok, 4_000).unwrap();
    assert_eq!(
        done.status,
        JobStatus::Completed,
        "B waited behind A's fault"
    );
    assert!(t0.elapsed() < Duration::from_secs(4));
    // A's job still waits on its fault: its binding is busy.
    assert_eq!(w.wait(A, stuck, 10).unwrap().status, JobStatus::Running);
    assert_eq!(unbind(&w, A, vm_a).err(), Some(GpuError::Busy));
    w.pager.release.store(true, Ordering::Release);
    let end = w.wait(A, stuck, 8_000).unwrap().status;
    assert_ne!(
        end,
        JobStatus::Running,
        "A's job ends once its fault is served"
    );
    unbind(&w, A, vm_a).expect("idle now");
}

fn submit(w: &World, vm: u32, addr: u64, len: u64, stride: u64) -> Result<g::Reply, GpuError> {
    let req = g::Submit {
        vm: VmId::raw(vm),
        kernel: KernelKind::StridedWrite,
        addr,
        len,
        stride,
        value: 1,
        threads: 1,
    };
    w.call(A, g::Request::Submit(req))
}

#[test]
fn job_ranges_and_strides_are_checked() {
    let w = World::new(GpuBudget::default());
    let vm = w.create_vm(A).unwrap().vm.get();
    let bad = [
        (u64::MAX - PAGE, 2 * PAGE, 4),  // the end wraps
        ((1 << 47) - PAGE, 2 * PAGE, 4), // past the user half
        (BASE, PAGE, 1 << 32),           // a stride past 32 bits
    ];
    for (addr, len, stride) in bad {
        let r = submit(&w, vm, addr, len, stride);
        assert_eq!(
            r.err(),
            Some(GpuError::BadRange),
            "{addr:#x}+{len:#x}/{stride}"
        );
    }
    assert_eq!(w.accounting(A).jobs_in_flight, 0, "nothing was charged");
    assert!(submit(&w, vm, BASE, 0, 4).is_ok());
}
