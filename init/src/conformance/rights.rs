//! Refusals: on an endpoint that holds no right, every call must be
//! answered `Denied` naming exactly the rights it needs (so no handler
//! runs, which also makes this safe on a live system), and a notification
//! must be dropped without an answer.

use ipc_protocol::client::RawError;
use ipc_protocol::Interface;

use super::endpoint::{Checked, RawEndpoint};
use super::golden::{self, GOLDEN_ID, QUIET};
use super::{memfds, Outcome, Session};

/// `rights.denied.<Message>` for every request of `I`.
pub fn run<I: Interface>(s: &mut Session<'_>) {
    let desc = I::schema();
    let ep = match s.open_denied() {
        Ok(ep) => ep,
        Err(e) => {
            for c in &desc.calls {
                s.record(&format!("rights.denied.{}", c.name), s.unreachable(&e));
            }
            return;
        }
    };
    for f in golden::requests(I::NAME) {
        let Some(call) = desc.call(f.message) else {
            continue;
        };
        let outcome = if call.one_way {
            dropped(&ep, &f.bytes, f.handles())
        } else {
            match ep
                .exchange(&f.bytes, memfds(f.handles()))
                .check::<I>(GOLDEN_ID, f.opcode())
            {
                Checked::Error(RawError::Denied(missing)) if missing == call.rights => {
                    Outcome::Pass
                }
                Checked::Error(RawError::Denied(missing)) => Outcome::Fail(format!(
                    "denied for {missing:?}; the call needs exactly {:?}",
                    call.rights
                )),
                Checked::Error(e) => Outcome::Fail(format!("expected Denied, got {e:?}")),
                Checked::Reply(r, _) => Outcome::Fail(format!("served without the right: {r:?}")),
                Checked::Closed => Outcome::Fail("closed the endpoint".into()),
                Checked::Bad(why) => Outcome::Fail(why),
            }
        };
        s.record(&format!("rights.denied.{}", f.message), outcome);
    }
}

fn dropped(ep: &RawEndpoint, frame: &[u8], handles: usize) -> Outcome {
    if let Err(e) = ep.send(frame, memfds(handles)) {
        return Outcome::Fail(format!("sending: {e}"));
    }
    match ep.quiet_for(QUIET) {
        Ok(()) => Outcome::Pass,
        Err(e) => Outcome::Fail(format!("a refused notification must go unanswered: {e}")),
    }
}
