//! Runs a plan: each check as a child `svm`, one at a time, each within its
//! timeout; prints one line per check and then the summary line.
//!
//! The child runs in its own process group, so a check that overruns is
//! killed whole (its `svm`; the servers it booted stop when their lifeline,
//! its `svm`, is gone). Its stdout passes through line by line; a summary
//! line in it (a scenario runner) counts as that many checks.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rustix::process::{kill_process_group, waitpid, Pid, Signal, WaitOptions, WaitStatus};

use super::plan::{Check, Plan};
use crate::summary::Summary;

/// How the runner waits for its children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reap {
    /// Wait for the check's process only (a process among others).
    OwnChildren,
    /// PID 1: wait for any process, so orphans re-parented here are reaped
    /// too, and say so.
    Orphans,
}

/// How often a running check is polled (exit, output, deadline).
const POLL: Duration = Duration::from_millis(20);
/// After a check exits, how long its output may still trickle in (a server
/// it started may hold its stdout a little longer).
const OUTPUT_GRACE: Duration = Duration::from_secs(3);
/// After a kill, how long the killed group has to go.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// What one check came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub name: String,
    /// The check's counts: one pass or one failure, or a runner's summary.
    pub counts: Summary,
    /// Why it failed (`None`: it passed).
    pub failure: Option<String>,
    pub elapsed: Duration,
}

impl Outcome {
    /// The line printed for the check (never a summary line itself).
    pub fn line(&self, suite: bool) -> String {
        let secs = self.elapsed.as_secs_f64();
        let counts = if suite {
            format!(" [{}]", self.counts)
        } else {
            String::new()
        };
        match &self.failure {
            None => format!("ok   {}{counts} ({secs:.1} s)", self.name),
            Some(why) => format!("FAIL {}: {why}{counts} ({secs:.1} s)", self.name),
        }
    }
}

/// Runs every check of `plan` with `svm`, writing each check's output, its
/// result line and finally the summary line to `out`.
pub fn run(plan: &Plan, svm: &Path, reap: Reap, out: &mut dyn Write) -> Summary {
    let mut total = Summary::default();
    for check in &plan.checks {
        let _ = writeln!(
            out,
            "svm-guest: running {} (svm {})",
            check.name,
            check.args.join(" ")
        );
        let (outcome, suite) = run_check(check, svm, reap, out);
        let _ = writeln!(out, "{}", outcome.line(suite));
        total.add(outcome.counts);
    }
    let _ = writeln!(out, "{total}");
    let _ = out.flush();
    total
}

/// How the check's process ended.
enum Ending {
    Exited(WaitStatus),
    TimedOut,
    /// It could not be waited for (never expected: it is our child).
    Lost(String),
}

fn run_check(check: &Check, svm: &Path, reap: Reap, out: &mut dyn Write) -> (Outcome, bool) {
    let start = Instant::now();
    let mut cmd = Command::new(svm);
    cmd.args(&check.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return (failed(check, format!("cannot start: {e}"), start), false),
    };
    let pid = Pid::from_child(&child);
    let lines = forward_lines(child.stdout.take());
    let mut summary = None;
    let ending = wait(pid, start + check.timeout, reap, &lines, &mut summary, out);
    // The child is reaped by `wait`; `Child` must not wait for it again.
    drop(child);
    drain(&lines, &mut summary, out);
    let elapsed = start.elapsed();
    let failure = match ending {
        Ending::Exited(status) if status.exit_status() == Some(0) => None,
        Ending::Exited(status) => Some(describe(status)),
        Ending::TimedOut => Some(format!("timed out after {} s", check.timeout.as_secs())),
        Ending::Lost(why) => Some(why),
    };
    let counts = match (summary, &failure) {
        (Some(s), None) => s,
        // A runner that failed but counted no failure still failed once.
        (Some(s), Some(_)) => Summary {
            failed: s.failed.max(1),
            ..s
        },
        (None, None) => Summary {
            passed: 1,
            failed: 0,
        },
        (None, Some(_)) => Summary {
            passed: 0,
            failed: 1,
        },
    };
    let outcome = Outcome {
        name: check.name.clone(),
        counts,
        failure,
        elapsed,
    };
    (outcome, summary.is_some())
}

fn failed(check: &Check, why: String, start: Instant) -> Outcome {
    Outcome {
        name: check.name.clone(),
        counts: Summary {
            passed: 0,
            failed: 1,
        },
        failure: Some(why),
        elapsed: start.elapsed(),
    }
}

fn describe(status: WaitStatus) -> String {
    match (status.exit_status(), status.terminating_signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "ended oddly".into(),
    }
}

/// A thread that reads the child's stdout and hands over its lines.
fn forward_lines(stdout: Option<std::process::ChildStdout>) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    if let Some(stdout) = stdout {
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    rx
}

fn pass_on(line: &str, summary: &mut Option<Summary>, out: &mut dyn Write) {
    let _ = writeln!(out, "{line}");
    if let Some(s) = Summary::parse_line(line) {
        *summary = Some(s);
    }
}

/// Waits for `pid` until `deadline`, passing its output on; kills its
/// process group at the deadline.
fn wait(
    pid: Pid,
    deadline: Instant,
    reap: Reap,
    lines: &Receiver<String>,
    summary: &mut Option<Summary>,
    out: &mut dyn Write,
) -> Ending {
    loop {
        while let Ok(line) = lines.try_recv() {
            pass_on(&line, summary, out);
        }
        match reap_once(pid, reap, out) {
            Ok(Some(status)) => return Ending::Exited(status),
            Ok(None) => {}
            Err(e) => return Ending::Lost(format!("waiting for it: {e}")),
        }
        if Instant::now() >= deadline {
            // What every thread waits in, before the kill ends them all.
            let _ = writeln!(
                out,
                "the threads at the timeout:\n{}",
                crate::stall::thread_report()
            );
            let _ = kill_process_group(pid, Signal::KILL);
            let until = Instant::now() + KILL_GRACE;
            while Instant::now() < until {
                if let Ok(Some(_)) | Err(_) = reap_once(pid, reap, out) {
                    break;
                }
                std::thread::sleep(POLL);
            }
            return Ending::TimedOut;
        }
        let _ = out.flush();
        std::thread::sleep(POLL);
    }
}

/// One non-blocking wait: `Some` once `pid` has ended. With
/// [`Reap::Orphans`], every other ended process is reaped on the way.
fn reap_once(pid: Pid, reap: Reap, out: &mut dyn Write) -> std::io::Result<Option<WaitStatus>> {
    loop {
        // Not `waitpid(None)`: that is wait4(0), our own process group only,
        // and every check runs in a group of its own.
        let ended = match reap {
            Reap::OwnChildren => waitpid(Some(pid), WaitOptions::NOHANG)?,
            Reap::Orphans => rustix::process::wait(WaitOptions::NOHANG)?,
        };
        match ended {
            None => return Ok(None),
            Some((p, status)) if p == pid => return Ok(Some(status)),
            Some((p, status)) => {
                let _ = writeln!(out, "svm-guest: reaped orphan {} ({})", p, describe(status));
            }
        }
    }
}

/// Passes on what the check printed after it exited, for a short while.
fn drain(lines: &Receiver<String>, summary: &mut Option<Summary>, out: &mut dyn Write) {
    let until = Instant::now() + OUTPUT_GRACE;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => pass_on(&line, summary, out),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A check that runs `sh -c SCRIPT` (the runner runs any program).
    fn sh(name: &str, timeout_s: u64, script: &str) -> Check {
        Check {
            name: name.into(),
            timeout: Duration::from_secs(timeout_s),
            args: vec!["-c".into(), script.into()],
        }
    }

    fn run_sh(checks: Vec<Check>) -> (Summary, String) {
        let mut out = Vec::new();
        let s = run(
            &Plan { checks },
            Path::new("/bin/sh"),
            Reap::OwnChildren,
            &mut out,
        );
        (s, String::from_utf8(out).unwrap())
    }

    #[test]
    fn exit_status_decides_and_the_summary_closes() {
        let (s, out) = run_sh(vec![
            sh("passes", 10, "echo hello"),
            sh("exits-3", 10, "exit 3"),
            sh("killed", 10, "kill -9 $$"),
        ]);
        assert_eq!(
            s,
            Summary {
                passed: 1,
                failed: 2
            }
        );
        assert!(out.contains("\nhello\n"), "{out}");
        assert!(out.contains("ok   passes ("), "{out}");
        assert!(out.contains("FAIL exits-3: exit status 3"), "{out}");
        assert!(out.contains("FAIL killed: killed by signal 9"), "{out}");
        assert_eq!(out.lines().last(), Some("1 passed, 2 failed"));
        assert_eq!(Summary::last_in(&out), Some(s));
    }

    #[test]
    fn a_runner_counts_as_its_summary() {
        let (s, out) = run_sh(vec![
            sh(
                "suite",
                10,
                "echo '3 passed, 1 failed, 2 expected failures'; exit 1",
            ),
            sh("suite-green", 10, "echo '4 passed, 0 failed'"),
            // It says green but exits 1: it still failed once.
            sh("suite-lies", 10, "echo '2 passed, 0 failed'; exit 1"),
        ]);
        assert_eq!(
            s,
            Summary {
                passed: 9,
                failed: 2
            }
        );
        assert!(
            out.contains("ok   suite-green [4 passed, 0 failed]"),
            "{out}"
        );
        // The per-check lines are not summary lines themselves.
        assert_eq!(Summary::last_in(&out), Some(s));
    }

    #[test]
    fn a_hang_fails_and_its_whole_group_is_killed() {
        let start = Instant::now();
        let (s, out) = run_sh(vec![sh("hangs", 1, "sleep 60 & echo \"bg $!\"; wait")]);
        assert_eq!(
            s,
            Summary {
                passed: 0,
                failed: 1
            }
        );
        assert!(out.contains("FAIL hangs: timed out after 1 s"), "{out}");
        assert!(start.elapsed() < Duration::from_secs(20));
        let bg: i32 = out
            .lines()
            .find_map(|l| l.strip_prefix("bg "))
            .and_then(|p| p.trim().parse().ok())
            .expect("the background pid");
        // The background sleep went with its group: gone, or a zombie
        // waiting for whoever reaps orphans here.
        std::thread::sleep(Duration::from_millis(200));
        let state = std::fs::read_to_string(format!("/proc/{bg}/stat")).unwrap_or_default();
        let state = state.rsplit(") ").next().and_then(|r| r.chars().next());
        assert!(
            matches!(state, None | Some('Z')),
            "sleep {bg} still {state:?}"
        );
    }

    #[test]
    fn a_program_that_cannot_start_fails_its_check() {
        let mut out = Vec::new();
        let plan = Plan {
            checks: vec![sh("missing", 5, "true")],
        };
        let s = run(
            &plan,
            Path::new("/nonexistent/svm"),
            Reap::OwnChildren,
            &mut out,
        );
        assert_eq!(
            s,
            Summary {
                passed: 0,
                failed: 1
            }
        );
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("FAIL missing: cannot start"));
    }
}
