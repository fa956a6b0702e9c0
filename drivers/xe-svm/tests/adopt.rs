//! A restarted GPU server takes over the pages its predecessor left in
//! VRAM (issue 14, `adopt.rs`, `restart.rs`): it claims their frames
//! before it allocates anything, copies them back to RAM with every word
//! intact when the pager asks, frees them on `FreePages`, refuses what a
//! pager names wrongly, and answers a `Wait` for an earlier generation's
//! job with `DeviceReset`.

mod common;

use std::os::fd::OwnedFd;

use common::{World, PAGE};
use ipc_protocol::interfaces::gpu::GpuError;
use ipc_protocol::interfaces::gpu_notify::{self as n, GpuNotify};
use ipc_protocol::interfaces::pager_migrate::ResidentRun;
use ipc_protocol::server::Handler;
use ipc_protocol::types::{ObjectId, PageCount, PageMask};
use ipc_protocol::{Capability, Rights};
use xe_svm::adopt::Adopted;

const SLOT: u32 = 40;
const STAGING_SLOT_BYTES: u64 = 2 << 20;

fn run(object: u32, object_pages: u64, first_page: u64, pages: u32, pfn: u64) -> ResidentRun {
    ResidentRun {
        object: ObjectId::raw(object),
        object_pages,
        first_page,
        pages,
        first_pfn: pfn,
    }
}

fn notify(w: &World, req: n::Request, handles: Vec<OwnedFd>) -> Result<n::Reply, n::NotifyError> {
    let cap = Capability::new(1, Rights::NOTIFY);
    Handler::<GpuNotify>::handle(&w.server, &cap, req, handles).map(|(r, _)| r)
}

/// Page `i` of the test's pattern: every word names its page and word.
fn page_words(i: u64) -> Vec<u8> {
    (0..PAGE / 8)
        .flat_map(|w| ((i << 32) | w | 0xa5a5_0000_0000_0000).to_le_bytes())
        .collect()
}

/// Writes pattern pages `pages` into VRAM at frames `pfns` through the
/// copy engine, as the dead predecessor's migrations had.
fn fill_vram(w: &World, pages: &[u64], pfns: &[u64]) {
    let region = hw::shm::Region::create("adopt-fill", (pages.len() as u64 * PAGE) as usize)
        .expect("a region");
    let dev = &w.server.inner.hw.dev;
    let dma = dev
        .bar
        .dma_map(
            SLOT,
            region.dup_fd().expect("dup"),
            pages.len() as u64 * PAGE,
        )
        .expect("dma map");
    for (k, p) in pages.iter().enumerate() {
        assert!(region.write(k as u64 * PAGE, &page_words(*p)));
    }
    let copies: Vec<_> = pfns
        .iter()
        .enumerate()
        .map(|(k, pfn)| (dma + k as u64 * PAGE, pfn * PAGE, PAGE))
        .collect();
    assert!(dev.copy(&copies).expect("copy"), "the fill copy failed");
    dev.bar.dma_unmap(SLOT).expect("unmap");
}

#[test]
fn adopted_pages_keep_their_frames_and_come_back_word_for_word() {
    let w = World::new(common::budget(""));
    // Object 7: pages 10..14 at frames 600..604, page 200 at frame 3.
    // Object 9: page 0 at frame 4. Then what a wrong pager might say.
    let good = [
        run(7, 512, 10, 4, 600),
        run(7, 512, 200, 1, 3),
        run(9, 16, 0, 1, 4),
    ];
    let bad = [
        run(9, 16, 15, 2, 900),         // past the object's end
        run(11, 8, 0, 1, 600),          // a frame named twice
        run(12, 8, 0, 1, u64::MAX - 1), // outside VRAM
        run(13, u64::MAX, 0, 1, 910),   // an object too large
        run(7, 512, 10, 1, 920),        // a page named twice
    ];
    *w.pager.resident.lock().unwrap() = good.iter().chain(&bad).cloned().collect();
    let pages = [10, 11, 12, 13, 200, 0];
    let pfns = [600, 601, 602, 603, 3, 4];
    fill_vram(&w, &pages, &pfns);
    let adopted = w.server.take_over(2).expect("take over");
    assert_eq!(
        adopted,
        Adopted {
            objects: 2,
            pages: 6,
            refused: 6
        },
        "objects 7 and 9 (not 11 or 12: their one page was refused); six pages each way"
    );
    let vram = &w.server.inner.vram;
    assert_eq!(vram.used_pages(), 6, "exactly the adopted frames are taken");
    assert!(pfns.iter().all(|f| vram.holds(*f)));
    // Nothing new lands on them.
    let mut got = Vec::new();
    while let Ok(b) = vram.alloc(0) {
        assert!(!pfns.contains(&b), "frame {b} handed out again");
        got.push(b);
    }
    for b in got {
        vram.free_unused(b).unwrap();
    }
    // The pager copies object 7's pages back: every word is the one left.
    let staging = hw::shm::Region::create("adopt-staging", STAGING_SLOT_BYTES as usize).unwrap();
    let attach = n::Request::AttachStaging(n::AttachStaging {
        size_bytes: STAGING_SLOT_BYTES,
    });
    notify(&w, attach, vec![staging.dup_fd().unwrap()]).expect("staging");
    let mask = PageMask::first(4);
    let copy = n::Request::MigrateToRam(n::MigrateToRam {
        object: ObjectId::raw(7),
        first_page: 10,
        count: PageCount::new(4).unwrap(),
        pages: mask,
        staging_offset: 0,
    });
    match notify(&w, copy, vec![]).expect("copy back") {
        n::Reply::MigrateToRam(r) => assert_eq!(r.copied, mask),
        r => panic!("unexpected {r:?}"),
    }
    for k in 0..4u64 {
        let mut buf = vec![0u8; PAGE as usize];
        staging.read(k * PAGE, &mut buf);
        assert!(buf == page_words(10 + k), "page {} came back wrong", 10 + k);
    }
    // FreePages drops them; the object goes with its last page.
    for (object, first, count) in [(7, 10, 4), (7, 200, 1), (9, 0, 1)] {
        let free = n::Request::FreePages(n::FreePages {
            object: ObjectId::raw(object),
            first_page: first,
            count: PageCount::new(count).unwrap(),
            pages: PageMask::first(count as usize),
        });
        notify(&w, free, vec![]).expect("free pages");
    }
    assert_eq!(vram.used_pages(), 0, "every adopted frame was freed");
    assert!(!w.server.inner.knows_object(7) && !w.server.inner.knows_object(9));
}

#[test]
fn a_wait_for_an_earlier_generations_job_is_device_reset() {
    let w = World::new(common::budget(""));
    w.server.take_over(3).expect("take over, nothing resident");
    // Epoch 0 (generation 1) and epoch 1 (generation 2) took jobs.
    for old in [5, (1 << 32) | 5] {
        assert_eq!(w.wait(100, old, 10).unwrap_err(), GpuError::DeviceReset);
    }
    // Epoch 2 is ours: a job it never took; a later epoch names none.
    for none in [(2 << 32) | 5, (9 << 32) | 5] {
        assert_eq!(w.wait(100, none, 10).unwrap_err(), GpuError::NoSuchJob);
    }
}

/// A pager whose `Resident` cursor stands still is not asked forever.
#[test]
fn a_resident_cursor_that_does_not_move_ends_the_take_over() {
    let w = World::new(common::budget(""));
    *w.pager.resident.lock().unwrap() = vec![run(5, 8, 0, 1, 10); 3];
    assert_eq!(
        w.server.take_over(2).unwrap_err(),
        xe_svm::restart::TakeOverError::NoProgress
    );
    assert_eq!(w.server.inner.vram.used_pages(), 0, "nothing adopted");
}
