//! Control frames sent to the implementation (ipc.md, "Control frames and
//! restarts"):
//! - `control.malformed.<how>`: a `Restarted` broken in one way (unknown
//!   opcode, payload short or long, a handle) is dropped without an
//!   answer, changes nothing (what the caller holds is still there) and
//!   the next call is served;
//! - `control.restarted_from_caller`: a good `Restarted` from the caller
//!   drops the caller's session (what it held is gone), is not answered,
//!   and the endpoint stays open: the next call is served.
//!
//! "What the caller holds" is an object (`Pager`) or a VM (`Gpu`); other
//! interfaces have nothing a caller makes, so only the silence and the
//! next call are checked there.

use ipc_protocol::{Control, Interface, HEADER_LEN};

use super::golden::QUIET;
use super::recipes;
use super::{memfds, Outcome, Session};

/// A control frame broken in one way: (case, frame, handles to pass).
fn malformed<I: Interface>() -> Vec<(&'static str, Vec<u8>, usize)> {
    let good = || Control::Restarted { generation: 2 }.encode(I::ID);
    let set_len = |b: &mut Vec<u8>| {
        let len = (b.len() - HEADER_LEN) as u32;
        b[12..16].copy_from_slice(&len.to_le_bytes());
    };
    let mut opcode = good();
    opcode[8..10].copy_from_slice(&0xfff0u16.to_le_bytes());
    let mut short = good();
    short.truncate(HEADER_LEN + 2);
    set_len(&mut short);
    let mut long = good();
    long.push(0);
    set_len(&mut long);
    let mut handle = good();
    handle[11] = 1;
    vec![
        ("control.malformed.opcode", opcode, 0),
        ("control.malformed.short", short, 0),
        ("control.malformed.long", long, 0),
        ("control.malformed.handle", handle, 1),
    ]
}

pub fn run<I: Interface>(s: &mut Session<'_>) {
    for (case, frame, handles) in malformed::<I>() {
        let outcome = sent::<I>(s, &frame, handles, false);
        s.record(case, outcome);
    }
    let restarted = Control::Restarted { generation: 2 }.encode(I::ID);
    let outcome = sent::<I>(s, &restarted, 0, true);
    s.record("control.restarted_from_caller", outcome);
}

/// Sends `frame` while holding something, expects no answer, then that
/// the held thing is gone (`drops_session`) or still there, and that the
/// next call is served.
fn sent<I: Interface>(
    s: &mut Session<'_>,
    frame: &[u8],
    handles: usize,
    drops_session: bool,
) -> Outcome {
    let ep = match s.full() {
        Ok(ep) => ep,
        Err(e) => return Outcome::Fail(e),
    };
    let held = match recipes::hold(I::NAME, ep).transpose() {
        Ok(h) => h,
        Err(e) => return Outcome::Fail(format!("before: {e}")),
    };
    if let Err(e) = ep.send(frame, memfds(handles)) {
        return Outcome::Fail(format!("sending: {e}"));
    }
    if let Err(e) = ep.quiet_for(QUIET) {
        return Outcome::Fail(format!("a control frame must go unanswered: {e}"));
    }
    let kept = held.map(|h| (h, recipes::still_held(h, ep)));
    let verdict = match kept {
        None => Ok(()),
        Some((_, Err(e))) => Err(format!("afterwards: {e}")),
        Some((h, Ok(true))) if drops_session => Err(format!(
            "{h:?} made before the caller restarted is still there"
        )),
        Some((h, Ok(false))) if !drops_session => Err(format!(
            "{h:?} is gone: the server acted on a malformed control frame"
        )),
        Some((h, Ok(_))) => {
            recipes::release(h, ep);
            Ok(())
        }
    };
    if let Err(e) = verdict {
        return Outcome::Fail(e);
    }
    match recipes::liveness(I::NAME, ep) {
        Ok(()) => Outcome::Pass,
        Err(e) => Outcome::Fail(format!("the next call was not served: {e}")),
    }
}
