//! The session core on the model runtime (no process, no socket): view
//! ids that follow moves, view changes past the budget handed to the
//! kernel, and a client's end releasing everything it held.
#![cfg(not(feature = "shuttle"))]

use ipc_protocol::interfaces::pager::{self as p, PagerError};
use ipc_protocol::types::ViewId;
use pager::core::view::PAGE;
use pager::sync::lock;
use pager::testing::runtime::{
    gpu_migrate, gpu_open, model_core, object_with_view, seed, small_config, ModelCore, ModelPort,
};
use session::Handle;

const CLIENT: u64 = 100;
const GPU: u64 = 1;
const A: u64 = 0x1000_0000;
const B: u64 = 0x2000_0000;

fn detach(core: &std::sync::Arc<ModelCore>, client: u64, view: Handle) -> Result<(), PagerError> {
    let s = core.client(client)?;
    let req = p::Request::DetachView(p::DetachView {
        view: ViewId::raw(view.raw()),
    });
    core.pager_request(&s, req, vec![]).map(|_| ())
}

/// A plain move: the client's id names the moved view; the GPU server
/// twins its bindings before the move completes and hears every id it may
/// have bound the view by when it goes (a rebind after the move included).
#[test]
fn a_moved_view_keeps_its_client_id() {
    let core = model_core(small_config(""));
    let s = core.client(CLIENT).unwrap();
    let (_, view) = object_with_view(&core, &s, 8, A).unwrap();
    let g = core.gpu_session(GPU, 0).unwrap();
    gpu_open(&core, &g, CLIENT, view).unwrap();
    let space = s.view(view).unwrap().space.clone();
    let mut notes = Vec::new();
    let pending = core.follow_remap(&space, A, B, 8 * PAGE, &mut notes);
    core.send_notes(&mut notes);
    let moved = *lock(&core.rt.copied)
        .first()
        .expect("the GPU heard of the copy");
    assert_eq!(
        moved.0,
        view.raw(),
        "the bindings of the client's id are twinned"
    );
    core.follow_unmap(&space, A, A + 8 * PAGE, Some(pending), &mut notes);
    core.send_notes(&mut notes);
    assert_eq!(
        *lock(&core.rt.gone),
        vec![view.raw()],
        "the old binding went"
    );
    let now = s.view(view).expect("the client's id names the moved view");
    assert_eq!((now.addr, now.id.raw()), (B, moved.1));
    // The client binds its id again at the new address, then detaches.
    gpu_open(&core, &g, CLIENT, view).unwrap();
    detach(&core, CLIENT, view).unwrap();
    let gone = lock(&core.rt.gone).clone();
    assert!(gone.contains(&moved.1) && gone.iter().filter(|v| **v == view.raw()).count() == 2);
    assert!(s.view(view).is_none());
    assert_eq!(core.accounting().views, 0);
}

/// Two threads of one process move their buffers, each a view of its own
/// userfaultfd (its own space and reader): `b` leaves `B`, then `a` moves
/// into `B` while `b`'s reader has applied the unmap of `B` but not told
/// the GPU server yet. `a`'s twins at `B` must wait for that `ViewGone`:
/// sent first, they meet `b`'s binding still there, cannot follow, and
/// GPU work at `a`'s new address faults (IGT threads-*-mmap-remap).
#[test]
fn a_move_into_a_range_another_space_left_waits_for_its_view_gone() {
    const C: u64 = 0x3000_0000;
    let core = model_core(small_config(""));
    let s = core.client(CLIENT).unwrap();
    let (_, a) = object_with_view(&core, &s, 8, A).unwrap();
    let (_, b) = object_with_view(&core, &s, 8, B).unwrap();
    let g = core.gpu_session(GPU, 0).unwrap();
    gpu_open(&core, &g, CLIENT, a).unwrap();
    gpu_open(&core, &g, CLIENT, b).unwrap();
    let space_a = s.view(a).unwrap().space.clone();
    let space_b = s.view(b).unwrap().space.clone();
    assert!(!std::sync::Arc::ptr_eq(&space_a, &space_b));
    // `b`'s reader: the move to `C` told, the old range's unmap applied.
    let mut notes_b = Vec::new();
    let pending = core.follow_remap(&space_b, B, C, 8 * PAGE, &mut notes_b);
    core.send_notes(&mut notes_b);
    core.follow_unmap(&space_b, B, B + 8 * PAGE, Some(pending), &mut notes_b);
    // `a`'s reader: `a` moved into `B`.
    let (done, finished) = std::sync::mpsc::channel();
    let reader_a = {
        let (core, space) = (core.clone(), space_a.clone());
        std::thread::spawn(move || {
            let mut notes = Vec::new();
            let pending = core.follow_remap(&space, A, B, 8 * PAGE, &mut notes);
            core.send_notes(&mut notes);
            core.follow_unmap(&space, A, A + 8 * PAGE, Some(pending), &mut notes);
            core.send_notes(&mut notes);
            let _ = done.send(());
        })
    };
    // Time for `a`'s reader to run ahead, were nothing holding it back.
    let ran_ahead = finished
        .recv_timeout(std::time::Duration::from_millis(300))
        .is_ok();
    core.send_notes(&mut notes_b);
    reader_a.join().unwrap();
    let heard = lock(&core.rt.heard).clone();
    let moved_a = lock(&core.rt.copied)
        .iter()
        .find(|(view, _)| *view == a.raw())
        .map(|c| c.1)
        .expect("a's bindings were twinned");
    let at = |e: (char, u32)| heard.iter().position(|h| *h == e);
    let (b_gone, a_twinned) = (at(('g', b.raw())), at(('c', moved_a)));
    assert!(
        !ran_ahead && b_gone.is_some() && b_gone < a_twinned,
        "b's binding at B goes before a's twin there: {heard:?}"
    );
    assert_eq!(s.view(a).map(|v| v.addr), Some(B));
    assert_eq!(s.view(b).map(|v| v.addr), Some(C));
}

fn find(core: &std::sync::Arc<ModelCore>, addr: u64) -> Result<p::ViewFound, PagerError> {
    let s = core.client(CLIENT)?;
    let req = p::Request::FindView(p::FindView { addr });
    match core.pager_request(&s, req, vec![])? {
        (p::Reply::FindView(f), _) => Ok(f),
        _ => unreachable!("FindView answers ViewFound"),
    }
}

/// A munmap in the middle of a view (rule 8 for split views): each part
/// left is a view of its own, which the GPU server twins the old view's
/// bindings over before it hears the old view went, and which the client
/// finds (`FindView`) and detaches; the old id names nothing.
#[test]
fn a_split_view_lives_on_as_parts_the_client_finds() {
    let core = model_core(small_config(""));
    let s = core.client(CLIENT).unwrap();
    let (_, view) = object_with_view(&core, &s, 8, A).unwrap();
    let space = s.view(view).unwrap().space.clone();
    let mut notes = Vec::new();
    core.follow_unmap(&space, A + 3 * PAGE, A + 5 * PAGE, None, &mut notes);
    core.send_notes(&mut notes);
    let parts: Vec<_> = lock(&core.rt.parts)
        .iter()
        .map(|p| (p.view.raw(), p.first_page, p.pages, p.from, p.to))
        .collect();
    let (a0, a5) = (A, A + 5 * PAGE);
    assert_eq!(
        parts,
        vec![(view.raw(), 0, 3, a0, a0), (view.raw(), 5, 3, a5, a5)]
    );
    let first = find(&core, A + PAGE).unwrap();
    let second = find(&core, A + 7 * PAGE).unwrap();
    assert_eq!(
        (first.addr, first.object_first_page, first.pages),
        (A, 0, 3)
    );
    assert_eq!(
        (second.addr, second.object_first_page, second.pages),
        (a5, 5, 3)
    );
    let heard = lock(&core.rt.heard).clone();
    assert_eq!(
        heard,
        vec![
            ('p', first.view.get()),
            ('p', second.view.get()),
            ('g', view.raw())
        ],
        "each part is bound before the old view goes"
    );
    assert_eq!(
        find(&core, A + 3 * PAGE).err(),
        Some(PagerError::NoSuchView)
    );
    assert_eq!(detach(&core, CLIENT, view), Err(PagerError::NoSuchView));
    for part in [first.view, second.view] {
        detach(&core, CLIENT, Handle::from_raw(part.get())).unwrap();
    }
    assert_eq!(core.accounting().views, 0);
}

/// A core whose client has an 8-page object at `A` (page `p` holds
/// `100 + p`), all in (model) VRAM: the core, the object, the GPU's id for
/// it and the view's address space.
fn eight_pages_in_vram() -> (
    std::sync::Arc<ModelCore>,
    std::sync::Arc<pager::core::object::Object<pager::testing::runtime::ModelRuntime>>,
    ipc_protocol::types::ObjectId,
    std::sync::Arc<pager::core::view::Space<pager::testing::runtime::ModelRuntime>>,
) {
    let core = model_core(small_config(""));
    let s = core.client(CLIENT).unwrap();
    let (o, view) = object_with_view(&core, &s, 8, A).unwrap();
    let obj = s.object(o).unwrap();
    seed(&obj, |p| 100 + p as u64);
    let g = core.gpu_session(GPU, 0).unwrap();
    let gid = gpu_open(&core, &g, CLIENT, view).unwrap();
    assert_eq!(gpu_migrate(&core, &g, gid, &obj.memory, 0, 8), Ok(8));
    let space = s.view(view).unwrap().space.clone();
    (core, obj, gid, space)
}

/// The pages of the hole a munmap made leave VRAM with their data (no view
/// reaches them; the object keeps them); the parts' pages stay.
#[test]
fn the_pages_of_a_hole_leave_vram_with_their_data() {
    let (core, obj, gid, space) = eight_pages_in_vram();
    let mut notes = Vec::new();
    core.follow_unmap(&space, A + 3 * PAGE, A + 5 * PAGE, None, &mut notes);
    core.send_notes(&mut notes);
    let vram = lock(&core.rt.vram).clone();
    let in_vram: Vec<usize> = (0..8)
        .filter(|p| vram.contains_key(&(0, gid.get(), *p)))
        .collect();
    assert_eq!(in_vram, vec![0, 1, 2, 5, 6, 7], "only the hole left VRAM");
    for p in 3..5 {
        let i = obj.table.info(p).unwrap();
        assert_eq!(i.residency, pager::state::Residency::System, "page {p}");
        assert_eq!(
            obj.memory.words[p].load(std::sync::atomic::Ordering::Acquire),
            100 + p as u64
        );
    }
}

/// A view an mremap grew: a fault in the tail (no view) makes the part of
/// the faulting thread's mapping that no view covers a view of the same
/// object at the right pages; a mapping of another file, one past the
/// object's end, or an unknown thread leaves it alone.
#[test]
fn a_grown_tail_becomes_a_view_of_the_same_object() {
    use pager::core::runtime::{FileId, FileMapping};
    use pager::testing::runtime::model_file;
    let core = model_core(small_config(""));
    let s = core.client(CLIENT).unwrap();
    let (o, view) = object_with_view(&core, &s, 16, A).unwrap();
    let space = s.view(view).unwrap().space.clone();
    let file = model_file(&s.object(o).unwrap().memory);
    let mut notes = Vec::new();
    core.follow_unmap(&space, A + 8 * PAGE, A + 16 * PAGE, None, &mut notes);
    core.send_notes(&mut notes);
    let grown = |end: u64, offset: u64, file: FileId| {
        *lock(&core.rt.maps) = vec![FileMapping {
            start: A,
            end,
            offset,
            file,
        }];
    };
    let other = FileId { ino: 1, ..file };
    grown(A + 16 * PAGE, 0, other);
    assert!(
        !core.follow_growth(&space, A + 12 * PAGE, 7),
        "another file"
    );
    grown(A + 24 * PAGE, 0, file);
    assert!(
        !core.follow_growth(&space, A + 20 * PAGE, 7),
        "past the object"
    );
    grown(A + 16 * PAGE, 0, file);
    assert!(
        !core.follow_growth(&space, A + 12 * PAGE, 0),
        "an unknown thread"
    );
    assert!(core.follow_growth(&space, A + 12 * PAGE, 7));
    let mut views: Vec<(u64, usize, usize)> = space
        .views()
        .iter()
        .map(|v| (v.addr, v.first_page, v.pages))
        .collect();
    views.sort();
    assert_eq!(views, vec![(A, 0, 8), (A + 8 * PAGE, 8, 8)]);
    // The GPU server heard it: the view before the tail continues over it.
    let id_at = |addr: u64| {
        let v = space.views().into_iter().find(|v| v.addr == addr).unwrap();
        v.id.raw()
    };
    assert_eq!(
        *lock(&core.rt.grown),
        vec![(id_at(A), id_at(A + 8 * PAGE), 8, 8)]
    );
}

/// No hang (issue 14): a CPU fault whose copy back keeps failing ends once
/// the deadline passes (the runtime poisons the page: the access gets an
/// error) and the page keeps its state and data; once copies work again
/// the next fault brings it back.
#[test]
fn a_fault_that_keeps_failing_is_ended_not_retried_forever() {
    use std::sync::atomic::Ordering;
    let (core, obj, _, space) = eight_pages_in_vram();
    core.rt.fail_to_ram.store(true, Ordering::Release);
    core.serve_fault(&space, A + 2 * PAGE, false);
    assert_eq!(*lock(&core.rt.poisoned), vec![(A + 2 * PAGE, PAGE)]);
    let state = |p: usize| obj.table.info(p).unwrap().residency;
    assert!(matches!(state(2), pager::state::Residency::Device { .. }));
    core.rt.fail_to_ram.store(false, Ordering::Release);
    core.serve_fault(&space, A + 2 * PAGE, false);
    assert_eq!(state(2), pager::state::Residency::System);
    assert_eq!(obj.memory.words[2].load(Ordering::Acquire), 102);
    assert_eq!(lock(&core.rt.poisoned).len(), 1, "ended once");
}

/// `DeviceOnly` (issue 16 item 2): a CPU fault on a page of the range in
/// VRAM is refused (poisoned, nothing copied back, the page keeps its
/// state and data); a fault on a page outside the range moves only pages
/// the advice lets go; where the runtime cannot refuse, the page comes back.
#[test]
fn a_device_only_range_refuses_cpu_faults() {
    use ipc_protocol::types::Advice;
    use pager::state::Residency;
    use std::sync::atomic::Ordering;
    let (core, obj, _, space) = eight_pages_in_vram();
    core.advise(&obj, 0, 4, Advice::DeviceOnly).unwrap();
    let in_vram = |p: usize| {
        matches!(
            obj.table.info(p).unwrap().residency,
            Residency::Device { .. }
        )
    };
    core.serve_fault(&space, A + 2 * PAGE, false);
    assert_eq!(*lock(&core.rt.poisoned), vec![(A + 2 * PAGE, PAGE)]);
    assert!((0..4).all(in_vram), "refused: nothing moved");
    core.serve_fault(&space, A + 6 * PAGE, false);
    assert!((0..4).all(in_vram), "another page's fault leaves the range");
    assert!(!in_vram(6));
    core.rt.no_poison.store(true, Ordering::Release);
    core.serve_fault(&space, A + PAGE, false);
    assert_eq!(obj.table.info(1).unwrap().residency, Residency::System);
    assert_eq!(obj.memory.words[1].load(Ordering::Acquire), 101);
    assert_eq!(lock(&core.rt.poisoned).len(), 1, "refused once");
}

/// A split the client's view budget has no room for: the part that cannot
/// be recorded goes to the kernel, the rest is followed.
#[test]
fn a_split_past_the_view_budget_is_handed_to_the_kernel() {
    let core = model_core(small_config("views=2"));
    let s = core.client(CLIENT).unwrap();
    let (_, view) = object_with_view(&core, &s, 8, A).unwrap();
    let space = s.view(view).unwrap().space.clone();
    let mut notes = Vec::new();
    core.follow_unmap(&space, A + 3 * PAGE, A + 4 * PAGE, None, &mut notes);
    let views: Vec<(u64, usize)> = space.views().iter().map(|v| (v.addr, v.pages)).collect();
    assert_eq!(views, vec![(A, 3)], "the first part is followed");
    assert_eq!(
        *lock(&space.port.unregistered),
        vec![(A + 4 * PAGE, 4 * PAGE)],
        "the part past the budget is the kernel's"
    );
    assert_eq!(core.accounting().views, 1);
}

/// A fork past the client's address-space budget is not followed: the
/// child's ranges stay the kernel's, nothing is charged.
#[test]
fn a_fork_past_the_space_budget_is_not_followed() {
    let core = model_core(small_config("spaces=1"));
    let s = core.client(CLIENT).unwrap();
    let (_, view) = object_with_view(&core, &s, 8, A).unwrap();
    let space = s.view(view).unwrap().space.clone();
    assert!(core.follow_fork(&space, Default::default()).is_none());
    assert_eq!(core.accounting().spaces, 1);
}

/// A fork's child that exited keeps no place in the budget: a fork that
/// finds it full retires the spaces whose process is gone first, and is
/// followed.
#[test]
fn a_fork_finds_the_room_a_child_that_exited_left() {
    let core = model_core(small_config("spaces=2"));
    let s = core.client(CLIENT).unwrap();
    let (_, view) = object_with_view(&core, &s, 8, A).unwrap();
    let space = s.view(view).unwrap().space.clone();
    let exited = ModelPort {
        gone: true,
        ..Default::default()
    };
    let first = core
        .follow_fork(&space, exited)
        .map(|c| std::sync::Arc::downgrade(&c))
        .expect("room for one child");
    let second = core.follow_fork(&space, Default::default());
    assert!(
        second.is_some(),
        "the exited child's place was not given back"
    );
    assert!(
        first.upgrade().is_none(),
        "the exited child's space is gone"
    );
    assert_eq!(core.accounting().spaces, 2);
}

/// A client's end: its views go (the GPU server hears it), its objects'
/// VRAM is freed, and every total comes back to where it was.
#[test]
fn a_clients_end_releases_everything_it_held() {
    let core = model_core(small_config(""));
    let arena_before = core.arena().used();
    let s = core.client(CLIENT).unwrap();
    let g = core.gpu_session(GPU, 0).unwrap();
    let mut views = Vec::new();
    for k in 0..3u64 {
        let (obj, view) = object_with_view(&core, &s, 16, A + k * (1 << 20)).unwrap();
        let o = s.object(obj).unwrap();
        seed(&o, |p| p as u64 + 1);
        let id = gpu_open(&core, &g, CLIENT, view).unwrap();
        assert_eq!(gpu_migrate(&core, &g, id, &o.memory, 0, 16).unwrap(), 16);
        views.push(view.raw());
    }
    assert_eq!(lock(&core.rt.vram).len(), 48);
    let t = core.accounting();
    assert_eq!(
        (t.objects, t.views, t.spaces, t.fault_threads),
        (3, 3, 3, 15)
    );
    drop(s);
    core.end_client(CLIENT);
    assert!(lock(&core.rt.vram).is_empty(), "its VRAM was freed");
    let mut gone = lock(&core.rt.gone).clone();
    gone.sort();
    assert_eq!(gone, views, "the GPU server heard each view went");
    let t = core.accounting();
    assert_eq!(
        (
            t.objects,
            t.object_bytes,
            t.views,
            t.spaces,
            t.fault_threads,
            t.collects
        ),
        (0, 0, 0, 0, 0, 0)
    );
    assert_eq!(t.sessions, 1, "the GPU server's");
    drop(g);
    assert!(
        core.arena().used() <= arena_before + 64 * 1024,
        "the arena keeps only the GPU session's tables"
    );
    // The client id is free again: a new session starts empty.
    let s = core.client(CLIENT).unwrap();
    assert!(s.objects().is_empty());
    assert_eq!(s.view(Handle::from_raw(views[0])).map(|v| v.addr), None);
}

/// A pager whose arena cannot hold every client at its metadata budget
/// refuses to start: one client's exhaustion must stay its own error.
#[test]
fn an_arena_too_small_for_every_clients_budget_is_refused() {
    use pager::core::{Config, ConfigError, Core};
    use pager::testing::runtime::ModelRuntime;
    let mut cfg = small_config("");
    cfg.arena_bytes -= 1;
    match Core::new(ModelRuntime::default(), cfg) {
        Err(ConfigError::ArenaTooSmall { need, have }) => assert_eq!(need, have + 1),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a core whose arena cannot hold every client's budget"),
    }
    assert!(Core::new(ModelRuntime::default(), small_config("")).is_ok());
    let _ = Config::default();
}

/// Several GPUs (issue 17): a GPU server moves pages into its own GPU's
/// VRAM only. Its first request that names a GPU fixes which is its own;
/// a collect, finalize or `Resident` naming another is refused and moves
/// nothing.
#[test]
fn a_gpu_server_cannot_name_another_gpu() {
    use ipc_protocol::interfaces::pager_migrate as m;
    use ipc_protocol::types::{GpuId, PageCount, PageMask};
    use pager::testing::runtime::gpu_collect;
    let core = model_core(small_config(""));
    let s = core.client(CLIENT).unwrap();
    let (_, view) = object_with_view(&core, &s, 8, A).unwrap();
    seed(&s.view(view).unwrap().object, |p| p as u64 + 1);
    let g = core.gpu_session(GPU, 0).unwrap();
    let object = gpu_open(&core, &g, CLIENT, view).unwrap();
    // GPU 0 is this server's from its first collect.
    let c = gpu_collect(&core, &g, object, 0, 4).unwrap();
    let count = PageCount::new(4).unwrap();
    let gpu3 = GpuId::new(3).unwrap();
    let collect = m::Request::Collect(m::Collect {
        object,
        first_page: 4,
        count,
        gpu: gpu3,
        generation: 1,
        pager_generation: 0,
    });
    let finalize = m::Request::Finalize(m::Finalize {
        object,
        first_page: 0,
        count,
        gpu: gpu3,
        vram_first_pfn: 0,
        got: c.got,
        migrated: c.got,
    });
    let resident = m::Request::Resident(m::Resident {
        gpu: gpu3,
        generation: 2,
        from_object: 0,
        from_page: 0,
    });
    for req in [collect, finalize, resident] {
        assert_eq!(
            core.migrate_request(&g, req).err(),
            Some(m::MigrateError::NotOwner)
        );
    }
    // The refused collect took nothing; the refused finalize left GPU 0's
    // collect in flight, and GPU 0's own finalize still takes it.
    for p in 4..8 {
        assert!(!s.view(view).unwrap().object.table.info(p).unwrap().locked);
    }
    let own = m::Request::Finalize(m::Finalize {
        object,
        first_page: 0,
        count,
        gpu: GpuId::new(0).unwrap(),
        vram_first_pfn: 0,
        got: c.got,
        migrated: PageMask::EMPTY,
    });
    assert!(core.migrate_request(&g, own).is_ok());
}
