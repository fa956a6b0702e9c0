//! The pager's host mechanics with real userfaultfd views: first-touch
//! zero fill, migration to "VRAM" (a test GPU keeping pages in a map) with
//! collect/finalize, and a herd of CPU threads faulting everything back,
//! every page's data checked.
#![cfg(not(feature = "shuttle"))]

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use ipc_protocol::client::Client;
use ipc_protocol::interfaces::gpu_notify as n;
use ipc_protocol::interfaces::pager::{AttachView, CreateObject, Pager, Snapshot};
use ipc_protocol::interfaces::pager_migrate::{Collect, Finalize, PagerMigrate};
use ipc_protocol::interfaces::pager_reclaim::{Evict, PagerReclaim};
use ipc_protocol::server::{spawn, Handler};
use ipc_protocol::transport::InProc;
use ipc_protocol::types::{GpuId, ObjectId, PageCount, PageMask, PageStateCode};
use ipc_protocol::{Capability, Rights};
use pager::host::{Config, PagerServer};
use rustix::mm::{mmap, MapFlags, ProtFlags};

const CLIENT: u64 = 100;

/// A GPU that keeps "VRAM" pages in a map and copies into the pager's
/// staging buffer on migrate-to-RAM.
#[derive(Default)]
struct TestGpu {
    vram: Mutex<HashMap<(u32, u64), Vec<u8>>>,
    staging: Mutex<Option<(OwnedFd, usize)>>,
    to_ram: Mutex<u64>,
}

impl Handler<n::GpuNotify> for TestGpu {
    fn handle(&self, _: &Capability, req: n::Request, mut h: Vec<OwnedFd>) -> Result<(n::Reply, Vec<OwnedFd>), n::NotifyError> {
        match req {
            n::Request::AttachStaging(a) => {
                *self.staging.lock().unwrap() = Some((h.pop().unwrap(), a.size_bytes as usize));
                Ok((n::Reply::AttachStaging(n::Done {}), vec![]))
            }
            n::Request::Invalidate(i) => Ok((n::Reply::Invalidate(n::Invalidated { seq: i.seq }), vec![])),
            n::Request::MigrateToRam(m) => {
                let staging = self.staging.lock().unwrap();
                let (fd, _) = staging.as_ref().ok_or(n::NotifyError::NoStaging)?;
                let mut vram = self.vram.lock().unwrap();
                let mut copied = PageMask::EMPTY;
                for i in m.pages.iter() {
                    let data = vram.remove(&(m.object.get(), m.first_page + i as u64)).ok_or(n::NotifyError::NotResident)?;
                    rustix::io::pwrite(fd, &data, m.staging_offset + i as u64 * 4096).unwrap();
                    copied.set(i);
                }
                *self.to_ram.lock().unwrap() += copied.count() as u64;
                Ok((n::Reply::MigrateToRam(n::MigratedToRam { copied }), vec![]))
            }
            n::Request::FreePages(f) => {
                let mut vram = self.vram.lock().unwrap();
                let mut freed = 0;
                for i in f.pages.iter() {
                    if vram.remove(&(f.object.get(), f.first_page + i as u64)).is_some() {
                        freed += 1;
                    }
                }
                Ok((n::Reply::FreePages(n::Freed { pages: freed }), vec![]))
            }
        }
    }
}

struct Rig {
    server: Arc<PagerServer>,
    pager: Client<Pager>,
    migrate: Client<PagerMigrate>,
    reclaim: Client<PagerReclaim>,
    gpu: Arc<TestGpu>,
}

fn rig() -> Rig {
    let server = PagerServer::new(Config::default()).unwrap();
    let gpu = Arc::new(TestGpu::default());
    let (nc, ns) = InProc::pair();
    spawn::<n::GpuNotify, _>("test-gpu", Arc::new(ns), Capability::new(2, Rights::NOTIFY), gpu.clone(), 4);
    server.attach_gpu(Client::new(Arc::new(nc))).unwrap();
    let server = Arc::new(server);
    let server_handle = server.clone();
    let (pc, ps) = InProc::pair();
    spawn::<Pager, _>("pager", Arc::new(ps), Capability::new(CLIENT, Rights::all()), server.clone(), 2);
    let (mc, ms) = InProc::pair();
    spawn::<PagerMigrate, _>("pager-migrate", Arc::new(ms), Capability::new(1, Rights::MIGRATE), server.clone(), 2);
    let (rc, rs) = InProc::pair();
    spawn::<PagerReclaim, _>("pager-reclaim", Arc::new(rs), Capability::new(3, Rights::RECLAIM), server, 1);
    Rig { server: server_handle, pager: Client::new(Arc::new(pc)), migrate: Client::new(Arc::new(mc)), reclaim: Client::new(Arc::new(rc)), gpu }
}

/// Creates an object of `bytes`, maps it, registers the view.
fn buffer(r: &Rig, bytes: u64) -> (ObjectId, OwnedFd, &'static mut [u32]) {
    let (o, mut fds) = r.pager.call_with_handles(CreateObject { size_bytes: bytes }, vec![]).unwrap();
    let memfd = fds.pop().unwrap();
    // SAFETY: a fresh shared mapping of the object; leaked for the test's life.
    let addr = unsafe { mmap(std::ptr::null_mut(), bytes as usize, ProtFlags::READ | ProtFlags::WRITE, MapFlags::SHARED, &memfd, 0) }.unwrap();
    let uffd = pager::host::uffd::create_for_client().unwrap();
    r.pager.call_with_handles(AttachView { object: o.object, addr: addr as u64, object_first_page: 0, pages: bytes / 4096 }, vec![uffd]).unwrap();
    // SAFETY: the mapping is `bytes` long and never unmapped.
    (o.object, memfd, unsafe { std::slice::from_raw_parts_mut(addr as *mut u32, bytes as usize / 4) })
}

/// What the test GPU does on a fault: collect a chunk, copy its pages out
/// of the memfd into "VRAM", finalize.
fn gpu_migrate(r: &Rig, object: ObjectId, memfd: &OwnedFd, first: u64, count: u16) -> u32 {
    let c = r.migrate.call(Collect { object, first_page: first, count: PageCount::new(count).unwrap(), gpu: GpuId::new(0).unwrap() }).unwrap();
    let mut vram = r.gpu.vram.lock().unwrap();
    for i in c.got.iter() {
        let mut page = vec![0u8; 4096];
        if !c.zero.get(i) {
            rustix::io::pread(memfd, &mut page, (first + i as u64) * 4096).unwrap();
        }
        vram.insert((object.get(), first + i as u64), page);
    }
    drop(vram);
    let f = r
        .migrate
        .call(Finalize { object, first_page: first, count: PageCount::new(count).unwrap(), gpu: GpuId::new(0).unwrap(), vram_first_pfn: 0, got: c.got, migrated: c.got })
        .unwrap();
    f.device as u32
}

/// Migrates the chunk, retrying like a GPU that faults again while the
/// pages are still held by the fill's service thread.
fn gpu_migrate_all(r: &Rig, object: ObjectId, memfd: &OwnedFd, first: u64, count: u16) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut moved = 0;
    while moved < count as u32 {
        moved += gpu_migrate(r, object, memfd, first, count);
        assert!(std::time::Instant::now() < deadline, "only {moved} pages reached VRAM");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn snapshot(r: &Rig, object: ObjectId, first: u64, count: u16) -> Vec<PageStateCode> {
    r.pager.call(Snapshot { object, first_page: first, count: PageCount::new(count).unwrap() }).unwrap().states.into_vec()
}

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
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while snapshot(&r, object, 0, 512) != vec![PageStateCode::System; 512] {
        assert!(std::time::Instant::now() < deadline, "chunk never settled: {:?}", &snapshot(&r, object, 0, 4));
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
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
    assert_eq!(snapshot(&r, object, 0, 512), vec![PageStateCode::Device; 512]);
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
                        let v = unsafe { std::ptr::read_volatile((base as *const u32).add(idx as usize)) };
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
    assert_eq!(*r.gpu.to_ram.lock().unwrap(), pages, "every page moved back exactly once");
    assert!(r.gpu.vram.lock().unwrap().is_empty());
    assert_eq!(snapshot(&r, object, 0, 512), vec![PageStateCode::System; 512]);
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
        let (object, fd, buf) = buffer(&r, 2 << 20);
        for (i, w) in buf.iter_mut().enumerate() {
            *w = i as u32 ^ round;
        }
        gpu_migrate_all(&r, object, &fd, 0, 512);
        let base = buf.as_ptr() as usize;
        let reader = std::thread::spawn(move || {
            let pg = 17 + round as usize * 13;
            // SAFETY: inside the mapping.
            unsafe { std::ptr::read_volatile((base as *const u32).add(pg * 1024)) }
        });
        let evicted = r.reclaim.call(Evict { gpu: GpuId::new(0).unwrap(), bytes: 2 << 20 }).unwrap();
        let seen = reader.join().unwrap();
        let pg = 17 + round as usize * 13;
        assert_eq!(seen, (pg as u32 * 1024) ^ round);
        assert!(evicted.pages <= 512);
        assert!(r.gpu.vram.lock().unwrap().is_empty(), "round {round}: pages left in VRAM");
        assert_eq!(*r.gpu.to_ram.lock().unwrap(), 512, "round {round}: a page moved twice or not at all");
        for (i, w) in buf.iter().enumerate() {
            assert_eq!(*w, i as u32 ^ round, "round {round}: word {i}");
        }
    }
}

#[test]
fn eviction_of_an_object_without_views_writes_the_memfd() {
    let r = rig();
    let (o, mut fds) = r.pager.call_with_handles(CreateObject { size_bytes: 2 << 20 }, vec![]).unwrap();
    let fd = fds.pop().unwrap();
    let data: Vec<u8> = (0..2 << 20).map(|i: u32| (i % 251) as u8).collect();
    rustix::io::pwrite(&fd, &data, 0).unwrap();
    // No view: collect sees EMPTY pages (never faulted), and the test GPU
    // copies the memfd's bytes only for non-zero pages; put real data in VRAM.
    let c = r.migrate.call(Collect { object: o.object, first_page: 0, count: PageCount::new(512).unwrap(), gpu: GpuId::new(0).unwrap() }).unwrap();
    {
        let mut vram = r.gpu.vram.lock().unwrap();
        for i in c.got.iter() {
            vram.insert((o.object.get(), i as u64), data[i * 4096..(i + 1) * 4096].to_vec());
        }
    }
    r.migrate.call(Finalize { object: o.object, first_page: 0, count: PageCount::new(512).unwrap(), gpu: GpuId::new(0).unwrap(), vram_first_pfn: 0, got: c.got, migrated: c.got }).unwrap();
    rustix::io::pwrite(&fd, &vec![0u8; 2 << 20], 0).unwrap(); // the RAM copy is gone
    let e = r.reclaim.call(Evict { gpu: GpuId::new(0).unwrap(), bytes: 2 << 20 }).unwrap();
    assert_eq!(e.pages, 512);
    let mut back = vec![0u8; 2 << 20];
    rustix::io::pread(&fd, &mut back, 0).unwrap();
    assert!(back == data, "evicted data differs");
}

#[test]
fn a_client_that_disconnects_loses_its_views_and_objects_and_vram() {
    let Rig { server, pager, migrate, reclaim, gpu } = rig();
    let r = Rig { server: server.clone(), pager, migrate, reclaim, gpu: gpu.clone() };
    let (object, fd, buf) = buffer(&r, 2 << 20);
    buf.fill(7);
    gpu_migrate_all(&r, object, &fd, 0, 512);
    assert_eq!(gpu.vram.lock().unwrap().len(), 512);
    assert!(server.object_state(object.get(), 0).is_some());
    // The client goes away: its endpoint closes.
    drop(r);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while server.object_state(object.get(), 0).is_some() || !gpu.vram.lock().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the dead client's object or VRAM was not released");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
