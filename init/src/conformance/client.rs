//! The other direction (`svm conformance client`): a client
//! implementation, started with endpoints to one of our servers, runs its
//! own checks and reports one line per check on stdout (`PASS name`,
//! `FAIL name: why`, `SKIP name: why`; ipc.md, "Conformance endpoints").
//! Its lines become cases `Interface/client.<name>` judged against the
//! failure list like the server suite's.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ipc_protocol::schema::InterfaceDesc;

use super::target::{endpoint_env, spawn_with, stop, Target, DENIED_FD, ENDPOINT_FD};
use super::{CaseResult, Outcome};

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
    let mut child = match spawn_with(cmd, &fds, &env, Stdio::piped()) {
        Ok(c) => c,
        Err(e) => return vec![case("start", Outcome::Fail(e))],
    };
    // The client's copies are what it uses; ours would keep the server's
    // side open after the client exits.
    drop((full, denied));
    let mut stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_string(&mut text);
        }
        text
    });
    let deadline = Instant::now() + limit;
    let status = stop(
        &mut child,
        deadline.saturating_duration_since(Instant::now()),
    );
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

/// `PASS name`, `FAIL name: why` or `SKIP name: why`; other lines are the
/// client's own output.
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
