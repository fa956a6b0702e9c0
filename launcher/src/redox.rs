//! `xe-svm-launch` on Redox: the plan for `--clients` slots
//! ([`crate::redox_plan::plan`]) carried out by
//! `ipc_protocol::scheme::redox_launch::launch` (wait for every scheme,
//! open every endpoint once, hand the servers what they call). The client
//! endpoints it keeps are either handed to the program after `--`
//! (inherited, named in [`crate::handout::ENV`]) or held until the
//! launcher is stopped, so the servers' client sessions stay open.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use clap::Parser;
use ipc_protocol::scheme::redox_launch::launch;

use crate::handout;
use crate::manifest::MAX_CLIENTS;
use crate::redox_plan::plan;

#[derive(Parser)]
#[command(about = "xe-svm launcher (Redox)")]
struct Args {
    /// Client slots (the servers' `--client-badge`s: 100 + slot).
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// How long to wait for every server's scheme.
    #[arg(long, default_value_t = 60_000)]
    wait_ms: u64,
    /// A client program to run with the kept endpoints.
    #[arg(last = true)]
    exec: Vec<String>,
}

fn fail(what: &str, e: impl std::fmt::Debug) -> ! {
    eprintln!("xe-svm-launch: {what}: {e:?}");
    std::process::exit(2);
}

/// Runs `exec` with the kept endpoints inherited; its exit status.
fn run_client(exec: &[String], kept: &[(String, OwnedFd)]) -> i32 {
    let mut named = Vec::with_capacity(kept.len());
    for (label, fd) in kept {
        if let Err(e) = rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty()) {
            fail("making an endpoint inheritable", e);
        }
        named.push((label.clone(), fd.as_raw_fd()));
    }
    let value = handout::encode(&named).unwrap_or_else(|e| fail("naming the endpoints", e));
    let status = std::process::Command::new(&exec[0])
        .args(&exec[1..])
        .env(handout::ENV, value)
        .status()
        .unwrap_or_else(|e| fail(&format!("running {}", exec[0]), e));
    status.code().unwrap_or(1)
}

pub fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let a = Args::parse();
    if a.clients == 0 || a.clients > MAX_CLIENTS {
        fail(
            "--clients",
            format!("1 to {MAX_CLIENTS}, not {}", a.clients),
        );
    }
    let plan = plan(a.clients).unwrap_or_else(|e| fail("the manifest", e));
    let kept =
        launch(&plan, Duration::from_millis(a.wait_ms)).unwrap_or_else(|e| fail("launching", e));
    println!(
        "xe-svm-launch: system up: {} endpoint(s) kept for {} client slot(s)",
        kept.len(),
        a.clients
    );
    if !a.exec.is_empty() {
        std::process::exit(run_client(&a.exec, &kept));
    }
    // Holding the endpoints holds the client sessions open.
    loop {
        std::thread::park();
    }
}
