//! `svm exec -- PROGRAM ARGS`: boots the system and runs an unmodified
//! program as one of its clients, with `libsvm.so` preloaded: the
//! program's heap and anonymous mappings are pager memory, reachable by a
//! GPU VM that mirrors its address space (docs/c-api.md).
//!
//! The program inherits client slot 1's endpoints as descriptors 3 and 4,
//! named by `SVM_GPU_FD` and `SVM_PAGER_FD` (the library takes them and
//! removes the variables, so programs it runs in turn are plain); its
//! standard streams are ours, and its exit status is ours.

use std::path::PathBuf;
use std::process::{Command, ExitStatus};

use crate::supervisor::{bin_dir, BootOptions, System};

/// The pager's budget under `svm exec`: the manifest's, with room for the
/// address spaces of the program's forked children (each child of a
/// process with pager memory is an address space until the pager finds
/// it gone; shells and wrapper scripts fork many).
pub const EXEC_PAGER_BUDGET: &str =
    "objects=256,object_bytes=8G,views=1024,spaces=64,fault_threads=320,metadata_bytes=17M";

/// Where `svm exec` hands the endpoints to the program.
pub const GPU_FD: i32 = 3;
pub const PAGER_FD: i32 = 4;

#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    /// The library to preload (default: `$SVM_LIB`, else `libsvm.so`
    /// beside `svm` or in its `deps/`).
    #[arg(long)]
    pub lib: Option<PathBuf>,
    /// Don't preload: the program links `libsvm` itself (or runs without it).
    #[arg(long)]
    pub no_preload: bool,
    /// The program and its arguments (after `--`).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub program: Vec<String>,
}

#[derive(Debug)]
pub enum ExecError {
    NoLibrary(PathBuf),
    Boot(String),
    Spawn(std::io::Error),
}

impl std::fmt::Display for ExecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoLibrary(p) => write!(
                f,
                "{} not found: build it with `cargo build -p libsvm` or pass --lib",
                p.display()
            ),
            Self::Boot(e) => write!(f, "boot failed: {e}"),
            Self::Spawn(e) => write!(f, "starting the program: {e}"),
        }
    }
}

/// The library `svm exec` preloads.
pub fn library(explicit: Option<&PathBuf>) -> Result<PathBuf, ExecError> {
    if let Some(p) = explicit
        .cloned()
        .or_else(|| std::env::var_os("SVM_LIB").map(PathBuf::from))
    {
        return if p.is_file() {
            Ok(p)
        } else {
            Err(ExecError::NoLibrary(p))
        };
    }
    let dir = bin_dir();
    let beside = dir.join("libsvm.so");
    [beside.clone(), dir.join("deps").join("libsvm.so")]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or(ExecError::NoLibrary(beside))
}

/// The exit code a shell would report for `status`.
fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// Boots, runs the program to its end, stops the system; returns the
/// program's exit code.
pub fn run(opts: BootOptions, args: &ExecArgs) -> Result<i32, ExecError> {
    let lib = if args.no_preload {
        None
    } else {
        Some(library(args.lib.as_ref())?)
    };
    let mut pager_args = opts.pager_args.clone();
    if !pager_args.iter().any(|a| a.starts_with("--budget")) {
        pager_args.push(format!("--budget={EXEC_PAGER_BUDGET}"));
        pager_args.extend(
            crate::manifest::budget_args("pager")
                .into_iter()
                .filter(|a| a.starts_with("--arena-mib")),
        );
    }
    let opts = BootOptions {
        clients: 2,
        stdout_to_stderr: true,
        pager_args,
        ..opts
    };
    let (system, clients) = System::boot(&opts).map_err(|e| ExecError::Boot(e.to_string()))?;
    let result = spawn_and_wait(clients, lib, args);
    for e in system.shutdown() {
        log::warn!("svm exec: {e}");
    }
    result
}

fn spawn_and_wait(
    clients: Option<crate::supervisor::Clients>,
    lib: Option<PathBuf>,
    args: &ExecArgs,
) -> Result<i32, ExecError> {
    let mut clients = clients.ok_or_else(|| ExecError::Boot("no client endpoints".into()))?;
    let slot = clients
        .slots
        .pop()
        .ok_or_else(|| ExecError::Boot("no client slot for the program".into()))?;
    let (prog, rest) = args
        .program
        .split_first()
        .ok_or_else(|| ExecError::Spawn(std::io::Error::other("no program")))?;
    let mut cmd = Command::new(prog);
    cmd.args(rest)
        .env("SVM_GPU_FD", GPU_FD.to_string())
        .env("SVM_PAGER_FD", PAGER_FD.to_string())
        .env("SVM_BADGE", slot.badge.to_string());
    if let Some(lib) = lib {
        let preload = match std::env::var("LD_PRELOAD") {
            Ok(p) if !p.is_empty() => format!("{}:{p}", lib.display()),
            _ => lib.display().to_string(),
        };
        cmd.env("LD_PRELOAD", preload);
    }
    let held = slot
        .inherit(&mut cmd, GPU_FD, PAGER_FD)
        .map_err(ExecError::Spawn)?;
    let mut child = cmd.spawn().map_err(ExecError::Spawn)?;
    drop(held);
    // The program owns its endpoints now: once it exits the servers see
    // the client go (its sessions end) as soon as these copies close too.
    drop(slot);
    let status = child.wait().map_err(ExecError::Spawn)?;
    drop(clients);
    Ok(exit_code(status))
}
