//! The pager on Redox: the core ([`crate::core`]) over [`RedoxRuntime`],
//! served on one scheme, `pager`, with one endpoint per client
//! (`pager.<badge>`), `pagermigrate.1` (the GPU server's), `pagerreclaim.3`
//! (mm-server's) and `control`, where the launcher hands over our
//! `GpuNotify` endpoint (`ipc_protocol::scheme::handoff`). The same
//! requests as on Linux reach the same core; what needs fault delivery is
//! refused with the missing kernel call named (`runtime.rs`).

mod runtime;
mod shm;

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ipc_protocol::client::Client;
use ipc_protocol::interfaces::gpu_notify::{AttachStaging, GpuNotify};
use ipc_protocol::interfaces::{pager as p, pager_migrate as m, pager_reclaim as r};
use ipc_protocol::scheme::handoff::{endpoint_path, Handoff, CONTROL_INTERFACE, CONTROL_PATH};
use ipc_protocol::scheme::redox::{self as scheme, Callbacks, SchemeConfig};
use ipc_protocol::scheme::redox_client::SchemeTransport;
use ipc_protocol::scheme::{Endpoint, Endpoints, Errno, Opener, Session};
use ipc_protocol::server::{dispatch, Handler};
use ipc_protocol::transport::Received;
use ipc_protocol::{Capability, Interface, Rights};

pub use self::runtime::{NoPort, RedoxRuntime};
use crate::core::Core;
use crate::staging::{Staging, SLOT_BYTES};

/// The scheme's name: `/scheme/pager/...`.
pub const SCHEME: &str = "pager";
/// Badges of the peers' endpoints, as on the host.
pub const MIGRATE_BADGE: u64 = 1;
pub const RECLAIM_BADGE: u64 = 3;

/// What a client's badge may do by default.
const CLIENT_RIGHTS: Rights = Rights::OBJECT
    .union(Rights::VIEW)
    .union(Rights::ADVISE)
    .union(Rights::SNAPSHOT);

#[derive(Parser)]
#[command(about = "xe-svm address-space pager (Redox)")]
struct Args {
    /// A client's badge; repeated, one endpoint `pager.<badge>` each.
    #[arg(long, required = true)]
    client_badge: Vec<u64>,
    #[arg(long, default_value_t = CLIENT_RIGHTS.bits())]
    client_rights: u32,
    #[arg(long, default_value_t = Rights::MIGRATE.bits())]
    migrate_rights: u32,
    #[arg(long, default_value_t = Rights::RECLAIM.bits())]
    reclaim_rights: u32,
    /// Only this process may open our endpoints (default: any root
    /// process, each endpoint once; init starts us before the launcher).
    #[arg(long)]
    launcher_pid: Option<u64>,
    /// What each client may make the pager hold: `name=value,...`.
    #[arg(long, default_value = "")]
    budget: String,
    #[arg(long)]
    arena_mib: Option<u64>,
    #[arg(long, default_value_t = 8)]
    staging_slots: usize,
    /// How long a call to the GPU server may take.
    #[arg(long, default_value_t = 10_000)]
    peer_timeout_ms: u64,
    /// Threads that run calls on our scheme.
    #[arg(long, default_value_t = 8)]
    workers: usize,
}

/// The pager server on Redox, shared by every endpoint.
#[derive(Clone)]
pub struct RedoxPager {
    core: Arc<Core<RedoxRuntime>>,
}

impl Handler<p::Pager> for RedoxPager {
    fn disconnected(&self, caller: &Capability) {
        self.core.end_client(caller.badge.0);
    }

    fn handle(
        &self,
        caller: &Capability,
        req: p::Request,
        handles: Vec<OwnedFd>,
    ) -> Result<(p::Reply, Vec<OwnedFd>), p::PagerError> {
        let session = self.core.client(caller.badge.0)?;
        self.core.pager_request(&session, req, handles)
    }
}

impl Handler<m::PagerMigrate> for RedoxPager {
    /// The GPU server died: its collects in flight are undone.
    fn disconnected(&self, caller: &Capability) {
        self.core.end_gpu(caller.badge.0);
    }

    /// The GPU server was restarted: its session goes on, so that the
    /// objects keep their ids; the new server's first `Resident` undoes
    /// the collects the old one left (`core/resident.rs`).
    fn peer_restarted(&self, caller: &Capability, generation: u32) {
        log::info!(
            "pager: GPU server {} restarted (generation {generation})",
            caller.badge.0
        );
    }

    fn handle(
        &self,
        caller: &Capability,
        req: m::Request,
        _handles: Vec<OwnedFd>,
    ) -> Result<(m::Reply, Vec<OwnedFd>), m::MigrateError> {
        // One GPU on Redox today: its server's endpoint is GPU 0's.
        let session = self.core.gpu_session(caller.badge.0, 0)?;
        self.core.migrate_request(&session, req)
    }
}

impl Handler<r::PagerReclaim> for RedoxPager {
    fn handle(
        &self,
        _caller: &Capability,
        req: r::Request,
        _handles: Vec<OwnedFd>,
    ) -> Result<(r::Reply, Vec<OwnedFd>), r::ReclaimError> {
        Ok((self.core.reclaim_request(req)?, vec![]))
    }
}

impl RedoxPager {
    /// One frame on one of our endpoints, by the endpoint's interface.
    fn dispatch(&self, s: &Session, rx: Received) -> Option<(Vec<u8>, Vec<OwnedFd>)> {
        let cap = &s.capability;
        match s.interface {
            p::Pager::ID => dispatch::<p::Pager, _>(cap, self, rx),
            m::PagerMigrate::ID => dispatch::<m::PagerMigrate, _>(cap, self, rx),
            r::PagerReclaim::ID => dispatch::<r::PagerReclaim, _>(cap, self, rx),
            // `control` has no rights: its frames are refused.
            _ => dispatch::<p::Pager, _>(cap, self, rx),
        }
    }

    fn closed(&self, s: &Session) {
        match s.interface {
            p::Pager::ID => Handler::<p::Pager>::disconnected(self, &s.capability),
            m::PagerMigrate::ID => Handler::<m::PagerMigrate>::disconnected(self, &s.capability),
            _ => {}
        }
    }

    /// Attaches the GPU server's notifier handed over by the launcher and
    /// shares the staging slots with it (on its own thread: the handoff
    /// call returns at once, and the GPU server may call us meanwhile).
    fn handoff(&self, h: Handoff, timeout: Duration) -> Result<(), Errno> {
        if h.role != GpuNotify::ID || self.core.rt.gpu.attached(0) {
            return Err(Errno::Invalid);
        }
        let server = self.clone();
        std::thread::Builder::new()
            .name("pager-attach-gpu".into())
            .spawn(move || {
                if let Err(e) = server.attach_gpu(h.fd, timeout) {
                    log::error!("pager: attaching the GPU server: {e}");
                }
            })
            .map(|_| ())
            .map_err(|_| Errno::Again)
    }

    fn attach_gpu(&self, fd: OwnedFd, timeout: Duration) -> Result<(), String> {
        let transport = SchemeTransport::from_fd(fd).map_err(|e| e.to_string())?;
        let gpu = Client::<GpuNotify>::new(Arc::new(transport)).with_timeout(timeout);
        let staging = &self.core.rt.staging;
        let dup = staging.memfd.try_clone().map_err(|e| e.to_string())?;
        let size = staging
            .slots()
            .checked_mul(SLOT_BYTES)
            .ok_or("staging size overflows")? as u64;
        gpu.call_with_handles(AttachStaging { size_bytes: size }, vec![dup])
            .map_err(|e| e.to_string())?;
        self.core
            .rt
            .gpu
            .of(0)
            .map_err(|_| "no GPU 0".to_string())?
            .set(gpu)
            .map_err(|_| "GPU already attached".to_string())
    }
}

fn declared(a: &Args) -> Vec<Endpoint> {
    let ep = |name: &str, interface, badge, rights| Endpoint {
        path: endpoint_path(name, badge),
        interface,
        capability: Capability::new(badge, Rights::from_bits_truncate(rights)),
    };
    let mut v: Vec<Endpoint> = a
        .client_badge
        .iter()
        .map(|&b| ep(p::Pager::NAME, p::Pager::ID, b, a.client_rights))
        .collect();
    v.push(ep(
        m::PagerMigrate::NAME,
        m::PagerMigrate::ID,
        MIGRATE_BADGE,
        a.migrate_rights,
    ));
    v.push(ep(
        r::PagerReclaim::NAME,
        r::PagerReclaim::ID,
        RECLAIM_BADGE,
        a.reclaim_rights,
    ));
    v.push(Endpoint {
        path: CONTROL_PATH.into(),
        interface: CONTROL_INTERFACE,
        capability: Capability::new(0, Rights::empty()),
    });
    v
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("pager: {what}: {e}");
    std::process::exit(2);
}

fn server(a: &Args) -> RedoxPager {
    let cfg = crate::startup::core_config(&a.budget, a.client_badge.len(), a.arena_mib)
        .unwrap_or_else(|e| fail("flags", e));
    let staging = shm::staging_object()
        .and_then(|fd| Staging::over(fd, a.staging_slots.clamp(1, 64)).map_err(Into::into))
        .unwrap_or_else(|e| fail("staging buffer", e));
    let core = Core::new(RedoxRuntime::new(staging), cfg).unwrap_or_else(|e| fail("core", e));
    let core = Arc::new(core);
    crate::startup::spawn_lease_reaper(&core).unwrap_or_else(|e| fail("lease reaper", e));
    RedoxPager { core }
}

fn callbacks(server: &RedoxPager, timeout: Duration) -> Callbacks {
    let (d, c, h) = (server.clone(), server.clone(), server.clone());
    Callbacks {
        dispatch: Arc::new(move |s, rx| d.dispatch(s, rx)),
        closed: Arc::new(move |s| c.closed(s)),
        handoff: Arc::new(move |hand| h.handoff(hand, timeout)),
    }
}

pub fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let a = Args::parse();
    let server = server(&a);
    let opener = a.launcher_pid.map_or(Opener::Root, Opener::Process);
    let endpoints = Endpoints::new(declared(&a), opener)
        .unwrap_or_else(|e| fail("declaring endpoints", format!("{e:?}")));
    let cfg = SchemeConfig {
        name: SCHEME.into(),
        endpoints,
        workers: a.workers.clamp(1, 64),
    };
    let timeout = Duration::from_millis(a.peer_timeout_ms);
    let registered = scheme::register(cfg, callbacks(&server, timeout))
        .unwrap_or_else(|e| fail("registering /scheme/pager", e));
    if let Err(e) = scheme::notify_ready() {
        log::warn!("pager: telling init we are ready: {e}");
    }
    log::warn!(
        "pager: no fault delivery on this kernel: views are refused (docs/redox.md section 5)"
    );
    println!("pager: serving /scheme/{SCHEME}");
    match registered.serve() {
        Ok(()) => log::info!("pager: the scheme was closed; stopping"),
        Err(e) => fail("serving", e),
    }
}
