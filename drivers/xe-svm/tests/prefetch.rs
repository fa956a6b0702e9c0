//! `Gpu::Prefetch` (issue 16 item 1): a bound range goes to VRAM with no
//! GPU fault, pages no binding covers are not counted, and every number a
//! client sends is checked (a bad range or another client's VM is an error
//! that moves nothing).

mod common;

use common::{World, OBJECT_PAGES, PAGE};
use ipc_protocol::interfaces::gpu::{self as g, GpuError};
use ipc_protocol::types::{JobStatus, VmId};
use xe_svm::budget::GpuBudget;

const A: u64 = 101;
const B: u64 = 102;
const BASE: u64 = 0x1000_0000;

fn prefetch(w: &World, badge: u64, vm: u32, addr: u64, len: u64) -> Result<(u64, u64), GpuError> {
    let req = g::Prefetch {
        vm: VmId::raw(vm),
        gpu_addr: addr,
        len,
    };
    match w.call(badge, g::Request::Prefetch(req))? {
        g::Reply::Prefetch(p) => Ok((p.in_vram, p.pages)),
        other => panic!("not a Prefetched reply: {other:?}"),
    }
}

#[test]
fn a_prefetched_range_runs_without_a_gpu_fault() {
    let w = World::new(GpuBudget::default());
    let vm = w.create_vm(A).unwrap().vm.get();
    w.bind(A, vm, 10, BASE);
    let len = OBJECT_PAGES * PAGE;
    assert_eq!(
        prefetch(&w, A, vm, BASE, len),
        Ok((OBJECT_PAGES, OBJECT_PAGES))
    );
    let faults = w.stats(A).gpu_faults;
    let job = w.touch(A, vm, BASE, len).unwrap();
    assert_eq!(w.wait(A, job, 10_000).unwrap().status, JobStatus::Completed);
    assert_eq!(
        w.stats(A).gpu_faults,
        faults,
        "the job found every page mapped"
    );
    // Again: nothing left to move, the same count.
    assert_eq!(
        prefetch(&w, A, vm, BASE, len),
        Ok((OBJECT_PAGES, OBJECT_PAGES))
    );
}

/// A VM with view 10 bound at `BASE`, whose next `collects` of it get
/// nothing (the stand-in pager's `held`).
fn bound_and_held(collects: usize) -> (World, u32) {
    let w = World::new(GpuBudget::default());
    let vm = w.create_vm(A).unwrap().vm.get();
    w.bind(A, vm, 10, BASE);
    w.pager.held.lock().unwrap().push((10, collects));
    (w, vm)
}

/// Pages a CPU fault has just brought in stay locked for a moment: a
/// chunk whose first collects get nothing is tried again, and moves.
#[test]
fn a_chunk_held_for_a_moment_is_moved_all_the_same() {
    let (w, vm) = bound_and_held(3);
    let len = OBJECT_PAGES * PAGE;
    assert_eq!(
        prefetch(&w, A, vm, BASE, len),
        Ok((OBJECT_PAGES, OBJECT_PAGES))
    );
}

/// A chunk held for good is left once the call's retries are spent: the
/// prefetch answers, with the pages where they are, and does not spin.
#[test]
fn a_chunk_held_for_good_is_left_without_spinning() {
    let (w, vm) = bound_and_held(usize::MAX);
    let t0 = std::time::Instant::now();
    let len = OBJECT_PAGES * PAGE;
    assert_eq!(prefetch(&w, A, vm, BASE, len), Ok((0, OBJECT_PAGES)));
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        t0.elapsed()
    );
}

#[test]
fn pages_no_binding_covers_are_not_counted() {
    let w = World::new(GpuBudget::default());
    let vm = w.create_vm(A).unwrap().vm.get();
    w.bind(A, vm, 10, BASE);
    let end = BASE + OBJECT_PAGES * PAGE;
    // Half inside the binding's last chunk, half past its end.
    assert_eq!(
        prefetch(&w, A, vm, end - 16 * PAGE, 32 * PAGE),
        Ok((16, 32))
    );
    assert_eq!(prefetch(&w, A, vm, end, 2 << 20), Ok((0, 512)));
}

#[test]
fn ranges_and_vms_are_checked() {
    let w = World::new(GpuBudget::default());
    let vm = w.create_vm(A).unwrap().vm.get();
    w.bind(A, vm, 10, BASE);
    let bad = GpuError::BadRange;
    for (addr, len) in [
        (BASE, 0),
        (BASE + 1, PAGE),
        (BASE, PAGE + 1),
        (!0xfff, 2 * PAGE),
        ((1 << 47) - PAGE, 2 * PAGE),
        (BASE, (1 << 30) + PAGE),
    ] {
        assert_eq!(
            prefetch(&w, A, vm, addr, len),
            Err(bad),
            "{addr:#x}+{len:#x}"
        );
    }
    assert_eq!(
        prefetch(&w, B, vm, BASE, PAGE),
        Err(GpuError::NoSuchVm),
        "another client's VM"
    );
    assert_eq!(
        prefetch(&w, A, vm ^ 0x8000, BASE, PAGE),
        Err(GpuError::NoSuchVm)
    );
    assert_eq!(w.stats(A).vram_used, 0, "nothing moved");
}
