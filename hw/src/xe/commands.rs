//! Commands the driver submits, as ring packets.
//!
//! Copy engine (BCS): `MEM_COPY` as `xe_migrate.c` and IGT emit it
//! (`instructions/xe_gpu_commands.h`: `MEM_COPY_CMD = 2 << 29 | 0x5a << 22
//! | (10 - 2)`, bit 19 page-copy mode where widths count 256-byte units;
//! dwords: width - 1, height - 1, source pitch - 1, destination pitch - 1,
//! source address low/high, destination address low/high, MOCS).
//!
//! GuC CT messages (`abi/guc_actions_abi.h`): H2G `PAGE_FAULT_RES_DESC`
//! (0x6003) carrying a [`FaultReply`], H2G `TLB_INVALIDATION` (0x7000:
//! seqno, type, ASID, address, length); G2H `REPORT_PAGE_FAULT_REQ_DESC`
//! (0x6002) carrying a [`FaultDescriptor`], G2H `TLB_INVALIDATION_DONE`
//! (0x7001: seqno).
//!
//! Compute engine (CCS): a kernel launch. Real Xe launches compute work
//! with `COMPUTE_WALKER` and an ISA binary; the model has no EU ISA, so its
//! launch packet (`MODEL_EXEC`, an opcode real hardware leaves unused)
//! names one of the model's built-in kernels instead.
//!
//! Compute engine: a batch job (`MODEL_BATCH`, also model-only). On
//! hardware the driver's ring holds `MI_BATCH_BUFFER_START` of the user's
//! batch followed by a qword `MI_STORE_DATA_IMM` of the user fence
//! (`xe_ring_ops.c`), and the context carries the ASID; the model's packet
//! carries the same facts: job id, ASID, batch address, fence address and
//! value. The batch itself is [`super::mi`] instructions in GPU memory.

use super::fault::{FaultDescriptor, FaultReply};

pub const MEM_COPY_CMD: u32 = (2 << 29) | (0x5a << 22) | (10 - 2);
pub const MEM_COPY_PAGE_MODE: u32 = 1 << 19;
pub const ACTION_REPORT_PAGE_FAULT: u32 = 0x6002;
pub const ACTION_PAGE_FAULT_RESPONSE: u32 = 0x6003;
pub const ACTION_TLB_INVALIDATION: u32 = 0x7000;
pub const ACTION_TLB_INVALIDATION_DONE: u32 = 0x7001;
/// Model-only kernel launch (client 3, opcode 0x7f: unused by real hardware).
pub const MODEL_EXEC: u32 = (3 << 29) | (0x7f << 22) | (12 - 2);

/// Model-only batch job (client 3, opcode 0x7e: unused by real hardware).
pub const MODEL_BATCH: u32 = (3 << 29) | (0x7e << 22) | (9 - 2);

/// Most dwords one ring packet carries.
pub const PACKET_DWORDS: usize = 14;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandError {
    UnknownOpcode(u32),
    BadLength,
    /// Width, height or pitch out of range.
    BadGeometry,
    BadField,
}

/// A linear copy of `rows` rows of `width` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemCopy {
    pub src: u64,
    pub dst: u64,
    pub width: u32,
    pub rows: u32,
    pub src_pitch: u32,
    pub dst_pitch: u32,
}

impl MemCopy {
    /// Copies `bytes` contiguous bytes (rows of 4 KiB when page aligned).
    pub fn contiguous(src: u64, dst: u64, bytes: u64) -> Result<Self, CommandError> {
        if bytes == 0 {
            return Err(CommandError::BadGeometry);
        }
        let (width, rows) = if bytes % 4096 == 0 && bytes / 4096 <= 1 << 16 {
            (4096, (bytes / 4096) as u32)
        } else if bytes <= 1 << 18 {
            (bytes as u32, 1)
        } else {
            return Err(CommandError::BadGeometry);
        };
        Ok(Self {
            src,
            dst,
            width,
            rows,
            src_pitch: width,
            dst_pitch: width,
        })
    }

    pub fn bytes(&self) -> u64 {
        self.width as u64 * self.rows as u64
    }

    pub fn encode(&self) -> [u32; 10] {
        // Page mode when every size is a multiple of 256 bytes.
        let page = [self.width, self.src_pitch, self.dst_pitch]
            .iter()
            .all(|v| v % 256 == 0);
        let unit = if page { 256 } else { 1 };
        [
            MEM_COPY_CMD | if page { MEM_COPY_PAGE_MODE } else { 0 },
            self.width / unit - 1,
            self.rows - 1,
            self.src_pitch / unit - 1,
            self.dst_pitch / unit - 1,
            self.src as u32,
            (self.src >> 32) as u32,
            self.dst as u32,
            (self.dst >> 32) as u32,
            0,
        ]
    }

    pub fn decode(dw: &[u32]) -> Result<Self, CommandError> {
        if dw.len() != 10 || dw[0] & !MEM_COPY_PAGE_MODE != MEM_COPY_CMD {
            return Err(CommandError::BadLength);
        }
        let unit = if dw[0] & MEM_COPY_PAGE_MODE != 0 {
            256u64
        } else {
            1
        };
        let scale = |v: u32| -> Result<u32, CommandError> {
            u32::try_from((v as u64 + 1) * unit).map_err(|_| CommandError::BadGeometry)
        };
        let c = Self {
            width: scale(dw[1])?,
            rows: dw[2].checked_add(1).ok_or(CommandError::BadGeometry)?,
            src_pitch: scale(dw[3])?,
            dst_pitch: scale(dw[4])?,
            src: dw[5] as u64 | (dw[6] as u64) << 32,
            dst: dw[7] as u64 | (dw[8] as u64) << 32,
        };
        if c.width > c.src_pitch.max(c.width) || c.src_pitch < c.width || c.dst_pitch < c.width {
            return Err(CommandError::BadGeometry);
        }
        Ok(c)
    }
}

/// `TLB_INVALIDATION` types used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum InvalidationScope {
    /// Every translation of every ASID.
    Full = 0,
    /// Translations of one ASID within `[address, address + 2^len_log2)`.
    Range = 1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlbInvalidation {
    pub seqno: u32,
    pub scope: InvalidationScope,
    pub asid: u32,
    pub address: u64,
    pub len_log2: u8,
}

/// A kernel the model's hardware threads can run (`MODEL_EXEC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum KernelOp {
    /// Read one u32 per 4 KiB page.
    TouchPages = 1,
    /// Add `value` to every u32.
    IncrementAll = 2,
    /// Write `value` to one u32 every `stride` bytes.
    StridedWrite = 3,
    /// Read u32s at pseudo-random pages (seeded by `value`).
    RandomRead = 4,
    /// Atomically add `value` to the first u32 of every page.
    AtomicAdd = 5,
    /// `TouchPages` with the prefetcher a page ahead (its misses raise
    /// prefetch faults nothing waits for).
    Speculative = 6,
}

impl KernelOp {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::TouchPages,
            2 => Self::IncrementAll,
            3 => Self::StridedWrite,
            4 => Self::RandomRead,
            5 => Self::AtomicAdd,
            6 => Self::Speculative,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelLaunch {
    pub job: u32,
    pub asid: u32,
    pub op: KernelOp,
    pub addr: u64,
    pub len: u64,
    pub stride: u32,
    pub value: u32,
    pub threads: u16,
}

/// A batch job: run the batch buffer at `batch_addr` in ASID `asid`'s
/// PPGTT, then write `fence_value` (a qword) at `fence_addr` through the
/// same PPGTT unless `fence_addr` is 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSubmit {
    pub job: u32,
    pub asid: u32,
    pub batch_addr: u64,
    pub fence_addr: u64,
    pub fence_value: u64,
}

/// Everything that travels on a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    MemCopy(MemCopy),
    TlbInvalidation(TlbInvalidation),
    TlbInvalidationDone { seqno: u32 },
    PageFault(FaultDescriptor),
    PageFaultResponse(FaultReply),
    Launch(KernelLaunch),
    Batch(BatchSubmit),
}

/// One ring packet's dwords (at most [`PACKET_DWORDS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub len: usize,
    pub dw: [u32; PACKET_DWORDS],
}

impl Packet {
    pub fn from(words: &[u32]) -> Self {
        let mut dw = [0; PACKET_DWORDS];
        dw[..words.len()].copy_from_slice(words);
        Self {
            len: words.len(),
            dw,
        }
    }
    pub fn words(&self) -> &[u32] {
        &self.dw[..self.len.min(PACKET_DWORDS)]
    }
}

impl Command {
    pub fn encode(&self) -> Packet {
        match self {
            Self::MemCopy(c) => Packet::from(&c.encode()),
            Self::TlbInvalidation(t) => Packet::from(&[
                ACTION_TLB_INVALIDATION,
                t.seqno,
                t.scope as u32,
                t.asid,
                t.address as u32,
                (t.address >> 32) as u32,
                t.len_log2 as u32,
            ]),
            Self::TlbInvalidationDone { seqno } => {
                Packet::from(&[ACTION_TLB_INVALIDATION_DONE, *seqno])
            }
            Self::PageFault(f) => {
                let d = f.encode();
                Packet::from(&[ACTION_REPORT_PAGE_FAULT, d[0], d[1], d[2], d[3]])
            }
            Self::PageFaultResponse(r) => {
                let d = r.encode();
                Packet::from(&[ACTION_PAGE_FAULT_RESPONSE, d[0], d[1], d[2]])
            }
            Self::Launch(k) => Packet::from(&[
                MODEL_EXEC,
                k.job,
                k.asid,
                k.op as u32,
                k.addr as u32,
                (k.addr >> 32) as u32,
                k.len as u32,
                (k.len >> 32) as u32,
                k.stride,
                k.value,
                k.threads as u32,
                0,
            ]),
            Self::Batch(b) => Packet::from(&[
                MODEL_BATCH,
                b.job,
                b.asid,
                b.batch_addr as u32,
                (b.batch_addr >> 32) as u32,
                b.fence_addr as u32,
                (b.fence_addr >> 32) as u32,
                b.fence_value as u32,
                (b.fence_value >> 32) as u32,
            ]),
        }
    }

    pub fn decode(words: &[u32]) -> Result<Self, CommandError> {
        let op = *words.first().ok_or(CommandError::BadLength)?;
        let need = |n: usize| {
            if words.len() == n {
                Ok(())
            } else {
                Err(CommandError::BadLength)
            }
        };
        Ok(match op {
            o if o & !MEM_COPY_PAGE_MODE == MEM_COPY_CMD => Self::MemCopy(MemCopy::decode(words)?),
            ACTION_TLB_INVALIDATION => {
                need(7)?;
                let scope = match words[2] {
                    0 => InvalidationScope::Full,
                    1 => InvalidationScope::Range,
                    _ => return Err(CommandError::BadField),
                };
                if words[6] > 63 {
                    return Err(CommandError::BadField);
                }
                Self::TlbInvalidation(TlbInvalidation {
                    seqno: words[1],
                    scope,
                    asid: words[3],
                    address: words[4] as u64 | (words[5] as u64) << 32,
                    len_log2: words[6] as u8,
                })
            }
            ACTION_TLB_INVALIDATION_DONE => {
                need(2)?;
                Self::TlbInvalidationDone { seqno: words[1] }
            }
            ACTION_REPORT_PAGE_FAULT => {
                need(5)?;
                Self::PageFault(
                    FaultDescriptor::decode([words[1], words[2], words[3], words[4]])
                        .map_err(|_| CommandError::BadField)?,
                )
            }
            ACTION_PAGE_FAULT_RESPONSE => {
                need(4)?;
                Self::PageFaultResponse(
                    FaultReply::decode([words[1], words[2], words[3]])
                        .ok_or(CommandError::BadField)?,
                )
            }
            MODEL_EXEC => {
                need(12)?;
                Self::Launch(KernelLaunch {
                    job: words[1],
                    asid: words[2],
                    op: KernelOp::from_u32(words[3]).ok_or(CommandError::BadField)?,
                    addr: words[4] as u64 | (words[5] as u64) << 32,
                    len: words[6] as u64 | (words[7] as u64) << 32,
                    stride: words[8],
                    value: words[9],
                    threads: u16::try_from(words[10]).map_err(|_| CommandError::BadField)?,
                })
            }
            MODEL_BATCH => {
                need(9)?;
                let qword = |i: usize| words[i] as u64 | (words[i + 1] as u64) << 32;
                Self::Batch(BatchSubmit {
                    job: words[1],
                    asid: words[2],
                    batch_addr: qword(3),
                    fence_addr: qword(5),
                    fence_value: qword(7),
                })
            }
            other => return Err(CommandError::UnknownOpcode(other)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_copy_vector() {
        // 2 pages from 0x1_0000_0000 to 0x20_0000: page mode, width 4096/256 = 16.
        let c = MemCopy::contiguous(0x1_0000_0000, 0x20_0000, 8192).unwrap();
        assert_eq!(
            c.encode(),
            [
                0x5680_0008 | (1 << 19),
                15,
                1,
                15,
                15,
                0,
                1,
                0x20_0000,
                0,
                0
            ]
        );
        assert_eq!(MemCopy::decode(&c.encode()), Ok(c));
        // A 100-byte copy is linear (byte) mode.
        let c = MemCopy::contiguous(0x10, 0x20, 100).unwrap();
        assert_eq!(c.encode()[..5], [0x5680_0008, 99, 0, 99, 99]);
        assert_eq!(MemCopy::decode(&c.encode()), Ok(c));
    }

    #[test]
    fn every_command_roundtrips() {
        let fault = FaultDescriptor {
            asid: 7,
            address: 0x4000_0000,
            access: crate::xe::fault::AccessType::Read,
            fault_type: crate::xe::fault::FaultType::NotPresent,
            level: 0,
            engine_class: 4,
            engine_instance: 0,
            source_id: 0,
            vfid: 0,
            pdata: 33,
            prefetch: false,
        };
        let cmds = [
            Command::MemCopy(MemCopy::contiguous(0, 4096, 2 << 20).unwrap()),
            Command::TlbInvalidation(TlbInvalidation {
                seqno: 9,
                scope: InvalidationScope::Range,
                asid: 7,
                address: 0x20_0000,
                len_log2: 21,
            }),
            Command::TlbInvalidationDone { seqno: 9 },
            Command::PageFault(fault),
            Command::PageFaultResponse(FaultReply::to(&fault, true)),
            Command::Launch(KernelLaunch {
                job: 3,
                asid: 7,
                op: KernelOp::IncrementAll,
                addr: 1 << 40,
                len: 64 << 20,
                stride: 4096,
                value: 1,
                threads: 64,
            }),
            Command::Batch(BatchSubmit {
                job: 4,
                asid: 7,
                batch_addr: 0x7f00_0000_1000,
                fence_addr: 0x7f00_0000_2000,
                fence_value: 0xdead_beef_dead_beef,
            }),
        ];
        for c in cmds {
            assert_eq!(Command::decode(c.encode().words()), Ok(c));
        }
        assert_eq!(
            Command::decode(&[0x1234]),
            Err(CommandError::UnknownOpcode(0x1234))
        );
        assert_eq!(
            Command::decode(&[ACTION_TLB_INVALIDATION, 1]),
            Err(CommandError::BadLength)
        );
    }
}
