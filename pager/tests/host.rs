//! The pager's host mechanics with real userfaultfd views: first-touch
//! zero fill, migration to "VRAM" (a test GPU keeping pages in a map) with
//! collect/finalize, and a herd of CPU threads faulting everything back,
//! every page's data checked.
#![cfg(not(feature = "shuttle"))]

mod common;

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use common::{buffer, eventually, gpu_migrate, gpu_migrate_all, rig, snapshot, Obj, Rig, CLIENT};
use ipc_protocol::interfaces::pager_migrate::{Collect, Finalize};
use ipc_protocol::interfaces::pager_reclaim::Evict;
use ipc_protocol::types::{GpuId, PageCount, PageStateCode};
use rustix::mm::{MapFlags, ProtFlags};

#[test]
fn first_touch_zero_fills_and_writes_stick() {
    let r = rig();
    let (object, _fd, buf) = buffer(&r, 4 << 20);
    assert_eq!(snapshot(&r, object, 0, 4), vec![PageStateCode::Empty; 4]);
    assert_eq!(buf[5], 0);
    for (i, w) in buf.iter_mut().enumerate() {
        *w = i as u32;
    }
    // One fault per 2 MiB chunk filled it all. UFFDIO_COPY wakes the
    // faulting thread before the service thread publishes SYSTEM, so the
    // state may lag the data by a moment.
    eventually("the chunk never settled", || {
        snapshot(&r, object, 0, 512) == vec![PageStateCode::System; 512]
    });
    assert!(buf.iter().enumerate().all(|(i, w)| *w == i as u32));
}

#[test]
fn herd_migrates_back_every_page_once_with_its_data() {
    let r = rig();
    let bytes = 8u64 << 20;
    let (object, fd, buf) = buffer(&r, bytes);
    for (i, w) in buf.iter_mut().enumerate() {
        *w = (i as u32).wrapping_mul(2654435761);
    }
    let pages = bytes / 4096;
    for first in (0..pages).step_by(512) {
        gpu_migrate_all(&r, object, &fd, first, 512);
    }
    assert_eq!(
        snapshot(&r, object, 0, 512),
        vec![PageStateCode::Device; 512]
    );
    assert_eq!(r.gpu.vram.lock().unwrap().len() as u64, pages);
    // 16 threads read every page, each starting elsewhere.
    let base = buf.as_ptr() as usize;
    let threads: Vec<_> = (0..16u64)
        .map(|t| {
            std::thread::spawn(move || {
                let mut bad = 0;
                for k in 0..pages {
                    let pg = (k + t * pages / 16) % pages;
                    for w in [0u64, 1023] {
                        let idx = pg * 1024 + w;
                        // SAFETY: inside the mapping created by `buffer`.
                        let v = unsafe {
                            std::ptr::read_volatile((base as *const u32).add(idx as usize))
                        };
                        if v != (idx as u32).wrapping_mul(2654435761) {
                            bad += 1;
                        }
                    }
                }
                bad
            })
        })
        .collect();
    let bad: u32 = threads.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(bad, 0, "bad words after the herd");
    assert_eq!(
        *r.gpu.to_ram.lock().unwrap(),
        pages,
        "every page moved back exactly once"
    );
    // The readers are woken by the install, before the winner frees the
    // VRAM (`FreePages`) and unlocks: once every page of every chunk says
    // System (unlocked), no VRAM is left.
    eventually("pages stayed locked", || {
        (0..pages)
            .step_by(512)
            .all(|first| snapshot(&r, object, first, 512) == vec![PageStateCode::System; 512])
    });
    assert!(r.gpu.vram.lock().unwrap().is_empty());
}

#[test]
fn writers_block_during_migration_and_are_not_lost() {
    // A writer thread hammers one page while the GPU migrates its chunk
    // back and forth; every write lands exactly once in the final data.
    let r = rig();
    let (object, fd, buf) = buffer(&r, 2 << 20);
    buf.fill(0);
    let base = buf.as_mut_ptr() as usize;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let writer = std::thread::spawn(move || {
        let mut n = 0u32;
        while !s.load(std::sync::atomic::Ordering::Acquire) {
            // SAFETY: inside the mapping; only this thread writes word 7.
            unsafe {
                let p = (base as *mut u32).add(7);
                std::ptr::write_volatile(p, std::ptr::read_volatile(p) + 1);
            }
            n += 1;
        }
        n
    });
    for _ in 0..20 {
        gpu_migrate(&r, object, &fd, 0, 512);
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    let writes = writer.join().unwrap();
    // SAFETY: inside the mapping.
    let v = unsafe { std::ptr::read_volatile((base as *const u32).add(7)) };
    assert_eq!(v, writes, "writes lost across migrations");
}

#[test]
fn eviction_racing_a_cpu_fault_loses_no_page() {
    // The seed's case: an eviction of a 2 MiB chunk races a CPU fault on
    // one of its pages; between them every page moves back exactly once,
    // with its data, and nothing stays in VRAM.
    for round in 0..20u32 {
        let r = rig();
        log::debug!("eviction race: round {round} on test-gpu {}", r.gpu.id);
        let (object, fd, buf) = buffer(&r, 2 << 20);
        for (i, w) in buf.iter_mut().enumerate() {
            *w = i as u32 ^ round;
        }
        log::debug!("eviction race: round {round}: filled");
        gpu_migrate_all(&r, object, &fd, 0, 512);
        log::debug!("eviction race: round {round}: in VRAM");
        let base = buf.as_ptr() as usize;
        let reader = std::thread::spawn(move || {
            let pg = 17 + round as usize * 13;
            // SAFETY: inside the mapping.
            unsafe { std::ptr::read_volatile((base as *const u32).add(pg * 1024)) }
        });
        let evicted = r
            .reclaim
            .call(Evict {
                gpu: GpuId::new(0).unwrap(),
                bytes: 2 << 20,
            })
            .unwrap();
        let seen = reader.join().unwrap();
        let pg = 17 + round as usize * 13;
        assert_eq!(seen, (pg as u32 * 1024) ^ round);
        assert!(evicted.pages <= 512);
        // The fault's reader sees its page once installed; the VRAM goes
        // right after (`FreePages`, still under the page locks).
        eventually(&format!("round {round}: no page left in VRAM"), || {
            r.gpu.vram.lock().unwrap().is_empty()
        });
        assert_eq!(
            *r.gpu.to_ram.lock().unwrap(),
            512,
            "round {round}: a page moved twice or not at all"
        );
        for (i, w) in buf.iter().enumerate() {
            assert_eq!(*w, i as u32 ^ round, "round {round}: word {i}");
        }
    }
}

#[test]
fn eviction_of_an_object_without_views_writes_the_memfd() {
    use ipc_protocol::interfaces::pager::DetachView;
    let r = rig();
    // The GPU server opens the object through a view; then the view goes.
    let (o, fd, _buf) = buffer(&r, 2 << 20);
    r.pager.call(DetachView { view: o.view }).unwrap();
    let data: Vec<u8> = (0..2 << 20).map(|i: u32| (i % 251) as u8).collect();
    rustix::io::pwrite(&fd, &data, 0).unwrap();
    // No view: collect sees EMPTY pages (never faulted), and the test GPU
    // copies the memfd's bytes only for non-zero pages; put real data in VRAM.
    let c = r
        .migrate
        .call(Collect {
            object: o.gpu,
            first_page: 0,
            count: PageCount::new(512).unwrap(),
            gpu: GpuId::new(0).unwrap(),
            generation: 1,
            pager_generation: 0,
        })
        .unwrap();
    {
        let mut vram = r.gpu.vram.lock().unwrap();
        for i in c.got.iter() {
            vram.insert(
                (o.gpu.get(), i as u64),
                data[i * 4096..(i + 1) * 4096].to_vec(),
            );
        }
    }
    r.migrate
        .call(Finalize {
            object: o.gpu,
            first_page: 0,
            count: PageCount::new(512).unwrap(),
            gpu: GpuId::new(0).unwrap(),
            vram_first_pfn: 0,
            got: c.got,
            migrated: c.got,
        })
        .unwrap();
    rustix::io::pwrite(&fd, &vec![0u8; 2 << 20], 0).unwrap(); // the RAM copy is gone
    let e = r
        .reclaim
        .call(Evict {
            gpu: GpuId::new(0).unwrap(),
            bytes: 2 << 20,
        })
        .unwrap();
    assert_eq!(e.pages, 512);
    let mut back = vec![0u8; 2 << 20];
    rustix::io::pread(&fd, &mut back, 0).unwrap();
    assert!(back == data, "evicted data differs");
}

#[test]
fn a_client_that_disconnects_loses_its_views_and_objects_and_vram() {
    let Rig {
        server,
        pager,
        migrate,
        reclaim,
        gpu,
    } = rig();
    let r = Rig {
        server: server.clone(),
        pager,
        migrate,
        reclaim,
        gpu: gpu.clone(),
    };
    let (object, fd, buf) = buffer(&r, 2 << 20);
    buf.fill(7);
    gpu_migrate_all(&r, object, &fd, 0, 512);
    assert_eq!(gpu.vram.lock().unwrap().len(), 512);
    assert!(server
        .object_state(CLIENT, object.client.get(), 0)
        .is_some());
    // The client goes away: its endpoint closes.
    drop(r);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while server
        .object_state(CLIENT, object.client.get(), 0)
        .is_some()
        || !gpu.vram.lock().unwrap().is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the dead client's object or VRAM was not released"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

// View changes (issue 6): the pager follows fork, mremap and munmap of a
// view through the client's userfaultfd events.

unsafe extern "C" {
    fn mremap(
        old: *mut std::ffi::c_void,
        old_len: usize,
        new_len: usize,
        flags: i32,
        ...
    ) -> *mut std::ffi::c_void;
    fn syscall(number: i64, ...) -> i64;
    fn _exit(code: i32) -> !;
}

/// fork(2) without glibc's wrapper. The wrapper holds every malloc arena
/// lock until the syscall returns, and the syscall waits for the pager to
/// read the fork event; the pager runs in this test process and allocates
/// while it does. (A real client and the pager are separate processes.)
/// The child must not allocate: it may inherit a held lock.
fn raw_fork() -> i32 {
    #[cfg(target_arch = "x86_64")]
    const SYS_CLONE: i64 = 56;
    #[cfg(target_arch = "aarch64")]
    const SYS_CLONE: i64 = 220;
    const SIGCHLD: i64 = 17;
    // SAFETY: clone with only SIGCHLD is fork; the callers' children only
    // touch memory and `_exit`.
    unsafe { syscall(SYS_CLONE, SIGCHLD, 0i64, 0i64, 0i64, 0i64) as i32 }
}
/// Waits for child `pid` to end; how it ended.
fn wait_child(pid: i32) -> rustix::process::WaitStatus {
    rustix::process::waitpid(
        Some(rustix::process::Pid::from_raw(pid).unwrap()),
        rustix::process::WaitOptions::empty(),
    )
    .unwrap()
    .unwrap()
    .1
}

const MREMAP_MAYMOVE: i32 = 1;
const MREMAP_FIXED: i32 = 2;
const MREMAP_DONTUNMAP: i32 = 4;

fn pattern(i: usize) -> u32 {
    (i as u32).wrapping_mul(2654435761) ^ 0x5a5a
}

/// A 2 MiB buffer filled with `pattern`, all of it moved to the test GPU.
fn buffer_in_vram(r: &Rig) -> (Obj, OwnedFd, &'static mut [u32]) {
    let (object, fd, buf) = buffer(r, 2 << 20);
    for (i, w) in buf.iter_mut().enumerate() {
        *w = pattern(i);
    }
    gpu_migrate_all(r, object, &fd, 0, 512);
    assert_eq!(
        snapshot(r, object, 0, 512),
        vec![PageStateCode::Device; 512]
    );
    (object, fd, buf)
}

/// A PROT_NONE reservation to move a view onto.
fn reserve_range(len: usize) -> u64 {
    // SAFETY: a fresh anonymous reservation at a kernel-chosen address.
    unsafe {
        rustix::mm::mmap_anonymous(
            std::ptr::null_mut(),
            len,
            ProtFlags::empty(),
            MapFlags::PRIVATE,
        )
    }
    .unwrap() as u64
}

/// Waits until the object's own (not fork-born) views are `want`. View
/// events are handled after the client's call returns, and other tests'
/// forks may add fork-born twins of this test's views.
fn wait_views(r: &Rig, object: Obj, want: &[(u64, usize, usize)]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let own: Vec<(u64, usize, usize)> = r
            .server
            .views_of_object(CLIENT, object.client.get())
            .into_iter()
            .filter(|v| !v.3)
            .map(|v| (v.0, v.1, v.2))
            .collect();
        if own == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "views {own:x?}, expected {want:x?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Words of `[addr, addr + 2 MiB)` that differ from `pattern(i) + add`.
fn bad_words(addr: u64, add: u32) -> usize {
    (0..(2 << 20) / 4)
        // SAFETY: the caller names a mapped 2 MiB range.
        .filter(|&i| unsafe { std::ptr::read_volatile((addr as *const u32).add(i)) } != pattern(i).wrapping_add(add))
        .count()
}

/// The seed's scenario: a thread hammers reads on a range whose pages are
/// in VRAM while another thread moves it with `MREMAP_DONTUNMAP`. Both
/// views reach the same object: reads through either are right, and every
/// page came back from VRAM exactly once.
#[test]
fn mremap_dontunmap_while_reads_hammer_the_range() {
    let r = rig();
    let (object, _fd, buf) = buffer_in_vram(&r);
    let old = buf.as_ptr() as u64;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let reader = std::thread::spawn(move || {
        let mut bad = 0;
        while !s.load(std::sync::atomic::Ordering::Acquire) {
            bad += bad_words(old, 0);
        }
        bad
    });
    std::thread::sleep(std::time::Duration::from_millis(2));
    let dst = reserve_range(2 << 20);
    // SAFETY: moves our own view onto our own reservation.
    let new = unsafe {
        mremap(
            old as *mut _,
            2 << 20,
            2 << 20,
            MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP,
            dst as *mut std::ffi::c_void,
        )
    } as u64;
    assert_eq!(new, dst, "mremap failed");
    assert_eq!(bad_words(new, 0), 0, "the moved view reads wrong data");
    stop.store(true, std::sync::atomic::Ordering::Release);
    assert_eq!(
        reader.join().unwrap(),
        0,
        "the hammering reader saw wrong data"
    );
    assert_eq!(bad_words(old, 0), 0, "the old view reads wrong data");
    let mut both = vec![(old, 0, 512), (new, 0, 512)];
    both.sort();
    wait_views(&r, object, &both);
    assert_eq!(
        *r.gpu.to_ram.lock().unwrap(),
        512,
        "every page came back once"
    );
    // The pages can go to VRAM and come back through the new view too.
    gpu_migrate_all(&r, object, &_fd, 0, 512);
    assert_eq!(bad_words(new, 0), 0);
}

/// An mremap that grows a view whose tail pages are in VRAM (issue 16
/// item 9): the kernel reports the move, not the growth, so the tail's
/// first fault comes in no view. The pager reads the faulting thread's
/// mapping, makes the tail a view of the same object, and serves it from
/// VRAM: every word right, none zero.
#[test]
fn mremap_growth_is_followed_while_the_tail_is_in_vram() {
    const HALF: usize = 2 << 20;
    let r = rig();
    let (object, fd, buf) = buffer(&r, 4 << 20);
    for (i, w) in buf.iter_mut().enumerate() {
        *w = pattern(i);
    }
    let old = buf.as_ptr() as u64;
    // Shrink to the first half (the tail is no view's now), then put the
    // tail's pages in VRAM: only the object holds them.
    // SAFETY: our mapping; `buf` is not used after this.
    let shrunk = unsafe { mremap(old as *mut _, 2 * HALF, HALF, 0) } as u64;
    assert_eq!(shrunk, old, "mremap (shrink) failed");
    wait_views(&r, object, &[(old, 0, 512)]);
    // The shrink is applied (and the tail it left moved out of VRAM).
    r.pager
        .call(ipc_protocol::interfaces::pager::SyncViews {})
        .unwrap();
    gpu_migrate_all(&r, object, &fd, 512, 512);
    assert_eq!(
        snapshot(&r, object, 512, 512),
        vec![PageStateCode::Device; 512]
    );
    let dst = reserve_range(2 * HALF);
    // SAFETY: as above; grows the mapping back over the whole object.
    let new = unsafe {
        mremap(
            old as *mut _,
            HALF,
            2 * HALF,
            MREMAP_MAYMOVE | MREMAP_FIXED,
            dst as *mut std::ffi::c_void,
        )
    } as u64;
    assert_eq!(new, dst, "mremap (grow) failed");
    let tail_bad = (0..HALF / 4)
        .filter(|&i| {
            // SAFETY: the grown mapping is 4 MiB long.
            let w = unsafe { std::ptr::read_volatile((dst as *const u32).add(HALF / 4 + i)) };
            w != pattern(HALF / 4 + i)
        })
        .count();
    assert_eq!(
        tail_bad, 0,
        "the grown tail reads wrong data (zeros: not followed)"
    );
    assert_eq!(bad_words(dst, 0), 0, "the moved head reads wrong data");
    wait_views(&r, object, &[(dst, 0, 512), (dst + HALF as u64, 512, 512)]);
}

/// No hang (issue 14): a CPU fault whose copy back from VRAM keeps failing
/// ends after the pager's deadline with an error the client sees (the
/// access gets SIGBUS), instead of retrying forever; the page keeps its
/// data, and once copies work again a read through another view gets it.
#[test]
fn a_fault_that_keeps_failing_ends_in_sigbus() {
    if !pager::host::uffd::poison_supported() {
        eprintln!("skipped: this kernel has no UFFDIO_POISON");
        return;
    }
    let mut cfg = pager::host::Config::default();
    cfg.core.fault_deadline_us = 200_000;
    let r = common::rig_with(cfg);
    let (_object, _fd, buf) = buffer_in_vram(&r);
    let addr = buf.as_ptr() as u64;
    r.gpu
        .fail_to_ram
        .store(true, std::sync::atomic::Ordering::Release);
    // SAFETY: the child only reads the mapping and exits with `_exit`.
    let pid = raw_fork();
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: inside the inherited mapping.
        let v = unsafe { std::ptr::read_volatile(addr as *const u32) };
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { _exit(if v == pattern(0) { 1 } else { 2 }) };
    }
    let status = wait_child(pid);
    assert_eq!(
        status.terminating_signal(),
        Some(rustix::process::Signal::BUS.as_raw()),
        "the child's read ended some other way: {status:?}"
    );
    r.gpu
        .fail_to_ram
        .store(false, std::sync::atomic::Ordering::Release);
    assert_eq!(bad_words(addr, 0), 0, "the data survived the failed copies");
}

/// Deadlines on the GPU server's notifier (issue 14): a copy back to RAM
/// answered past the pager's deadline fails that try (the pages stay in
/// VRAM; the fault is retried and served through another slot), and its
/// staging slot, which the late copy still writes, is not lent again until
/// the late answer says the copy is done. Every word comes back; the VRAM
/// is dropped only once the copies landed.
#[test]
fn a_copy_back_past_its_deadline_quarantines_its_slot_and_loses_nothing() {
    let mut cfg = pager::host::Config::default();
    cfg.staging_slots = 2;
    let deadline = std::time::Duration::from_millis(100);
    let r = common::rig_with_gpu_deadline(cfg, Some(deadline));
    let (object, fd, buf) = buffer_in_vram(&r);
    let addr = buf.as_ptr() as u64;
    let late = std::time::Duration::from_millis(500);
    *r.gpu.delay_next_to_ram.lock().unwrap() = Some(late);
    assert_eq!(bad_words(addr, 0), 0, "the fault after the late copy");
    std::thread::sleep(late + deadline);
    // Once more: into VRAM and back through the slot still lent.
    gpu_migrate_all(&r, object, &fd, 0, 512);
    assert_eq!(bad_words(addr, 0), 0, "the second trip back");
    let offsets = r.gpu.to_ram_offsets.lock().unwrap().clone();
    assert!(offsets.len() >= 3, "{offsets:?}");
    assert_ne!(
        offsets[1], offsets[0],
        "the slot the late copy was to write was lent meanwhile"
    );
    assert!(
        offsets[2..].contains(&offsets[0]),
        "the slot never came back after the late answer: {offsets:?}"
    );
    // A reader sees its page once installed; the VRAM goes and the state
    // says System right after, the page locks held until then.
    eventually("every page System", || {
        snapshot(&r, object, 0, 512) == vec![PageStateCode::System; 512]
    });
    let left = r.gpu.vram.lock().unwrap().len();
    assert_eq!(left, 0, "VRAM of pages back in RAM was not dropped");
}

/// A plain mremap (the old range goes) while the pages are in VRAM: the
/// view follows to the new address, keeps its id, and faults there are
/// served; the old record is gone.
#[test]
fn mremap_moves_the_view_while_pages_are_in_vram() {
    let r = rig();
    let (object, fd, buf) = buffer_in_vram(&r);
    let old = buf.as_ptr() as u64;
    let dst = reserve_range(2 << 20);
    // SAFETY: as above; `buf` is not used after the move.
    let new = unsafe {
        mremap(
            old as *mut _,
            2 << 20,
            2 << 20,
            MREMAP_MAYMOVE | MREMAP_FIXED,
            dst as *mut std::ffi::c_void,
        )
    } as u64;
    assert_eq!(new, dst, "mremap failed");
    wait_views(&r, object, &[(new, 0, 512)]);
    assert_eq!(bad_words(new, 0), 0, "the moved view reads wrong data");
    assert_eq!(*r.gpu.to_ram.lock().unwrap(), 512);
    // The GPU server heard of the new address before mremap returned, and
    // that the old view went.
    let copied: Vec<(u64, u64)> = r
        .gpu
        .copied
        .lock()
        .unwrap()
        .iter()
        .map(|c| (c.2, c.3))
        .collect();
    assert_eq!(
        copied,
        vec![(old, new)],
        "the GPU server heard of the new address"
    );
    let view = r.gpu.copied.lock().unwrap()[0].0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !r.gpu.gone.lock().unwrap().contains(&view) {
        assert!(
            std::time::Instant::now() < deadline,
            "the GPU server never heard the old view went"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    gpu_migrate_all(&r, object, &fd, 0, 512);
    assert_eq!(bad_words(new, 0), 0);
}

/// fork: the child's copy of the view reaches the same object (shared,
/// not copy-on-write). The child reads every page (pulled back from VRAM
/// through its own view) and increments every word of the second half;
/// the parent sees the increments.
#[test]
fn fork_child_reads_and_writes_the_shared_object() {
    let r = rig();
    let (object, fd, buf) = buffer_in_vram(&r);
    let addr = buf.as_ptr() as u64;
    // SAFETY: the child only reads and writes the mapping and exits with
    // `_exit`; it allocates nothing and takes no lock.
    let pid = raw_fork();
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let words = (2 << 20) / 4;
        let mut bad = 0;
        for i in 0..words {
            // SAFETY: inside the inherited mapping.
            let p = unsafe { (addr as *mut u32).add(i) };
            let v = unsafe { std::ptr::read_volatile(p) };
            if v != pattern(i) {
                bad += 1;
            }
            if i >= words / 2 {
                // SAFETY: as above.
                unsafe { std::ptr::write_volatile(p, v.wrapping_add(1)) };
            }
        }
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { _exit(bad.min(100)) };
    }
    let status = wait_child(pid);
    assert_eq!(status.exit_status(), Some(0), "the child read wrong data");
    let words = (2 << 20) / 4;
    let bad = (0..words)
        .filter(|&i| buf[i] != pattern(i).wrapping_add((i >= words / 2) as u32))
        .count();
    assert_eq!(bad, 0, "the parent does not see the child's writes");
    let views = r.server.views_of_object(CLIENT, object.client.get());
    assert_eq!(
        views.iter().filter(|v| v.3).count(),
        1,
        "the child's view was followed: {views:x?}"
    );
    // Back to VRAM and back again through the parent's view.
    gpu_migrate_all(&r, object, &fd, 0, 512);
    assert_eq!(
        (0..words)
            .filter(|&i| buf[i] != pattern(i).wrapping_add((i >= words / 2) as u32))
            .count(),
        0
    );
}

/// Forks a child that reads every word of the 2 MiB `pattern` buffer at
/// `addr` and exits; how many words it read wrong (at most 100).
fn child_reads_buffer(addr: u64) -> i32 {
    // SAFETY: the child only reads the mapping and exits with `_exit`.
    let pid = raw_fork();
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let bad = (0..(2 << 20) / 4)
            // SAFETY: inside the inherited mapping.
            .filter(
                |&i| unsafe { std::ptr::read_volatile((addr as *const u32).add(i)) } != pattern(i),
            )
            .count();
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { _exit(bad.min(100) as i32) };
    }
    wait_child(pid).exit_status().unwrap_or(-1)
}

/// Forks `n` children that exit at once, touching nothing.
fn fork_children_that_exit(n: usize) {
    for _ in 0..n {
        let pid = raw_fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { _exit(0) };
        }
        assert_eq!(wait_child(pid).exit_status(), Some(0));
    }
}

/// A fork's child that exits sends no event, yet its place in the budget
/// comes back: 20 children (past the 16 spaces a client may hold) fork and
/// exit at once, and the next child is still followed and reads every
/// word of the buffer in VRAM (not followed, it would read the memfd's
/// holes as zeros).
#[test]
fn children_that_exited_leave_room_for_the_next_fork() {
    let r = rig();
    let (_object, _fd, buf) = buffer_in_vram(&r);
    fork_children_that_exit(20);
    assert_eq!(
        child_reads_buffer(buf.as_ptr() as u64),
        0,
        "the last child read wrong data"
    );
}

/// Forks `n` children that wait until the returned pipe end is dropped,
/// then exit; returns that end and their pids.
fn fork_children_that_wait(n: usize) -> (OwnedFd, Vec<i32>) {
    let (rx, tx) = rustix::pipe::pipe().unwrap();
    let pids = (0..n)
        .map(|_| {
            let pid = raw_fork();
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                // Our copy of the write end must go, or no end of file.
                // SAFETY: the child's own descriptor table; `tx` is not
                // used in the child after this.
                unsafe { rustix::io::close(tx.as_raw_fd()) };
                let mut b = [0u8; 1];
                // Returns at end of file: the parent dropped its end.
                let _ = rustix::io::read(&rx, &mut b);
                // SAFETY: ends the child without the parent's destructors.
                unsafe { _exit(0) };
            }
            pid
        })
        .collect();
    (tx, pids)
}

/// Forks a child that waits `delay_ms`, then reads (or writes) the word
/// at `addr`; how it ended.
fn child_accesses(addr: u64, write: bool, delay_ms: u64) -> rustix::process::WaitStatus {
    let pid = raw_fork();
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let delay = rustix::thread::Timespec {
            tv_sec: 0,
            tv_nsec: (delay_ms * 1_000_000) as _,
        };
        let _ = rustix::thread::nanosleep(&delay);
        // SAFETY: inside the inherited mapping; the child then exits.
        let v = unsafe {
            if write {
                std::ptr::write_volatile(addr as *mut u32, 0xdead);
                0
            } else {
                std::ptr::read_volatile(addr as *const u32)
            }
        };
        // SAFETY: ends the child without the parent's destructors.
        unsafe { _exit((v & 0x7f) as i32) };
    }
    wait_child(pid)
}

/// A fork past the client's space budget is not followed, and that is no
/// silent loss: the child becomes an orphan whose read of a page in VRAM
/// gets SIGBUS (not the memfd's hole: zeros), and so does its write to a
/// RAM page it inherited (which could otherwise land in a page on its way
/// to VRAM).
#[test]
fn a_child_past_the_space_budget_gets_sigbus_not_zeros() {
    const SIGBUS: i32 = 7;
    let r = rig();
    let (_object, _fd, in_vram) = buffer_in_vram(&r);
    let (_ram_object, _ram_fd, in_ram) = buffer(&r, 2 << 20);
    in_ram.iter_mut().for_each(|w| *w = 1);
    // Sixteen live children fill the client's spaces (each takes one per
    // space of ours), and those past them are orphans already.
    let (release, holders) = fork_children_that_wait(16);
    let read = child_accesses(in_vram.as_ptr() as u64 + 4096, false, 0);
    assert_eq!(read.terminating_signal(), Some(SIGBUS), "read: {read:?}");
    // Late enough that the orphan's ranges are write-protected (its fork
    // event is read before it runs; adopting it follows at once).
    let write = child_accesses(in_ram.as_ptr() as u64 + 8192, true, 300);
    assert_eq!(write.terminating_signal(), Some(SIGBUS), "write: {write:?}");
    assert!(
        r.server.core().rt.orphans.of(CLIENT) >= 2,
        "the children are orphans"
    );
    assert_eq!(in_ram[2048], 1, "the orphan's write did not land");
    drop(release);
    for pid in holders {
        assert_eq!(wait_child(pid).exit_status(), Some(0));
    }
    // The orphans whose processes ended go (the probe, about a second).
    eventually("orphans of ended children remain", || {
        r.server.core().rt.orphans.of(CLIENT) == 0
    });
}

/// An orphan's own fork child is an orphan too: past the budget, a
/// child forks a grandchild that reads a page in VRAM, and the grandchild
/// gets SIGBUS (its parent exits with the signal's number).
#[test]
fn a_child_an_orphan_forks_is_an_orphan_too() {
    const SIGBUS: i32 = 7;
    let r = rig();
    let (_object, _fd, in_vram) = buffer_in_vram(&r);
    let (release, holders) = fork_children_that_wait(16);
    let addr = in_vram.as_ptr() as u64 + 4096;
    let pid = raw_fork();
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let grandchild = raw_fork();
        if grandchild == 0 {
            // SAFETY: inside the inherited mapping; then `_exit`.
            let v = unsafe { std::ptr::read_volatile(addr as *const u32) };
            // SAFETY: ends the grandchild without destructors.
            unsafe { _exit((v & 0x7f) as i32) };
        }
        let how = rustix::process::waitpid(
            rustix::process::Pid::from_raw(grandchild),
            rustix::process::WaitOptions::empty(),
        );
        let signal = match how {
            Ok(Some((_, s))) => s.terminating_signal().unwrap_or(0),
            _ => 99,
        };
        // SAFETY: ends the child without the parent's destructors.
        unsafe { _exit(signal) };
    }
    assert_eq!(
        wait_child(pid).exit_status(),
        Some(SIGBUS),
        "the grandchild's end"
    );
    drop(release);
    for pid in holders {
        assert_eq!(wait_child(pid).exit_status(), Some(0));
    }
}

/// An idle space asks now and then whether its process is gone: the
/// spaces of children that exited go within seconds, with no fork after
/// them to look.
#[test]
fn spaces_of_children_that_exited_go_while_idle() {
    let r = rig();
    let (_object, _fd, _buf) = buffer_in_vram(&r);
    let spaces = || r.server.core().accounting().spaces;
    let before = spaces();
    fork_children_that_exit(3);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while spaces() != before {
        assert!(
            std::time::Instant::now() < deadline,
            "{} spaces of exited children remain",
            spaces() - before
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// munmap without DetachView: the view goes with the mapping, so the
/// object can be destroyed (it was "busy" while a view reached it).
#[test]
fn munmap_of_a_view_drops_it() {
    use ipc_protocol::interfaces::pager::DestroyObject;
    let r = rig();
    let (object, _fd, buf) = buffer_in_vram(&r);
    assert_eq!(bad_words(buf.as_ptr() as u64, 0), 0);
    // SAFETY: our own mapping; `buf` is not used after this.
    unsafe { rustix::mm::munmap(buf.as_mut_ptr().cast(), 2 << 20) }.unwrap();
    wait_views(&r, object, &[]);
    // The GPU server hears of it once the event is applied.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while r.gpu.gone.lock().unwrap().len() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the GPU server never heard the view went"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    r.pager
        .call(DestroyObject {
            object: object.client,
        })
        .unwrap();
}
