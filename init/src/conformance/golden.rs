//! The golden frames of `tests/golden/ipc-v1.txt`, built into `svm`, sent
//! to the implementation as they are: a valid request must be decoded and
//! answered with a reply or the server's own typed error, never refused as
//! malformed, and whatever comes back must pass our decoder.

use std::time::Duration;

use ipc_protocol::client::RawError;
use ipc_protocol::Interface;

use super::endpoint::Checked;
use super::{recipes, Outcome, Session};

const FILE: &str = include_str!("../../../tests/golden/ipc-v1.txt");

/// The request id of every golden call frame.
pub const GOLDEN_ID: u64 = 0x1122_3344_5566_7788;

/// How long a notification must go unanswered.
pub const QUIET: Duration = Duration::from_millis(300);

/// One line of the golden file.
pub struct GoldenFrame {
    pub interface: &'static str,
    /// `request`, `reply`, `error`, `protocol-error` or `denied`.
    pub kind: &'static str,
    pub message: &'static str,
    pub bytes: Vec<u8>,
}

impl GoldenFrame {
    /// The handle count the header declares.
    pub fn handles(&self) -> usize {
        self.bytes.get(11).copied().unwrap_or(0) as usize
    }
    pub fn opcode(&self) -> u16 {
        u16::from_le_bytes([self.bytes[8], self.bytes[9]])
    }
    /// Sent as a notification (kind 4).
    pub fn is_notification(&self) -> bool {
        self.bytes.get(10) == Some(&4)
    }
}

/// Every frame of the golden file (the file is checked in and pinned by
/// `tests/tests/ipc_golden.rs`, so a line that does not parse is a bug).
pub fn frames() -> Vec<GoldenFrame> {
    FILE.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (interface, kind, message, hex) = (w.next()?, w.next()?, w.next()?, w.next()?);
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect::<Option<Vec<u8>>>()?;
            Some(GoldenFrame {
                interface,
                kind,
                message,
                bytes,
            })
        })
        .collect()
}

/// The golden requests of interface `name`.
pub fn requests(name: &str) -> Vec<GoldenFrame> {
    frames()
        .into_iter()
        .filter(|f| f.interface == name && f.kind == "request")
        .collect()
}

/// `golden.request.<Message>` for every request of `I`.
pub fn run<I: Interface>(s: &mut Session<'_>) {
    for f in requests(I::NAME) {
        let name = format!("golden.request.{}", f.message);
        if let Some(why) = s
            .live_system()
            .then(|| recipes::unsafe_on_live_system(I::NAME, f.message))
            .flatten()
        {
            s.record(&name, Outcome::Skip(why.into()));
            continue;
        }
        let outcome = match s.full() {
            Err(e) => Outcome::Fail(e),
            Ok(ep) if f.is_notification() => match ep.send(&f.bytes, super::memfds(f.handles())) {
                Ok(()) => match ep.quiet_for(QUIET) {
                    Ok(()) => Outcome::Pass,
                    Err(e) => Outcome::Fail(format!("after the notification: {e}")),
                },
                Err(e) => Outcome::Fail(format!("sending: {e}")),
            },
            Ok(ep) => match ep
                .exchange(&f.bytes, super::memfds(f.handles()))
                .check::<I>(GOLDEN_ID, f.opcode())
            {
                Checked::Reply(..) => Outcome::Pass,
                Checked::Error(RawError::Server(e)) => Outcome::Note(format!("answered {e:?}")),
                Checked::Error(RawError::Denied(r)) => Outcome::Fail(format!(
                    "denied on an endpoint with every right (missing {r:?})"
                )),
                Checked::Error(RawError::Protocol(e)) => {
                    Outcome::Fail(format!("refused a valid frame as {e:?}"))
                }
                Checked::Closed => {
                    s.closed();
                    Outcome::Fail("closed the endpoint on a valid frame".into())
                }
                Checked::Bad(why) => Outcome::Fail(why),
            },
        };
        s.record(&name, outcome);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_built_in_golden_file_parses_whole() {
        let lines = super::FILE.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(super::frames().len(), lines);
        use ipc_protocol::interfaces::pager::Request;
        use ipc_protocol::Message;
        let pager_requests = Request::examples().len();
        assert_eq!(super::requests("Pager").len(), pager_requests);
        assert!(super::requests("Pressure")
            .iter()
            .any(|f| f.is_notification()));
    }
}
