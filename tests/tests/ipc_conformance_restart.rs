//! The suite's control-frame and restart cases must fail against servers
//! that break the rules of docs/ipc.md ("Control frames and restarts"),
//! and pass against one that keeps them: an in-process `Pager` server
//! (the stub's handler behind a serve loop written here) that the suite
//! can pause and restart, whose mistakes are chosen per test. The real
//! implementations are run in `ipc_conformance.rs`.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use init::conformance::restarter::{NoRestart, Restartable};
use init::conformance::target::{RestartableEndpoint, Target};
use init::conformance::{CaseResult, Options, Outcome};
use ipc_protocol::interfaces::pager::Pager;
use ipc_protocol::schema::InterfaceDesc;
use ipc_protocol::server::{announce_restart, dispatch, Handler};
use ipc_protocol::transport::{SeqPacket, Transport, TransportError};
use ipc_protocol::{Capability, Rights};
use tests::conformance_server::ConformancePager;

/// How the fake server gets restarts and control frames wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// Restarted, it never announces.
    NeverAnnounces,
    /// Restarted, it answers one request before announcing.
    AnswersFirst,
    /// Announces a generation other than the one it was started as.
    WrongGeneration,
    /// A `Restarted` from the caller does not end the caller's session.
    KeepsSessions,
    /// Any control frame, malformed or not, ends the caller's session.
    ActsOnMalformed,
}

#[derive(Default)]
struct State {
    /// The suite asked it to stop reading.
    paused: bool,
    /// The loop saw `paused` and stopped reading.
    parked: bool,
    generation: u32,
    /// The new generation has not announced yet.
    must_announce: bool,
}

struct Fake {
    fault: Fault,
    state: Mutex<State>,
    changed: Condvar,
    handler: Mutex<Arc<ConformancePager>>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Fake {
    fn start(fault: Fault) -> Result<(OwnedFd, Arc<Self>), String> {
        let (mine, theirs) = SeqPacket::pair().map_err(|e| e.to_string())?;
        let fake = Arc::new(Self {
            fault,
            state: Mutex::new(State {
                generation: 1,
                ..State::default()
            }),
            changed: Condvar::new(),
            handler: Mutex::new(Arc::default()),
        });
        let f = fake.clone();
        std::thread::spawn(move || f.serve(&theirs));
        let fd = mine.fd().as_fd().try_clone_to_owned();
        Ok((fd.map_err(|e| e.to_string())?, fake))
    }

    /// Waits while paused; the generation to announce, if it must now.
    fn wait_turn(&self) -> Option<u32> {
        let mut st = lock(&self.state);
        while st.paused {
            st.parked = true;
            self.changed.notify_all();
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.parked = false;
        let announce = st.must_announce && self.fault != Fault::AnswersFirst;
        st.must_announce &= !announce;
        announce.then_some(st.generation)
    }

    fn serve(&self, link: &SeqPacket) {
        let caller = Capability::new(7, Rights::all());
        loop {
            if let Some(g) = self.wait_turn() {
                if self.announce(link, g).is_err() {
                    return;
                }
            }
            let rx = match link.recv(Some(Duration::from_millis(20))) {
                Ok(rx) => rx,
                Err(TransportError::TimedOut) => continue,
                Err(_) => return,
            };
            let handler = self.handler.lock().unwrap().clone();
            let control = rx.bytes.get(10) == Some(&5);
            let out = match (self.fault, control) {
                (Fault::KeepsSessions, true) => None,
                (Fault::ActsOnMalformed, true) => {
                    handler.disconnected(&caller);
                    None
                }
                _ => dispatch::<Pager, _>(&caller, &*handler, rx),
            };
            if let Some((frame, handles)) = out {
                if link.send(&frame, handles).is_err() {
                    return;
                }
                let late = std::mem::take(&mut lock(&self.state).must_announce);
                if late && self.announce(link, lock(&self.state).generation).is_err() {
                    return;
                }
            }
        }
    }

    fn announce(&self, link: &SeqPacket, generation: u32) -> Result<(), TransportError> {
        match self.fault {
            Fault::NeverAnnounces => Ok(()),
            Fault::WrongGeneration => announce_restart::<Pager>(link, generation + 5),
            _ => announce_restart::<Pager>(link, generation),
        }
    }
}

/// The suite's view of one fake server.
struct Restarts(Arc<Fake>);

impl Restartable for Restarts {
    fn generation(&self) -> u32 {
        lock(&self.0.state).generation
    }
    fn pause(&mut self) -> Result<(), String> {
        let mut st = lock(&self.0.state);
        st.paused = true;
        while !st.parked {
            let (s, t) = self
                .0
                .changed
                .wait_timeout(st, Duration::from_secs(10))
                .unwrap();
            st = s;
            if t.timed_out() {
                return Err("the fake server did not stop reading".into());
            }
        }
        Ok(())
    }
    fn restart(&mut self) -> Result<u32, String> {
        // A new process knows nothing of the old one's sessions.
        *self.0.handler.lock().unwrap() = Arc::default();
        let mut st = lock(&self.0.state);
        st.generation += 1;
        st.must_announce = true;
        st.paused = false;
        self.0.changed.notify_all();
        Ok(st.generation)
    }
}

struct FakeTarget(Fault);

impl Target for FakeTarget {
    fn open(&mut self, _: &InterfaceDesc, _: bool) -> Result<OwnedFd, String> {
        Ok(Fake::start(self.0)?.0)
    }
    fn open_restartable(
        &mut self,
        _: &InterfaceDesc,
    ) -> Result<RestartableEndpoint<'_>, NoRestart> {
        let (fd, fake) = Fake::start(self.0).map_err(NoRestart::NotRestartable)?;
        Ok((fd, Box::new(Restarts(fake))))
    }
}

fn results(fault: Fault) -> Vec<CaseResult> {
    let opts = Options {
        timeout: Duration::from_secs(3),
    };
    init::conformance::run_interface(&mut FakeTarget(fault), "Pager", &opts)
}

fn outcome<'a>(results: &'a [CaseResult], case: &str) -> &'a Outcome {
    let id = format!("Pager/{case}");
    &results
        .iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("no case {id}"))
        .outcome
}

fn assert_fails(results: &[CaseResult], case: &str, why: &str) {
    match outcome(results, case) {
        Outcome::Fail(w) if w.contains(why) => {}
        other => panic!("{case}: expected a failure saying {why:?}, got {other:?}"),
    }
}

const CONTROL_CASES: [&str; 5] = [
    "control.malformed.opcode",
    "control.malformed.short",
    "control.malformed.long",
    "control.malformed.handle",
    "control.restarted_from_caller",
];

#[test]
fn a_server_that_keeps_the_rules_passes_every_control_and_restart_case() {
    let r = results(Fault::None);
    for case in CONTROL_CASES
        .iter()
        .chain(&init::conformance::restart::CASES)
    {
        assert!(
            outcome(&r, case).passed(),
            "{case}: {:?}",
            outcome(&r, case)
        );
    }
}

#[test]
fn a_server_that_never_announces_fails_the_restart_cases() {
    let r = results(Fault::NeverAnnounces);
    assert_fails(&r, "restart.announced", "");
    assert_fails(&r, "restart.waiting_call_fails", "before announcing");
}

#[test]
fn a_server_that_answers_before_announcing_fails_the_waiting_call_case() {
    let r = results(Fault::AnswersFirst);
    assert_fails(&r, "restart.waiting_call_fails", "before announcing");
    // It does announce, late: the rest of the restart is fine.
    assert!(outcome(&r, "restart.announced").passed());
    assert!(outcome(&r, "restart.next_call_served").passed());
}

#[test]
fn a_server_that_announces_the_wrong_generation_fails_the_announcement() {
    let r = results(Fault::WrongGeneration);
    assert_fails(&r, "restart.announced", "announced generation 7");
}

#[test]
fn a_server_that_keeps_a_restarted_callers_session_fails() {
    let r = results(Fault::KeepsSessions);
    assert_fails(&r, "control.restarted_from_caller", "is still there");
}

#[test]
fn a_server_that_acts_on_malformed_control_frames_fails() {
    let r = results(Fault::ActsOnMalformed);
    for case in &CONTROL_CASES[..4] {
        assert_fails(&r, case, "is gone");
    }
}

#[test]
fn over_connect_the_restart_cases_are_skipped() {
    struct NoRestarts;
    impl Target for NoRestarts {
        fn open(&mut self, _: &InterfaceDesc, _: bool) -> Result<OwnedFd, String> {
            Ok(Fake::start(Fault::None)?.0)
        }
    }
    let opts = Options {
        timeout: Duration::from_secs(3),
    };
    let r = init::conformance::run_interface(&mut NoRestarts, "Pager", &opts);
    for case in init::conformance::restart::CASES {
        assert!(
            matches!(outcome(&r, case), Outcome::Skip(_)),
            "{case}: {:?}",
            outcome(&r, case)
        );
    }
}
