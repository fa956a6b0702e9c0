//! The hostile-client harness (issue 12's proof) at CI size, and one test
//! per kind of attack, each on a booted system: the victim's words stay
//! right, every hostile call gets a typed error, a closed endpoint or a
//! legitimate success, no server dies or restarts, and the totals come
//! back after the hostile client is gone.

use std::sync::Mutex;
use std::time::Duration;

use indicatif::ProgressBar;
use init::hostile::{self, Config, Family, Report};
use init::supervisor::{BootOptions, System};

fn boot() -> (System, init::supervisor::Clients) {
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_svm"));
    std::env::set_var("SVM_BIN_DIR", exe.parent().expect("svm is in a directory"));
    let mut opts = BootOptions::default();
    opts.device.vram_bytes = 32 << 20;
    opts.clients = hostile::CLIENT_SLOTS;
    let (s, c) = System::boot(&opts).expect("the system boots");
    (s, c.expect("with clients"))
}

/// One booted system at a time: each test boots the whole system, and on
/// a 2-core CI machine several at once starve each other's fault threads
/// past the settle time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs the harness with `families` until `frames` hostile calls were
/// made; prints its lines; shuts the system down cleanly.
fn run(families: &[Family], frames: u64) -> Report {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (mut system, mut clients) = boot();
    let cfg = Config {
        frames,
        seed: 12,
        rounds: 1,
        families: families.to_vec(),
        time_limit: Duration::from_secs(120),
        settle: Duration::from_secs(30),
        ..Default::default()
    };
    let report = hostile::run(&mut system, &mut clients, &cfg, &ProgressBar::hidden())
        .expect("the harness starts");
    drop(clients);
    for line in report.details() {
        println!("{line}");
    }
    println!("{}", report.line());
    assert!(system.shutdown().is_empty(), "every server stops cleanly");
    report
}

/// The typed errors of `report` named `name`.
fn count(report: &Report, name: &str) -> u64 {
    report.tally.refused.get(name).copied().unwrap_or(0)
}

fn assert_passed(r: &Report) {
    assert!(r.passed(), "{:#?}", r.failures());
    assert_eq!(r.bad, 0);
    assert_eq!(r.tally.violations, 0);
    assert!(r.totals_came_back);
}

/// What today's servers hold to: everything on the pager's side and the
/// IPC layer, and the GPU server's frames and ids.
const HELD_TODAY: [Family; 8] = [
    Family::PagerFrames,
    Family::GpuFrames,
    Family::PagerFields,
    Family::PagerIds,
    Family::GpuIds,
    Family::PagerFloods,
    Family::Memfd,
    Family::Disconnect,
];

#[test]
fn the_harness_passes_at_ci_size() {
    let r = run(&HELD_TODAY, 3_000);
    assert_passed(&r);
    assert!(r.tally.calls >= 3_000, "{}", r.line());
    for name in [
        "Pager.OverBudget",
        "Pager.NoSuchObject",
        "Protocol.Truncated",
    ] {
        assert!(count(&r, name) > 0, "no {name} in {}", r.line());
    }
    let line = r.line();
    assert!(line.starts_with("bad=0 ratio="), "{line}");
    assert!(line.contains(" hostile_calls=") && line.contains(" errors="));
}

#[test]
fn the_harness_passes_with_every_family() {
    let r = run(&Family::ALL, 3_000);
    assert_passed(&r);
    assert_ne!(
        r.after.gpu,
        hostile::accounting::GpuTotals::NotAvailable,
        "the GPU server answers Accounting"
    );
}

#[test]
fn random_and_truncated_frames_get_protocol_errors() {
    let r = run(&[Family::PagerFrames, Family::GpuFrames], 500);
    assert_passed(&r);
    for name in [
        "Protocol.Truncated",
        "Protocol.BadMagic",
        "Protocol.BadKind",
    ] {
        assert!(count(&r, name) > 0, "no {name} in {}", r.line());
    }
}

#[test]
fn every_pager_field_at_its_edges_gets_a_typed_error() {
    let r = run(&[Family::PagerFields], 1);
    assert_passed(&r);
    for name in ["Pager.OutOfRange", "Pager.BadSize", "Pager.BadUserfaultfd"] {
        assert!(count(&r, name) > 0, "no {name} in {}", r.line());
    }
}

#[test]
fn the_victims_ids_name_nothing_in_the_pager() {
    let r = run(&[Family::PagerIds], 1);
    assert_passed(&r);
    assert!(count(&r, "Pager.NoSuchObject") > 0 && count(&r, "Pager.NoSuchView") > 0);
    assert_eq!(r.tally.served, 0, "nothing of the victim's was served");
}

#[test]
fn floods_past_the_pagers_budgets_are_over_budget_and_come_back() {
    let r = run(&[Family::PagerFloods], 1);
    assert_passed(&r);
    assert!(count(&r, "Pager.OverBudget") >= 3, "{}", r.line());
}

#[test]
fn a_disconnect_with_calls_in_flight_gives_everything_back() {
    let r = run(&[Family::Disconnect], 1);
    assert_passed(&r);
    assert!(
        r.tally.one_way > 0,
        "calls were left in flight: {}",
        r.line()
    );
}

#[test]
fn memfds_truncated_after_binding_change_nothing() {
    assert_passed(&run(&[Family::Memfd], 1));
}

#[test]
fn every_gpu_field_at_its_edges_gets_a_typed_error() {
    assert_passed(&run(&[Family::GpuFields], 1));
}

#[test]
fn the_victims_ids_name_nothing_in_the_gpu_server() {
    let r = run(&[Family::GpuIds], 1);
    assert_passed(&r);
    assert!(count(&r, "Gpu.NoSuchVm") > 0 && count(&r, "Gpu.NoSuchBo") > 0);
}

#[test]
fn floods_past_the_gpu_servers_budgets_are_over_budget_and_come_back() {
    let r = run(&[Family::GpuFloods], 1);
    assert_passed(&r);
    assert!(count(&r, "Gpu.OverBudget") > 0, "{}", r.line());
}
