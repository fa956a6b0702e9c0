//! Every bad argument of `svm` gets one plain line naming the limit and
//! exit status 2, before anything boots: no panic, no backtrace, no Debug
//! text (issue 12, "The command line too").

use std::process::Command;
use std::time::{Duration, Instant};

/// Runs `svm args`; returns (exit code, stdout, stderr).
fn svm(args: &[&str]) -> (Option<i32>, String, String) {
    let t0 = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_svm"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        // Nothing may boot: with no servers beside it, booting would fail.
        .env("SVM_BIN_DIR", "/nonexistent")
        .output()
        .expect("svm runs");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "{args:?} took {:?}: it did more than parse",
        t0.elapsed()
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `args` is refused with one line containing `limit`.
fn refused(args: &[&str], limit: &str) {
    let (code, stdout, stderr) = svm(args);
    assert_eq!(code, Some(2), "{args:?}: exit {code:?}, stderr {stderr:?}");
    assert!(stdout.is_empty(), "{args:?} printed {stdout:?}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: not one line: {stderr:?}");
    let line = lines[0];
    assert!(line.starts_with("svm: "), "{args:?}: {line:?}");
    assert!(
        line.contains(limit),
        "{args:?}: {line:?} does not name {limit:?}"
    );
    for bad in ["panicked", "backtrace", "(\"", "Some(", "Err("] {
        assert!(!line.contains(bad), "{args:?}: {line:?} has {bad:?}");
    }
}

#[test]
fn thread_counts_outside_their_range_are_refused() {
    refused(&["run", "herd", "--threads", "100000"], "1 to 1024");
    refused(&["run", "herd", "--threads", "0"], "1 to 1024");
    refused(&["run", "herd", "--threads", "1,two"], "1 to 1024");
    refused(&["run", "herd", "--threads=-3"], "1 to 1024");
    refused(&["run", "mremap", "--readers", "5000"], "1 to 1024");
    refused(&["run", "fork", "--readers", "0"], "1 to 1024");
    refused(&["run", "oversub", "--bo-threads", "65"], "1 to 64");
    refused(&["--hw-threads", "0", "run", "herd"], "1 to 4096");
}

#[test]
fn sizes_outside_their_range_are_refused() {
    refused(&["run", "herd", "--size", "999G"], "8G");
    refused(&["run", "herd", "--size", "2M,0"], "4 KiB");
    refused(&["run", "herd", "--size", "1000"], "4 KiB");
    refused(&["run", "herd", "--size", "lots"], "4 KiB");
    refused(
        &["run", "mremap", "--size", "99999999999999999999G"],
        "4 KiB",
    );
    refused(&["run", "fork", "--size", "16G"], "8G");
    refused(&["--vram-mib", "3", "run", "herd"], "2 MiB");
    refused(&["--vram-mib", "1000000", "run", "herd"], "2 to 32768");
}

#[test]
fn counts_and_ratios_outside_their_range_are_refused() {
    refused(&["run", "herd", "--reps", "0"], "1 to 1000");
    refused(&["run", "herd", "--reps", "many"], "1 to 1000");
    refused(&["run", "fork", "--kernels", "0"], "1 to 100000");
    refused(&["run", "oversub", "--ratio", "0"], "above 0");
    refused(&["run", "oversub", "--ratio", "1000"], "at most 64");
    refused(&["run", "oversub", "--ratio", "NaN"], "at most 64");
    refused(&["run", "oversub", "--bo-share", "2"], "at most 1");
    refused(&["run", "oversub", "--passes", "0"], "1 to 1000");
    refused(&["run", "oversub", "--bos", "100000"], "0 to 256");
    refused(&["run", "hostile", "--frames", "0"], "1 to 1000000000");
    refused(&["run", "hostile", "--rounds", "1000"], "1 to 100");
    refused(&["run", "hostile", "--families", "gpu"], "pager-frames");
    refused(
        &["conformance", "ipc", "--system", "--timeout-ms", "0"],
        "1 to 3600000",
    );
}

#[test]
fn unknown_commands_and_flags_are_one_line_too() {
    refused(&["run", "herd", "--bogus"], "--bogus");
    refused(&["frobnicate"], "frobnicate");
}

#[test]
fn help_still_prints_help() {
    let (code, stdout, _) = svm(&["run", "hostile", "--help"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("--frames") && stdout.contains("--families"));
}
