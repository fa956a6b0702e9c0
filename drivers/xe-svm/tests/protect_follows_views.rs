//! The GPU's access follows the CPU's through view changes, as mprotect
//! state does: a moved view's protection moves with it (`ViewCopied`), and
//! a range whose view went is read-write again for whatever maps there next
//! (IGT's threads-*-mmap-remap-ro: buffers moving through each other's old
//! addresses must not inherit their read-only state).

mod common;

use common::{World, PAGE};
use ipc_protocol::interfaces::gpu::{self as g, PROT_READ};
use ipc_protocol::interfaces::gpu_notify as n;
use ipc_protocol::server::Handler;
use ipc_protocol::types::{JobStatus, KernelKind, ViewId, VmId};
use ipc_protocol::{Capability, Rights};
use xe_svm::budget::GpuBudget;

const A: u64 = 101;
const OLD: u64 = 0x1000_0000;
const NEW: u64 = 0x2000_0000;

fn notify(w: &World, req: n::Request) {
    let pager = Capability::new(2, Rights::NOTIFY);
    Handler::<n::GpuNotify>::handle(&w.server, &pager, req, vec![]).unwrap();
}

/// A GPU write of one page at `addr`: how the job ended.
fn write(w: &World, vm: u32, addr: u64) -> JobStatus {
    let req = g::Submit {
        vm: VmId::raw(vm),
        kernel: KernelKind::IncrementAll,
        addr,
        len: PAGE,
        stride: 4,
        value: 1,
        threads: 1,
    };
    let job = match w.call(A, g::Request::Submit(req)).unwrap() {
        g::Reply::Submit(s) => s.job.get(),
        r => panic!("unexpected reply {r:?}"),
    };
    w.wait(A, job, 10_000).unwrap().status
}

#[test]
fn protection_moves_with_a_view_and_goes_with_its_range() {
    let w = World::new(GpuBudget::default());
    let vm = w.create_vm(A).unwrap().vm.get();
    w.bind(A, vm, 10, OLD);
    let protect = g::Protect {
        vm: VmId::raw(vm),
        gpu_addr: OLD,
        len: PAGE,
        prot: PROT_READ,
    };
    w.call(A, g::Request::Protect(protect)).unwrap();
    assert_eq!(
        write(&w, vm, OLD),
        JobStatus::Faulted,
        "read-only before the move"
    );
    let copied = n::ViewCopied {
        view: ViewId::raw(10),
        new_view: ViewId::raw(11),
        from: OLD,
        to: NEW,
    };
    notify(&w, n::Request::ViewCopied(copied));
    notify(
        &w,
        n::Request::ViewGone(n::ViewGone {
            view: ViewId::raw(10),
        }),
    );
    assert_eq!(
        write(&w, vm, NEW),
        JobStatus::Faulted,
        "the protection moved"
    );
    assert_eq!(
        write(&w, vm, NEW + PAGE),
        JobStatus::Completed,
        "only its page"
    );
    // Another view mapped at the old address starts read-write.
    w.bind(A, vm, 12, OLD);
    assert_eq!(
        write(&w, vm, OLD),
        JobStatus::Completed,
        "the old range forgot it"
    );
}
