//! The inside of a `svm qemu` guest: `svm` as PID 1 running a plan of
//! checks (`svm guest`). The same runner runs a plan as an ordinary process
//! (`svm guest --plan FILE`), which is how it is tested on the host.

pub mod pid1;
pub mod plan;
pub mod runner;

use std::path::PathBuf;

use clap::Args;

#[derive(Args, Debug)]
pub struct GuestArgs {
    /// The plan: one check a line (`NAME TIMEOUT_S SVM_ARGS...`).
    #[arg(long, default_value = pid1::PLAN_PATH)]
    pub plan: PathBuf,
    /// Act as PID 1 (mount, console, reap, power off at the end). Implied
    /// when `svm` runs as PID 1, and refused when it does not: on a host
    /// it would mount over /dev and power the machine off.
    #[arg(long)]
    pub pid1: bool,
}

/// `svm guest`: the exit code (when not PID 1; PID 1 powers off instead).
pub fn cli_main(args: &GuestArgs) -> i32 {
    let is_init = rustix::process::getpid().is_init();
    if is_init {
        pid1::main(&args.plan);
    }
    if args.pid1 {
        eprintln!("svm guest: --pid1, but this is not PID 1: refusing to mount and power off");
        return 2;
    }
    let text = match std::fs::read_to_string(&args.plan) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("svm guest: {}: {e}", args.plan.display());
            return 2;
        }
    };
    let plan = match plan::Plan::parse(&text) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("svm guest: {}: {e}", args.plan.display());
            return 2;
        }
    };
    let svm = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("svm"));
    let summary = runner::run(
        &plan,
        &svm,
        runner::Reap::OwnChildren,
        &mut std::io::stdout(),
    );
    if summary.is_green() {
        0
    } else {
        1
    }
}
