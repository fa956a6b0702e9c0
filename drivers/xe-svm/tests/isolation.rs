//! Issue 12, the GPU server: no client can reach, corrupt, exhaust or kill
//! what is not its own. Each test is a defect of the old server, tried
//! through the `Gpu` handler as a hostile client would.

mod common;

use std::time::{Duration, Instant};

use common::{budget, World, PAGE};
use ipc_protocol::interfaces::gpu::{self as g, GpuError};
use ipc_protocol::interfaces::gpu_notify as n;
use ipc_protocol::server::Handler;
use ipc_protocol::types::{BoId, JobStatus, ObjectId, PageCount, PageMask, VmId};
use ipc_protocol::{Capability, Rights};
use xe_svm::budget::GpuBudget;

const A: u64 = 101;
const B: u64 = 102;

fn map_bo(w: &World, badge: u64, vm: u32, bo: u32, gpu_addr: u64) -> Result<(), GpuError> {
    let req = g::MapBo {
        vm: VmId::raw(vm),
        bo: BoId::raw(bo),
        gpu_addr,
    };
    w.call(badge, g::Request::MapBo(req)).map(|_| ())
}

fn destroy_bo(w: &World, badge: u64, bo: u32) -> Result<(), GpuError> {
    let req = g::DestroyBo { bo: BoId::raw(bo) };
    w.call(badge, g::Request::DestroyBo(req)).map(|_| ())
}

/// Old: `(gpu_addr + len) >> 47` wrapped, the PTEs landed at low addresses
/// and `DestroyBo` never removed them.
#[test]
fn map_bo_near_2_pow_64_is_bad_range_and_maps_nothing() {
    let w = World::new(GpuBudget::default());
    let vm = w.create_vm(A).unwrap().vm.get();
    let bo = w.create_bo(A, 2 * PAGE).unwrap();
    for addr in [!0xfff_u64, (1 << 47) - PAGE, 1 << 47, 0x1001] {
        assert_eq!(
            map_bo(&w, A, vm, bo, addr),
            Err(GpuError::BadRange),
            "{addr:#x}"
        );
    }
    // Nothing was mapped: the low range is free for a real mapping.
    map_bo(&w, A, vm, bo, 0).unwrap();
    destroy_bo(&w, A, bo).unwrap();
    assert_eq!(w.accounting(A).all_bos, 0);
}

/// Old: `Ppgtt::unmap` looped `while a < va + len` on a wrapped end.
#[test]
fn unmapping_a_wrapped_range_is_an_error_not_a_loop() {
    let w = World::new(GpuBudget::default());
    let hw = &w.server.inner.hw;
    let mut t = xe_svm::ppgtt::Ppgtt::new(&hw.dev.bar, &hw.pt, 400).unwrap();
    let t0 = Instant::now();
    assert!(t.unmap(&hw.dev.bar, &hw.pt, !0xfff_u64, 2 * PAGE).is_err());
    assert!(t.unmap(&hw.dev.bar, &hw.pt, 1 << 48, PAGE).is_err());
    assert!(t.unmap(&hw.dev.bar, &hw.pt, 0, 2 * PAGE).is_ok());
    assert!(t0.elapsed() < Duration::from_secs(5));
    t.release(&hw.pt);
}

/// Old: a Vec with one entry per 2 MiB was built before any pool check,
/// and the server ran out of memory.
#[test]
fn a_huge_buffer_object_is_refused_before_anything_is_allocated() {
    let w = World::new(budget("bo_bytes=8M"));
    let t0 = Instant::now();
    assert_eq!(w.create_bo(A, !0xfff_u64), Err(GpuError::OutOfMetadata));
    assert_eq!(w.create_bo(A, 1 << 40), Err(GpuError::OutOfMetadata));
    assert!(t0.elapsed() < Duration::from_secs(5));
    // The client's own budget: 8 MiB, then OverBudget to it only.
    w.create_bo(A, 8 << 20).unwrap();
    assert_eq!(w.create_bo(A, PAGE), Err(GpuError::OverBudget));
    w.create_bo(B, 8 << 20)
        .expect("another client never notices");
    let u = w.accounting(A);
    assert_eq!((u.bos, u.bo_bytes), (1, 8 << 20));
}

/// Old: ASIDs were never reused: after 511 `CreateVm` every client got
/// `OutOfMetadata` forever. A destroyed VM's id names nothing after.
#[test]
fn asids_are_reused_and_stale_vm_ids_name_nothing() {
    let w = World::new(GpuBudget::default());
    let first = w.create_vm(A).unwrap();
    w.destroy_vm(A, first.vm.get()).unwrap();
    for i in 0..600 {
        let v = w
            .create_vm(A)
            .unwrap_or_else(|e| panic!("cycle {i}: {e:?}"));
        w.destroy_vm(A, v.vm.get()).unwrap();
    }
    let again = w.create_vm(A).unwrap();
    assert_eq!(again.asid, first.asid, "the ASID was reused");
    assert_ne!(again.vm, first.vm, "under a new id");
    assert_eq!(w.destroy_vm(A, first.vm.get()), Err(GpuError::NoSuchVm));
    assert_eq!(w.destroy_vm(B, again.vm.get()), Err(GpuError::NoSuchVm));
    assert_eq!(w.accounting(A).vms, 1);
}

#[test]
fn the_vm_budget_is_per_client() {
    let w = World::new(budget("vms=2"));
    w.create_vm(A).unwrap();
    w.create_vm(A).unwrap();
    assert_eq!(w.create_vm(A).err(), Some(GpuError::OverBudget));
    w.create_vm(B).expect("another client never notices");
}

/// Another client's BO id, and a stale one whose slot was reused, name
/// nothing.
#[test]
fn stale_and_foreign_bo_ids_name_nothing() {
    let w = World::new(GpuBudget::default());
    let vm_b = w.create_vm(B).unwrap().vm.get();
    let a1 = w.create_bo(A, PAGE).unwrap();
    assert_eq!(map_bo(&w, B, vm_b, a1, 0), Err(GpuError::NoSuchBo));
    assert_eq!(destroy_bo(&w, B, a1), Err(GpuError::NoSuchBo));
    destroy_bo(&w, A, a1).unwrap();
    let a2 = w.create_bo(A, PAGE).unwrap();
    assert_ne!(a1, a2);
    assert_eq!(destroy_bo(&w, A, a1), Err(GpuError::NoSuchBo), "stale");
    assert_eq!(
        destroy_bo(&w, A, a2 ^ 1),
        Err(GpuError::NoSuchBo),
        "guessed"
    );
    destroy_bo(&w, A, a2).unwrap();
}

/// Old: 192 result slots shared by everyone: a flood overwrote other
/// clients' results (`Wait` answered `NoSuchJob`).
#[test]
fn a_job_flood_never_overwrites_another_clients_result() {
    let w = World::new(budget("result_slots=8"));
    let vm_a = w.create_vm(A).unwrap().vm.get();
    let vm_b = w.create_vm(B).unwrap().vm.get();
    let victim = w.touch(A, vm_a, 0x10000, 0).unwrap();
    let first = w.wait(A, victim, 5_000).unwrap();
    assert_eq!(first.status, JobStatus::Completed);
    let mut flood = Vec::new();
    for _ in 0..400 {
        let j = match w.touch(B, vm_b, 0x10000, 0) {
            Ok(j) => j,
            Err(GpuError::OverBudget | GpuError::Busy) => {
                // Its own jobs in flight: wait for the oldest, go on.
                let oldest = flood.last().copied().unwrap();
                let _ = w.wait(B, oldest, 5_000);
                continue;
            }
            Err(e) => panic!("{e:?}"),
        };
        flood.push(j);
    }
    assert!(flood.len() > 300);
    let again = w
        .wait(A, victim, 1_000)
        .expect("the victim's result survives");
    assert_eq!(again.status, JobStatus::Completed);
    // The flood only pushed out the flooder's own oldest results.
    assert_eq!(w.wait(B, flood[0], 1_000).err(), Some(GpuError::NoSuchJob));
    let last = *flood.last().unwrap();
    assert_eq!(w.wait(B, last, 5_000).unwrap().status, JobStatus::Completed);
    assert_eq!(
        w.wait(A, last, 1_000).err(),
        Some(GpuError::NoSuchJob),
        "not A's"
    );
    let held = w.server.inner.session(B).quotas.result_slots.used();
    assert!(held <= 8, "{held} results kept");
}

/// A client that exits leaves nothing: every count is back to zero.
#[test]
fn budgets_come_back_to_zero_after_a_client_goes() {
    let w = World::new(GpuBudget::default());
    let before = w.accounting(B);
    let vm = w.create_vm(A).unwrap().vm.get();
    let bo = w.create_bo(A, 4 << 20).unwrap();
    map_bo(&w, A, vm, bo, 0x40_0000).unwrap();
    let view = ipc_protocol::types::ViewId::raw(77);
    let bind = g::BindView {
        vm: VmId::raw(vm),
        view,
        gpu_addr: 0x1000_0000,
        flags: 0,
    };
    w.call(A, g::Request::BindView(bind)).unwrap();
    let job = w.touch(A, vm, 0x40_0000, 4 << 20).unwrap();
    let svm = w.touch(A, vm, 0x1000_0000, 64 * PAGE).unwrap();
    assert_eq!(w.wait(A, svm, 5_000).unwrap().status, JobStatus::Completed);
    // One more, left running or not when the client goes.
    let _ = w.touch(A, vm, 0x40_0000, 4 << 20).unwrap();
    let u = w.accounting(A);
    assert_eq!((u.vms, u.bos, u.bo_bytes, u.dma_slots), (1, 1, 4 << 20, 1));
    assert!(u.jobs_in_flight <= 2 && u.metadata_bytes > 0);
    assert_eq!(w.wait(A, job, 5_000).unwrap().status, JobStatus::Completed);
    w.disconnect(A);
    // Jobs of the departed client retire on their own.
    let t0 = Instant::now();
    let after = loop {
        let u = w.accounting(B);
        if u.all_jobs_in_flight == 0 || t0.elapsed() > Duration::from_secs(10) {
            break u;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(after.sessions, 1, "only the asker's session is left");
    assert_eq!(
        (after.all_vms, after.all_bos, after.all_jobs_in_flight),
        (before.all_vms, before.all_bos, 0)
    );
    // The object's pages are still in VRAM: it stays known (and keeps its
    // DMA slot) until the pager frees them, as it does when it ends the
    // client's objects.
    assert_eq!(after.all_dma_slots, 1);
    let free = n::FreePages {
        object: ObjectId::raw(77),
        first_page: 0,
        count: PageCount::new(512).unwrap(),
        pages: PageMask::first(512),
    };
    let pager = Capability::new(2, Rights::NOTIFY);
    let req = n::Request::FreePages(free);
    let r = Handler::<n::GpuNotify>::handle(&w.server, &pager, req, vec![]);
    assert!(matches!(r, Ok((n::Reply::FreePages(f), _)) if f.pages == 512));
    assert_eq!(
        w.accounting(B).all_dma_slots,
        0,
        "the object's DMA slot went back"
    );
}

/// Old: 60 DMA slots for everyone; one client binding many objects took
/// them all.
#[test]
fn dma_slots_are_budgeted_per_client() {
    let w = World::new(budget("dma_slots=2"));
    let vm_a = w.create_vm(A).unwrap().vm.get();
    let vm_b = w.create_vm(B).unwrap().vm.get();
    w.bind_view(A, vm_a, 1, 0x1000_0000).unwrap();
    w.bind_view(A, vm_a, 2, 0x2000_0000).unwrap();
    assert_eq!(
        w.bind_view(A, vm_a, 3, 0x3000_0000),
        Err(GpuError::OverBudget)
    );
    assert_eq!(w.accounting(A).dma_slots, 2);
    w.bind_view(B, vm_b, 4, 0x1000_0000)
        .expect("another client never notices");
    // A refused bind leaves nothing behind: the server knows 3 objects.
    assert_eq!(w.accounting(B).all_dma_slots, 3);
    // Unbinding an object's last binding gives its slot back.
    let req = g::Unbind {
        vm: VmId::raw(vm_a),
        gpu_addr: 0x2000_0000,
    };
    w.call(A, g::Request::Unbind(req)).unwrap();
    w.bind_view(A, vm_a, 3, 0x3000_0000).unwrap();
}

/// Past its VRAM share a client's faulted pages are mapped from system
/// memory: its job still completes, and it holds no more VRAM.
#[test]
fn past_its_vram_share_a_client_runs_from_system_memory() {
    let w = World::new(budget("vram_bytes=2M"));
    let vm = w.create_vm(A).unwrap().vm.get();
    w.bind_view(A, vm, 1, 0x1000_0000).unwrap();
    w.bind_view(A, vm, 2, 0x2000_0000).unwrap();
    let first = w.touch(A, vm, 0x1000_0000, 512 * PAGE).unwrap();
    assert_eq!(
        w.wait(A, first, 5_000).unwrap().status,
        JobStatus::Completed
    );
    let used = w.server.inner.vram.used_pages();
    let second = w.touch(A, vm, 0x2000_0000, 512 * PAGE).unwrap();
    assert_eq!(
        w.wait(A, second, 5_000).unwrap().status,
        JobStatus::Completed
    );
    assert_eq!(
        w.server.inner.vram.used_pages(),
        used,
        "no VRAM past the share"
    );
    let held = w.server.inner.session(A).quotas.vram_bytes.used();
    assert_eq!(held, 2 << 20);
}
