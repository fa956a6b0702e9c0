//! `Pager::SyncViews`: the kernel lets `munmap` and `mremap` return once
//! the pager has read their event; a client that then calls `SyncViews`
//! finds the change applied and the GPU server told, however slowly the
//! GPU server listens. (Break the rule, e.g. count a read as applied
//! before its notes are sent, and both tests fail.)
#![cfg(not(feature = "shuttle"))]

mod common;

use std::time::Duration;

use common::{buffer, rig};
use ipc_protocol::interfaces::pager::SyncViews;
use rustix::mm::{mmap_anonymous, mremap_fixed, MapFlags, MremapFlags, ProtFlags};

/// Slower than any scheduling noise: without the wait the check runs first.
const SLOW_GPU: Duration = Duration::from_millis(300);

#[test]
fn after_munmap_and_sync_the_gpu_server_has_heard_the_view_went() {
    let r = rig();
    *r.gpu.note_delay.lock().unwrap() = SLOW_GPU;
    let (_o, _fd, buf) = buffer(&r, 1 << 20);
    buf[0] = 1;
    // SAFETY: our own mapping; `buf` is not used after this.
    unsafe { rustix::mm::munmap(buf.as_mut_ptr().cast(), 1 << 20) }.unwrap();
    r.pager.call(SyncViews {}).unwrap();
    assert_eq!(
        r.gpu.gone.lock().unwrap().len(),
        1,
        "ViewGone before SyncViews returned"
    );
}

#[test]
fn after_mremap_dontunmap_and_sync_the_new_range_is_bound() {
    let r = rig();
    *r.gpu.note_delay.lock().unwrap() = SLOW_GPU;
    let (_o, _fd, buf) = buffer(&r, 1 << 20);
    buf[0] = 7;
    let len = 1 << 20;
    // SAFETY: a fresh reservation nothing else uses.
    let dst = unsafe {
        mmap_anonymous(
            std::ptr::null_mut(),
            len,
            ProtFlags::empty(),
            MapFlags::PRIVATE,
        )
    }
    .unwrap();
    // SAFETY: our own mapping moved whole onto our own reservation; the
    // old range stays mapped.
    let new = unsafe {
        mremap_fixed(
            buf.as_mut_ptr().cast(),
            len,
            len,
            MremapFlags::MAYMOVE | MremapFlags::DONTUNMAP,
            dst,
        )
    }
    .unwrap();
    r.pager.call(SyncViews {}).unwrap();
    assert_eq!(
        r.gpu.copied.lock().unwrap().len(),
        1,
        "ViewCopied before SyncViews returned"
    );
    // SAFETY: the moved range is ours.
    assert_eq!(unsafe { *(new as *const u32) }, 7);
}

#[test]
fn sync_with_no_address_space_returns_at_once() {
    let r = rig();
    let t = std::time::Instant::now();
    r.pager.call(SyncViews {}).unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));
}
