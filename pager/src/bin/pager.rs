//! The pager process. Endpoints inherited from `init`: `--client-fd`
//! (`Pager`, one per client, each followed by its `--client-badge`),
//! `--migrate-fd` (`PagerMigrate`, served to the GPU server), `--notify-fd`
//! (our `GpuNotify` client), `--reclaim-fd` (`PagerReclaim`, served to
//! mm-server). Budgets from the manifest: `--budget name=value,...` per
//! client, `--arena-mib` for the metadata arena. Stdin is init's lifeline.

// The explorer's build of the pager crate (feature `shuttle`) has no host
// runtime; its binary only says so.
#[cfg(feature = "shuttle")]
fn main() {
    eprintln!("pager: this build is for the schedule explorer (feature shuttle), not a server");
    std::process::exit(2);
}

#[cfg(all(not(feature = "shuttle"), not(target_os = "redox")))]
fn main() {
    server::main();
}

// The Redox runtime (`pager::redox`) over the same core.
#[cfg(all(not(feature = "shuttle"), target_os = "redox"))]
fn main() {
    pager::redox::main();
}

#[cfg(all(not(feature = "shuttle"), not(target_os = "redox")))]
mod server {
    use std::io::Read;
    use std::sync::Arc;

    use clap::Parser;
    use ipc_protocol::client::Client;
    use ipc_protocol::interfaces::{
        pager::Pager, pager_migrate::PagerMigrate, pager_reclaim::PagerReclaim,
    };
    use ipc_protocol::transport::{inherited_fd, ExtraEndpoint, SeqPacket, Transport};
    use ipc_protocol::{Capability, Rights};
    use pager::core::thrash::ThrashPolicy;
    use pager::host::{Config, PagerServer};

    #[derive(Parser)]
    #[command(about = "xe-svm address-space pager")]
    struct Args {
        /// A client's endpoint; repeated, one per client.
        #[arg(long, required = true)]
        client_fd: Vec<i32>,
        /// The badge of each `--client-fd`, in the same order (the same number
        /// the client has in every server).
        #[arg(long)]
        client_badge: Vec<u64>,
        /// A GPU server's `PagerMigrate` endpoint; repeated, one per GPU,
        /// the first GPU 0's (up to 8).
        #[arg(long, required = true, num_args = 1)]
        migrate_fd: Vec<i32>,
        /// That GPU server's notifier (`GpuNotify`), in the same order.
        #[arg(long, required = true, num_args = 1)]
        notify_fd: Vec<i32>,
        /// Rights granted to that endpoint's badge (bits of
        /// `ipc_protocol::Rights`; from init's manifest).
        #[arg(long, default_value_t = CLIENT_RIGHTS.bits())]
        client_rights: u32,
        /// Rights granted to that endpoint's badge (bits of
        /// `ipc_protocol::Rights`; from init's manifest).
        #[arg(long, default_value_t = Rights::MIGRATE.bits())]
        migrate_rights: u32,

        /// `PagerReclaim`, served to mm-server.
        #[arg(long)]
        reclaim_fd: Option<i32>,
        /// Rights granted to that endpoint's badge (bits of
        /// `ipc_protocol::Rights`; from init's manifest).
        #[arg(long, default_value_t = Rights::RECLAIM.bits())]
        reclaim_rights: u32,

        /// Fault workers per address space (client userfaultfd); one more
        /// thread reads its events.
        #[arg(long, default_value_t = 4)]
        threads_per_view: usize,
        /// What each client may make the pager hold: `name=value,...` over the
        /// defaults (see the README's budget table; K, M, G suffixes).
        #[arg(long, default_value = "")]
        budget: String,
        /// The metadata arena in MiB (default: every client at its metadata
        /// budget, plus the peers').
        #[arg(long)]
        arena_mib: Option<u64>,
        /// One more endpoint for the conformance suite,
        /// `INTERFACE:FD:BADGE:RIGHTS` (`Pager`, `PagerMigrate` or
        /// `PagerReclaim`); init adds these only for `svm conformance ipc
        /// --system`. Repeated.
        #[arg(long)]
        extra_endpoint: Vec<ExtraEndpoint>,
        /// How many times init has started this server (1 at boot); past 1
        /// it takes over from the journal and the keeper (`--journal-fd`,
        /// `--keep-fd`) before it serves, and announces the restart on
        /// every endpoint it serves.
        #[arg(long, default_value_t = 1,
              value_parser = clap::value_parser!(u32).range(1..))]
        generation: u32,
        /// A pipe init reads: one byte on it says this process serves (init
        /// kills a server that has not said so within its readiness deadline).
        #[arg(long)]
        ready_fd: Option<i32>,
        /// Tests: generation N stalls before it serves (a restart that
        /// hangs), so init's readiness deadline must kill it.
        #[arg(long, hide = true)]
        stall_before_serving: Option<u32>,
        /// A memfd `init` keeps for every generation: objects, address
        /// spaces and views are recorded there (`pager::journal`). With
        /// `--keep-fd`; without both nothing outlives this process.
        #[arg(long, requires = "keep_fd")]
        journal_fd: Option<i32>,
        /// `init`'s descriptor keeper (`ipc_protocol::keeper`): object
        /// memfds and client userfaultfds are handed to it, and given back
        /// to the next generation.
        #[arg(long, requires = "journal_fd")]
        keep_fd: Option<i32>,
        /// Anti-thrashing: `off` (the default), `on` (500,8,500), or
        /// `WINDOW_MS,THRESHOLD,HOLD_MS` (a region a CPU fault moved back
        /// THRESHOLD times in WINDOW_MS is mapped in system memory by GPU
        /// faults for HOLD_MS).
        #[arg(long, default_value = "off")]
        thrash: String,
        /// How long a collect may await the GPU server's finalize before it
        /// is undone (its pages unlocked); longer than the GPU server's
        /// `--pager-timeout-ms` plus a copy (1 to 3600000).
        #[arg(long, default_value_t = 90_000,
              value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
        collect_lease_ms: u64,
        /// How long a call to the GPU server's notifier (`GpuNotify`) may
        /// go unanswered: the migration it served fails (the pages stay in
        /// VRAM) and a staging slot a copy may still reach is quarantined
        /// (1 to 3600000).
        #[arg(long, default_value_t = 30_000,
              value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
        gpu_timeout_ms: u64,
        /// Test only: break rule 8 (no invalidation before migrating back).
        #[arg(long, hide = true)]
        unsafe_skip_invalidate: bool,
    }

    /// What a client's badge may do by default.
    const CLIENT_RIGHTS: Rights = Rights::OBJECT
        .union(Rights::VIEW)
        .union(Rights::ADVISE)
        .union(Rights::SNAPSHOT);

    fn endpoint(fd: i32) -> Arc<dyn Transport> {
        // SAFETY: init passed this descriptor to us and nothing else owns it.
        Arc::new(SeqPacket::from_fd(unsafe { inherited_fd(fd) }))
    }

    /// The configuration the flags ask for; a bad flag is a one-line error.
    fn config(a: &Args) -> Result<Config, String> {
        let core = pager::startup::core_config(&a.budget, a.client_fd.len(), a.arena_mib)?;
        let mut cfg = Config {
            threads_per_view: a.threads_per_view.clamp(1, 64),
            core,
            ..Config::default()
        };
        cfg.core.skip_invalidate = a.unsafe_skip_invalidate;
        cfg.core.collect_lease_us = a.collect_lease_ms * 1000;
        cfg.core.thrash = ThrashPolicy::parse(&a.thrash).map_err(|e| format!("--thrash {e}"))?;
        cfg.core.generation = a.generation;
        Ok(cfg)
    }

    /// The conformance suite's endpoints (`--extra-endpoint`).
    fn serve_extra(extra: &[ExtraEndpoint], server: &Arc<PagerServer>, generation: u32) {
        for e in extra {
            let cap = Capability::new(e.badge, e.rights);
            let label = format!("pager-extra{}", e.badge);
            let (t, s) = (endpoint(e.fd), server.clone());
            match e.interface.as_str() {
                "Pager" => {
                    announce::<Pager>(&*t, generation);
                    ipc_protocol::server::spawn::<Pager, _>(&label, t, cap, s, 2)
                }
                "PagerMigrate" => {
                    announce::<PagerMigrate>(&*t, generation);
                    ipc_protocol::server::spawn::<PagerMigrate, _>(&label, t, cap, s, 2)
                }
                "PagerReclaim" => {
                    announce::<PagerReclaim>(&*t, generation);
                    ipc_protocol::server::spawn::<PagerReclaim, _>(&label, t, cap, s, 2)
                }
                other => {
                    eprintln!("pager: --extra-endpoint {e}: the pager does not serve {other}");
                    std::process::exit(2);
                }
            };
        }
    }

    use ipc_protocol::server::announce_if_restarted as announce;

    /// Each GPU's (number, `PagerMigrate` endpoint, notifier endpoint).
    type GpuEndpoints = Vec<(u8, Arc<dyn Transport>, Arc<dyn Transport>)>;

    /// The `--migrate-fd` and `--notify-fd` pairs, by GPU.
    fn gpu_endpoints(a: &Args) -> Result<GpuEndpoints, String> {
        if a.migrate_fd.len() != a.notify_fd.len() {
            return Err(format!(
                "{} --migrate-fd but {} --notify-fd",
                a.migrate_fd.len(),
                a.notify_fd.len()
            ));
        }
        if a.migrate_fd.len() > pager::core::object::MAX_GPUS {
            return Err(format!("at most {} GPUs", pager::core::object::MAX_GPUS));
        }
        let pairs = a.migrate_fd.iter().zip(&a.notify_fd);
        Ok((0u8..)
            .zip(pairs)
            .map(|(gpu, (&m, &n))| (gpu, endpoint(m), endpoint(n)))
            .collect())
    }

    /// Serves GPU `gpu`'s server's `PagerMigrate` on `t` (announced
    /// already: `main`); the endpoint's badge names the GPU.
    fn serve_migrate(a: &Args, gpu: u8, t: Arc<dyn Transport>, server: &Arc<PagerServer>) {
        let badge = pager::notifier::migrate_badge(gpu);
        ipc_protocol::server::spawn::<PagerMigrate, _>(
            &format!("pager-migrate{gpu}"),
            t,
            Capability::new(badge, Rights::from_bits_truncate(a.migrate_rights)),
            server.clone(),
            4,
        );
    }

    /// Attaches the journal and the keeper (`--journal-fd`, `--keep-fd`);
    /// the records a predecessor left.
    fn journal(a: &Args, server: &PagerServer) -> Vec<(u32, pager::journal::Record)> {
        let (Some(j), Some(k)) = (a.journal_fd, a.keep_fd) else {
            return Vec::new();
        };
        let core = &server.core().cfg;
        let bytes = core
            .budget
            .journal_bytes_needed(core.max_clients)
            .unwrap_or(u64::MAX);
        // SAFETY: init passed this descriptor to us and nothing else owns it.
        let memfd = unsafe { inherited_fd(j) };
        match ipc_protocol::keeper::map_journal(memfd, bytes) {
            Ok(words) => server.attach_journal(words, endpoint(k)),
            Err(e) => {
                eprintln!("pager: --journal-fd {j}: {e}");
                std::process::exit(2);
            }
        }
    }

    /// A restarted pager rebuilds what its predecessor's clients hold, or
    /// exits rather than serve wrong data (init starts it again).
    fn take_over(server: &PagerServer, records: &[(u32, pager::journal::Record)]) {
        let started = std::time::Instant::now();
        match server.take_over(records) {
            Ok(r) => log::info!(
                "pager: took over in {:.1} ms: {r:?}",
                started.elapsed().as_secs_f64() * 1e3
            ),
            Err(e) => {
                eprintln!("pager: taking over: {e}");
                std::process::exit(2);
            }
        }
    }

    pub fn main() {
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
        let a = Args::parse();
        let cfg = match config(&a) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("pager: {e}");
                std::process::exit(2);
            }
        };
        let server = match PagerServer::new(cfg) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                eprintln!("pager: {e}");
                std::process::exit(2);
            }
        };
        let records = journal(&a, &server);
        let restarted = a.generation > 1;
        // Announced first, served once taken over: the GPU server's calls
        // to the dead generation fail now (`PeerRestarted`), so its
        // migrations in flight end before our `Frames` question, which
        // waits for them (xe-svm's `frames.rs`).
        let gpus = match gpu_endpoints(&a) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("pager: {e}");
                std::process::exit(2);
            }
        };
        for (gpu, migrate, _) in &gpus {
            announce::<PagerMigrate>(&**migrate, a.generation);
            // Serve the GPU servers' migrations before anything else can
            // fault; a restarted pager only once it took over (below).
            if !restarted {
                serve_migrate(&a, *gpu, migrate.clone(), &server);
            }
        }
        let gpu_timeout = std::time::Duration::from_millis(a.gpu_timeout_ms);
        for (gpu, _, notify) in &gpus {
            let client = Client::new(notify.clone()).with_timeout(gpu_timeout);
            if let Err(e) = server.attach_gpu(*gpu, client) {
                eprintln!("pager: attaching GPU {gpu}'s server: {e}");
                std::process::exit(2);
            }
        }
        if restarted {
            take_over(&server, &records);
            for (gpu, migrate, _) in &gpus {
                serve_migrate(&a, *gpu, migrate.clone(), &server);
            }
        }
        if let Some(fd) = a.reclaim_fd {
            let rights = Rights::from_bits_truncate(a.reclaim_rights);
            let t = endpoint(fd);
            announce::<PagerReclaim>(&*t, a.generation);
            ipc_protocol::server::spawn::<PagerReclaim, _>(
                "pager-reclaim",
                t,
                Capability::new(3, rights),
                server.clone(),
                2,
            );
        }
        if a.client_badge.len() != a.client_fd.len() {
            eprintln!(
                "pager: {} --client-fd but {} --client-badge",
                a.client_fd.len(),
                a.client_badge.len()
            );
            std::process::exit(2);
        }
        let rights = Rights::from_bits_truncate(a.client_rights);
        for (fd, badge) in a.client_fd.iter().zip(&a.client_badge) {
            let t = endpoint(*fd);
            announce::<Pager>(&*t, a.generation);
            ipc_protocol::server::spawn::<Pager, _>(
                &format!("pager-client{badge}"),
                t,
                Capability::new(*badge, rights),
                server.clone(),
                4,
            );
        }
        serve_extra(&a.extra_endpoint, &server, a.generation);
        if a.stall_before_serving == Some(a.generation) {
            log::warn!(
                "pager: generation {} stalls before serving (a test)",
                a.generation
            );
            std::thread::park();
        }
        if let Some(fd) = a.ready_fd {
            // SAFETY: init gave us this descriptor for this alone.
            unsafe { ipc_protocol::transport::say_ready(fd) };
        }
        println!("pager: serving");
        let mut buf = [0u8; 1];
        let _ = std::io::stdin().read(&mut buf);
        log::info!("pager: init closed the lifeline; stopping");
    }
}
