//! Peer windows (several GPUs, issue 17): a device's copy engine reaches a
//! peer's VRAM through the window its driver mapped, standing for a PCIe
//! peer-to-peer BAR. A push (this device's VRAM into the peer's) and a
//! pull land every byte; a window that is not mapped, or a bad map, is
//! refused with nothing written.

mod rig;

use hw::bar::BarError;
use hw::control::{STATUS_BAD_SLOT, STATUS_MAP_FAILED};
use hw::model::Injection;
use hw::shm::Region;
use hw::xe::layout::{self, peer_address};
use rig::{Rig, VRAM};

const BYTES: u64 = 3 << 20;

/// Two devices, GPU 0 and GPU 1; GPU 0 maps GPU 1's VRAM as its window.
fn two_devices() -> (Rig, Rig, u64) {
    let (a, b) = (
        Rig::in_process(Injection::default()),
        Rig::in_process(Injection::default()),
    );
    let window = a
        .bar
        .peer_map(1, b.bar.vram().dup_fd().unwrap(), VRAM)
        .expect("GPU 0 maps GPU 1's VRAM");
    assert_eq!(window, peer_address(1, 0));
    (a, b, window)
}

fn pattern(seed: u64) -> Vec<u8> {
    (0..BYTES)
        .map(|i| (i * 31 + i / 4096 + seed) as u8)
        .collect()
}

fn read(r: &Region, off: u64) -> Vec<u8> {
    let mut v = vec![0u8; BYTES as usize];
    assert!(r.read(off, &mut v));
    v
}

#[test]
fn the_source_pushes_into_its_peers_vram_and_pulls_from_it() {
    let (a, b, window) = two_devices();
    let data = pattern(1);
    a.bar.vram().write(0x10_0000, &data);
    // Push: GPU 0's copy engine writes GPU 1's VRAM at 5 MiB.
    let seq = a.copy(0x10_0000, window + (5 << 20), BYTES);
    assert_ne!(a.bar.reg(layout::REG_BCS_ERROR), seq);
    assert!(read(b.bar.vram(), 5 << 20) == data, "the push differs");
    // Pull: GPU 0 reads GPU 1's VRAM back into its own at 9 MiB.
    let back = pattern(2);
    b.bar.vram().write(20 << 20, &back);
    let seq = a.copy(window + (20 << 20), 9 << 20, BYTES);
    assert_ne!(a.bar.reg(layout::REG_BCS_ERROR), seq);
    assert!(read(a.bar.vram(), 9 << 20) == back, "the pull differs");
}

#[test]
fn a_copy_through_a_window_not_mapped_fails_and_writes_nothing() {
    let (a, b, window) = two_devices();
    a.bar.vram().write(0, &pattern(3));
    // GPU 2 has no window; past the end of GPU 1's VRAM is outside it.
    for dst in [peer_address(2, 0), window + VRAM - 4096] {
        let seq = a.copy(0, dst, BYTES);
        assert_eq!(a.bar.reg(layout::REG_BCS_ERROR), seq, "to {dst:#x}");
    }
    a.bar.peer_unmap(1).expect("the window goes");
    let seq = a.copy(0, window, BYTES);
    assert_eq!(
        a.bar.reg(layout::REG_BCS_ERROR),
        seq,
        "through an unmapped window"
    );
    assert!(
        read(b.bar.vram(), 0).iter().all(|&x| x == 0),
        "GPU 1's VRAM was written"
    );
    assert!(matches!(
        a.bar.peer_unmap(1),
        Err(BarError::Refused(STATUS_BAD_SLOT))
    ));
}

#[test]
fn a_bad_peer_map_is_refused() {
    let (a, b) = (
        Rig::in_process(Injection::default()),
        Rig::in_process(Injection::default()),
    );
    let fd = || b.bar.vram().dup_fd().unwrap();
    // A GPU id past the windows, a size past the memfd, a size of zero.
    assert!(matches!(
        a.bar.peer_map(layout::PEERS as u8, fd(), VRAM),
        Err(BarError::Refused(STATUS_BAD_SLOT))
    ));
    for size in [VRAM + 4096, 0] {
        assert!(matches!(
            a.bar.peer_map(1, fd(), size),
            Err(BarError::Refused(STATUS_MAP_FAILED))
        ));
    }
}
