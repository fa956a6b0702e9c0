//! `svm bench` on the command line: the whole run, one floor configuration
//! for scripts, and a report made from JSON lines (the H200 kit's).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};

use super::floor::{self, FloorConfig};
use super::machine::Machine;
use super::random::RandomConfig;
use super::report::Report;
use super::sample::{self, Sample};
use super::suite::{self, SuiteConfig};
use super::table::render;
use super::uffd::Resolve;
use super::{memcpy, plot, BenchError};
use crate::herd::Mode;
use crate::size::parse_size;
use crate::supervisor::BootOptions;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub action: Option<BenchAction>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ModeArg {
    Touch,
    IncAll,
    Both,
}

impl ModeArg {
    fn modes(self) -> Vec<Mode> {
        match self {
            ModeArg::Touch => vec![Mode::Touch],
            ModeArg::IncAll => vec![Mode::IncAll],
            ModeArg::Both => vec![Mode::Touch, Mode::IncAll],
        }
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Tiny sizes and few reps: a smoke check that every number is
    /// computed and every word right (CI runs it), not a measurement.
    #[arg(long)]
    pub quick: bool,
    /// Herd buffer sizes, comma separated [default: 2M,64M; quick: 2M].
    #[arg(long, value_delimiter = ',')]
    pub size: Option<Vec<String>>,
    /// CPU thread counts [default: 1,2,4,8,16; quick: 1,2].
    #[arg(long, value_delimiter = ',')]
    pub threads: Option<Vec<usize>>,
    /// touch: the GPU adds 1 to each page's first word; inc-all: to every
    /// word (the CPU then checks the first and last word of each page).
    #[arg(long, value_enum, default_value_t = ModeArg::Both)]
    pub mode: ModeArg,
    /// Reps per configuration; each number is the median [default: 5; quick: 2].
    #[arg(long)]
    pub reps: Option<usize>,
    /// Write the whole report (samples, tables, ratios) as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Where the plot goes.
    #[arg(long, default_value = "target/bench")]
    pub plot_dir: PathBuf,
    /// The UVM herd's output (`bench/uvm_herd.cu`): shown beside ours.
    #[arg(long)]
    pub uvm: Option<PathBuf>,
    /// VRAM of the random-access system, MiB; 0 skips it [default: 256; quick: 16].
    #[arg(long)]
    pub random_vram_mib: Option<u64>,
    /// The random-access buffer as a multiple of that VRAM.
    #[arg(long, default_value_t = 4.0)]
    pub random_ratio: f64,
    /// GPU threads of the random job, 64 reads each [default: 64; quick: 16].
    #[arg(long)]
    pub random_gpu_threads: Option<u16>,
    /// The buffer whose per-page metadata is measured; 0 skips it
    /// [default: 128M; quick: 8M].
    #[arg(long)]
    pub meta_size: Option<String>,
    /// IPC round trips per batch (15 batches; quick: 3) [default: 2000; quick: 200].
    #[arg(long)]
    pub ipc_calls: Option<usize>,
}

#[derive(Subcommand, Debug)]
pub enum BenchAction {
    /// One floor configuration: prints one JSON line (the H200 kit's step).
    Floor {
        /// copy: one UFFDIO_COPY per chunk; minor: one UFFDIO_CONTINUE per
        /// chunk over page cache filled beforehand; memcpy: one thread's copy.
        #[arg(long, value_enum)]
        kind: FloorKind,
        #[arg(long, default_value = "2M")]
        size: String,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// touch or inc-all (what the buffer holds and the readers check).
        #[arg(long, value_enum, default_value_t = ModeArg::Touch)]
        mode: ModeArg,
        #[arg(long, default_value_t = 5)]
        reps: usize,
    },
    /// The tables and the plot from files of JSON lines (ours from `svm run
    /// herd --json`, floors from `svm bench floor`, UVM from its herd).
    Report {
        #[arg(required = true)]
        results: Vec<PathBuf>,
        #[arg(long)]
        uvm: Option<PathBuf>,
        #[arg(long)]
        json: Option<PathBuf>,
        #[arg(long, default_value = "target/bench")]
        plot_dir: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FloorKind {
    Copy,
    Minor,
    Memcpy,
}

/// The hidden helper processes the floors start.
#[derive(Subcommand, Debug)]
pub enum Helper {
    /// A floor's pager: holds the client's userfaultfd.
    FloorPager {
        #[arg(long)]
        control_fd: i32,
    },
    /// The bare round trip's peer.
    Echo {
        #[arg(long)]
        fd: i32,
    },
}

pub fn helper_main(h: Helper) -> i32 {
    match h {
        Helper::FloorPager { control_fd } => super::floor_pager::main(control_fd),
        Helper::Echo { fd } => super::ipc::echo_main(fd),
    }
}

fn usage(e: BenchError) -> i32 {
    eprintln!("svm bench: {e}");
    2
}

fn sizes(list: &[String]) -> Result<Vec<usize>, BenchError> {
    list.iter()
        .map(|s| {
            parse_size(s).ok_or_else(|| {
                BenchError::Config(format!("bad size {s:?} (a multiple of 4 KiB, like 2M)"))
            })
        })
        .collect()
}

pub fn main(args: BenchArgs, boot: BootOptions) -> i32 {
    let svm = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => return usage(BenchError::Host(format!("own executable: {e}"))),
    };
    match args.action {
        None => run(&svm, args.run, boot),
        Some(BenchAction::Floor {
            kind,
            size,
            threads,
            mode,
            reps,
        }) => one_floor(&svm, kind, &size, threads, mode, reps),
        Some(BenchAction::Report {
            results,
            uvm,
            json,
            plot_dir,
        }) => report_from_files(&results, uvm.as_deref(), json.as_deref(), &plot_dir),
    }
}

fn suite_config(a: &RunArgs, boot: BootOptions) -> Result<SuiteConfig, BenchError> {
    let q = a.quick;
    let pick = |quick: &str, full: &str| if q { quick } else { full }.to_string();
    let size_list = a
        .size
        .clone()
        .unwrap_or_else(|| pick("2M", "2M,64M").split(',').map(String::from).collect());
    let threads =
        a.threads
            .clone()
            .unwrap_or_else(|| if q { vec![1, 2] } else { vec![1, 2, 4, 8, 16] });
    let reps = a.reps.unwrap_or(if q { 2 } else { 5 });
    if threads.iter().any(|t| *t == 0 || *t > 1024) || reps == 0 || reps > 1000 {
        return Err(BenchError::Config(
            "threads must be 1..=1024 and reps 1..=1000".into(),
        ));
    }
    if !(a.random_ratio > 0.0 && a.random_ratio <= 64.0) {
        return Err(BenchError::Config(
            "--random-ratio must be in (0, 64]".into(),
        ));
    }
    let meta = a.meta_size.clone().unwrap_or_else(|| pick("8M", "128M"));
    let meta_bytes = if meta == "0" { 0 } else { sizes(&[meta])?[0] };
    let random_mib = a.random_vram_mib.unwrap_or(if q { 16 } else { 256 });
    let uvm = match &a.uvm {
        Some(p) => uvm_samples(p)?,
        None => Vec::new(),
    };
    Ok(SuiteConfig {
        sizes: sizes(&size_list)?,
        threads,
        modes: a.mode.modes(),
        reps,
        ipc_reps: if q { 3 } else { 15 },
        ipc_calls: a.ipc_calls.unwrap_or(if q { 200 } else { 2000 }).max(1),
        meta_bytes,
        random_vram_bytes: random_mib
            .checked_mul(1 << 20)
            .ok_or_else(|| BenchError::Config("--random-vram-mib too large".into()))?,
        random: RandomConfig {
            ratio: a.random_ratio,
            gpu_threads: a.random_gpu_threads.unwrap_or(if q { 16 } else { 64 }),
            hw_threads: boot.device.hw_threads,
            seed: 0x5eed,
        },
        boot,
        uvm,
    })
}

/// The UVM herd's lines in `path` (tagged `"impl":"uvm"`; other lines,
/// such as the kit's floors and ours in the same file, are left out).
fn uvm_samples(path: &Path) -> Result<Vec<Sample>, BenchError> {
    let uvm: Vec<Sample> = sample::read_lines(path)?
        .into_iter()
        .filter(|s| s.imp == sample::Impl::Uvm)
        .collect();
    if uvm.is_empty() {
        return Err(BenchError::Config(format!(
            "{}: no UVM herd lines (\"impl\":\"uvm\") in it",
            path.display()
        )));
    }
    Ok(uvm)
}

fn run(svm: &Path, a: RunArgs, boot: BootOptions) -> i32 {
    let cfg = match suite_config(&a, boot) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let report = suite::run(svm, &cfg);
    finish(report, a.json.as_deref(), &a.plot_dir)
}

/// Prints the tables, writes the JSON and the plot; 0 only if every
/// number came and every word was right.
fn finish(mut report: Report, json: Option<&Path>, plot_dir: &Path) -> i32 {
    let plot = if report.herd.is_empty() {
        None
    } else {
        match plot::herd_per_page(&report.herd, plot_dir) {
            Ok(p) => Some(p),
            Err(e) => {
                report.errors.push(e.to_string());
                None
            }
        }
    };
    if let Some(path) = json {
        let written = serde_json::to_string_pretty(&report)
            .map_err(|e| e.to_string())
            .and_then(|s| std::fs::write(path, s + "\n").map_err(|e| e.to_string()));
        if let Err(e) = written {
            report.errors.push(format!("{}: {e}", path.display()));
        }
    }
    print!("{}", render(&report));
    if let Some(p) = plot {
        println!("plot: {}", p.display());
    }
    if report.ok() {
        0
    } else {
        1
    }
}

fn one_floor(
    svm: &Path,
    kind: FloorKind,
    size: &str,
    threads: usize,
    mode: ModeArg,
    reps: usize,
) -> i32 {
    let Some(bytes) = parse_size(size) else {
        return usage(BenchError::Config(format!("bad size {size:?}")));
    };
    let mode = match mode {
        ModeArg::Touch => Mode::Touch,
        ModeArg::IncAll => Mode::IncAll,
        ModeArg::Both => return usage(BenchError::Config("one mode per floor run".into())),
    };
    if threads == 0 || threads > 1024 || reps == 0 || reps > 1000 {
        return usage(BenchError::Config("threads 1..=1024, reps 1..=1000".into()));
    }
    let resolve = |resolve| {
        floor::run(
            svm,
            &FloorConfig {
                resolve,
                mode,
                bytes,
                threads,
                reps,
            },
        )
    };
    let sample = match kind {
        FloorKind::Copy => resolve(Resolve::Copy),
        FloorKind::Minor => resolve(Resolve::Minor),
        FloorKind::Memcpy => memcpy::sample(mode, bytes, threads, reps),
    };
    match sample.and_then(|s| {
        serde_json::to_string(&s)
            .map(|line| (line, s.bad))
            .map_err(|e| BenchError::Io(e.to_string()))
    }) {
        Ok((line, bad)) => {
            println!("{line}");
            i32::from(bad > 0)
        }
        Err(e) => {
            eprintln!("svm bench floor: {e}");
            1
        }
    }
}

fn report_from_files(
    results: &[PathBuf],
    uvm: Option<&Path>,
    json: Option<&Path>,
    plot_dir: &Path,
) -> i32 {
    let mut samples = Vec::new();
    for p in results {
        match sample::read_lines(p) {
            Ok(s) => samples.extend(s),
            Err(e) => return usage(e),
        }
    }
    if let Some(u) = uvm {
        match uvm_samples(u) {
            Ok(s) => samples.extend(s),
            Err(e) => return usage(e),
        }
    }
    if samples.is_empty() {
        return usage(BenchError::Config("no samples in the files given".into()));
    }
    let mut machine = Machine::now();
    machine.finish();
    finish(Report::new(machine, None, samples), json, plot_dir)
}
