//! `svm run hostile`: the proof of isolation (issue 12). The real system
//! is booted with two client slots; slot 0 is a victim running herd and
//! oversubscription rounds with every word checked, slot 1 a hostile
//! client sending every interface everything a client can send
//! ([`family`]). First the victim runs alone (its baseline throughput),
//! then beside the hostile client; then the hostile client disconnects
//! with calls in flight and every server-wide total must come back.
//!
//! The run fails when the victim saw a wrong word, a server died or
//! restarted, a hostile call got anything but a typed error, a closed
//! endpoint or a legitimate success, what the victim held changed, or the
//! totals did not come back.

pub mod accounting;
pub mod bystander;
pub mod conn;
pub mod family;
pub mod fields;
pub mod floods;
pub mod frames;
pub mod ids;
pub mod memfd;
pub mod outcome;
pub mod rng;
pub mod victim;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use ipc_protocol::frame::{encode_message, Kind};
use ipc_protocol::interfaces::gpu::{self as g, Gpu};
use ipc_protocol::interfaces::pager::{self as p, Pager};
use ipc_protocol::types::KernelKind;
use ipc_protocol::Interface;

use self::accounting::Totals;
pub use self::bystander::Bystander;
use self::conn::{Hostile, DEADLINE};
pub use self::family::Family;
use self::outcome::Expect::MayServe;
use self::outcome::Tally;
pub use self::victim::VictimConfig;
use crate::supervisor::{Clients, System};

/// Client slots the harness boots with: the victim's and the hostile's.
pub const CLIENT_SLOTS: usize = 2;
/// Violations after which the hostile client stops (the run has failed).
const GIVE_UP_AFTER: u64 = 20;

#[derive(Debug, Clone)]
pub struct Config {
    /// Hostile calls to send at least (every frame counts, typed or raw).
    pub frames: u64,
    pub seed: u64,
    /// Victim rounds alone, and at least as many beside the hostile client.
    pub rounds: usize,
    pub families: Vec<Family>,
    pub victim: VictimConfig,
    /// How long the totals may take to come back after the hostile client
    /// is gone.
    pub settle: Duration,
    /// The longest the run beside the hostile client may take.
    pub time_limit: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            frames: 100_000,
            seed: 1,
            rounds: 2,
            families: Family::ALL.to_vec(),
            victim: VictimConfig::default(),
            settle: Duration::from_secs(20),
            time_limit: Duration::from_secs(1800),
        }
    }
}

/// What a run found.
#[derive(Debug, Clone)]
pub struct Report {
    /// Wrong words the victim saw (its rounds and what it held).
    pub bad: u64,
    pub baseline_rounds: usize,
    pub baseline: Duration,
    pub attacked_rounds: usize,
    pub attacked: Duration,
    pub tally: Tally,
    pub before: Totals,
    pub after: Totals,
    pub totals_came_back: bool,
    /// Why the totals could not be read after the hostile client left.
    pub totals_error: Option<String>,
    /// Why the victim could not finish, if it could not.
    pub victim_error: Option<String>,
    /// A server that died or restarted.
    pub server_error: Option<String>,
}

impl Report {
    /// The victim's throughput beside the hostile client over alone.
    pub fn ratio(&self) -> f64 {
        let rate = |n: usize, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
        rate(self.attacked_rounds, self.attacked) / rate(self.baseline_rounds, self.baseline)
    }

    pub fn passed(&self) -> bool {
        self.failures().is_empty()
    }

    /// Every reason the run fails, one line each.
    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        if self.bad > 0 {
            f.push(format!("the victim saw {} wrong words", self.bad));
        }
        if let Some(e) = &self.victim_error {
            f.push(format!("the victim failed: {e}"));
        }
        if let Some(e) = &self.server_error {
            f.push(e.clone());
        }
        if self.tally.violations > 0 {
            f.push(format!(
                "{} hostile calls got what a hostile client must never get: {}",
                self.tally.violations,
                self.tally.kept.join("; ")
            ));
        }
        if let Some(e) = &self.totals_error {
            f.push(format!("the totals could not be read afterwards: {e}"));
        } else if !self.totals_came_back {
            f.push(format!(
                "the totals did not come back: before {}; after {}",
                accounting::describe(&self.before),
                accounting::describe(&self.after)
            ));
        }
        f
    }

    /// The last line: `bad=N ratio=X hostile_calls=N errors=<summary>`.
    pub fn line(&self) -> String {
        format!(
            "bad={} ratio={:.2} hostile_calls={} errors={}",
            self.bad,
            self.ratio(),
            self.tally.calls,
            self.tally.summary()
        )
    }

    /// The lines before the last: phases, totals, failures.
    pub fn details(&self) -> Vec<String> {
        let mut v = vec![
            format!(
                "victim alone: {} rounds in {:.2}s; \
                 beside the hostile client: {} rounds in {:.2}s",
                self.baseline_rounds,
                self.baseline.as_secs_f64(),
                self.attacked_rounds,
                self.attacked.as_secs_f64()
            ),
            format!("totals before: {}", accounting::describe(&self.before)),
            format!("totals after:  {}", accounting::describe(&self.after)),
        ];
        v.extend(self.failures().into_iter().map(|f| format!("FAILED: {f}")));
        v
    }
}

/// Runs the victim alone, then beside the hostile client (slot 1 of
/// `clients`, taken), then checks what came back. `Err` only when the
/// harness could not start (the victim's resources, the totals).
pub fn run(
    system: &mut System,
    clients: &mut Clients,
    cfg: &Config,
    bar: &ProgressBar,
) -> Result<Report, String> {
    if clients.slots.is_empty() {
        return Err(format!(
            "booted with one client slot; the harness needs {CLIENT_SLOTS}"
        ));
    }
    let slot = clients.slots.remove(0);
    let c: &Clients = clients;
    bar.set_message("victim alone");
    let (baseline_rounds, baseline, mut bad, alone_error) = victim_rounds(c, cfg, None, None);
    if let Some(e) = alone_error {
        return Err(format!(
            "the victim failed alone (no hostile client yet): {e}"
        ));
    }
    let held = bystander::Held::new(c)?;
    let before = accounting::totals(c)?;
    let conn = slot.connect_with_timeout(DEADLINE);
    let hostile = Hostile::new(conn.pager, conn.gpu, cfg.seed, held.ids);
    bar.set_message("victim beside the hostile client");
    let (hostile, attacked) = beside(c, cfg, hostile, bar);
    bad += attacked.bad;
    let mut tally = hostile.tally.clone();
    bar.set_message("hostile client disconnects");
    if cfg.families.contains(&Family::Disconnect) {
        tally.merge(disconnect(hostile));
    } else {
        drop(hostile);
    }
    // A server that died cannot answer: that is a finding, not a harness error.
    let (after, totals_came_back, totals_error) = match accounting::settle(c, &before, cfg.settle) {
        Ok((after, back)) => (after, back, None),
        Err(e) => (before.clone(), false, Some(e)),
    };
    let mut victim_error = attacked.error;
    match held.check(c) {
        Ok(n) => bad += n,
        Err(e) => victim_error = Some(e),
    }
    if let Err(e) = held.release(c) {
        victim_error.get_or_insert(e);
    }
    let server_error = match system.check_alive() {
        Err(e) => Some(e.to_string()),
        Ok(()) if system.restarts() > 0 => Some(format!(
            "{} server restart(s) during the run",
            system.restarts()
        )),
        Ok(()) => None,
    };
    Ok(Report {
        bad,
        baseline_rounds,
        baseline,
        attacked_rounds: attacked.rounds,
        attacked: attacked.elapsed,
        tally,
        before,
        after,
        totals_came_back,
        totals_error,
        victim_error,
        server_error,
    })
}

/// Victim rounds: `cfg.rounds` of them, and with `until` more until it
/// says stop; each finished round is counted in `done`. Returns (rounds,
/// elapsed, wrong words, error).
fn victim_rounds(
    c: &Clients,
    cfg: &Config,
    until: Option<&dyn Fn() -> bool>,
    done: Option<&AtomicUsize>,
) -> (usize, Duration, u64, Option<String>) {
    let t0 = Instant::now();
    let (mut n, mut bad) = (0, 0);
    loop {
        match victim::round(c, &cfg.victim) {
            Ok(r) => {
                n += 1;
                bad += r.bad;
                if let Some(d) = done {
                    d.store(n, Ordering::Release);
                }
            }
            Err(e) => return (n, t0.elapsed(), bad, Some(e)),
        }
        let more = until.is_some_and(|stop| !stop());
        if n >= cfg.rounds && !more {
            return (n, t0.elapsed(), bad, None);
        }
        if t0.elapsed() > cfg.time_limit {
            let e = format!("still running after the time limit ({:?})", cfg.time_limit);
            return (n, t0.elapsed(), bad, Some(e));
        }
    }
}

/// The victim's rounds beside the hostile client.
struct Attacked {
    rounds: usize,
    elapsed: Duration,
    bad: u64,
    error: Option<String>,
}

/// Runs the victim and the hostile client together: the hostile client
/// makes at least `cfg.frames` calls and keeps going until the victim has
/// done `cfg.rounds` rounds (or stopped); the victim keeps going until the
/// hostile client stops, so every victim round but the last ran under
/// attack.
fn beside(c: &Clients, cfg: &Config, mut h: Hostile, bar: &ProgressBar) -> (Hostile, Attacked) {
    let victim_done = AtomicBool::new(false);
    let hostile_done = AtomicBool::new(false);
    let rounds = AtomicUsize::new(0);
    let active: Vec<Family> = cfg
        .families
        .iter()
        .copied()
        .filter(|f| *f != Family::Disconnect)
        .collect();
    bar.set_length(cfg.frames);
    let started = Instant::now();
    std::thread::scope(|s| {
        let hostile = s.spawn(|| {
            for (i, f) in active.iter().cycle().enumerate() {
                f.round(&mut h);
                bar.set_position(h.tally.calls.min(cfg.frames));
                let victim_enough = rounds.load(Ordering::Acquire) >= cfg.rounds
                    || victim_done.load(Ordering::Acquire);
                let enough = h.tally.calls >= cfg.frames && victim_enough;
                // A server that stalls makes every call a violation that
                // waits out its deadline: the run has failed, stop it.
                let hopeless =
                    h.tally.violations >= GIVE_UP_AFTER || started.elapsed() > cfg.time_limit;
                if enough || hopeless || h.tally.closed > 0 || i > 1_000_000 {
                    break;
                }
            }
            hostile_done.store(true, Ordering::Release);
            h
        });
        let stop = || hostile_done.load(Ordering::Acquire);
        let (rounds, elapsed, bad, error) = victim_rounds(c, cfg, Some(&stop), Some(&rounds));
        victim_done.store(true, Ordering::Release);
        let h = match hostile.join() {
            Ok(h) => h,
            Err(_) => std::process::abort(), // a panic in the harness itself: nothing to report
        };
        (
            h,
            Attacked {
                rounds,
                elapsed,
                bad,
                error,
            },
        )
    })
}

/// The hostile client's last act: it holds objects, a view, a VM and a
/// buffer object, leaves calls in flight on both endpoints, and closes
/// them without waiting. Its session's end must give everything back.
fn disconnect(mut h: Hostile) -> Tally {
    let own = fields::OwnObject::new(&mut h, 32);
    let view = own.as_ref().and_then(|o| fields::own_view(&mut h, o));
    let vm = h.gpu(MayServe, g::CreateVm {}).map(|v| v.vm);
    if let (Some(vm), Some(view), Some(o)) = (vm, view, own.as_ref()) {
        h.gpu(
            MayServe,
            g::BindView {
                vm,
                view,
                gpu_addr: o.addr,
                flags: 0,
            },
        );
    }
    h.gpu(
        MayServe,
        g::CreateBo {
            size_bytes: 1 << 20,
        },
    );
    let mut in_flight: Vec<(bool, Vec<u8>)> = vec![(
        false,
        encode_message(
            Pager::ID,
            Kind::Request,
            1 << 60,
            &p::Request::from(p::CreateObject {
                size_bytes: 64 << 20,
            }),
        ),
    )];
    if let Some(o) = own.as_ref() {
        in_flight.push((
            false,
            encode_message(
                Pager::ID,
                Kind::Request,
                (1 << 60) + 1,
                &p::Request::from(p::Snapshot {
                    object: o.object,
                    first_page: 0,
                    count: conn::pages(32),
                }),
            ),
        ));
        if let Some(vm) = vm {
            in_flight.push((
                true,
                encode_message(
                    Gpu::ID,
                    Kind::Request,
                    1 << 60,
                    &g::Request::from(g::Submit {
                        vm,
                        kernel: KernelKind::IncrementAll,
                        addr: o.addr,
                        len: 32 * 4096,
                        stride: 4,
                        value: 1,
                        threads: 8,
                    }),
                ),
            ));
        }
    }
    for (gpu, frame) in &in_flight {
        h.one_way(*gpu, frame);
    }
    let tally = std::mem::take(&mut h.tally);
    drop(h);
    if let Some(o) = own {
        // SAFETY: our own mapping; the session that served it is gone.
        let _ = unsafe { rustix::mm::munmap(o.addr as *mut _, (o.pages * 4096) as usize) };
    }
    tally
}
