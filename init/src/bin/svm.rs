//! `svm`: boot the xe-svm system and run workloads on it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use init::supervisor::{BootOptions, System};

#[derive(Parser)]
#[command(about = "Boot xe-svm and run workloads on it")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the servers and the device model; stop on Ctrl-C.
    Boot {
        /// Boot, let the GPU server probe the device, then stop.
        #[arg(long)]
        check: bool,
        /// VRAM of the device model, MiB.
        #[arg(long, default_value_t = 256)]
        vram_mib: u64,
        /// Hardware threads of the device model.
        #[arg(long, default_value_t = 64)]
        hw_threads: u16,
    },
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let code = match Cli::parse().command {
        Cmd::Boot { check, vram_mib, hw_threads } => boot(check, vram_mib, hw_threads),
    };
    std::process::exit(code);
}

fn boot(check: bool, vram_mib: u64, hw_threads: u16) -> i32 {
    let mut opts = BootOptions { probe_only: check, ..Default::default() };
    opts.device.vram_bytes = vram_mib << 20;
    opts.device.hw_threads = hw_threads;
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    if let Err(e) = ctrlc::set_handler(move || s.store(true, Ordering::Release)) {
        eprintln!("svm: cannot install the Ctrl-C handler: {e}");
        return 1;
    }
    let mut system = match System::boot(&opts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("svm: boot failed: {e}");
            return 1;
        }
    };
    let result = if check {
        match system.wait_for("xe-svm", Duration::from_secs(60)) {
            Ok(status) if status.success() => Ok(()),
            Ok(status) => Err(format!("xe-svm probe failed: {status}")),
            Err(e) => Err(e.to_string()),
        }
    } else {
        println!("svm: system up; Ctrl-C stops it");
        system.watch(&stop).map_err(|e| e.to_string())
    };
    let shutdown_errors = system.shutdown();
    for e in &shutdown_errors {
        eprintln!("svm: {e}");
    }
    match result {
        Ok(()) if shutdown_errors.is_empty() => {
            println!("svm: system stopped cleanly");
            0
        }
        Ok(()) => 1,
        Err(e) => {
            eprintln!("svm: {e}");
            1
        }
    }
}
