//! Supervision (issue 14): a restartable server that dies is started again
//! on the same endpoints as its next generation, announces itself, and the
//! system goes on with every word right. A crash loop is stopped.

use std::time::{Duration, Instant};

use init::oversub::{self, Config};
use init::supervisor::{BootOptions, Clients, System};
use ipc_protocol::client::CallError;
use ipc_protocol::interfaces::pressure::Status;
use ipc_protocol::transport::TransportError;

fn boot_with(opts: &BootOptions) -> (System, Clients) {
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_svm"));
    std::env::set_var("SVM_BIN_DIR", exe.parent().unwrap());
    let (s, c) = System::boot(opts).unwrap();
    (s, c.unwrap())
}

fn boot(vram_mib: u64) -> (System, Clients) {
    let mut opts = BootOptions::default();
    opts.device.vram_bytes = vram_mib << 20;
    boot_with(&opts)
}

/// The status endpoint answers again after a restart (a call caught by the
/// announcement is `Status`, idempotent, so the stub sends it again).
fn status_after_restart(c: &Clients) -> ipc_protocol::interfaces::pressure::PressureStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match c.pressure.call(Status {}) {
            Ok(s) => return s,
            Err(CallError::Transport(TransportError::PeerRestarted(_)))
                if Instant::now() < deadline => {}
            Err(e) => panic!("mm-server did not come back: {e}"),
        }
    }
}

#[test]
fn a_killed_mm_server_comes_back_and_eviction_goes_on() {
    let (mut system, c) = boot(32);
    assert_eq!(system.generation("mm-server"), Some(1));
    system.kill("mm-server").unwrap();
    assert!(
        system.wait_generation("mm-server", 2, Duration::from_secs(10)),
        "mm-server was not restarted"
    );
    assert_eq!(system.restarts(), 1);
    let s = status_after_restart(&c);
    assert_eq!(
        c.pressure.generation(),
        2,
        "the new generation announced itself"
    );
    assert_eq!(s.rounds, 0, "a new broker: {s:?}");
    // Twice VRAM: only the new broker's eviction loop can make room.
    let r = oversub::run(
        &c,
        &Config {
            ratio: 2.0,
            passes: 1,
            ..Default::default()
        },
    )
    .unwrap();
    println!("{}", r.text());
    assert_eq!((r.bad_pages, r.bad_bos), (0, 0), "{r:?}");
    let p = r
        .pressure
        .clone()
        .expect("the restarted mm-server answered");
    assert!(
        p.rounds > 0 && p.svm_evicted_bytes > 0,
        "no eviction after the restart: {p:?}"
    );
    system.check_alive().unwrap();
    drop(c);
    assert!(system.shutdown().is_empty());
}

#[test]
fn a_crash_loop_is_stopped_and_reported() {
    let (mut system, c) = boot(32);
    let mut generation = 1;
    for _ in 0..init::process::MAX_RESTARTS {
        system.kill("mm-server").unwrap();
        generation += 1;
        assert!(system.wait_generation("mm-server", generation, Duration::from_secs(10)));
    }
    system.kill("mm-server").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while system.check_alive().is_ok() {
        assert!(
            Instant::now() < deadline,
            "a crash loop was restarted forever"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        system.generation("mm-server"),
        Some(generation),
        "no restart after the limit"
    );
    drop(c);
    system.shutdown();
}

/// `svm run chaos --kill mm`: mm-server killed about every second while
/// the workloads run; every kill comes back, no word is wrong, no probe
/// waits past the bound, and the verdict line says so.
#[test]
fn chaos_with_mm_server_kills_loses_nothing() {
    chaos_loses_nothing("mm", "1s");
}

/// `svm run chaos --kill gpu,mm`: the GPU server and mm-server killed in
/// turn, kills landing in GPU faults, copies back to RAM and evictions;
/// the pages the GPU server left in VRAM are adopted by its next
/// generation and read back word for word.
#[test]
fn chaos_with_gpu_server_kills_loses_nothing() {
    chaos_loses_nothing("gpu,mm", "2s");
}

fn chaos_loses_nothing(kill: &str, every: &str) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_svm"))
        .args(["--vram-mib", "64", "run", "chaos", "--kill", kill])
        .args(["--every", every, "--for", "12s", "--seed", "3"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdict = stdout.lines().last().unwrap();
    let field = |name: &str| -> f64 {
        let kv = verdict.split(' ').find(|kv| kv.starts_with(name)).unwrap();
        kv.split('=').nth(1).unwrap().parse().unwrap()
    };
    assert!(field("restarts=") >= 4.0, "{verdict}");
    if kill.contains("gpu") || kill.contains("pager") {
        assert!(stdout.contains("interrupted by a restart"), "{stdout}");
    }
    assert_eq!(field("bad="), 0.0, "{verdict}");
    assert!(field("longest_wait_ms=") <= 15_000.0, "{verdict}");
}

/// The pager killed at random points: every word checked, every client
/// back within the bound (`init/tests/pager_restart.rs` has the cases).
#[test]
fn chaos_with_pager_kills_loses_nothing() {
    chaos_loses_nothing("pager", "2s");
}
