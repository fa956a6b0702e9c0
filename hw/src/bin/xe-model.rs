//! The device model as its own process: a simulated Xe GPU serving the
//! driver on the control socket inherited as `--control-fd`.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use hw::model::{Config, Injection};
use ipc_protocol::transport::{inherited_fd, SeqPacket};

#[derive(Parser)]
#[command(about = "Simulated Intel Xe GPU for xe-svm")]
struct Args {
    #[arg(long, default_value_t = 256)]
    vram_mib: u64,
    #[arg(long, default_value_t = 64)]
    hw_threads: u16,
    #[arg(long, default_value_t = 0)]
    fault_reply_delay_us: u64,
    #[arg(long, default_value_t = 0)]
    drop_tlb_invalidation_every: u32,
    #[arg(long, default_value_t = 0)]
    fail_copy_every: u32,
    /// Descriptor of the connected seqpacket control socket.
    #[arg(long, default_value_t = 3)]
    control_fd: i32,
    /// The supervisor's start count (hardware is never restarted: always 1).
    #[arg(long, default_value_t = 1)]
    generation: u32,
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let a = Args::parse();
    let cfg = Config {
        vram_bytes: a.vram_mib << 20,
        hw_threads: a.hw_threads,
        inject: Injection {
            fault_reply_delay: Duration::from_micros(a.fault_reply_delay_us),
            drop_tlb_invalidation_every: a.drop_tlb_invalidation_every,
            fail_copy_every: a.fail_copy_every,
        },
    };
    // SAFETY: the parent handed us the control socket at this descriptor.
    let control = SeqPacket::from_fd(unsafe { inherited_fd(a.control_fd) });
    if let Err(e) = hw::model::run(cfg, Arc::new(control)) {
        eprintln!("xe-model: {e}");
        std::process::exit(1);
    }
}
