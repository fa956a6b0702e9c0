//! The runner: each scenario in a process of its own (`svm run FILE
//! --child NAME`), which boots its own system. The runner reads the
//! process's events, holds every step to its bound and the scenario to
//! its own, and on a hang kills the process (its servers stop when their
//! lifeline closes) and goes on with the next scenario.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::expand::Instance;
use super::format::ExpectFailure;
use super::report::Event;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// Failed, and marked as expected to fail until its issue lands.
    ExpectedFailure,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub ok: bool,
    pub what: String,
}

/// What one scenario did.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub name: String,
    pub file: String,
    pub covers: Vec<String>,
    pub ci: bool,
    pub verdict: Verdict,
    pub expect_failure: Option<ExpectFailure>,
    pub checks: Vec<Check>,
    /// Why it failed, when no check says it (an error, a hang, a crash),
    /// or why a verdict was changed.
    pub problems: Vec<String>,
    pub elapsed_s: f64,
    /// The last lines the scenario process wrote on stderr (server logs),
    /// kept for failures.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub stderr_tail: String,
}

/// How much of a failed scenario's stderr to keep.
const STDERR_TAIL: usize = 4000;

/// Runs `inst` in a child process of `exe` (the `svm` binary).
pub fn run(exe: &Path, inst: &Instance, long: bool) -> Outcome {
    let t0 = Instant::now();
    let mut cmd = Command::new(exe);
    cmd.arg("run")
        .arg(&inst.file)
        .arg("--child")
        .arg(&inst.name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if long {
        cmd.arg("--long");
    }
    let mut out = Outcome {
        name: inst.name.clone(),
        file: inst.file.display().to_string(),
        covers: inst.covers.clone(),
        ci: inst.ci,
        verdict: Verdict::Fail,
        expect_failure: inst.expect_failure.clone(),
        checks: vec![],
        problems: vec![],
        elapsed_s: 0.0,
        stderr_tail: String::new(),
    };
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            out.problems
                .push(format!("cannot start {}: {e}", exe.display()));
            return out;
        }
    };
    let (tx, rx) = mpsc::channel::<Option<String>>();
    let stdout = child.stdout.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(Some(line)).is_err() {
                return;
            }
        }
        let _ = tx.send(None);
    });
    let mut stderr = child.stderr.take().expect("piped");
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        let s = String::from_utf8_lossy(&buf).into_owned();
        let cut = s.len().saturating_sub(STDERR_TAIL);
        let cut = (cut..s.len())
            .find(|i| s.is_char_boundary(*i))
            .unwrap_or(s.len());
        s[cut..].to_string()
    });
    let scenario_deadline = t0 + inst.timeout;
    let mut step: Option<(String, Instant)> = None;
    let mut own_checks = 0usize;
    let mut in_teardown = false;
    // The last nested step that started, for a hang's message.
    let mut nested: Option<String> = None;
    let hang = loop {
        let deadline = step
            .as_ref()
            .map_or(scenario_deadline, |s| s.1.min(scenario_deadline));
        let wait = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Some(line)) => match serde_json::from_str::<Event>(&line) {
                Ok(Event::Step {
                    index,
                    op,
                    bound_ms,
                }) => {
                    in_teardown = op == "teardown";
                    nested = None;
                    let what = if in_teardown {
                        op
                    } else {
                        format!("step {index} ({op})")
                    };
                    step = Some((what, Instant::now() + Duration::from_millis(bound_ms)));
                }
                Ok(Event::Nested { path, op }) => nested = Some(format!("step {path} ({op})")),
                Ok(Event::Check { ok, what }) => {
                    own_checks += usize::from(!in_teardown);
                    out.checks.push(Check { ok, what });
                }
                Ok(Event::Error { what }) => out.problems.push(what),
                Err(_) => out.problems.push(format!("unreadable output: {line}")),
            },
            Ok(None) => break None,
            Err(mpsc::RecvTimeoutError::Disconnected) => break None,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                break Some(match &step {
                    Some((what, at)) if *at <= scenario_deadline => {
                        format!("{what} ran past its time bound: a hang")
                    }
                    _ => format!(
                        "the scenario ran past its {} s bound",
                        inst.timeout.as_secs()
                    ),
                })
            }
        }
    };
    if let Some(h) = hang {
        out.problems.push(match nested {
            Some(n) => format!("{h}; the last step it started inside: {n}"),
            None => h,
        });
        let _ = child.kill();
    }
    match child.wait() {
        Ok(s) if s.success() => {}
        Ok(s) if out.problems.is_empty() => out.problems.push(format!("scenario process: {s}")),
        Ok(_) => {}
        Err(e) => out
            .problems
            .push(format!("waiting for the scenario process: {e}")),
    }
    if own_checks == 0 && out.problems.is_empty() {
        out.problems.push("the scenario checked nothing".into());
    }
    out.elapsed_s = t0.elapsed().as_secs_f64();
    let failed = !out.problems.is_empty() || out.checks.iter().any(|c| !c.ok);
    out.verdict = judge(failed, &mut out);
    if out.verdict == Verdict::Fail {
        out.stderr_tail = err_reader.join().unwrap_or_default();
    }
    out
}

/// The verdict from whether it failed and what it was expected to do.
pub fn judge(failed: bool, out: &mut Outcome) -> Verdict {
    match (&out.expect_failure, failed) {
        (None, false) => Verdict::Pass,
        (None, true) => Verdict::Fail,
        (Some(x), true) => match &x.matches {
            Some(m)
                if !out
                    .problems
                    .iter()
                    .chain(out.checks.iter().filter(|c| !c.ok).map(|c| &c.what))
                    .any(|p| p.contains(m.as_str())) =>
            {
                out.problems.push(format!(
                    "expected to fail mentioning {m:?} (issue {}), but failed otherwise",
                    x.issue
                ));
                Verdict::Fail
            }
            _ => Verdict::ExpectedFailure,
        },
        (Some(x), false) => {
            out.problems.push(format!(
                "expected to fail until issue {} ({}), but it passed: remove expect_failure",
                x.issue, x.feature
            ));
            Verdict::Fail
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(x: Option<ExpectFailure>, problem: &str) -> Outcome {
        Outcome {
            name: "n".into(),
            file: "f".into(),
            covers: vec![],
            ci: true,
            verdict: Verdict::Fail,
            expect_failure: x,
            checks: vec![Check {
                ok: problem.is_empty(),
                what: problem.into(),
            }],
            problems: vec![],
            elapsed_s: 0.0,
            stderr_tail: String::new(),
        }
    }

    fn xf(matches: Option<&str>) -> Option<ExpectFailure> {
        Some(ExpectFailure {
            issue: 16,
            feature: "prefetch".into(),
            matches: matches.map(Into::into),
        })
    }

    #[test]
    fn verdicts() {
        assert_eq!(judge(false, &mut outcome(None, "")), Verdict::Pass);
        assert_eq!(judge(true, &mut outcome(None, "bad")), Verdict::Fail);
        assert_eq!(
            judge(true, &mut outcome(xf(None), "bad")),
            Verdict::ExpectedFailure
        );
        let mut o = outcome(xf(Some("NotSupported")), "server error: NotSupported");
        assert_eq!(judge(true, &mut o), Verdict::ExpectedFailure);
        let mut o = outcome(xf(Some("NotSupported")), "3 words wrong");
        assert_eq!(
            judge(true, &mut o),
            Verdict::Fail,
            "failed for another reason"
        );
        let mut o = outcome(xf(None), "");
        assert_eq!(
            judge(false, &mut o),
            Verdict::Fail,
            "an unexpected pass fails"
        );
        assert!(o.problems[0].contains("remove expect_failure"));
    }
}
