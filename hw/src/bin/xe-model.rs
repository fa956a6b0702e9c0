//! The device model as its own process: a simulated Xe GPU serving the
//! driver on the control socket inherited as `--control-fd` (Linux), or
//! on `/scheme/xe-model/device` (Redox, `hw::model::scheme`).

use std::time::Duration;

use clap::Parser;
use hw::model::{BatchLimits, Config, Injection};

#[derive(Parser)]
#[command(about = "Simulated Intel Xe GPU for xe-svm")]
struct Args {
    #[arg(long, default_value_t = 256)]
    vram_mib: u64,
    #[arg(long, default_value_t = 64)]
    hw_threads: u16,
    /// Copy engines a large copy is split across.
    #[arg(long, default_value_t = hw::model::default_copy_engines())]
    copy_engines: u16,
    #[arg(long, default_value_t = 0)]
    fault_reply_delay_us: u64,
    #[arg(long, default_value_t = 0)]
    drop_tlb_invalidation_every: u32,
    #[arg(long, default_value_t = 0)]
    fail_copy_every: u32,
    /// Instructions one batch job may run before it ends hung.
    #[arg(long, default_value_t = BatchLimits::default().max_instructions)]
    batch_max_instructions: u32,
    /// How long one MI_SEMAPHORE_WAIT may poll before its job ends hung.
    #[arg(long, default_value_t = BatchLimits::default().semaphore_timeout.as_millis() as u64)]
    semaphore_timeout_ms: u64,
    /// Descriptor of the connected seqpacket control socket (Linux).
    #[arg(long, default_value_t = 3)]
    control_fd: i32,
    /// A seqpacket socket on which the next driver's control socket comes
    /// when a driver dies (Linux): the device then outlives its driver,
    /// resets what the driver set up, keeps VRAM, and serves the next one.
    /// Without it the device stops with its driver.
    #[arg(long)]
    attach_fd: Option<i32>,
    /// Only this process may open the device endpoint (Redox; default:
    /// any root process, once).
    #[arg(long)]
    launcher_pid: Option<u64>,
    /// VRAM as an inherited memfd of `--vram-mib` (Linux; several GPUs:
    /// `init` hands it to the other devices' drivers as their peer window).
    #[arg(long)]
    vram_fd: Option<i32>,
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
        copy_engines: a.copy_engines,
        inject: Injection {
            fault_reply_delay: Duration::from_micros(a.fault_reply_delay_us),
            drop_tlb_invalidation_every: a.drop_tlb_invalidation_every,
            fail_copy_every: a.fail_copy_every,
        },
        batch: BatchLimits {
            max_instructions: a.batch_max_instructions,
            semaphore_timeout: Duration::from_millis(a.semaphore_timeout_ms),
        },
        vram_fd: a.vram_fd,
    };
    if let Err(e) = serve(cfg, &a) {
        eprintln!("xe-model: {e}");
        std::process::exit(1);
    }
}

#[cfg(target_os = "linux")]
fn serve(cfg: Config, a: &Args) -> Result<(), hw::model::ModelError> {
    use ipc_protocol::transport::{inherited_fd, SeqPacket};
    use std::sync::Arc;
    // SAFETY: the parent handed us the control socket at this descriptor.
    let control = Arc::new(SeqPacket::from_fd(unsafe { inherited_fd(a.control_fd) }));
    match a.attach_fd {
        // SAFETY: as above, for the attach socket.
        Some(fd) => {
            let attach = Arc::new(SeqPacket::from_fd(unsafe { inherited_fd(fd) }));
            hw::model::run_attached(cfg, control, attach)
        }
        None => hw::model::run(cfg, control),
    }
}

#[cfg(target_os = "redox")]
fn serve(cfg: Config, a: &Args) -> Result<(), hw::model::ModelError> {
    use ipc_protocol::scheme::Opener;
    let opener = a.launcher_pid.map_or(Opener::Root, Opener::Process);
    hw::model::scheme::serve(cfg, opener)
}
