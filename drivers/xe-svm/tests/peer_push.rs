//! `GpuNotify::PushToPeer` (several GPUs, issue 17): the source GPU server
//! pushes pages from its VRAM into a peer's with its own copy engine,
//! through its device's peer window, and keeps its frames until
//! `FreePages`. Two GPU servers, each over its own device model; every
//! word of every pushed page is checked in the peer's VRAM.

mod common;

use common::{World, PAGE};
use ipc_protocol::interfaces::gpu_notify::{self as n, NotifyError};
use ipc_protocol::types::{GpuId, ObjectId, PageCount, PageMask, Seq};

const CLIENT: u64 = 7;
const VIEW: u32 = 3;
const PAGES: u64 = 8;
/// Where the pages land in the peer's VRAM.
const TO_PFN: u64 = 1000;

fn notify(w: &World, req: n::Request) -> Result<n::Reply, NotifyError> {
    w.notify(req)
}

/// The GPU touches `PAGES` pages of the view, so they sit in its VRAM
/// (with the rest of their chunk); each then gets its own pattern. Returns
/// the pages' frames.
fn pages_in_vram(w: &World) -> Vec<u64> {
    pages_in_vram_of(w).1
}

/// [`pages_in_vram`], with the VM that touched them.
fn pages_in_vram_of(w: &World) -> (u32, Vec<u64>) {
    let vm = w.create_vm(CLIENT).unwrap().vm.get();
    w.bind(CLIENT, vm, VIEW, 0x4000_0000);
    let job = w.touch(CLIENT, vm, 0x4000_0000, PAGES * PAGE).unwrap();
    assert!(w.wait(CLIENT, job, 10_000).unwrap().faults > 0);
    let runs = w.server.inner.frames(0, 0);
    let mut frames = vec![0; PAGES as usize];
    for r in runs.runs.as_slice() {
        for k in 0..r.pages as u64 {
            if let Some(f) = frames.get_mut((r.first_page + k) as usize) {
                *f = r.first_pfn + k;
            }
        }
    }
    let vram = w.server.inner.hw.dev.bar.vram();
    for (p, pfn) in frames.iter().enumerate() {
        assert!(vram.write(pfn * PAGE, &page_pattern(p)));
    }
    (vm, frames)
}

fn page_pattern(p: usize) -> Vec<u8> {
    (0..PAGE as usize)
        .map(|i| (i * 7 + p * 131 + i / 512) as u8)
        .collect()
}

fn push(w: &World, pages: PageMask, to: u8) -> Result<n::Reply, NotifyError> {
    notify(
        w,
        n::Request::PushToPeer(n::PushToPeer {
            object: ObjectId::raw(VIEW),
            first_page: 0,
            count: PageCount::new(PAGES as u16).unwrap(),
            pages,
            to: GpuId::new(to).unwrap(),
            to_first_pfn: TO_PFN,
            // The test pager's collects read sequence 0: a higher one
            // would keep a later fault from mapping (rule 8's check).
            seq: Seq::raw(0),
        }),
    )
}

/// Rule 8 inside the push: the source unmaps the chunk before its copy
/// engine reads it, so a job of the source's after the push faults on
/// every page again instead of reaching frames that are on their way out.
#[test]
fn the_source_unmaps_the_chunk_before_it_pushes() {
    let (source, peer) = (
        World::new(common::budget("")),
        World::new(common::budget("")),
    );
    let (vm, _) = pages_in_vram_of(&source);
    let again = source.touch(CLIENT, vm, 0x4000_0000, PAGES * PAGE).unwrap();
    let resident = source.wait(CLIENT, again, 10_000).unwrap();
    assert_eq!(resident.faults, 0, "mapped before the push");
    let fd = peer.server.inner.hw.dev.bar.vram().dup_fd().unwrap();
    let bytes = peer.server.inner.hw.dev.bar.vram_bytes();
    source.server.inner.hw.map_peer(1, fd, bytes).unwrap();
    let invalidations = source.stats(CLIENT).invalidations;
    assert!(matches!(
        push(&source, PageMask::first(PAGES as usize), 1),
        Ok(n::Reply::PushToPeer(_))
    ));
    assert!(source.stats(CLIENT).invalidations > invalidations);
    let after = source.touch(CLIENT, vm, 0x4000_0000, PAGES * PAGE).unwrap();
    let done = source.wait(CLIENT, after, 10_000).unwrap();
    assert_eq!(done.status, ipc_protocol::types::JobStatus::Completed);
    assert!(
        done.faults > 0,
        "the push left the source's mappings: {done:?}"
    );
}

#[test]
fn the_source_pushes_its_pages_into_the_peers_vram() {
    let (source, peer) = (
        World::new(common::budget("")),
        World::new(common::budget("")),
    );
    let frames = pages_in_vram(&source);
    // No window yet: refused, nothing written.
    assert_eq!(
        push(&source, PageMask::first(8), 1).err(),
        Some(NotifyError::NoPeer)
    );
    let fd = peer.server.inner.hw.dev.bar.vram().dup_fd().unwrap();
    let bytes = peer.server.inner.hw.dev.bar.vram_bytes();
    source.server.inner.hw.map_peer(1, fd, bytes).unwrap();
    // Pages 1..7 but 4.
    let mut pages = PageMask::EMPTY;
    for p in (1..8).filter(|&p| p != 4) {
        pages.set(p);
    }
    match push(&source, pages, 1) {
        Ok(n::Reply::PushToPeer(n::Pushed { pushed })) => assert_eq!(pushed, pages),
        r => panic!("unexpected {r:?}"),
    }
    let landed = peer.server.inner.hw.dev.bar.vram();
    for p in 0..PAGES as usize {
        let mut got = vec![0u8; PAGE as usize];
        assert!(landed.read((TO_PFN + p as u64) * PAGE, &mut got));
        if pages.get(p) {
            assert!(
                got == page_pattern(p),
                "page {p} differs in the peer's VRAM"
            );
        } else {
            assert!(got.iter().all(|&b| b == 0), "page {p} was not to be pushed");
        }
    }
    // The source keeps its frames (the pager frees them with FreePages).
    let vram = source.server.inner.hw.dev.bar.vram();
    for (p, pfn) in frames.iter().enumerate() {
        let mut kept = vec![0u8; PAGE as usize];
        assert!(vram.read(pfn * PAGE, &mut kept) && kept == page_pattern(p));
    }
    let runs = source.server.inner.frames(0, 0);
    let held: u64 = runs.runs.as_slice().iter().map(|r| r.pages as u64).sum();
    assert!(held >= PAGES, "{held} frames held");
}

#[test]
fn a_push_to_itself_or_past_the_window_is_refused() {
    let (source, peer) = (
        World::new(common::budget("")),
        World::new(common::budget("")),
    );
    pages_in_vram(&source);
    let fd = peer.server.inner.hw.dev.bar.vram().dup_fd().unwrap();
    let bytes = peer.server.inner.hw.dev.bar.vram_bytes();
    source.server.inner.hw.map_peer(1, fd, bytes).unwrap();
    // GPU 0 is the source itself; GPU 15 has no window.
    for to in [0, 15] {
        assert_eq!(
            push(&source, PageMask::first(8), to).err(),
            Some(NotifyError::NoPeer)
        );
    }
    // Frames past the peer's VRAM: the copy is refused whole.
    let far = n::Request::PushToPeer(n::PushToPeer {
        object: ObjectId::raw(VIEW),
        first_page: 0,
        count: PageCount::new(8).unwrap(),
        pages: PageMask::first(8),
        to: GpuId::new(1).unwrap(),
        to_first_pfn: bytes / PAGE - 4,
        seq: Seq::raw(1),
    });
    assert_eq!(notify(&source, far).err(), Some(NotifyError::CopyFailed));
    // A frame number whose address wraps.
    let wraps = n::Request::PushToPeer(n::PushToPeer {
        object: ObjectId::raw(VIEW),
        first_page: 0,
        count: PageCount::new(8).unwrap(),
        pages: PageMask::first(8),
        to: GpuId::new(1).unwrap(),
        to_first_pfn: u64::MAX / PAGE,
        seq: Seq::raw(1),
    });
    assert_eq!(notify(&source, wraps).err(), Some(NotifyError::BadRange));
    // Pages past u64: none holds a frame, nothing is pushed (no overflow).
    let past = n::Request::PushToPeer(n::PushToPeer {
        object: ObjectId::raw(VIEW),
        first_page: u64::MAX - 2,
        count: PageCount::new(8).unwrap(),
        pages: PageMask::first(8),
        to: GpuId::new(1).unwrap(),
        to_first_pfn: TO_PFN,
        seq: Seq::raw(1),
    });
    match notify(&source, past) {
        Ok(n::Reply::PushToPeer(n::Pushed { pushed })) => assert!(pushed.is_empty()),
        r => panic!("unexpected {r:?}"),
    }
    // The peer's map of its own GPU id is refused.
    let fd = peer.server.inner.hw.dev.bar.vram().dup_fd().unwrap();
    assert!(source.server.inner.hw.map_peer(0, fd, bytes).is_err());
}

/// The collecting side: a fault on pages in a peer's VRAM gives them
/// frames but copies nothing from RAM (their source pushes them at
/// finalize), and a page whose push did not land gives its frame back and
/// is not mapped, so the access faults again; nothing leaks.
#[test]
fn a_fault_on_peer_pages_copies_nothing_and_gives_back_what_did_not_land() {
    let w = World::new(common::budget(""));
    w.pager.peer_objects.lock().unwrap().push(VIEW);
    w.pager.unlanded.lock().unwrap().push(2);
    let vm = w.create_vm(CLIENT).unwrap().vm.get();
    w.bind(CLIENT, vm, VIEW, 0x4000_0000);
    // What a copy from RAM would bring: a pattern in every word.
    let ram = w.pager.memfds.lock().unwrap()[0].dup_fd().unwrap();
    let words = vec![0x5au8; (PAGES * PAGE) as usize];
    rustix::io::pwrite(&ram, &words, 0).unwrap();
    let job = w.touch(CLIENT, vm, 0x4000_0000, PAGES * PAGE).unwrap();
    let done = w.wait(CLIENT, job, 10_000).unwrap();
    assert_eq!(done.status, ipc_protocol::types::JobStatus::Completed);
    let finalized = w.pager.finalized.lock().unwrap().clone();
    assert!(
        finalized.len() >= 2,
        "page 2 faulted again: {}",
        finalized.len()
    );
    // Every frame held is a page's: one chunk, nothing leaked.
    let runs = w.server.inner.frames(0, 0);
    let held: u64 = runs.runs.as_slice().iter().map(|r| r.pages as u64).sum();
    assert_eq!(held, 512);
    let vram = w.server.inner.hw.dev.bar.vram();
    for r in runs.runs.as_slice() {
        for k in 0..r.pages.min(PAGES as u32) as u64 {
            let mut page = vec![0u8; PAGE as usize];
            assert!(vram.read((r.first_pfn + k) * PAGE, &mut page));
            assert!(
                page[8..].iter().all(|&b| b != 0x5a),
                "page {k} was copied from RAM"
            );
        }
    }
}

/// Peer access in place (`Advice::AccessInPlace`): the pages stay in the
/// peer's VRAM and the GPU maps them there, through its peer window. A
/// job reads them where they are: nothing is copied, no frame of ours is
/// taken, nothing is migrated at finalize.
#[test]
fn pages_in_a_peers_vram_are_mapped_in_place_through_the_window() {
    const BASE: u64 = 2048;
    let (w, peer) = (
        World::new(common::budget("")),
        World::new(common::budget("")),
    );
    let fd = peer.server.inner.hw.dev.bar.vram().dup_fd().unwrap();
    let bytes = peer.server.inner.hw.dev.bar.vram_bytes();
    w.server.inner.hw.map_peer(1, fd, bytes).unwrap();
    // The pages' data, in the peer's VRAM only.
    let theirs = peer.server.inner.hw.dev.bar.vram();
    for p in 0..512u64 {
        assert!(theirs.write((BASE + p) * PAGE, &page_pattern(p as usize)));
    }
    w.pager.in_place.lock().unwrap().push((VIEW, BASE));
    let vm = w.create_vm(CLIENT).unwrap().vm.get();
    w.bind(CLIENT, vm, VIEW, 0x4000_0000);
    let job = w.touch(CLIENT, vm, 0x4000_0000, PAGES * PAGE).unwrap();
    let done = w.wait(CLIENT, job, 10_000).unwrap();
    assert_eq!(done.status, ipc_protocol::types::JobStatus::Completed);
    // No page mapped in place migrated or took a frame of ours (the
    // stand-in pager describes the first 256 pages of a collect in place;
    // the rest of the chunk are plain zero pages, which do).
    let in_place = PageMask::first(256);
    for f in w.pager.finalized.lock().unwrap().iter() {
        assert!(
            f.and(&in_place).is_empty(),
            "a page mapped in place migrated: {f:?}"
        );
    }
    let runs = w.server.inner.frames(0, 0);
    assert!(runs.runs.as_slice().iter().all(|r| r.first_page >= 256));
    // The mapping points into the peer's VRAM: a write through it lands
    // there (the touch kernel read it; an increment writes).
    let inc = w.increment(CLIENT, vm, 0x4000_0000, PAGE).unwrap();
    assert_eq!(
        w.wait(CLIENT, inc, 10_000).unwrap().status,
        ipc_protocol::types::JobStatus::Completed
    );
    let mut got = vec![0u8; 4];
    assert!(theirs.read(BASE * PAGE, &mut got));
    let want = u32::from_le_bytes(page_pattern(0)[..4].try_into().unwrap()).wrapping_add(1);
    assert_eq!(u32::from_le_bytes(got.try_into().unwrap()), want);
}

/// A push its source did not answer in time (`Finalized::late`) may still
/// land later, in the frame this GPU gave the page: that frame leaves the
/// page and stays allocated, never handed to another page the late push
/// would overwrite. The page is not mapped and the access faults again.
#[test]
fn a_frame_a_late_push_may_write_is_kept_out_of_use() {
    let w = World::new(common::budget(""));
    w.pager.peer_objects.lock().unwrap().push(VIEW);
    w.pager.late.lock().unwrap().push(2);
    let vm = w.create_vm(CLIENT).unwrap().vm.get();
    w.bind(CLIENT, vm, VIEW, 0x4000_0000);
    let job = w.touch(CLIENT, vm, 0x4000_0000, PAGES * PAGE).unwrap();
    let done = w.wait(CLIENT, job, 10_000).unwrap();
    assert_eq!(done.status, ipc_protocol::types::JobStatus::Completed);
    assert!(
        w.pager.finalized.lock().unwrap().len() >= 2,
        "page 2 faulted again"
    );
    let inner = &w.server.inner;
    let quarantined = inner
        .counters
        .frames_quarantined
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(quarantined, 1);
    // The fault again moved the chunk into a new block; the quarantined
    // frame keeps its first block allocated (the others left it).
    let runs = inner.frames(0, 0);
    let held: u64 = runs.runs.as_slice().iter().map(|r| r.pages as u64).sum();
    assert_eq!(held, 512);
    assert_eq!(inner.vram.used_pages(), held + 512);
}
