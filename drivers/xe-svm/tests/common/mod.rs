//! A GPU server over the in-process device model, with a stand-in pager
//! whose `Collect` for chosen objects stalls (as a pager waiting on a busy
//! page would), and clients that call the `Gpu` handler by badge.

#![allow(dead_code)]

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hw::model::{spawn_in_process, Config};
use ipc_protocol::client::Client;
use ipc_protocol::interfaces::gpu::{self as g, GpuError};
use ipc_protocol::interfaces::pager_migrate::{self as m, MigrateError, PagerMigrate};
use ipc_protocol::server::Handler;
use ipc_protocol::transport::{SeqPacket, Transport};
use ipc_protocol::types::{ObjectId, PageMask, Seq};
use ipc_protocol::{Capability, Rights};
use xe_svm::arena::{Config as ServerConfig, MAX_CLIENT_SESSIONS};
use xe_svm::budget::GpuBudget;
use xe_svm::device::Device;
use xe_svm::host::{BootError, GpuServer};

pub const PAGE: u64 = 4096;
/// Pages of every object the stand-in pager opens.
pub const OBJECT_PAGES: u64 = 512;
/// How long a stalled collect waits at most (a test never hangs on it).
pub const STALL_LIMIT: Duration = Duration::from_secs(8);

/// The stand-in pager: view `v` is object `v` of [`OBJECT_PAGES`] zero
/// pages, any client's; collects of objects in `stalled` wait until
/// `release` (or [`STALL_LIMIT`]).
#[derive(Default)]
pub struct FakePager {
    pub stalled: Mutex<Vec<u32>>,
    pub release: AtomicBool,
    pub memfds: Mutex<Vec<hw::shm::Region>>,
    /// What `Resident` answers, in (object, first page) order, two runs a
    /// reply (so a restarted server's paging is exercised).
    pub resident: Mutex<Vec<m::ResidentRun>>,
    /// Views of an object other than their own number (a moved view).
    pub view_objects: Mutex<std::collections::BTreeMap<u32, u32>>,
    /// Objects whose pages sit in another GPU's VRAM: every collected page
    /// is a peer page (several GPUs, issue 17).
    pub peer_objects: Mutex<Vec<u32>>,
    /// Pages whose next finalize does not make them ours (a push that did
    /// not land), each once.
    pub unlanded: Mutex<Vec<u64>>,
    /// Pages whose next finalize names them late (a push that went
    /// unanswered: not ours, their frames kept out of use), each once.
    pub late: Mutex<Vec<u64>>,
    /// Every finalize's `migrated` mask, in order.
    pub finalized: Mutex<Vec<PageMask>>,
    /// Objects whose next collects get nothing (every page held by
    /// another migration), and how many more of them.
    pub held: Mutex<Vec<(u32, usize)>>,
    /// Objects whose pages sit in GPU 1's VRAM and are mapped in place
    /// (`Advice::AccessInPlace`): page `p` at frame `base + p`.
    pub in_place: Mutex<Vec<(u32, u64)>>,
}

impl FakePager {
    /// Whether this collect of `object` gets nothing ([`Self::held`]).
    fn take_held(&self, object: u32) -> bool {
        let mut held = self.held.lock().unwrap();
        match held.iter_mut().find(|(o, left)| *o == object && *left > 0) {
            Some((_, left)) => {
                *left -= 1;
                true
            }
            None => false,
        }
    }

    /// `got` for an object mapped in place: every page a remote peer page,
    /// with its frame in GPU 1's VRAM.
    fn in_place(&self, object: u32, first: u64, n: usize, got: m::Collected) -> m::Collected {
        let Some(&(_, base)) = self.in_place.lock().unwrap().iter().find(|o| o.0 == object) else {
            return got;
        };
        // As many as one reply describes; the rest are plain zero pages.
        let k = n.min(m::MAX_PEER_FRAMES);
        let ours = PageMask::first(k);
        let frames = (0..k as u64)
            .map(|i| m::peer_frame(1, base + first + i).unwrap())
            .collect();
        m::Collected {
            zero: got.zero.and_not(&ours),
            remote: ours,
            peer: ours,
            peer_frames: ipc_protocol::wire::BoundedVec::new(frames).unwrap(),
            ..got
        }
    }

    fn resident(&self, q: &m::Resident) -> m::ResidentRuns {
        let mut all = self.resident.lock().unwrap().clone();
        all.sort_by_key(|r| (r.object.get(), r.first_page));
        let mut left = all
            .iter()
            .filter(|r| (r.object.get(), r.first_page) >= (q.from_object, q.from_page));
        let runs: Vec<_> = left.by_ref().take(2).cloned().collect();
        let next = left.next();
        m::ResidentRuns {
            runs: ipc_protocol::wire::BoundedVec::new(runs).expect("two runs fit"),
            more: next.is_some(),
            next_object: next.map_or(0, |r| r.object.get()),
            next_page: next.map_or(0, |r| r.first_page),
            pager_generation: 1,
        }
    }
}

impl Handler<PagerMigrate> for FakePager {
    fn handle(
        &self,
        _caller: &Capability,
        req: m::Request,
        _handles: Vec<OwnedFd>,
    ) -> Result<(m::Reply, Vec<OwnedFd>), MigrateError> {
        match req {
            m::Request::OpenView(o) => {
                let r = hw::shm::Region::create("fake-object", (OBJECT_PAGES * PAGE) as usize)
                    .map_err(|_| MigrateError::Host)?;
                let fd = r.dup_fd().map_err(|_| MigrateError::Host)?;
                self.memfds.lock().unwrap().push(r);
                let view = o.view.get();
                let object = self.view_objects.lock().unwrap().get(&view).copied();
                let opened = m::ViewOpened {
                    object: ObjectId::raw(object.unwrap_or(view)),
                    addr: 0,
                    object_first_page: 0,
                    pages: OBJECT_PAGES,
                };
                Ok((m::Reply::OpenView(opened), vec![fd]))
            }
            m::Request::GetPages(_) => Err(MigrateError::Host),
            m::Request::Resident(q) => Ok((m::Reply::Resident(self.resident(&q)), vec![])),
            m::Request::Collect(c) => {
                if self.stalled.lock().unwrap().contains(&c.object.get()) {
                    let t0 = Instant::now();
                    while !self.release.load(Ordering::Acquire) && t0.elapsed() < STALL_LIMIT {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                let n = c.count.get() as usize;
                let all = match self.take_held(c.object.get()) {
                    true => PageMask::EMPTY,
                    false => PageMask::first(n),
                };
                let peer = self.peer_objects.lock().unwrap().contains(&c.object.get());
                let got = m::Collected {
                    seq: Seq::raw(0),
                    got: all,
                    zero: if peer { PageMask::EMPTY } else { all },
                    device: PageMask::EMPTY,
                    remote: PageMask::EMPTY,
                    cpu_atomics: PageMask::EMPTY,
                    peer: if peer { all } else { PageMask::EMPTY },
                    peer_frames: Default::default(),
                };
                let got = self.in_place(c.object.get(), c.first_page, n, got);
                Ok((m::Reply::Collect(got), vec![]))
            }
            m::Request::Finalize(f) => {
                self.finalized.lock().unwrap().push(f.migrated);
                let mut device = f.migrated;
                let unlanded = take_pages(&self.unlanded, &f, &mut device);
                let late = take_pages(&self.late, &f, &mut device);
                let done = m::Finalized {
                    device: device.count() as u16,
                    returned: (f.got.count() - device.count()) as u16,
                    device_pages: device,
                    late: late.and_not(&unlanded),
                };
                Ok((m::Reply::Finalize(done), vec![]))
            }
        }
    }
}

pub struct World {
    pub server: GpuServer,
    pub pager: Arc<FakePager>,
    _model: std::thread::JoinHandle<Result<(), hw::model::ModelError>>,
}

impl World {
    pub fn new(budget: GpuBudget) -> Self {
        Self::with_pool(budget, 64 << 20)
    }

    pub fn with_pool(budget: GpuBudget, bo_pool: u64) -> Self {
        let cfg = ServerConfig::for_clients(budget, MAX_CLIENT_SESSIONS);
        Self::boot(|dev, migrate| GpuServer::new(dev, migrate, None, bo_pool, &cfg))
            .expect("server")
    }

    /// A server whose metadata arena is `arena_bytes`, whatever `budget` needs.
    pub fn with_arena(budget: GpuBudget, arena_bytes: usize) -> Self {
        let arena = session::Arena::new(arena_bytes).expect("an arena");
        Self::boot(|dev, migrate| {
            GpuServer::with_arena(dev, migrate, None, 64 << 20, budget, arena)
        })
        .expect("server")
    }

    /// A server whose fault workers move `ahead` chunks ahead of a stream
    /// of faults (`--fault-ahead`).
    pub fn with_fault_ahead(budget: GpuBudget, ahead: usize) -> Self {
        let cfg = ServerConfig::for_clients(budget, MAX_CLIENT_SESSIONS);
        let make = |dev, migrate| GpuServer::new(dev, migrate, None, 64 << 20, &cfg);
        Self::boot_ahead(make, ahead).expect("server")
    }

    /// The device model, a stand-in pager and the server `make` builds.
    pub fn boot(
        make: impl FnOnce(Arc<Device>, Client<PagerMigrate>) -> Result<GpuServer, BootError>,
    ) -> Result<Self, BootError> {
        Self::boot_ahead(make, 0)
    }

    fn boot_ahead(
        make: impl FnOnce(Arc<Device>, Client<PagerMigrate>) -> Result<GpuServer, BootError>,
        ahead: usize,
    ) -> Result<Self, BootError> {
        let (t, model) = spawn_in_process(Config {
            vram_bytes: 64 << 20,
            hw_threads: 8,
            ..Default::default()
        })
        .expect("the device model");
        let (bar, _) = xe_svm::probe::probe(t, xe_svm::probe::Meeting::Fresh).expect("probe");
        let dev = Device::new(Arc::new(bar));
        let (ours, theirs) = SeqPacket::pair().expect("a socket pair");
        let pager = Arc::new(FakePager::default());
        let theirs: Arc<dyn Transport> = Arc::new(theirs);
        ipc_protocol::server::spawn::<PagerMigrate, _>(
            "fake-pager",
            theirs,
            Capability::new(1, Rights::MIGRATE),
            pager.clone(),
            4,
        );
        let migrate = Client::new(Arc::new(ours)).with_timeout(Duration::from_secs(20));
        let server = make(dev.clone(), migrate)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let pump = dev.clone();
        std::thread::spawn(move || pump.pump(tx));
        let worker = server.clone();
        std::thread::spawn(move || worker.fault_worker(rx, ahead));
        Ok(Self {
            server,
            pager,
            _model: model,
        })
    }

    /// Client `badge`'s call.
    pub fn call(&self, badge: u64, req: g::Request) -> Result<g::Reply, GpuError> {
        let cap = Capability::new(badge, Rights::all());
        Handler::<g::Gpu>::handle(&self.server, &cap, req, vec![]).map(|(r, _)| r)
    }

    /// The pager's `GpuNotify` call (its notifier endpoint's rights).
    pub fn notify(
        &self,
        req: ipc_protocol::interfaces::gpu_notify::Request,
    ) -> Result<
        ipc_protocol::interfaces::gpu_notify::Reply,
        ipc_protocol::interfaces::gpu_notify::NotifyError,
    > {
        use ipc_protocol::interfaces::gpu_notify::GpuNotify;
        let pager = Capability::new(1, Rights::NOTIFY);
        Handler::<GpuNotify>::handle(&self.server, &pager, req, vec![]).map(|(r, _)| r)
    }

    /// Client `badge`'s endpoint closed.
    pub fn disconnect(&self, badge: u64) {
        let cap = Capability::new(badge, Rights::all());
        Handler::<g::Gpu>::disconnected(&self.server, &cap);
    }

    pub fn create_vm(&self, badge: u64) -> Result<g::VmCreated, GpuError> {
        match self.call(badge, g::Request::CreateVm(g::CreateVm {}))? {
            g::Reply::CreateVm(v) => Ok(v),
            r => panic!("unexpected reply {r:?}"),
        }
    }

    pub fn create_bo(&self, badge: u64, size_bytes: u64) -> Result<u32, GpuError> {
        match self.call(badge, g::Request::CreateBo(g::CreateBo { size_bytes }))? {
            g::Reply::CreateBo(b) => Ok(b.bo.get()),
            r => panic!("unexpected reply {r:?}"),
        }
    }

    /// Binds view `view` at `gpu_addr` of client `badge`'s VM `vm`.
    pub fn bind(&self, badge: u64, vm: u32, view: u32, gpu_addr: u64) {
        self.bind_view(badge, vm, view, gpu_addr).unwrap();
    }

    /// Client `badge`'s `BindView`, with the server's answer.
    pub fn bind_view(&self, badge: u64, vm: u32, view: u32, gpu_addr: u64) -> Result<(), GpuError> {
        let req = g::BindView {
            vm: ipc_protocol::types::VmId::raw(vm),
            view: ipc_protocol::types::ViewId::raw(view),
            gpu_addr,
            flags: 0,
        };
        self.call(badge, g::Request::BindView(req)).map(|_| ())
    }

    pub fn unbind(&self, badge: u64, vm: u32, gpu_addr: u64) -> Result<(), GpuError> {
        let req = g::Unbind {
            vm: ipc_protocol::types::VmId::raw(vm),
            gpu_addr,
        };
        self.call(badge, g::Request::Unbind(req)).map(|_| ())
    }

    pub fn destroy_vm(&self, badge: u64, vm: u32) -> Result<(), GpuError> {
        let req = g::DestroyVm {
            vm: ipc_protocol::types::VmId::raw(vm),
        };
        self.call(badge, g::Request::DestroyVm(req)).map(|_| ())
    }

    pub fn stats(&self, badge: u64) -> g::GpuStats {
        match self.call(badge, g::Request::Stats(g::Stats {})) {
            Ok(g::Reply::Stats(s)) => s,
            r => panic!("unexpected reply {r:?}"),
        }
    }

    pub fn accounting(&self, badge: u64) -> g::GpuUsage {
        match self.call(badge, g::Request::Accounting(g::Accounting {})) {
            Ok(g::Reply::Accounting(u)) => u,
            r => panic!("unexpected reply {r:?}"),
        }
    }

    /// Submits a kernel touching `[addr, addr + len)` of `vm`.
    pub fn touch(&self, badge: u64, vm: u32, addr: u64, len: u64) -> Result<u64, GpuError> {
        self.kernel(
            badge,
            vm,
            ipc_protocol::types::KernelKind::TouchPages,
            addr,
            len,
        )
    }

    /// Submits a kernel adding 1 to every word of `[addr, addr + len)`.
    pub fn increment(&self, badge: u64, vm: u32, addr: u64, len: u64) -> Result<u64, GpuError> {
        self.kernel(
            badge,
            vm,
            ipc_protocol::types::KernelKind::IncrementAll,
            addr,
            len,
        )
    }

    fn kernel(
        &self,
        badge: u64,
        vm: u32,
        kernel: ipc_protocol::types::KernelKind,
        addr: u64,
        len: u64,
    ) -> Result<u64, GpuError> {
        let req = g::Submit {
            vm: ipc_protocol::types::VmId::raw(vm),
            kernel,
            addr,
            len,
            stride: 4,
            value: 1,
            threads: 1,
        };
        match self.call(badge, g::Request::Submit(req))? {
            g::Reply::Submit(s) => Ok(s.job.get()),
            r => panic!("unexpected reply {r:?}"),
        }
    }

    pub fn wait(&self, badge: u64, job: u64, timeout_ms: u32) -> Result<g::JobDone, GpuError> {
        let req = g::Wait {
            job: ipc_protocol::types::JobId::raw(job),
            timeout_ms,
        };
        match self.call(badge, g::Request::Wait(req))? {
            g::Reply::Wait(d) => Ok(d),
            r => panic!("unexpected reply {r:?}"),
        }
    }
}

/// A budget with `spec` over the defaults.
pub fn budget(spec: &str) -> GpuBudget {
    let mut b = GpuBudget::default();
    b.apply(spec).expect("a budget spec");
    b
}

/// Takes the pages of `list` inside finalize `f` out of `device`, each
/// once; returns them (relative to the chunk).
fn take_pages(list: &Mutex<Vec<u64>>, f: &m::Finalize, device: &mut PageMask) -> PageMask {
    let mut taken = PageMask::EMPTY;
    list.lock().unwrap().retain(|&p| {
        let i = p.wrapping_sub(f.first_page);
        let here = i < f.count.get() as u64 && device.get(i as usize);
        if here {
            device.clear(i as usize);
            taken.set(i as usize);
        }
        !here
    });
    taken
}
