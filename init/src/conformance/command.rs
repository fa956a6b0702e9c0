//! `svm conformance ipc` and `svm conformance client`: pick the target,
//! run the suite per interface, judge against the failure lists, print.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use ipc_protocol::interfaces;

use super::failures::{judge, FailureList, Summary};
use super::target::{self, Target};
use super::{client, restart, run_interface, CaseResult, Options, Outcome, SYSTEM_FAILURE_LISTS};
use crate::supervisor::{BootOptions, System};

/// Where the implementation under test is.
pub enum Where {
    /// A listening socket, and optionally one whose connections hold no right.
    Connect {
        path: PathBuf,
        denied: Option<PathBuf>,
    },
    /// A command that serves on descriptor 3.
    Spawn(String),
    /// Our servers, booted with conformance endpoints.
    System(BootOptions),
}

pub struct Request {
    pub target: Where,
    /// Empty: `Pager`, or every interface for `System`.
    pub interfaces: Vec<String>,
    /// Empty: none, or ours built in for `System`.
    pub failures: Vec<PathBuf>,
    pub options: Options,
    /// `svm conformance client`: this client command is tested instead of
    /// the target, which serves it; `Duration` bounds each client run.
    pub client: Option<(String, Duration)>,
}

/// Runs the request and prints one line per case and the summary on
/// `out`; `Err` when the run could not start.
pub fn run(req: Request, out: &mut dyn Write) -> Result<Summary, String> {
    let failures = failure_list(&req)?;
    let interfaces = match (&req.target, req.interfaces.is_empty()) {
        (_, false) => req.interfaces.clone(),
        (Where::System(_), true) => interfaces::NAMES.iter().map(|s| s.to_string()).collect(),
        (_, true) => vec!["Pager".to_string()],
    };
    let results = match &req.target {
        Where::Connect { path, denied } => {
            let mut t = target::Connect {
                path: path.clone(),
                denied_path: denied.clone(),
            };
            run_all(&mut t, &interfaces, &req)
        }
        Where::Spawn(cmd) => run_all(&mut target::Spawn::new(cmd), &interfaces, &req),
        Where::System(opts) => on_system(opts, &interfaces, &req)?,
    };
    let summary = judge(&results, &failures, &interfaces, out).map_err(|e| e.to_string())?;
    writeln!(out, "{summary}").map_err(|e| e.to_string())?;
    Ok(summary)
}

fn failure_list(req: &Request) -> Result<FailureList, String> {
    let mut list = FailureList::default();
    let system_suite = req.client.is_none() && matches!(req.target, Where::System(_));
    if system_suite && req.failures.is_empty() {
        for (name, text) in SYSTEM_FAILURE_LISTS {
            list.add(name, text)?;
        }
    }
    if system_suite {
        // What follows from which servers init restarts, whatever the lists say.
        list.add(
            "init::manifest::RESTARTABLE",
            &restart::not_restartable_list(),
        )?;
    }
    for path in &req.failures {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        list.add(&path.display().to_string(), &text)?;
    }
    Ok(list)
}

fn run_all(t: &mut dyn Target, interfaces: &[String], req: &Request) -> Vec<CaseResult> {
    let mut results = Vec::new();
    for name in interfaces {
        eprintln!("svm conformance: {name}");
        results.extend(match &req.client {
            None => run_interface(t, name, &req.options),
            Some((cmd, limit)) => match interfaces::all().into_iter().find(|d| d.name == name) {
                Some(desc) => client::run(t, &desc, cmd, *limit),
                None => vec![CaseResult {
                    id: format!("{name}/client"),
                    outcome: Outcome::Fail(format!("no interface {name}")),
                }],
            },
        });
    }
    results
}

/// Boots our servers with conformance endpoints, runs, and checks that
/// every server is still up afterwards (`system/servers_alive`).
fn on_system(
    opts: &BootOptions,
    interfaces: &[String],
    req: &Request,
) -> Result<Vec<CaseResult>, String> {
    let opts = BootOptions {
        conformance: true,
        ..opts.clone()
    };
    let (mut system, clients) = match System::boot(&opts) {
        Ok((s, Some(c))) => (s, c),
        Ok((s, None)) => {
            s.shutdown();
            return Err("booted without client endpoints".into());
        }
        Err(e) => return Err(format!("boot failed: {e}")),
    };
    let mut clients = clients;
    let mut t = target::System::new(std::mem::take(&mut clients.conformance), &mut system);
    let mut results = run_all(&mut t, interfaces, req);
    drop(t);
    results.push(CaseResult {
        id: "system/servers_alive".into(),
        outcome: match system.check_alive() {
            Ok(()) => Outcome::Pass,
            Err(e) => Outcome::Fail(e.to_string()),
        },
    });
    drop(clients);
    for e in system.shutdown() {
        results.push(CaseResult {
            id: "system/clean_shutdown".into(),
            outcome: Outcome::Fail(e.to_string()),
        });
    }
    Ok(results)
}
