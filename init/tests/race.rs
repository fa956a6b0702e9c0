//! GPU faults racing CPU faults on the same pages, across real processes;
//! and rule 8 shown to matter: the same race with the pager's invalidation
//! switched off loses data.

use init::supervisor::{BootOptions, System};

fn boot(pager_args: &[&str]) -> (System, init::supervisor::Clients) {
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_svm"));
    std::env::set_var("SVM_BIN_DIR", exe.parent().unwrap());
    let mut opts = BootOptions {
        pager_args: pager_args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    opts.device.vram_bytes = 128 << 20;
    let (s, c) = System::boot(&opts).unwrap();
    (s, c.unwrap())
}

#[test]
fn gpu_faults_racing_cpu_faults_lose_nothing() {
    let (system, c) = boot(&[]);
    let r = init::race::run(&c, 8 << 20, 6, 4, 120_000).unwrap();
    drop(c);
    assert!(system.shutdown().is_empty());
    assert_eq!(r.bad_words, 0, "{r:?}");
    assert!(
        r.pages_to_ram > 0 && r.gpu_faults > 0,
        "the race did not happen: {r:?}"
    );
}

#[test]
fn rule8_broken_loses_increments() {
    // Without the invalidation, the GPU keeps writing VRAM pages after the
    // pager copied them back and their blocks were freed.
    let mut lost = 0;
    for _ in 0..3 {
        let (system, c) = boot(&["--unsafe-skip-invalidate"]);
        // A broken system may hang its job: a short wait counts as detection.
        let r = init::race::run(&c, 8 << 20, 6, 4, 10_000);
        drop(c);
        system.shutdown();
        lost += match r {
            Ok(r) => r.bad_words,
            Err(_) => 1, // a job that fails is a detected break too
        };
        if lost > 0 {
            break;
        }
    }
    assert!(lost > 0, "breaking rule 8 went unnoticed");
}
