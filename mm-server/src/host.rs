//! The Linux runtime of the memory-pressure broker process. Endpoints
//! inherited from init: `--gpu-fd` (`Pressure`, served to the GPU server),
//! `--status-fd` (`Pressure`, served to init for status), `--shrink-fd`
//! (our `GpuShrink` client) and `--reclaim-fd` (our `PagerReclaim`
//! client). Stdin is init's lifeline.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use crate::evictor::{self, IpcWorlds};
use crate::startup;
use clap::Parser;
use ipc_protocol::client::Client;
use ipc_protocol::interfaces::pressure::Pressure;
use ipc_protocol::transport::{inherited_fd, ExtraEndpoint, SeqPacket, Transport};
use ipc_protocol::types::GpuId;
use ipc_protocol::{Capability, Rights};

#[derive(Parser)]
#[command(about = "xe-svm memory-pressure broker")]
struct Args {
    #[arg(long)]
    gpu_fd: i32,
    /// Rights granted to that endpoint's badge (bits of `ipc_protocol::Rights`; from init's manifest).
    #[arg(long, default_value_t = (Rights::PRESSURE_REPORT.union(Rights::PRESSURE_RESERVE)).bits())]
    gpu_rights: u32,
    #[arg(long)]
    status_fd: Option<i32>,
    /// Rights granted to that endpoint's badge (bits of `ipc_protocol::Rights`; from init's manifest).
    #[arg(long, default_value_t = Rights::PRESSURE_STATUS.bits())]
    status_rights: u32,
    #[arg(long)]
    shrink_fd: Option<i32>,
    #[arg(long)]
    reclaim_fd: Option<i32>,
    /// One more `Pressure` endpoint for the conformance suite,
    /// `Pressure:FD:BADGE:RIGHTS`; init adds these only for `svm conformance
    /// ipc --system`. Repeated.
    #[arg(long)]
    extra_endpoint: Vec<ExtraEndpoint>,
    /// VRAM size until the GPU server reports its own figure.
    #[arg(long)]
    vram_bytes: u64,
    /// The GPU whose VRAM this broker keeps (0 to 15; several GPUs: one
    /// mm-server per device): the GPU its evictions name to the pager.
    #[arg(long, default_value_t = 0,
          value_parser = clap::value_parser!(u8).range(0..=15))]
    gpu_id: u8,
    /// Free VRAM (percent) below which the eviction loop runs.
    #[arg(long, default_value_t = 10)]
    low_watermark_pct: u64,
    /// Free VRAM (percent) the eviction loop stops at.
    #[arg(long, default_value_t = 20)]
    high_watermark_pct: u64,
    /// How long a call to the GPU server or the pager may take.
    #[arg(long, default_value_t = 10_000)]
    peer_timeout_ms: u64,
    /// How many times init has started this server (1 at boot). A
    /// restarted server announces its generation on every endpoint.
    #[arg(long, default_value_t = 1)]
    generation: u32,
    /// A pipe init reads: one byte on it says this process serves (init
    /// kills a server that has not said so within its readiness deadline).
    #[arg(long)]
    ready_fd: Option<i32>,
}

fn endpoint(fd: i32) -> Arc<dyn Transport> {
    // SAFETY: init passed this descriptor to us and nothing else owns it.
    Arc::new(SeqPacket::from_fd(unsafe { inherited_fd(fd) }))
}

// A restarted server tells the process at the other end of a served
// endpoint, so its calls caught by the restart fail or are retried.
use ipc_protocol::server::announce_if_restarted as announce;

pub fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let a = Args::parse();
    let broker = match startup::broker(a.vram_bytes, a.low_watermark_pct, a.high_watermark_pct) {
        Ok(b) => Arc::new(b),
        Err(e) => {
            eprintln!("mm-server: {e}");
            std::process::exit(2);
        }
    };
    let gpu = endpoint(a.gpu_fd);
    announce::<Pressure>(&*gpu, a.generation);
    ipc_protocol::server::spawn::<Pressure, _>(
        "mm-gpu",
        gpu,
        Capability::new(1, Rights::from_bits_truncate(a.gpu_rights)),
        broker.clone(),
        4,
    );
    if let Some(fd) = a.status_fd {
        let status = endpoint(fd);
        announce::<Pressure>(&*status, a.generation);
        ipc_protocol::server::spawn::<Pressure, _>(
            "mm-status",
            status,
            Capability::new(2, Rights::from_bits_truncate(a.status_rights)),
            broker.clone(),
            1,
        );
    }
    for e in &a.extra_endpoint {
        if e.interface != "Pressure" {
            eprintln!("mm-server: --extra-endpoint {e}: mm-server serves only Pressure");
            std::process::exit(2);
        }
        let extra = endpoint(e.fd);
        announce::<Pressure>(&*extra, a.generation);
        ipc_protocol::server::spawn::<Pressure, _>(
            &format!("mm-extra{}", e.badge),
            extra,
            Capability::new(e.badge, e.rights),
            broker.clone(),
            2,
        );
    }
    if let (Some(shrink), Some(reclaim)) = (a.shrink_fd, a.reclaim_fd) {
        let (shrink, reclaim) = (
            Client::new(endpoint(shrink)),
            Client::new(endpoint(reclaim)),
        );
        if a.generation > 1 {
            let _ = shrink.announce_restart(a.generation);
            let _ = reclaim.announce_restart(a.generation);
        }
        let timeout = Duration::from_millis(a.peer_timeout_ms);
        let device = GpuId::new(a.gpu_id).unwrap_or(GpuId::ZERO);
        let worlds = Arc::new(IpcWorlds::new(shrink, reclaim, timeout).for_device(device));
        let b = broker.clone();
        std::thread::Builder::new()
            .name("mm-evict".into())
            .spawn(move || evictor::run(b, worlds))
            .expect("spawning at boot");
    } else {
        log::warn!("mm-server: no shrinker or reclaim endpoint; reservations wait for memory to be given back");
    }
    if let Some(fd) = a.ready_fd {
        // SAFETY: init gave us this descriptor for this alone.
        unsafe { ipc_protocol::transport::say_ready(fd) };
    }
    println!("mm-server: serving");
    let mut buf = [0u8; 1];
    let _ = std::io::stdin().read(&mut buf);
    log::info!("mm-server: init closed the lifeline; stopping");
}
