//! `svm`: boot the xe-svm system and run workloads on it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use init::args::{above, buffer_size, int, threads, vram_mib, MAX_FAULT_AHEAD, MAX_HW_THREADS};
use init::herd::{self, Mode};
use init::hostile::{self, Family};
use init::oversub;
use init::supervisor::Connection;
use init::supervisor::{BootOptions, System};
use init::views;

#[derive(Parser)]
#[command(about = "Boot xe-svm and run workloads on it")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    /// VRAM of the device model, MiB (even, 2 to 32768; default 256, 32
    /// for `run hostile`).
    #[arg(long, global = true, value_parser = vram_mib)]
    vram_mib: Option<u64>,
    /// Hardware threads of the device model (1 to 4096).
    #[arg(long, global = true, default_value_t = 64, value_parser = int(1, MAX_HW_THREADS))]
    hw_threads: u16,
    /// Copy engines of the device model [default: 1, or
    /// XE_MODEL_COPY_ENGINES].
    #[arg(long, global = true)]
    copy_engines: Option<u16>,
    /// 2 MiB chunks each GPU server moves to VRAM ahead of a stream of a
    /// VM's faults (0 to 8; 0, as in xe, is off): UVM's prefetcher's
    /// streaming case. Fewer faults, and pages may move before they are
    /// touched.
    #[arg(long, global = true, default_value_t = 0,
          value_parser = int(0, MAX_FAULT_AHEAD))]
    fault_ahead: u8,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the servers and the device model; stop on Ctrl-C.
    Boot {
        /// Boot, let the GPU server probe the device, then stop.
        #[arg(long)]
        check: bool,
        /// Devices, each with its own device model and GPU server (1 to
        /// 8), under one pager; each GPU server has a peer window on the
        /// others' VRAM (several GPUs, `init/src/devices.rs`).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=8))]
        gpus: u8,
    },
    /// Boot the system and run a workload on it.
    Run {
        #[command(subcommand)]
        workload: Workload,
    },
    /// Black-box conformance suites (docs/ipc.md).
    Conformance {
        #[command(subcommand)]
        suite: Suite,
    },
    /// Boot the system as PID 1 of a QEMU guest (a stock Linux kernel from
    /// scripts/fetch-qemu.sh) and run a scenario set in it.
    Qemu(init::qemu::QemuArgs),
    /// Inside the guest: run a plan of checks (as PID 1: then power off).
    #[command(hide = true)]
    Guest(init::guest::GuestArgs),
    /// Boot the system and run PROGRAM with `libsvm.so` preloaded: its
    /// heap and anonymous mappings are pager memory (docs/c-api.md).
    Exec(init::exec::ExecArgs),
    /// Each of our paths beside its floor, measured in the same run, with
    /// ratios, a JSON report and plots (see the README).
    Bench(init::bench::BenchArgs),
    /// The helper processes of `svm bench` (floors' pagers, echo peer).
    #[command(hide = true)]
    BenchHelper {
        #[command(subcommand)]
        helper: init::bench::Helper,
    },
    /// Become the server whose spec arrives on stdin: how `init` starts
    /// servers without forking itself (`init/src/spawn.rs`).
    #[command(hide = true)]
    SpawnHelper,
    /// Run as one client of a booted system, on endpoints inherited from
    /// `init` (tests start it; see `ClientSlot::spawn`).
    #[command(hide = true)]
    Client {
        #[arg(long)]
        badge: u64,
        #[arg(long)]
        gpu_fd: i32,
        #[arg(long)]
        pager_fd: i32,
        #[command(subcommand)]
        job: ClientJob,
    },
}

#[derive(Subcommand)]
enum Suite {
    /// Run the IPC suite against a server: golden frames, malformed
    /// frames, refusals, ids over time; judged against a failure list.
    Ipc(IpcArgs),
    /// Run a client implementation against a server (ours with
    /// `--system`); the client reports one `PASS|FAIL|SKIP name` line per
    /// check.
    Client(ClientArgs),
}

#[derive(clap::Args)]
#[command(group(
    clap::ArgGroup::new("target").required(true).args(["connect", "spawn", "system"])
))]
struct IpcArgs {
    /// A listening `SOCK_SEQPACKET` unix socket serving the interface with
    /// every right.
    #[arg(long)]
    connect: Option<std::path::PathBuf>,
    /// With `--connect`: a socket whose connections hold no right (without
    /// it the refusal cases are skipped).
    #[arg(long, requires = "connect")]
    connect_denied: Option<std::path::PathBuf>,
    /// A command (`sh -c`) that serves the interface on descriptor 3
    /// (docs/ipc.md, "Conformance endpoints"); started once per endpoint.
    #[arg(long)]
    spawn: Option<String>,
    /// Boot our servers and run the suite on every interface they serve.
    #[arg(long)]
    system: bool,
    #[command(flatten)]
    common: SuiteArgs,
}

#[derive(clap::Args)]
struct ClientArgs {
    /// The client implementation (`sh -c`): its endpoint on descriptor 3,
    /// one without rights on 4.
    #[arg(long)]
    spawn: String,
    /// Serve it with our servers (booted with conformance endpoints).
    #[arg(long, required_unless_present = "server")]
    system: bool,
    /// Serve it with this server command instead (`sh -c`, descriptor 3).
    #[arg(long, conflicts_with = "system")]
    server: Option<String>,
    /// Longest one client run may take, seconds (1 to 86400).
    #[arg(long, default_value_t = 120, value_parser = int(1u64, 86_400))]
    client_timeout_s: u64,
    #[command(flatten)]
    common: SuiteArgs,
}

#[derive(clap::Args)]
struct SuiteArgs {
    /// Interfaces to test, repeated (default: Pager; with `--system`, every
    /// interface).
    #[arg(long)]
    interface: Vec<String>,
    /// Failure lists, repeated (default: none; for `ipc --system`, ours
    /// built in from tests/conformance/).
    #[arg(long)]
    failures: Vec<std::path::PathBuf>,
    /// Deadline of each exchange, milliseconds (1 to 3600000).
    #[arg(long, default_value_t = 10_000, value_parser = int(1u64, 3_600_000))]
    timeout_ms: u64,
}

#[derive(Subcommand)]
enum ClientJob {
    /// GPU to VRAM, CPU back, round after round; prints `round N`.
    Churn {
        #[arg(long, default_value = "64M", value_parser = buffer_size)]
        size: usize,
        /// Stop after this many rounds (default: run until killed).
        #[arg(long, value_parser = int(1, u64::MAX))]
        rounds: Option<u64>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Touch,
    IncAll,
    Both,
}

#[derive(Subcommand)]
enum Workload {
    /// The anchor workload: CPU fill, GPU touch (to VRAM), a herd of CPU
    /// threads reading every page back, every page checked.
    Herd {
        /// Buffer sizes, comma separated (2M, 64M, 512K...; 4K to 8G).
        #[arg(long, default_value = "2M", value_delimiter = ',', value_parser = buffer_size)]
        size: Vec<usize>,
        /// CPU thread counts, comma separated (1 to 1024).
        #[arg(long, default_value = "1", value_delimiter = ',', value_parser = threads)]
        threads: Vec<usize>,
        #[arg(long, value_enum, default_value_t = ModeArg::Touch)]
        mode: ModeArg,
        /// Repetitions of each configuration (1 to 1000).
        #[arg(long, default_value_t = 5, value_parser = int(1usize, 1000))]
        reps: usize,
        /// One JSON object per line and configuration.
        #[arg(long)]
        json: bool,
        /// All CPU threads start on the same page (a herd on one page at a time).
        #[arg(long)]
        same_start: bool,
        /// Boot this many GPUs and spread the pages over them, a stripe
        /// each, before the herd (1 to 8; several GPUs, issue 17).
        #[arg(long, default_value_t = 1, value_parser = int(1u8, 8))]
        gpus: u8,
    },
    /// Peer migration (several GPUs, issue 17): two GPUs booted; each rep
    /// GPU 0 touches a buffer into its VRAM, then GPU 1's touch takes it
    /// VRAM to VRAM (timed); every word checked; beside a memcpy of the
    /// same bytes between two memfd mappings (the floor, target 80%).
    Peer {
        /// Buffer size (4K to 8G, a multiple of 4K; VRAM grows to fit
        /// unless --vram-mib is given).
        #[arg(long, default_value = "64M", value_parser = buffer_size)]
        size: usize,
        /// Repetitions (1 to 1000).
        #[arg(long, default_value_t = 5, value_parser = int(1usize, 1000))]
        reps: usize,
        /// The summary as one JSON object (with every rep) instead of lines.
        #[arg(long)]
        json: bool,
        /// What moves the pages to GPU 1: its kernel's faults (`touch`), or
        /// one `Gpu::Prefetch` of the range (`prefetch`, xe's
        /// `VM_BIND_OP_PREFETCH`, UVM's `cudaMemPrefetchAsync`).
        #[arg(long, value_enum, default_value = "touch")]
        by: init::peer_migrate::Mover,
    },
    /// mremap while pages are in VRAM: threads hammer reads on the range
    /// while it moves to a new address (plain or `--dontunmap`); every word
    /// is checked, and the GPU binding must follow the view.
    Mremap {
        #[arg(long, default_value = "2M", value_parser = buffer_size)]
        size: usize,
        /// `MREMAP_DONTUNMAP`: the old range stays a view of the object.
        #[arg(long)]
        dontunmap: bool,
        /// Reader threads (1 to 1024).
        #[arg(long, default_value_t = 4, value_parser = threads)]
        readers: usize,
    },
    /// fork while pages are in VRAM: a child reads every word while the
    /// parent hammers reads, then a child adds to every word while the
    /// parent's GPU increments it; every word is checked.
    Fork {
        #[arg(long, default_value = "4M", value_parser = buffer_size)]
        size: usize,
        /// Reader threads (1 to 1024).
        #[arg(long, default_value_t = 4, value_parser = threads)]
        readers: usize,
        /// GPU passes over the buffer while the child writes (1 to 100000).
        #[arg(long, default_value_t = 8, value_parser = int(1u32, 100_000))]
        kernels: u32,
        /// The child's passes of `+1` over every word (1 to 100000).
        #[arg(long, default_value_t = 4, value_parser = int(1u32, 100_000))]
        child_rounds: u32,
    },
    /// Oversubscription: an SVM working set `--ratio` times VRAM, touched by
    /// the GPU and the CPU in turn, against buffer-object jobs competing for
    /// VRAM; prints each world's evictions and checks every word.
    Oversub {
        /// SVM working set as a multiple of usable VRAM (above 0, at most 64).
        #[arg(long, default_value_t = 2.0, value_parser = above(0.0, 64.0))]
        ratio: f64,
        /// GPU-then-CPU passes over the working set (1 to 1000).
        #[arg(long, default_value_t = 2, value_parser = int(1usize, 1000))]
        passes: usize,
        /// Buffer objects competing for VRAM (0: SVM alone; at most 256).
        #[arg(long, default_value_t = 8, value_parser = int(0usize, 256))]
        bos: usize,
        /// Share of VRAM the buffer objects want together (above 0, at most 1).
        #[arg(long, default_value_t = 0.5, value_parser = above(0.0, 1.0))]
        bo_share: f64,
        /// Client threads submitting buffer-object jobs (1 to 64).
        #[arg(long, default_value_t = 4, value_parser = int(1usize, 64))]
        bo_threads: usize,
        /// One JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// The hostile-client harness: a victim (herd and oversubscription
    /// rounds, every word checked) alone, then beside a hostile client
    /// sending every interface everything; the last line is
    /// `bad=N ratio=X hostile_calls=N errors=...` (README, "Isolation").
    Hostile {
        /// Hostile calls to send at least (1 to 1000000000).
        #[arg(long, default_value_t = 100_000, value_parser = int(1u64, 1_000_000_000))]
        frames: u64,
        /// Seed of the hostile client's choices (the same seed sends the
        /// same frames).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Victim rounds alone, and at least as many beside the hostile
        /// client (1 to 100).
        #[arg(long, default_value_t = 2, value_parser = int(1usize, 100))]
        rounds: usize,
        /// Attack families, comma separated, or `all`.
        #[arg(long, default_value = "all", value_parser = families)]
        families: Families,
    },
    /// Servers killed at random points while the herd, oversubscription,
    /// mremap and fork workloads run with every word checked (issue 14);
    /// the last line is `restarts=N longest_wait_ms=N bad=N`.
    Chaos {
        /// Servers to kill, comma separated: gpu, pager, mm (only those the
        /// supervisor restarts: gpu and mm today).
        #[arg(long, default_value = "mm", value_parser = init::chaos::parse_targets)]
        kill: init::chaos::Targets,
        /// Mean time between kills (jittered 0.5x to 1.5x): 500ms, 2s, 1m.
        #[arg(long, default_value = "2s", value_parser = init::chaos::parse_duration)]
        every: std::time::Duration,
        /// How long to run.
        #[arg(long = "for", default_value = "60s", value_parser = init::chaos::parse_duration)]
        run_for: std::time::Duration,
        /// Seed of the kill times and targets (default: the clock).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// The GPU server (or `--kill pager`, the pager) killed while a buffer
    /// is in VRAM, `--rounds` times: kill to the next generation, to the
    /// first CPU fault served, to every page back and to the first GPU job
    /// done (issue 14's recovery time).
    Recovery {
        #[arg(long, default_value_t = 10, value_parser = int(1usize, 1000))]
        rounds: usize,
        /// The server killed: gpu or pager.
        #[arg(long, default_value = "gpu", value_parser = ["gpu", "pager"])]
        kill: String,
        /// Buffer size: 4M, 64M ...
        #[arg(long, default_value = "4M", value_parser = buffer_size)]
        size: usize,
    },
    /// Scenario files: `svm run FILE|DIR [--filter PATTERN] [--list] [--json]
    /// [--long]` (docs/scenarios.md; `svm run tests/scenarios --help`).
    #[command(external_subcommand)]
    Scenarios(Vec<String>),
}

/// `--families`: attack family names.
#[derive(Clone)]
struct Families(Vec<Family>);

fn families(s: &str) -> Result<Families, String> {
    Family::parse_list(s).map(Families)
}

/// Parses the command line; a bad argument is one plain line on stderr
/// (clap's first line, which names the argument and its limit) and exit
/// status 2, before anything boots.
fn parse_cli() -> Cli {
    use clap::error::ErrorKind;
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            e.exit()
        }
        Err(e) => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("bad arguments");
            eprintln!("svm: {}", first.trim_start_matches("error: "));
            std::process::exit(2);
        }
    }
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    // As a guest's first process the kernel gives us no arguments to parse.
    if rustix::process::getpid().is_init() {
        init::guest::pid1::main(std::path::Path::new(init::guest::pid1::PLAN_PATH));
    }
    let cli = parse_cli();
    let mut opts = BootOptions::default();
    let hostile = matches!(
        cli.command,
        Cmd::Run {
            workload: Workload::Hostile { .. }
        }
    );
    let default_vram = match cli.command {
        _ if hostile => 32,
        Cmd::Run {
            workload: Workload::Peer { size, .. },
        } => init::peer_migrate::default_vram_mib(size),
        _ => 256,
    };
    opts.device.vram_bytes = cli.vram_mib.unwrap_or(default_vram) << 20;
    opts.device.hw_threads = cli.hw_threads;
    if let Some(n) = cli.copy_engines {
        opts.device.copy_engines = n.max(1);
    }
    // In range already (its parser).
    let _ = opts.set_fault_ahead(cli.fault_ahead);
    let code = match cli.command {
        Cmd::Run {
            workload: Workload::Scenarios(args),
        } => init::scenario::cli::main(&args),
        Cmd::Client {
            badge,
            gpu_fd,
            pager_fd,
            job,
        } => client(badge, gpu_fd, pager_fd, job),
        Cmd::Run {
            workload:
                Workload::Mremap {
                    size,
                    dontunmap,
                    readers,
                },
        } => run_views(opts, |c| {
            views::mremap_race(
                c,
                &views::MremapConfig {
                    bytes: size,
                    dontunmap,
                    readers,
                },
            )
            .map(|r| (r.line(), r.bad_words))
        }),
        Cmd::Run {
            workload:
                Workload::Fork {
                    size,
                    readers,
                    kernels,
                    child_rounds,
                },
        } => run_views(opts, |c| {
            views::fork_race(
                c,
                &views::ForkConfig {
                    bytes: size,
                    readers,
                    kernels,
                    child_rounds,
                },
            )
            .map(|r| (r.line(), r.bad_words + r.child_bad))
        }),
        Cmd::Boot { check: true, gpus } if gpus > 1 => boot_check_gpus(opts, gpus),
        Cmd::Boot { check, gpus } => boot(BootOptions { gpus, ..opts }, check),
        Cmd::Exec(args) => exec(opts, &args),
        Cmd::Conformance { suite } => conformance(opts, suite),
        Cmd::Qemu(args) => init::qemu::cli_main(&args),
        Cmd::Guest(args) => init::guest::cli_main(&args),
        Cmd::Bench(args) => init::bench::main(args, opts),
        Cmd::BenchHelper { helper } => init::bench::helper_main(helper),
        Cmd::SpawnHelper => {
            let e = init::spawn::helper_main();
            eprintln!("svm spawn-helper: {e}");
            std::process::exit(2);
        }
        Cmd::Run {
            workload:
                Workload::Herd {
                    size,
                    threads,
                    mode,
                    reps,
                    json,
                    same_start,
                    gpus,
                },
        } => {
            let modes = match mode {
                ModeArg::Touch => vec![Mode::Touch],
                ModeArg::IncAll => vec![Mode::IncAll],
                ModeArg::Both => vec![Mode::Touch, Mode::IncAll],
            };
            let opts = BootOptions { gpus, ..opts };
            run_herd(opts, &size, &threads, &modes, reps, json, same_start)
        }
        Cmd::Run {
            workload:
                Workload::Peer {
                    size,
                    reps,
                    json,
                    by,
                },
        } => run_peer(opts, size, reps, json, by),
        Cmd::Run {
            workload:
                Workload::Oversub {
                    ratio,
                    passes,
                    bos,
                    bo_share,
                    bo_threads,
                    json,
                },
        } => {
            let cfg = oversub::Config {
                ratio,
                passes,
                bos,
                bo_share,
                bo_threads,
                ..Default::default()
            };
            run_oversub(opts, &cfg, json)
        }
        Cmd::Run {
            workload:
                Workload::Hostile {
                    frames,
                    seed,
                    rounds,
                    families,
                },
        } => {
            let cfg = hostile::Config {
                frames,
                seed,
                rounds,
                families: families.0,
                ..Default::default()
            };
            run_hostile(opts, &cfg)
        }
        Cmd::Run {
            workload:
                Workload::Chaos {
                    kill,
                    every,
                    run_for,
                    seed,
                },
        } => {
            let seed = seed.unwrap_or_else(|| {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
                now.map_or(1, |d| d.as_nanos() as u64)
            });
            let cfg = init::chaos::Config {
                kill: kill.0,
                every,
                run_for,
                seed,
            };
            run_chaos(opts, &cfg)
        }
        Cmd::Run {
            workload: Workload::Recovery { rounds, size, kill },
        } => run_recovery(
            opts,
            &init::recovery::Config {
                rounds,
                bytes: size,
                server: if kill == "pager" { "pager" } else { "xe-svm" },
            },
        ),
    };
    std::process::exit(code);
}

fn exec(opts: BootOptions, args: &init::exec::ExecArgs) -> i32 {
    // Ctrl-C is the program's to handle: we wait for it either way.
    let _ = ctrlc::set_handler(|| {});
    match init::exec::run(opts, args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("svm exec: {e}");
            125
        }
    }
}

fn boot(opts: BootOptions, check: bool) -> i32 {
    let opts = BootOptions {
        probe_only: check,
        ..opts
    };
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    if let Err(e) = ctrlc::set_handler(move || s.store(true, Ordering::Release)) {
        eprintln!("svm: cannot install the Ctrl-C handler: {e}");
        return 1;
    }
    let (mut system, _clients) = match System::boot(&opts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("svm: boot failed: {e}");
            return 1;
        }
    };
    let result = if check {
        probe_result(&mut system)
    } else {
        println!("svm: system up; Ctrl-C stops it");
        system.watch(&stop).map_err(|e| e.to_string())
    };
    finish(system, result)
}

/// `svm boot --gpus N --check`: N devices, each a device model and a GPU
/// server that probes it, started together; every probe must pass.
fn boot_check_gpus(opts: BootOptions, gpus: u8) -> i32 {
    let opts = BootOptions {
        probe_only: true,
        ..opts
    };
    let mut systems = Vec::new();
    for gpu in 0..gpus {
        match System::boot(&opts) {
            Ok((s, _)) => systems.push((gpu, s)),
            Err(e) => {
                eprintln!("svm: GPU {gpu}: boot failed: {e}");
                break;
            }
        }
    }
    let mut failed = systems.len() != gpus as usize;
    for (gpu, mut system) in systems {
        let result = probe_result(&mut system).map_err(|e| format!("GPU {gpu}: {e}"));
        match finish(system, result) {
            0 => println!("svm: GPU {gpu}: probe passed"),
            _ => failed = true,
        }
    }
    match failed {
        false => {
            println!("svm: {gpus} GPUs probed");
            0
        }
        true => 1,
    }
}

/// Waits for a probe-only boot's GPU server to finish its probe.
fn probe_result(system: &mut System) -> Result<(), String> {
    match system.wait_for("xe-svm", Duration::from_secs(60)) {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("xe-svm probe failed: {status}")),
        Err(e) => Err(e.to_string()),
    }
}

fn finish(system: System, result: Result<(), String>) -> i32 {
    let shutdown_errors = system.shutdown();
    for e in &shutdown_errors {
        eprintln!("svm: {e}");
    }
    match result {
        Ok(()) if shutdown_errors.is_empty() => {
            eprintln!("svm: system stopped cleanly");
            0
        }
        Ok(()) => 1,
        Err(e) => {
            eprintln!("svm: {e}");
            1
        }
    }
}

/// Boots the system for a workload; on failure, the exit code (the reason
/// printed).
fn boot_with_clients(opts: &BootOptions) -> Result<(System, init::supervisor::Clients), i32> {
    match System::boot(opts) {
        Ok((s, Some(c))) => Ok((s, c)),
        Ok((s, None)) => Err(finish(s, Err("booted without clients".into()))),
        Err(e) => {
            eprintln!("svm: boot failed: {e}");
            Err(1)
        }
    }
}

fn run_herd(
    opts: BootOptions,
    sizes: &[usize],
    threads: &[usize],
    modes: &[Mode],
    reps: usize,
    json: bool,
    same_start: bool,
) -> i32 {
    let (mut system, clients) = match boot_with_clients(&opts) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let mut failed = None;
    let total = sizes.len() * threads.len() * modes.len();
    let mut n = 0;
    'outer: for &bytes in sizes {
        for &mode in modes {
            for &t in threads {
                n += 1;
                eprintln!(
                    "svm: [{n}/{total}] herd {} {} KiB, {t} threads, {reps} reps",
                    mode.name(),
                    bytes >> 10
                );
                let cfg = herd::Config {
                    mode,
                    bytes,
                    threads: t,
                    reps,
                    gpu_threads: 64,
                    same_start,
                    gpus: opts.gpus,
                };
                match herd::run(&clients, &cfg) {
                    Ok(r) => {
                        println!("{}", if json { r.json() } else { r.line() });
                        if r.bad > 0 {
                            failed = Some(format!("{} bad pages", r.bad));
                        }
                    }
                    Err(e) => {
                        failed = Some(format!("herd failed: {e}"));
                        break 'outer;
                    }
                }
                if let Err(e) = system.check_alive() {
                    failed = Some(e.to_string());
                    break 'outer;
                }
            }
        }
    }
    drop(clients);
    finish(system, failed.map_or(Ok(()), Err))
}

/// `svm run peer`: two GPUs; a line per rep, the summary last.
fn run_peer(
    opts: BootOptions,
    bytes: usize,
    reps: usize,
    json: bool,
    by: init::peer_migrate::Mover,
) -> i32 {
    use init::peer_migrate as peer;
    if let Err(e) = peer::check_fits(bytes, opts.device.vram_bytes) {
        eprintln!("svm: {e}");
        return 2;
    }
    let opts = BootOptions { gpus: 2, ..opts };
    let (mut system, clients) = match boot_with_clients(&opts) {
        Ok(b) => b,
        Err(code) => return code,
    };
    eprintln!(
        "svm: peer migration GPU 0 -> GPU 1 by {by:?}, {} KiB, {reps} reps",
        bytes >> 10
    );
    let cfg = peer::Config {
        bytes,
        reps,
        gpu_threads: 64,
        by,
    };
    let result = match peer::run(&clients, &cfg, |r| match json {
        true => eprintln!("svm: {}", r.line()),
        false => println!("{}", r.line()),
    }) {
        Ok(r) => {
            println!("{}", if json { r.json() } else { r.line() });
            if r.passed() {
                system.check_alive().map_err(|e| e.to_string())
            } else {
                Err(format!(
                    "peer: bad={}, vram_to_vram={}",
                    r.bad, r.vram_to_vram
                ))
            }
        }
        Err(e) => Err(format!("peer failed: {e}")),
    };
    drop(clients);
    finish(system, result)
}

/// Boots, runs one view-change scenario as client 0, prints its line.
fn run_views(
    opts: BootOptions,
    scenario: impl FnOnce(&Connection) -> Result<(String, u64), views::ViewsError>,
) -> i32 {
    let (mut system, clients) = match boot_with_clients(&opts) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let result = match scenario(&clients) {
        Ok((line, bad)) => {
            println!("{line}");
            if bad > 0 {
                Err(format!("{bad} bad words"))
            } else {
                system.check_alive().map_err(|e| e.to_string())
            }
        }
        Err(e) => Err(format!("scenario failed: {e}")),
    };
    drop(clients);
    finish(system, result)
}

/// `svm client`: one client of a system `init` booted, on inherited endpoints.
fn client(badge: u64, gpu_fd: i32, pager_fd: i32, job: ClientJob) -> i32 {
    // SAFETY: init passed these descriptors to this process for this use.
    let c = unsafe { Connection::inherited(badge, gpu_fd, pager_fd) };
    match job {
        ClientJob::Churn { size, rounds } => {
            match init::churn::run(&c, size, rounds, &mut std::io::stdout()) {
                Ok(_) => 0,
                Err(e) => {
                    eprintln!("svm client {badge}: {e}");
                    1
                }
            }
        }
    }
}

fn conformance(opts: BootOptions, suite: Suite) -> i32 {
    use init::conformance::command::{self, Request, Where};
    let (target, common, client) = match suite {
        Suite::Ipc(a) => {
            let target = match (a.connect, a.spawn) {
                (Some(path), _) => Where::Connect {
                    path,
                    denied: a.connect_denied,
                },
                (None, Some(cmd)) => Where::Spawn(cmd),
                (None, None) => Where::System(opts),
            };
            (target, a.common, None)
        }
        Suite::Client(a) => {
            let target = match a.server {
                Some(cmd) => Where::Spawn(cmd),
                None => Where::System(opts),
            };
            let limit = Duration::from_secs(a.client_timeout_s);
            (target, a.common, Some((a.spawn, limit)))
        }
    };
    let req = Request {
        target,
        interfaces: common.interface,
        failures: common.failures,
        options: init::conformance::Options {
            timeout: Duration::from_millis(common.timeout_ms),
        },
        client,
    };
    match command::run(req, &mut std::io::stdout()) {
        Ok(summary) if summary.ok() => 0,
        Ok(_) => 1,
        Err(e) => {
            eprintln!("svm conformance: {e}");
            2
        }
    }
}

fn run_oversub(opts: BootOptions, cfg: &oversub::Config, json: bool) -> i32 {
    let (mut system, clients) = match boot_with_clients(&opts) {
        Ok(b) => b,
        Err(code) => return code,
    };
    eprintln!(
        "svm: oversub: working set {}x VRAM, {} passes, {} buffer objects",
        cfg.ratio, cfg.passes, cfg.bos
    );
    let result = match oversub::run(&clients, cfg) {
        Ok(r) => {
            println!("{}", if json { r.json() } else { r.text() });
            if r.bad_pages + r.bad_bos > 0 {
                Err(format!(
                    "{} bad pages, {} bad buffer objects",
                    r.bad_pages, r.bad_bos
                ))
            } else {
                system.check_alive().map_err(|e| e.to_string())
            }
        }
        Err(e) => Err(format!("oversub failed: {e}")),
    };
    drop(clients);
    finish(system, result)
}

/// `svm run chaos`: refuses servers that do not restart before booting,
/// then kills and checks; the verdict line last.
fn run_chaos(opts: BootOptions, cfg: &init::chaos::Config) -> i32 {
    if let Err(e) = init::chaos::check_targets(&cfg.kill) {
        eprintln!("svm: chaos: {e}");
        return 2;
    }
    let (mut system, clients) = match boot_with_clients(&opts) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let names: Vec<&str> = cfg.kill.iter().map(|t| t.process()).collect();
    eprintln!(
        "svm: chaos: killing {} every ~{:?} for {:?} (seed {})",
        names.join(","),
        cfg.every,
        cfg.run_for,
        cfg.seed
    );
    let result = init::chaos::run(&mut system, &clients, cfg);
    drop(clients);
    let result = match result {
        Ok(r) => {
            let stats = init::chaos::summary;
            println!(
                "chaos: {} kills ({} skipped for the crash-loop limit), restart {}, \
                 first fault after a kill {}; {} workload rounds, {} probes, \
                 {} interrupted by a restart",
                r.kills,
                r.skipped,
                stats(&r.restart_ms),
                stats(&r.recovery_ms),
                r.workload_rounds,
                r.probes,
                r.interrupted
            );
            for (name, ms) in &r.workload_ms {
                println!("chaos: {name}: {}", stats(ms));
            }
            for e in &r.errors {
                println!("chaos: error: {e}");
            }
            println!("{}", r.line());
            if r.passed() {
                Ok(())
            } else {
                Err(format!("chaos failed: {}", r.line()))
            }
        }
        Err(e) => Err(e.to_string()),
    };
    finish(system, result)
}

/// `svm run recovery`: one line per round, then the medians and maxima.
fn run_recovery(opts: BootOptions, cfg: &init::recovery::Config) -> i32 {
    let (mut system, clients) = match boot_with_clients(&opts) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let result = init::recovery::run(&mut system, &clients, cfg);
    drop(clients);
    let result = match result {
        Ok(r) => {
            for (i, x) in r.rounds.iter().enumerate() {
                println!(
                    "recovery: round {i}: restarted {:.1} ms, first fault {:.1} ms, \
                     all back {:.1} ms, first GPU job {:.1} ms",
                    x.restarted_ms, x.first_fault_ms, x.all_back_ms, x.first_gpu_job_ms
                );
            }
            let col = |f: fn(&init::recovery::Round) -> f64| {
                init::chaos::summary(&r.rounds.iter().map(f).collect::<Vec<_>>())
            };
            let columns: [(&str, fn(&init::recovery::Round) -> f64); 4] = [
                ("next generation", |x| x.restarted_ms),
                ("first CPU fault", |x| x.first_fault_ms),
                ("every page back", |x| x.all_back_ms),
                ("first GPU job", |x| x.first_gpu_job_ms),
            ];
            for (what, f) in columns {
                println!("recovery: kill to {what}: {}", col(f));
            }
            println!("bad={}", r.bad_words);
            if r.bad_words == 0 {
                Ok(())
            } else {
                Err(format!("{} bad words", r.bad_words))
            }
        }
        Err(e) => Err(format!("recovery failed: {e}")),
    };
    finish(system, result)
}

/// `svm run hostile`: boots with two client slots and runs the harness;
/// details on stdout, the verdict line last.
fn run_hostile(mut opts: BootOptions, cfg: &hostile::Config) -> i32 {
    opts.clients = hostile::CLIENT_SLOTS;
    let (mut system, mut clients) = match boot_with_clients(&opts) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let bar = indicatif::ProgressBar::new(cfg.frames);
    bar.set_style(
        indicatif::ProgressStyle::with_template("svm: hostile {msg} [{bar:30}] {pos}/{len} calls")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let result = hostile::run(&mut system, &mut clients, cfg, &bar);
    bar.finish_and_clear();
    drop(clients);
    let result = match result {
        Ok(r) => {
            for line in r.details() {
                println!("{line}");
            }
            println!("{}", r.line());
            if r.passed() {
                Ok(())
            } else {
                Err(format!(
                    "hostile: {} failure(s), listed above",
                    r.failures().len()
                ))
            }
        }
        Err(e) => Err(format!("hostile: {e}")),
    };
    finish(system, result)
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::{CommandFactory, Parser};

    /// Every subcommand parses its defaults into its fields (a value
    /// parser of the wrong type panics here, not in a user's hands).
    #[test]
    fn every_workload_parses_its_defaults() {
        Cli::command().debug_assert();
        for args in [
            &["svm", "run", "herd"][..],
            &["svm", "run", "mremap"],
            &["svm", "run", "fork"],
            &["svm", "run", "peer"],
            &["svm", "run", "oversub"],
            &["svm", "run", "hostile"],
            &["svm", "boot"],
            &["svm", "conformance", "ipc", "--system"],
            &["svm", "conformance", "client", "--spawn", "x", "--system"],
            &[
                "svm",
                "client",
                "--badge",
                "1",
                "--gpu-fd",
                "3",
                "--pager-fd",
                "4",
                "churn",
            ],
        ] {
            if let Err(e) = Cli::try_parse_from(args) {
                panic!("{args:?}: {e}");
            }
        }
    }
}
