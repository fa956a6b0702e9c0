//! Objects released while their pages are in VRAM: the VRAM comes back, and
//! no per-object resource (DMA slots, VMs) leaks over many cycles.

use init::client::SvmBuffer;
use init::supervisor::{BootOptions, System};
use ipc_protocol::interfaces::gpu::{BindView, CreateVm, DestroyVm, Stats, Submit, Unbind, Wait};
use ipc_protocol::types::{JobStatus, KernelKind};

#[test]
fn vram_returns_when_objects_go_while_in_vram() {
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_svm"));
    std::env::set_var("SVM_BIN_DIR", exe.parent().unwrap());
    let mut opts = BootOptions::default();
    opts.device.vram_bytes = 64 << 20;
    let (system, c) = System::boot(&opts).unwrap();
    let c = c.unwrap();
    let baseline = c.gpu.call(Stats {}).unwrap().vram_used;
    // More cycles than the GPU server has DMA slots (60).
    for round in 0..80u32 {
        let vm = c.gpu.call(CreateVm {}).unwrap().vm;
        let buf = SvmBuffer::new(&c.pager, 2 << 20).unwrap();
        c.gpu
            .call(BindView {
                vm,
                view: buf.view,
                gpu_addr: buf.addr,
                flags: 0,
            })
            .unwrap();
        // SAFETY: ours until release; the GPU job runs after the fill.
        unsafe { buf.words() }.fill(round);
        let job = c
            .gpu
            .call(Submit {
                vm,
                kernel: KernelKind::IncrementAll,
                addr: buf.addr,
                len: 2 << 20,
                stride: 4,
                value: 1,
                threads: 16,
            })
            .unwrap()
            .job;
        assert_eq!(
            c.gpu
                .call(Wait {
                    job,
                    timeout_ms: 60_000
                })
                .unwrap()
                .status,
            JobStatus::Completed
        );
        assert!(
            c.gpu.call(Stats {}).unwrap().vram_used > baseline,
            "round {round}: nothing went to VRAM"
        );
        // Release without reading anything back: the pages are in VRAM.
        c.gpu
            .call(Unbind {
                vm,
                gpu_addr: buf.addr,
            })
            .unwrap();
        buf.release(&c.pager).unwrap();
        c.gpu.call(DestroyVm { vm }).unwrap();
        assert_eq!(
            c.gpu.call(Stats {}).unwrap().vram_used,
            baseline,
            "round {round}: VRAM leaked"
        );
    }
    drop(c);
    assert!(system.shutdown().is_empty());
}
