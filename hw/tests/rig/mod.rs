//! A driver for the device model written by hand, shared by the model's
//! tests: page tables built in VRAM, commands on rings, faults answered
//! from the GuC-to-host ring.
#![allow(dead_code)] // each test file uses part of it

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hw::bar::{Bar, BarError};
use hw::model::{spawn_in_process, spawn_process, Config, Injection};
use hw::shm::RingError;
use hw::xe::commands::{
    BatchSubmit, Command, InvalidationScope, KernelLaunch, KernelOp, MemCopy, TlbInvalidation,
};
use hw::xe::fault::{FaultDescriptor, FaultReply, FaultType};
use hw::xe::layout::{self, Ring};
use hw::xe::pte::{encode_leaf, encode_table, index, LeafAccess, PageSize, Target, ADDR_MASK};

pub const VRAM: u64 = 64 << 20;
/// Page tables come from the top 8 MiB of VRAM, data pages from below.
pub const PT_BASE: u64 = VRAM - (8 << 20);

pub struct Rig {
    pub bar: Arc<Bar>,
    next_pt: AtomicU64,
    seq: AtomicU32,
    _child: Option<std::process::Child>,
}

impl Rig {
    pub fn in_process(inject: Injection) -> Self {
        Self::with_config(Config {
            vram_bytes: VRAM,
            hw_threads: 16,
            inject,
            ..Default::default()
        })
    }
    pub fn with_config(cfg: Config) -> Self {
        let (t, _h) = spawn_in_process(cfg).unwrap();
        Self::with(t, None)
    }
    pub fn process() -> Self {
        let cfg = Config {
            vram_bytes: VRAM,
            hw_threads: 16,
            ..Default::default()
        };
        let (t, child) =
            spawn_process(std::path::Path::new(env!("CARGO_BIN_EXE_xe-model")), &cfg).unwrap();
        Self::with(t, Some(child))
    }
    pub fn with(
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

    pub fn alloc_pt(&self) -> u64 {
        let pt = self.next_pt.fetch_add(4096, Ordering::Relaxed);
        assert!(pt < VRAM);
        self.bar.vram().write(pt, &[0u8; 4096]);
        pt
    }

    pub fn entry(&self, table: u64, i: usize) -> &AtomicU64 {
        self.bar.vram().u64_at((table + i as u64 * 8) as usize)
    }

    pub fn root(&self, asid: u32) -> u64 {
        self.bar
            .regs()
            .u64_at(layout::CONTEXT_TABLE + asid as usize * 8)
            .load(Ordering::Acquire)
    }

    /// Maps `va` to `pa` with a leaf of `size` in ASID `asid`'s tables.
    pub fn map(&self, asid: u32, va: u64, pa: u64, size: PageSize, target: Target) {
        self.map_with(asid, va, pa, (size, target), LeafAccess::ALL);
    }

    /// [`Self::map`] with the leaf's access spelled out.
    pub fn map_with(
        &self,
        asid: u32,
        va: u64,
        pa: u64,
        (size, target): (PageSize, Target),
        access: LeafAccess,
    ) {
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
                    let raw = encode_leaf(pa + i * 4096, size, target, access, 0).unwrap();
                    self.entry(table, index(va + i * 4096, 0))
                        .store(raw, Ordering::Release);
                }
            }
            _ => self.entry(table, index(va, size.level())).store(
                encode_leaf(pa, size, target, access, 0).unwrap(),
                Ordering::Release,
            ),
        }
    }

    pub fn unmap_4k(&self, asid: u32, va: u64) {
        let mut table = self.root(asid);
        for level in (1..4).rev() {
            table = self.entry(table, index(va, level)).load(Ordering::Acquire) & ADDR_MASK;
        }
        self.entry(table, index(va, 0)).store(0, Ordering::Release);
    }

    /// Job and copy sequence numbers go on from `next` (a driver that
    /// attaches to a device another driver used: its registers are past
    /// the numbers a fresh driver would start from).
    pub fn continue_from(self, next: u32) -> Self {
        self.seq.store(next, Ordering::Relaxed);
        self
    }

    pub fn launch(
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

    pub fn copy(&self, src: u64, dst: u64, bytes: u64) -> u32 {
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

    pub fn invalidate(&self, asid: u32, va: u64, len_log2: u8) {
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

    pub fn vram_u32(&self, pa: u64) -> u32 {
        self.bar.vram().u32_at(pa as usize).load(Ordering::Acquire)
    }
}

/// Batch jobs.
impl Rig {
    /// Writes `words` at VRAM address `pa`.
    pub fn write_words(&self, pa: u64, words: &[u32]) {
        assert!(self
            .bar
            .vram()
            .write(pa, &hw::xe::batch::Batch::to_bytes(words)));
    }

    /// Submits the batch at `batch` in ASID `asid`; returns its job id.
    pub fn submit_batch(&self, asid: u32, batch: u64, fence: u64, fence_value: u64) -> u32 {
        let job = self.seq.fetch_add(1, Ordering::Relaxed);
        let b = BatchSubmit {
            job,
            asid,
            batch_addr: batch,
            fence_addr: fence,
            fence_value,
        };
        self.bar
            .submit(Ring::Compute, job, &Command::Batch(b))
            .unwrap();
        job
    }

    /// Waits for `job`: (status, faults).
    pub fn wait(&self, job: u32) -> (u32, u32) {
        self.bar
            .wait_job(job, Duration::from_secs(60))
            .unwrap()
            .expect("job slot still ours")
    }

    /// Submits and waits, without a fence.
    pub fn run_batch(&self, asid: u32, batch: u64) -> (u32, u32) {
        let job = self.submit_batch(asid, batch, 0, 0);
        self.wait(job)
    }

    pub fn vram_u64(&self, pa: u64) -> u64 {
        self.bar.vram().u64_at(pa as usize).load(Ordering::Acquire)
    }
}

/// Answers every fault by mapping a fresh VRAM page from `next_page` on;
/// returns faults served.
pub fn serve_faults(
    rig: Arc<Rig>,
    next_page: u64,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u32> {
    let r = rig.clone();
    let mut next = next_page;
    serve_faults_with(rig, stop, move |f| {
        assert_eq!(f.fault_type, FaultType::NotPresent);
        r.bar.vram().write(next, &[0u8; 4096]);
        next += 4096;
        Some(next - 4096)
    })
}

/// Answers faults from GuC-to-host messages until `stop`: `place` names
/// the VRAM page to map at a faulting page, or refuses the fault.
pub fn serve_faults_with(
    rig: Arc<Rig>,
    stop: Arc<AtomicBool>,
    mut place: impl FnMut(&FaultDescriptor) -> Option<u64> + Send + 'static,
) -> std::thread::JoinHandle<u32> {
    std::thread::spawn(move || {
        let mut served = 0;
        while !stop.load(Ordering::Acquire) {
            match rig.bar.next_guc_message(Some(Duration::from_millis(50))) {
                Ok(Command::PageFault(f)) => {
                    let pa = place(&f);
                    if let Some(pa) = pa {
                        rig.map(f.asid, f.address, pa, PageSize::Size4K, Target::Device);
                    }
                    let reply = FaultReply::to(&f, pa.is_some());
                    rig.bar
                        .submit(Ring::HostToGuc, 0, &Command::PageFaultResponse(reply))
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
