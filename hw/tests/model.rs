//! The device model driven the way a driver drives hardware: page tables
//! written into VRAM by hand, commands on rings, faults answered from the
//! GuC-to-host ring.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hw::bar::BarError;
use hw::model::Injection;
use hw::shm::Region;
use hw::xe::commands::{Command, KernelOp};
use hw::xe::fault::{AccessType, FaultReply, FaultType};
use hw::xe::layout::{self, Ring};
use hw::xe::pte::{encode_leaf, encode_table, index, LeafAccess, PageSize, Target};

mod rig;
use rig::{serve_faults, Rig};

#[test]
fn walk_hand_built_tables_at_each_page_size() {
    let rig = Rig::in_process(Injection::default());
    let cases = [
        (PageSize::Size4K, 0x10_0000_1000u64, 0x40_0000u64),
        (PageSize::Size64K, 0x20_0001_0000, 0x80_0000),
        (PageSize::Size2M, 0x30_0020_0000, 0x100_0000),
    ];
    for (size, va, pa) in cases {
        rig.map(1, va, pa, size, Target::Device);
        let value = 0xabc0_0000 | (size.bytes() >> 12) as u32;
        // One word every 4 KiB across the whole page: each lands at pa + offset.
        assert_eq!(
            rig.launch(1, KernelOp::StridedWrite, va, size.bytes(), 4096, value),
            (1, 0),
            "{size:?}"
        );
        for off in (0..size.bytes()).step_by(4096) {
            assert_eq!(rig.vram_u32(pa + off), value, "{size:?} offset {off:#x}");
        }
        assert_eq!(
            rig.vram_u32(pa + size.bytes()),
            0,
            "{size:?}: wrote past the page"
        );
    }
    // A system page through a DMA mapping, with the page table itself in VRAM.
    let memfd = Region::create("sys", 4096).unwrap();
    let dma = rig.bar.dma_map(3, memfd.dup_fd().unwrap(), 4096).unwrap();
    rig.map(1, 0x40_0000_0000, dma, PageSize::Size4K, Target::System);
    assert_eq!(
        rig.launch(1, KernelOp::StridedWrite, 0x40_0000_0000, 4096, 1024, 77),
        (1, 0)
    );
    for off in (0..4096).step_by(1024) {
        assert_eq!(memfd.u32_at(off).load(Ordering::Acquire), 77);
    }
}

fn fault_stall_replay(inject: Injection) -> Duration {
    let rig = Arc::new(Rig::in_process(inject));
    let stop = Arc::new(AtomicBool::new(false));
    let server = serve_faults(rig.clone(), 0x10_0000, stop.clone());
    let va = 0x7000_0000u64;
    let t0 = Instant::now();
    // 64 pages, 16 hardware threads: many faults outstanding at once.
    let (status, faults) = rig.launch(2, KernelOp::IncrementAll, va, 64 * 4096, 0, 5);
    let took = t0.elapsed();
    assert_eq!(status, 1);
    assert_eq!(faults, 64, "one fault per page, then replay");
    assert_eq!(
        rig.launch(2, KernelOp::IncrementAll, va, 64 * 4096, 0, 1),
        (1, 0),
        "second pass hits the TLB"
    );
    stop.store(true, Ordering::Release);
    assert_eq!(server.join().unwrap(), 64);
    assert_eq!(rig.bar.reg(layout::REG_FAULTS_RAISED), 64);
    assert_eq!(rig.bar.reg(layout::REG_FAULTS_REPLIED), 64);
    // Every word of every page was incremented by both passes, exactly once each.
    for pa in (0x10_0000..0x10_0000 + 64 * 4096u64).step_by(4) {
        assert_eq!(rig.vram_u32(pa), 6, "word at {pa:#x}");
    }
    took
}

#[test]
fn page_tables_in_system_memory() {
    // All four levels in a DMA-mapped memfd; the leaf points into VRAM.
    let rig = Rig::in_process(Injection::default());
    let tables = Region::create("pt", 4 * 4096).unwrap();
    let base = rig
        .bar
        .dma_map(7, tables.dup_fd().unwrap(), 4 * 4096)
        .unwrap();
    let va = 0x12_3456_7000u64;
    let entry = |level: u32| (3 - level) as u64 * 4096 + index(va, level) as u64 * 8;
    for level in (1..4).rev() {
        let next = base + (4 - level) as u64 * 4096;
        tables
            .u64_at(entry(level) as usize)
            .store(encode_table(next).unwrap(), Ordering::Release);
    }
    tables.u64_at(entry(0) as usize).store(
        encode_leaf(
            0x30_0000,
            PageSize::Size4K,
            Target::Device,
            LeafAccess::ALL,
            0,
        )
        .unwrap(),
        Ordering::Release,
    );
    rig.bar.set_context(8, base);
    assert_eq!(
        rig.launch(8, KernelOp::StridedWrite, va, 4096, 2048, 9),
        (1, 0)
    );
    assert_eq!((rig.vram_u32(0x30_0000), rig.vram_u32(0x30_0800)), (9, 9));
    // RandomRead over the page touches only mapped memory and completes.
    assert_eq!(
        rig.launch(8, KernelOp::RandomRead, va, 4096, 0, 1234),
        (1, 0)
    );
}

#[test]
fn fault_stall_and_replay() {
    fault_stall_replay(Injection::default());
}

#[test]
fn delayed_fault_replies_still_complete() {
    let took = fault_stall_replay(Injection {
        fault_reply_delay: Duration::from_millis(2),
        ..Default::default()
    });
    // 64 replies, each held 2 ms by the GuC before delivery.
    assert!(
        took >= Duration::from_millis(128),
        "replies were not delayed: {took:?}"
    );
}

#[test]
fn failed_fault_reply_fails_the_job() {
    let rig = Arc::new(Rig::in_process(Injection::default()));
    let r2 = rig.clone();
    let refuser = std::thread::spawn(move || {
        if let Ok(Command::PageFault(f)) = r2.bar.next_guc_message(Some(Duration::from_secs(10))) {
            r2.bar
                .submit(
                    Ring::HostToGuc,
                    0,
                    &Command::PageFaultResponse(FaultReply::to(&f, false)),
                )
                .unwrap();
        }
    });
    let (status, _) = rig.launch(3, KernelOp::TouchPages, 0x9000_0000, 4096, 0, 0);
    refuser.join().unwrap();
    assert_eq!(status, 2, "an unresolved fault fails the job");
}

/// A page mapped writable but without atomics (`AE` clear): a write lands,
/// an atomic faults as an atomic access violation, and a refused reply
/// fails its job.
#[test]
fn an_atomic_where_atomics_are_off_faults() {
    let rig = Arc::new(Rig::in_process(Injection::default()));
    let (va, pa) = (0xa000_0000u64, 0x40_0000u64);
    let no_atomics = LeafAccess {
        writable: true,
        atomics: false,
    };
    rig.map_with(3, va, pa, (PageSize::Size4K, Target::Device), no_atomics);
    let (status, _) = rig.launch(3, KernelOp::IncrementAll, va, 4096, 0, 1);
    assert_eq!(status, 1, "a write where writes are allowed lands (Done)");
    let r2 = rig.clone();
    let refuser = std::thread::spawn(move || {
        let Ok(Command::PageFault(f)) = r2.bar.next_guc_message(Some(Duration::from_secs(10)))
        else {
            panic!("no fault");
        };
        let reply = Command::PageFaultResponse(FaultReply::to(&f, false));
        r2.bar.submit(Ring::HostToGuc, 0, &reply).unwrap();
        (f.access, f.fault_type)
    });
    let (status, _) = rig.launch(3, KernelOp::AtomicAdd, va, 4096, 0, 1);
    let seen = refuser.join().unwrap();
    assert_eq!(seen, (AccessType::Atomic, FaultType::AtomicAccessViolation));
    assert_eq!(status, 2, "the refused atomic fails the job");
    assert_eq!(rig.vram_u32(pa), 1, "only the write landed");
}

#[test]
fn tlb_serves_stale_entries_until_invalidated() {
    let rig = Rig::in_process(Injection::default());
    let va = 0x5000_0000u64;
    let (a, b) = (0x20_0000u64, 0x30_0000u64);
    rig.map(4, va, a, PageSize::Size4K, Target::Device);
    assert_eq!(rig.launch(4, KernelOp::AtomicAdd, va, 4096, 0, 1), (1, 0));
    // Remap to B without invalidating: the device still writes A.
    rig.map(4, va, b, PageSize::Size4K, Target::Device);
    assert_eq!(rig.launch(4, KernelOp::AtomicAdd, va, 4096, 0, 1), (1, 0));
    assert_eq!(
        (rig.vram_u32(a), rig.vram_u32(b)),
        (2, 0),
        "stale entry used until invalidation"
    );
    rig.invalidate(4, va, 12);
    assert_eq!(rig.launch(4, KernelOp::AtomicAdd, va, 4096, 0, 1), (1, 0));
    assert_eq!((rig.vram_u32(a), rig.vram_u32(b)), (2, 1));
    // Unmap + invalidate: the next access faults.
    rig.unmap_4k(4, va);
    rig.invalidate(4, va, 12);
    let r = Arc::new(rig);
    let stop = Arc::new(AtomicBool::new(false));
    let server = serve_faults(r.clone(), 0x40_0000, stop.clone());
    assert_eq!(r.launch(4, KernelOp::AtomicAdd, va, 4096, 0, 1), (1, 1));
    stop.store(true, Ordering::Release);
    server.join().unwrap();
    assert_eq!(r.bar.reg(layout::REG_STALE_TLB_USES), 0);
}

#[test]
fn dropped_invalidation_is_detected_as_stale_use() {
    let rig = Rig::in_process(Injection {
        drop_tlb_invalidation_every: 1,
        ..Default::default()
    });
    let va = 0x6000_0000u64;
    rig.map(5, va, 0x20_0000, PageSize::Size4K, Target::Device);
    assert_eq!(rig.launch(5, KernelOp::TouchPages, va, 4096, 0, 0), (1, 0));
    rig.map(5, va, 0x30_0000, PageSize::Size4K, Target::Device);
    rig.invalidate(5, va, 12); // acknowledged, but dropped
    assert_eq!(rig.bar.reg(layout::REG_STALE_TLB_USES), 0);
    rig.launch(5, KernelOp::TouchPages, va, 4096, 0, 0);
    assert!(
        rig.bar.reg(layout::REG_STALE_TLB_USES) >= 1,
        "the model must report the stale mapping"
    );
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect()
}

fn copy_roundtrip(rig: &Rig) {
    for (i, bytes) in [4096u64, 64 << 10, 2 << 20].into_iter().enumerate() {
        let data = random_bytes(bytes as usize, 0xfeed + i as u64);
        let src = Region::create("src", bytes as usize).unwrap();
        let dst = Region::create("dst", bytes as usize).unwrap();
        src.write(0, &data);
        let s = rig
            .bar
            .dma_map(10 + 2 * i as u32, src.dup_fd().unwrap(), bytes)
            .unwrap();
        let d = rig
            .bar
            .dma_map(11 + 2 * i as u32, dst.dup_fd().unwrap(), bytes)
            .unwrap();
        let vram = 0x100_0000 + i as u64 * (4 << 20);
        // System -> VRAM -> system.
        let seq = rig.copy(s, vram, bytes);
        let mut in_vram = vec![0u8; bytes as usize];
        rig.bar.vram().read(vram, &mut in_vram);
        assert!(in_vram == data, "{bytes}: VRAM differs after the copy in");
        rig.copy(vram, d, bytes);
        let mut back = vec![0u8; bytes as usize];
        dst.read(0, &mut back);
        assert!(back == data, "{bytes}: data differs after the round trip");
        assert_ne!(rig.bar.reg(layout::REG_BCS_ERROR), seq);
    }
}

#[test]
fn copy_engine_moves_random_data_at_each_size() {
    copy_roundtrip(&Rig::in_process(Injection::default()));
}

#[test]
fn injected_copy_errors_and_bad_addresses_are_reported() {
    let rig = Rig::in_process(Injection {
        fail_copy_every: 2,
        ..Default::default()
    });
    let first = rig.copy(0, 4096, 4096);
    assert_eq!(
        rig.bar.reg(layout::REG_BCS_ERROR),
        0,
        "copy {first} should succeed"
    );
    let second = rig.copy(0, 8192, 4096);
    assert_eq!(
        rig.bar.reg(layout::REG_BCS_ERROR),
        second,
        "every 2nd copy fails"
    );
    let clean = Rig::in_process(Injection::default());
    let bad = clean.copy(0, layout::sysmem_address(60, 0), 4096);
    assert_eq!(
        clean.bar.reg(layout::REG_BCS_ERROR),
        bad,
        "a copy to an unmapped DMA slot fails"
    );
    // Unmapping a slot that was never mapped is refused.
    assert_eq!(
        clean.bar.dma_unmap(61),
        Err(BarError::Refused(hw::model::control::STATUS_BAD_SLOT))
    );
}

#[test]
fn model_runs_as_its_own_process() {
    let rig = Rig::process();
    copy_roundtrip(&rig);
    rig.map(6, 0x1000_0000, 0x20_0000, PageSize::Size2M, Target::Device);
    assert_eq!(
        rig.launch(6, KernelOp::IncrementAll, 0x1000_0000, 2 << 20, 0, 3),
        (1, 0)
    );
    assert_eq!(rig.vram_u32(0x20_0000 + (1 << 20)), 3);
}
