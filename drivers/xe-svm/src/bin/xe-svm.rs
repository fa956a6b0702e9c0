//! The GPU server process: probes the device on the control socket it
//! inherited from `init`, reports, and serves until `init` closes its
//! lifeline (stdin).

use std::io::Read;
use std::sync::Arc;

use clap::Parser;
use ipc_protocol::transport::{inherited_fd, SeqPacket};

#[derive(Parser)]
#[command(about = "xe-svm GPU server")]
struct Args {
    /// Descriptor of the device's control socket.
    #[arg(long, default_value_t = 3)]
    device_fd: i32,
    /// Probe, print the report and exit.
    #[arg(long)]
    probe_only: bool,
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let a = Args::parse();
    // SAFETY: init passed the device control socket at this descriptor.
    let control = SeqPacket::from_fd(unsafe { inherited_fd(a.device_fd) });
    let (_bar, report) = match xe_svm::probe::probe(Arc::new(control)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("xe-svm: probe failed: {e}");
            std::process::exit(2);
        }
    };
    println!(
        "xe-svm: device ready: {} MiB VRAM, {} hardware threads, copy self-test {:.2} GB/s, TLB invalidation {:.1} us",
        report.vram_bytes >> 20,
        report.hw_threads,
        report.copy_bytes_per_sec / 1e9,
        report.tlb_invalidation_us
    );
    if a.probe_only {
        return;
    }
    // Serve until init goes away: our stdin is init's lifeline pipe.
    let mut buf = [0u8; 1];
    let _ = std::io::stdin().read(&mut buf);
    log::info!("xe-svm: init closed the lifeline; stopping");
}
