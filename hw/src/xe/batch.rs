//! A builder of batch buffers from [`mi`](super::mi) instructions, for
//! tests and scenarios:
//!
//! ```
//! use hw::xe::batch::Batch;
//! let words = Batch::new().store_dword(0x1000, 7).atomic_inc(0x1004).end();
//! assert_eq!(words.len(), 4 + 3 + 1);
//! ```
//!
//! Addresses are encoded as given (see [`Instruction::encode_into`]).

use super::mi::{Atomic, AtomicOp, AtomicSize, Compare, GprDword, Instruction};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    words: Vec<u32>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends any instruction.
    pub fn push(mut self, insn: Instruction<'_>) -> Self {
        insn.encode_into(&mut self.words);
        self
    }

    /// The byte offset the next instruction will have (a jump target).
    pub fn offset(&self) -> u64 {
        self.words.len() as u64 * 4
    }

    pub fn noop(self) -> Self {
        self.push(Instruction::Noop)
    }

    pub fn store_dword(self, addr: u64, value: u32) -> Self {
        self.push(Instruction::StoreData {
            addr,
            qword: false,
            data: &[value],
        })
    }

    /// Consecutive dwords from `addr` on, in one instruction.
    pub fn store_dwords(self, addr: u64, values: &[u32]) -> Self {
        self.push(Instruction::StoreData {
            addr,
            qword: false,
            data: values,
        })
    }

    pub fn store_qword(self, addr: u64, value: u64) -> Self {
        self.push(Instruction::StoreData {
            addr,
            qword: true,
            data: &[value as u32, (value >> 32) as u32],
        })
    }

    /// A dword atomic with inline operands.
    pub fn atomic(self, op: AtomicOp, addr: u64, op1: u32, op2: u32) -> Self {
        self.push(Instruction::Atomic(Atomic {
            op,
            size: AtomicSize::Dword,
            addr,
            inline: Some([op1 as u64, op2 as u64]),
            return_data: false,
        }))
    }

    /// `MI_ATOMIC | MI_ATOMIC_INC` as IGT writes it: three dwords.
    pub fn atomic_inc(self, addr: u64) -> Self {
        self.atomic_no_operands(AtomicOp::Inc, addr)
    }

    pub fn atomic_dec(self, addr: u64) -> Self {
        self.atomic_no_operands(AtomicOp::Dec, addr)
    }

    pub fn atomic_add(self, addr: u64, value: u32) -> Self {
        self.atomic(AtomicOp::Add, addr, value, 0)
    }

    /// Compare and exchange: `*addr = new` if `*addr == expected`; the old
    /// value goes to `CS_GPR4` (store it with [`Self::store_gpr`]).
    pub fn atomic_cmpxchg(self, addr: u64, expected: u32, new: u32) -> Self {
        self.push(Instruction::Atomic(Atomic {
            op: AtomicOp::CmpWr,
            size: AtomicSize::Dword,
            addr,
            inline: Some([expected as u64, new as u64]),
            return_data: true,
        }))
    }

    fn atomic_no_operands(self, op: AtomicOp, addr: u64) -> Self {
        self.push(Instruction::Atomic(Atomic {
            op,
            size: AtomicSize::Dword,
            addr,
            inline: None,
            return_data: false,
        }))
    }

    /// Polls `addr` until `compare(*addr, value)` holds.
    pub fn semaphore_wait(self, addr: u64, compare: Compare, value: u32) -> Self {
        self.push(Instruction::SemaphoreWait {
            addr,
            compare,
            value,
        })
    }

    pub fn copy_mem_mem(self, dst: u64, src: u64) -> Self {
        self.push(Instruction::CopyMemMem { dst, src })
    }

    /// Loads `value` into dword `gpr` of the `CS_GPR` file.
    pub fn load_gpr(self, gpr: u8, value: u32) -> Self {
        self.push(Instruction::LoadRegisterImm {
            pairs: &[GprDword(gpr).offset(), value],
        })
    }

    /// Stores dword `gpr` of the `CS_GPR` file at `addr`.
    pub fn store_gpr(self, gpr: u8, addr: u64) -> Self {
        self.push(Instruction::StoreRegisterMem {
            reg: GprDword(gpr),
            addr,
        })
    }

    /// Continues at `addr` (a chained batch; this one does not resume).
    pub fn jump(self, addr: u64) -> Self {
        self.push(Instruction::BatchBufferStart {
            addr,
            second_level: false,
        })
    }

    /// Runs the second-level batch at `addr`, then resumes here.
    pub fn call(self, addr: u64) -> Self {
        self.push(Instruction::BatchBufferStart {
            addr,
            second_level: true,
        })
    }

    /// Ends the batch with `MI_BATCH_BUFFER_END`.
    pub fn end(self) -> Vec<u32> {
        self.push(Instruction::BatchBufferEnd).words
    }

    /// The words so far, without an end (a batch that ends in a jump).
    pub fn into_words(self) -> Vec<u32> {
        self.words
    }

    /// `words` as little-endian bytes, as the GPU reads them from memory.
    pub fn to_bytes(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }
}
