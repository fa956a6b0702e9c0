//! The black-box IPC conformance suite (`svm conformance ipc`): it talks
//! to any process that speaks the protocol of `docs/ipc.md` through one
//! endpoint, knowing nothing of its code, in the manner of Fuchsia FIDL's
//! `server_suite`: the golden frames (`golden`), the malformed-input table
//! (`malformed`), refusals (`rights`), control frames (`control`), ids over
//! time (`lifecycle`) and restarts on the same endpoint (`restart`, through
//! `restarter`).
//! Results are judged against a failure list per implementation, as
//! protobuf's conformance runner does (`failures`): a listed failure is
//! expected and reported, an unlisted one fails the run, and a listed case
//! that passes fails the run too, so the list only shrinks.
//! `client` runs the other direction: a client implementation against our
//! servers.

pub mod client;
pub mod command;
pub mod control;
pub mod endpoint;
pub mod failures;
pub mod golden;
pub mod lifecycle;
pub mod malformed;
pub mod recipes;
pub mod restart;
pub mod restarter;
pub mod rights;
pub mod target;

use std::os::fd::OwnedFd;
use std::time::Duration;

use ipc_protocol::interfaces::{self, Visitor};
use ipc_protocol::schema::InterfaceDesc;
use ipc_protocol::Interface;

use endpoint::RawEndpoint;
use target::Target;

/// The failure lists of our own servers, built in for `--system`.
pub const SYSTEM_FAILURE_LISTS: [(&str, &str); 3] = [
    (
        "tests/conformance/failures-pager.txt",
        include_str!("../../../tests/conformance/failures-pager.txt"),
    ),
    (
        "tests/conformance/failures-xe-svm.txt",
        include_str!("../../../tests/conformance/failures-xe-svm.txt"),
    ),
    (
        "tests/conformance/failures-mm-server.txt",
        include_str!("../../../tests/conformance/failures-mm-server.txt"),
    ),
];

/// How one case ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// Passed; what it answered is worth showing.
    Note(String),
    Fail(String),
    /// Not applicable to this interface or target, and why.
    Skip(String),
}

impl Outcome {
    pub fn passed(&self) -> bool {
        matches!(self, Self::Pass | Self::Note(_))
    }
}

/// One case's result; `id` is `Interface/case`.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub id: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Deadline of every exchange.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
        }
    }
}

/// The suite's state for one interface of one target.
pub struct Session<'t> {
    target: &'t mut dyn Target,
    iface: InterfaceDesc,
    timeout: Duration,
    /// The endpoint with every right; `None` after it closed.
    full: Option<RawEndpoint>,
    results: Vec<CaseResult>,
}

impl<'t> Session<'t> {
    fn new(target: &'t mut dyn Target, iface: InterfaceDesc, timeout: Duration) -> Self {
        Self {
            target,
            iface,
            timeout,
            full: None,
            results: Vec::new(),
        }
    }

    /// The endpoint with every right, opened again if it closed.
    pub fn full(&mut self) -> Result<&RawEndpoint, String> {
        if self.full.is_none() {
            let fd = self.target.open(&self.iface, false)?;
            self.full = Some(RawEndpoint::new(fd, self.timeout));
        }
        self.full.as_ref().ok_or_else(|| "no endpoint".into())
    }

    /// The implementation closed the endpoint: the next case opens another.
    pub fn closed(&mut self) {
        self.full = None;
    }

    /// A new endpoint that holds no right.
    pub fn open_denied(&mut self) -> Result<RawEndpoint, String> {
        let fd = self.target.open(&self.iface, true)?;
        Ok(RawEndpoint::new(fd, self.timeout))
    }

    /// The outcome of a case whose endpoint could not be opened.
    pub fn unreachable(&self, why: &str) -> Outcome {
        if why == target::SKIP_NO_DENIED {
            Outcome::Skip(why.into())
        } else {
            Outcome::Fail(why.into())
        }
    }

    pub fn live_system(&self) -> bool {
        self.target.is_live_system()
    }

    pub fn record(&mut self, case: &str, outcome: Outcome) {
        self.results.push(CaseResult {
            id: format!("{}/{case}", self.iface.name),
            outcome,
        });
    }
}

/// `n` empty memfds to pass as handles.
pub fn memfds(n: usize) -> Vec<OwnedFd> {
    (0..n)
        .filter_map(|_| {
            rustix::fs::memfd_create("xsvm-conformance", rustix::fs::MemfdFlags::CLOEXEC).ok()
        })
        .collect()
}

struct RunSuite<'a> {
    target: &'a mut dyn Target,
    opts: &'a Options,
}

impl Visitor for RunSuite<'_> {
    type Output = Vec<CaseResult>;
    fn visit<I: Interface>(self) -> Vec<CaseResult> {
        let mut s = Session::new(self.target, I::schema(), self.opts.timeout);
        golden::run::<I>(&mut s);
        malformed::run::<I>(&mut s);
        rights::run::<I>(&mut s);
        control::run::<I>(&mut s);
        lifecycle::run::<I>(&mut s);
        // Last: on a booted system it kills a server.
        restart::run::<I>(&mut s);
        s.results
    }
}

/// Runs every case against the implementation of interface `name`.
pub fn run_interface(target: &mut dyn Target, name: &str, opts: &Options) -> Vec<CaseResult> {
    interfaces::visit(name, RunSuite { target, opts }).unwrap_or_else(|| {
        vec![CaseResult {
            id: format!("{name}/interface"),
            outcome: Outcome::Fail(format!(
                "no interface {name} (known: {})",
                interfaces::NAMES.join(", ")
            )),
        }]
    })
}
