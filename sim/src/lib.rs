//! A deterministic simulation of the whole system in one process (issue 8).
//!
//! The pager's core (`pager::state`, `pager::migrate`), the GPU server's
//! core (`xe_svm::server`, `xe_svm::views`, the VRAM allocator, the BO
//! world of `xe_svm::bo` and the session end of `xe_svm::end`; one per
//! GPU where a world has several, `gpus.rs`) and mm-server's eviction
//! pass and accounting run unchanged, on shuttle's primitives through
//! their sync shims. Around them, simulated pieces:
//! the device (`machine.rs`: memory, the copy engine, GPU page tables and
//! TLB, the CPU's view mappings), the endpoints that carry calls between
//! servers (`net.rs`: delivery reordered and delayed), and actors that play
//! CPU threads, GPU hardware threads, mm-server's loop and view changes
//! (`scenarios.rs`). Faults are injected: slow copies and failed copies,
//! late fault replies, a peer that dies.
//!
//! Every run is driven by shuttle's seeded schedulers (random and PCT): a
//! seed fixes every scheduling choice and every random choice, so a failing
//! seed fails again the same way, and shuttle prints the failing schedule,
//! which `sim --replay` replays step by step.

pub mod advice;
pub mod fresh_pages;
pub mod gpus;
pub mod hostile;
pub mod hostile_bo;
pub mod link;
pub mod machine;
pub mod negative;
pub mod net;
pub mod pager;
pub mod pager_restart;
pub mod platform;
pub mod protect;
pub mod replay_log;
pub mod restart;
pub mod scenarios;
pub mod several_gpus;
pub mod split;
pub mod thrash;
pub mod world;

use shuttle::scheduler::{PctScheduler, RandomScheduler};
use shuttle::{Config, FailurePersistence, MaxSteps, Runner};

/// The GPU server's core, on the simulated platform.
pub type GpuCore = xe_svm::server::Inner<platform::SimPlatform>;

/// Scheduling steps one schedule may take: a run that needs more has a
/// fault that never completes (a livelock), and fails.
pub const STEP_BOUND: usize = 300_000;

/// PCT's bug depth.
pub const PCT_DEPTH: usize = 3;

/// Schedules run, by scheduler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Explored {
    pub random: usize,
    pub pct: usize,
}

fn config(print_failures: bool) -> Config {
    let mut c = Config::new();
    c.max_steps = MaxSteps::FailAfter(STEP_BOUND);
    // Its warning: atomics are explored as SeqCst. The cores use
    // Acquire/Release; what weaker orderings allow is not explored here.
    c.silence_warnings = true;
    c.failure_persistence = if print_failures {
        FailurePersistence::Print
    } else {
        FailurePersistence::None
    };
    c
}

/// Runs `scenario` under `random` random schedules and `pct` PCT
/// schedules from `seed`. Panics (after shuttle printed the schedule) on
/// the first schedule that breaks a property.
pub fn explore(scenario: fn(), seed: u64, random: usize, pct: usize) -> Explored {
    let random = if random > 0 {
        Runner::new(RandomScheduler::new_from_seed(seed, random), config(true)).run(scenario)
    } else {
        0
    };
    let pct = if pct > 0 {
        Runner::new(
            PctScheduler::new_from_seed(seed, PCT_DEPTH, pct),
            config(true),
        )
        .run(scenario)
    } else {
        0
    };
    Explored { random, pct }
}

/// Replays one schedule shuttle printed for a failure.
pub fn replay(scenario: fn(), schedule: &str) {
    shuttle::replay(scenario, schedule);
}

/// For the negative checks: whether some schedule among `iterations`
/// random ones (from `seed`) breaks a property of `scenario`.
pub fn finds_a_failure(scenario: fn(), seed: u64, iterations: usize) -> bool {
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let found = std::panic::catch_unwind(|| {
        Runner::new(
            RandomScheduler::new_from_seed(seed, iterations),
            config(false),
        )
        .run(scenario)
    })
    .is_err();
    std::panic::set_hook(quiet);
    found
}

/// The index of the first of `iterations` random schedules from `seed`
/// that fails, if any: a seed reproduces its failures exactly.
pub fn first_failing_iteration(scenario: fn(), seed: u64, iterations: usize) -> Option<usize> {
    (0..iterations).find(|&i| {
        let quiet = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        // One schedule: the `i`-th of the seed's sequence.
        let r = std::panic::catch_unwind(|| {
            Runner::new(RandomScheduler::new_from_seed(seed, i + 1), config(false)).run(scenario)
        });
        std::panic::set_hook(quiet);
        r.is_err()
    })
}
