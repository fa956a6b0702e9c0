//! `svm run chaos` (issue 14): servers killed at random points while
//! workloads run with every word checked. A workload thread runs the herd,
//! an oversubscription pass with buffer objects, the mremap race and the
//! fork race in turn; a probe thread does one GPU-fault-then-CPU-fault
//! round trip after another and timestamps each; the calling thread
//! SIGKILLs a named server every `--every` (jittered 0.5x to 1.5x, so
//! kills land in collects, copies and evictions alike) and waits for its
//! next generation.
//!
//! The verdict line is `restarts=N longest_wait_ms=N bad=N`. A run fails
//! on a bad word, a workload error, a server not back within the bound,
//! or a probe that waited longer than the bound (no client waits longer
//! than [`BOUND`]). Only servers the supervisor restarts can be named
//! (`manifest::RESTARTABLE`); naming another is refused before booting
//! anything, since its death would stop the system.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::herd::{self, Mode};
use crate::oversub;
use crate::supervisor::{Clients, System};
use crate::views::{self, ForkConfig, MremapConfig};

/// The longest a client may wait for a fault, and a killed server for its
/// next generation: the pager's fault deadline (a fault that cannot be
/// served ends with SIGBUS after 10 s, issue 14) with slack.
pub const BOUND: Duration = Duration::from_secs(15);

/// A server `--kill` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Gpu,
    Pager,
    Mm,
}

impl Target {
    /// The supervisor's name for it.
    pub fn process(self) -> &'static str {
        match self {
            Self::Gpu => "xe-svm",
            Self::Pager => "pager",
            Self::Mm => "mm-server",
        }
    }

    /// `gpu,pager,mm` (at least one, no repeats).
    pub fn parse_list(s: &str) -> Result<Vec<Self>, String> {
        let mut v = Vec::new();
        for name in s.split(',').map(str::trim) {
            let t = match name {
                "gpu" => Self::Gpu,
                "pager" => Self::Pager,
                "mm" => Self::Mm,
                other => return Err(format!("unknown server {other:?} (gpu, pager, mm)")),
            };
            if v.contains(&t) {
                return Err(format!("{name} named twice"));
            }
            v.push(t);
        }
        Ok(v)
    }
}

/// The `--kill` list, as one command-line value.
#[derive(Debug, Clone)]
pub struct Targets(pub Vec<Target>);

pub fn parse_targets(s: &str) -> Result<Targets, String> {
    Target::parse_list(s).map(Targets)
}

/// `500ms`, `2s`, `1m`: a whole number and a unit, at most an hour.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: a number and ms, s or m"))?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        _ => None,
    }
    .ok_or_else(|| format!("{s:?}: a number and ms, s or m"))?;
    if ms == 0 || ms > 3_600_000 {
        return Err(format!("{s:?}: between 1ms and 1h"));
    }
    Ok(Duration::from_millis(ms))
}

#[derive(Debug, Clone)]
pub struct Config {
    pub kill: Vec<Target>,
    pub every: Duration,
    pub run_for: Duration,
    /// Seeds the kill times and targets (printed, so a run repeats).
    pub seed: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub kills: u64,
    /// Kills left out so as not to trip the supervisor's crash-loop limit.
    pub skipped: u64,
    pub restarts: u64,
    /// Kill to the next generation running, per kill.
    pub restart_ms: Vec<f64>,
    /// Kill to the first probe round trip completed after it, per kill.
    pub recovery_ms: Vec<f64>,
    /// The longest gap between probe round trips (or from the start).
    pub longest_wait_ms: f64,
    pub bad: u64,
    pub workload_rounds: u64,
    /// Workloads and probes that failed because the GPU server or the
    /// pager was restarted while they ran (their words still checked).
    pub interrupted: u64,
    pub probes: u64,
    /// How long each workload took, per round, by name (milliseconds): a
    /// run with few rounds says which one was slow.
    pub workload_ms: Vec<(&'static str, Vec<f64>)>,
    pub errors: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.bad == 0
            && self.errors.is_empty()
            && self.longest_wait_ms <= BOUND.as_secs_f64() * 1e3
            && self.restarts == self.kills
    }

    /// The verdict line (issue 14's format).
    pub fn line(&self) -> String {
        format!(
            "restarts={} longest_wait_ms={:.0} bad={}",
            self.restarts, self.longest_wait_ms, self.bad
        )
    }
}

/// `median M ms, max N ms` of a list of milliseconds (`-` when empty).
pub fn summary(v: &[f64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let mut sorted = v.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let max = sorted[sorted.len() - 1];
    format!("median {median:.0} ms, max {max:.0} ms")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChaosError {
    /// The supervisor does not restart this server (yet: issue 14).
    NotRestartable(&'static str),
}

impl std::fmt::Display for ChaosError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotRestartable(p) => write!(
                f,
                "{p} is not restarted by the supervisor yet (issue 14): \
                 killing it stops the system; --kill mm,gpu is what restarts today"
            ),
        }
    }
}

/// Refuses targets whose death the supervisor does not survive.
pub fn check_targets(kill: &[Target]) -> Result<(), ChaosError> {
    match kill
        .iter()
        .find(|t| !crate::manifest::RESTARTABLE.contains(&t.process()))
    {
        Some(t) => Err(ChaosError::NotRestartable(t.process())),
        None => Ok(()),
    }
}

/// xorshift64*: the run's only randomness, from `seed`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// What the threads share while the run goes on.
struct Shared {
    stop: AtomicBool,
    bad: AtomicU64,
    rounds: AtomicU64,
    probes: Mutex<Vec<Instant>>,
    errors: Mutex<Vec<String>>,
    /// Bumped when a kill of the GPU server or the pager starts and when
    /// its next generation serves: a round that saw it change may have had
    /// a call fail `PeerRestarted`, or lost its jobs and buffer objects
    /// with the GPU server ([`Shared::failed`]).
    restart_epoch: AtomicU64,
    interrupted: AtomicU64,
    /// Each workload's time per round ([`Report::workload_ms`]).
    workload_ms: Mutex<Vec<(&'static str, Vec<f64>)>>,
    /// The mremap race holds it exclusively, the probe shared: the race's
    /// readers read the moved range's old addresses, which the kernel
    /// unmaps at the move and may hand to the next mapping any thread of
    /// this process makes (the probe's buffers, its allocations). A read
    /// there would see that mapping's data and count it as wrong words.
    mappings: std::sync::RwLock<()>,
}

impl Shared {
    /// A workload that failed: an error, unless the GPU server or the
    /// pager was restarted while it ran (since `epoch`). A call the old
    /// process took and did not answer fails `PeerRestarted` unless it is
    /// idempotent; the GPU server's jobs and buffer objects went with it
    /// (`NoSuchBo`, `DeviceReset`). So the round is counted as
    /// interrupted. Wrong words are never excused: they are
    /// counted as bad either way.
    fn failed(&self, epoch: u64, what: String) {
        if interrupted_by_restart(epoch, self.restart_epoch.load(Ordering::Acquire)) {
            log::info!("chaos: interrupted by a restart: {what}");
            self.interrupted.fetch_add(1, Ordering::Relaxed);
        } else {
            self.error(what);
        }
    }

    fn error(&self, what: String) {
        log::error!("chaos: {what}");
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(what);
    }
}

/// Whether a workload that began at restart epoch `then` and failed at
/// `now` may have met a restart: one began or ended since (`now` moved),
/// or one was under way when it began (`then` odd: the epoch is bumped
/// when a kill starts and again when the next generation serves, so a
/// call made in between may fail `PeerRestarted` before the second bump).
fn interrupted_by_restart(then: u64, now: u64) -> bool {
    now != then || then % 2 == 1
}

/// Runs workload `name`, its time noted ([`Shared::workload_ms`]).
fn timed<T>(s: &Shared, name: &'static str, f: impl FnOnce() -> T) -> (&'static str, T) {
    let t = Instant::now();
    let r = f();
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let mut all = s.workload_ms.lock().unwrap_or_else(|p| p.into_inner());
    match all.iter_mut().find(|(n, _)| *n == name) {
        Some((_, v)) => v.push(ms),
        None => all.push((name, vec![ms])),
    }
    (name, r)
}

/// Runs `f` with no probe making mappings meanwhile ([`Shared::mappings`]).
fn alone<T>(s: &Shared, f: impl FnOnce() -> T) -> T {
    let waited = Instant::now();
    let _alone = s.mappings.write().unwrap_or_else(|p| p.into_inner());
    if waited.elapsed() > Duration::from_millis(300) {
        log::warn!(
            "chaos: waited {} ms for the probe",
            waited.elapsed().as_millis()
        );
    }
    f()
}

/// One round of every workload; words found wrong are added to `bad`.
fn workload_round(c: &Clients, s: &Shared) {
    let epoch = s.restart_epoch.load(Ordering::Acquire);
    let herd = herd::Config {
        mode: Mode::Touch,
        bytes: 1 << 20,
        threads: 4,
        reps: 1,
        gpu_threads: 16,
        same_start: false,
        gpus: 1,
    };
    let oversub = oversub::Config {
        ratio: 1.5,
        passes: 1,
        bos: 4,
        ..Default::default()
    };
    let mremap = MremapConfig {
        bytes: 256 << 10,
        dontunmap: false,
        readers: 2,
    };
    let fork = ForkConfig {
        bytes: 256 << 10,
        readers: 2,
        kernels: 2,
        child_rounds: 1,
    };
    let results: [(&str, Result<u64, String>); 4] = [
        timed(s, "herd", || {
            herd::run(c, &herd)
                .map(|r| r.bad)
                .map_err(|e| e.to_string())
        }),
        timed(s, "oversub", || {
            oversub::run(c, &oversub)
                .map(|r| r.bad_pages + r.bad_bos)
                .map_err(|e| e.to_string())
        }),
        timed(s, "mremap", || {
            alone(s, || views::mremap_race(&c.own, &mremap))
                .map(|r| r.bad_words)
                .map_err(|e| e.to_string())
        }),
        timed(s, "fork", || {
            views::fork_race(&c.own, &fork)
                .map(|r| r.bad_words + r.child_bad)
                .map_err(|e| e.to_string())
        }),
    ];
    for (name, r) in results {
        match r {
            Ok(bad) => {
                if bad > 0 {
                    log::error!("chaos: {name}: {bad} bad word(s)");
                }
                s.bad.fetch_add(bad, Ordering::Relaxed);
            }
            Err(e) => s.failed(epoch, format!("{name}: {e}")),
        }
    }
    s.rounds.fetch_add(1, Ordering::Relaxed);
}

/// One page to VRAM by a GPU fault and back by CPU faults, checked.
fn probe(c: &Clients, s: &Shared) {
    let epoch = s.restart_epoch.load(Ordering::Acquire);
    let _no_mremap_race = s.mappings.read().unwrap_or_else(|p| p.into_inner());
    let cfg = herd::Config {
        mode: Mode::Touch,
        bytes: 4 << 12,
        threads: 1,
        reps: 1,
        gpu_threads: 1,
        same_start: false,
        gpus: 1,
    };
    match herd::run(c, &cfg) {
        Ok(r) => {
            if r.bad > 0 {
                log::error!("chaos: probe: {} bad page(s)", r.bad);
            }
            s.bad.fetch_add(r.bad, Ordering::Relaxed);
            s.probes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Instant::now());
        }
        Err(e) => s.failed(epoch, format!("probe: {e}")),
    }
}

/// Whether killing `name` now would be one restart too many for the
/// supervisor's crash-loop policy (`process::MAX_RESTARTS` within
/// `RESTART_WINDOW`, after which it gives the server up): chaos tests
/// recovery, not the give-up, so such a kill is skipped.
fn would_trip_the_crash_loop_limit(kills: &[(&'static str, Instant)], name: &str) -> bool {
    let window = crate::process::RESTART_WINDOW;
    let recent = kills
        .iter()
        .filter(|(n, at)| *n == name && at.elapsed() < window)
        .count();
    recent + 1 >= crate::process::MAX_RESTARTS
}

/// Kills `name`, waits for its next generation; the time it took.
fn kill_one(system: &mut System, name: &'static str) -> Result<(Instant, f64), String> {
    let generation = system.generation(name).unwrap_or(1);
    let at = Instant::now();
    system
        .kill(name)
        .map_err(|e| format!("killing {name}: {e}"))?;
    if !system.wait_generation(name, generation + 1, BOUND) {
        return Err(format!("{name} was not back within {BOUND:?}"));
    }
    Ok((at, at.elapsed().as_secs_f64() * 1e3))
}

/// Longest gap between consecutive probes (from `start`, to `end`), and
/// per kill the time to the first probe after it.
fn waits(start: Instant, end: Instant, probes: &[Instant], kills: &[Instant]) -> (f64, Vec<f64>) {
    let mut last = start;
    let mut longest = 0f64;
    for &p in probes.iter().chain(std::iter::once(&end)) {
        longest = longest.max(p.saturating_duration_since(last).as_secs_f64() * 1e3);
        last = last.max(p);
    }
    let recovery = kills
        .iter()
        .filter_map(|&k| {
            probes
                .iter()
                .find(|&&p| p > k)
                .map(|&p| (p - k).as_secs_f64() * 1e3)
        })
        .collect();
    (longest, recovery)
}

/// Runs the chaos on a booted system.
pub fn run(system: &mut System, c: &Clients, cfg: &Config) -> Result<Report, ChaosError> {
    check_targets(&cfg.kill)?;
    let s = Shared {
        stop: AtomicBool::new(false),
        bad: AtomicU64::new(0),
        rounds: AtomicU64::new(0),
        probes: Mutex::new(Vec::new()),
        errors: Mutex::new(Vec::new()),
        restart_epoch: AtomicU64::new(0),
        interrupted: AtomicU64::new(0),
        workload_ms: Mutex::default(),
        mappings: std::sync::RwLock::new(()),
    };
    let mut rng = Rng(cfg.seed | 1);
    let mut report = Report::default();
    let mut kill_times = Vec::new();
    let mut killed: Vec<(&'static str, Instant)> = Vec::new();
    let start = Instant::now();
    let deadline = start + cfg.run_for;
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !s.stop.load(Ordering::Acquire) {
                workload_round(c, &s);
            }
        });
        scope.spawn(|| {
            while !s.stop.load(Ordering::Acquire) {
                probe(c, &s);
            }
        });
        loop {
            let jitter = 0.5 + (rng.next() % 1001) as f64 / 1000.0;
            let next = Instant::now() + cfg.every.mul_f64(jitter);
            if next >= deadline {
                std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
                break;
            }
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            let name = cfg.kill[(rng.next() % cfg.kill.len() as u64) as usize].process();
            if would_trip_the_crash_loop_limit(&killed, name) {
                report.skipped += 1;
                continue;
            }
            report.kills += 1;
            // mm-server's callers retry or fall back: nothing of theirs fails.
            let interrupts = name != Target::Mm.process();
            if interrupts {
                s.restart_epoch.fetch_add(1, Ordering::AcqRel);
            }
            let killed_one = kill_one(system, name);
            if name == Target::Pager.process() {
                // Serving: it answers once it took over (the stub retries
                // this idempotent call after the restart's announcement).
                let _ = c
                    .own
                    .pager
                    .call(ipc_protocol::interfaces::pager::Accounting {});
            }
            if interrupts {
                s.restart_epoch.fetch_add(1, Ordering::AcqRel);
            }
            match killed_one {
                Ok((at, ms)) => {
                    report.restarts += 1;
                    report.restart_ms.push(ms);
                    kill_times.push(at);
                    killed.push((name, at));
                }
                Err(e) => {
                    s.error(e);
                    break;
                }
            }
        }
        s.stop.store(true, Ordering::Release);
    });
    let end = Instant::now();
    let probes = s.probes.into_inner().unwrap_or_else(|p| p.into_inner());
    let (longest, recovery) = waits(start, end, &probes, &kill_times);
    report.longest_wait_ms = longest;
    report.recovery_ms = recovery;
    report.bad = s.bad.into_inner();
    report.workload_rounds = s.rounds.into_inner();
    report.interrupted = s.interrupted.into_inner();
    report.probes = probes.len() as u64;
    report.workload_ms = s
        .workload_ms
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    report.errors = s.errors.into_inner().unwrap_or_else(|p| p.into_inner());
    if let Err(e) = system.check_alive() {
        report.errors.push(format!("after the run: {e}"));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failure during a restart window is an interruption, never an
    /// error: also when the workload began inside the window and failed
    /// before the window closed (the epoch unchanged, but odd).
    #[test]
    fn a_failure_inside_a_restart_window_is_an_interruption() {
        assert!(!interrupted_by_restart(4, 4), "no restart near it");
        assert!(interrupted_by_restart(4, 5), "a kill began meanwhile");
        assert!(interrupted_by_restart(4, 6), "a restart came and went");
        assert!(interrupted_by_restart(5, 5), "began during a restart");
    }

    #[test]
    fn targets_and_durations_parse_with_checks() {
        assert_eq!(Target::parse_list("gpu,pager,mm").unwrap().len(), 3);
        assert!(Target::parse_list("mm,mm").is_err());
        assert!(Target::parse_list("gpu,disk").is_err());
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        for bad in [
            "",
            "s",
            "2",
            "0s",
            "2h",
            "99999999999999999999s",
            "61m",
            "-1s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_restartable_servers_can_be_killed() {
        assert_eq!(
            check_targets(&[Target::Mm, Target::Gpu, Target::Pager]),
            Ok(())
        );
    }

    #[test]
    fn kills_stay_under_the_crash_loop_limit() {
        let now = Instant::now();
        let max = crate::process::MAX_RESTARTS;
        let recent: Vec<(&'static str, Instant)> = vec![("mm-server", now); max - 2];
        assert!(!would_trip_the_crash_loop_limit(&recent, "mm-server"));
        let more: Vec<(&'static str, Instant)> = vec![("mm-server", now); max - 1];
        assert!(would_trip_the_crash_loop_limit(&more, "mm-server"));
        assert!(
            !would_trip_the_crash_loop_limit(&more, "pager"),
            "per server"
        );
    }

    #[test]
    fn the_longest_wait_counts_the_start_and_the_end() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let (longest, recovery) = waits(t0, at(1000), &[at(100), at(700)], &[at(200), at(800)]);
        assert!((longest - 600.0).abs() < 1.0, "{longest}");
        assert_eq!(recovery.len(), 1, "no probe after the second kill");
        assert!((recovery[0] - 500.0).abs() < 1.0);
        let (longest, _) = waits(t0, at(1000), &[], &[]);
        assert!(
            (longest - 1000.0).abs() < 1.0,
            "no probe at all: the whole run"
        );
    }
}
