//! A GPU server that meets a device its predecessor left (issue 14: the
//! device outlives its driver, and a restarted GPU server re-probes it
//! without losing VRAM). Driver A fills VRAM, the last 2 MiB included
//! (where a fresh probe's self-test copies), and drives the copy engine's
//! done register far past where a fresh driver starts numbering; then it
//! dies. Driver B probes with `Meeting::Reattach`: every byte A left is
//! still there, and B's own copies wait for their own completions.

use std::os::fd::AsFd;
use std::sync::Arc;

use hw::model::{run_attached, Config};
use hw::shm::Region;
use hw::xe::layout;
use ipc_protocol::transport::{SeqPacket, Transport};
use xe_svm::device::Device;
use xe_svm::probe::{probe, Meeting};

const VRAM: u64 = 16 << 20;
const MIB2: u64 = 2 << 20;
const SLOT: u32 = 5;

fn pattern(seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..MIB2)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect()
}

/// A staging buffer of two 2 MiB halves, DMA-mapped at `SLOT`.
fn staging(dev: &Device) -> (Region, u64) {
    let r = Region::create("reattach-staging", 2 * MIB2 as usize).unwrap();
    let dma = dev
        .bar
        .dma_map(SLOT, r.dup_fd().unwrap(), 2 * MIB2)
        .unwrap();
    (r, dma)
}

/// The 2 MiB of VRAM at `at`, read through the copy engine.
fn vram_at(dev: &Device, r: &Region, dma: u64, at: u64) -> Vec<u8> {
    assert!(dev.copy(&[(at, dma + MIB2, MIB2)]).unwrap(), "copy failed");
    let mut out = vec![0u8; MIB2 as usize];
    r.read(MIB2, &mut out);
    out
}

#[test]
fn a_reattaching_probe_leaves_vram_alone_and_numbers_past_the_device() {
    let (a_end, a_device) = SeqPacket::pair().unwrap();
    let a_device = a_device.fd().as_fd().try_clone_to_owned().unwrap();
    let (attach_init, attach_device) = SeqPacket::pair().unwrap();
    let cfg = Config {
        vram_bytes: VRAM,
        hw_threads: 16,
        ..Default::default()
    };
    let model = std::thread::spawn(move || {
        let first: Arc<dyn Transport> = Arc::new(SeqPacket::from_fd(a_device));
        run_attached(cfg, first, Arc::new(attach_device))
    });
    let last = VRAM - MIB2;
    let (low, high) = (pattern(1), pattern(2));
    let left_at = {
        let (bar, _) = probe(Arc::new(a_end), Meeting::Fresh).unwrap();
        let a = Device::new(Arc::new(bar));
        let (r, dma) = staging(&a);
        r.write(0, &low);
        // Many small copies: the done register ends far past 100.
        for i in 0..400u64 {
            assert!(a.copy(&[(dma + i * 4096, i * 4096, 4096)]).unwrap());
        }
        r.write(0, &high);
        assert!(a.copy(&[(dma, last, MIB2)]).unwrap());
        a.bar.reg(layout::REG_BCS_DONE)
    }; // driver A dies: its control socket closes
    assert!(left_at > 400);

    let (b_end, b_device) = SeqPacket::pair().unwrap();
    let b_device = b_device.fd().as_fd().try_clone_to_owned().unwrap();
    attach_init.send(&[0], vec![b_device]).unwrap();
    let (bar, report) = probe(Arc::new(b_end), Meeting::Reattach).unwrap();
    assert_eq!(report.vram_bytes, VRAM);
    // The engine retires in order and shows the last number it retired: a
    // copy numbered at or below what A left would read as done at once.
    let past = |before: u32, after: u32| (after.wrapping_sub(before) as i32) > 0;
    let b = Device::new(Arc::new(bar));
    let probed = b.bar.reg(layout::REG_BCS_DONE);
    assert!(
        past(left_at, probed),
        "the probe numbered its copies at or below {left_at}"
    );
    let (r, dma) = staging(&b);
    assert!(vram_at(&b, &r, dma, last) == high, "the probe wrote VRAM");
    let done = b.bar.reg(layout::REG_BCS_DONE);
    assert!(
        past(probed, done),
        "B numbered its copy at or below {probed}"
    );
    let first = vram_at(&b, &r, dma, 0);
    assert!(
        first[..400 * 4096] == low[..400 * 4096],
        "A's pages did not survive"
    );
    drop(b);
    drop(attach_init); // init is gone: the device stops
    model.join().unwrap().unwrap();
}
