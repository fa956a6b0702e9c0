//! Command-streamer (MI) instructions of a batch buffer, bit for bit.
//!
//! Layouts from the Linux xe headers `instructions/xe_instr_defs.h` and
//! `instructions/xe_mi_commands.h` (Linux 6.12+), i915's
//! `gt/intel_gpu_commands.h` for the encodings xe leaves to user space, and
//! IGT's use of them (`lib/intel_reg.h`, `lib/xe/xe_spin.c`,
//! `tests/intel/xe_exec_atomic.c`, `tests/intel/xe_exec_system_allocator.c`):
//!
//! - every MI header: command type 31:29 = 0 (`XE_INSTR_MI`), opcode 28:23
//!   (`MI_OPCODE`), and for multi-dword commands a length 7:0 that counts
//!   the dwords after the first two (`XE_INSTR_NUM_DW(n) = n - 2`);
//! - `MI_NOOP` 0x00, `MI_USER_INTERRUPT` 0x02, `MI_ARB_CHECK` 0x05,
//!   `MI_BATCH_BUFFER_END` 0x0a: one dword;
//! - `MI_SEMAPHORE_WAIT` 0x1c, 4 dwords (5 with Gen12's token dword):
//!   global GTT 22, poll 15, compare 14:12 (SAD > SDD 0, >= 1, < 2, <= 3,
//!   == 4, != 5); dw1 the semaphore data dword, dw2/3 the address;
//! - `MI_STORE_DATA_IMM` 0x20: global GTT 22, store qword 21, length 9:0
//!   (`MI_SDI_NUM_DW(n) = n + 1`, `MI_SDI_NUM_QW(n) = 2n + 1 | bit 21`);
//!   dw1/2 the address, then the data;
//! - `MI_LOAD_REGISTER_IMM` 0x22: CS MMIO 19 (offsets relative to the
//!   engine), then (register offset, value) pairs;
//! - `MI_STORE_REGISTER_MEM` 0x24, 4 dwords: CS MMIO 19; dw1 the register
//!   offset, dw2/3 the address;
//! - `MI_COPY_MEM_MEM` 0x2e, 5 dwords: dw1/2 the destination, dw3/4 the
//!   source (one dword copied);
//! - `MI_ATOMIC` 0x2f: global GTT 22, post-sync 21 (reserved since Gen12),
//!   data size 20:19 (dword 0, qword 1, octword 2), inline data 18, CS
//!   stall 17, return data 16 (old value into `CS_GPR4`), atomic opcode
//!   15:8 (the low five bits the operation: AND 1, OR 2, XOR 3, MOVE 4,
//!   INC 5, DEC 6, ADD 7, SUB 8, RSUB 9, IMAX 10, IMIN 11, UMAX 12, UMIN 13,
//!   CMP_WR 14; plus 0x20 for qword, 0x40 for octword); dw1/2 the address;
//!   with inline data, dwords 3..10 interleave operand 1 and operand 2
//!   (i915's `MI_ATOMIC_INLINE` is 11 dwords); without it the operands
//!   come from `CS_GPR0` and `CS_GPR2`;
//! - `MI_BATCH_BUFFER_START` 0x31, 3 dwords: second-level batch 22,
//!   address space 8 (1: PPGTT); dw1/2 the address.
//!
//! Addresses are 48 bits: bits 1:0 of the low dword and 31:16 of the high
//! dword are reserved. The model is stricter than hardware there: a
//! misaligned address or one with reserved high bits is a decoding error,
//! not silently masked, so a broken batch shows up as one.
//!
//! The model runs user batches from the PPGTT: the global-GTT bits of data
//! commands are ignored (the bspec says a non-privileged batch treats them
//! as clear), a batch start into the GGTT, semaphore signal mode and
//! octword atomics are [`MiError::Unsupported`].

/// `XE_INSTR_MI | REG_FIELD_PREP(MI_OPCODE, opcode)`.
const fn mi(opcode: u32) -> u32 {
    opcode << 23
}

/// `XE_INSTR_NUM_DW(n)`: the length field of an `n`-dword command.
const fn num_dw(n: u32) -> u32 {
    n - 2
}

pub const MI_NOOP: u32 = mi(0x00);
pub const MI_USER_INTERRUPT: u32 = mi(0x02);
pub const MI_ARB_CHECK: u32 = mi(0x05);
pub const MI_BATCH_BUFFER_END: u32 = mi(0x0a);
pub const MI_SEMAPHORE_WAIT: u32 = mi(0x1c) | num_dw(4);
pub const MI_STORE_DATA_IMM: u32 = mi(0x20);
pub const MI_LOAD_REGISTER_IMM: u32 = mi(0x22);
pub const MI_STORE_REGISTER_MEM: u32 = mi(0x24) | num_dw(4);
pub const MI_COPY_MEM_MEM: u32 = mi(0x2e) | num_dw(5);
pub const MI_ATOMIC: u32 = mi(0x2f);
pub const MI_BATCH_BUFFER_START: u32 = mi(0x31) | num_dw(3);

/// Bit 22 of most MI headers: the global GTT instead of the PPGTT.
pub const MI_GLOBAL_GTT: u32 = 1 << 22;
pub const MI_SDI_QWORD: u32 = 1 << 21;
const MI_SDI_LEN: u32 = 0x3ff;
pub const MI_SEMAPHORE_POLL: u32 = 1 << 15;
const MI_SEMAPHORE_COMPARE_SHIFT: u32 = 12;
/// `MI_LRI_LRM_CS_MMIO`: register offsets relative to the engine's base.
pub const MI_CS_MMIO: u32 = 1 << 19;
pub const MI_ATOMIC_POST_SYNC: u32 = 1 << 21;
const MI_ATOMIC_SIZE_SHIFT: u32 = 19;
pub const MI_ATOMIC_INLINE_DATA: u32 = 1 << 18;
pub const MI_ATOMIC_CS_STALL: u32 = 1 << 17;
pub const MI_ATOMIC_RETURN_DATA: u32 = 1 << 16;
const MI_ATOMIC_OP_SHIFT: u32 = 8;
pub const MI_BATCH_SECOND_LEVEL: u32 = 1 << 22;
pub const MI_BATCH_PPGTT: u32 = 1 << 8;
/// Header bits of `MI_BATCH_BUFFER_START` the model has no use for
/// (predication, resource streamer, add offset, nesting): must be clear.
const MI_BATCH_UNSUPPORTED: u32 = 0x003f_fe00;

/// `CS_GPR(n)`: the command streamer's 16 general-purpose qword registers,
/// at engine-relative offset 0x600 (IGT `xe_spin.c`).
pub const CS_GPR_BASE: u32 = 0x600;
pub const CS_GPRS: usize = 16;

/// Most dwords one instruction has (`MI_STORE_DATA_IMM` with a full
/// 10-bit length).
pub const MAX_INSTRUCTION_DWORDS: usize = MI_SDI_LEN as usize + 2;

/// Why a dword stream is not an instruction the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MiError {
    /// Bits 31:29 name another command type (3D, blitter, ...).
    NotMi {
        header: u32,
    },
    UnknownOpcode {
        opcode: u8,
    },
    /// The length field does not fit the instruction.
    BadLength {
        opcode: u8,
        dwords: usize,
    },
    /// The stream ends inside the instruction.
    Truncated {
        needed: usize,
        got: usize,
    },
    /// An address with reserved low bits set.
    Misaligned {
        opcode: u8,
        addr: u64,
    },
    /// An address with reserved bits above bit 47 set.
    AddressTooHigh {
        opcode: u8,
        high: u32,
    },
    /// A field holds a value the instruction does not define.
    BadField {
        opcode: u8,
        field: &'static str,
    },
    /// Defined by the hardware, not modelled.
    Unsupported {
        opcode: u8,
        what: &'static str,
    },
}

/// `MI_SEMAPHORE_WAIT` compare operations (semaphore address data against
/// semaphore data dword).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Compare {
    Greater = 0,
    GreaterOrEqual = 1,
    Less = 2,
    LessOrEqual = 3,
    Equal = 4,
    NotEqual = 5,
}

impl Compare {
    fn from_bits(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::Greater,
            1 => Self::GreaterOrEqual,
            2 => Self::Less,
            3 => Self::LessOrEqual,
            4 => Self::Equal,
            5 => Self::NotEqual,
            _ => return None,
        })
    }

    /// Whether the value at the semaphore address satisfies the wait.
    pub fn holds(self, memory: u32, data: u32) -> bool {
        match self {
            Self::Greater => memory > data,
            Self::GreaterOrEqual => memory >= data,
            Self::Less => memory < data,
            Self::LessOrEqual => memory <= data,
            Self::Equal => memory == data,
            Self::NotEqual => memory != data,
        }
    }
}

/// `MI_ATOMIC` operations (the low five bits of the atomic opcode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AtomicOp {
    And = 1,
    Or = 2,
    Xor = 3,
    Move = 4,
    Inc = 5,
    Dec = 6,
    Add = 7,
    Sub = 8,
    /// Operand 1 minus memory.
    Rsub = 9,
    Imax = 10,
    Imin = 11,
    Umax = 12,
    Umin = 13,
    /// Compare and write: memory becomes operand 2 if it equals operand 1.
    CmpWr = 14,
}

impl AtomicOp {
    fn from_bits(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::And,
            2 => Self::Or,
            3 => Self::Xor,
            4 => Self::Move,
            5 => Self::Inc,
            6 => Self::Dec,
            7 => Self::Add,
            8 => Self::Sub,
            9 => Self::Rsub,
            10 => Self::Imax,
            11 => Self::Imin,
            12 => Self::Umax,
            13 => Self::Umin,
            14 => Self::CmpWr,
            _ => return None,
        })
    }

    /// The new memory value from the old one and the operands, all of
    /// `size` (the upper bits of a dword operation are ignored and zero).
    pub fn apply(self, size: AtomicSize, old: u64, op1: u64, op2: u64) -> u64 {
        let mask = size.mask();
        let (old, op1, op2) = (old & mask, op1 & mask, op2 & mask);
        let signed = |v: u64| match size {
            AtomicSize::Dword => v as u32 as i32 as i64,
            AtomicSize::Qword => v as i64,
        };
        let new = match self {
            Self::And => old & op1,
            Self::Or => old | op1,
            Self::Xor => old ^ op1,
            Self::Move => op1,
            Self::Inc => old.wrapping_add(1),
            Self::Dec => old.wrapping_sub(1),
            Self::Add => old.wrapping_add(op1),
            Self::Sub => old.wrapping_sub(op1),
            Self::Rsub => op1.wrapping_sub(old),
            Self::Imax if signed(op1) > signed(old) => op1,
            Self::Imin if signed(op1) < signed(old) => op1,
            Self::Umax if op1 > old => op1,
            Self::Umin if op1 < old => op1,
            Self::Imax | Self::Imin | Self::Umax | Self::Umin => old,
            Self::CmpWr if old == op1 => op2,
            Self::CmpWr => old,
        };
        new & mask
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AtomicSize {
    Dword = 0,
    Qword = 1,
}

impl AtomicSize {
    pub const fn bytes(self) -> u64 {
        match self {
            Self::Dword => 4,
            Self::Qword => 8,
        }
    }
    pub const fn mask(self) -> u64 {
        match self {
            Self::Dword => u32::MAX as u64,
            Self::Qword => u64::MAX,
        }
    }
}

/// One `MI_ATOMIC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Atomic {
    pub op: AtomicOp,
    pub size: AtomicSize,
    pub addr: u64,
    /// Inline operands 1 and 2; `None`: taken from `CS_GPR0` and `CS_GPR2`.
    pub inline: Option<[u64; 2]>,
    /// Return the old value in `CS_GPR4`.
    pub return_data: bool,
}

/// A register `MI_LOAD_REGISTER_IMM` and `MI_STORE_REGISTER_MEM` may name:
/// one dword of the `CS_GPR` file (index 0 is `CS_GPR0` low, 1 its high).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GprDword(pub u8);

impl GprDword {
    /// The engine-relative MMIO offset of this dword.
    pub fn offset(self) -> u32 {
        CS_GPR_BASE + 4 * self.0 as u32
    }
    fn from_offset(opcode: u8, off: u32) -> Result<Self, MiError> {
        let rel = off.wrapping_sub(CS_GPR_BASE);
        if off % 4 != 0 || rel >= 8 * CS_GPRS as u32 {
            return Err(MiError::Unsupported {
                opcode,
                what: "a register other than CS_GPR",
            });
        }
        Ok(Self((rel / 4) as u8))
    }
}

/// One decoded instruction; `'a` borrows its variable-length data from the
/// dword stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instruction<'a> {
    Noop,
    /// `MI_USER_INTERRUPT`: nobody listens in the model; it runs as a no-op.
    UserInterrupt,
    /// `MI_ARB_CHECK`: a preemption point; a no-op in the model.
    ArbCheck,
    BatchBufferEnd,
    /// Stores `data` from `addr` on: dwords, or qwords (pairs of dwords,
    /// low first) when `qword`.
    StoreData {
        addr: u64,
        qword: bool,
        data: &'a [u32],
    },
    Atomic(Atomic),
    /// Polls `addr` until `compare(memory, value)` holds.
    SemaphoreWait {
        addr: u64,
        compare: Compare,
        value: u32,
    },
    /// Copies one dword from `src` to `dst`.
    CopyMemMem {
        dst: u64,
        src: u64,
    },
    /// Loads (register, value) pairs (`pairs` alternates offset and value).
    LoadRegisterImm {
        pairs: &'a [u32],
    },
    StoreRegisterMem {
        reg: GprDword,
        addr: u64,
    },
    /// Continues at `addr`; a second-level batch returns after the start
    /// when it ends.
    BatchBufferStart {
        addr: u64,
        second_level: bool,
    },
}

fn opcode(header: u32) -> u8 {
    ((header >> 23) & 0x3f) as u8
}

/// The dwords of the instruction that starts with `header`.
pub fn length(header: u32) -> Result<usize, MiError> {
    if header >> 29 != 0 {
        return Err(MiError::NotMi { header });
    }
    Ok(match opcode(header) {
        0x00 | 0x02 | 0x05 | 0x0a => 1,
        0x20 => (header & MI_SDI_LEN) as usize + 2,
        0x1c | 0x22 | 0x24 | 0x2e | 0x2f | 0x31 => (header & 0xff) as usize + 2,
        opcode => return Err(MiError::UnknownOpcode { opcode }),
    })
}

/// The 48-bit address in `lo`, `hi`, aligned to `align` bytes.
fn address(opcode: u8, lo: u32, hi: u32, align: u64) -> Result<u64, MiError> {
    if hi >> 16 != 0 {
        return Err(MiError::AddressTooHigh { opcode, high: hi });
    }
    let addr = (hi as u64) << 32 | lo as u64;
    if addr % align != 0 {
        return Err(MiError::Misaligned { opcode, addr });
    }
    Ok(addr)
}

/// Decodes the instruction at the start of `dw`; returns it and its length.
pub fn decode(dw: &[u32]) -> Result<(Instruction<'_>, usize), MiError> {
    let header = *dw.first().ok_or(MiError::Truncated { needed: 1, got: 0 })?;
    let len = length(header)?;
    let dw = dw.get(..len).ok_or(MiError::Truncated {
        needed: len,
        got: dw.len(),
    })?;
    let op = opcode(header);
    let bad_length = || MiError::BadLength {
        opcode: op,
        dwords: len,
    };
    let insn = match op {
        0x00 => Instruction::Noop,
        0x02 => Instruction::UserInterrupt,
        0x05 => Instruction::ArbCheck,
        0x0a => Instruction::BatchBufferEnd,
        0x1c if len == 4 || len == 5 => decode_semaphore_wait(dw)?,
        0x20 => decode_store_data(dw)?,
        0x22 => decode_load_register_imm(dw)?,
        0x24 if len == 4 => Instruction::StoreRegisterMem {
            reg: GprDword::from_offset(op, dw[1])?,
            addr: address(op, dw[2], dw[3], 4)?,
        },
        0x2e if len == 5 => Instruction::CopyMemMem {
            dst: address(op, dw[1], dw[2], 4)?,
            src: address(op, dw[3], dw[4], 4)?,
        },
        0x2f => Instruction::Atomic(decode_atomic(dw)?),
        0x31 if len == 3 => decode_batch_start(dw)?,
        _ => return Err(bad_length()),
    };
    Ok((insn, len))
}

fn decode_semaphore_wait(dw: &[u32]) -> Result<Instruction<'_>, MiError> {
    let op = opcode(dw[0]);
    if dw[0] & MI_SEMAPHORE_POLL == 0 {
        return Err(MiError::Unsupported {
            opcode: op,
            what: "semaphore signal mode",
        });
    }
    let compare = (dw[0] >> MI_SEMAPHORE_COMPARE_SHIFT) & 7;
    Ok(Instruction::SemaphoreWait {
        addr: address(op, dw[2], dw[3], 4)?,
        compare: Compare::from_bits(compare).ok_or(MiError::BadField {
            opcode: op,
            field: "compare operation",
        })?,
        value: dw[1],
    })
}

fn decode_store_data(dw: &[u32]) -> Result<Instruction<'_>, MiError> {
    let op = opcode(dw[0]);
    let qword = dw[0] & MI_SDI_QWORD != 0;
    let data = &dw[3.min(dw.len())..];
    if data.is_empty() || (qword && data.len() % 2 != 0) {
        return Err(MiError::BadLength {
            opcode: op,
            dwords: dw.len(),
        });
    }
    let addr = address(op, dw[1], dw[2], if qword { 8 } else { 4 })?;
    Ok(Instruction::StoreData { addr, qword, data })
}

fn decode_load_register_imm(dw: &[u32]) -> Result<Instruction<'_>, MiError> {
    let op = opcode(dw[0]);
    let pairs = &dw[1..];
    if pairs.is_empty() || pairs.len() % 2 != 0 {
        return Err(MiError::BadLength {
            opcode: op,
            dwords: dw.len(),
        });
    }
    if dw[0] & MI_CS_MMIO == 0 {
        return Err(MiError::Unsupported {
            opcode: op,
            what: "absolute register offsets",
        });
    }
    for pair in pairs.chunks_exact(2) {
        GprDword::from_offset(op, pair[0])?;
    }
    Ok(Instruction::LoadRegisterImm { pairs })
}

fn decode_atomic(dw: &[u32]) -> Result<Atomic, MiError> {
    let op = opcode(dw[0]);
    let h = dw[0];
    let field = |field| MiError::BadField { opcode: op, field };
    let code = (h >> MI_ATOMIC_OP_SHIFT) & 0xff;
    let size = match ((h >> MI_ATOMIC_SIZE_SHIFT) & 3, code >> 5) {
        (0, 0) => AtomicSize::Dword,
        (1, 1) => AtomicSize::Qword,
        (2, 2) => {
            return Err(MiError::Unsupported {
                opcode: op,
                what: "octword atomics",
            })
        }
        _ => return Err(field("data size")),
    };
    let atomic_op = AtomicOp::from_bits(code & 0x1f).ok_or(field("atomic opcode"))?;
    let inline = h & MI_ATOMIC_INLINE_DATA != 0;
    // Inline operands: one dword of each operand per data dword.
    let need = if inline {
        3 + 2 * (size.bytes() as usize / 4)
    } else {
        3
    };
    let fits = if inline {
        matches!(dw.len(), 5 | 7 | 11) && dw.len() >= need
    } else {
        dw.len() == 3
    };
    if !fits {
        return Err(MiError::BadLength {
            opcode: op,
            dwords: dw.len(),
        });
    }
    if h & MI_ATOMIC_POST_SYNC != 0 {
        return Err(MiError::Unsupported {
            opcode: op,
            what: "atomic post-sync operation",
        });
    }
    let operand = |first: usize| match size {
        AtomicSize::Dword => dw[first] as u64,
        AtomicSize::Qword => dw[first] as u64 | (dw[first + 2] as u64) << 32,
    };
    Ok(Atomic {
        op: atomic_op,
        size,
        addr: address(op, dw[1], dw[2], size.bytes())?,
        inline: inline.then(|| [operand(3), operand(4)]),
        return_data: h & MI_ATOMIC_RETURN_DATA != 0,
    })
}

fn decode_batch_start(dw: &[u32]) -> Result<Instruction<'_>, MiError> {
    let op = opcode(dw[0]);
    if dw[0] & MI_BATCH_PPGTT == 0 {
        return Err(MiError::Unsupported {
            opcode: op,
            what: "a batch in the global GTT",
        });
    }
    if dw[0] & MI_BATCH_UNSUPPORTED != 0 {
        return Err(MiError::Unsupported {
            opcode: op,
            what: "batch start flags (predication, offset, nesting)",
        });
    }
    Ok(Instruction::BatchBufferStart {
        addr: address(op, dw[1], dw[2], 4)?,
        second_level: dw[0] & MI_BATCH_SECOND_LEVEL != 0,
    })
}

fn lo(a: u64) -> u32 {
    a as u32
}
fn hi(a: u64) -> u32 {
    (a >> 32) as u32
}

impl Instruction<'_> {
    /// Appends the instruction's dwords to `out`. Fields are written as
    /// given: an address the decoder would refuse encodes to a batch that
    /// fails to decode, which is how tests build malformed batches.
    pub fn encode_into<E: Extend<u32>>(&self, out: &mut E) {
        match *self {
            Self::Noop => out.extend([MI_NOOP]),
            Self::UserInterrupt => out.extend([MI_USER_INTERRUPT]),
            Self::ArbCheck => out.extend([MI_ARB_CHECK]),
            Self::BatchBufferEnd => out.extend([MI_BATCH_BUFFER_END]),
            Self::StoreData { addr, qword, data } => {
                let flag = if qword { MI_SDI_QWORD } else { 0 };
                let len = (data.len() as u32 + 1) & MI_SDI_LEN;
                out.extend([MI_STORE_DATA_IMM | flag | len, lo(addr), hi(addr)]);
                out.extend(data.iter().copied());
            }
            Self::Atomic(a) => encode_atomic(&a, out),
            Self::SemaphoreWait {
                addr,
                compare,
                value,
            } => out.extend([
                MI_SEMAPHORE_WAIT
                    | MI_SEMAPHORE_POLL
                    | (compare as u32) << MI_SEMAPHORE_COMPARE_SHIFT,
                value,
                lo(addr),
                hi(addr),
            ]),
            Self::CopyMemMem { dst, src } => {
                out.extend([MI_COPY_MEM_MEM, lo(dst), hi(dst), lo(src), hi(src)])
            }
            Self::LoadRegisterImm { pairs } => {
                let len = (pairs.len() as u32).wrapping_sub(1) & 0xff;
                out.extend([MI_LOAD_REGISTER_IMM | MI_CS_MMIO | len]);
                out.extend(pairs.iter().copied());
            }
            Self::StoreRegisterMem { reg, addr } => out.extend([
                MI_STORE_REGISTER_MEM | MI_CS_MMIO,
                reg.offset(),
                lo(addr),
                hi(addr),
            ]),
            Self::BatchBufferStart { addr, second_level } => {
                let level = if second_level {
                    MI_BATCH_SECOND_LEVEL
                } else {
                    0
                };
                out.extend([
                    MI_BATCH_BUFFER_START | MI_BATCH_PPGTT | level,
                    lo(addr),
                    hi(addr),
                ])
            }
        }
    }
}

fn encode_atomic<E: Extend<u32>>(a: &Atomic, out: &mut E) {
    let size_bits = (a.size as u32) << MI_ATOMIC_SIZE_SHIFT;
    let code = (a.op as u32 | (a.size as u32) << 5) << MI_ATOMIC_OP_SHIFT;
    let ret = if a.return_data {
        MI_ATOMIC_RETURN_DATA
    } else {
        0
    };
    match a.inline {
        None => out.extend([
            MI_ATOMIC | num_dw(3) | size_bits | code | ret,
            lo(a.addr),
            hi(a.addr),
        ]),
        Some([op1, op2]) => {
            let (op1, op2) = (op1 & a.size.mask(), op2 & a.size.mask());
            out.extend([
                MI_ATOMIC | num_dw(11) | MI_ATOMIC_INLINE_DATA | size_bits | code | ret,
                lo(a.addr),
                hi(a.addr),
                lo(op1),
                lo(op2),
                hi(op1),
                hi(op2),
                0,
                0,
                0,
                0,
            ])
        }
    }
}

#[cfg(test)]
mod tests;
