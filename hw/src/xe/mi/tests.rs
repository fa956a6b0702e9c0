//! Encodings checked against vectors computed by hand from the headers
//! cited in [`super`], round trips, and malformed streams.

use proptest::prelude::*;

use super::*;
use crate::xe::batch::Batch;

const A: u64 = 0x0000_7f12_3456_7890;

#[test]
fn one_dword_instructions_match_the_header() {
    // __MI_INSTR(op) = op << 23 (xe_mi_commands.h).
    assert_eq!(MI_NOOP, 0x0000_0000);
    assert_eq!(MI_USER_INTERRUPT, 0x0100_0000);
    assert_eq!(MI_ARB_CHECK, 0x0280_0000);
    assert_eq!(MI_BATCH_BUFFER_END, 0x0500_0000);
}

#[test]
fn store_data_imm_vectors() {
    // IGT's MI_STORE_DWORD_IMM_GEN4 = MI_INSTR(0x20, 2): 0x20 << 23 | 2.
    assert_eq!(
        Batch::new().store_dword(A, 0xdead_beef).into_words(),
        [0x1000_0002, 0x3456_7890, 0x7f12, 0xdead_beef]
    );
    // MI_SDI_NUM_QW(1) = 2 * 1 + 3 - 2 | bit 21: 0x1000_0003 | 0x0020_0000.
    assert_eq!(
        Batch::new()
            .store_qword(A & !7, 0x1122_3344_5566_7788)
            .into_words(),
        [0x1020_0003, 0x3456_7890, 0x7f12, 0x5566_7788, 0x1122_3344]
    );
    // MI_SDI_NUM_DW(3) = 3 + 3 - 2 = 4.
    assert_eq!(
        Batch::new().store_dwords(0x1000, &[1, 2, 3]).into_words(),
        [0x1000_0004, 0x1000, 0, 1, 2, 3]
    );
}

#[test]
fn atomic_vectors() {
    // IGT: MI_ATOMIC = MI_INSTR(0x2f, 1), MI_ATOMIC_INC = 0x5 << 8,
    // MI_ATOMIC_DEC = 0x6 << 8 (xe_exec_atomic.c writes three dwords).
    assert_eq!(
        Batch::new().atomic_inc(0x2000).into_words(),
        [0x1780_0501, 0x2000, 0]
    );
    assert_eq!(
        Batch::new().atomic_dec(0x2000).into_words(),
        [0x1780_0601, 0x2000, 0]
    );
    // i915's MI_ATOMIC_INLINE = MI_INSTR(0x2f, 9) | inline data (bit 18);
    // ADD is 0x7 << 8; dwords 3..10 interleave operand 1 and 2.
    assert_eq!(
        Batch::new().atomic_add(0x2000, 5).into_words(),
        [0x1784_0709, 0x2000, 0, 5, 0, 0, 0, 0, 0, 0, 0]
    );
    // CMP_WR is 14 (0xe << 8), return data bit 16.
    assert_eq!(
        Batch::new().atomic_cmpxchg(0x2000, 3, 9).into_words(),
        [0x1785_0e09, 0x2000, 0, 3, 9, 0, 0, 0, 0, 0, 0]
    );
    // Qword INC: data size 1 << 19 and opcode 0x20 | 5.
    let q = Atomic {
        op: AtomicOp::Inc,
        size: AtomicSize::Qword,
        addr: 0x2008,
        inline: None,
        return_data: false,
    };
    assert_eq!(
        Batch::new().push(Instruction::Atomic(q)).into_words(),
        [0x1788_2501, 0x2008, 0]
    );
}

#[test]
fn semaphore_copy_registers_and_batch_start_vectors() {
    // MI_SEMAPHORE_WAIT = __MI_INSTR(0x1c) | XE_INSTR_NUM_DW(4); poll bit
    // 15; MI_SEMAPHORE_SAD_EQ_SDD = 4 << 12 (as xe_spin.c emits it).
    assert_eq!(
        Batch::new()
            .semaphore_wait(0x3000, Compare::Equal, 7)
            .into_words(),
        [0x0e00_c002, 7, 0x3000, 0]
    );
    // MI_COPY_MEM_MEM = __MI_INSTR(0x2e) | XE_INSTR_NUM_DW(5): dst, src.
    assert_eq!(
        Batch::new().copy_mem_mem(0x4000, 0x5000).into_words(),
        [0x1700_0003, 0x4000, 0, 0x5000, 0]
    );
    // MI_LOAD_REGISTER_IMM(1) | MI_LRI_CS_MMIO, CS_GPR(2) = 0x600 + 8 * 2.
    assert_eq!(
        Batch::new().load_gpr(4, 0xabc).into_words(),
        [0x1108_0001, 0x610, 0xabc]
    );
    // MI_STORE_REGISTER_MEM = __MI_INSTR(0x24) | XE_INSTR_NUM_DW(4).
    assert_eq!(
        Batch::new().store_gpr(8, 0x6000).into_words(),
        [0x1208_0002, 0x620, 0x6000, 0]
    );
    // xe_spin.c: MI_BATCH_BUFFER_START | 1 << 8 | 1; second level bit 22.
    assert_eq!(
        Batch::new().jump(A & !3).into_words(),
        [0x1880_0101, 0x3456_7890, 0x7f12]
    );
    assert_eq!(
        Batch::new().call(0x7000).into_words(),
        [0x18c0_0101, 0x7000, 0]
    );
}

fn examples() -> Vec<Instruction<'static>> {
    let atomic = |op, size, inline, return_data| {
        Instruction::Atomic(Atomic {
            op,
            size,
            addr: 0x10_0000,
            inline,
            return_data,
        })
    };
    vec![
        Instruction::Noop,
        Instruction::UserInterrupt,
        Instruction::ArbCheck,
        Instruction::BatchBufferEnd,
        Instruction::StoreData {
            addr: A & !3,
            qword: false,
            data: &[9],
        },
        Instruction::StoreData {
            addr: 0x8,
            qword: true,
            data: &[1, 2, 3, 4],
        },
        atomic(AtomicOp::Inc, AtomicSize::Dword, None, false),
        atomic(AtomicOp::Add, AtomicSize::Qword, Some([1 << 40, 0]), true),
        atomic(AtomicOp::CmpWr, AtomicSize::Dword, Some([4, 5]), true),
        Instruction::SemaphoreWait {
            addr: 0x40,
            compare: Compare::LessOrEqual,
            value: 3,
        },
        Instruction::CopyMemMem { dst: 4, src: 8 },
        Instruction::LoadRegisterImm {
            pairs: &[0x600, 1, 0x604, 2],
        },
        Instruction::StoreRegisterMem {
            reg: GprDword(31),
            addr: 0x10,
        },
        Instruction::BatchBufferStart {
            addr: 0x1000,
            second_level: true,
        },
    ]
}

#[test]
fn every_instruction_round_trips() {
    for insn in examples() {
        let mut words = Vec::new();
        insn.encode_into(&mut words);
        assert_eq!(decode(&words), Ok((insn, words.len())), "{insn:?}");
        assert_eq!(length(words[0]), Ok(words.len()), "{insn:?}");
    }
}

fn err(words: &[u32]) -> MiError {
    decode(words).expect_err("must not decode")
}

#[test]
fn malformed_streams_are_typed_errors() {
    use MiError::*;
    assert_eq!(err(&[]), Truncated { needed: 1, got: 0 });
    assert_eq!(
        err(&[0x7a00_0004]),
        NotMi {
            header: 0x7a00_0004
        }
    );
    assert_eq!(err(&[0x3f << 23]), UnknownOpcode { opcode: 0x3f });
    // A store whose length says more dwords than the stream has.
    assert_eq!(
        err(&[0x1000_0002, 0x1000, 0]),
        Truncated { needed: 4, got: 3 }
    );
    // Fixed-length commands with another length.
    assert!(matches!(err(&[0x1700_0002, 0, 0, 0]), BadLength { .. }));
    assert!(matches!(err(&[0x1880_0102, 0, 0, 0, 0]), BadLength { .. }));
    assert!(matches!(err(&[0x0e00_c001, 0, 0]), BadLength { .. }));
    // A store with no data; a qword store with an odd dword count.
    assert!(matches!(err(&[0x1000_0000, 0]), BadLength { .. }));
    assert!(matches!(err(&[0x1020_0002, 8, 0, 1]), BadLength { .. }));
    // Reserved address bits.
    assert!(matches!(
        err(&[0x1000_0002, 0x1002, 0, 1]),
        Misaligned { .. }
    ));
    assert!(matches!(err(&[0x1020_0003, 4, 0, 1, 2]), Misaligned { .. }));
    assert!(matches!(
        err(&[0x1000_0002, 0, 1 << 16, 1]),
        AddressTooHigh { .. }
    ));
    // Compare operation 6 is undefined; signal mode is not modelled.
    assert!(matches!(err(&[0x0e00_e002, 0, 0, 0]), BadField { .. }));
    assert!(matches!(err(&[0x0e00_4002, 0, 0, 0]), Unsupported { .. }));
    // Atomics: opcode 0 and 15, size mismatch, octword, post-sync, length.
    assert!(matches!(err(&[0x1780_0001, 0, 0]), BadField { .. }));
    assert!(matches!(err(&[0x1780_0f01, 0, 0]), BadField { .. }));
    assert!(matches!(err(&[0x1788_0501, 0, 0]), BadField { .. }));
    assert!(matches!(err(&[0x1790_4501, 0, 0]), Unsupported { .. }));
    assert!(matches!(err(&[0x17a0_0501, 0, 0]), Unsupported { .. }));
    assert!(matches!(err(&[0x1780_0502, 0, 0, 0]), BadLength { .. }));
    assert!(matches!(err(&[0x1784_0702, 0, 0, 0]), BadLength { .. }));
    // Batch start into the GGTT, or with predication.
    assert!(matches!(err(&[0x1880_0001, 0, 0]), Unsupported { .. }));
    assert!(matches!(err(&[0x1880_8101, 0, 0]), Unsupported { .. }));
    // Registers other than CS_GPR, or absolute offsets.
    assert!(matches!(err(&[0x1108_0001, 0x2358, 0]), Unsupported { .. }));
    assert!(matches!(err(&[0x1100_0001, 0x600, 0]), Unsupported { .. }));
    assert!(matches!(
        err(&[0x1208_0002, 0x680, 0, 0]),
        Unsupported { .. }
    ));
    assert!(matches!(err(&[0x1108_0002, 0x600, 0, 0]), BadLength { .. }));
}

#[test]
fn atomic_operations_compute_like_the_bspec_says() {
    use AtomicOp::*;
    let d = AtomicSize::Dword;
    assert_eq!(Inc.apply(d, u32::MAX as u64, 0, 0), 0, "dword wraps");
    assert_eq!(Dec.apply(d, 0, 0, 0), u32::MAX as u64);
    assert_eq!(Add.apply(d, 5, 7, 0), 12);
    assert_eq!(Sub.apply(d, 5, 7, 0), (-2i32) as u32 as u64);
    assert_eq!(Rsub.apply(d, 5, 7, 0), 2);
    assert_eq!(CmpWr.apply(d, 5, 5, 9), 9);
    assert_eq!(CmpWr.apply(d, 6, 5, 9), 6);
    assert_eq!(Imax.apply(d, (-1i32) as u32 as u64, 3, 0), 3);
    assert_eq!(Umax.apply(d, (-1i32) as u32 as u64, 3, 0), u32::MAX as u64);
    assert_eq!(
        Imin.apply(d, 3, (-4i32) as u32 as u64, 0),
        (-4i32) as u32 as u64
    );
    assert_eq!(Umin.apply(d, 3, 9, 0), 3);
    assert_eq!((And.apply(d, 6, 3, 0), Or.apply(d, 6, 3, 0)), (2, 7));
    assert_eq!((Xor.apply(d, 6, 3, 0), Move.apply(d, 6, 3, 0)), (5, 3));
    let q = AtomicSize::Qword;
    assert_eq!(Inc.apply(q, u32::MAX as u64, 0, 0), 1 << 32);
    assert_eq!(Imax.apply(q, u64::MAX, 1, 0), 1);
}

/// Headers of every opcode the decoder knows plus random ones, with random
/// low bits: most streams get past the opcode into the field checks.
fn header() -> impl Strategy<Value = u32> {
    let known = prop::sample::select(vec![
        0x00u32, 0x02, 0x05, 0x0a, 0x1c, 0x20, 0x22, 0x24, 0x2e, 0x2f, 0x31,
    ]);
    prop_oneof![
        (known.clone(), any::<u32>()).prop_map(|(op, low)| op << 23 | (low & 0x7f_ffff)),
        (known, 0u32..12).prop_map(|(op, len)| op << 23 | len),
        any::<u32>(),
    ]
}

fn stream() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(prop_oneof![header(), any::<u32>(), 0u32..0x1_0000], 0..40)
}

proptest! {
    #[test]
    fn random_dwords_decode_to_instructions_or_typed_errors(words in stream()) {
        let mut at = 0;
        while at < words.len() {
            match decode(&words[at..]) {
                Ok((insn, len)) => {
                    prop_assert!(len >= 1 && at + len <= words.len());
                    // What decoded re-encodes to something that decodes the same.
                    let mut again = Vec::new();
                    insn.encode_into(&mut again);
                    prop_assert_eq!(decode(&again), Ok((insn, again.len())));
                    at += len;
                }
                Err(_) => at += 1,
            }
        }
    }

    #[test]
    fn generated_batches_round_trip(
        ops in prop::collection::vec((0usize..8, any::<u64>(), any::<u32>()), 1..20)
    ) {
        let mut b = Batch::new();
        let mut expect = 0;
        for (kind, addr, v) in ops {
            let addr = addr & 0x0000_ffff_ffff_fff8;
            b = match kind {
                0 => b.store_dword(addr, v),
                1 => b.store_qword(addr, (v as u64) << 16 | 3),
                2 => b.atomic_inc(addr),
                3 => b.atomic_add(addr, v),
                4 => b.atomic_cmpxchg(addr, v, !v),
                5 => b.semaphore_wait(addr, Compare::GreaterOrEqual, v),
                6 => b.copy_mem_mem(addr, addr ^ 0x1000),
                _ => b.jump(addr),
            };
            expect += 1;
        }
        let words = b.end();
        let mut at = 0;
        let mut seen = 0;
        while at < words.len() {
            let (_, len) = decode(&words[at..]).expect("generated batches decode");
            at += len;
            seen += 1;
        }
        prop_assert_eq!(seen, expect + 1);
    }
}
