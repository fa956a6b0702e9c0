//! The command streamer: runs one batch job on one hardware thread.
//!
//! Every instruction fetch (a read) and every data access goes through the
//! PPGTT and TLB like a kernel's: a miss raises a GuC fault descriptor and
//! stalls this hardware thread until the driver replies, then replays; a
//! refused fault ends the job `Faulted`. Each access holds the access gate
//! only while it lands, so an invalidation waits for it and never for a
//! stalled or polling batch.
//!
//! Bounds, so a batch can never hold the engine: at most
//! [`BatchLimits::max_instructions`] instructions (an endless loop of
//! `MI_BATCH_BUFFER_START` ends `Hung`), each `MI_SEMAPHORE_WAIT` polls at
//! most [`BatchLimits::semaphore_timeout`], and a device that stops ends
//! its batches. An instruction the model cannot decode ends the job
//! `BadCommand`. Every end but `Done` is logged with its job and address.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::engines::Device;
use super::BatchLimits;
use crate::xe::commands::BatchSubmit;
use crate::xe::fault::AccessType;
use crate::xe::layout::JobState;
use crate::xe::mi::{self, Atomic, AtomicSize, Instruction, MiError, CS_GPRS};

const PAGE: u64 = 4096;
/// `CS_GPR4`, where `MI_ATOMIC` returns the old value (dword index).
const RETURN_GPR: usize = 8;

/// Why a batch stopped before its end.
enum End {
    /// A fault the driver could not resolve, or a translation to nowhere.
    Faulted {
        va: u64,
    },
    Bad(MiError),
    InstructionLimit,
    SemaphoreTimeout {
        va: u64,
    },
    DeviceStopped,
    /// A second-level batch started another second-level batch.
    Nested,
}

impl End {
    fn state(&self) -> JobState {
        match self {
            Self::Faulted { .. } => JobState::Faulted,
            Self::Bad(_) | Self::Nested => JobState::BadCommand,
            Self::InstructionLimit | Self::SemaphoreTimeout { .. } | Self::DeviceStopped => {
                JobState::Hung
            }
        }
    }
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Faulted { va } => write!(f, "unresolved fault at {va:#x}"),
            Self::Bad(e) => write!(f, "bad instruction: {e:?}"),
            Self::InstructionLimit => write!(f, "instruction limit reached"),
            Self::SemaphoreTimeout { va } => write!(f, "semaphore at {va:#x} never held"),
            Self::DeviceStopped => write!(f, "the device stopped"),
            Self::Nested => write!(f, "second-level batch started from a second-level batch"),
        }
    }
}

/// What runs after an instruction.
enum Flow {
    Next,
    End,
    Jump { addr: u64, second_level: bool },
}

/// How a batch job ended, for the job table.
pub(super) struct Outcome {
    pub state: JobState,
    pub faults: u32,
    pub instructions: u32,
}

/// Runs `b` on hardware thread `hw`, then writes its fence.
pub(super) fn run(dev: &Device, b: &BatchSubmit, hw: u16) -> Outcome {
    let mut cs = CommandStreamer {
        dev,
        asid: b.asid,
        hw,
        faults: AtomicU32::new(0),
        gprs: [0; 2 * CS_GPRS],
        limits: &dev.cfg.batch,
        executed: 0,
    };
    let result = cs
        .run_batch(b.batch_addr)
        .and_then(|()| cs.write_fence(b.fence_addr, b.fence_value));
    let state = match result {
        Ok(()) => JobState::Done,
        Err(end) => {
            log::warn!(
                "xe-model: batch job {} (asid {}, batch {:#x}) ended {:?}: {end}",
                b.job,
                b.asid,
                b.batch_addr,
                end.state()
            );
            end.state()
        }
    };
    Outcome {
        state,
        faults: cs.faults.load(Ordering::Relaxed),
        instructions: cs.executed,
    }
}

struct CommandStreamer<'d> {
    dev: &'d Device,
    asid: u32,
    hw: u16,
    faults: AtomicU32,
    /// `CS_GPR0..15` as dwords, low first.
    gprs: [u32; 2 * CS_GPRS],
    limits: &'d BatchLimits,
    executed: u32,
}

impl CommandStreamer<'_> {
    fn run_batch(&mut self, start: u64) -> Result<(), End> {
        let mut words = vec![0u32; mi::MAX_INSTRUCTION_DWORDS];
        let mut ip = start;
        // Where a second-level batch returns to.
        let mut resume: Option<u64> = None;
        loop {
            if self.executed >= self.limits.max_instructions {
                return Err(End::InstructionLimit);
            }
            if self.dev.stop.load(Ordering::Acquire) {
                return Err(End::DeviceStopped);
            }
            self.executed += 1;
            self.fetch(ip, &mut words[..1])?;
            let len = mi::length(words[0]).map_err(End::Bad)?;
            let after = ip
                .checked_add(len as u64 * 4)
                .ok_or(End::Faulted { va: ip })?;
            self.fetch(ip + 4, &mut words[1..len])?;
            let (insn, _) = mi::decode(&words[..len]).map_err(End::Bad)?;
            match self.execute(insn)? {
                Flow::Next => ip = after,
                Flow::End => match resume.take() {
                    Some(back) => ip = back,
                    None => return Ok(()),
                },
                Flow::Jump { addr, second_level } => {
                    if second_level {
                        if resume.is_some() {
                            return Err(End::Nested);
                        }
                        resume = Some(after);
                    }
                    ip = addr;
                }
            }
        }
    }

    fn execute(&mut self, insn: Instruction<'_>) -> Result<Flow, End> {
        match insn {
            Instruction::Noop | Instruction::UserInterrupt | Instruction::ArbCheck => {}
            Instruction::BatchBufferEnd => return Ok(Flow::End),
            Instruction::BatchBufferStart { addr, second_level } => {
                return Ok(Flow::Jump { addr, second_level })
            }
            Instruction::StoreData { addr, qword, data } => self.store_data(addr, qword, data)?,
            Instruction::Atomic(a) => self.atomic(&a)?,
            Instruction::SemaphoreWait {
                addr,
                compare,
                value,
            } => self.semaphore_wait(addr, |m| compare.holds(m, value))?,
            Instruction::CopyMemMem { dst, src } => {
                let v = self.load32(src)?;
                self.store32(dst, v)?;
            }
            Instruction::LoadRegisterImm { pairs } => {
                for pair in pairs.chunks_exact(2) {
                    // The decoder accepted only CS_GPR offsets.
                    let i = (pair[0] - mi::CS_GPR_BASE) as usize / 4;
                    self.gprs[i] = pair[1];
                }
            }
            Instruction::StoreRegisterMem { reg, addr } => {
                self.store32(addr, self.gprs[reg.0 as usize])?
            }
        }
        Ok(Flow::Next)
    }

    fn store_data(&self, addr: u64, qword: bool, data: &[u32]) -> Result<(), End> {
        let at = |i: usize, size: u64| {
            addr.checked_add(i as u64 * size)
                .ok_or(End::Faulted { va: addr })
        };
        if qword {
            for (i, pair) in data.chunks_exact(2).enumerate() {
                self.store64(at(i, 8)?, pair[0] as u64 | (pair[1] as u64) << 32)?;
            }
        } else {
            for (i, v) in data.iter().enumerate() {
                self.store32(at(i, 4)?, *v)?;
            }
        }
        Ok(())
    }

    fn atomic(&mut self, a: &Atomic) -> Result<(), End> {
        let gpr = |i: usize| self.gprs[i] as u64 | (self.gprs[i + 1] as u64) << 32;
        // Without inline data the operands are CS_GPR0 and CS_GPR2.
        let [op1, op2] = a.inline.unwrap_or([gpr(0), gpr(4)]);
        let apply = |old: u64| a.op.apply(a.size, old, op1, op2);
        let old = match a.size {
            AtomicSize::Dword => self.with_memory(a.addr, 4, AccessType::Atomic, |p| {
                // SAFETY: `with_memory` resolved 4 aligned bytes.
                let w = unsafe { &*(p as *const AtomicU32) };
                let f = |v: u32| Some(apply(v as u64) as u32);
                w.fetch_update(Ordering::AcqRel, Ordering::Acquire, f)
                    .unwrap_or_else(|v| v) as u64
            })?,
            AtomicSize::Qword => self.with_memory(a.addr, 8, AccessType::Atomic, |p| {
                // SAFETY: `with_memory` resolved 8 aligned bytes.
                let w = unsafe { &*(p as *const AtomicU64) };
                w.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| Some(apply(v)))
                    .unwrap_or_else(|v| v)
            })?,
        };
        if a.return_data {
            self.gprs[RETURN_GPR] = old as u32;
            if a.size == AtomicSize::Qword {
                self.gprs[RETURN_GPR + 1] = (old >> 32) as u32;
            }
        }
        Ok(())
    }

    /// Polls `va` until `holds` says yes, within the semaphore bound.
    fn semaphore_wait(&self, va: u64, holds: impl Fn(u32) -> bool) -> Result<(), End> {
        let deadline = Instant::now() + self.limits.semaphore_timeout;
        let mut pause = Duration::from_micros(20);
        loop {
            if holds(self.load32(va)?) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(End::SemaphoreTimeout { va });
            }
            if self.dev.stop.load(Ordering::Acquire) {
                return Err(End::DeviceStopped);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(1));
        }
    }

    fn write_fence(&self, addr: u64, value: u64) -> Result<(), End> {
        if addr == 0 {
            return Ok(());
        }
        if addr % 8 != 0 {
            return Err(End::Bad(MiError::Misaligned { opcode: 0x20, addr }));
        }
        self.store64(addr, value)
    }

    /// Reads `out.len()` dwords of instructions from `va` on.
    fn fetch(&self, va: u64, out: &mut [u32]) -> Result<(), End> {
        let mut done = 0;
        while done < out.len() {
            let at = va.checked_add(done as u64 * 4).ok_or(End::Faulted { va })?;
            let in_page = ((PAGE - at % PAGE) / 4) as usize;
            let n = in_page.min(out.len() - done);
            let dst = &mut out[done..done + n];
            self.with_memory(at, n as u64 * 4, AccessType::Read, |p| {
                for (i, w) in dst.iter_mut().enumerate() {
                    // SAFETY: `with_memory` resolved `n` dwords from `p`.
                    *w = unsafe { (*(p as *const AtomicU32).add(i)).load(Ordering::Acquire) };
                }
            })?;
            done += n;
        }
        Ok(())
    }

    fn load32(&self, va: u64) -> Result<u32, End> {
        // SAFETY: `with_memory` resolved 4 aligned bytes.
        self.with_memory(va, 4, AccessType::Read, |p| unsafe {
            (*(p as *const AtomicU32)).load(Ordering::Acquire)
        })
    }

    fn store32(&self, va: u64, v: u32) -> Result<(), End> {
        // SAFETY: as for `load32`.
        self.with_memory(va, 4, AccessType::Write, |p| unsafe {
            (*(p as *const AtomicU32)).store(v, Ordering::Release)
        })
    }

    fn store64(&self, va: u64, v: u64) -> Result<(), End> {
        // SAFETY: `with_memory` resolved 8 aligned bytes.
        self.with_memory(va, 8, AccessType::Write, |p| unsafe {
            (*(p as *const AtomicU64)).store(v, Ordering::Release)
        })
    }

    /// Runs `f` on the `bytes` at `va` (4-aligned, inside one page:
    /// callers split) once translated, under the access gate
    /// ([`Device::with_translated`]).
    fn with_memory<R>(
        &self,
        va: u64,
        bytes: u64,
        kind: AccessType,
        f: impl FnOnce(*mut u8) -> R,
    ) -> Result<R, End> {
        if va % 4 != 0 || va % PAGE + bytes > PAGE {
            return Err(End::Faulted { va });
        }
        self.dev
            .with_translated(self.asid, va, bytes, kind, self.hw, &self.faults, f)
            .ok_or(End::Faulted { va })
    }
}
