//! `svm conformance` against our real servers, as a user runs it: the IPC
//! suite on every interface of the pager, xe-svm and mm-server (with the
//! failure lists built in), and the Python client (tests/ipc-python/)
//! against each of them. Each run is bounded in time; the stub and the
//! Python server are in `tests/tests/ipc_conformance.rs`.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(240);

/// Runs `svm ARGS`: (success, stdout, stderr); killed (and failed) past
/// `LIMIT`.
fn svm(args: &[&str]) -> (bool, String, String) {
    common::svm_within(args, LIMIT)
}

fn summary_line(out: &str) -> &str {
    out.lines()
        .rev()
        .find(|l| l.contains(" passed, "))
        .unwrap_or("")
}

#[test]
fn the_ipc_suite_passes_against_every_real_server() {
    use init::conformance::restart::{not_restartable_list, CASES};
    use init::manifest::{CONFORMANCE, RESTARTABLE};
    let (ok, out, err) = svm(&["conformance", "ipc", "--system", "--vram-mib", "64"]);
    assert!(ok, "{out}\n{err}");
    let summary = summary_line(&out);
    // The only expected failures: restarts of servers init does not restart yet.
    let expected = not_restartable_list().lines().count();
    assert!(
        summary.contains(&format!(" 0 failed, {expected} expected failures")),
        "{summary}\n{out}"
    );
    for c in CONFORMANCE {
        let iface = c.interface;
        for case in [
            "golden.request.",
            "malformed.magic",
            "rights.denied.",
            "control.malformed.long",
            "control.restarted_from_caller",
        ] {
            let line = format!("PASS  {iface}/{case}");
            assert!(out.contains(&line), "no `{line}`:\n{out}");
        }
        for case in CASES {
            let line = if RESTARTABLE.contains(&c.process) {
                format!("PASS  {iface}/{case}")
            } else {
                format!("XFAIL {iface}/{case}: {} is not restartable yet", c.process)
            };
            assert!(out.contains(&line), "no `{line}`:\n{out}");
        }
    }
    assert!(
        out.contains("PASS  Pressure/restart.announced (generation 2)"),
        "mm-server was restarted once:\n{out}"
    );
    assert!(out.contains("PASS  Pager/generation.stale_id"), "{out}");
    assert!(out.contains("PASS  Gpu/generation.stale_id"), "{out}");
    assert!(
        out.contains("SKIP  GpuNotify/golden.request.AttachStaging"),
        "{out}"
    );
    assert!(out.contains("PASS  system/servers_alive"), "{out}");
}

#[test]
fn the_python_client_passes_against_every_real_server() {
    let python = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .status();
    if !python.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED: python3 is not installed; the Python client was not run");
        return;
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/ipc-python/client_check.py"
    );
    let failures = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/conformance/failures-python-client.txt"
    );
    let spawn = format!("python3 {script}");
    let args = [
        "conformance",
        "client",
        "--system",
        "--vram-mib",
        "64",
        "--spawn",
        &spawn,
    ];
    let (ok, out, err) = svm(&[&args[..], &["--failures", failures]].concat());
    assert!(ok, "{out}\n{err}");
    assert!(summary_line(&out).contains(" 0 failed"), "{out}");
    for iface in [
        "Pager",
        "PagerMigrate",
        "PagerReclaim",
        "Gpu",
        "GpuNotify",
        "GpuShrink",
        "Pressure",
    ] {
        for case in ["liveness", "refused.bad_magic", "ids.two_pending", "exit"] {
            let line = format!("PASS  {iface}/client.{case}");
            assert!(out.contains(&line), "no `{line}`:\n{out}");
        }
    }
    assert!(
        out.contains("PASS  Pager/client.rights.denied.Snapshot"),
        "{out}"
    );
    assert!(out.contains("PASS  Gpu/client.gpu.vm_lifecycle"), "{out}");
    // init restarted mm-server under the client; the others it cannot yet.
    for check in [
        "waiting_call_fails",
        "idempotent_call_resent",
        "next_call_served",
    ] {
        for c in init::manifest::CONFORMANCE {
            let line = if init::manifest::RESTARTABLE.contains(&c.process) {
                format!("PASS  {}/client.restart.{check}", c.interface)
            } else {
                format!("SKIP  {}/client.restart.{check}", c.interface)
            };
            assert!(out.contains(&line), "no `{line}`:\n{out}");
        }
    }
}
