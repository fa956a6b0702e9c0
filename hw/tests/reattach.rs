//! The device outlives its driver (issue 14), as hardware outlives a
//! driver reload: driver A leaves data in VRAM, a DMA mapping, a context
//! and a job stalled on a fault it never answers, and dies; driver B
//! attaches through the channel init would use and finds VRAM intact and
//! everything else of A's gone: the stalled job ended `Faulted`, no
//! context, no DMA mapping, no stale GuC message. Then B drives the device.

mod rig;

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hw::bar::BarError;
use hw::control::STATUS_BAD_SLOT;
use hw::model::{run_attached, Config};
use hw::shm::Region;
use hw::xe::commands::{Command, KernelLaunch, KernelOp, MemCopy};
use hw::xe::layout::{self, Ring};
use hw::xe::pte::{PageSize, Target};
use ipc_protocol::transport::{SeqPacket, Transport};
use rig::{Rig, VRAM};

const DATA: u64 = 0x10_0000;
const STALLED_JOB: u32 = 1000;

/// A fresh control socket pair: the driver's end, and the device's end
/// as the descriptor init passes on the attach channel.
fn channel() -> (SeqPacket, std::os::fd::OwnedFd) {
    let (driver, device) = SeqPacket::pair().unwrap();
    let fd = device.fd().as_fd().try_clone_to_owned().unwrap();
    (driver, fd)
}

/// Driver A's leftovers: data, a DMA mapping, a context, a stalled job.
fn driver_a_leaves_state(a: &Rig) {
    let va = 0x7000_0000u64;
    a.map(2, va, DATA, PageSize::Size4K, Target::Device);
    assert_eq!(
        a.launch(2, KernelOp::StridedWrite, va, 4096, 4, 0xabc),
        (1, 0)
    );
    let sys = Region::create("reattach-sys", 4096).unwrap();
    a.bar.dma_map(9, sys.dup_fd().unwrap(), 4096).unwrap();
    let raised = a.bar.reg(layout::REG_FAULTS_RAISED);
    let k = KernelLaunch {
        job: STALLED_JOB,
        asid: 2,
        op: KernelOp::IncrementAll,
        addr: 0x9000_0000,
        len: 4096,
        stride: 0,
        value: 1,
        threads: 1,
    };
    a.bar
        .submit(Ring::Compute, STALLED_JOB, &Command::Launch(k))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.bar.reg(layout::REG_FAULTS_RAISED) == raised {
        assert!(Instant::now() < deadline, "the job never faulted");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A device model that outlives its drivers, serving `first` now: init's
/// end of its attach channel and the model's thread.
fn attached_model(
    first: OwnedFd,
) -> (
    SeqPacket,
    std::thread::JoinHandle<Result<(), hw::model::ModelError>>,
) {
    let (attach_init, attach_device) = SeqPacket::pair().unwrap();
    let cfg = Config {
        vram_bytes: VRAM,
        hw_threads: 16,
        ..Default::default()
    };
    let model = std::thread::spawn(move || {
        let first: Arc<dyn Transport> = Arc::new(SeqPacket::from_fd(first));
        run_attached(cfg, first, Arc::new(attach_device))
    });
    (attach_init, model)
}

#[test]
fn the_device_outlives_its_driver() {
    let (a_end, a_device) = channel();
    let (attach_init, model) = attached_model(a_device);
    let a = Rig::with(Arc::new(a_end), None);
    driver_a_leaves_state(&a);
    drop(a); // driver A dies: its control socket closes

    let (b_end, b_device) = channel();
    attach_init.send(&[0], vec![b_device]).unwrap();
    let b = Rig::with(Arc::new(b_end), None).continue_from(STALLED_JOB + 1000);
    assert_eq!(b.vram_u32(DATA), 0xabc, "VRAM survived the driver");
    b.bar
        .wait_seqno(layout::REG_CCS_DONE, STALLED_JOB, Duration::from_secs(10))
        .expect("the stalled job ended");
    assert_eq!(
        b.bar.job_result(STALLED_JOB).map(|r| r.0),
        Some(2),
        "Faulted"
    );
    let context = b.bar.regs().u64_at(layout::CONTEXT_TABLE + 2 * 8);
    assert_eq!(
        context.load(std::sync::atomic::Ordering::Acquire),
        0,
        "no context"
    );
    assert_eq!(
        b.bar.dma_unmap(9).unwrap_err(),
        BarError::Refused(STATUS_BAD_SLOT),
        "A's DMA mapping is gone"
    );
    assert!(
        b.bar
            .next_guc_message(Some(Duration::from_millis(200)))
            .is_err(),
        "no GuC message of A's is left for B"
    );
    // B drives the device as a fresh driver would.
    let va = 0x5000_0000u64;
    b.map(4, va, DATA + 4096, PageSize::Size4K, Target::Device);
    assert_eq!(b.launch(4, KernelOp::StridedWrite, va, 4096, 4, 7), (1, 0));
    assert_eq!(b.vram_u32(DATA + 4096), 7);
    assert_eq!(b.vram_u32(DATA), 0xabc, "B's work left A's data alone");
    drop(b);
    drop(attach_init); // init is gone: the device stops
    model.join().unwrap().unwrap();
}

/// A driver can die before the device greets it, or while the device
/// answers it (init restarts the GPU server at once, so kills in quick
/// succession do this): the device takes that for a lost driver, as a
/// closed channel, and serves the next one; it does not stop.
#[test]
fn a_driver_gone_before_its_hello_is_a_lost_driver() {
    let (a_end, a_device) = channel();
    let (attach_init, model) = attached_model(a_device);
    let a = Rig::with(Arc::new(a_end), None);
    // Driver B dies before the device is done with A: its socket, closed
    // on our side, waits in the attach channel.
    let (b_end, b_device) = channel();
    attach_init.send(&[0], vec![b_device]).unwrap();
    drop(b_end);
    drop(a);
    let (c_end, c_device) = channel();
    attach_init.send(&[0], vec![c_device]).unwrap();
    let c = Rig::with(Arc::new(c_end), None);
    let va = 0x5000_0000u64;
    c.map(4, va, DATA, PageSize::Size4K, Target::Device);
    assert_eq!(c.launch(4, KernelOp::StridedWrite, va, 4096, 4, 9), (1, 0));
    assert_eq!(c.vram_u32(DATA), 9);
    drop(c);
    drop(attach_init);
    model.join().unwrap().unwrap();
}

/// DMA in flight is done before the next driver is served: a copy the
/// lost driver started holds its memory, so the reset's unmap does not
/// cut it short, and it could still write a buffer the next driver maps
/// again (the pager's staging memfd). The device finishes it first: the
/// next driver finds every byte of it written.
#[test]
fn a_copy_in_flight_when_its_driver_dies_ends_before_the_next_driver() {
    const BYTES: u64 = 32 << 20;
    const DST: u64 = 16 << 20;
    let (a_end, a_device) = channel();
    let (attach_init, model) = attached_model(a_device);
    let a = Rig::with(Arc::new(a_end), None);
    let sys = Region::create("reattach-copy", BYTES as usize).unwrap();
    let pattern: Vec<u8> = (0..BYTES).map(|i| (i / 4096) as u8 | 1).collect();
    assert!(sys.write(0, &pattern));
    let src = a.bar.dma_map(9, sys.dup_fd().unwrap(), BYTES).unwrap();
    let copy = MemCopy::contiguous(src, DST, BYTES).unwrap();
    a.bar
        .submit(Ring::Copy, 5000, &Command::MemCopy(copy))
        .unwrap();
    // The copy has begun once its first page landed; then A dies.
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.vram_u32(DST) == 0 {
        assert!(Instant::now() < deadline, "the copy never began");
        std::hint::spin_loop();
    }
    drop(a);
    let (b_end, b_device) = channel();
    attach_init.send(&[0], vec![b_device]).unwrap();
    let b = Rig::with(Arc::new(b_end), None);
    let unwritten = (0..BYTES / 4096)
        .filter(|p| b.vram_u32(DST + p * 4096 + 4092) != u32::from_ne_bytes([(*p as u8) | 1; 4]))
        .count();
    assert_eq!(
        unwritten, 0,
        "pages of A's copy still unwritten when B was served"
    );
    drop(b);
    drop(attach_init);
    model.join().unwrap().unwrap();
}
