//! A restarted GPU server asks the pager where its predecessor's pages
//! are (`PagerMigrate::Resident`, issue 14): the runs come from the page
//! states, named by the ids the predecessor knew the objects by, and the
//! collects the predecessor left go back unlocked.
#![cfg(not(feature = "shuttle"))]

use ipc_protocol::interfaces::pager_migrate as m;
use ipc_protocol::types::{GpuId, PageCount};
use pager::migrate::Chunk;
use pager::state::Residency;
use pager::testing::runtime::{
    gpu_collect, gpu_migrate, gpu_open, model_core, object_with_view, seed, small_config, ModelCore,
};
use std::time::Duration;

const CLIENT: u64 = 100;
const GPU: u64 = 1;
const A: u64 = 0x1000_0000;
const B: u64 = 0x2000_0000;
const PAGE: u64 = 4096;

fn resident(core: &ModelCore, gpu: u8) -> m::ResidentRuns {
    let g = core.gpu_session(GPU, 0).unwrap();
    let req = m::Request::Resident(m::Resident {
        gpu: GpuId::new(gpu).unwrap(),
        generation: 2,
        from_object: 0,
        from_page: 0,
    });
    match core.migrate_request(&g, req).expect("resident") {
        (m::Reply::Resident(r), _) => r,
        (r, _) => panic!("unexpected {r:?}"),
    }
}

#[test]
fn a_restarted_gpu_server_learns_its_pages_and_its_predecessors_collects_go() {
    let core = model_core(small_config(""));
    let s = core.client(CLIENT).unwrap();
    let (a, view_a) = object_with_view(&core, &s, 8, A).unwrap();
    let (b, view_b) = object_with_view(&core, &s, 8, B).unwrap();
    let (obj_a, obj_b) = (s.object(a).unwrap(), s.object(b).unwrap());
    seed(&obj_a, |p| 100 + p as u64);
    seed(&obj_b, |p| 200 + p as u64);
    let g = core.gpu_session(GPU, 0).unwrap();
    let gid_a = gpu_open(&core, &g, CLIENT, view_a).unwrap();
    let gid_b = gpu_open(&core, &g, CLIENT, view_b).unwrap();
    assert_eq!(gpu_migrate(&core, &g, gid_a, &obj_a.memory, 2, 5), Ok(5));
    // The predecessor collected four pages of B and died before finalizing.
    let got = gpu_collect(&core, &g, gid_b, 0, 4).unwrap();
    assert_eq!(got.got.count(), 4);
    assert!((0..4).all(|p| obj_b.table.info(p).unwrap().locked));

    let r = resident(&core, 0);
    assert!(!r.more);
    let want = m::ResidentRun {
        object: gid_a,
        object_pages: 8,
        first_page: 2,
        pages: 5,
        first_pfn: 0,
    };
    assert_eq!(
        r.runs.as_slice(),
        &[want],
        "A's pages 2..7, at their frames"
    );
    for p in 0..8 {
        let i = obj_b.table.info(p).unwrap();
        assert!(!i.locked, "B's page {p} is still locked");
        assert_eq!(i.residency, Residency::System, "B's page {p}");
    }
    // The session went on: the ids still name the objects.
    let req = m::Request::GetPages(m::GetPages {
        object: gid_a,
        first_page: 0,
        count: PageCount::new(8).unwrap(),
    });
    match core
        .migrate_request(&g, req)
        .expect("the old id still names A")
    {
        (m::Reply::GetPages(p), _) => assert_eq!(p.device.count(), 5),
        (r, _) => panic!("unexpected {r:?}"),
    }
    // Another GPU's VRAM is not this server's to ask about (issue 17).
    let other = m::Request::Resident(m::Resident {
        gpu: GpuId::new(1).unwrap(),
        generation: 2,
        from_object: 0,
        from_page: 0,
    });
    assert_eq!(
        core.migrate_request(&g, other).err(),
        Some(m::MigrateError::NotOwner)
    );
}

/// A collect of the predecessor that the pager serves after the new
/// server's first `Resident` (it waited in the socket) is refused: nothing
/// would ever finalize it. The new generation's own collects go on.
#[test]
fn a_predecessors_collect_served_after_the_take_over_is_refused() {
    let core = model_core(small_config(""));
    let s = core.client(CLIENT).unwrap();
    let (a, view_a) = object_with_view(&core, &s, 8, A).unwrap();
    let obj_a = s.object(a).unwrap();
    seed(&obj_a, |p| 100 + p as u64);
    let g = core.gpu_session(GPU, 0).unwrap();
    let gid = gpu_open(&core, &g, CLIENT, view_a).unwrap();
    assert_eq!(resident(&core, 0).runs.len(), 0);
    let collect = |generation| {
        let req = m::Request::Collect(m::Collect {
            object: gid,
            first_page: 0,
            count: PageCount::new(4).unwrap(),
            gpu: GpuId::new(0).unwrap(),
            generation,
            pager_generation: 0,
        });
        core.migrate_request(&g, req).map(|_| ())
    };
    assert_eq!(collect(1).unwrap_err(), m::MigrateError::Stale);
    assert!((0..8).all(|p| !obj_a.table.info(p).unwrap().locked));
    assert_eq!(core.accounting().collects, 0);
    collect(2).expect("generation 2 collects");
    assert!((0..4).all(|p| obj_a.table.info(p).unwrap().locked));
}

/// A restarted pager (generation 3 here) refuses a collect its
/// predecessor left queued, which carries the generation its sender knew
/// then: the sender was told `PeerRestarted` and will never finalize it,
/// so its pages must not stay locked until the lease runs out. Collects
/// sent knowing this generation go on.
#[test]
fn a_collect_sent_to_an_earlier_pager_generation_is_refused() {
    let mut cfg = small_config("");
    cfg.generation = 3;
    let core = model_core(cfg);
    let s = core.client(CLIENT).unwrap();
    let (a, view_a) = object_with_view(&core, &s, 8, A).unwrap();
    let obj_a = s.object(a).unwrap();
    let g = core.gpu_session(GPU, 0).unwrap();
    let gid = gpu_open(&core, &g, CLIENT, view_a).unwrap();
    let collect = |pager_generation| {
        let req = m::Request::Collect(m::Collect {
            object: gid,
            first_page: 0,
            count: PageCount::new(4).unwrap(),
            gpu: GpuId::new(0).unwrap(),
            generation: 1,
            pager_generation,
        });
        core.migrate_request(&g, req).map(|_| ())
    };
    for stale in [0, 1, 2] {
        assert_eq!(collect(stale).unwrap_err(), m::MigrateError::Stale);
    }
    assert!((0..8).all(|p| !obj_a.table.info(p).unwrap().locked));
    collect(3).expect("a collect that knows generation 3");
    assert!((0..4).all(|p| obj_a.table.info(p).unwrap().locked));
}

/// The race a restart can lose (found by the simulation's
/// `gpu_server_restarts`): a CPU fault copied pages back and is about to
/// have the GPU server free their frames when a restarted server asks
/// `Resident` (here from another thread, at exactly that point). The pages
/// say System by then, so the new server does not adopt frames that a free
/// answered by its predecessor, just before it died, would never release.
#[test]
fn pages_whose_copy_back_landed_are_not_listed_while_their_free_is_sent() {
    use std::sync::{Arc, Mutex};
    let core = model_core(small_config(""));
    let s = core.client(CLIENT).unwrap();
    let (a, view) = object_with_view(&core, &s, 8, A).unwrap();
    let obj = s.object(a).unwrap();
    seed(&obj, |p| 100 + p as u64);
    let g = core.gpu_session(GPU, 0).unwrap();
    let gid = gpu_open(&core, &g, CLIENT, view).unwrap();
    assert_eq!(gpu_migrate(&core, &g, gid, &obj.memory, 0, 8), Ok(8));
    let listed = Arc::new(Mutex::new(None));
    let (weak, out) = (Arc::downgrade(&core), listed.clone());
    *core.rt.on_free.lock().unwrap() = Some(Box::new(move || {
        let core = weak.upgrade().expect("the core");
        let runs = std::thread::scope(|t| t.spawn(|| resident(&core, 0)).join().unwrap());
        let pages = runs
            .runs
            .as_slice()
            .iter()
            .flat_map(|r| r.first_page..r.first_page + u64::from(r.pages));
        *out.lock().unwrap() = Some(pages.collect::<Vec<u64>>());
    }));
    let space = s.view(view).unwrap().space.clone();
    core.serve_fault(&space, A + 2 * PAGE, false);
    *core.rt.on_free.lock().unwrap() = None;
    let in_ram: Vec<u64> = (0..8u64)
        .filter(|&p| obj.table.info(p as usize).unwrap().residency == Residency::System)
        .collect();
    assert!(in_ram.contains(&2), "the fault brought its page back");
    let listed = listed
        .lock()
        .unwrap()
        .take()
        .expect("the restarted server's Resident ran");
    for p in &in_ram {
        assert!(
            !listed.contains(p),
            "page {p} came back to RAM, yet a restarted server was told it is in VRAM"
        );
    }
}

/// A predecessor's finalize that took its collect before the new server's
/// `Resident` is waited for: answered meanwhile, its pages (locked, their
/// old state in the words) would be missing from the runs, and would then
/// turn `Device` at frames the new server hands out again.
#[test]
fn resident_waits_for_a_predecessors_finalize_in_progress() {
    let core = model_core(small_config(""));
    let s = core.client(CLIENT).unwrap();
    let (b, view_b) = object_with_view(&core, &s, 8, B).unwrap();
    let obj_b = s.object(b).unwrap();
    seed(&obj_b, |p| 200 + p as u64);
    let g = core.gpu_session(GPU, 0).unwrap();
    let gid_b = gpu_open(&core, &g, CLIENT, view_b).unwrap();
    let got = gpu_collect(&core, &g, gid_b, 0, 4).unwrap();
    let chunk = Chunk { first: 0, count: 4 };
    let finalizing = g.take(&obj_b, chunk, 0, &got.got).expect("the collect");
    let (tx, rx) = std::sync::mpsc::channel();
    let c = core.clone();
    let asking = std::thread::spawn(move || tx.send(resident(&c, 0)).unwrap());
    let early = rx.recv_timeout(Duration::from_millis(100));
    assert!(early.is_err(), "answered during the finalize: {early:?}");
    drop(finalizing);
    rx.recv_timeout(Duration::from_secs(5))
        .expect("answered once the finalize ended");
    asking.join().unwrap();
}
