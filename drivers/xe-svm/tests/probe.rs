//! The GPU server's probe against the device model: a healthy device
//! passes; a device whose copy engine fails is refused. (This test also
//! makes `cargo test --workspace` build the `xe-svm` binary that the boot
//! tests start.)

use hw::model::{spawn_in_process, Config, Injection};
use xe_svm::probe::{probe, Meeting, ProbeError};

#[test]
fn probe_accepts_a_healthy_device() {
    let (t, _h) = spawn_in_process(Config {
        vram_bytes: 32 << 20,
        hw_threads: 8,
        ..Default::default()
    })
    .unwrap();
    let (bar, report) = probe(t, Meeting::Fresh).unwrap();
    assert_eq!(report.vram_bytes, 32 << 20);
    assert_eq!(report.hw_threads, 8);
    assert!(report.copy_bytes_per_sec > 0.0);
    assert_eq!(bar.vram_bytes(), 32 << 20);
}

#[test]
fn probe_refuses_a_device_whose_copies_fail() {
    let inject = Injection {
        fail_copy_every: 1,
        ..Default::default()
    };
    let (t, _h) = spawn_in_process(Config {
        vram_bytes: 32 << 20,
        hw_threads: 8,
        inject,
        ..Default::default()
    })
    .unwrap();
    assert!(matches!(
        probe(t, Meeting::Fresh),
        Err(ProbeError::CopyFailed)
    ));
}
