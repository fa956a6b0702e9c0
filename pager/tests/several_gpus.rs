//! One pager, several GPU servers (issue 17), on the model runtime: the
//! core's sessions, one per GPU, and the notes it sends each GPU.
//!
//! - A GPU fault on a page in another GPU's VRAM has that GPU unmap it
//!   and push it, VRAM to VRAM; RAM never holds it meanwhile.
//! - A CPU fault brings a chunk back from every GPU that holds part of it.
//! - A GPU's collect unmaps the pages on every other GPU first (rule 8
//!   with several notifier endpoints).
//! - Discard, an object's end and eviction free each page on its own GPU.
//! - Four GPU threads and CPU threads over one chunk, with no global lock:
//!   every CPU write lands exactly once.
#![cfg(not(feature = "shuttle"))]

use std::sync::Arc;

use ipc_protocol::interfaces::pager as p;
use ipc_protocol::interfaces::pager_migrate::{self as m, MigrateError};
use ipc_protocol::types::{Advice, GpuId, PageCount, PageMask};
use ipc_protocol::types::{ObjectId, ViewId};
use pager::core::object::Object;
use pager::core::session::GpuSession;
use pager::core::view::{Space, PAGE};
use pager::state::Residency;
use pager::sync::lock;
use pager::testing::runtime::{
    cpu_write, gpu_collect, gpu_migrate, gpu_open, model_core, object_with_view, seed,
    small_config, ModelCore, ModelRuntime, POISON,
};
use session::Handle;

const CLIENT: u64 = 100;
const A: u64 = 0x1000_0000;
const PAGES: u64 = 64;

/// A client object of one chunk in RAM, seeded, and GPU `0..gpus`'s
/// sessions with the view opened: (object, space, each GPU's session and
/// the id it knows the object by).
struct Setup {
    core: Arc<ModelCore>,
    object: Arc<Object<ModelRuntime>>,
    space: Arc<Space<ModelRuntime>>,
    view: Handle,
    gpus: Vec<(Arc<GpuSession<ModelRuntime>>, ObjectId)>,
}

fn value(p: usize) -> u64 {
    0x5eed_0000 + p as u64
}

fn setup(gpus: u8) -> Setup {
    let core = model_core(small_config(""));
    let s = core.client(CLIENT).unwrap();
    let (_, view) = object_with_view(&core, &s, PAGES, A).unwrap();
    let v = s.view(view).unwrap();
    seed(&v.object, value);
    let gpus = (0..gpus)
        .map(|gpu| {
            let g = core.gpu_session(10 + u64::from(gpu), gpu).unwrap();
            let id = gpu_open(&core, &g, CLIENT, view).unwrap();
            (g, id)
        })
        .collect();
    Setup {
        object: v.object.clone(),
        space: v.space.clone(),
        view,
        core,
        gpus,
    }
}

impl Setup {
    /// GPU `gpu` faults pages `[first, first + count)` into its VRAM.
    fn gpu_fault(&self, gpu: usize, first: u64, count: u16) -> u16 {
        let (g, id) = &self.gpus[gpu];
        gpu_migrate(&self.core, g, *id, &self.object.memory, first, count).unwrap()
    }

    fn residency(&self, page: usize) -> Residency {
        self.object.table.info(page).unwrap().residency
    }

    /// The value GPU `gpu` holds for `page`, if it holds it.
    fn in_vram(&self, gpu: usize, page: usize) -> Option<u64> {
        let key = (gpu as u8, self.gpus[gpu].1.get(), page);
        lock(&self.core.rt.vram).get(&key).copied()
    }

    fn ram(&self, page: usize) -> u64 {
        self.object.memory.words[page].load(std::sync::atomic::Ordering::Acquire)
    }

    /// A CPU read of every page (faulting back what is in VRAM).
    fn read_all(&self) -> Vec<u64> {
        for page in 0..PAGES as usize {
            if self.ram(page) == POISON {
                self.core
                    .serve_fault(&self.space, A + page as u64 * PAGE, false);
            }
        }
        (0..PAGES as usize).map(|p| self.ram(p)).collect()
    }
}

impl Setup {
    /// GPU `gpu`'s finalize of collect `c` of the whole chunk, having
    /// migrated nothing (it mapped every page where it is).
    fn finalize_nothing(&self, gpu: usize, c: &m::Collected) {
        self.finalize(gpu, c, PageMask::EMPTY, 0);
    }

    /// GPU `gpu`'s finalize of collect `c` of the whole chunk, `migrated`
    /// into its frames from `first_pfn` on.
    fn finalize(
        &self,
        gpu: usize,
        c: &m::Collected,
        migrated: PageMask,
        first_pfn: u64,
    ) -> m::Finalized {
        let (g, id) = &self.gpus[gpu];
        let finalize = m::Request::Finalize(m::Finalize {
            object: *id,
            first_page: 0,
            count: PageCount::new(PAGES as u16).unwrap(),
            gpu: GpuId::new(gpu as u8).unwrap(),
            vram_first_pfn: first_pfn,
            got: c.got,
            migrated,
        });
        match self.core.migrate_request(g, finalize).unwrap() {
            (m::Reply::Finalize(f), _) => f,
            (other, _) => panic!("a finalize answered {other:?}"),
        }
    }

    /// GPU `gpu`'s collect of the whole chunk.
    fn collect(&self, gpu: usize) -> m::Collected {
        let (g, id) = &self.gpus[gpu];
        gpu_collect(&self.core, g, *id, 0, PAGES as u16).unwrap()
    }
}

fn on_gpu(r: Residency) -> Option<u8> {
    match r {
        Residency::Device { gpu, .. } => Some(gpu),
        _ => None,
    }
}

#[test]
fn a_page_in_a_peers_vram_moves_vram_to_vram_never_through_ram() {
    let t = setup(2);
    assert_eq!(t.gpu_fault(0, 0, 64), 64);
    let to_ram_before = lock(&t.core.rt.invalidated).len();
    assert_eq!(t.gpu_fault(1, 0, 64), 64, "GPU 1 took every page");
    for page in 0..64 {
        assert_eq!(on_gpu(t.residency(page)), Some(1), "page {page}");
        assert_eq!(t.in_vram(1, page), Some(value(page)), "page {page}'s data");
        assert_eq!(t.in_vram(0, page), None, "GPU 0 freed page {page}'s frame");
        assert_eq!(t.ram(page), POISON, "page {page} never went through RAM");
    }
    assert_eq!(
        *lock(&t.core.rt.pushes),
        vec![(0, 1, 64)],
        "one push, 0 to 1"
    );
    // Rule 8: GPU 0 unmapped the chunk before it pushed.
    let heard = lock(&t.core.rt.invalidated)[to_ram_before..].to_vec();
    assert!(heard.contains(&(0, t.gpus[0].1.get(), 0)), "{heard:?}");
    assert_eq!(t.read_all(), (0..64).map(value).collect::<Vec<_>>());
}

#[test]
fn pages_already_on_the_faulting_gpu_move_nothing() {
    let t = setup(2);
    t.gpu_fault(0, 0, 64);
    assert_eq!(t.gpu_fault(0, 0, 64), 0, "already resident");
    assert!(lock(&t.core.rt.pushes).is_empty());
}

#[test]
fn a_cpu_fault_brings_the_chunk_back_from_every_gpu() {
    let t = setup(3);
    t.gpu_fault(2, 0, 32);
    t.gpu_fault(1, 32, 32);
    assert_eq!(on_gpu(t.residency(0)), Some(2));
    assert_eq!(on_gpu(t.residency(63)), Some(1));
    // One CPU fault on page 0: the whole chunk comes back, each half from
    // its own GPU, which frees its frames.
    t.core.serve_fault(&t.space, A, false);
    for page in 0..64 {
        assert_eq!(t.residency(page), Residency::System, "page {page}");
        assert_eq!(t.ram(page), value(page), "page {page}'s data");
    }
    assert!(
        lock(&t.core.rt.vram).is_empty(),
        "both GPUs freed their frames"
    );
}

#[test]
fn a_collect_unmaps_the_pages_on_every_other_gpu_first() {
    let t = setup(3);
    t.gpu_fault(0, 0, 64);
    let heard = lock(&t.core.rt.invalidated).clone();
    // GPUs 1 and 2 may map the system pages; GPU 0 collects them.
    assert!(heard.contains(&(1, t.gpus[1].1.get(), 0)), "{heard:?}");
    assert!(heard.contains(&(2, t.gpus[2].1.get(), 0)), "{heard:?}");
    assert!(!heard.iter().any(|h| h.0 == 0), "{heard:?}");
}

#[test]
fn one_server_per_gpu() {
    let core = model_core(small_config(""));
    let g0 = core.gpu_session(10, 0).unwrap();
    assert_eq!(core.gpu_session(10, 0).unwrap().gpu, g0.gpu);
    assert_eq!(core.gpu_session(11, 0).err(), Some(MigrateError::NotOwner));
    assert_eq!(core.gpu_session(10, 1).err(), Some(MigrateError::NotOwner));
    let past = pager::core::object::MAX_GPUS as u8;
    assert_eq!(
        core.gpu_session(11, past).err(),
        Some(MigrateError::NotOwner)
    );
    assert_eq!(core.gpu_session(11, 1).unwrap().gpu, 1);
    assert_eq!(core.accounting().sessions, 2);
    core.end_gpu(10);
    assert_eq!(core.gpu_sessions().len(), 1);
    assert_eq!(
        core.gpu_session(12, 0).unwrap().gpu,
        0,
        "GPU 0 may have a new server"
    );
}

#[test]
fn discard_frees_each_page_on_its_own_gpu() {
    let t = setup(2);
    t.gpu_fault(0, 0, 32);
    t.gpu_fault(1, 32, 32);
    let s = t.core.client(CLIENT).unwrap();
    let req = p::Request::Discard(p::Discard {
        object: ObjectId::raw(t.object.id.raw()),
        first_page: 0,
        pages: PAGES,
    });
    t.core.pager_request(&s, req, vec![]).unwrap();
    assert!(lock(&t.core.rt.vram).is_empty(), "each GPU freed its pages");
    assert!((0..64).all(|p| t.residency(p) == Residency::Empty));
}

#[test]
fn an_objects_end_frees_its_pages_on_every_gpu() {
    let t = setup(2);
    t.gpu_fault(0, 0, 32);
    t.gpu_fault(1, 32, 32);
    let s = t.core.client(CLIENT).unwrap();
    let detach = p::Request::DetachView(p::DetachView {
        view: ViewId::raw(t.view.raw()),
    });
    t.core.pager_request(&s, detach, vec![]).unwrap();
    let req = p::Request::DestroyObject(p::DestroyObject {
        object: ObjectId::raw(t.object.id.raw()),
    });
    t.core.pager_request(&s, req, vec![]).unwrap();
    assert!(lock(&t.core.rt.vram).is_empty(), "each GPU freed its pages");
    for (g, id) in &t.gpus {
        assert!(
            g.object(Handle::from_raw(id.get())).is_none(),
            "GPU {} forgot it",
            g.gpu
        );
    }
}

#[test]
fn eviction_of_one_gpu_leaves_the_others_pages() {
    let t = setup(2);
    t.gpu_fault(0, 0, 32);
    t.gpu_fault(1, 32, 32);
    assert_eq!(t.core.evict(1, 64 * PAGE), 32);
    assert!((0..32).all(|p| on_gpu(t.residency(p)) == Some(0)));
    assert!((32..64).all(|p| t.residency(p) == Residency::System));
    assert!((32..64).all(|p| t.ram(p) == value(p)));
}

/// Four GPU threads fault the chunk into their VRAM in different orders
/// while two CPU threads add to its pages; no lock but the page locks.
/// Every write lands once: none is lost to a peer push or a copy back.
#[test]
fn four_gpus_and_cpu_threads_race_on_one_chunk_and_lose_nothing() {
    const ROUNDS: usize = 300;
    const CPUS: u64 = 2;
    let t = Arc::new(setup(4));
    let mut threads = Vec::new();
    for gpu in 0..4usize {
        let t = t.clone();
        threads.push(std::thread::spawn(move || {
            for round in 0..ROUNDS {
                // Different halves and orders per GPU and round.
                let first = ((gpu + round) % 2) as u64 * 32;
                t.gpu_fault(gpu, first, 32);
            }
        }));
    }
    for cpu in 0..CPUS {
        let t = t.clone();
        threads.push(std::thread::spawn(move || {
            for round in 0..ROUNDS {
                let page = (round * 7 + cpu as usize * 13) % PAGES as usize;
                cpu_write(&t.core, &t.space, A + page as u64 * PAGE, page, 1 << 32);
            }
        }));
    }
    for h in threads {
        h.join().unwrap();
    }
    let mut want: Vec<u64> = (0..64).map(value).collect();
    for cpu in 0..CPUS {
        for round in 0..ROUNDS {
            want[(round * 7 + cpu as usize * 13) % PAGES as usize] += 1 << 32;
        }
    }
    let pushes = lock(&t.core.rt.pushes).len();
    assert!(pushes > 0, "pages moved GPU to GPU");
    eprintln!("{pushes} pushes between GPUs");
    assert_eq!(t.read_all(), want, "every CPU write, exactly once");
    assert!(lock(&t.core.rt.vram).is_empty(), "no frame left behind");
    assert!(lock(&t.core.rt.frames).is_empty(), "no push left unread");
}

/// A GPU that goes away (`PagerReclaim::Evacuate`) gives every page back
/// to RAM and takes none any more; its peers go on, and a later server of
/// the same GPU is retired from its start.
#[test]
fn an_evacuated_gpu_gives_back_every_page_and_takes_no_more() {
    let t = setup(2);
    assert_eq!(t.gpu_fault(1, 0, 64), 64);
    assert_eq!(t.core.evacuate(1), Ok((64, 0)));
    for page in 0..64 {
        assert_eq!(t.residency(page), Residency::System, "page {page}");
        assert_eq!(t.ram(page), value(page), "page {page}'s data");
    }
    assert!(lock(&t.core.rt.vram).is_empty(), "GPU 1 freed its frames");
    let (g1, id1) = &t.gpus[1];
    let refused = gpu_collect(&t.core, g1, *id1, 0, 64);
    assert_eq!(refused.err(), Some(MigrateError::Retired));
    assert_eq!(t.gpu_fault(0, 0, 64), 64, "GPU 0 goes on");
    t.core.end_gpu(g1.badge);
    let again = t.core.gpu_session(20, 1).unwrap();
    assert!(again.is_retired(), "GPU 1 stays gone");
}

/// The evacuation races GPU 1's own faults: each of them either finished
/// before (its pages come back) or is refused; none lands after.
#[test]
fn an_evacuation_racing_the_gpus_own_faults_leaves_nothing_on_it() {
    for _ in 0..20 {
        let t = Arc::new(setup(2));
        let faulter = {
            let t = t.clone();
            std::thread::spawn(move || {
                let (g, id) = &t.gpus[1];
                for round in 0..50u64 {
                    let first = (round % 2) * 32;
                    let r = gpu_migrate(&t.core, g, *id, &t.object.memory, first, 32);
                    if r == Err(MigrateError::Retired) {
                        return;
                    }
                }
            })
        };
        let (_, left) = t.core.evacuate(1).unwrap();
        faulter.join().unwrap();
        assert_eq!(left, 0);
        for page in 0..64 {
            assert_ne!(on_gpu(t.residency(page)), Some(1), "page {page} on GPU 1");
        }
        assert_eq!(t.read_all(), (0..64).map(value).collect::<Vec<_>>());
    }
}

/// Peer access in place (`Advice::AccessInPlace`): GPU 1's collect of
/// pages in GPU 0's VRAM reports where they are (`peer_frames`) and moves
/// nothing; when GPU 0's pages then go back to RAM, GPU 1, which may map
/// them in place, is told to unmap too (rule 8 with remote mappings).
#[test]
fn pages_mapped_in_place_stay_on_their_gpu_and_every_mapper_is_told_when_they_move() {
    let t = setup(2);
    assert_eq!(t.gpu_fault(0, 0, 64), 64);
    t.core
        .advise(&t.object, 0, 64, Advice::AccessInPlace)
        .unwrap();
    let id1 = &t.gpus[1].1;
    let c = t.collect(1);
    assert_eq!((c.peer, c.remote), (c.got, c.got), "every page in place");
    let frames = c.peer_frames.as_slice();
    assert_eq!(frames.len(), c.got.count() as usize);
    for (i, f) in c.got.iter().zip(frames) {
        let Residency::Device { gpu, pfn } = t.residency(i) else {
            panic!("page {i} left GPU 0");
        };
        assert_eq!(m::split_peer_frame(*f), (gpu, pfn));
    }
    // GPU 1 finalizes with nothing migrated: the pages stay on GPU 0.
    t.finalize_nothing(1, &c);
    assert!((0..64).all(|p| on_gpu(t.residency(p)) == Some(0)));
    assert!(lock(&t.core.rt.pushes).is_empty(), "nothing was pushed");
    // A CPU fault brings them back: both GPUs unmap first.
    let before = lock(&t.core.rt.invalidated).len();
    t.core.serve_fault(&t.space, A, false);
    let heard = lock(&t.core.rt.invalidated)[before..].to_vec();
    assert!(
        heard.contains(&(1, id1.get(), 0)),
        "GPU 1 not told: {heard:?}"
    );
    assert!(heard.contains(&(0, t.gpus[0].1.get(), 0)), "{heard:?}");
    assert_eq!(t.read_all(), (0..64).map(value).collect::<Vec<_>>());
}

/// A preferred location naming a GPU (`Advice::PreferGpuK`, xe's
/// `devmem_fd`): only GPU 2's faults move the range, into its VRAM; GPU
/// 0's map it where it is, system memory first, then GPU 2's VRAM through
/// the peer window. A CPU fault on one page leaves the others in VRAM.
/// Advised back to the default, GPU 0's fault takes them VRAM to VRAM.
#[test]
fn pages_preferring_a_gpu_move_only_to_it_and_the_others_map_them_in_place() {
    let t = setup(3);
    let prefer_2 = Advice::prefer_gpu(2).unwrap();
    t.core
        .advise(&t.object, 0, PAGES as usize, prefer_2)
        .unwrap();
    // In RAM: GPU 0 maps system memory in place.
    let c = t.collect(0);
    assert_eq!(c.got.count(), PAGES as u32);
    assert_eq!((c.remote, c.peer), (c.got, PageMask::EMPTY));
    t.finalize_nothing(0, &c);
    assert!((0..PAGES as usize).all(|p| t.residency(p) == Residency::System));
    // GPU 2 prefers them: its fault takes them.
    let c = t.collect(2);
    assert!(
        c.remote.is_empty(),
        "GPU 2 maps its preferred pages from RAM"
    );
    t.finalize_nothing(2, &c);
    assert_eq!(t.gpu_fault(2, 0, PAGES as u16), PAGES as u16);
    // In GPU 2's VRAM: GPU 0 maps them through its peer window.
    let c = t.collect(0);
    assert_eq!((c.remote, c.peer), (c.got, c.got), "every page in place");
    assert!(c
        .peer_frames
        .as_slice()
        .iter()
        .all(|f| m::split_peer_frame(*f).0 == 2));
    t.finalize_nothing(0, &c);
    assert!((0..PAGES as usize).all(|p| on_gpu(t.residency(p)) == Some(2)));
    assert!(lock(&t.core.rt.pushes).is_empty(), "nothing was pushed");
    // A CPU fault on page 0 leaves the others on GPU 2.
    t.core.serve_fault(&t.space, A, false);
    assert_eq!(t.residency(0), Residency::System);
    assert!((1..PAGES as usize).all(|p| on_gpu(t.residency(p)) == Some(2)));
    // Advised back: GPU 0 takes them, VRAM to VRAM.
    t.core
        .advise(&t.object, 0, PAGES as usize, Advice::Default)
        .unwrap();
    assert_eq!(t.gpu_fault(0, 0, PAGES as u16), PAGES as u16);
    assert!(
        !lock(&t.core.rt.pushes).is_empty(),
        "GPU 2 pushed its pages"
    );
    assert_eq!(
        t.read_all(),
        (0..PAGES as usize).map(value).collect::<Vec<_>>()
    );
}

/// A push its source does not answer in time (a server hung past the
/// deadline) may still land later, in the collecting GPU's frames. The
/// pages stay with their source, data intact, and the finalize names them
/// `late`, so the collecting GPU keeps those frames out of use rather
/// than fill them with another page a late push would overwrite.
#[test]
fn a_push_that_goes_unanswered_leaves_the_pages_and_names_their_frames_late() {
    let t = setup(2);
    assert_eq!(t.gpu_fault(0, 0, PAGES as u16), PAGES as u16);
    t.core
        .rt
        .push_unanswered
        .store(true, std::sync::atomic::Ordering::Release);
    let c = t.collect(1);
    assert_eq!(c.peer, c.got);
    let f = t.finalize(1, &c, c.got, 4096);
    assert_eq!((f.late, f.device_pages), (c.got, PageMask::EMPTY));
    assert!((0..PAGES as usize).all(|p| on_gpu(t.residency(p)) == Some(0)));
    let late = lock(&t.core.rt.late_pushes).clone();
    assert_eq!(late.len(), PAGES as usize);
    assert!(late.iter().all(|&(to, frame, _)| to == 1 && frame >= 4096));
    // A push that is answered names nothing late.
    t.core
        .rt
        .push_unanswered
        .store(false, std::sync::atomic::Ordering::Release);
    let c = t.collect(1);
    let f = t.finalize(1, &c, c.got, 8192);
    assert_eq!((f.late, f.device_pages), (PageMask::EMPTY, c.got));
}
