//! The memory-pressure broker process. `--gpu-fd`: the `Pressure` endpoint
//! of the GPU server (inherited from init). Stdin is init's lifeline.

use std::io::Read;
use std::sync::Arc;

use clap::Parser;
use ipc_protocol::interfaces::pressure::Pressure;
use ipc_protocol::transport::{inherited_fd, SeqPacket};
use ipc_protocol::{Capability, Rights};
use mm_server::broker::Broker;

#[derive(Parser)]
#[command(about = "xe-svm memory-pressure broker")]
struct Args {
    #[arg(long)]
    gpu_fd: i32,
    #[arg(long)]
    vram_bytes: u64,
    /// Rights granted to that endpoint's badge (bits of `ipc_protocol::Rights`; from init's manifest).
    #[arg(long, default_value_t = (Rights::PRESSURE_REPORT.union(Rights::PRESSURE_RESERVE)).bits())]
    gpu_rights: u32,

}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let a = Args::parse();
    let broker = Arc::new(Broker::new(a.vram_bytes));
    // SAFETY: init passed this descriptor to us and nothing else owns it.
    let gpu = Arc::new(SeqPacket::from_fd(unsafe { inherited_fd(a.gpu_fd) }));
    ipc_protocol::server::spawn::<Pressure, _>("mm-gpu", gpu, Capability::new(1, Rights::from_bits_truncate(a.gpu_rights)), broker, 2);
    println!("mm-server: serving");
    let mut buf = [0u8; 1];
    let _ = std::io::stdin().read(&mut buf);
    log::info!("mm-server: init closed the lifeline; stopping");
}
