//! Device bring-up: map the device, check its identity, and prove the copy
//! engine and the GuC rings work before serving anyone (a round trip of
//! random data through VRAM, checked byte for byte, and a TLB invalidation
//! answered by the GuC).
//!
//! **A device a driver before us left** (it outlives its driver, as
//! hardware outlives a driver reload; [`Meeting::Reattach`]) holds pages
//! the pager names in VRAM, anywhere in it: the self-test copies system to
//! system through the same engine and writes no VRAM. Either way the
//! self-test numbers its copies past the engine's done register, which
//! the earlier driver left wherever it got to: a number at or below it
//! would read as done before the copy ran.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hw::bar::{Bar, BarError};
use hw::shm::Region;
use hw::xe::commands::{Command, InvalidationScope, MemCopy, TlbInvalidation};
use hw::xe::layout::{self, Ring};
use ipc_protocol::transport::Transport;

/// Probe failures, each a reason not to serve.
#[derive(Debug)]
pub enum ProbeError {
    Bar(BarError),
    /// Creating the staging buffer failed (errno).
    Staging(i32),
    /// Data came back different from what went in.
    CopyMismatch {
        offset: usize,
    },
    /// The copy engine flagged the self-test copy as failed.
    CopyFailed,
    /// The GuC answered something other than the invalidation's completion.
    UnexpectedGuc,
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}
impl std::error::Error for ProbeError {}

impl From<BarError> for ProbeError {
    fn from(e: BarError) -> Self {
        Self::Bar(e)
    }
}

/// What the probe found.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    pub vram_bytes: u64,
    pub hw_threads: u32,
    /// Self-test copy throughput, system -> VRAM -> system (system ->
    /// system when reattaching), bytes/s.
    pub copy_bytes_per_sec: f64,
    pub tlb_invalidation_us: f64,
}

/// DMA slot of the probe's staging buffer (freed again after the probe).
const PROBE_SLOT: u32 = 0;

/// How this driver meets the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meeting {
    /// Nothing lives in VRAM yet: the self-test goes through its last 2 MiB.
    Fresh,
    /// A driver before us left pages in VRAM: the self-test writes none.
    Reattach,
}
const PROBE_BYTES: usize = 2 << 20;

/// Maps the device behind `control` and checks it.
pub fn probe(
    control: Arc<dyn Transport>,
    meeting: Meeting,
) -> Result<(Bar, ProbeReport), ProbeError> {
    let bar = Bar::connect(control, Duration::from_secs(10))?;
    let staging = Region::create("xe-svm-probe", 2 * PROBE_BYTES)
        .map_err(|e| ProbeError::Staging(e.raw_os_error()))?;
    let mut pattern = vec![0u8; PROBE_BYTES];
    let mut s = 0x2545_f491_4f6c_dd1du64;
    for b in pattern.iter_mut() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        *b = s as u8;
    }
    staging.write(0, &pattern);
    let dma = bar.dma_map(
        PROBE_SLOT,
        staging
            .dup_fd()
            .map_err(|e| ProbeError::Staging(e.raw_os_error()))?,
        2 * PROBE_BYTES as u64,
    )?;
    let back_at = dma + PROBE_BYTES as u64;
    let legs = match meeting {
        // Last 2 MiB of VRAM: nothing lives there yet.
        Meeting::Fresh => {
            let vram = bar.vram_bytes() - PROBE_BYTES as u64;
            vec![(dma, vram), (vram, back_at)]
        }
        Meeting::Reattach => vec![(dma, back_at)],
    };
    let done = bar.reg(layout::REG_BCS_DONE);
    let t0 = Instant::now();
    for (n, &(src, dst)) in (1u32..).zip(&legs) {
        let seq = done.wrapping_add(n);
        let copy = MemCopy::contiguous(src, dst, PROBE_BYTES as u64)
            .map_err(|_| ProbeError::CopyFailed)?;
        bar.submit(Ring::Copy, seq, &Command::MemCopy(copy))?;
        bar.wait_seqno(layout::REG_BCS_DONE, seq, Duration::from_secs(10))?;
        if bar.reg(layout::REG_BCS_ERROR) == seq {
            return Err(ProbeError::CopyFailed);
        }
    }
    let copy_time = t0.elapsed();
    let mut back = vec![0u8; PROBE_BYTES];
    staging.read(PROBE_BYTES as u64, &mut back);
    if let Some(offset) = back.iter().zip(&pattern).position(|(a, b)| a != b) {
        return Err(ProbeError::CopyMismatch { offset });
    }
    bar.dma_unmap(PROBE_SLOT)?;

    let t1 = Instant::now();
    let inv = TlbInvalidation {
        seqno: 1,
        scope: InvalidationScope::Full,
        asid: 0,
        address: 0,
        len_log2: 0,
    };
    bar.submit(Ring::HostToGuc, 0, &Command::TlbInvalidation(inv))?;
    wait_for_invalidation(&bar)?;
    let report = ProbeReport {
        vram_bytes: bar.vram_bytes(),
        hw_threads: bar.reg(layout::REG_HW_THREADS),
        copy_bytes_per_sec: (legs.len() * PROBE_BYTES) as f64 / copy_time.as_secs_f64(),
        tlb_invalidation_us: t1.elapsed().as_secs_f64() * 1e6,
    };
    log::info!("xe-svm: probed {report:?}");
    Ok((bar, report))
}

/// Waits for the probe's invalidation (seqno 1) to complete. A fault the
/// device raised for a job of a driver that died is passed over (the
/// device ends such jobs itself, `driver_lost`); anything else is
/// `UnexpectedGuc`.
fn wait_for_invalidation(bar: &Bar) -> Result<(), ProbeError> {
    const STRAY: usize = 4096;
    for _ in 0..STRAY {
        match bar.next_guc_message(Some(Duration::from_secs(10)))? {
            Command::TlbInvalidationDone { seqno: 1 } => return Ok(()),
            Command::PageFault(f) => {
                log::warn!("xe-svm: probe: passing over a stale fault {f:?}")
            }
            _ => return Err(ProbeError::UnexpectedGuc),
        }
    }
    Err(ProbeError::UnexpectedGuc)
}
