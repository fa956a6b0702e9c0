//! Issue 12, the device model: a DMA mapping larger than its memfd is a
//! typed error (old: the map succeeded and the first access past the end
//! of the file killed the device with SIGBUS), and a mapped memfd that
//! allows sealing is sealed against shrinking.

use hw::model::{spawn_in_process, Config};
use rustix::fs::{ftruncate, memfd_create, MemfdFlags};
use xe_svm::probe::{probe, Meeting};

#[test]
fn a_mapping_past_the_end_of_its_memfd_is_refused() {
    let (t, _h) = spawn_in_process(Config {
        vram_bytes: 32 << 20,
        hw_threads: 4,
        ..Default::default()
    })
    .unwrap();
    let (bar, _) = probe(t, Meeting::Fresh).unwrap();
    let short = memfd_create("short", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
    ftruncate(&short, 4096).unwrap();
    assert!(bar.dma_map(5, short, 2 << 20).is_err());
    assert!(bar.dma_map(5, page_memfd(), 0).is_err(), "an empty mapping");

    let ok = memfd_create("ok", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
    ftruncate(&ok, 2 << 20).unwrap();
    let keep = rustix::io::dup(&ok).unwrap();
    bar.dma_map(6, ok, 2 << 20).unwrap();
    assert!(
        ftruncate(&keep, 4096).is_err(),
        "a mapped memfd can no longer shrink"
    );
    // The device still answers its control channel.
    assert!(bar.dma_unmap(6).is_ok());
}

fn page_memfd() -> std::os::fd::OwnedFd {
    let f = memfd_create("any", MemfdFlags::CLOEXEC).unwrap();
    ftruncate(&f, 4096).unwrap();
    f
}
