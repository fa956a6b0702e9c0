//! The migration path across real processes (issue 5): `svm run herd` as a
//! user runs it, every configuration of the issue, every page checked.

use std::process::Command;

fn svm() -> Command {
    let exe = env!("CARGO_BIN_EXE_svm");
    let mut c = Command::new(exe);
    c.env("SVM_BIN_DIR", std::path::Path::new(exe).parent().unwrap());
    c
}

/// Runs the herd and returns its JSON lines.
fn herd(args: &[&str]) -> Vec<String> {
    let out = svm()
        .args(["run", "herd", "--json", "--mode", "both"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "svm run herd {args:?} failed:\n{stdout}\n{stderr}"
    );
    stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(str::to_string)
        .collect()
}

fn field(line: &str, key: &str) -> u64 {
    let at = line
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("{key} missing in {line}"))
        + key.len()
        + 3;
    line[at..]
        .split([',', '}'])
        .next()
        .unwrap()
        .parse::<f64>()
        .unwrap() as u64
}

fn check(lines: &[String], configs: usize, reps: u64) {
    assert_eq!(lines.len(), configs, "{lines:?}");
    for l in lines {
        assert_eq!(field(l, "bad"), 0, "bad pages: {l}");
        let pages = field(l, "size_kib") / 4 * reps;
        // Every page went to VRAM and came back, each exactly once per rep.
        assert_eq!(field(l, "pages_to_vram"), pages, "{l}");
        assert_eq!(field(l, "pages_to_ram"), pages, "{l}");
    }
}

#[test]
fn herd_2m_every_thread_count_both_modes() {
    check(
        &herd(&["--size", "2M", "--threads", "1,2,4,16", "--reps", "2"]),
        8,
        2,
    );
}

/// Several GPUs (issue 17): the pages spread over four GPUs, a stripe
/// each, come back under the herd from all four at once; every page went
/// to VRAM once and came back once, summed over the GPUs.
#[test]
fn herd_with_pages_spread_over_four_gpus() {
    check(
        &herd(&[
            "--size",
            "8M",
            "--threads",
            "1,8",
            "--reps",
            "2",
            "--gpus",
            "4",
        ]),
        4,
        2,
    );
}

#[test]
fn herd_64m_every_thread_count_both_modes() {
    check(
        &herd(&["--size", "64M", "--threads", "1,2,4,16", "--reps", "1"]),
        8,
        1,
    );
}

#[test]
fn rule3_herd_on_one_page_at_a_time() {
    // All 16 threads start on page 0 and walk together: each DEVICE page
    // sees the whole herd at once, and still moves exactly once.
    check(
        &herd(&[
            "--size",
            "2M,8M",
            "--threads",
            "16",
            "--reps",
            "2",
            "--same-start",
        ]),
        4,
        2,
    );
}

#[test]
fn buffer_larger_than_vram_is_served_by_eviction() {
    // 16 MiB of device VRAM (about 14 MiB for data) under a 32 MiB buffer:
    // GPU faults that find no VRAM wait in mm-server while its eviction
    // loop sends earlier pages back to RAM, so every page still reaches
    // VRAM once, and leaves it once (by eviction or by the CPU's fault).
    // Every word is still right. (Without mm-server the pages that find no
    // VRAM are mapped as system pages: `init/tests/oversub.rs`.)
    let out = svm()
        .args([
            "--vram-mib",
            "16",
            "run",
            "herd",
            "--json",
            "--mode",
            "both",
            "--size",
            "32M",
            "--threads",
            "4",
            "--reps",
            "1",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with('{')).collect();
    assert_eq!(lines.len(), 2);
    for l in lines {
        assert_eq!(field(l, "bad"), 0, "{l}");
        let moved = field(l, "pages_to_vram");
        assert!(moved >= 8192, "every page reaches VRAM: {l}");
        assert_eq!(field(l, "pages_to_ram"), moved, "{l}");
    }
}
