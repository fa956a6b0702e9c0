//! `Pager::Discard` (issue 18) with real userfaultfd views: the range's
//! data goes (the pages are EMPTY and read zeros, with no copy), it is
//! idempotent, its range is checked, and it names only the caller's
//! objects.
#![cfg(not(feature = "shuttle"))]

mod common;

use common::{buffer, client, eventually, rig, snapshot};
use ipc_protocol::client::CallError;
use ipc_protocol::interfaces::pager::{Discard, PagerError};
use ipc_protocol::types::PageStateCode;

fn error<T>(r: Result<T, CallError<PagerError>>) -> Option<PagerError> {
    match r {
        Err(CallError::Server(e)) => Some(e),
        Ok(_) => None,
        Err(e) => panic!("not a server error: {e}"),
    }
}

#[test]
fn discard_drops_the_data_and_is_idempotent() {
    let r = rig();
    let (o, _fd, words) = buffer(&r, 1 << 20);
    for (i, w) in words.iter_mut().enumerate() {
        *w = i as u32 + 1;
    }
    eventually("the filled object never settled", || {
        snapshot(&r, o, 0, 256) == vec![PageStateCode::System; 256]
    });
    let discard = |first_page: u64, pages: u64| {
        error(r.pager.call(Discard {
            object: o.client,
            first_page,
            pages,
        }))
    };
    assert_eq!(discard(16, 32), None);
    let states = snapshot(&r, o, 0, 256);
    for (p, s) in states.iter().enumerate() {
        let want = if (16..48).contains(&p) {
            PageStateCode::Empty
        } else {
            PageStateCode::System
        };
        assert_eq!(*s, want, "page {p}");
    }
    // The next touch is a first touch: zeros. The rest kept its data.
    for (i, w) in words.iter().enumerate() {
        let page = i / 1024;
        let want = if (16..48).contains(&page) {
            0
        } else {
            i as u32 + 1
        };
        assert_eq!(*w, want, "word {i}");
    }
    assert_eq!(discard(16, 32), None, "again: nothing to do, no error");
    assert_eq!(discard(0, 256), None, "the whole object");
    assert!(words.iter().all(|w| *w == 0));
}

#[test]
fn discard_ranges_and_ids_are_checked() {
    let r = rig();
    let (o, _fd, _words) = buffer(&r, 1 << 20);
    let discard = |first_page: u64, pages: u64| {
        error(r.pager.call(Discard {
            object: o.client,
            first_page,
            pages,
        }))
    };
    assert_eq!(
        discard(250, 10),
        Some(PagerError::OutOfRange),
        "past the end"
    );
    assert_eq!(discard(u64::MAX, 2), Some(PagerError::OutOfRange), "wraps");
    assert_eq!(discard(0, 0), Some(PagerError::OutOfRange), "empty");
    assert_eq!(
        discard(0, 257),
        Some(PagerError::OutOfRange),
        "one page too many"
    );
    let other = client(&r, 101);
    let theirs = error(other.call(Discard {
        object: o.client,
        first_page: 0,
        pages: 1,
    }));
    assert_eq!(
        theirs,
        Some(PagerError::NoSuchObject),
        "another client's object"
    );
}

/// `madvise(MADV_DONTNEED)` on a view is a discard (`core/removed.rs`):
/// VRAM pages are freed with no copy back, RAM pages dropped, the rest of
/// the object untouched; `SyncViews` returns once it is done.
#[test]
fn madvise_dontneed_on_a_view_discards_without_a_copy() {
    use common::gpu_migrate;
    use ipc_protocol::interfaces::pager::SyncViews;
    let r = rig();
    let (o, fd, words) = buffer(&r, 2 << 20);
    for (i, w) in words.iter_mut().enumerate() {
        *w = i as u32 + 1;
    }
    eventually("the filled chunk never settled", || {
        snapshot(&r, o, 0, 512) == vec![PageStateCode::System; 512]
    });
    assert_eq!(gpu_migrate(&r, o, &fd, 0, 256), 256);
    // Pages 128..384: half in VRAM, half in RAM.
    let base = words.as_mut_ptr() as usize + 128 * 4096;
    // SAFETY: a range of our own mapping; `words` reads it afterwards.
    unsafe {
        rustix::mm::madvise(
            base as *mut _,
            256 * 4096,
            rustix::mm::Advice::LinuxDontNeed,
        )
    }
    .unwrap();
    r.pager.call(SyncViews {}).unwrap();
    let states = snapshot(&r, o, 0, 512);
    for (p, s) in states.iter().enumerate() {
        let want = match p {
            0..128 => PageStateCode::Device,
            128..384 => PageStateCode::Empty,
            _ => PageStateCode::System,
        };
        assert_eq!(*s, want, "page {p}");
    }
    assert_eq!(*r.gpu.to_ram.lock().unwrap(), 0, "nothing copied back");
    assert_eq!(
        r.gpu.vram.lock().unwrap().len(),
        128,
        "the dropped VRAM pages freed"
    );
    for (i, w) in words.iter().enumerate() {
        let want = if (128..384).contains(&(i / 1024)) {
            0
        } else {
            i as u32 + 1
        };
        assert_eq!(*w, want, "word {i}");
    }
}
