//! What each hostile call got, judged: a typed error or a closed endpoint
//! is what a hostile client must get; a success is fine where the call was
//! legitimate (its own objects, within its budget) and a breach where it
//! named what is not its own; anything else (a timeout, a reply that does
//! not decode, a restart) is a violation.

use std::collections::BTreeMap;

use ipc_protocol::client::{CallError, RawError};
use ipc_protocol::frame::{Frame, Kind};
use ipc_protocol::transport::{Received, TransportError};
use ipc_protocol::{Interface, WireError};

/// Violations kept word for word (the count is always exact).
const KEPT: usize = 20;

/// How one hostile call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A typed error: `Interface.Error`, `Protocol.Class` or `Denied`.
    Refused(String),
    /// The endpoint is closed (the session ended).
    Closed,
    /// A legitimate success.
    Served,
    /// Anything a hostile call must never get (the reason).
    Violation(String),
}

/// Whether a success is acceptable for the call being judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A success is legitimate (the caller's own resource, in budget).
    MayServe,
    /// The call names what is not the caller's: a success is a breach.
    MustRefuse,
}

/// Judges a typed call's result.
pub fn judge<T, E: WireError>(
    iface: &str,
    what: &str,
    expect: Expect,
    r: &Result<T, CallError<E>>,
) -> Outcome {
    match r {
        Ok(_) if expect == Expect::MayServe => Outcome::Served,
        Ok(_) => Outcome::Violation(format!("{iface}.{what}: served a call it must refuse")),
        Err(CallError::Server(e)) => Outcome::Refused(format!("{iface}.{e:?}")),
        Err(CallError::Protocol(p)) => Outcome::Refused(format!("Protocol.{p:?}")),
        Err(CallError::Denied(_)) => Outcome::Refused("Denied".into()),
        Err(CallError::Transport(TransportError::Disconnected)) => Outcome::Closed,
        Err(CallError::Transport(e)) => Outcome::Violation(format!("{iface}.{what}: {e}")),
        Err(CallError::UnexpectedReply) => {
            Outcome::Violation(format!("{iface}.{what}: a reply to another call"))
        }
    }
}

/// Judges the raw answer to a raw frame of interface `I`.
pub fn judge_raw<I: Interface>(what: &str, r: &Result<Received, TransportError>) -> Outcome {
    let rx = match r {
        Ok(rx) => rx,
        Err(TransportError::Disconnected) => return Outcome::Closed,
        Err(e) => return Outcome::Violation(format!("{}.{what}: {e}", I::NAME)),
    };
    let kind = Frame::parse(&rx.bytes, rx.handles.len()).map(|f| f.header.kind);
    match kind {
        Ok(Kind::Reply) => Outcome::Served,
        Ok(Kind::Error) => match ipc_protocol::client::decode_error::<I>(rx) {
            Some(RawError::Server(e)) => Outcome::Refused(format!("{}.{e:?}", I::NAME)),
            Some(RawError::Protocol(p)) => Outcome::Refused(format!("Protocol.{p:?}")),
            Some(RawError::Denied(_)) => Outcome::Refused("Denied".into()),
            None => Outcome::Violation(format!("{}.{what}: an undecodable error", I::NAME)),
        },
        Ok(k) => Outcome::Violation(format!("{}.{what}: answered with a {k:?} frame", I::NAME)),
        Err(e) => Outcome::Violation(format!("{}.{what}: a malformed answer: {e:?}", I::NAME)),
    }
}

/// Every outcome of a run, counted.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub calls: u64,
    pub served: u64,
    pub closed: u64,
    /// Typed errors by name.
    pub refused: BTreeMap<String, u64>,
    pub violations: u64,
    /// Notifications and control frames sent (no answer comes).
    pub one_way: u64,
    /// The first violations, word for word.
    pub kept: Vec<String>,
}

impl Tally {
    pub fn add(&mut self, o: Outcome) {
        self.calls += 1;
        match o {
            Outcome::Refused(name) => *self.refused.entry(name).or_default() += 1,
            Outcome::Closed => self.closed += 1,
            Outcome::Served => self.served += 1,
            Outcome::Violation(why) => self.violation(why),
        }
    }

    /// A one-way frame sent (`sent`) or refused by a closed endpoint.
    pub fn one_way(&mut self, sent: bool) {
        self.calls += 1;
        if sent {
            self.one_way += 1;
        } else {
            self.closed += 1;
        }
    }

    /// A violation found outside a call (a seal that does not hold).
    pub fn violation(&mut self, why: String) {
        self.violations += 1;
        if self.kept.len() < KEPT {
            log::error!("hostile: {why}");
            self.kept.push(why);
        }
    }

    pub fn merge(&mut self, other: Tally) {
        self.calls += other.calls;
        self.served += other.served;
        self.closed += other.closed;
        for (k, v) in other.refused {
            *self.refused.entry(k).or_default() += v;
        }
        self.violations += other.violations;
        self.one_way += other.one_way;
        for why in other.kept {
            if self.kept.len() < KEPT {
                self.kept.push(why);
            }
        }
    }

    /// `name:count,...` of the typed errors, then served, closed and
    /// violations (the report's `errors=` field).
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self
            .refused
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        parts.push(format!("served:{}", self.served));
        parts.push(format!("closed:{}", self.closed));
        parts.push(format!("one-way:{}", self.one_way));
        parts.push(format!("violations:{}", self.violations));
        parts.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipc_protocol::interfaces::pager::{Pager, PagerError};
    use ipc_protocol::ProtocolError;

    #[test]
    fn typed_errors_and_closed_endpoints_pass_and_the_rest_do_not() {
        let mut t = Tally::default();
        let e: Result<(), CallError<PagerError>> = Err(CallError::Server(PagerError::OverBudget));
        t.add(judge("Pager", "CreateObject", Expect::MayServe, &e));
        let p: Result<(), CallError<PagerError>> =
            Err(CallError::Protocol(ProtocolError::Truncated));
        t.add(judge("Pager", "raw", Expect::MayServe, &p));
        let gone: Result<(), CallError<PagerError>> =
            Err(CallError::Transport(TransportError::Disconnected));
        t.add(judge("Pager", "x", Expect::MayServe, &gone));
        let slow: Result<(), CallError<PagerError>> =
            Err(CallError::Transport(TransportError::TimedOut));
        t.add(judge("Pager", "x", Expect::MayServe, &slow));
        t.add(judge::<(), PagerError>(
            "Pager",
            "x",
            Expect::MustRefuse,
            &Ok(()),
        ));
        t.add(judge::<(), PagerError>(
            "Pager",
            "x",
            Expect::MayServe,
            &Ok(()),
        ));
        assert_eq!((t.calls, t.served, t.closed, t.violations), (6, 1, 1, 2));
        assert_eq!(
            t.summary(),
            "Pager.OverBudget:1,Protocol.Truncated:1,served:1,closed:1,one-way:0,violations:2"
        );
        let r = judge_raw::<Pager>("raw", &Err(TransportError::TimedOut));
        assert!(matches!(r, Outcome::Violation(_)));
    }
}
