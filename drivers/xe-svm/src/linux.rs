//! The GPU server's Linux main. Endpoints are inherited from `init`:
//! `--device-fd` (the device's control channel), and when serving,
//! `--client-fd` (`Gpu`, one per client, each followed by its
//! `--client-badge`), `--migrate-fd` (our `PagerMigrate`
//! client), `--notify-fd` (`GpuNotify`, served to the pager),
//! `--pressure-fd` (our `Pressure` client) and `--shrink-fd` (`GpuShrink`,
//! served to mm-server). Stdin is
//! init's lifeline: the server stops when it closes.

use std::io::Read;
use std::sync::Arc;

use crate::arena::Config;
use crate::budget::GpuBudget;
use crate::device::Device;
use crate::host::GpuServer;
use crate::schemes::{CLIENT_RIGHTS, NOTIFY_BADGE, SHRINK_BADGE};
use clap::Parser;
use ipc_protocol::client::Client;
use ipc_protocol::interfaces::pager_migrate::PagerMigrate;
use ipc_protocol::interfaces::{gpu::Gpu, gpu_notify::GpuNotify, gpu_shrink::GpuShrink};
use ipc_protocol::transport::{inherited_fd, ExtraEndpoint, SeqPacket, Transport};
use ipc_protocol::{Capability, Rights};

#[derive(Parser)]
#[command(about = "xe-svm GPU server")]
struct Args {
    #[arg(long, default_value_t = 3)]
    device_fd: i32,
    /// Probe, print the report and exit.
    #[arg(long)]
    probe_only: bool,
    /// A client's endpoint; repeated, one per client.
    #[arg(long)]
    client_fd: Vec<i32>,
    /// The badge of each `--client-fd`, in the same order (init assigns it;
    /// the same number in every server).
    #[arg(long)]
    client_badge: Vec<u64>,
    #[arg(long)]
    migrate_fd: Option<i32>,
    #[arg(long)]
    notify_fd: Option<i32>,
    /// Rights granted to that endpoint's badge (bits of `ipc_protocol::Rights`;
    /// from init's manifest).
    #[arg(long, default_value_t = CLIENT_RIGHTS.bits())]
    client_rights: u32,
    /// Rights granted to that endpoint's badge (bits of `ipc_protocol::Rights`;
    /// from init's manifest).
    #[arg(long, default_value_t = Rights::NOTIFY.bits())]
    notify_rights: u32,

    /// Our `Pressure` client endpoint to mm-server.
    #[arg(long)]
    pressure_fd: Option<i32>,
    /// `GpuShrink`, served to mm-server.
    #[arg(long)]
    shrink_fd: Option<i32>,
    /// Rights granted to that endpoint's badge (bits of `ipc_protocol::Rights`;
    /// from init's manifest).
    #[arg(long, default_value_t = Rights::SHRINK.bits())]
    shrink_rights: u32,
    /// One more endpoint for the conformance suite, `INTERFACE:FD:BADGE:RIGHTS`
    /// (`Gpu`, `GpuNotify` or `GpuShrink`); init adds these only for
    /// `svm conformance ipc --system`. Repeated.
    #[arg(long)]
    extra_endpoint: Vec<ExtraEndpoint>,
    /// System memory for evicted buffer objects (sparse until used).
    #[arg(long, default_value_t = 1024)]
    bo_pool_mib: u64,
    /// What one client may make the server hold, `name=value,...` over the
    /// defaults (README, "Budgets"; K, M, G suffixes).
    #[arg(long, default_value = "")]
    budget: String,
    /// The deadline of a call to the pager (`Collect`, `Finalize`): a GPU
    /// fault whose call gets no answer by then fails (its job ends
    /// `Faulted`) instead of waiting forever; the pager undoes a collect
    /// left unfinalized after its `--collect-lease-ms` (1 to 600000).
    #[arg(long, default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pager_timeout_ms: u64,
    /// How many times init has started this server (1 at boot). Past 1
    /// it announces the restart on every endpoint, adopts the pages its
    /// predecessor left in VRAM (`restart.rs`) and only then serves.
    #[arg(long, default_value_t = 1)]
    generation: u32,
    /// A memfd `init` keeps for every generation: the VMs and bindings
    /// are recorded there, and a restarted server rebuilds them from it
    /// (`journal.rs`, `rebuild.rs`). Without it they are not kept.
    #[arg(long)]
    journal_fd: Option<i32>,
    /// The GPU this server drives, as the pager names GPUs (0 to 15; 0
    /// with one GPU): the GPU its collects name.
    #[arg(long, default_value_t = 0,
          value_parser = clap::value_parser!(u8).range(0..=15))]
    gpu_id: u8,
    /// A peer GPU's VRAM, `GPU:FD:BYTES` (an inherited memfd `init` made
    /// for that device): mapped as this device's peer window on it, where
    /// `PushToPeer` copies (several GPUs, issue 17). Repeated.
    #[arg(long)]
    peer_vram: Vec<PeerVram>,
    /// Chunks (2 MiB) each VM's fault worker moves to VRAM ahead of a
    /// stream of its faults (0 to 8; 0 is off, as in xe; `fault_ahead.rs`).
    #[arg(long, default_value_t = 0,
          value_parser = clap::value_parser!(u8).range(0..=crate::fault_ahead::MAX_AHEAD as i64))]
    fault_ahead: u8,
    /// A pipe init reads: one byte on it says this process serves (init
    /// kills a server that has not said so within its readiness deadline).
    #[arg(long)]
    ready_fd: Option<i32>,
}

/// One `--peer-vram` argument.
#[derive(Debug, Clone, Copy)]
struct PeerVram {
    gpu: u8,
    fd: i32,
    bytes: u64,
}

impl std::str::FromStr for PeerVram {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("--peer-vram {s:?}: want GPU:FD:BYTES");
        let mut it = s.split(':');
        let (Some(g), Some(f), Some(b), None) = (it.next(), it.next(), it.next(), it.next()) else {
            return Err(bad());
        };
        Ok(Self {
            gpu: g.parse().map_err(|_| bad())?,
            fd: f.parse().map_err(|_| bad())?,
            bytes: b.parse().map_err(|_| bad())?,
        })
    }
}

/// Maps each `--peer-vram` as this device's window on that peer.
fn map_peers(a: &Args, server: &GpuServer) -> Result<(), String> {
    for p in &a.peer_vram {
        // SAFETY: init passed this descriptor to us and nothing else owns it.
        let vram = unsafe { inherited_fd(p.fd) };
        server
            .inner
            .hw
            .map_peer(p.gpu, vram, p.bytes)
            .map_err(|e| format!("the peer window on GPU {}: {e:?}", p.gpu))?;
        log::info!("xe-svm: GPU {}: a peer window on GPU {}", a.gpu_id, p.gpu);
    }
    Ok(())
}

/// Attaches the journal (`--journal-fd`) and, past generation 1,
/// rebuilds the VMs and bindings it describes.
fn journal(a: &Args, server: &GpuServer, bytes: u64) {
    let Some(fd) = a.journal_fd else { return };
    // SAFETY: init passed this descriptor to us and nothing else owns it.
    let memfd = unsafe { inherited_fd(fd) };
    let words = match ipc_protocol::keeper::map_journal(memfd, bytes) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("xe-svm: --journal-fd {fd}: {e}");
            std::process::exit(2);
        }
    };
    let (journal, records) = crate::journal::Journal::open(words);
    server.inner.attach_journal(journal);
    if !records.is_empty() {
        server.rebuild(&records);
    }
}

/// A restarted server (generation past 1) meets a device its predecessor
/// left, with pages in VRAM: its probe writes none.
fn probe_meeting(a: &Args) -> crate::probe::Meeting {
    if a.generation > 1 {
        crate::probe::Meeting::Reattach
    } else {
        crate::probe::Meeting::Fresh
    }
}

fn endpoint(fd: i32) -> Arc<dyn Transport> {
    // SAFETY: init passed this descriptor to us and nothing else owns it.
    Arc::new(SeqPacket::from_fd(unsafe { inherited_fd(fd) }))
}

// Tells the caller at `t` that this is generation `generation` (past 1
// only), before anything of ours reaches it: its calls the predecessor
// took fail with `PeerRestarted` instead of waiting on a dead process.
use ipc_protocol::server::announce_if_restarted as announce;

pub fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let a = Args::parse();
    let started = std::time::Instant::now();
    let (bar, report) = match crate::probe::probe(endpoint(a.device_fd), probe_meeting(&a)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("xe-svm: probe failed: {e}");
            std::process::exit(2);
        }
    };
    log::info!(
        "xe-svm: probed {:.1} ms after its start",
        started.elapsed().as_secs_f64() * 1e3
    );
    println!(
        "xe-svm: device ready: {} MiB VRAM, {} hardware threads, \
         copy self-test {:.2} GB/s, TLB invalidation {:.1} us",
        report.vram_bytes >> 20,
        report.hw_threads,
        report.copy_bytes_per_sec / 1e9,
        report.tlb_invalidation_us
    );
    if a.probe_only {
        return;
    }
    if a.client_badge.len() != a.client_fd.len() {
        eprintln!(
            "xe-svm: {} --client-fd but {} --client-badge",
            a.client_fd.len(),
            a.client_badge.len()
        );
        std::process::exit(2);
    }
    let mut budget = GpuBudget::default();
    if let Err(e) = budget.apply(&a.budget) {
        eprintln!("xe-svm: --budget {:?}: {e:?}", a.budget);
        std::process::exit(2);
    }
    if let (false, Some(migrate), Some(notify)) =
        (a.client_fd.is_empty(), a.migrate_fd, a.notify_fd)
    {
        serve(&a, bar, budget, migrate, notify);
        log::info!(
            "xe-svm: generation {} serving {:.1} ms after its start",
            a.generation,
            started.elapsed().as_secs_f64() * 1e3
        );
        println!("xe-svm: serving");
    }
    if let Some(fd) = a.ready_fd {
        // SAFETY: init gave us this descriptor for this alone.
        unsafe { ipc_protocol::transport::say_ready(fd) };
    }
    let mut buf = [0u8; 1];
    let _ = std::io::stdin().read(&mut buf);
    log::info!("xe-svm: init closed the lifeline; stopping");
}

/// The endpoints this server serves, opened (and, for a restarted server,
/// told of the restart) before any of them is served.
struct Served {
    notify: Arc<dyn Transport>,
    shrink: Option<Arc<dyn Transport>>,
    clients: Vec<Arc<dyn Transport>>,
    extras: Vec<Arc<dyn Transport>>,
}

impl Served {
    fn open(a: &Args, notify: i32) -> Self {
        Self {
            notify: endpoint(notify),
            shrink: a.shrink_fd.map(endpoint),
            clients: a.client_fd.iter().map(|fd| endpoint(*fd)).collect(),
            extras: a.extra_endpoint.iter().map(|e| endpoint(e.fd)).collect(),
        }
    }

    /// Announces generation `g` on every one (past 1 only).
    fn announce(&self, a: &Args, g: u32) {
        announce::<GpuNotify>(&*self.notify, g);
        if let Some(t) = &self.shrink {
            announce::<GpuShrink>(&**t, g);
        }
        for t in &self.clients {
            announce::<Gpu>(&**t, g);
        }
        for (e, t) in a.extra_endpoint.iter().zip(&self.extras) {
            match e.interface.as_str() {
                "Gpu" => announce::<Gpu>(&**t, g),
                "GpuNotify" => announce::<GpuNotify>(&**t, g),
                "GpuShrink" => announce::<GpuShrink>(&**t, g),
                _ => {}
            }
        }
    }

    fn spawn(self, a: &Args, server: &Arc<GpuServer>) {
        use ipc_protocol::server::{spawn, spawn_fenced};
        // Rule 9: the notifier has its own endpoint and threads.
        let notify = Capability::new(NOTIFY_BADGE, Rights::from_bits_truncate(a.notify_rights));
        let fence = Some(server.inner.hw.notify_fence.clone());
        spawn_fenced::<GpuNotify, _>(
            "xe-svm-notify",
            self.notify,
            notify,
            server.clone(),
            4,
            fence,
        );
        if let Some(t) = self.shrink {
            let cap = Capability::new(SHRINK_BADGE, Rights::from_bits_truncate(a.shrink_rights));
            spawn::<GpuShrink, _>("xe-svm-shrink", t, cap, server.clone(), 2);
        }
        let client_rights = Rights::from_bits_truncate(a.client_rights);
        for (t, badge) in self.clients.into_iter().zip(&a.client_badge) {
            let cap = Capability::new(*badge, client_rights);
            spawn::<Gpu, _>(&format!("xe-svm-gpu{badge}"), t, cap, server.clone(), 4);
        }
        for (e, t) in a.extra_endpoint.iter().zip(self.extras) {
            let cap = Capability::new(e.badge, e.rights);
            let label = format!("xe-svm-extra{}", e.badge);
            let s = server.clone();
            match e.interface.as_str() {
                "Gpu" => spawn::<Gpu, _>(&label, t, cap, s, 2),
                "GpuNotify" => spawn::<GpuNotify, _>(&label, t, cap, s, 2),
                "GpuShrink" => spawn::<GpuShrink, _>(&label, t, cap, s, 2),
                other => {
                    eprintln!(
                        "xe-svm: --extra-endpoint {e}: the GPU server does not serve {other}"
                    );
                    std::process::exit(2);
                }
            };
        }
    }
}

/// Tells the servers we call (the pager, mm-server) that this is
/// generation `g` (past 1 only): they drop what our predecessor held.
fn announce_to_callees(
    migrate: &Client<PagerMigrate>,
    pressure: Option<&Client<ipc_protocol::interfaces::pressure::Pressure>>,
    g: u32,
) {
    if g <= 1 {
        return;
    }
    let pressure = pressure.map_or(Ok(()), |p| p.announce_restart(g));
    for (name, r) in [
        ("PagerMigrate", migrate.announce_restart(g)),
        ("Pressure", pressure),
    ] {
        if let Err(e) = r {
            log::warn!("xe-svm: announcing generation {g} on {name}: {e}");
        }
    }
}

/// Starts serving: the core, the restart's announcements and take-over
/// (in that order, before anything can allocate VRAM), the fault worker
/// and every endpoint's threads.
fn serve(a: &Args, bar: hw::bar::Bar, budget: GpuBudget, migrate: i32, notify: i32) {
    // One session per `Gpu` endpoint's badge: the metadata arena holds
    // every one at its `metadata_bytes` limit (a typed error if not).
    let gpu_extra = a.extra_endpoint.iter().filter(|e| e.interface == "Gpu");
    let mut cfg = Config::for_clients(budget, a.client_fd.len() + gpu_extra.count());
    cfg.gpu = a.gpu_id;
    let dev = Device::new(Arc::new(bar));
    let pressure = a
        .pressure_fd
        .map(|fd| Client::new(endpoint(fd)).with_timeout(std::time::Duration::from_secs(10)));
    let pager = std::time::Duration::from_millis(a.pager_timeout_ms);
    let migrate = Client::new(endpoint(migrate)).with_timeout(pager);
    announce_to_callees(&migrate, pressure.as_ref(), a.generation);
    let server = match GpuServer::new(dev.clone(), migrate, pressure, a.bo_pool_mib << 20, &cfg) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("xe-svm: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = map_peers(a, &server) {
        eprintln!("xe-svm: {e}");
        std::process::exit(2);
    }
    // The served endpoints hear of the restart before anything else.
    let served = Served::open(a, notify);
    served.announce(a, a.generation);
    // Then, before anything can allocate VRAM, the predecessor's pages.
    if a.generation > 1 {
        if let Err(e) = server.take_over(a.generation) {
            eprintln!("xe-svm: generation {}: {e}", a.generation);
            std::process::exit(2);
        }
    }
    let journal_bytes = cfg.budget.journal_bytes_needed(cfg.clients);
    journal(a, &server, journal_bytes.unwrap_or(u64::MAX));
    let (tx, rx) = std::sync::mpsc::channel();
    let pump = dev.clone();
    std::thread::Builder::new()
        .name("xe-svm-guc".into())
        .spawn(move || pump.pump(tx))
        .expect("spawning at boot");
    let (worker, ahead) = ((*server).clone(), usize::from(a.fault_ahead));
    std::thread::Builder::new()
        .name("xe-svm-faults".into())
        .spawn(move || worker.fault_worker(rx, ahead))
        .expect("spawning at boot");
    served.spawn(a, &server);
}
