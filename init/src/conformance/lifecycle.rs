//! Ids over time: a destroyed id stays dead and is not handed out again
//! (`generation.stale_id`), and what happens across a server restart
//! (`restart.*`). No restart protocol exists yet: the case fails with the
//! reason, and every implementation's failure list records the gap.

use ipc_protocol::Interface;

use super::{recipes, Outcome, Session};

/// Why `restart.endpoint_generation` fails everywhere today.
pub const NO_RESTART: &str = "no restart protocol: a server that dies is not restarted, and \
     endpoints and ids carry no generation a client could check";

pub fn run<I: Interface>(s: &mut Session<'_>) {
    let outcome = match s.full() {
        Err(e) => Outcome::Fail(e),
        Ok(ep) => match recipes::stale_ids(I::NAME, ep) {
            None => Outcome::Skip(format!("{} has no ids a client creates", I::NAME)),
            Some(Ok(())) => Outcome::Pass,
            Some(Err(e)) => Outcome::Fail(e),
        },
    };
    s.record("generation.stale_id", outcome);
    s.record(
        "restart.endpoint_generation",
        Outcome::Fail(NO_RESTART.into()),
    );
}
