//! What the pager's host tests share: a test GPU server, a rig of
//! in-process endpoints around a real `PagerServer`, and buffers with real
//! userfaultfd views.
#![allow(dead_code)]

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use ipc_protocol::client::Client;
use ipc_protocol::interfaces::gpu_notify as n;
use ipc_protocol::interfaces::pager::{AttachView, CreateObject, Pager, Snapshot};
use ipc_protocol::interfaces::pager_migrate::{Collect, Finalize, OpenView, PagerMigrate};
use ipc_protocol::interfaces::pager_reclaim::PagerReclaim;
use ipc_protocol::server::{spawn, Handler};
use ipc_protocol::transport::InProc;
use ipc_protocol::types::{GpuId, ObjectId, PageCount, PageMask, PageStateCode, ViewId};
use ipc_protocol::{Capability, Rights};
use pager::host::{Config, PagerServer};
use rustix::mm::{mmap, MapFlags, ProtFlags};

pub const CLIENT: u64 = 100;

/// A GPU that keeps "VRAM" pages in a map and copies into the pager's
/// staging buffer on migrate-to-RAM.
#[derive(Default)]
pub struct TestGpu {
    pub vram: Mutex<HashMap<(u32, u64), Vec<u8>>>,
    pub staging: Mutex<Option<(OwnedFd, usize)>>,
    pub to_ram: Mutex<u64>,
    /// Views the pager said went away, and moves (view, from, to).
    pub gone: Mutex<Vec<u32>>,
    pub copied: Mutex<Vec<(u32, u32, u64, u64)>>,
    /// Parts that live on: (view, new view, first page, pages, from, to).
    pub parts: Mutex<Vec<(u32, u32, u64, u64, u64, u64)>>,
    /// Tells rigs apart in logs.
    pub id: u32,
    /// How long it takes to hear a view change (a slow GPU server).
    pub note_delay: Mutex<std::time::Duration>,
    /// Every copy back to RAM fails (a GPU server that lost the device).
    pub fail_to_ram: std::sync::atomic::AtomicBool,
    /// The next copy back to RAM waits this long first (a GPU server that
    /// answers past the pager's deadline, then copies anyway).
    pub delay_next_to_ram: Mutex<Option<std::time::Duration>>,
    /// The staging offset of every copy back to RAM, in order.
    pub to_ram_offsets: Mutex<Vec<u64>>,
}

static NEXT_GPU: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

impl Handler<n::GpuNotify> for TestGpu {
    fn handle(
        &self,
        _: &Capability,
        req: n::Request,
        mut h: Vec<OwnedFd>,
    ) -> Result<(n::Reply, Vec<OwnedFd>), n::NotifyError> {
        match req {
            n::Request::AttachStaging(a) => {
                *self.staging.lock().unwrap() = Some((h.pop().unwrap(), a.size_bytes as usize));
                Ok((n::Reply::AttachStaging(n::Done {}), vec![]))
            }
            n::Request::Invalidate(i) => {
                Ok((n::Reply::Invalidate(n::Invalidated { seq: i.seq }), vec![]))
            }
            n::Request::MigrateToRam(_)
                if self.fail_to_ram.load(std::sync::atomic::Ordering::Acquire) =>
            {
                Err(n::NotifyError::CopyFailed)
            }
            n::Request::MigrateToRam(m) => {
                self.to_ram_offsets.lock().unwrap().push(m.staging_offset);
                let delay = self.delay_next_to_ram.lock().unwrap().take();
                if let Some(d) = delay {
                    std::thread::sleep(d);
                }
                let staging = self.staging.lock().unwrap();
                let (fd, _) = staging.as_ref().ok_or(n::NotifyError::NoStaging)?;
                let vram = self.vram.lock().unwrap();
                let mut copied = PageMask::EMPTY;
                for i in m.pages.iter() {
                    // Copied, not dropped: the VRAM goes with `FreePages`.
                    let data = vram
                        .get(&(m.object.get(), m.first_page + i as u64))
                        .cloned()
                        .ok_or(n::NotifyError::NotResident)?;
                    rustix::io::pwrite(fd, &data, m.staging_offset + i as u64 * 4096).unwrap();
                    copied.set(i);
                }
                *self.to_ram.lock().unwrap() += copied.count() as u64;
                log::debug!(
                    "test-gpu {}: migrate to RAM object {} pages {}+{:?}",
                    self.id,
                    m.object.get(),
                    m.first_page,
                    copied.iter().collect::<Vec<_>>()
                );
                Ok((n::Reply::MigrateToRam(n::MigratedToRam { copied }), vec![]))
            }
            // One GPU: no peer to push to.
            n::Request::PushToPeer(_) => Err(n::NotifyError::NoPeer),
            n::Request::FreePages(f) => {
                let mut vram = self.vram.lock().unwrap();
                let mut freed = 0;
                for i in f.pages.iter() {
                    if vram
                        .remove(&(f.object.get(), f.first_page + i as u64))
                        .is_some()
                    {
                        freed += 1;
                    }
                }
                Ok((n::Reply::FreePages(n::Freed { pages: freed }), vec![]))
            }
            // Its pages' "frames" are their page numbers (this GPU finds a
            // page by object and page, never by frame).
            n::Request::Frames(q) => {
                let vram = self.vram.lock().unwrap();
                let mut keys: Vec<(u32, u64)> = vram.keys().copied().collect();
                keys.sort();
                let mut g = ipc_protocol::interfaces::pager_migrate::RunGather::default();
                for (o, p) in keys
                    .into_iter()
                    .filter(|k| *k >= (q.from_object, q.from_page))
                {
                    g.add(o, 0, p, p);
                    if g.full() {
                        break;
                    }
                }
                let (runs, more, next_object, next_page) = g.finish();
                let gpu = ipc_protocol::types::GpuId::new(self.id as u8).unwrap();
                let r = n::FrameRuns {
                    gpu,
                    runs,
                    more,
                    next_object,
                    next_page,
                };
                Ok((n::Reply::Frames(r), vec![]))
            }
            n::Request::ViewGone(g) => {
                std::thread::sleep(*self.note_delay.lock().unwrap());
                self.gone.lock().unwrap().push(g.view.get());
                Ok((n::Reply::ViewGone(n::Unbound { bindings: 0 }), vec![]))
            }
            n::Request::ViewPart(c) => {
                std::thread::sleep(*self.note_delay.lock().unwrap());
                self.parts.lock().unwrap().push((
                    c.view.get(),
                    c.new_view.get(),
                    c.first_page,
                    c.pages,
                    c.from,
                    c.to,
                ));
                let none = n::Copied {
                    bindings: 0,
                    skipped: 0,
                };
                Ok((n::Reply::ViewPart(none), vec![]))
            }
            n::Request::ViewGrown(_) => Ok((
                n::Reply::ViewGrown(n::Copied {
                    bindings: 0,
                    skipped: 0,
                }),
                vec![],
            )),
            n::Request::ViewCopied(c) => {
                std::thread::sleep(*self.note_delay.lock().unwrap());
                self.copied
                    .lock()
                    .unwrap()
                    .push((c.view.get(), c.new_view.get(), c.from, c.to));
                Ok((
                    n::Reply::ViewCopied(n::Copied {
                        bindings: 0,
                        skipped: 0,
                    }),
                    vec![],
                ))
            }
        }
    }
}

pub struct Rig {
    pub server: Arc<PagerServer>,
    pub pager: Client<Pager>,
    pub migrate: Client<PagerMigrate>,
    pub reclaim: Client<PagerReclaim>,
    pub gpu: Arc<TestGpu>,
}

pub fn rig() -> Rig {
    rig_with(Config::default())
}

/// A rig around a pager with `cfg`.
pub fn rig_with(cfg: Config) -> Rig {
    rig_with_gpu_deadline(cfg, None)
}

/// [`rig_with`], the pager's calls to the GPU server failing after
/// `deadline` (the pager's `--gpu-timeout-ms`).
pub fn rig_with_gpu_deadline(cfg: Config, deadline: Option<std::time::Duration>) -> Rig {
    // Silent unless RUST_LOG asks (e.g. RUST_LOG=pager=debug to follow views).
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("off"))
        .try_init();
    let server = PagerServer::new(cfg).unwrap();
    let gpu = Arc::new(TestGpu {
        id: NEXT_GPU.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        ..Default::default()
    });
    let (nc, ns) = InProc::pair();
    spawn::<n::GpuNotify, _>(
        "test-gpu",
        Arc::new(ns),
        Capability::new(2, Rights::NOTIFY),
        gpu.clone(),
        4,
    );
    let notify = Client::new(Arc::new(nc));
    let notify = match deadline {
        Some(d) => notify.with_timeout(d),
        None => notify,
    };
    server.attach_gpu(0, notify).unwrap();
    let server = Arc::new(server);
    let server_handle = server.clone();
    let (pc, ps) = InProc::pair();
    spawn::<Pager, _>(
        "pager",
        Arc::new(ps),
        Capability::new(CLIENT, Rights::all()),
        server.clone(),
        2,
    );
    let (mc, ms) = InProc::pair();
    spawn::<PagerMigrate, _>(
        "pager-migrate",
        Arc::new(ms),
        Capability::new(1, Rights::MIGRATE),
        server.clone(),
        2,
    );
    let (rc, rs) = InProc::pair();
    spawn::<PagerReclaim, _>(
        "pager-reclaim",
        Arc::new(rs),
        Capability::new(3, Rights::RECLAIM),
        server,
        1,
    );
    Rig {
        server: server_handle,
        pager: Client::new(Arc::new(pc)),
        migrate: Client::new(Arc::new(mc)),
        reclaim: Client::new(Arc::new(rc)),
        gpu,
    }
}

/// An object as each side names it: the client's id, and the id the GPU
/// server got for it from `OpenView` (its own session's).
#[derive(Debug, Clone, Copy)]
pub struct Obj {
    pub client: ObjectId,
    pub gpu: ObjectId,
    pub view: ViewId,
}

/// Creates an object of `bytes`, maps it, registers the view, and opens
/// the view for the test GPU (as a `BindView` would).
pub fn buffer(r: &Rig, bytes: u64) -> (Obj, OwnedFd, &'static mut [u32]) {
    let (o, mut fds) = r
        .pager
        .call_with_handles(CreateObject { size_bytes: bytes }, vec![])
        .unwrap();
    let memfd = fds.pop().unwrap();
    // SAFETY: a fresh shared mapping of the object; leaked for the test's life.
    let addr = unsafe {
        mmap(
            std::ptr::null_mut(),
            bytes as usize,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED,
            &memfd,
            0,
        )
    }
    .unwrap();
    let uffd = pager::host::uffd::create_for_client().unwrap();
    let (v, _) = r
        .pager
        .call_with_handles(
            AttachView {
                object: o.object,
                addr: addr as u64,
                object_first_page: 0,
                pages: bytes / 4096,
            },
            vec![uffd],
        )
        .unwrap();
    let (opened, _) = r
        .migrate
        .call_with_handles(
            OpenView {
                view: v.view,
                client: CLIENT,
            },
            vec![],
        )
        .unwrap();
    let obj = Obj {
        client: o.object,
        gpu: opened.object,
        view: v.view,
    };
    // SAFETY: the mapping is `bytes` long and never unmapped.
    (obj, memfd, unsafe {
        std::slice::from_raw_parts_mut(addr as *mut u32, bytes as usize / 4)
    })
}

/// What the test GPU does on a fault: collect a chunk, copy its pages out
/// of the memfd into "VRAM", finalize.
pub fn gpu_migrate(r: &Rig, obj: Obj, memfd: &OwnedFd, first: u64, count: u16) -> u32 {
    let object = obj.gpu;
    let c = r
        .migrate
        .call(Collect {
            object,
            first_page: first,
            count: PageCount::new(count).unwrap(),
            gpu: GpuId::new(0).unwrap(),
            generation: 1,
            pager_generation: 0,
        })
        .unwrap();
    log::debug!(
        "test-gpu {}: collected object {} pages {first}+{:?}",
        r.gpu.id,
        object.get(),
        c.got.iter().collect::<Vec<_>>()
    );
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
        .call(Finalize {
            object,
            first_page: first,
            count: PageCount::new(count).unwrap(),
            gpu: GpuId::new(0).unwrap(),
            vram_first_pfn: 0,
            got: c.got,
            migrated: c.got,
        })
        .unwrap();
    f.device as u32
}

/// Migrates the chunk, retrying like a GPU that faults again while the
/// pages are still held by the fill's service thread.
pub fn gpu_migrate_all(r: &Rig, object: Obj, memfd: &OwnedFd, first: u64, count: u16) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut moved = 0;
    while moved < count as u32 {
        moved += gpu_migrate(r, object, memfd, first, count);
        assert!(
            std::time::Instant::now() < deadline,
            "only {moved} pages reached VRAM"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

pub fn snapshot(r: &Rig, object: Obj, first: u64, count: u16) -> Vec<PageStateCode> {
    r.pager
        .call(Snapshot {
            object: object.client,
            first_page: first,
            count: PageCount::new(count).unwrap(),
        })
        .unwrap()
        .states
        .into_vec()
}

/// Waits up to 10 s for `done`, failing with `what`. Page states lag the
/// data by a moment: `UFFDIO_COPY` wakes the faulting thread before the
/// service thread unlocks the chunk and publishes SYSTEM.
pub fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Another client of the rig's pager, with its own endpoint and `badge`.
pub fn client(r: &Rig, badge: u64) -> Client<Pager> {
    let (pc, ps) = InProc::pair();
    spawn::<Pager, _>(
        "pager-other",
        Arc::new(ps),
        Capability::new(badge, Rights::all()),
        r.server.clone(),
        2,
    );
    Client::new(Arc::new(pc))
}

/// Creates an object of `bytes` for `c`; returns its id and memfd.
pub fn create(
    c: &Client<Pager>,
    bytes: u64,
) -> Result<
    (ObjectId, OwnedFd),
    ipc_protocol::client::CallError<ipc_protocol::interfaces::pager::PagerError>,
> {
    let (o, mut fds) = c.call_with_handles(CreateObject { size_bytes: bytes }, vec![])?;
    Ok((o.object, fds.pop().expect("the reply carries the memfd")))
}

/// Maps `memfd` (`bytes` long) shared, for the test's whole life.
pub fn map(memfd: &OwnedFd, bytes: u64) -> u64 {
    // SAFETY: a fresh shared mapping of the object; leaked for the test's life.
    unsafe {
        mmap(
            std::ptr::null_mut(),
            bytes as usize,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED,
            memfd,
            0,
        )
    }
    .expect("mapping the object") as u64
}

/// Attaches a view of the first `pages` pages of `object` at `addr`.
pub fn attach(
    c: &Client<Pager>,
    object: ObjectId,
    addr: u64,
    pages: u64,
) -> Result<ViewId, ipc_protocol::client::CallError<ipc_protocol::interfaces::pager::PagerError>> {
    let uffd = pager::host::uffd::create_for_client().expect("a userfaultfd");
    let (v, _) = c.call_with_handles(
        AttachView {
            object,
            addr,
            object_first_page: 0,
            pages,
        },
        vec![uffd],
    )?;
    Ok(v.view)
}
