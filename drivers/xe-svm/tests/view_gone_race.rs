//! A view that goes while a GPU fault migrates its pages (the race of
//! hmm-tests' `anon_teardown`): the object stays known until the migration
//! ends, so the pages the pager now records in VRAM are ours to move back
//! or free. (Before: `ViewGone` forgot the object mid-migration; the copy
//! landed in VRAM no object named, the pager's CPU faults got
//! `NoSuchObject` from `MigrateToRam` forever, and the VRAM leaked.)

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{World, PAGE};
use ipc_protocol::interfaces::gpu_notify as n;
use ipc_protocol::server::Handler;
use ipc_protocol::types::{JobStatus, ObjectId, PageCount, PageMask, ViewId};
use ipc_protocol::{Capability, Rights};
use xe_svm::budget::GpuBudget;

const A: u64 = 101;
const BASE: u64 = 0x1000_0000;

fn notify(w: &World, req: n::Request) -> Result<n::Reply, n::NotifyError> {
    let pager = Capability::new(2, Rights::NOTIFY);
    Handler::<n::GpuNotify>::handle(&w.server, &pager, req, vec![]).map(|(r, _)| r)
}

#[test]
fn a_view_that_goes_mid_migration_leaves_its_pages_reachable() {
    let w = World::new(GpuBudget::default());
    w.pager.stalled.lock().unwrap().push(10);
    let vm = w.create_vm(A).unwrap().vm.get();
    w.bind(A, vm, 10, BASE);
    let job = w.touch(A, vm, BASE, 4 * PAGE).unwrap();
    // The fault's collect waits in the pager; meanwhile the view goes.
    std::thread::sleep(Duration::from_millis(200));
    let gone = notify(
        &w,
        n::Request::ViewGone(n::ViewGone {
            view: ViewId::raw(10),
        }),
    );
    assert!(
        matches!(&gone, Ok(n::Reply::ViewGone(u)) if u.bindings == 1),
        "{gone:?}"
    );
    w.pager.release.store(true, Ordering::Release);
    let end = w.wait(A, job, 10_000).unwrap().status;
    assert_ne!(
        end,
        JobStatus::Running,
        "the job ends once its fault is served"
    );
    // The migration finished into VRAM the server still accounts to the
    // object: the pager can free (or move back) what it recorded there.
    assert!(
        w.stats(A).vram_used > 0,
        "the collected pages were copied to VRAM"
    );
    let free = n::FreePages {
        object: ObjectId::raw(10),
        first_page: 0,
        count: PageCount::new(512).unwrap(),
        pages: PageMask::first(512),
    };
    let freed = notify(&w, n::Request::FreePages(free));
    assert!(
        matches!(&freed, Ok(n::Reply::FreePages(f)) if f.pages > 0),
        "the object was forgotten with pages in VRAM: {freed:?}"
    );
    assert_eq!(w.stats(A).vram_used, 0, "no VRAM left behind");
    assert_eq!(
        w.accounting(A).all_dma_slots,
        0,
        "the object went after its pages"
    );
}

/// The same end by the other road: the pages of an object no view binds
/// any more are copied back (`MigrateToRam`: the pager evicts pages no
/// view reaches, with their data). The copy changes nothing here (a pager
/// past its deadline may have given up on it): the pages keep their VRAM
/// until the `FreePages` the pager sends once the copies landed, and with
/// the last one the object goes with its DMA slot. (Before: only
/// `FreePages` and the ends of bindings and migrations forgot it, so the
/// slot leaked; the hostile harness saw `all_dma_slots` one too high.)
#[test]
fn an_unbound_object_goes_when_its_last_page_is_copied_back() {
    let w = World::new(GpuBudget::default());
    let vm = w.create_vm(A).unwrap().vm.get();
    w.bind(A, vm, 10, BASE);
    let job = w.touch(A, vm, BASE, PAGE).unwrap();
    assert_eq!(w.wait(A, job, 10_000).unwrap().status, JobStatus::Completed);
    // The fault moved the page's whole block (its size is the server's).
    let resident = (w.stats(A).vram_used / PAGE) as usize;
    assert!(resident > 0, "the page is in VRAM");
    let staging = hw::shm::Region::create("staging", 2 << 20).unwrap();
    let pager = Capability::new(2, Rights::NOTIFY);
    let attach = n::Request::AttachStaging(n::AttachStaging {
        size_bytes: 2 << 20,
    });
    Handler::<n::GpuNotify>::handle(&w.server, &pager, attach, vec![staging.dup_fd().unwrap()])
        .unwrap();
    let gone = n::Request::ViewGone(n::ViewGone {
        view: ViewId::raw(10),
    });
    notify(&w, gone).unwrap();
    assert_eq!(w.accounting(A).all_dma_slots, 1, "its page still holds it");
    let back = n::MigrateToRam {
        object: ObjectId::raw(10),
        first_page: 0,
        count: PageCount::new(512).unwrap(),
        pages: PageMask::first(resident),
        staging_offset: 0,
    };
    let copied = notify(&w, n::Request::MigrateToRam(back));
    assert!(
        matches!(&copied, Ok(n::Reply::MigrateToRam(m)) if m.copied.count() as usize == resident),
        "{copied:?}"
    );
    assert_eq!(
        (w.stats(A).vram_used / PAGE) as usize,
        resident,
        "a copy back keeps the VRAM until FreePages"
    );
    assert_eq!(w.accounting(A).all_dma_slots, 1, "and the object");
    let free = n::FreePages {
        object: ObjectId::raw(10),
        first_page: 0,
        count: PageCount::new(512).unwrap(),
        pages: PageMask::first(resident),
    };
    notify(&w, n::Request::FreePages(free)).unwrap();
    assert_eq!(w.stats(A).vram_used, 0, "FreePages dropped it");
    assert_eq!(
        w.accounting(A).all_dma_slots,
        0,
        "the object went with its last page"
    );
}
