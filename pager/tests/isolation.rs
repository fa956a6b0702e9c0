//! Isolation (issue 12, the pager's side) with real userfaultfd views: a
//! client's budgets are its own, what it sends is checked, the objects it
//! gets are sealed, its ids name nothing outside its session, the end of a
//! session releases what it held (the GPU server's collects in flight
//! included), the server-wide totals come back to zero, and usage is
//! counted rather than scanned.
#![cfg(not(feature = "shuttle"))]

mod common;

use std::time::{Duration, Instant};

use common::{
    attach, buffer, client, create, eventually, map, rig, rig_with, snapshot, Rig, CLIENT,
};
use ipc_protocol::client::{CallError, Client};
use ipc_protocol::interfaces::pager::{
    Accounting, Advise, DestroyObject, DetachView, Pager, PagerError, PagerTotals, Prefetch,
    Snapshot,
};
use ipc_protocol::interfaces::pager_migrate::{Collect, MigrateError, OpenView};
use ipc_protocol::interfaces::pager_reclaim::Usage;
use ipc_protocol::types::{Advice, GpuId, Location, ObjectId, PageCount, PageStateCode, ViewId};
use pager::host::Config;

const DEADLINE: Duration = Duration::from_secs(10);

/// The server's typed error of a call, if it failed with one.
fn error<T, E: Copy>(r: Result<T, CallError<E>>) -> Option<E> {
    match r {
        Err(CallError::Server(e)) => Some(e),
        _ => None,
    }
}

fn config(budget: &str) -> Config {
    let mut cfg = Config::default();
    cfg.core.budget.apply(budget).expect("a budget");
    cfg
}

fn totals(c: &Client<Pager>) -> PagerTotals {
    c.call(Accounting {}).expect("the accounting query")
}

/// Waits (bounded) until `done` holds.
#[test]
fn objects_past_the_budget_are_that_clients_error_only() {
    let r = rig_with(config("objects=3,object_bytes=64M"));
    let other = client(&r, 101);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(create(&r.pager, 1 << 20).unwrap().0);
    }
    assert_eq!(
        error(create(&r.pager, 1 << 20)),
        Some(PagerError::OverBudget)
    );
    // Another client never notices.
    let (a, _) = create(&other, 32 << 20).unwrap();
    assert_eq!(
        error(create(&other, 33 << 20)),
        Some(PagerError::OverBudget),
        "past its bytes of objects"
    );
    assert_eq!(error(create(&other, 128 << 20)), Some(PagerError::BadSize));
    other.call(DestroyObject { object: a }).unwrap();
    assert!(
        create(&other, 33 << 20).is_ok(),
        "bytes come back with the object"
    );
    // A destroyed object gives its place back.
    r.pager.call(DestroyObject { object: held[0] }).unwrap();
    assert!(create(&r.pager, 1 << 20).is_ok());
}

#[test]
fn metadata_past_the_budget_is_over_budget() {
    // 8 bytes of page state per page: 64 KiB covers 8192 pages (32 MiB).
    let r = rig_with(config("metadata_bytes=64K"));
    assert_eq!(
        error(create(&r.pager, 64 << 20)),
        Some(PagerError::OverBudget)
    );
    assert!(create(&r.pager, 16 << 20).is_ok());
}

#[test]
fn address_spaces_and_their_threads_past_the_budget_are_over_budget() {
    // 5 threads per space (an event reader and 4 workers): room for 2.
    let r = rig_with(config("spaces=8,fault_threads=10"));
    let (o, fd) = create(&r.pager, 1 << 20).unwrap();
    let addr = map(&fd, 1 << 20);
    let a = attach(&r.pager, o, addr, 128).unwrap();
    attach(&r.pager, o, addr + (128 << 12), 128).unwrap();
    let (o2, fd2) = create(&r.pager, 1 << 20).unwrap();
    let addr2 = map(&fd2, 1 << 20);
    assert_eq!(
        error(attach(&r.pager, o2, addr2, 256)),
        Some(PagerError::OverBudget)
    );
    let t = totals(&r.pager);
    assert_eq!(
        (t.spaces, t.views),
        (2, 2),
        "a refused attach leaves nothing"
    );
    r.pager.call(DetachView { view: a }).unwrap();
    // The space's threads exit within a poll interval; then it is free.
    eventually("a detached view's threads were never given back", || {
        totals(&r.pager).fault_threads == 5
    });
    assert!(attach(&r.pager, o2, addr2, 256).is_ok());
}

#[test]
fn attach_view_ranges_are_checked() {
    let r = rig();
    let (o, fd) = create(&r.pager, 1 << 20).unwrap();
    let addr = map(&fd, 1 << 20);
    let refused = |addr: u64, first: u64, pages: u64| {
        let uffd = pager::host::uffd::create_for_client().unwrap();
        error(r.pager.call_with_handles(
            ipc_protocol::interfaces::pager::AttachView {
                object: o,
                addr,
                object_first_page: first,
                pages,
            },
            vec![uffd],
        ))
    };
    let top = !4095u64;
    assert_eq!(
        refused(top, 0, 256),
        Some(PagerError::OutOfRange),
        "addr + len wraps"
    );
    assert_eq!(
        refused((1 << 47) - 4096, 0, 2),
        Some(PagerError::OutOfRange),
        "past the user half"
    );
    assert_eq!(
        refused(addr + 1, 0, 1),
        Some(PagerError::OutOfRange),
        "unaligned"
    );
    assert_eq!(
        refused(addr, u64::MAX, 1),
        Some(PagerError::OutOfRange),
        "first page wraps"
    );
    assert_eq!(
        refused(addr, 0, 257),
        Some(PagerError::OutOfRange),
        "past the object"
    );
    assert_eq!(refused(addr, 0, 0), Some(PagerError::OutOfRange), "empty");
    let t = totals(&r.pager);
    assert_eq!(
        (t.views, t.spaces),
        (0, 0),
        "refused attaches leave nothing behind"
    );
    assert!(attach(&r.pager, o, addr, 256).is_ok());
}

#[test]
fn advise_prefetch_and_snapshot_ranges_are_checked() {
    let r = rig();
    let (o, _fd) = create(&r.pager, 1 << 20).unwrap();
    let advise = |first_page: u64, pages: u64| {
        error(r.pager.call(Advise {
            object: o,
            first_page,
            pages,
            advice: Advice::PreferDevice,
        }))
    };
    assert_eq!(
        advise(250, 10),
        Some(PagerError::OutOfRange),
        "past the object"
    );
    assert_eq!(advise(u64::MAX, 2), Some(PagerError::OutOfRange), "wraps");
    assert_eq!(advise(0, 256), None);
    let prefetch = |first_page: u64| {
        error(r.pager.call(Prefetch {
            object: o,
            first_page,
            count: PageCount::new(8).unwrap(),
            to: Location::Device,
            gpu: GpuId::new(0).unwrap(),
        }))
    };
    assert_eq!(prefetch(u64::MAX - 2), Some(PagerError::OutOfRange));
    assert_eq!(prefetch(0), Some(PagerError::NotSupported));
    let snap = error(r.pager.call(Snapshot {
        object: o,
        first_page: 255,
        count: PageCount::new(2).unwrap(),
    }));
    assert_eq!(snap, Some(PagerError::OutOfRange));
}

/// Each object keeps at most `MAX_ADVICE_RANGES` advised ranges: one
/// more is that client's `OverBudget`, and advice that merges with a
/// neighbour or resets a range still goes.
#[test]
fn advised_ranges_past_the_cap_are_over_budget() {
    use pager::core::object::MAX_ADVICE_RANGES;
    let r = rig();
    let pages = 2 * MAX_ADVICE_RANGES as u64 + 4;
    let (o, _fd) = create(&r.pager, pages * 4096).unwrap();
    let advise = |first_page: u64, advice| {
        error(r.pager.call(Advise {
            object: o,
            first_page,
            pages: 1,
            advice,
        }))
    };
    // Every other page: ranges that cannot merge.
    for i in 0..MAX_ADVICE_RANGES as u64 {
        assert_eq!(advise(2 * i, Advice::PreferDevice), None, "range {i}");
    }
    let past = 2 * MAX_ADVICE_RANGES as u64;
    assert_eq!(
        advise(past, Advice::PreferDevice),
        Some(PagerError::OverBudget)
    );
    assert_eq!(
        advise(1, Advice::PreferDevice),
        None,
        "joins its neighbours"
    );
    assert_eq!(
        advise(0, Advice::Default),
        None,
        "shrinking a range adds none"
    );
}

#[test]
fn object_memfds_are_sealed_against_shrink_and_grow() {
    use rustix::fs::{fallocate, ftruncate, FallocateFlags, SealFlags};
    let r = rig();
    let (o, fd) = create(&r.pager, 1 << 20).unwrap();
    assert!(ftruncate(&fd, 4096).is_err(), "a client shrank its object");
    assert!(ftruncate(&fd, 2 << 20).is_err(), "a client grew its object");
    assert!(
        fallocate(&fd, FallocateFlags::empty(), 0, 2 << 20).is_err(),
        "a client grew its object with fallocate"
    );
    assert!(
        rustix::fs::fcntl_add_seals(&fd, SealFlags::WRITE).is_err(),
        "the seals themselves are sealed"
    );
    assert_eq!(rustix::fs::fstat(&fd).unwrap().st_size, 1 << 20);
    // The copy the GPU server gets is the same sealed object.
    let addr = map(&fd, 1 << 20);
    let view = attach(&r.pager, o, addr, 256).unwrap();
    let (_, mut fds) = r
        .migrate
        .call_with_handles(
            OpenView {
                view,
                client: CLIENT,
            },
            vec![],
        )
        .unwrap();
    assert!(ftruncate(fds.pop().unwrap(), 4096).is_err());
}

#[test]
fn another_clients_ids_and_stale_ids_name_nothing() {
    let r = rig();
    let b = client(&r, 101);
    let (o, fd) = create(&r.pager, 1 << 20).unwrap();
    let view = attach(&r.pager, o, map(&fd, 1 << 20), 256).unwrap();
    let (ob, fdb) = create(&b, 1 << 20).unwrap();
    let view_b = attach(&b, ob, map(&fdb, 1 << 20), 256).unwrap();
    assert_ne!(view, view_b, "view ids are unique server-wide");
    let snap = |c: &Client<Pager>, object: ObjectId| {
        error(c.call(Snapshot {
            object,
            first_page: 0,
            count: PageCount::new(1).unwrap(),
        }))
    };
    assert_eq!(snap(&b, o), Some(PagerError::NoSuchObject));
    assert_eq!(
        error(b.call(DetachView { view })),
        Some(PagerError::NoSuchView)
    );
    assert_eq!(
        error(b.call(DestroyObject { object: o })),
        Some(PagerError::NoSuchObject)
    );
    let open = |view: ViewId, client: u64| {
        error(
            r.migrate
                .call_with_handles(OpenView { view, client }, vec![]),
        )
    };
    assert_eq!(
        open(view, 101),
        Some(MigrateError::NoSuchView),
        "another client's view"
    );
    assert_eq!(open(view_b, CLIENT), Some(MigrateError::NoSuchView));
    assert_eq!(
        open(ViewId::raw(view.get() ^ (1 << 20)), CLIENT),
        Some(MigrateError::NoSuchView)
    );
    // A destroyed object's id is stale: the next object in its slot has
    // another generation.
    r.pager.call(DetachView { view }).unwrap();
    r.pager.call(DestroyObject { object: o }).unwrap();
    let (o2, _) = create(&r.pager, 1 << 20).unwrap();
    assert_ne!(o2, o);
    assert_eq!(
        snap(&r.pager, o),
        Some(PagerError::NoSuchObject),
        "a stale id"
    );
    assert_eq!(snap(&r.pager, o2), None);
    assert_eq!(
        open(view, CLIENT),
        Some(MigrateError::NoSuchView),
        "a stale view id"
    );
}

/// The GPU server dies with a chunk collected: every page it collected
/// goes back to its state, unlocked, and the writer it held off goes on.
#[test]
fn the_gpu_servers_end_undoes_its_collects_in_flight() {
    let Rig {
        server,
        pager,
        migrate,
        reclaim,
        gpu,
    } = rig();
    let r = Rig {
        server,
        pager,
        migrate,
        reclaim,
        gpu,
    };
    let (obj, _fd, buf) = buffer(&r, 2 << 20);
    for (i, w) in buf.iter_mut().enumerate() {
        *w = i as u32;
    }
    // The fill's fault publishes SYSTEM a moment after the writer goes on.
    eventually("the filled chunk never settled", || {
        snapshot(&r, obj, 0, 512) == vec![PageStateCode::System; 512]
    });
    let c = r
        .migrate
        .call(Collect {
            object: obj.gpu,
            first_page: 0,
            count: PageCount::new(512).unwrap(),
            gpu: GpuId::new(0).unwrap(),
            generation: 1,
            pager_generation: 0,
        })
        .unwrap();
    assert_eq!(c.got.count(), 512);
    assert_eq!(totals(&r.pager).collects, 1);
    assert_eq!(snapshot(&r, obj, 0, 4), vec![PageStateCode::Migrating; 4]);
    // A writer meets the collect's write protection and waits in the pager.
    let base = buf.as_mut_ptr() as usize;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: inside the mapping; only this thread writes word 1024 * 3.
        unsafe { std::ptr::write_volatile((base as *mut u32).add(3 * 1024), 0xfeed) };
        let _ = tx.send(());
    });
    std::thread::sleep(Duration::from_millis(20));
    // The GPU server's endpoint closes (it died) before it finalized.
    let Rig {
        server,
        pager,
        migrate,
        reclaim,
        gpu,
    } = r;
    drop(migrate);
    rx.recv_timeout(DEADLINE)
        .expect("the writer stayed blocked: the dead GPU server's collect kept its pages");
    let r = Rig {
        server,
        pager,
        migrate: Client::new(std::sync::Arc::new(
            ipc_protocol::transport::InProc::pair().0,
        )),
        reclaim,
        gpu,
    };
    eventually("collected pages stayed locked", || {
        snapshot(&r, obj, 0, 512) == vec![PageStateCode::System; 512]
    });
    assert_eq!(totals(&r.pager).collects, 0);
    for (i, w) in buf.iter().enumerate() {
        let want = if i == 3 * 1024 { 0xfeed } else { i as u32 };
        assert_eq!(*w, want, "word {i}");
    }
}

#[test]
fn totals_come_back_to_zero_after_a_client_exits() {
    let Rig {
        server,
        pager,
        migrate,
        reclaim,
        gpu,
    } = rig();
    let r = Rig {
        server,
        pager,
        migrate,
        reclaim,
        gpu,
    };
    let observer = client(&r, 101);
    let before = totals(&observer);
    assert_eq!((before.objects, before.views, before.spaces), (0, 0, 0));
    let (obj, fd, buf) = buffer(&r, 2 << 20);
    buf.fill(9);
    common::gpu_migrate_all(&r, obj, &fd, 0, 512);
    let (o2, fd2) = create(&r.pager, 4 << 20).unwrap();
    attach(&r.pager, o2, map(&fd2, 4 << 20), 1024).unwrap();
    let during = totals(&observer);
    assert_eq!((during.objects, during.object_bytes), (2, 6 << 20));
    assert_eq!(
        (during.views, during.spaces, during.fault_threads),
        (2, 2, 10)
    );
    assert!(during.arena_bytes >= before.arena_bytes + (1536 * 8));
    // The client exits: its endpoint closes.
    let Rig {
        server,
        pager,
        migrate,
        reclaim,
        gpu,
    } = r;
    drop(pager);
    eventually("the exited client's budget did not come back", || {
        let t = totals(&observer);
        (
            t.objects,
            t.object_bytes,
            t.views,
            t.spaces,
            t.fault_threads,
            t.collects,
        ) == (0, 0, 0, 0, 0, 0)
            && t.arena_bytes + 1536 * 8 <= during.arena_bytes
    });
    assert!(gpu.vram.lock().unwrap().is_empty(), "its VRAM was freed");
    assert_eq!(
        totals(&observer).sessions,
        2,
        "the observer's and the GPU server's"
    );
    drop((server, migrate, reclaim));
}

/// `Usage` costs the same whatever the objects' sizes: it reads counts
/// kept as pages change, instead of scanning every page of every object
/// under the lock every CPU fault needed.
#[test]
fn usage_is_counted_not_scanned() {
    let r = rig();
    let (obj, fd, buf) = buffer(&r, 2 << 20);
    buf.fill(3);
    common::gpu_migrate_all(&r, obj, &fd, 0, 256);
    let usage = || r.reclaim.call(Usage {}).unwrap();
    let u = usage();
    assert_eq!((u.vram_bytes, u.sram_bytes), (1 << 20, 1 << 20));
    let fastest = || {
        (0..30)
            .map(|_| {
                let t = Instant::now();
                usage();
                t.elapsed()
            })
            .min()
            .unwrap()
    };
    let small = fastest();
    // 4 GiB of object: a million state words.
    let (_big, _) = create(&r.pager, 4 << 30).unwrap();
    let big = fastest();
    assert!(
        big < small * 20 + Duration::from_micros(200),
        "usage took {big:?} with 1M more pages, {small:?} without: it scans"
    );
    assert_eq!(usage().vram_bytes, 1 << 20);
}
