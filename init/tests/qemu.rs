//! `svm qemu` end to end: the guest boots under TCG with `svm` as PID 1,
//! runs the CI subset (`--scenarios quick`), prints the summary on the
//! serial console and powers off; and a failing check turns the exit
//! status red. Both need `scripts/fetch-qemu.sh` first (about 40 MB of
//! Debian packages), so they are ignored by a plain `cargo test`; CI runs
//! them with `cargo test -p init --test qemu -- --ignored`.
//!
//! Also here, without QEMU: `svm guest --plan FILE` runs a plan on the host.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One emulated guest at a time: two would share the machine's 2 cores.
static ONE_GUEST: Mutex<()> = Mutex::new(());

fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs `svm ARGS` in the repository; kills it at `limit` (a hang fails).
fn svm(args: &[&str], limit: Duration) -> (i32, String, String) {
    let exe = env!("CARGO_BIN_EXE_svm");
    let mut child = Command::new(exe)
        .args(args)
        .current_dir(repo_root())
        .env("SVM_BIN_DIR", std::path::Path::new(exe).parent().unwrap())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("svm {args:?} ran past {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (out, err) = (out_reader.join().unwrap(), err_reader.join().unwrap());
    (status.code().unwrap_or(-1), out, err)
}

fn fetched() {
    let dir = repo_root().join("target/qemu");
    assert!(
        dir.join("qemu-system-x86_64").is_file() && dir.join("vmlinuz").exists(),
        "run scripts/fetch-qemu.sh first"
    );
}

#[test]
#[ignore = "needs scripts/fetch-qemu.sh; CI runs it with --ignored"]
fn the_quick_set_runs_green_as_pid_1_of_a_guest() {
    fetched();
    let _one = ONE_GUEST.lock().unwrap_or_else(|e| e.into_inner());
    // The static build (one to three minutes when cold, on 2 busy cores)
    // and the boot (one to two minutes under TCG) fit inside this.
    let (code, out, err) = svm(
        &[
            "qemu",
            "--scenarios",
            "quick",
            "--accel",
            "tcg",
            "--timeout",
            "420",
        ],
        Duration::from_secs(720),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("svm-guest: PID 1 up"), "{out}");
    for check in ["boot-check", "herd", "oversub", "mremap", "fork"] {
        assert!(
            out.contains(&format!("\nok   {check} (")),
            "{check} did not pass:\n{out}"
        );
    }
    // Every workload checked its data in the guest.
    assert!(
        out.contains("bad=0") && out.contains("bad pages=0"),
        "{out}"
    );
    let last = out
        .lines()
        .rev()
        .find_map(init::summary::Summary::parse_line);
    assert_eq!(last.map(|s| (s.passed, s.failed)), Some((5, 0)), "{out}");
    assert!(out.contains("svm-guest: green - powering off"), "{out}");
    assert!(err.contains("svm qemu: green"), "{err}");
}

#[test]
#[ignore = "needs scripts/fetch-qemu.sh; CI runs it with --ignored"]
fn a_failing_check_in_the_guest_fails_svm_qemu() {
    fetched();
    let _one = ONE_GUEST.lock().unwrap_or_else(|e| e.into_inner());
    let plan = std::env::temp_dir().join(format!("svm-qemu-red-{}.plan", std::process::id()));
    // 3K is not a multiple of 4 KiB: `svm run herd` refuses it (exit 2).
    std::fs::write(
        &plan,
        "boot-check 120 --vram-mib 64 boot --check\nbad-size 60 run herd --size 3K\n",
    )
    .unwrap();
    let (code, out, err) = svm(
        &[
            "qemu",
            "--scenarios",
            plan.to_str().unwrap(),
            "--accel",
            "tcg",
            "--timeout",
            "300",
        ],
        Duration::from_secs(420),
    );
    std::fs::remove_file(&plan).unwrap();
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("\nok   boot-check ("), "{out}");
    assert!(out.contains("\nFAIL bad-size: exit status 2"), "{out}");
    assert!(out.contains("svm-guest: red - powering off"), "{out}");
    assert!(
        err.contains("the guest reported 1 passed, 1 failed"),
        "{err}"
    );
}

#[test]
fn svm_guest_runs_a_plan_on_the_host() {
    let plan = std::env::temp_dir().join(format!("svm-guest-host-{}.plan", std::process::id()));
    std::fs::write(
        &plan,
        "# a plan as the guest reads it\n\
         boot-check 60 --vram-mib 64 boot --check\n\
         bad-size 30 run herd --size 3K\n",
    )
    .unwrap();
    let (code, out, err) = svm(
        &["guest", "--plan", plan.to_str().unwrap()],
        Duration::from_secs(120),
    );
    std::fs::remove_file(&plan).unwrap();
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("ok   boot-check ("), "{out}");
    assert!(out.contains("FAIL bad-size: exit status 2"), "{out}");
    assert_eq!(out.lines().last(), Some("1 passed, 1 failed"), "{out}");
}

#[test]
fn svm_qemu_and_svm_guest_refuse_what_they_cannot_do() {
    for (args, why) in [
        (&["qemu", "--gpus", "2"][..], "several GPUs: issue 17"),
        (
            &["qemu", "--scenarios", "/no/such/set"][..],
            "not a set, plan or scenario path",
        ),
        (&["qemu", "--cpus", "0"][..], "--cpus (1-64) out of range"),
        // On a host, PID 1's duties would mount over /dev and power off.
        (
            &["guest", "--pid1", "--plan", "/dev/null"][..],
            "this is not PID 1",
        ),
    ] {
        let (code, out, err) = svm(args, Duration::from_secs(30));
        assert_eq!(code, 2, "{args:?}: {out}\n{err}");
        assert!(err.contains(why), "{args:?}: {err}");
    }
}
