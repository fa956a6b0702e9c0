//! `sim`: explores the scenarios of the whole-system simulation under
//! seeded random and PCT schedules, runs the negative checks, and prints
//! how many schedules each got. `--long` is for the benchmark machine.

use std::time::Instant;

use clap::Parser;

#[derive(Parser)]
#[command(about = "Deterministic simulation of xe-svm: schedule exploration of the whole system")]
struct Args {
    /// Schedules per scenario and scheduler (random and PCT each).
    #[arg(long, default_value_t = 300)]
    iterations: usize,
    /// Many more schedules (20,000 per scenario and scheduler).
    #[arg(long)]
    long: bool,
    /// The seed of both schedulers: the same seed explores the same schedules.
    #[arg(long, default_value_t = 0x5eed)]
    seed: u64,
    /// Only these scenarios (by name; see --list).
    #[arg(long)]
    scenario: Vec<String>,
    /// Replay one schedule shuttle printed for a failure of `--scenario`.
    #[arg(long)]
    replay: Option<String>,
    /// Skip the negative checks.
    #[arg(long)]
    no_negative: bool,
    /// With --replay: print the servers' log lines at this level and
    /// above, each with the task that wrote it.
    #[arg(long)]
    log: Option<log::LevelFilter>,
    #[arg(long)]
    list: bool,
}

fn main() {
    let a = Args::parse();
    let scenarios = sim::scenarios::all();
    if a.list {
        for s in &scenarios {
            println!("{:28} {}", s.name, s.about);
        }
        for (name, about, _) in sim::negative::all() {
            println!("{name:28} (negative) {about}");
        }
        return;
    }
    // A negative check named explicitly runs like a scenario (to see its
    // failure and replay it).
    let negatives: Vec<sim::scenarios::Scenario> = sim::negative::all()
        .into_iter()
        .map(|(name, about, run)| sim::scenarios::Scenario { name, about, run })
        .collect();
    let chosen: Vec<_> = scenarios
        .iter()
        .filter(|s| a.scenario.is_empty() || a.scenario.iter().any(|n| n == s.name))
        .chain(
            negatives
                .iter()
                .filter(|s| a.scenario.iter().any(|n| n == s.name)),
        )
        .collect();
    if let Some(schedule) = &a.replay {
        let [s] = chosen.as_slice() else {
            eprintln!("sim: --replay needs exactly one --scenario");
            std::process::exit(2);
        };
        if let Some(level) = a.log {
            sim::replay_log::install(level);
        }
        sim::replay(s.run, schedule);
        println!("{}: the schedule passes", s.name);
        return;
    }
    let n = if a.long { 20_000 } else { a.iterations };
    println!("# sim: seed {:#x}, {n} random + {n} PCT (depth {}) schedules per scenario, at most {} steps each", a.seed, sim::PCT_DEPTH, sim::STEP_BOUND);
    let (mut total, t0) = (0, Instant::now());
    for (i, s) in chosen.iter().enumerate() {
        eprintln!("sim: [{}/{}] {} ...", i + 1, chosen.len(), s.name);
        let t = Instant::now();
        let e = sim::explore(s.run, a.seed, n, n);
        total += e.random + e.pct;
        println!(
            "{:28} random {:6}  pct {:6}  {:7.1} s  ok  ({})",
            s.name,
            e.random,
            e.pct,
            t.elapsed().as_secs_f64(),
            s.about
        );
    }
    let mut failed = false;
    if !a.no_negative && a.scenario.is_empty() {
        for (name, about, run) in sim::negative::all() {
            let t = Instant::now();
            let found = sim::finds_a_failure(run, a.seed, n);
            println!(
                "{name:28} negative check: {}  {:7.1} s  ({about})",
                if found {
                    "failure found, as it must be"
                } else {
                    "NOT FOUND"
                },
                t.elapsed().as_secs_f64()
            );
            failed |= !found;
        }
    }
    println!(
        "# {total} schedules in {:.1} s, every property held",
        t0.elapsed().as_secs_f64()
    );
    if failed {
        eprintln!("sim: a negative check found nothing: the checker lost the ability to fail");
        std::process::exit(1);
    }
}
