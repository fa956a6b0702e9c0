//! `fork`: children run CPU steps on the memory they inherit while the
//! parent runs its own steps, then the parent waits.
//!
//! The child of a multithreaded process may only do async-signal-safe
//! work, so a child's steps are planned in the parent before the fork:
//! addresses resolved, the words each read must find computed, a result
//! slot per step. The child only touches memory, counts wrong words into
//! its slots, writes them to a pipe and exits; it allocates nothing and
//! takes no lock. It dies with the scenario process (`PR_SET_PDEATHSIG`).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use super::cpu_steps::{units, update_shadow};
use super::exec::{run_nested, StepError, StepResult};
use super::format::{parse_step, Access, ProbeExpect, Step};
use super::memory;
use super::world::{Ctx, Object, Target};

unsafe extern "C" {
    fn fork() -> i32;
    fn _exit(code: i32) -> !;
    fn write(fd: i32, buf: *const std::ffi::c_void, count: usize) -> isize;
}

/// Steps a forked child may run.
pub fn allowed_in_child(step: &Step) -> bool {
    matches!(
        step,
        Step::Cpu { .. } | Step::Check { .. } | Step::Probe { .. } | Step::Sleep { .. }
    )
}

/// One planned child step.
enum ChildOp {
    /// `access` over words at `addr`, checking reads against `expect`.
    Words {
        addr: u64,
        access: Access,
        value: u32,
        expect: Vec<u32>,
        what: String,
    },
    Probe {
        addr: u64,
        write: bool,
        ok: bool,
        what: String,
    },
    Sleep(u64),
}

/// Most children one fork step may start.
const MAX_CHILDREN: u64 = 64;

fn bad(msg: impl Into<String>) -> StepError {
    StepError::Scenario(msg.into())
}

pub fn run(ctx: &Ctx, step: &Step, label: &str, path: &str) -> StepResult {
    let Step::Fork {
        children,
        child,
        parent,
    } = step
    else {
        unreachable!("dispatched by op")
    };
    let n = children.get();
    if n == 0 || n > MAX_CHILDREN {
        return Err(bad(format!("children: 1 to {MAX_CHILDREN}")));
    }
    let (ops, effects) = plan(ctx, child)?;
    let mut slots = vec![0u64; ops.len()];
    let mut kids = Vec::new();
    for _ in 0..n {
        let (r, w) = rustix::pipe::pipe().map_err(|e| StepError::Host(format!("pipe: {e}")))?;
        // SAFETY: the child runs `child_main` only: memory accesses and
        // async-signal-safe calls, then `_exit`.
        let pid = unsafe { fork() };
        if pid < 0 {
            return Err(StepError::Host(format!(
                "fork: {}",
                std::io::Error::last_os_error()
            )));
        }
        if pid == 0 {
            drop(r);
            child_main(&ops, &mut slots, &w);
        }
        drop(w);
        kids.push((pid, r));
    }
    let parent_result = run_nested(ctx, parent, path);
    let mut totals = vec![0u64; ops.len()];
    let mut failures = Vec::new();
    for (pid, r) in kids {
        match collect(pid, &r, ops.len()) {
            Ok(v) => totals.iter_mut().zip(v).for_each(|(t, x)| *t += x),
            Err(e) => failures.push(e),
        }
    }
    for (op, bad_count) in ops.iter().zip(&totals) {
        let (what, kind) = match op {
            ChildOp::Words {
                what,
                access,
                expect,
                ..
            } => {
                let checked = matches!(access, Access::Read | Access::Touch);
                let d = if checked {
                    format!("{} words read in each, {bad_count} wrong", expect.len())
                } else {
                    format!("{} words written in each", expect.len())
                };
                (what.clone(), d)
            }
            ChildOp::Probe { what, .. } => (what.clone(), format!("{bad_count} unexpected")),
            ChildOp::Sleep(_) => continue,
        };
        ctx.report.check(
            *bad_count == 0,
            &format!("{label} child {what}"),
            &format!("{n} children: {kind}"),
        );
    }
    ctx.report.check(
        failures.is_empty(),
        &format!("{label} children"),
        &if failures.is_empty() {
            format!("{n} exited cleanly")
        } else {
            failures.join("; ")
        },
    );
    // The children's writes, now in the parent's shadow.
    for (o, w0, words, access, value) in effects {
        let mut s = o.shadow();
        for _ in 0..n {
            update_shadow(&mut s[w0..w0 + words], access, value, 1);
        }
    }
    parent_result
}

type Effect = (Arc<Object>, usize, usize, Access, u32);

/// Resolves the child's steps and the words each must find, simulating
/// its own writes in order on a copy of the shadow.
fn plan(ctx: &Ctx, steps: &[toml::Table]) -> Result<(Vec<ChildOp>, Vec<Effect>), StepError> {
    let mut local: HashMap<usize, Vec<u32>> = HashMap::new();
    let (mut ops, mut effects) = (Vec::new(), Vec::new());
    for (i, t) in steps.iter().enumerate() {
        let p = parse_step(t).map_err(StepError::Scenario)?;
        let what = format!("step {}", i + 1);
        match p.step {
            Step::Sleep { us } => ops.push(ChildOp::Sleep(us.get().min(10_000_000))),
            Step::Probe { at, access, expect } => {
                let t = ctx.world().resolve(&at, Some(4))?;
                ops.push(ChildOp::Probe {
                    addr: t.addr(),
                    write: !matches!(access, Access::Read | Access::Touch),
                    ok: expect == ProbeExpect::Ok,
                    what,
                });
            }
            Step::Cpu {
                ref at,
                len,
                access,
                value,
                ..
            } => {
                let value = u32::try_from(value.get()).map_err(|_| bad("value: 32 bits"))?;
                let (addr, o, w0, words) = words_of(ctx, at, len.map(|l| l.get()))?;
                let s = local
                    .entry(Arc::as_ptr(&o) as usize)
                    .or_insert_with(|| o.shadow().clone());
                let expect = s[w0..w0 + words].to_vec();
                update_shadow(&mut s[w0..w0 + words], access, value, 1);
                if !matches!(access, Access::Read | Access::Touch) {
                    effects.push((o.clone(), w0, words, access, value));
                }
                ops.push(ChildOp::Words {
                    addr,
                    access,
                    value,
                    expect,
                    what: format!("{what} cpu {}", at.name),
                });
            }
            Step::Check { at, len, words: _ } => {
                let at = at.ok_or_else(|| bad("a child's check names its range"))?;
                let (addr, o, w0, words) = words_of(ctx, &at, len.map(|l| l.get()))?;
                let s = local
                    .entry(Arc::as_ptr(&o) as usize)
                    .or_insert_with(|| o.shadow().clone());
                ops.push(ChildOp::Words {
                    addr,
                    access: Access::Read,
                    value: 0,
                    expect: s[w0..w0 + words].to_vec(),
                    what: format!("{what} check {}", at.name),
                });
            }
            _ => {
                return Err(bad(
                    "a forked child runs cpu, check, probe and sleep steps only",
                ))
            }
        }
    }
    Ok((ops, effects))
}

fn words_of(
    ctx: &Ctx,
    at: &super::value::Addr,
    len: Option<u64>,
) -> Result<(u64, Arc<Object>, usize, usize), StepError> {
    match ctx.world().resolve(at, len)? {
        Target::Mem {
            addr,
            len,
            object: Some(o),
            obj_off,
            ..
        } if addr.is_multiple_of(4) && len.is_multiple_of(4) => {
            Ok((addr, o, (obj_off / 4) as usize, (len / 4) as usize))
        }
        _ => Err(bad(format!("{}: whole words of a memory object", at.name))),
    }
}

/// The child: runs the plan, writes its slots to the pipe, exits.
fn child_main(ops: &[ChildOp], slots: &mut [u64], w: &OwnedFd) -> ! {
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    for (op, slot) in ops.iter().zip(slots.iter_mut()) {
        *slot = match op {
            ChildOp::Words {
                addr,
                access,
                value,
                expect,
                ..
            } => {
                let mut bad = 0u64;
                for (a, b) in units(*addr, expect.len() as u64 * 4) {
                    // SAFETY: the parent resolved this range of its mapped
                    // memory; the child inherited the mapping.
                    bad += unsafe { child_words(*addr, a, b, *access, *value, expect) };
                }
                bad
            }
            ChildOp::Probe {
                addr, write, ok, ..
            } => u64::from(memory::probe_raw(*addr, *write).ok() != Some(*ok)),
            ChildOp::Sleep(us) => {
                std::thread::sleep(std::time::Duration::from_micros(*us));
                0
            }
        };
    }
    // SAFETY: writes the slots (plain memory) to our pipe; then exits
    // without running the parent's destructors.
    unsafe {
        let bytes = std::mem::size_of_val(slots);
        write(w.as_raw_fd(), slots.as_ptr() as *const _, bytes);
        _exit(0)
    }
}

/// # Safety
/// Words `a..b` from `base` must be mapped for the access.
unsafe fn child_words(
    base: u64,
    a: usize,
    b: usize,
    access: Access,
    value: u32,
    expect: &[u32],
) -> u64 {
    let p = base as *mut u32;
    let mut bad = 0;
    // SAFETY (every access): inside the range the caller vouches for.
    unsafe {
        for (i, want) in expect.iter().enumerate().take(b).skip(a) {
            let want = *want;
            match access {
                Access::Read => bad += u64::from(std::ptr::read_volatile(p.add(i)) != want),
                Access::Touch if i == a => {
                    bad += u64::from(std::ptr::read_volatile(p.add(i)) != want)
                }
                Access::Touch => {}
                Access::Write => std::ptr::write_volatile(p.add(i), value),
                Access::Inc => std::ptr::write_volatile(
                    p.add(i),
                    std::ptr::read_volatile(p.add(i)).wrapping_add(value),
                ),
                Access::AtomicInc => {
                    std::sync::atomic::AtomicU32::from_ptr(p.add(i))
                        .fetch_add(value, std::sync::atomic::Ordering::AcqRel);
                }
            }
        }
    }
    bad
}

/// Waits for a child and reads its slots.
fn collect(pid: i32, r: &OwnedFd, n: usize) -> Result<Vec<u64>, String> {
    let mut buf = vec![0u8; n * 8];
    let mut got = 0;
    while got < buf.len() {
        match rustix::io::read(r, &mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(format!("child {pid}: reading its results: {e}")),
        }
    }
    let pid = rustix::process::Pid::from_raw(pid).ok_or("fork gave pid 0 to the parent")?;
    let status = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())
        .map_err(|e| format!("waitpid: {e}"))?;
    match status.and_then(|(_, s)| s.exit_status()) {
        Some(0) if got == buf.len() => {}
        Some(code) => return Err(format!("child {pid:?} exited with {code}")),
        None => return Err(format!("child {pid:?} was killed: {status:?}")),
    }
    Ok(buf
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
        .collect())
}
