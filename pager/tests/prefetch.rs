//! `Pager::Prefetch` to system (issue 16 item 1) with real userfaultfd
//! views: exactly the range's VRAM pages come back, each once, with their
//! data; pages a migration holds are skipped, never waited for (rule 1);
//! to device is the GPU server's (`NotSupported` here); ranges are checked.
#![cfg(not(feature = "shuttle"))]

mod common;

use std::time::{Duration, Instant};

use common::{buffer, eventually, gpu_migrate, rig, snapshot, Obj, Rig};
use ipc_protocol::client::CallError;
use ipc_protocol::interfaces::pager::{PagerError, Prefetch};
use ipc_protocol::interfaces::pager_migrate::Collect;
use ipc_protocol::types::{GpuId, Location, PageCount, PageStateCode};

fn prefetch(r: &Rig, o: Obj, first: u64, count: u16, to: Location) -> Result<u16, PagerError> {
    match r.pager.call(Prefetch {
        object: o.client,
        first_page: first,
        count: PageCount::new(count).unwrap(),
        to,
        gpu: GpuId::new(0).unwrap(),
    }) {
        Ok(p) => Ok(p.moved),
        Err(CallError::Server(e)) => Err(e),
        Err(e) => panic!("not a server error: {e}"),
    }
}

fn filled(r: &Rig) -> (Obj, std::os::fd::OwnedFd, &'static mut [u32]) {
    let (o, fd, words) = buffer(r, 2 << 20);
    for (i, w) in words.iter_mut().enumerate() {
        *w = i as u32 ^ 0xa5a5_0000;
    }
    eventually("the filled chunk never settled", || {
        snapshot(r, o, 0, 512) == vec![PageStateCode::System; 512]
    });
    (o, fd, words)
}

#[test]
fn exactly_the_range_comes_back_each_page_once() {
    let r = rig();
    let (o, fd, words) = filled(&r);
    assert_eq!(gpu_migrate(&r, o, &fd, 0, 512), 512);
    assert_eq!(prefetch(&r, o, 100, 200, Location::System), Ok(200));
    let states = snapshot(&r, o, 0, 512);
    for (p, s) in states.iter().enumerate() {
        let want = if (100..300).contains(&p) {
            PageStateCode::System
        } else {
            PageStateCode::Device
        };
        assert_eq!(*s, want, "page {p}");
    }
    assert_eq!(*r.gpu.to_ram.lock().unwrap(), 200, "each page copied once");
    assert_eq!(
        prefetch(&r, o, 100, 200, Location::System),
        Ok(0),
        "nothing left"
    );
    // Every word, including those still in VRAM (read back by the CPU).
    for (i, w) in words.iter().enumerate() {
        assert_eq!(*w, i as u32 ^ 0xa5a5_0000, "word {i}");
    }
}

#[test]
fn pages_a_migration_holds_are_skipped_not_waited_for() {
    let r = rig();
    let (o, fd, _words) = filled(&r);
    assert_eq!(gpu_migrate(&r, o, &fd, 0, 256), 256);
    // A collect of pages 256..260 holds them (not finalized).
    let c = r
        .migrate
        .call(Collect {
            object: o.gpu,
            first_page: 256,
            count: PageCount::new(4).unwrap(),
            gpu: GpuId::new(0).unwrap(),
            generation: 1,
            pager_generation: 0,
        })
        .unwrap();
    assert_eq!(c.got.count(), 4);
    let t = Instant::now();
    assert_eq!(prefetch(&r, o, 0, 512, Location::System), Ok(256));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "it waited on held pages"
    );
    assert_eq!(
        snapshot(&r, o, 256, 4),
        vec![PageStateCode::Migrating; 4],
        "the held pages are the collect's still"
    );
}

#[test]
fn to_device_is_the_gpu_servers_and_ranges_are_checked() {
    let r = rig();
    let (o, _fd, _words) = filled(&r);
    assert_eq!(
        prefetch(&r, o, 0, 1, Location::Device),
        Err(PagerError::NotSupported)
    );
    assert_eq!(
        prefetch(&r, o, 500, 13, Location::System),
        Err(PagerError::OutOfRange)
    );
    assert_eq!(
        prefetch(&r, o, u64::MAX, 2, Location::System),
        Err(PagerError::OutOfRange)
    );
}
