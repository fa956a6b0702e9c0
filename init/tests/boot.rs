//! `svm boot` as a user runs it: separate processes, probe, clean stop,
//! and a dead server reported.

use std::process::Command;
use std::time::{Duration, Instant};

fn svm() -> Command {
    let exe = env!("CARGO_BIN_EXE_svm");
    let mut c = Command::new(exe);
    // The servers are built beside `svm` by `cargo test --workspace`.
    c.env("SVM_BIN_DIR", std::path::Path::new(exe).parent().unwrap())
        .env("RUST_LOG", "info");
    c
}

#[test]
fn boot_check_starts_probes_and_stops() {
    let out = svm()
        .args(["boot", "--check", "--vram-mib", "64"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "svm boot --check failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("device ready: 64 MiB VRAM"), "{stdout}");
    assert!(stderr.contains("stopped cleanly"), "{stderr}");
    // Two server processes were started.
    assert!(
        stderr.contains("started xe-model (pid") && stderr.contains("started xe-svm (pid"),
        "{stderr}"
    );
}

/// Several GPUs (issue 17): `--gpus 4 --check` starts four device models
/// and four GPU servers, and each probes its own device.
#[test]
fn boot_check_probes_four_gpus() {
    let out = svm()
        .args(["boot", "--gpus", "4", "--check", "--vram-mib", "32"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(
        stdout.matches("device ready: 32 MiB VRAM").count(),
        4,
        "{stdout}"
    );
    for gpu in 0..4 {
        assert!(
            stdout.contains(&format!("GPU {gpu}: probe passed")),
            "{stdout}"
        );
    }
    assert_eq!(
        stderr.matches("started xe-model (pid").count(),
        4,
        "{stderr}"
    );
    assert_eq!(stderr.matches("started xe-svm (pid").count(), 4, "{stderr}");
    assert!(stdout.contains("4 GPUs probed"), "{stdout}");
}

#[test]
fn a_dead_server_is_reported() {
    let child = svm()
        .args(["boot", "--vram-mib", "64"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Find the device model among svm's children and kill it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let model_pid = loop {
        let out = Command::new("pgrep")
            .args(["-P", &child.id().to_string(), "-f", "xe-model"])
            .output()
            .unwrap();
        if let Some(pid) = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<i32>().ok())
        {
            break pid;
        }
        assert!(Instant::now() < deadline, "xe-model never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(200));
    Command::new("kill")
        .args(["-9", &model_pid.to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("xe-model died"), "{stderr}");
}
