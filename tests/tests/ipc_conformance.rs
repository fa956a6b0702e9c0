//! The black-box IPC suite (`init::conformance`, `svm conformance ipc`)
//! against the stub server and the Python implementation, the Python
//! client against both, and the suite's own negative checks: a server that
//! ignores rights or answers garbage must fail it, and a failure list that
//! lists a passing case must fail the run. The booted system's run is in
//! `init/tests/conformance.rs`. Every run is bounded in time.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use init::conformance::command::{self, Request, Where};
use init::conformance::failures::Summary;
use init::conformance::target::Target;
use init::conformance::Options;
use ipc_protocol::interfaces::pager::Pager;
use ipc_protocol::schema::InterfaceDesc;
use ipc_protocol::transport::SeqPacket;
use ipc_protocol::{Capability, Rights};
use tests::conformance_server::ConformancePager;

const LIMIT: Duration = Duration::from_secs(120);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn failures(name: &str) -> PathBuf {
    repo()
        .join("tests/conformance")
        .join(format!("failures-{name}.txt"))
}

fn python(script: &str) -> Option<String> {
    let found = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("SKIPPED: python3 is not installed; the Python implementation was not run");
        return None;
    }
    let path = repo().join("tests/ipc-python").join(script);
    Some(format!("python3 {}", path.display()))
}

/// Runs `req` in its own thread and fails the test if it takes over `LIMIT`.
fn run(req: Request) -> (Summary, String) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let r = command::run(req, &mut out);
        let _ = tx.send((r, String::from_utf8_lossy(&out).into_owned()));
    });
    let (r, out) = rx
        .recv_timeout(LIMIT)
        .expect("the suite finished within its time bound");
    (
        r.unwrap_or_else(|e| panic!("the suite did not start: {e}")),
        out,
    )
}

fn request(target: Where, failures: Vec<PathBuf>, client: Option<String>) -> Request {
    Request {
        target,
        interfaces: vec![],
        failures,
        options: Options {
            timeout: Duration::from_secs(10),
        },
        client: client.map(|c| (c, LIMIT / 2)),
    }
}

fn assert_passes(summary: Summary, out: &str, at_least: usize) {
    assert!(summary.ok(), "{out}\n{summary}");
    assert!(
        summary.passed >= at_least,
        "only {} passed:\n{out}",
        summary.passed
    );
}

fn stub() -> Where {
    Where::Spawn(env!("CARGO_BIN_EXE_ipc-conformance-server").into())
}

/// The control-frame cases, and the restart cases when the suite could
/// restart the implementation, all passed.
fn assert_restarts_pass(out: &str, restarted: bool) {
    for case in [
        "control.malformed.opcode",
        "control.malformed.short",
        "control.malformed.long",
        "control.malformed.handle",
        "control.restarted_from_caller",
    ] {
        assert!(
            out.contains(&format!("PASS  Pager/{case}")),
            "{case}:\n{out}"
        );
    }
    for case in init::conformance::restart::CASES {
        let line = if restarted {
            format!("PASS  Pager/{case}")
        } else {
            format!("SKIP  Pager/{case}")
        };
        assert!(out.contains(&line), "no `{line}`:\n{out}");
    }
    if restarted {
        assert!(
            out.contains("PASS  Pager/restart.announced (generation 2)"),
            "{out}"
        );
    }
}

#[test]
fn the_suite_passes_against_the_stub_server() {
    let (s, out) = run(request(stub(), vec![failures("stub")], None));
    assert_passes(s, &out, 40);
    assert_eq!(s.expected_failures, 0, "{out}");
    assert_restarts_pass(&out, true);
}

#[test]
fn the_suite_passes_against_the_python_server() {
    let Some(server) = python("server.py") else {
        return;
    };
    let (s, out) = run(request(
        Where::Spawn(server),
        vec![failures("python")],
        None,
    ));
    assert_passes(s, &out, 40);
    assert_restarts_pass(&out, true);
}

/// Kills the listening Python server when the test ends, however it ends.
struct Listening(std::process::Child);

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_suite_passes_against_the_python_server_over_connect() {
    let Some(server) = python("server.py") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("xsvm-conformance-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (full, denied) = (dir.join("full.sock"), dir.join("denied.sock"));
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "exec {server} --listen {} --listen-denied {}",
            full.display(),
            denied.display()
        ))
        .stdout(Stdio::null());
    let _server = Listening(cmd.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(full.exists() && denied.exists()) {
        assert!(
            Instant::now() < deadline,
            "the Python server did not start listening"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let target = Where::Connect {
        path: full,
        denied: Some(denied),
    };
    let (s, out) = run(request(target, vec![failures("python")], None));
    assert_passes(s, &out, 35);
    assert!(out.contains("PASS  Pager/rights.denied.Snapshot"), "{out}");
    // The suite did not start it, so it cannot restart it.
    assert_restarts_pass(&out, false);
}

#[test]
fn the_python_codec_rebuilds_the_golden_file_from_the_doc() {
    let Some(cmd) = python("selftest.py") else {
        return;
    };
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("timeout 60 {cmd}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!(
            "PASS golden.rebuild: {} frames byte for byte",
            golden_frames()
        )),
        "{text}"
    );
}

#[test]
fn the_python_client_passes_against_the_stub_and_the_python_server() {
    let (Some(client), Some(server)) = (python("client_check.py"), python("server.py")) else {
        return;
    };
    let list = vec![failures("python-client")];
    for target in [stub(), Where::Spawn(server)] {
        let (s, out) = run(request(target, list.clone(), Some(client.clone())));
        assert_passes(s, &out, 15);
        assert!(
            out.contains("PASS  Pager/client.pager.object_lifecycle"),
            "{out}"
        );
        // The suite restarted the server under the client, twice.
        for check in [
            "restart.waiting_call_fails (PeerRestarted, generation 2)",
            "restart.idempotent_call_resent (Snapshot sent again, answered NoSuchObject)",
            "restart.next_call_served",
        ] {
            let line = format!("PASS  Pager/client.{check}");
            assert!(out.contains(&line), "no `{line}`:\n{out}");
        }
    }
}

/// The stub in this process, its refusals broken on purpose: the endpoint
/// the suite believes holds no right holds every right.
struct IgnoresRights;

impl Target for IgnoresRights {
    fn open(&mut self, _: &InterfaceDesc, _denied: bool) -> Result<OwnedFd, String> {
        let (mine, theirs) = SeqPacket::pair().map_err(|e| e.to_string())?;
        ipc_protocol::server::spawn::<Pager, _>(
            "broken",
            Arc::new(theirs),
            Capability::new(7, Rights::all()),
            Arc::new(ConformancePager::default()),
            1,
        );
        mine.fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| e.to_string())
    }
}

/// Answers every frame with itself: no frame it sends back is a valid answer.
struct Echo;

impl Target for Echo {
    fn open(&mut self, _: &InterfaceDesc, _: bool) -> Result<OwnedFd, String> {
        use ipc_protocol::transport::Transport;
        let (mine, theirs) = SeqPacket::pair().map_err(|e| e.to_string())?;
        std::thread::spawn(move || {
            while let Ok(rx) = theirs.recv(None) {
                if theirs.send(&rx.bytes, Vec::new()).is_err() {
                    return;
                }
            }
        });
        mine.fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| e.to_string())
    }
}

fn results_of(t: &mut dyn Target) -> Vec<init::conformance::CaseResult> {
    let opts = Options {
        timeout: Duration::from_secs(2),
    };
    init::conformance::run_interface(t, "Pager", &opts)
}

/// Frames in the golden file (every line but the header comment).
fn golden_frames() -> usize {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/golden/ipc-v1.txt");
    std::fs::read_to_string(path)
        .expect("the golden file")
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

#[test]
fn a_server_that_ignores_rights_fails_every_refusal_case() {
    let results = results_of(&mut IgnoresRights);
    let rights: Vec<_> = results
        .iter()
        .filter(|r| r.id.contains("/rights.denied."))
        .collect();
    // One refusal case per Pager request (the suite's default interface).
    let calls = <ipc_protocol::interfaces::pager::Pager as ipc_protocol::Interface>::schema()
        .calls
        .len();
    assert_eq!(rights.len(), calls);
    for r in rights {
        assert!(
            !r.outcome.passed(),
            "{} passed against a server that ignores rights",
            r.id
        );
    }
    // The rest of the suite still passes against it.
    assert!(results
        .iter()
        .any(|r| r.id.ends_with("malformed.magic") && r.outcome.passed()));
}

#[test]
fn a_server_that_answers_garbage_fails_the_golden_malformed_and_control_cases() {
    let results = results_of(&mut Echo);
    let checked: Vec<_> = results
        .iter()
        .filter(|r| {
            ["/golden.", "/malformed.", "/control."]
                .iter()
                .any(|c| r.id.contains(c))
        })
        .collect();
    assert!(checked.len() > 30);
    for r in checked {
        assert!(
            !r.outcome.passed(),
            "{} passed against an echo: {:?}",
            r.id,
            r.outcome
        );
    }
}

#[test]
fn a_listed_case_that_passes_fails_the_run() {
    let dir = std::env::temp_dir().join(format!("xsvm-failures-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let list = dir.join("failures.txt");
    std::fs::write(
        &list,
        "Pager/malformed.magic  # wrongly listed\n\
         Pager/restart.endpoint_generation  # a case that no longer exists\n",
    )
    .unwrap();
    let (s, out) = run(request(stub(), vec![list.clone()], None));
    assert_eq!((s.unexpected_passes, s.stale), (1, 1), "{out}");
    assert!(!s.ok());
    assert!(out.contains("XPASS Pager/malformed.magic"), "{out}");
    assert!(
        out.contains("STALE Pager/restart.endpoint_generation"),
        "{out}"
    );
    // And an unlisted failure fails it as well: the stub serves no `Gpu`.
    std::fs::write(&list, "").unwrap();
    let mut req = request(stub(), vec![list], None);
    req.interfaces = vec!["Gpu".into()];
    let (s, out) = run(req);
    assert!(s.failed > 0, "{out}");
    assert!(!s.ok());
}
