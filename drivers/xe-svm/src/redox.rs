//! The GPU server on Redox: the same core and platform as on Linux
//! ([`GpuServer`] over [`crate::host::HostPlatform`]), served on two
//! schemes ([`crate::schemes`]: `xe-svm` and, rule 9, `xe-svm.notify`).
//!
//! Start-up order: the schemes are registered first (so the launcher can
//! open every endpoint), then the launcher hands over on `control` the
//! endpoints we call (`PagerMigrate`, `Pressure`); only then can the
//! server exist, since it calls the pager. Calls that arrive before it
//! exists wait for it, bounded by `--handoff-timeout-ms`; past that the
//! process stops with an error instead of serving half a system.
//!
//! The device: the device model's endpoint (`--device`), a scheme
//! handle carrying [`hw::control`] records ([`hw::control::FRAMING`]); the
//! driver asks for the device's `Hello` ([`hw::control::hello_request`])
//! and maps the register and VRAM handles it answers with, as on Linux.
//! There is no Xe hardware backend: started by pcid-spawner for a real
//! GPU (`PCID_CLIENT_CHANNEL` set, no `--device`), we say so and stop
//! (docs/redox.md section 2).

use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use ipc_protocol::client::Client;
use ipc_protocol::interfaces::{
    gpu::Gpu, gpu_notify::GpuNotify, gpu_shrink::GpuShrink, pager_migrate::PagerMigrate,
    pressure::Pressure,
};
use ipc_protocol::scheme::handoff::Handoff;
use ipc_protocol::scheme::redox::{self as scheme, Callbacks, SchemeConfig};
use ipc_protocol::scheme::redox_client::SchemeTransport;
use ipc_protocol::scheme::{Endpoint, Endpoints, Errno, Opener, Session};
use ipc_protocol::server::{dispatch, Handler};
use ipc_protocol::transport::{Received, Transport};
use ipc_protocol::{Interface, Rights};

use crate::arena::Config;
use crate::budget::GpuBudget;
use crate::device::Device;
use crate::host::GpuServer;
use crate::schemes::{self, EndpointRights, CLIENT_RIGHTS};

#[derive(Parser, Clone)]
#[command(about = "xe-svm GPU server (Redox)")]
struct Args {
    /// A client's badge; repeated, one endpoint `gpu.<badge>` each.
    #[arg(long, required = true)]
    client_badge: Vec<u64>,
    #[arg(long, default_value_t = CLIENT_RIGHTS.bits())]
    client_rights: u32,
    #[arg(long, default_value_t = Rights::NOTIFY.bits())]
    notify_rights: u32,
    #[arg(long, default_value_t = Rights::SHRINK.bits())]
    shrink_rights: u32,
    /// Only this process may open our endpoints (default: any root
    /// process, each endpoint once).
    #[arg(long)]
    launcher_pid: Option<u64>,
    /// The device's control endpoint (the device model's:
    /// `/scheme/xe-model/device`).
    #[arg(long)]
    device: Option<String>,
    /// System memory for evicted buffer objects.
    #[arg(long, default_value_t = 1024)]
    bo_pool_mib: u64,
    /// What one client may make the server hold: `name=value,...`.
    #[arg(long, default_value = "")]
    budget: String,
    /// How long a call to the pager or mm-server may take.
    #[arg(long, default_value_t = 10_000)]
    peer_timeout_ms: u64,
    /// How long to wait for the launcher to hand over what we call.
    #[arg(long, default_value_t = 60_000)]
    handoff_timeout_ms: u64,
    /// Threads that run calls on each scheme.
    #[arg(long, default_value_t = 8)]
    workers: usize,
}

/// What exists only once the launcher has handed over our peers.
#[derive(Default)]
struct Pending {
    migrate: Option<OwnedFd>,
    pressure: Option<OwnedFd>,
    server: Option<Arc<GpuServer>>,
}

/// The start-up state every scheme callback shares.
#[derive(Clone)]
struct Boot {
    state: Arc<(Mutex<Pending>, Condvar)>,
    wait: Duration,
}

impl Boot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.state.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits (bounded) until `ready` holds of the start-up state.
    fn wait_for(
        &self,
        ready: impl Fn(&Pending) -> bool,
    ) -> Option<std::sync::MutexGuard<'_, Pending>> {
        let deadline = Instant::now() + self.wait;
        let mut p = self.lock();
        while !ready(&p) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            p = match self.state.1.wait_timeout(p, left) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
        Some(p)
    }

    fn server(&self) -> Option<Arc<GpuServer>> {
        self.wait_for(|p| p.server.is_some())?.server.clone()
    }

    /// Keeps a handed-over endpoint; a role we do not call is refused.
    fn take_handoff(&self, h: Handoff) -> Result<(), Errno> {
        let mut p = self.lock();
        let slot = match h.role {
            PagerMigrate::ID => &mut p.migrate,
            Pressure::ID => &mut p.pressure,
            _ => return Err(Errno::Invalid),
        };
        if slot.is_some() {
            return Err(Errno::Exists);
        }
        *slot = Some(h.fd);
        self.state.1.notify_all();
        Ok(())
    }
}

/// One frame on one of our endpoints, by the endpoint's interface.
fn on_frame(boot: &Boot, s: &Session, rx: Received) -> Option<(Vec<u8>, Vec<OwnedFd>)> {
    let Some(server) = boot.server() else {
        log::error!(
            "xe-svm: a call on {:?} before the server could start",
            s.interface
        );
        return None;
    };
    let cap = &s.capability;
    match s.interface {
        Gpu::ID => dispatch::<Gpu, _>(cap, &*server, rx),
        GpuNotify::ID => dispatch::<GpuNotify, _>(cap, &*server, rx),
        GpuShrink::ID => dispatch::<GpuShrink, _>(cap, &*server, rx),
        // `control` has no rights: its frames are refused.
        _ => dispatch::<Gpu, _>(cap, &*server, rx),
    }
}

fn on_close(boot: &Boot, s: &Session) {
    let Some(server) = boot.lock().server.clone() else {
        return;
    };
    match s.interface {
        Gpu::ID => Handler::<Gpu>::disconnected(&*server, &s.capability),
        GpuNotify::ID => Handler::<GpuNotify>::disconnected(&*server, &s.capability),
        GpuShrink::ID => Handler::<GpuShrink>::disconnected(&*server, &s.capability),
        _ => {}
    }
}

fn callbacks(boot: &Boot) -> Callbacks {
    let (d, c, h) = (boot.clone(), boot.clone(), boot.clone());
    Callbacks {
        dispatch: Arc::new(move |s, rx| on_frame(&d, s, rx)),
        closed: Arc::new(move |s| on_close(&c, s)),
        handoff: Arc::new(move |hand| h.take_handoff(hand)),
    }
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("xe-svm: {what}: {e}");
    std::process::exit(2);
}

fn register(name: &str, declared: Vec<Endpoint>, a: &Args, boot: &Boot) -> scheme::Registered {
    let opener = a.launcher_pid.map_or(Opener::Root, Opener::Process);
    let endpoints = Endpoints::new(declared, opener)
        .unwrap_or_else(|e| fail("declaring endpoints", format!("{e:?}")));
    let cfg = SchemeConfig {
        name: name.into(),
        endpoints,
        workers: a.workers.clamp(1, 64),
    };
    scheme::register(cfg, callbacks(boot))
        .unwrap_or_else(|e| fail(&format!("registering /scheme/{name}"), e))
}

/// The device: its control endpoint, asked for its `Hello`, probed.
fn probe_device(path: &str) -> Arc<Device> {
    let fd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map(OwnedFd::from)
        .unwrap_or_else(|e| fail(&format!("opening the device at {path}"), e));
    let link = SchemeTransport::framed(fd, hw::control::FRAMING)
        .unwrap_or_else(|e| fail("starting the device link", e));
    let link: Arc<dyn Transport> = Arc::new(link);
    hw::control::send(&*link, hw::control::hello_request(), vec![])
        .unwrap_or_else(|e| fail("asking the device for its Hello", format!("{e:?}")));
    let (bar, report) = crate::probe::probe(link, crate::probe::Meeting::Fresh)
        .unwrap_or_else(|e| fail("probe", e));
    println!(
        "xe-svm: device ready: {} MiB VRAM, copy self-test {:.2} GB/s",
        report.vram_bytes >> 20,
        report.copy_bytes_per_sec / 1e9
    );
    Device::new(Arc::new(bar))
}

/// Builds the server once the launcher has handed over the pager (and,
/// when there is one, mm-server), then starts the GuC pump and the fault
/// worker.
fn start_server(a: &Args, boot: &Boot, dev: Arc<Device>) {
    let mut p = boot
        .wait_for(|p| p.migrate.is_some())
        .unwrap_or_else(|| fail("waiting for the launcher", "no PagerMigrate endpoint"));
    let peer = Duration::from_millis(a.peer_timeout_ms);
    let client = |fd: OwnedFd| -> Arc<dyn Transport> {
        Arc::new(SchemeTransport::from_fd(fd).unwrap_or_else(|e| fail("a peer's caller", e)))
    };
    let migrate = Client::new(client(p.migrate.take().expect("waited for"))).with_timeout(peer);
    let pressure = p
        .pressure
        .take()
        .map(|fd| Client::new(client(fd)).with_timeout(peer));
    let mut budget = GpuBudget::default();
    budget
        .apply(&a.budget)
        .unwrap_or_else(|e| fail(&format!("--budget {:?}", a.budget), format!("{e:?}")));
    let cfg = Config::for_clients(budget, a.client_badge.len());
    let server = GpuServer::new(dev.clone(), migrate, pressure, a.bo_pool_mib << 20, &cfg)
        .map(Arc::new)
        .unwrap_or_else(|e| fail("starting the server", e));
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = (*server).clone();
    std::thread::Builder::new()
        .name("xe-svm-guc".into())
        .spawn(move || dev.pump(tx))
        .and_then(|_| {
            std::thread::Builder::new()
                .name("xe-svm-faults".into())
                .spawn(move || worker.fault_worker(rx, 0))
        })
        .unwrap_or_else(|e| fail("starting the fault path", e));
    p.server = Some(server);
    boot.state.1.notify_all();
}

pub fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let a = Args::parse();
    let Some(device) = a.device.clone() else {
        let pcid = std::env::var("PCID_CLIENT_CHANNEL").is_ok();
        fail(
            "no --device",
            if pcid {
                "started by pcid-spawner for an Xe GPU, but there is no Xe hardware \
                 backend: this server drives the xe device model (docs/redox.md section 2)"
            } else {
                "name the device model's endpoint (--device /scheme/xe-model/device)"
            },
        );
    };
    let rights = EndpointRights {
        client: Rights::from_bits_truncate(a.client_rights),
        notify: Rights::from_bits_truncate(a.notify_rights),
        shrink: Rights::from_bits_truncate(a.shrink_rights),
    };
    let boot = Boot {
        state: Arc::default(),
        wait: Duration::from_millis(a.handoff_timeout_ms),
    };
    let dev = probe_device(&device);
    let main = register(
        schemes::SCHEME,
        schemes::main_endpoints(&a.client_badge, rights),
        &a,
        &boot,
    );
    let notify = register(
        schemes::NOTIFY_SCHEME,
        schemes::notify_endpoints(rights),
        &a,
        &boot,
    );
    if let Err(e) = scheme::notify_ready() {
        log::warn!("xe-svm: telling init we are ready: {e}");
    }
    std::thread::Builder::new()
        .name("xe-svm-notify".into())
        .spawn(move || {
            if let Err(e) = notify.serve() {
                fail("serving /scheme/xe-svm.notify", e);
            }
        })
        .unwrap_or_else(|e| fail("starting the notifier scheme", e));
    let (a2, b2) = (a.clone(), boot.clone());
    std::thread::Builder::new()
        .name("xe-svm-start".into())
        .spawn(move || start_server(&a2, &b2, dev))
        .unwrap_or_else(|e| fail("starting the server", e));
    println!("xe-svm: serving /scheme/{}", schemes::SCHEME);
    match main.serve() {
        Ok(()) => log::info!("xe-svm: the scheme was closed; stopping"),
        Err(e) => fail("serving", e),
    }
}
