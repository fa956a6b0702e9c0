//! The Redox runtime of the memory-pressure broker: the host runtime's
//! core (`Broker`, the eviction loop) behind one scheme, `mm-server`, with
//! the endpoints `pressure.1` (served to the GPU server), `pressure.2`
//! (status) and `control` (where the launcher hands over our `GpuShrink`
//! and `PagerReclaim` endpoints; `ipc_protocol::scheme::handoff`).
//! Redox init starts us (`redox/init.d/90_xe-svm`) before the launcher
//! runs, so by default any root process may open each endpoint once, and
//! the launcher does so first (docs/redox.md); `--launcher-pid` narrows it.
//! Redox has no memory-pressure notifier: our own accounting is the only
//! source of pressure.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use ipc_protocol::client::Client;
use ipc_protocol::interfaces::gpu_shrink::GpuShrink;
use ipc_protocol::interfaces::pager_reclaim::PagerReclaim;
use ipc_protocol::interfaces::pressure::Pressure;
use ipc_protocol::scheme::handoff::{endpoint_path, Handoff, CONTROL_INTERFACE, CONTROL_PATH};
use ipc_protocol::scheme::redox::{self as scheme, Callbacks, SchemeConfig};
use ipc_protocol::scheme::redox_client::SchemeTransport;
use ipc_protocol::scheme::{Endpoint, Endpoints, Errno, Opener};
use ipc_protocol::server::{dispatch, Handler};
use ipc_protocol::{Capability, Interface, Rights};

use crate::broker::Broker;
use crate::evictor::{self, IpcWorlds};
use crate::startup;

/// The scheme's name: `/scheme/mm-server/...`.
pub const SCHEME: &str = "mm-server";
/// Badges of the served endpoints, as on the host.
pub const GPU_BADGE: u64 = 1;
pub const STATUS_BADGE: u64 = 2;

#[derive(Parser)]
#[command(about = "xe-svm memory-pressure broker (Redox)")]
struct Args {
    /// Rights granted to the GPU server's endpoint (bits of `ipc_protocol::Rights`).
    #[arg(long, default_value_t = (Rights::PRESSURE_REPORT.union(Rights::PRESSURE_RESERVE)).bits())]
    gpu_rights: u32,
    /// Rights granted to the status endpoint.
    #[arg(long, default_value_t = Rights::PRESSURE_STATUS.bits())]
    status_rights: u32,
    /// Only this process may open our endpoints (default: any root process,
    /// each endpoint once).
    #[arg(long)]
    launcher_pid: Option<u64>,
    /// VRAM size until the GPU server reports its own figure.
    #[arg(long)]
    vram_bytes: u64,
    #[arg(long, default_value_t = 10)]
    low_watermark_pct: u64,
    #[arg(long, default_value_t = 20)]
    high_watermark_pct: u64,
    /// How long a call to the GPU server or the pager may take.
    #[arg(long, default_value_t = 10_000)]
    peer_timeout_ms: u64,
    /// How long to wait for the launcher to hand over the endpoints we call.
    #[arg(long, default_value_t = 60_000)]
    handoff_timeout_ms: u64,
    /// Threads that run calls on our scheme.
    #[arg(long, default_value_t = 4)]
    workers: usize,
}

/// The endpoints we call, as the launcher hands them over.
#[derive(Default)]
struct Handed {
    shrink: Option<OwnedFd>,
    reclaim: Option<OwnedFd>,
}

type Mailbox = Arc<(Mutex<Handed>, Condvar)>;

fn declared(a: &Args) -> Vec<Endpoint> {
    let pressure = |badge, rights| Endpoint {
        path: endpoint_path(Pressure::NAME, badge),
        interface: Pressure::ID,
        capability: Capability::new(badge, Rights::from_bits_truncate(rights)),
    };
    vec![
        pressure(GPU_BADGE, a.gpu_rights),
        pressure(STATUS_BADGE, a.status_rights),
        Endpoint {
            path: CONTROL_PATH.into(),
            interface: CONTROL_INTERFACE,
            // No rights: a frame sent to `control` is refused (`Denied`).
            capability: Capability::new(0, Rights::empty()),
        },
    ]
}

/// Keeps a handed-over endpoint; a role we do not call is refused.
fn take_handoff(mailbox: &Mailbox, h: Handoff) -> Result<(), Errno> {
    let (lock, arrived) = &**mailbox;
    let mut handed = lock.lock().unwrap_or_else(|p| p.into_inner());
    let slot = match h.role {
        GpuShrink::ID => &mut handed.shrink,
        PagerReclaim::ID => &mut handed.reclaim,
        _ => return Err(Errno::Invalid),
    };
    if slot.is_some() {
        return Err(Errno::Exists);
    }
    *slot = Some(h.fd);
    arrived.notify_all();
    Ok(())
}

/// Waits (bounded) for both endpoints we call, then runs the eviction
/// loop over them.
fn evict_when_handed(broker: Arc<Broker>, mailbox: Mailbox, wait: Duration, peer: Duration) {
    let deadline = Instant::now() + wait;
    let (lock, arrived) = &*mailbox;
    let mut handed = lock.lock().unwrap_or_else(|p| p.into_inner());
    while handed.shrink.is_none() || handed.reclaim.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            log::warn!("mm-server: no shrinker or reclaim endpoint handed over; reservations wait for memory to be given back");
            return;
        }
        handed = match arrived.wait_timeout(handed, left) {
            Ok((g, _)) => g,
            Err(p) => p.into_inner().0,
        };
    }
    let (Some(shrink), Some(reclaim)) = (handed.shrink.take(), handed.reclaim.take()) else {
        return;
    };
    drop(handed);
    let clients = SchemeTransport::from_fd(shrink).and_then(|s| {
        SchemeTransport::from_fd(reclaim)
            .map(|r| (Client::new(Arc::new(s)), Client::new(Arc::new(r))))
    });
    match clients {
        Ok((shrink, reclaim)) => {
            evictor::run(broker, Arc::new(IpcWorlds::new(shrink, reclaim, peer)));
        }
        Err(e) => log::error!("mm-server: starting the callers of handed endpoints: {e}"),
    }
}

fn callbacks(broker: &Arc<Broker>, mailbox: &Mailbox) -> Callbacks {
    let (b, c, m) = (broker.clone(), broker.clone(), mailbox.clone());
    Callbacks {
        dispatch: Arc::new(move |s, rx| dispatch::<Pressure, _>(&s.capability, &*b, rx)),
        closed: Arc::new(move |s| Handler::<Pressure>::disconnected(&*c, &s.capability)),
        handoff: Arc::new(move |h| take_handoff(&m, h)),
    }
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("mm-server: {what}: {e}");
    std::process::exit(2);
}

pub fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let a = Args::parse();
    let broker = startup::broker(a.vram_bytes, a.low_watermark_pct, a.high_watermark_pct)
        .map(Arc::new)
        .unwrap_or_else(|e| fail("flags", e));
    let opener = a.launcher_pid.map_or(Opener::Root, Opener::Process);
    let endpoints = Endpoints::new(declared(&a), opener)
        .unwrap_or_else(|e| fail("declaring endpoints", format!("{e:?}")));
    let mailbox: Mailbox = Arc::default();
    let cfg = SchemeConfig {
        name: SCHEME.into(),
        endpoints,
        workers: a.workers.clamp(1, 64),
    };
    let registered = scheme::register(cfg, callbacks(&broker, &mailbox))
        .unwrap_or_else(|e| fail("registering /scheme/mm-server", e));
    if let Err(e) = scheme::notify_ready() {
        log::warn!("mm-server: telling init we are ready: {e}");
    }
    let (wait, peer) = (
        Duration::from_millis(a.handoff_timeout_ms),
        Duration::from_millis(a.peer_timeout_ms),
    );
    let b = broker.clone();
    if let Err(e) = std::thread::Builder::new()
        .name("mm-evict".into())
        .spawn(move || evict_when_handed(b, mailbox, wait, peer))
    {
        fail("starting the eviction loop", e);
    }
    println!("mm-server: serving /scheme/{SCHEME}");
    match registered.serve() {
        Ok(()) => log::info!("mm-server: the scheme was closed; stopping"),
        Err(e) => fail("serving", e),
    }
}
