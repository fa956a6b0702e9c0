//! `svm run FILE|DIR [--filter PATTERN] [--list] [--json] [--long]
//! [--jobs N] [--write-table FILE] [--check-table FILE]`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

use super::expand::{load, scenario_files, Instance};
use super::report::Reporter;
use super::runner::{self, Outcome, Verdict};
use super::{run_here, table};

#[derive(Parser, Debug)]
#[command(name = "svm run", about = "Run scenario files (docs/scenarios.md)")]
struct Args {
    /// A scenario file, or a directory of them (walked in name order).
    path: PathBuf,
    /// Run only scenarios whose name contains PATTERN (repeatable: any).
    #[arg(long, value_name = "PATTERN")]
    filter: Vec<String>,
    /// List the scenarios that would run, and run nothing.
    #[arg(long)]
    list: bool,
    /// One JSON object per scenario, then one with the totals.
    #[arg(long)]
    json: bool,
    /// The larger sizes (`[long.params]`) and the matrix values left out
    /// of the CI-sized set.
    #[arg(long)]
    long: bool,
    /// Scenarios run at once, each in its own process and system.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Write the conformance table of this run to FILE (DIR runs only).
    #[arg(long, value_name = "FILE")]
    write_table: Option<PathBuf>,
    /// Fail if FILE is not the conformance table of this run.
    #[arg(long, value_name = "FILE")]
    check_table: Option<PathBuf>,
    /// Run the named scenario of FILE in this process (the runner starts
    /// one such process per scenario).
    #[arg(long, hide = true)]
    child: Option<String>,
}

/// The entry point; `args` are what follows `svm run`.
pub fn main(args: &[String]) -> i32 {
    let argv = std::iter::once("svm run".to_string()).chain(args.iter().cloned());
    let args = match Args::try_parse_from(argv) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    if let Some(name) = &args.child {
        return child(&args.path, name, args.long);
    }
    if args.jobs == 0 || args.jobs > 16 {
        eprintln!("svm run: --jobs 1 to 16");
        return 2;
    }
    let tables = args.write_table.is_some() || args.check_table.is_some();
    if tables && (!args.path.is_dir() || !args.filter.is_empty() || args.long) {
        eprintln!(
            "svm run: tables come from a whole CI-sized run of a directory (no --filter, --long)"
        );
        return 2;
    }
    let (all, load_failures) = load_all(&args.path, args.long);
    let chosen: Vec<&Instance> = all
        .iter()
        .filter(|i| args.long || i.ci)
        .filter(|i| args.filter.is_empty() || args.filter.iter().any(|f| i.name.contains(f)))
        .collect();
    if args.list {
        for f in &load_failures {
            eprintln!("svm run: {}", f.problems.join("; "));
        }
        for i in &chosen {
            let x = i.expect_failure.as_ref().map_or(String::new(), |x| {
                format!("  [expected failure: issue {} {}]", x.issue, x.feature)
            });
            println!("{}{x}", i.name);
        }
        return i32::from(!load_failures.is_empty());
    }
    let outcomes = run_all(&chosen, &args, load_failures);
    let failed = outcomes
        .iter()
        .filter(|o| o.verdict == Verdict::Fail)
        .count();
    let mut table_ok = true;
    if tables {
        table_ok = tables_step(&args, &all, &outcomes);
    }
    if failed == 0 && table_ok {
        0
    } else {
        1
    }
}

/// Every instance under `path`, and a failed outcome per file that does
/// not load (or name used twice).
fn load_all(path: &Path, long: bool) -> (Vec<Instance>, Vec<Outcome>) {
    let mut all = Vec::new();
    let mut failures = Vec::new();
    let files = match scenario_files(path) {
        Ok(f) => f,
        Err(e) => return (all, vec![load_failure(path, e)]),
    };
    for f in files {
        match load(&f, long) {
            Ok(v) => all.extend(v),
            Err(e) => failures.push(load_failure(&f, e)),
        }
    }
    let mut seen = std::collections::HashSet::new();
    for i in &all {
        if !seen.insert(i.name.clone()) {
            failures.push(load_failure(
                &i.file,
                format!("scenario name {} used twice", i.name),
            ));
        }
    }
    (all, failures)
}

fn load_failure(file: &Path, e: String) -> Outcome {
    Outcome {
        name: file.display().to_string(),
        file: file.display().to_string(),
        covers: vec![],
        ci: true,
        verdict: Verdict::Fail,
        expect_failure: None,
        checks: vec![],
        problems: vec![e],
        elapsed_s: 0.0,
        stderr_tail: String::new(),
    }
}

fn run_all(chosen: &[&Instance], args: &Args, mut outcomes: Vec<Outcome>) -> Vec<Outcome> {
    for o in &outcomes {
        print_outcome(o, args.json, None);
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("svm run: where am I? {e}");
            return outcomes;
        }
    };
    let bar = (chosen.len() > 1).then(|| {
        let b = ProgressBar::new(chosen.len() as u64);
        b.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    });
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<Outcome>();
    let printed = Mutex::new(());
    std::thread::scope(|s| {
        for _ in 0..args.jobs.min(chosen.len().max(1)) {
            let tx = tx.clone();
            let (next, exe, bar) = (&next, &exe, &bar);
            s.spawn(move || loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(inst) = chosen.get(k) else { return };
                if let Some(b) = bar {
                    b.set_message(inst.name.clone());
                }
                if tx.send(runner::run(exe, inst, args.long)).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        for o in rx {
            let _g = printed.lock();
            print_outcome(&o, args.json, bar.as_ref());
            if let Some(b) = &bar {
                b.inc(1);
            }
            outcomes.push(o);
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let count = |v: Verdict| outcomes.iter().filter(|o| o.verdict == v).count();
    let (p, f, x) = (
        count(Verdict::Pass),
        count(Verdict::Fail),
        count(Verdict::ExpectedFailure),
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "passed": p, "failed": f, "expected_failures": x })
        );
    } else {
        println!("{p} passed, {f} failed, {x} expected failures");
    }
    outcomes
}

fn print_outcome(o: &Outcome, json: bool, bar: Option<&ProgressBar>) {
    let text = if json {
        serde_json::to_string(o).unwrap_or_default()
    } else {
        let mut t = String::new();
        for c in &o.checks {
            t += &format!(
                "{}  {}  {}\n",
                o.name,
                if c.ok { "ok  " } else { "FAIL" },
                c.what
            );
        }
        for p in &o.problems {
            t += &format!("{}  FAIL  {p}\n", o.name);
        }
        let v = match o.verdict {
            Verdict::Pass => "PASS".to_string(),
            Verdict::Fail => "FAIL".to_string(),
            Verdict::ExpectedFailure => {
                let x = o.expect_failure.as_ref().expect("marked");
                format!("EXPECTED FAILURE (issue {}: {})", x.issue, x.feature)
            }
        };
        t += &format!(
            "{v}  {}  ({} checks, {:.2} s)",
            o.name,
            o.checks.len(),
            o.elapsed_s
        );
        t
    };
    let show = || {
        println!("{text}");
        let _ = std::io::stdout().flush();
        if o.verdict == Verdict::Fail && !o.stderr_tail.is_empty() && !json {
            eprintln!(
                "--- {}: the end of its stderr ---\n{}",
                o.name, o.stderr_tail
            );
        }
    };
    match bar {
        Some(b) => b.suspend(show),
        None => show(),
    }
}

fn tables_step(args: &Args, all: &[Instance], outcomes: &[Outcome]) -> bool {
    let cat_path = args.path.join("_catalogue.toml");
    let cat = match table::load_catalogue(&cat_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("svm run: {e}");
            return false;
        }
    };
    let gaps = table::gaps(&cat, all);
    for g in &gaps {
        eprintln!("svm run: conformance table: {g}");
    }
    let text = table::render(&cat, all, outcomes);
    if let Some(p) = &args.write_table {
        if let Err(e) = std::fs::write(p, &text) {
            eprintln!("svm run: {}: {e}", p.display());
            return false;
        }
        eprintln!("svm run: wrote {}", p.display());
    }
    if let Some(p) = &args.check_table {
        let have = std::fs::read_to_string(p).unwrap_or_default();
        if have != text {
            let first = have
                .lines()
                .zip(text.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(have.lines().count().min(text.lines().count()));
            eprintln!(
                "svm run: {} is stale (first difference at line {}): this run writes\n  {}\n\
                 regenerate it with `svm run {} --write-table {}`",
                p.display(),
                first + 1,
                text.lines().nth(first).unwrap_or("(end of file)"),
                args.path.display(),
                p.display()
            );
            return false;
        }
    }
    gaps.is_empty()
}

/// `--child`: runs one scenario here, events on stdout.
fn child(file: &Path, name: &str, long: bool) -> i32 {
    let all = match load(file, long) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("svm run: {e}");
            return 2;
        }
    };
    let Some(inst) = all.iter().find(|i| i.name == name) else {
        eprintln!("svm run: no scenario {name:?} in {}", file.display());
        return 2;
    };
    // Events go to the runner on our stdout; the servers we start inherit
    // fd 1 and print there too, so they get our stderr instead.
    use std::os::fd::AsFd;
    let events = match rustix::io::dup(std::io::stdout().as_fd()) {
        Ok(fd) => std::fs::File::from(fd),
        Err(e) => {
            eprintln!("svm run: dup: {e}");
            return 2;
        }
    };
    unsafe extern "C" {
        fn dup2(old: i32, new: i32) -> i32;
    }
    // SAFETY: points fd 1 at what fd 2 is; `events` keeps the old stdout.
    if unsafe { dup2(2, 1) } < 0 {
        eprintln!("svm run: dup2: {}", std::io::Error::last_os_error());
        return 2;
    }
    run_here::run(inst, Reporter::to_file(events));
    0
}
