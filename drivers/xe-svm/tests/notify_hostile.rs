//! The GPU server's notifier under any numbers (the handlers fuzzed, not
//! only the decoder): `Invalidate`, `MigrateToRam`, `PushToPeer`,
//! `FreePages` and `Frames` with any object, page, count, mask, peer,
//! frame and sequence, against a server whose pages sit in VRAM and
//! that has a peer window. Each request gets a reply or a typed error,
//! never a panic (a page range past `u64` once panicked in `zap`), and
//! the server still runs a job to completion afterwards.

mod common;

use common::{World, PAGE};
use ipc_protocol::interfaces::gpu_notify::{self as n, NotifyError};
use ipc_protocol::types::{GpuId, JobStatus, ObjectId, PageCount, PageMask, Seq};
use proptest::prelude::*;

const CLIENT: u64 = 7;
const VIEW: u32 = 3;
const BASE: u64 = 0x4000_0000;

fn notify(w: &World, req: n::Request) -> Result<n::Reply, NotifyError> {
    w.notify(req)
}

/// A page number: near the object's start, or anywhere up to `u64::MAX`.
fn page() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..1024,
        any::<u64>(),
        (0u64..8).prop_map(|k| u64::MAX - k)
    ]
}

fn request() -> impl Strategy<Value = n::Request> {
    let object = prop_oneof![Just(VIEW), any::<u32>()].prop_map(ObjectId::raw);
    let count = (1u16..=512).prop_map(|c| PageCount::new(c).unwrap());
    let mask = any::<[u64; 8]>().prop_map(PageMask);
    let gpu = (0u8..=15).prop_map(|g| GpuId::new(g).unwrap());
    let pfn = prop_oneof![0u64..100_000, any::<u64>()];
    // Sequence 0: the test pager's collects read 0, and a higher one only
    // keeps the pager's own object from mapping until it reads more
    // (rule 8's check), which the job afterwards would wait on.
    let fields = (object, page(), count, mask, gpu, pfn, Just(0u64));
    (0u8..5, fields).prop_map(
        |(kind, (object, first_page, count, pages, to, pfn, seq))| match kind {
            0 => n::Request::Invalidate(n::Invalidate {
                object,
                first_page,
                count,
                seq: Seq::raw(seq),
            }),
            1 => n::Request::MigrateToRam(n::MigrateToRam {
                object,
                first_page,
                count,
                pages,
                staging_offset: pfn,
            }),
            2 => n::Request::PushToPeer(n::PushToPeer {
                object,
                first_page,
                count,
                pages,
                to,
                to_first_pfn: pfn,
                seq: Seq::raw(seq),
            }),
            3 => n::Request::FreePages(n::FreePages {
                object,
                first_page,
                count,
                pages,
            }),
            _ => n::Request::Frames(n::Frames {
                from_object: object.get(),
                from_page: first_page,
            }),
        },
    )
}

/// A server with a chunk of `VIEW` in VRAM and a window on a peer's VRAM.
fn server_with_pages_and_a_peer() -> (World, World, u32) {
    let (w, peer) = (
        World::new(common::budget("")),
        World::new(common::budget("")),
    );
    let vm = w.create_vm(CLIENT).unwrap().vm.get();
    w.bind(CLIENT, vm, VIEW, BASE);
    let job = w.touch(CLIENT, vm, BASE, 8 * PAGE).unwrap();
    assert_eq!(
        w.wait(CLIENT, job, 10_000).unwrap().status,
        JobStatus::Completed
    );
    let fd = peer.server.inner.hw.dev.bar.vram().dup_fd().unwrap();
    let bytes = peer.server.inner.hw.dev.bar.vram_bytes();
    w.server.inner.hw.map_peer(1, fd, bytes).unwrap();
    (w, peer, vm)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]
    #[test]
    fn any_notify_request_is_answered_and_the_server_still_runs_jobs(
        requests in proptest::collection::vec(request(), 1..12)
    ) {
        let (w, _peer, vm) = server_with_pages_and_a_peer();
        for r in requests {
            // A reply or a typed error; a panic fails the test.
            let _ = notify(&w, r);
        }
        let job = w.touch(CLIENT, vm, BASE, 8 * PAGE).unwrap();
        prop_assert_eq!(w.wait(CLIENT, job, 10_000).unwrap().status, JobStatus::Completed);
    }
}
