//! The other direction (`svm conformance client`): a client
//! implementation, started with endpoints to one of our servers, runs its
//! own checks and reports one line per check on stdout (`PASS name`,
//! `FAIL name: why`, `SKIP name: why`; ipc.md, "Conformance endpoints").
//! Its lines become cases `Interface/client.<name>` judged against the
//! failure list like the server suite's. Where the target can restart the
//! server, the client also gets an endpoint to a restartable server and a
//! socket to ask for the restart on (`RestartHook`), to check what it does
//! with calls caught by a restart.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use ipc_protocol::schema::InterfaceDesc;

use super::restarter::{NoRestart, Restartable};
use super::target::{endpoint_env, spawn_with, stop, Target, DENIED_FD, ENDPOINT_FD};
use super::{CaseResult, Outcome};

/// Where a spawned client finds the endpoint whose server the suite
/// restarts on request, and the socket it asks on.
pub const RESTART_FD: i32 = 5;
pub const RESTART_CONTROL_FD: i32 = 6;

/// Runs `cmd` as a client of `iface` on endpoints from `target`, for at
/// most `limit`.
pub fn run(
    target: &mut dyn Target,
    iface: &InterfaceDesc,
    cmd: &str,
    limit: Duration,
) -> Vec<CaseResult> {
    let case = |name: &str, outcome| CaseResult {
        id: format!("{}/client.{name}", iface.name),
        outcome,
    };
    let full = match target.open(iface, false) {
        Ok(fd) => fd,
        Err(e) => return vec![case("start", Outcome::Fail(e))],
    };
    // Without an endpoint that lacks rights, the client skips its refusal checks.
    let denied = target.open(iface, true).ok();
    let mut env = endpoint_env(iface, "client", 0, iface.all_rights().bits());
    let mut fds = vec![(&full, ENDPOINT_FD)];
    if let Some(d) = &denied {
        fds.push((d, DENIED_FD));
        env.push(("XSVM_DENIED_FD".into(), DENIED_FD.to_string()));
    }
    let mut hook = RestartHook::open(target, iface);
    hook.pass(&mut fds, &mut env);
    let mut child = match spawn_with(cmd, &fds, &env, Stdio::piped()) {
        Ok(c) => c,
        Err(e) => return vec![case("start", Outcome::Fail(e))],
    };
    // The client's copies are what it uses; ours would keep the server's
    // side open after the client exits.
    drop((full, denied));
    hook.spawned();
    let mut stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_string(&mut text);
        }
        text
    });
    let status = hook.serve_until_exit(&mut child, Instant::now() + limit);
    drop(hook);
    let text = reader.join().unwrap_or_default();
    let mut results: Vec<CaseResult> = text
        .lines()
        .filter_map(parse_line)
        .map(|(n, o)| case(&n, o))
        .collect();
    let exit = match status {
        None => Outcome::Fail(format!("did not finish within {limit:?}; killed")),
        Some(s) if s.success() => Outcome::Pass,
        Some(s)
            if results
                .iter()
                .any(|r| matches!(r.outcome, Outcome::Fail(_))) =>
        {
            Outcome::Note(format!("exited {s} after reporting failures"))
        }
        Some(s) => Outcome::Fail(format!("exited {s} without reporting a failure")),
    };
    if results.is_empty() {
        results.push(case("checks", Outcome::Fail("reported no checks".into())));
    }
    results.push(case("exit", exit));
    results
}

/// The restart hook of one client run: the endpoint and the socket handed
/// to the client, and what restarts its server. The client writes `pause`
/// or `restart`, one a line, and reads `paused`, `restarted <generation>`
/// or `error <why>` back (ipc.md, "Conformance endpoints").
struct RestartHook<'t> {
    /// Ours until the client has its copies.
    passed: Option<(OwnedFd, OwnedFd)>,
    requests: Option<BufReader<UnixStream>>,
    restartable: Option<Box<dyn Restartable + 't>>,
    /// Why there is none, for the client to report.
    unavailable: Option<String>,
}

impl<'t> RestartHook<'t> {
    fn open(target: &'t mut dyn Target, iface: &InterfaceDesc) -> Self {
        let none = |why: String| Self {
            passed: None,
            requests: None,
            restartable: None,
            unavailable: Some(why),
        };
        let (fd, restartable) = match target.open_restartable(iface) {
            Ok(r) => r,
            Err(NoRestart::Unsupported(why) | NoRestart::NotRestartable(why)) => return none(why),
        };
        let (ours, theirs) = match UnixStream::pair() {
            Ok(p) => p,
            Err(e) => return none(format!("socketpair: {e}")),
        };
        Self {
            passed: Some((fd, OwnedFd::from(theirs))),
            requests: Some(BufReader::new(ours)),
            restartable: Some(restartable),
            unavailable: None,
        }
    }

    fn pass<'a>(&'a self, fds: &mut Vec<(&'a OwnedFd, i32)>, env: &mut Vec<(String, String)>) {
        if let Some((endpoint, control)) = &self.passed {
            fds.push((endpoint, RESTART_FD));
            fds.push((control, RESTART_CONTROL_FD));
            env.push(("XSVM_RESTART_FD".into(), RESTART_FD.to_string()));
            env.push((
                "XSVM_RESTART_CONTROL_FD".into(),
                RESTART_CONTROL_FD.to_string(),
            ));
        }
        if let Some(why) = &self.unavailable {
            env.push(("XSVM_RESTART_UNAVAILABLE".into(), why.clone()));
        }
    }

    /// The client holds its copies now.
    fn spawned(&mut self) {
        self.passed = None;
    }

    /// Answers the client's requests until it exits or `deadline` passes
    /// (then it is killed: `None`).
    fn serve_until_exit(
        &mut self,
        child: &mut Child,
        deadline: Instant,
    ) -> Option<std::process::ExitStatus> {
        let mut line = String::new();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return stop(child, Duration::ZERO);
            }
            match (self.requests.as_mut(), self.restartable.as_deref_mut()) {
                (Some(requests), Some(r)) => {
                    if !answer_request(requests, r, &mut line) {
                        self.requests = None;
                    }
                }
                _ => std::thread::sleep(POLL),
            }
        }
    }
}

/// How long the suite waits for a request before it looks at the client.
const POLL: Duration = Duration::from_millis(10);

/// Reads what the client asks, for up to [`POLL`], and answers it; false
/// once the client closed the socket.
fn answer_request(
    requests: &mut BufReader<UnixStream>,
    restartable: &mut dyn Restartable,
    line: &mut String,
) -> bool {
    let _ = requests.get_ref().set_read_timeout(Some(POLL));
    match requests.read_line(line) {
        Ok(0) => return false,
        Ok(_) if line.ends_with('\n') => {}
        Ok(_) => return true,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return true,
        Err(_) => return false,
    }
    let answer = match line.trim() {
        "pause" => restartable.pause().map(|()| "paused".to_string()),
        "restart" => restartable.restart().map(|g| format!("restarted {g}")),
        other => Err(format!("no such request: {other:?}")),
    };
    line.clear();
    let text = answer.unwrap_or_else(|e| format!("error {}", e.replace('\n', " ")));
    writeln!(requests.get_mut(), "{text}").is_ok()
}

fn parse_line(line: &str) -> Option<(String, Outcome)> {
    let (word, rest) = line.split_once(' ')?;
    let (name, why) = match rest.split_once(": ") {
        Some((n, w)) => (n.trim(), w.trim().to_string()),
        None => (rest.trim(), String::new()),
    };
    if name.is_empty() || name.contains(' ') {
        return None;
    }
    let outcome = match word {
        "PASS" if why.is_empty() => Outcome::Pass,
        "PASS" => Outcome::Note(why),
        "FAIL" => Outcome::Fail(why),
        "SKIP" => Outcome::Skip(why),
        _ => return None,
    };
    Some((name.to_string(), outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_parse_and_other_output_is_ignored() {
        assert_eq!(
            parse_line("PASS golden.decode"),
            Some(("golden.decode".into(), Outcome::Pass))
        );
        assert_eq!(
            parse_line("FAIL rights.Snapshot: got Reply"),
            Some(("rights.Snapshot".into(), Outcome::Fail("got Reply".into())))
        );
        assert_eq!(parse_line("connecting to the server"), None);
        assert_eq!(parse_line("PASS two words"), None);
    }
}
