//! Ids over time: a destroyed id stays dead and is not handed out again
//! (`generation.stale_id`). What a caller sees across a restart is in
//! `restart.rs`.

use ipc_protocol::Interface;

use super::{recipes, Outcome, Session};

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
}
