//! `batch`: a program of Xe command-streamer instructions, encoded with
//! `hw::xe::batch`, written into memory the scenario names (SVM memory:
//! the GPU faults on its own instructions, as in IGT's tests), run with
//! `Gpu::SubmitBatch`, and its effects applied to the shadow in program
//! order once it completed. The instruction words are data in memory too:
//! the shadow holds them, so every word check covers them.

use std::time::Duration;

use hw::xe::batch::Batch;
use hw::xe::mi::Compare;
use ipc_protocol::interfaces::gpu::{SubmitBatch, Wait};
use ipc_protocol::types::JobStatus;

use super::exec::{StepError, StepResult};
use super::format::{Instr, JobExpect};
use super::value::Addr;
use super::world::{Ctx, Target, World};

fn bad(msg: impl Into<String>) -> StepError {
    StepError::Scenario(msg.into())
}

/// The batch step's fields.
#[derive(Clone)]
pub struct BatchStep {
    pub vm: String,
    pub at: Addr,
    pub program: Vec<Instr>,
    pub fence: Option<Addr>,
    pub fence_value: u64,
    pub expect: JobExpect,
}

/// A batch submitted with `wait = false`.
pub struct PendingJob {
    pub job: ipc_protocol::types::JobId,
    pub client: usize,
    /// The GPU whose server runs it.
    pub gpu: u8,
    pub step: BatchStep,
    pub label: String,
}

fn word(w: &World, a: &Addr, bytes: u64) -> Result<Target, StepError> {
    let t = w.resolve(a, Some(bytes))?;
    if !t.addr().is_multiple_of(4) {
        return Err(bad(format!(
            "{}+{:#x}: not dword aligned",
            a.name, a.offset
        )));
    }
    Ok(t)
}

fn compare(op: &str) -> Result<Compare, StepError> {
    Ok(match op {
        "eq" => Compare::Equal,
        "ne" => Compare::NotEqual,
        "gt" => Compare::Greater,
        "ge" => Compare::GreaterOrEqual,
        "lt" => Compare::Less,
        "le" => Compare::LessOrEqual,
        _ => return Err(bad(format!("compare {op:?}: eq, ne, gt, ge, lt or le"))),
    })
}

fn u32_of(v: u64) -> Result<u32, StepError> {
    u32::try_from(v).map_err(|_| bad(format!("{v:#x} is over 32 bits")))
}

/// Encodes the program into segments: `(where, words)`, a new segment
/// after each `jump`.
fn encode(w: &World, s: &BatchStep) -> Result<Vec<(Target, Vec<u32>)>, StepError> {
    let mut segs = Vec::new();
    let mut here = w.resolve(&s.at, None)?;
    let mut b = Batch::new();
    for ins in &s.program {
        b = match ins {
            Instr::StoreDword { addr, value } => {
                b.store_dword(word(w, addr, 4)?.addr(), u32_of(value.get())?)
            }
            Instr::StoreQword { addr, value } | Instr::UserFence { addr, value } => {
                b.store_qword(word(w, addr, 8)?.addr(), value.get())
            }
            Instr::AtomicInc { addr } => b.atomic_inc(word(w, addr, 4)?.addr()),
            Instr::AtomicAdd { addr, value } => {
                b.atomic_add(word(w, addr, 4)?.addr(), u32_of(value.get())?)
            }
            Instr::AtomicCmpxchg {
                addr,
                compare: c,
                value,
            } => b.atomic_cmpxchg(
                word(w, addr, 4)?.addr(),
                u32_of(c.get())?,
                u32_of(value.get())?,
            ),
            Instr::SemaphoreWait {
                addr,
                compare: c,
                value,
            } => b.semaphore_wait(word(w, addr, 4)?.addr(), compare(c)?, u32_of(value.get())?),
            Instr::Copy { from, to } => {
                b.copy_mem_mem(word(w, to, 4)?.addr(), word(w, from, 4)?.addr())
            }
            Instr::Jump { to } => {
                let next = w.resolve(to, None)?;
                segs.push((here, b.jump(next.addr()).into_words()));
                here = next;
                Batch::new()
            }
        };
    }
    segs.push((here, b.end()));
    Ok(segs)
}

/// Writes one segment into memory and the shadow. A batch "placed" in a
/// reservation is not written: the GPU faults fetching it (IGT `fault`).
fn place(t: &Target, words: &[u32]) -> StepResult {
    if let Target::Mem { object: None, .. } = t {
        return Ok(());
    }
    let Target::Mem {
        addr,
        len,
        object: Some(o),
        obj_off,
        ..
    } = t
    else {
        return Err(bad(
            "a batch lives in memory the CPU can write (an allocation)",
        ));
    };
    if (words.len() as u64) * 4 > *len {
        return Err(bad(format!(
            "{} batch words do not fit in {len} bytes",
            words.len()
        )));
    }
    let mut shadow = o.shadow();
    let w0 = (*obj_off / 4) as usize;
    for (i, v) in words.iter().enumerate() {
        // SAFETY: inside the allocation, which is mapped.
        unsafe { std::ptr::write_volatile((*addr as *mut u32).add(i), *v) };
        shadow[w0 + i] = *v;
    }
    Ok(())
}

/// Runs `f` on the shadow word `t` names.
fn with_word(t: &Target, f: impl FnOnce(&mut u32)) {
    match t {
        Target::Mem {
            object: Some(o),
            obj_off,
            ..
        } => f(&mut o.shadow()[(*obj_off / 4) as usize]),
        Target::Mem { object: None, .. } => {}
        Target::Bo { bo, off, .. } => {
            f(&mut bo.shadow.lock().unwrap_or_else(|e| e.into_inner())[(*off / 4) as usize])
        }
    }
}

fn read_word(t: &Target) -> u32 {
    let mut v = 0;
    with_word(t, |w| v = *w);
    v
}

fn store_qword(w: &World, a: &Addr, value: u64) -> StepResult {
    let lo = w.resolve(a, Some(8))?;
    let hi = w.resolve(
        &Addr {
            name: a.name.clone(),
            offset: a.offset + 4,
        },
        Some(4),
    )?;
    with_word(&lo, |x| *x = value as u32);
    with_word(&hi, |x| *x = (value >> 32) as u32);
    Ok(())
}

/// The program's effects on the shadow, in order (it completed).
fn apply(w: &World, program: &[Instr]) -> StepResult {
    for ins in program {
        match ins {
            Instr::StoreDword { addr, value } => {
                with_word(&w.resolve(addr, Some(4))?, |x| *x = value.get() as u32)
            }
            Instr::StoreQword { addr, value } | Instr::UserFence { addr, value } => {
                store_qword(w, addr, value.get())?
            }
            Instr::AtomicInc { addr } => {
                with_word(&w.resolve(addr, Some(4))?, |x| *x = x.wrapping_add(1))
            }
            Instr::AtomicAdd { addr, value } => with_word(&w.resolve(addr, Some(4))?, |x| {
                *x = x.wrapping_add(value.get() as u32)
            }),
            Instr::AtomicCmpxchg {
                addr,
                compare,
                value,
            } => with_word(&w.resolve(addr, Some(4))?, |x| {
                if *x == compare.get() as u32 {
                    *x = value.get() as u32
                }
            }),
            Instr::Copy { from, to } => {
                let v = read_word(&w.resolve(from, Some(4))?);
                with_word(&w.resolve(to, Some(4))?, |x| *x = v)
            }
            Instr::SemaphoreWait { .. } | Instr::Jump { .. } => {}
        }
    }
    Ok(())
}

/// Places and submits the batch; waits for it unless `detach` names the
/// job to wait for later (`Some(None)`: a detached batch without a name).
pub fn run(
    ctx: &Ctx,
    s: BatchStep,
    detach: Option<Option<&str>>,
    label: &str,
    bound: Duration,
) -> StepResult {
    let (vm, client, batch_addr, fence_addr) = {
        let w = ctx.world();
        let v = w.vm(&s.vm)?;
        let segs = encode(&w, &s)?;
        for (t, words) in &segs {
            place(t, words)?;
        }
        let fence = match &s.fence {
            Some(f) => {
                let t = w.resolve(f, Some(8))?;
                if !t.addr().is_multiple_of(8) {
                    return Err(bad("a fence is a qword, 8-byte aligned"));
                }
                t.addr()
            }
            None => 0,
        };
        (v.id, (v.client, v.gpu), segs[0].0.addr(), fence)
    };
    if let Some(name) = detach {
        let name = name.ok_or_else(|| bad("a batch with wait = false names its job"))?;
        if ctx.world().jobs.contains_key(name) {
            return Err(bad(format!("job {name:?} is still pending")));
        }
    }
    let (client, on) = client;
    let job = ctx
        .gpu(client, on)?
        .call(SubmitBatch {
            vm,
            batch_addr,
            fence_addr,
            fence_value: s.fence_value,
        })?
        .job;
    let pending = PendingJob {
        job,
        client,
        gpu: on,
        step: s,
        label: label.to_string(),
    };
    match detach {
        Some(Some(name)) => {
            ctx.world().jobs.insert(name.to_string(), pending);
            Ok(())
        }
        _ => finish(ctx, pending, bound),
    }
}

/// `wait_job`: waits for a detached batch.
pub fn wait_job(ctx: &Ctx, name: &str, bound: Duration) -> StepResult {
    let p = ctx
        .world()
        .jobs
        .remove(name)
        .ok_or_else(|| bad(format!("no pending job {name:?}")))?;
    finish(ctx, p, bound)
}

/// Waits for the job, checks its status, applies its effects.
fn finish(ctx: &Ctx, p: PendingJob, bound: Duration) -> StepResult {
    let s = &p.step;
    let timeout_ms = bound.as_millis().min(u32::MAX as u128) as u32;
    let done = ctx.gpu(p.client, p.gpu)?.call(Wait {
        job: p.job,
        timeout_ms,
    })?;
    let ok = match s.expect {
        JobExpect::Any => true,
        JobExpect::Completed => done.status == JobStatus::Completed,
        JobExpect::Faulted => done.status == JobStatus::Faulted,
        JobExpect::BadCommand => done.status == JobStatus::BadCommand,
        JobExpect::Hung => done.status == JobStatus::Hung,
    };
    if done.status == JobStatus::Completed {
        let w = ctx.world();
        apply(&w, &s.program)?;
        if let Some(f) = &s.fence {
            store_qword(&w, f, s.fence_value)?;
        }
    }
    let detail = format!(
        "a batch of {} instructions at {}+{:#x}: {:?} after {} GPU faults, expected {:?}",
        s.program.len() + 1,
        s.at.name,
        s.at.offset,
        done.status,
        done.faults,
        s.expect
    );
    ctx.report.check(ok, &p.label, &detail);
    if done.status == JobStatus::Running {
        return Err(StepError::Host(format!(
            "the batch is still running: {detail}"
        )));
    }
    Ok(())
}
