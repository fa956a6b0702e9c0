//! The shared region between the driver and the device (the "BAR"): a
//! register page, four rings and a context table. Offsets in bytes.
//!
//! Real Xe exposes registers in BAR0 and talks to the GuC through CT
//! buffers in memory; the model keeps one region with the same roles:
//!
//! | offset | what |
//! | --- | --- |
//! | 0x0000 | registers (below) |
//! | 0x1000 | context table: root page-table address per ASID ([`MAX_ASIDS`] u64) |
//! | 0x2000 | ring headers, 64 bytes each: head u32, tail u32, entries u32 |
//! | 0x4000.. | ring entries, [`RING_ENTRIES`] x [`ENTRY_BYTES`] per ring |
//!
//! A ring entry is one packet: dword 0 the packet length, then up to 14
//! command dwords, padding to 64 bytes. Producers publish by storing `tail`
//! (release) and waking the futex on it; consumers store `head`.

/// `b"XEMD"` at register 0.
pub const MAGIC: u32 = u32::from_le_bytes(*b"XEMD");
/// 2: batch jobs, [`REG_JOBS_RETIRED`], in-order [`REG_CCS_DONE`].
pub const VERSION: u32 = 2;

pub const REG_MAGIC: usize = 0x00;
pub const REG_VERSION: usize = 0x04;
/// VRAM size in MiB.
pub const REG_VRAM_MIB: usize = 0x08;
pub const REG_HW_THREADS: usize = 0x0c;
/// Seqno of the last copy packet the copy engine retired.
pub const REG_BCS_DONE: usize = 0x10;
/// Seqno of the last copy packet that failed (0: none).
pub const REG_BCS_ERROR: usize = 0x14;
/// Retired in submission order: every compute job up to this job id (in
/// the order the compute ring carried them) has retired. Batch jobs run
/// concurrently and may retire out of order; this register moves only
/// past a prefix of retired jobs, like a ring's seqno on hardware.
pub const REG_CCS_DONE: usize = 0x18;
/// Faults raised, replies consumed, stale-TLB uses detected.
pub const REG_FAULTS_RAISED: usize = 0x20;
pub const REG_FAULTS_REPLIED: usize = 0x24;
pub const REG_STALE_TLB_USES: usize = 0x28;
pub const REG_TLB_INVALIDATIONS: usize = 0x2c;
/// Nonzero once the device is up; the device clears it when it stops.
pub const REG_RUNNING: usize = 0x30;
/// Compute jobs retired, in any order; bumped (and its futex woken) after
/// each job's slot in the job table is written.
pub const REG_JOBS_RETIRED: usize = 0x34;
/// Faults the prefetcher raised (speculative: no access waits for them).
pub const REG_PREFETCH_FAULTS: usize = 0x38;
/// Per-job results: at 0x100, [`JOB_SLOTS`] slots of 16 bytes: job id u32,
/// status u32 (a [`JobState`]), faults u32, a checksum (kernels) u32.
pub const JOB_TABLE: usize = 0x100;
pub const JOB_SLOTS: usize = 192;

/// How a compute job ended: the status word of its job table slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum JobState {
    Done = 1,
    /// An access faulted and the driver could not resolve the fault.
    Faulted = 2,
    /// The batch held an instruction the device cannot run (see
    /// [`crate::xe::mi`]).
    BadCommand = 3,
    /// The batch ran past the device's bounds: too many instructions (an
    /// endless loop) or a semaphore wait that never held.
    Hung = 4,
}

impl JobState {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Done,
            2 => Self::Faulted,
            3 => Self::BadCommand,
            4 => Self::Hung,
            _ => return None,
        })
    }
}

pub const CONTEXT_TABLE: usize = 0x1000;
pub const MAX_ASIDS: usize = 512;

pub const RING_HEADERS: usize = 0x2000;
pub const RING_ENTRIES: usize = 256;
pub const ENTRY_BYTES: usize = 64;
pub const RINGS_BASE: usize = 0x4000;
pub const REGION_BYTES: usize = RINGS_BASE + 4 * RING_ENTRIES * ENTRY_BYTES;

/// The rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Ring {
    /// Driver to copy engine: `MEM_COPY`.
    Copy = 0,
    /// Driver to compute engine: kernel launches.
    Compute = 1,
    /// Driver to GuC: fault responses, TLB invalidations.
    HostToGuc = 2,
    /// GuC to driver: page faults, invalidation completions.
    GucToHost = 3,
}

impl Ring {
    pub const fn header(self) -> usize {
        RING_HEADERS + self as usize * 64
    }
    pub const fn entries(self) -> usize {
        RINGS_BASE + self as usize * RING_ENTRIES * ENTRY_BYTES
    }
}

/// Device addresses the copy engine and page tables use: VRAM at
/// `[0, vram)`; system memory the driver DMA-mapped at
/// `SYSMEM_BASE + slot * SYSMEM_SLOT_BYTES + offset`.
pub const SYSMEM_BASE: u64 = 1 << 44;
pub const SYSMEM_SLOT_BYTES: u64 = 1 << 36;
pub const SYSMEM_SLOTS: u64 = 64;

pub const fn sysmem_address(slot: u32, offset: u64) -> u64 {
    SYSMEM_BASE + slot as u64 * SYSMEM_SLOT_BYTES + offset
}

/// Peer windows (several GPUs, issue 17): the VRAM of the device whose
/// GPU id is `gpu` at `PEER_BASE + gpu * PEER_WINDOW_BYTES + offset`, once
/// the driver mapped it (`ControlOp::PeerMap`), standing for a peer's PCIe
/// BAR reached peer to peer. Above every DMA slot.
pub const PEER_BASE: u64 = 1 << 45;
pub const PEER_WINDOW_BYTES: u64 = 1 << 40;
/// GPU ids a window can name (a page-state word holds 4 bits of GPU).
pub const PEERS: u64 = 16;

pub const fn peer_address(gpu: u8, offset: u64) -> u64 {
    PEER_BASE + gpu as u64 * PEER_WINDOW_BYTES + offset
}

// Every DMA slot lies below the first peer window.
const _: () = assert!(SYSMEM_BASE + SYSMEM_SLOTS * SYSMEM_SLOT_BYTES <= PEER_BASE);
