//! View changes across real processes (issue 6): mremap (plain and
//! MREMAP_DONTUNMAP) under threads hammering reads while the pages are in
//! VRAM, and fork with a child that reads, then writes while the parent's
//! GPU increments. Every word of every page is checked.

use init::supervisor::{BootOptions, Clients, System};
use init::views::{fork_race, mremap_race, ForkConfig, MremapConfig};

fn boot() -> (System, Clients) {
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_svm"));
    std::env::set_var("SVM_BIN_DIR", exe.parent().unwrap());
    let (s, c) = System::boot(&BootOptions::default()).unwrap();
    (s, c.unwrap())
}

fn mremap_under_reads(dontunmap: bool) {
    let (system, c) = boot();
    for round in 0..3 {
        let r = mremap_race(
            &c,
            &MremapConfig {
                bytes: 2 << 20,
                dontunmap,
                readers: 4,
            },
        )
        .unwrap();
        println!("round {round}: {}", r.line());
        assert_eq!(r.bad_words, 0, "{r:?}");
        assert!(
            r.pages_to_ram >= 512,
            "every page came back from VRAM: {r:?}"
        );
        assert!(
            r.gpu_follows,
            "the GPU binding did not follow the view: {r:?}"
        );
    }
    let stats = c.gpu.call(ipc_protocol::interfaces::gpu::Stats {}).unwrap();
    drop(c);
    assert!(system.shutdown().is_empty());
    assert_eq!(stats.vram_used, 0, "VRAM left behind: {stats:?}");
}

#[test]
fn mremap_while_reads_hammer_a_range_in_vram() {
    mremap_under_reads(false);
}

#[test]
fn mremap_dontunmap_while_reads_hammer_a_range_in_vram() {
    mremap_under_reads(true);
}

#[test]
fn fork_child_reads_then_writes_while_the_gpu_increments() {
    let (system, c) = boot();
    let r = fork_race(
        &c,
        &ForkConfig {
            bytes: 4 << 20,
            readers: 4,
            kernels: 6,
            child_rounds: 3,
        },
    )
    .unwrap();
    println!("{}", r.line());
    assert_eq!((r.child_bad, r.bad_words), (0, 0), "{r:?}");
    assert!(
        r.pages_to_ram >= 1024,
        "the child pulled every page back: {r:?}"
    );
    let stats = c.gpu.call(ipc_protocol::interfaces::gpu::Stats {}).unwrap();
    drop(c);
    assert!(system.shutdown().is_empty());
    assert_eq!(stats.vram_used, 0, "VRAM left behind: {stats:?}");
}
