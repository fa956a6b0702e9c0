//! The GPU server's metadata arena (`arena.rs`): object frame words and VM
//! fault logs come from an arena sized at boot, never the global heap. A
//! full arena is `OutOfMetadata` to the client that asked while the others
//! go on; what a session held goes back to the arena when it ends; a boot
//! whose arena cannot hold every client at its budget is a typed error.

mod common;

use common::{World, OBJECT_PAGES, PAGE};
use ipc_protocol::interfaces::gpu::{self as g, GpuError};
use ipc_protocol::interfaces::gpu_notify as n;
use ipc_protocol::server::Handler;
use ipc_protocol::types::{JobStatus, ObjectId, PageCount, PageMask, VmId};
use ipc_protocol::{Capability, Rights};
use xe_svm::arena::{Config, ConfigError};
use xe_svm::budget::GpuBudget;
use xe_svm::host::{BootError, GpuServer};

const A: u64 = 101;
const B: u64 = 102;
/// Arena bytes of one VM's fault log.
const RING: usize = xe_svm::fault_log::RING_BYTES as usize;
/// Arena bytes of one object's frame words (4 per page).
const FRAMES: usize = OBJECT_PAGES as usize * 4;

/// Two VMs' fault logs and one object's frames fit; a second object's
/// frames do not. The client whose bind finds no room gets
/// `OutOfMetadata`, is charged nothing for it, and binds once the other
/// client's object is gone; the other never notices.
#[test]
fn a_full_arena_is_out_of_metadata_to_the_binding_client_only() {
    let w = World::with_arena(GpuBudget::default(), 2 * RING + FRAMES + FRAMES / 2);
    let arena = w.server.inner.arena().clone();
    let start = arena.used();
    let vm_a = w.create_vm(A).unwrap().vm.get();
    let vm_b = w.create_vm(B).unwrap().vm.get();
    w.bind_view(A, vm_a, 1, 0x1000_0000).unwrap();
    assert_eq!(
        w.bind_view(B, vm_b, 2, 0x1000_0000),
        Err(GpuError::OutOfMetadata)
    );
    let b = w.accounting(B);
    assert_eq!(
        (b.metadata_bytes, b.dma_slots),
        (0, 0),
        "B is charged nothing"
    );
    assert_eq!(
        b.all_dma_slots, 1,
        "the refused object's DMA slot went back"
    );
    // A goes on: its binding works, its job runs.
    let job = w.touch(A, vm_a, 0x1000_0000, 16 * PAGE).unwrap();
    assert_eq!(w.wait(A, job, 5_000).unwrap().status, JobStatus::Completed);
    assert_eq!(w.accounting(A).metadata_bytes, FRAMES as u64);
    // Its pages went to VRAM: the pager frees them, then A unbinds, and
    // its object's frames go back to the arena.
    free_pages(&w, 1);
    w.unbind(A, vm_a, 0x1000_0000).unwrap();
    assert_eq!(w.accounting(A).metadata_bytes, 0);
    w.bind_view(B, vm_b, 2, 0x1000_0000).expect("room again");
    w.disconnect(A);
    w.disconnect(B);
    assert_eq!(arena.used(), start, "every session's metadata went back");
}

/// A VM's fault log is taken from the arena when the VM is made: no room
/// is `OutOfMetadata` at `CreateVm`, and a destroyed VM gives it back.
#[test]
fn a_vm_whose_fault_log_finds_no_room_is_out_of_metadata() {
    // The smallest arena there is holds two fault logs, not three.
    let bytes = 4096;
    assert!(2 * RING < bytes && bytes < 3 * RING);
    let w = World::with_arena(GpuBudget::default(), bytes);
    let first = w.create_vm(A).unwrap().vm.get();
    w.create_vm(A).unwrap();
    assert_eq!(w.create_vm(A).err(), Some(GpuError::OutOfMetadata));
    assert_eq!(w.accounting(A).vms, 2, "the refused VM is not charged");
    let req = g::DestroyVm {
        vm: VmId::raw(first),
    };
    w.call(A, g::Request::DestroyVm(req)).unwrap();
    w.create_vm(B).expect("its room went back");
}

/// What sessions held goes back to the arena when they end: objects whose
/// pages are in VRAM stay until the pager frees them (as it does when it
/// ends the client's objects), then the arena is back where it started and
/// the session's metadata budget at zero.
#[test]
fn the_arena_is_back_to_its_start_after_the_sessions_end() {
    let w = World::new(GpuBudget::default());
    let arena = w.server.inner.arena().clone();
    let start = arena.used();
    let session = w.server.inner.session(A);
    let vm = w.create_vm(A).unwrap().vm.get();
    w.bind_view(A, vm, 7, 0x1000_0000).unwrap();
    w.bind_view(A, vm, 8, 0x2000_0000).unwrap();
    let job = w.touch(A, vm, 0x1000_0000, 64 * PAGE).unwrap();
    assert_eq!(w.wait(A, job, 5_000).unwrap().status, JobStatus::Completed);
    assert!(arena.used() >= start + RING + 2 * FRAMES);
    assert_eq!(session.quotas.metadata_bytes.used(), 2 * FRAMES as u64);
    w.disconnect(A);
    // View 8's object had no page in VRAM: it went with the VM.
    assert_eq!(session.quotas.metadata_bytes.used(), FRAMES as u64);
    free_pages(&w, 7);
    assert_eq!(session.quotas.metadata_bytes.used(), 0);
    assert_eq!(session.quotas.dma_slots.used(), 0);
    assert_eq!(arena.used(), start);
}

/// A boot whose arena cannot hold every client at its `metadata_bytes`
/// limit is refused with a typed error, before the server exists.
#[test]
fn a_boot_with_an_arena_smaller_than_the_budget_needs_is_a_typed_error() {
    let mut cfg = Config::for_clients(GpuBudget::default(), 8);
    let need = cfg.arena_bytes;
    cfg.arena_bytes = need / 2;
    let r = World::boot(|dev, migrate| GpuServer::new(dev, migrate, None, 64 << 20, &cfg));
    let want = ConfigError::ArenaTooSmall {
        need,
        have: need / 2,
    };
    assert_eq!(r.err(), Some(BootError::Config(want)));
    // A budget no arena can hold: refused too, not an overflow or an abort.
    let budget = GpuBudget {
        metadata_bytes: u64::MAX / 4,
        ..GpuBudget::default()
    };
    let cfg = Config::for_clients(budget, 8);
    let r = World::boot(|dev, migrate| GpuServer::new(dev, migrate, None, 64 << 20, &cfg));
    assert!(matches!(r.err(), Some(BootError::Config(_))));
}

/// `GpuNotify::FreePages` of every page of `object`, as the pager sends.
fn free_pages(w: &World, object: u32) {
    let free = n::FreePages {
        object: ObjectId::raw(object),
        first_page: 0,
        count: PageCount::new(OBJECT_PAGES as u16).unwrap(),
        pages: PageMask::first(OBJECT_PAGES as usize),
    };
    let pager = Capability::new(2, Rights::NOTIFY);
    let req = n::Request::FreePages(free);
    Handler::<n::GpuNotify>::handle(&w.server, &pager, req, vec![]).expect("freed");
}
