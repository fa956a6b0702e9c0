//! What a caller sees across a restart of the implementation (ipc.md,
//! "Control frames and restarts"). The suite stops the implementation,
//! sends two calls that now wait in the socket (one it would not resend,
//! one idempotent), kills it and has it started again on the same
//! endpoint as the next generation, then checks, as a caller would:
//! - `restart.announced`: the first frame of the new generation is a
//!   well-formed `Restarted` of this interface with its generation;
//! - `restart.waiting_call_fails`: no answer to a waiting call comes
//!   before the announcement (so a caller fails those calls with
//!   `PeerRestarted` instead of taking the new process's answer for the
//!   old one's);
//! - `restart.idempotent_call_answered`: the idempotent call, sent again,
//!   is answered by the new generation (late answers to the failed calls
//!   are dropped, as a caller drops them);
//! - `restart.next_call_served`: the next call is served.
//!
//! An implementation that cannot be restarted yet fails all four (the
//! failure list says why: [`not_restartable_list`]); one the suite did
//! not start (`--connect`) skips them.

use std::fmt::Write as _;

use ipc_protocol::frame::encode_raw;
use ipc_protocol::transport::TransportError;
use ipc_protocol::{Control, Frame, Interface, Kind};

use super::endpoint::{fresh_id, hex, Checked, RawEndpoint};
use super::recipes::{self, RawCall};
use super::restarter::{NoRestart, Restartable};
use super::{Outcome, Session};

pub const ANNOUNCED: &str = "restart.announced";
pub const WAITING_CALL_FAILS: &str = "restart.waiting_call_fails";
pub const IDEMPOTENT_CALL_ANSWERED: &str = "restart.idempotent_call_answered";
pub const NEXT_CALL_SERVED: &str = "restart.next_call_served";
/// Every restart case, in the order they are recorded.
pub const CASES: [&str; 4] = [
    ANNOUNCED,
    WAITING_CALL_FAILS,
    IDEMPOTENT_CALL_ANSWERED,
    NEXT_CALL_SERVED,
];

/// The failure-list entries of a booted system that follow from
/// `init::manifest::RESTARTABLE`: every restart case of every interface
/// whose server is not restartable yet. Built here, not written in the
/// lists, so that making a server restartable needs no list edit.
pub fn not_restartable_list() -> String {
    use crate::manifest::{CONFORMANCE, RESTARTABLE};
    let mut out = String::new();
    for c in CONFORMANCE
        .iter()
        .filter(|c| !RESTARTABLE.contains(&c.process))
    {
        for case in CASES {
            let _ = writeln!(
                out,
                "{}/{case}  # {} is not restartable yet (issue 14)",
                c.interface, c.process
            );
        }
    }
    out
}

pub fn run<I: Interface>(s: &mut Session<'_>) {
    for (case, outcome) in CASES.iter().zip(outcomes::<I>(s)) {
        s.record(case, outcome);
    }
}

fn all(o: Outcome) -> [Outcome; 4] {
    [o.clone(), o.clone(), o.clone(), o]
}

fn outcomes<I: Interface>(s: &mut Session<'_>) -> [Outcome; 4] {
    let (Some(waiting), Some(idempotent)) = (
        recipes::waiting_call(I::NAME),
        recipes::idempotent_call(I::NAME),
    ) else {
        return all(Outcome::Fail(format!(
            "the suite has no safe calls for {}",
            I::NAME
        )));
    };
    let timeout = s.timeout;
    let (fd, mut restartable) = match s.target.open_restartable(&s.iface) {
        Ok(r) => r,
        Err(NoRestart::Unsupported(why)) => return all(Outcome::Skip(why)),
        Err(NoRestart::NotRestartable(why)) => return all(Outcome::Fail(why)),
    };
    let ep = RawEndpoint::new(fd, timeout);
    let calls = Calls {
        waiting,
        idempotent,
    };
    let out = across_a_restart::<I>(&ep, &mut *restartable, &calls)
        .unwrap_or_else(|e| all(Outcome::Fail(e)));
    // Our end first: a spawned implementation exits when it closes.
    drop(ep);
    drop(restartable);
    out
}

struct Calls {
    /// Sent before the restart, not sent again.
    waiting: RawCall,
    /// Sent before the restart, and again after it.
    idempotent: RawCall,
}

fn frame<I: Interface>(call: &RawCall, id: u64) -> Vec<u8> {
    encode_raw(I::ID, call.0, Kind::Request, 0, id, &call.1)
}

/// The four outcomes, or why the restart itself could not be done.
fn across_a_restart<I: Interface>(
    ep: &RawEndpoint,
    r: &mut dyn Restartable,
    calls: &Calls,
) -> Result<[Outcome; 4], String> {
    recipes::liveness(I::NAME, ep).map_err(|e| format!("before the restart: {e}"))?;
    let before = r.generation();
    r.pause()?;
    let ids = [fresh_id(), fresh_id()];
    for (call, id) in [&calls.waiting, &calls.idempotent].into_iter().zip(ids) {
        ep.send(&frame::<I>(call, id), Vec::new())
            .map_err(|e| format!("sending to the stopped generation: {e}"))?;
    }
    let generation = r.restart()?;
    if generation <= before {
        return Err(format!(
            "restarted as generation {generation} after {before}"
        ));
    }
    let heard = await_announcement::<I>(ep, &ids, generation);
    // A caller gives up on both: their answers, if any come, are late.
    ids.iter().for_each(|id| ep.give_up(*id));
    Ok([
        announced(&heard, generation),
        waiting_call_fails(&heard),
        idempotent_call_answered::<I>(ep, &calls.idempotent),
        match recipes::liveness(I::NAME, ep) {
            Ok(()) => Outcome::Pass,
            Err(e) => Outcome::Fail(format!("after the restart: {e}")),
        },
    ])
}

/// What arrived after the restart up to the announcement.
struct Heard {
    /// The announced generation, or what was wrong.
    announcement: Result<u32, String>,
    /// Waiting calls answered before it.
    answered_first: Vec<u64>,
}

/// Reads frames until a control frame arrives; answers to the waiting
/// calls `ids` before it are recorded.
fn await_announcement<I: Interface>(ep: &RawEndpoint, ids: &[u64], generation: u32) -> Heard {
    let mut answered_first = Vec::new();
    let announcement = loop {
        let rx = match ep.recv() {
            Ok(rx) => rx,
            Err(TransportError::TimedOut) => {
                break Err(format!(
                    "no Restarted announcement within {:?}",
                    ep.timeout()
                ))
            }
            Err(e) => break Err(format!("transport: {e}")),
        };
        let id = ipc_protocol::Header::peek_request_id(&rx.bytes);
        match rx.bytes.get(10) {
            Some(5) => break check_announcement::<I>(&rx, generation),
            Some(2 | 3) if ids.contains(&id) => answered_first.push(id),
            _ => break Err(format!("an unexpected frame: {}", hex(&rx.bytes))),
        }
    };
    Heard {
        announcement,
        answered_first,
    }
}

/// A well-formed `Restarted` of interface `I` for `generation`.
fn check_announcement<I: Interface>(
    rx: &ipc_protocol::transport::Received,
    generation: u32,
) -> Result<u32, String> {
    let f = Frame::parse(&rx.bytes, rx.handles.len())
        .map_err(|e| format!("a malformed control frame ({e:?}): {}", hex(&rx.bytes)))?;
    let h = f.header;
    if h.interface != I::ID {
        return Err(format!(
            "announced on interface {}, not {}",
            h.interface,
            I::ID
        ));
    }
    if h.request_id != 0 {
        return Err(format!(
            "announced with request id {:#x}, not 0",
            h.request_id
        ));
    }
    match Control::decode(&f) {
        Ok(Control::Restarted { generation: g }) if g == generation => Ok(g),
        Ok(Control::Restarted { generation: g }) => Err(format!(
            "announced generation {g}; it was started as {generation}"
        )),
        Err(e) => Err(format!("a control frame that is not Restarted ({e:?})")),
    }
}

fn announced(heard: &Heard, generation: u32) -> Outcome {
    match &heard.announcement {
        Ok(_) => Outcome::Note(format!("generation {generation}")),
        Err(why) => Outcome::Fail(why.clone()),
    }
}

fn waiting_call_fails(heard: &Heard) -> Outcome {
    match (&heard.announcement, heard.answered_first.as_slice()) {
        (_, [first, ..]) => Outcome::Fail(format!(
            "answered call {first:#x} before announcing the restart: a caller takes the new \
             process's answer for the old one's"
        )),
        (Ok(_), []) => Outcome::Pass,
        (Err(_), []) => Outcome::Fail(
            "no announcement: a caller cannot tell that its waiting calls died".into(),
        ),
    }
}

fn idempotent_call_answered<I: Interface>(ep: &RawEndpoint, call: &RawCall) -> Outcome {
    let id = fresh_id();
    match ep
        .exchange(&frame::<I>(call, id), Vec::new())
        .check::<I>(id, call.0)
    {
        Checked::Reply(..) => Outcome::Pass,
        Checked::Error(ipc_protocol::client::RawError::Server(e)) => {
            Outcome::Note(format!("answered {e:?}"))
        }
        Checked::Error(e) => Outcome::Fail(format!("sent again: {e:?}")),
        Checked::Closed => Outcome::Fail("the endpoint closed".into()),
        Checked::Bad(why) => Outcome::Fail(format!("sent again: {why}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_entries_name_every_restart_case_of_every_server_not_restartable() {
        let list = not_restartable_list();
        // mm-server, xe-svm and the pager are all restartable (issue 14).
        for iface in [
            "Pressure/",
            "Gpu/",
            "GpuNotify/",
            "GpuShrink/",
            "Pager",
            "PagerMigrate",
        ] {
            assert!(!list.contains(iface), "{iface} is restartable:\n{list}");
        }
        assert!(list.is_empty(), "{list}");
        let mut parsed = super::super::failures::FailureList::default();
        parsed.add("generated", &list).unwrap();
    }

    #[test]
    fn every_interface_has_the_calls_a_restart_needs() {
        for desc in ipc_protocol::interfaces::all() {
            let (waiting, again) = (
                recipes::waiting_call(desc.name).unwrap(),
                recipes::idempotent_call(desc.name).unwrap(),
            );
            let call = |opcode| desc.calls.iter().find(|c| c.opcode == opcode).unwrap();
            assert!(!call(waiting.0).one_way, "{}", desc.name);
            let resent = call(again.0);
            assert!(
                resent.idempotent && resent.handles_in == 0,
                "{}.{} is not idempotent",
                desc.name,
                resent.name
            );
        }
    }
}
