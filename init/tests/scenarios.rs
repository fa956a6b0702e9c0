//! The scenario runner end to end (`svm run`, real processes): the
//! CI-sized library passes and `docs/conformance.md` is the table of this
//! run; and the runner fails what it must fail (a wrong word, a wrong page
//! state, a hang, an expected failure that passes).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `svm run ARGS`, killed after `limit` (a hang fails the test).
fn svm_run(args: &[&str], limit: Duration) -> Output {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_svm"));
    let mut child = Command::new(&exe)
        .arg("run")
        .args(args)
        .current_dir(root())
        .env("SVM_BIN_DIR", exe.parent().unwrap())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start svm");
    // Drain both pipes while waiting, so a full pipe cannot stall it.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut v).ok();
        v
    });
    let e = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut v).ok();
        v
    });
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > limit {
            child.kill().ok();
            child.wait().ok();
            panic!("svm run {args:?} ran past {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: o.join().unwrap(),
        stderr: e.join().unwrap(),
    }
}

#[test]
fn the_ci_set_passes_and_the_conformance_table_is_current() {
    let out = svm_run(
        &[
            "tests/scenarios",
            "--jobs",
            "2",
            "--check-table",
            "docs/conformance.md",
        ],
        // The CI-sized set takes about 3 minutes on 2 cores shared with
        // other builds; a run past 5 is a failure, not a stall.
        Duration::from_secs(300),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let failures: Vec<&str> = stdout.lines().filter(|l| l.contains("  FAIL  ")).collect();
    let summary = stdout.lines().last().unwrap_or("");
    assert!(
        out.status.success(),
        "{summary}\nfailures:\n{}\n{}",
        failures.join("\n"),
        stderr
            .lines()
            .filter(|l| l.starts_with("svm run"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(summary.contains(" passed, 0 failed"), "{summary}");
}

fn scenario(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

const BUFFER_IN_VRAM: &str = r#"
[[step]]
op = "alloc"
name = "buf"
size = "64K"
fill = "index"

[[step]]
op = "vm"
name = "gpu"

[[step]]
op = "gpu"
vm = "gpu"
kernel = "inc"
at = "buf"
"#;

/// A step that checks the word at `buf+8` is `value`.
fn word_check(value: u32) -> String {
    format!("\n[[step]]\nop = \"check\"\nwords = [ {{ at = \"buf+8\", value = {value} }} ]\n")
}

#[test]
fn the_runner_fails_what_is_wrong() {
    let dir = std::env::temp_dir().join(format!("svm-scenarios-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let limit = Duration::from_secs(120);
    let run = |name: &str, text: &str| {
        let f = scenario(&dir, name, &format!("about = \"negative\"\n{text}"));
        let out = svm_run(&[&f], limit);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    // A listed word that is not what the GPU made of it.
    let (ok, text) = run("word.toml", &format!("{BUFFER_IN_VRAM}{}", word_check(2)));
    assert!(
        !ok && text.contains("buf+0x8 is 0x3, expected 0x2"),
        "{text}"
    );
    assert!(text.contains("0 passed, 1 failed"), "{text}");
    // The right word passes (the same scenario, corrected).
    let (ok, text) = run(
        "word-ok.toml",
        &format!("{BUFFER_IN_VRAM}{}", word_check(3)),
    );
    assert!(ok && text.contains("1 passed, 0 failed"), "{text}");
    // A page state that is not so.
    let (ok, text) = run(
        "state.toml",
        &format!(
            "{BUFFER_IN_VRAM}\n[[step]]\nop = \"snapshot\"\nalloc = \"buf\"\n\
                  expect = [\"system\"]\n"
        ),
    );
    assert!(
        !ok && text.contains("page 0 is Device, expected system"),
        "{text}"
    );
    // A hang: a step past its bound is stopped and reported.
    let t0 = Instant::now();
    let (ok, text) = run(
        "hang.toml",
        &format!("{BUFFER_IN_VRAM}\n[[step]]\nop = \"sleep\"\nus = 9000000\ntimeout_s = 1\n"),
    );
    assert!(!ok && text.contains("ran past its time bound"), "{text}");
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "the hang was not cut short"
    );
    // An expected failure that passes fails the run.
    let (ok, text) = run(
        "xpass.toml",
        &format!(
            "[expect_failure]\nissue = 16\nfeature = \"x\"\n{BUFFER_IN_VRAM}\n\
             [[step]]\nop = \"check\"\n"
        ),
    );
    assert!(!ok && text.contains("remove expect_failure"), "{text}");
    // An expected failure that fails as expected does not.
    let (ok, text) = run(
        "xfail.toml",
        &format!(
            "[expect_failure]\nissue = 17\nfeature = \"more than 8 GPUs\"\n\
             matches = \"at most 8\"\n[device]\ngpus = 9\n{BUFFER_IN_VRAM}\n"
        ),
    );
    assert!(
        ok && text.contains("0 passed, 0 failed, 1 expected failures"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Threads whose first `malloc`s race share one heap: with one heap made
/// per racing thread and the last one kept, a thread freed another's block
/// ("not a live heap block") and a new block's fill landed on a live one.
#[test]
fn threads_whose_first_mallocs_race_share_one_heap() {
    let dir = std::env::temp_dir().join(format!("svm-heap-race-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let body = r#"about = "first mallocs racing"
[[step]]
op = "parallel"
threads = 8
timeout_s = 60
steps = [
  { op = "alloc", name = "buf${t}", kind = "malloc", size = "20K", fill = "index" },
  { op = "repeat", count = 8, steps = [
    { op = "rename", alloc = "buf${t}", to = "old${t}_${i}" },
    { op = "alloc", name = "buf${t}", kind = "malloc", size = "20K", fill = "byte:5" },
    { op = "free", alloc = "old${t}_${i}" },
    { op = "check", at = "buf${t}", len = "20K" },
  ] },
]
"#;
    for round in 0..3 {
        let f = scenario(&dir, &format!("heap-race-{round}.toml"), body);
        let out = svm_run(&[&f], Duration::from_secs(120));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("1 passed, 0 failed"),
            "round {round}:\n{text}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
