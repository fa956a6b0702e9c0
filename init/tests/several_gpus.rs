//! A system of three GPUs (issue 17): three device models and three GPU
//! servers under one pager, each server with a peer window on the others'
//! VRAM. Pages a GPU faults on move to it from whichever GPU held them,
//! VRAM to VRAM, and every word is right afterwards.

mod common;

use std::time::Duration;

use common::{bad_words, bounded};
use init::client::{run_kernel, SvmBuffer};
use init::supervisor::{BootOptions, Clients, System};
use ipc_protocol::client::Client;
use ipc_protocol::interfaces::gpu::{CreateVm, Gpu, GpuStats, Stats};
use ipc_protocol::types::{JobStatus, KernelKind, VmId};

const BYTES: usize = 2 << 20;

fn stats(gpu: &Client<Gpu>) -> GpuStats {
    gpu.call(Stats {}).expect("Stats")
}

/// Adds 1 to every word of `buf` on `gpu`.
fn increment(gpu: &Client<Gpu>, vm: VmId, buf: &SvmBuffer) {
    let done = run_kernel(gpu, vm, KernelKind::IncrementAll, buf.addr, BYTES as u64, 1)
        .expect("the kernel ran");
    assert_eq!(done.status, JobStatus::Completed);
}

/// A system of `gpus` GPUs of 64 MiB each, restarted servers included.
fn boot(gpus: u8) -> (System, Clients) {
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_svm"));
    std::env::set_var("SVM_BIN_DIR", exe.parent().unwrap());
    let mut opts = BootOptions::default();
    opts.device.vram_bytes = 64 << 20;
    opts.gpus = gpus;
    let (system, clients) = System::boot(&opts).expect("the GPUs boot");
    (system, clients.expect("clients"))
}

/// A buffer whose word `i` is `i`, bound in a new VM on each of `gpus`.
fn buffer_on(c: &Clients, gpus: &[&Client<Gpu>]) -> (SvmBuffer, Vec<VmId>) {
    let buf = SvmBuffer::new(&c.pager, BYTES).expect("a buffer");
    // SAFETY: ours until release; no job runs on it yet.
    for (i, w) in unsafe { buf.words() }.iter_mut().enumerate() {
        *w = i as u32;
    }
    let vms = gpus
        .iter()
        .map(|g| {
            let vm = g.call(CreateVm {}).expect("a VM").vm;
            buf.bind(g, vm).expect("bind");
            vm
        })
        .collect();
    (buf, vms)
}

#[test]
fn pages_move_gpu_to_gpu_and_every_word_is_right() {
    bounded(Duration::from_secs(120), || {
        let (system, c) = boot(3);
        let gpus: Vec<&Client<Gpu>> = (0..3).map(|g| c.gpu_of(g).expect("a GPU")).collect();
        assert!(c.gpu_of(3).is_none());
        let (buf, vms) = buffer_on(&c, &gpus);
        // GPU 0 faults the pages in, then GPU 2 takes them, then GPU 1.
        increment(gpus[0], vms[0], &buf);
        let ram_before = stats(gpus[0]).pages_to_ram;
        increment(gpus[2], vms[2], &buf);
        assert_eq!(
            stats(gpus[0]).vram_used,
            0,
            "GPU 0 gave every page to GPU 2"
        );
        assert!(stats(gpus[2]).vram_used >= BYTES as u64);
        assert_eq!(
            stats(gpus[0]).pages_to_ram,
            ram_before,
            "none went through RAM"
        );
        increment(gpus[1], vms[1], &buf);
        assert_eq!(
            stats(gpus[2]).vram_used,
            0,
            "GPU 2 gave every page to GPU 1"
        );
        assert!(stats(gpus[1]).vram_used >= BYTES as u64);
        // The CPU reads them back from GPU 1: three increments each.
        assert_eq!(bad_words(&buf, |i| i as u32 + 3), 0);
        buf.release(&c.pager).expect("release");
        drop(c);
        assert!(system.shutdown().is_empty(), "the system stopped cleanly");
    });
}

/// A count past eight is refused by the parser.
#[test]
fn more_than_eight_gpus_are_refused() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_svm"))
        .args(["boot", "--gpus", "9"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// Device 1's GPU server, killed with pages in its VRAM, comes back on
/// the same device as device 0's does: the device model outlives it, the
/// next generation adopts the pages the pager records in its VRAM and
/// rebuilds the client's VM from its journal, and every word is right,
/// also after GPU 0 takes the pages from it VRAM to VRAM.
#[test]
fn a_killed_gpu_server_of_device_one_comes_back_and_loses_nothing() {
    use init::manifest::{DEVICE_MODELS, GPU_SERVERS};
    bounded(Duration::from_secs(120), || {
        let (mut system, c) = boot(2);
        let (server, model) = (GPU_SERVERS[1], DEVICE_MODELS[1]);
        assert_eq!(system.restartable(server), Some(true));
        let gpus: Vec<&Client<Gpu>> = (0..2).map(|g| c.gpu_of(g).expect("a GPU")).collect();
        let (buf, vms) = buffer_on(&c, &gpus);
        increment(gpus[1], vms[1], &buf);
        let device = system.pid(model).expect("device 1's model");
        system.kill(server).unwrap();
        assert!(
            system.wait_generation(server, 2, Duration::from_secs(20)),
            "device 1's GPU server was not restarted"
        );
        // The first call may catch the restart's announcement.
        let _ = gpus[1].call(Stats {});
        assert_eq!(system.pid(model), Some(device), "the same device");
        assert!(
            stats(gpus[1]).vram_used >= BYTES as u64,
            "its pages adopted"
        );
        increment(gpus[1], vms[1], &buf);
        increment(gpus[0], vms[0], &buf);
        assert_eq!(stats(gpus[1]).vram_used, 0, "GPU 0 took every page");
        assert_eq!(bad_words(&buf, |i| i as u32 + 3), 0);
        system.check_alive().unwrap();
        buf.release(&c.pager).expect("release");
        drop(c);
        assert!(system.shutdown().is_empty(), "the system stopped cleanly");
    });
}

/// A pager killed while two GPUs each hold a buffer in VRAM: its next
/// generation rebuilds where every page is from each GPU server's frames
/// (GPU by GPU), so each GPU then takes the other's buffer VRAM to VRAM
/// and the CPU reads every word of both right.
#[test]
fn a_killed_pager_finds_each_gpus_pages_again() {
    use ipc_protocol::interfaces::pager::Accounting;
    bounded(Duration::from_secs(120), || {
        let (mut system, c) = boot(2);
        let gpus: Vec<&Client<Gpu>> = (0..2).map(|g| c.gpu_of(g).expect("a GPU")).collect();
        let (on_0, vms_0) = buffer_on(&c, &gpus);
        let (on_1, vms_1) = buffer_on(&c, &gpus);
        increment(gpus[0], vms_0[0], &on_0);
        increment(gpus[1], vms_1[1], &on_1);
        system.kill("pager").unwrap();
        assert!(
            system.wait_generation("pager", 2, Duration::from_secs(20)),
            "the pager was not restarted"
        );
        c.pager.call(Accounting {}).expect("the next pager serves");
        let ram_before: Vec<u64> = gpus.iter().map(|g| stats(g).pages_to_ram).collect();
        increment(gpus[1], vms_0[1], &on_0);
        increment(gpus[0], vms_1[0], &on_1);
        let ram_after: Vec<u64> = gpus.iter().map(|g| stats(g).pages_to_ram).collect();
        assert_eq!(ram_before, ram_after, "the buffers moved VRAM to VRAM");
        assert_eq!(bad_words(&on_0, |i| i as u32 + 2), 0, "GPU 0's buffer");
        assert_eq!(bad_words(&on_1, |i| i as u32 + 2), 0, "GPU 1's buffer");
        system.check_alive().unwrap();
        on_0.release(&c.pager).expect("release");
        on_1.release(&c.pager).expect("release");
        drop(c);
        assert!(system.shutdown().is_empty(), "the system stopped cleanly");
    });
}
