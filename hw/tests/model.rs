//! The device model driven the way a driver drives hardware: page tables
//! written into VRAM by hand, commands on rings, faults answered from the
//! GuC-to-host ring.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hw::bar::{Bar, BarError};
use hw::model::{spawn_in_process, spawn_process, Config, Injection};
use hw::shm::{Region, RingError};
use hw::xe::commands::{
    Command, InvalidationScope, KernelLaunch, KernelOp, MemCopy, TlbInvalidation,
};
use hw::xe::fault::{FaultReply, FaultType};
use hw::xe::layout::{self, Ring};
use hw::xe::pte::{encode_leaf, encode_table, index, PageSize, Target, ADDR_MASK};

const VRAM: u64 = 64 << 20;
/// Page tables come from the top 8 MiB of VRAM, data pages from below.
const PT_BASE: u64 = VRAM - (8 << 20);

struct Rig {
    bar: Arc<Bar>,
    next_pt: AtomicU64,
    seq: AtomicU32,
    _child: Option<std::process::Child>,
}

impl Rig {
    fn in_process(inject: Injection) -> Self {
        let (t, _h) = spawn_in_process(Config {
            vram_bytes: VRAM,
            hw_threads: 16,
            inject,
        })
        .unwrap();
        Self::with(t, None)
    }
    fn process() -> Self {
        let cfg = Config {
            vram_bytes: VRAM,
            hw_threads: 16,
            inject: Injection::default(),
        };
        let (t, child) =
            spawn_process(std::path::Path::new(env!("CARGO_BIN_EXE_xe-model")), &cfg).unwrap();
        Self::with(t, Some(child))
    }
    fn with(
        t: Arc<dyn ipc_protocol::transport::Transport>,
        child: Option<std::process::Child>,
    ) -> Self {
        let bar = Arc::new(Bar::connect(t, Duration::from_secs(10)).unwrap());
        Self {
            bar,
            next_pt: AtomicU64::new(PT_BASE),
            seq: AtomicU32::new(1),
            _child: child,
        }
    }

    fn alloc_pt(&self) -> u64 {
        let pt = self.next_pt.fetch_add(4096, Ordering::Relaxed);
        assert!(pt < VRAM);
        self.bar.vram().write(pt, &[0u8; 4096]);
        pt
    }

    fn entry(&self, table: u64, i: usize) -> &AtomicU64 {
        self.bar.vram().u64_at((table + i as u64 * 8) as usize)
    }

    fn root(&self, asid: u32) -> u64 {
        self.bar
            .regs()
            .u64_at(layout::CONTEXT_TABLE + asid as usize * 8)
            .load(Ordering::Acquire)
    }

    /// Maps `va` to `pa` with a leaf of `size` in ASID `asid`'s tables.
    fn map(&self, asid: u32, va: u64, pa: u64, size: PageSize, target: Target) {
        if self.root(asid) == 0 {
            self.bar.set_context(asid, self.alloc_pt());
        }
        let mut table = self.root(asid);
        for level in (size.level() + 1..4).rev() {
            let e = self.entry(table, index(va, level));
            if e.load(Ordering::Acquire) & 1 == 0 {
                e.store(encode_table(self.alloc_pt()).unwrap(), Ordering::Release);
            }
            table = e.load(Ordering::Acquire) & ADDR_MASK;
        }
        match size {
            PageSize::Size64K => {
                for i in 0..16u64 {
                    let raw = encode_leaf(pa + i * 4096, size, target, true, 0).unwrap();
                    self.entry(table, index(va + i * 4096, 0))
                        .store(raw, Ordering::Release);
                }
            }
            _ => self.entry(table, index(va, size.level())).store(
                encode_leaf(pa, size, target, true, 0).unwrap(),
                Ordering::Release,
            ),
        }
    }

    fn unmap_4k(&self, asid: u32, va: u64) {
        let mut table = self.root(asid);
        for level in (1..4).rev() {
            table = self.entry(table, index(va, level)).load(Ordering::Acquire) & ADDR_MASK;
        }
        self.entry(table, index(va, 0)).store(0, Ordering::Release);
    }

    fn launch(
        &self,
        asid: u32,
        op: KernelOp,
        addr: u64,
        len: u64,
        stride: u32,
        value: u32,
    ) -> (u32, u32) {
        let job = self.seq.fetch_add(1, Ordering::Relaxed);
        let k = KernelLaunch {
            job,
            asid,
            op,
            addr,
            len,
            stride,
            value,
            threads: 16,
        };
        self.bar
            .submit(Ring::Compute, job, &Command::Launch(k))
            .unwrap();
        self.bar
            .wait_seqno(layout::REG_CCS_DONE, job, Duration::from_secs(60))
            .unwrap();
        self.bar.job_result(job).unwrap()
    }

    fn copy(&self, src: u64, dst: u64, bytes: u64) -> u32 {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        self.bar
            .submit(
                Ring::Copy,
                seq,
                &Command::MemCopy(MemCopy::contiguous(src, dst, bytes).unwrap()),
            )
            .unwrap();
        self.bar
            .wait_seqno(layout::REG_BCS_DONE, seq, Duration::from_secs(30))
            .unwrap();
        seq
    }

    fn invalidate(&self, asid: u32, va: u64, len_log2: u8) {
        let seqno = self.seq.fetch_add(1, Ordering::Relaxed);
        let inv = TlbInvalidation {
            seqno,
            scope: InvalidationScope::Range,
            asid,
            address: va,
            len_log2,
        };
        self.bar
            .submit(Ring::HostToGuc, 0, &Command::TlbInvalidation(inv))
            .unwrap();
        match self
            .bar
            .next_guc_message(Some(Duration::from_secs(10)))
            .unwrap()
        {
            Command::TlbInvalidationDone { seqno: s } if s == seqno => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    fn vram_u32(&self, pa: u64) -> u32 {
        self.bar.vram().u32_at(pa as usize).load(Ordering::Acquire)
    }
}

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

/// Answers every fault by mapping a fresh VRAM page; returns faults served.
fn serve_faults(
    rig: Arc<Rig>,
    next_page: u64,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u32> {
    std::thread::spawn(move || {
        let mut served = 0;
        let mut next = next_page;
        while !stop.load(Ordering::Acquire) {
            match rig.bar.next_guc_message(Some(Duration::from_millis(50))) {
                Ok(Command::PageFault(f)) => {
                    assert_eq!(f.fault_type, FaultType::NotPresent);
                    rig.bar.vram().write(next, &[0u8; 4096]);
                    rig.map(f.asid, f.address, next, PageSize::Size4K, Target::Device);
                    next += 4096;
                    rig.bar
                        .submit(
                            Ring::HostToGuc,
                            0,
                            &Command::PageFaultResponse(FaultReply::to(&f, true)),
                        )
                        .unwrap();
                    served += 1;
                }
                Ok(other) => panic!("unexpected {other:?}"),
                Err(BarError::Ring(RingError::TimedOut)) => {}
                Err(e) => panic!("{e}"),
            }
        }
        served
    })
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
        encode_leaf(0x30_0000, PageSize::Size4K, Target::Device, true, 0).unwrap(),
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
