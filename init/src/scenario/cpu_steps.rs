//! CPU threads over a range: who takes which pages (own share,
//! interleaved, all on the same page, all staggered), what they do to each
//! word, and what that does to the shadow. Reads check every word they
//! read against the shadow as it was when the step began.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Instant;

use super::exec::{StepError, StepResult, MAX_THREADS};
use super::format::{Access, Pattern, Step};
use super::memory::PAGE;
use super::shadow::Mismatch;
use super::world::{Ctx, Target};

fn bad(msg: impl Into<String>) -> StepError {
    StepError::Scenario(msg.into())
}

/// The pieces of `[addr, addr + len)` that lie in one page each, as word
/// ranges from the start.
pub fn units(addr: u64, len: u64) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut off = 0u64;
    while off < len {
        let page_end = ((addr + off) / PAGE + 1) * PAGE - addr;
        let end = page_end.min(len);
        out.push(((off / 4) as usize, (end / 4) as usize));
        off = end;
    }
    out
}

/// The units thread `t` of `n` visits, in order.
pub fn plan(pattern: Pattern, t: usize, n: usize, units: usize) -> Vec<usize> {
    match pattern {
        Pattern::Own => (t * units / n..(t + 1) * units / n).collect(),
        Pattern::Interleaved => (t..units).step_by(n).collect(),
        Pattern::SamePage => (0..units).collect(),
        Pattern::Staggered => (0..units).map(|k| (k + t * units / n) % units).collect(),
    }
}

/// How many threads visit each unit.
fn visits(pattern: Pattern, n: usize) -> u32 {
    match pattern {
        Pattern::Own | Pattern::Interleaved => 1,
        Pattern::SamePage | Pattern::Staggered => n as u32,
    }
}

pub fn run(ctx: &Ctx, step: &Step, label: &str) -> StepResult {
    let Step::Cpu {
        at,
        len,
        access,
        value,
        threads,
        pattern,
        barrier,
        through,
    } = step
    else {
        unreachable!("dispatched by op")
    };
    let n = threads.get();
    if n == 0 || n > MAX_THREADS {
        return Err(bad(format!("threads: 1 to {MAX_THREADS}")));
    }
    let n = n as usize;
    let shared = matches!(pattern, Pattern::SamePage | Pattern::Staggered);
    if *barrier && !shared {
        return Err(bad(
            "barrier: only same_page or staggered threads meet per page",
        ));
    }
    if *access == Access::Inc && shared {
        return Err(bad("inc with shared pages loses updates: use atomic_inc"));
    }
    let value = u32::try_from(value.get()).map_err(|_| bad("value: 32 bits"))?;
    let (target, bases) = {
        let w = ctx.world();
        let t = w.resolve(at, len.map(|l| l.get()))?;
        let mut bases = Vec::new();
        for name in through {
            let a = w.alloc(name)?;
            let same = match (&t, &a.object) {
                (
                    Target::Mem {
                        object: Some(o),
                        obj_off,
                        ..
                    },
                    Some(ao),
                ) => Arc::ptr_eq(o, ao) && *obj_off >= a.obj_off,
                _ => false,
            };
            if !same {
                return Err(bad(format!("{name} is not another address of {}", at.name)));
            }
            let Target::Mem { obj_off, .. } = &t else {
                unreachable!()
            };
            bases.push(a.addr + (obj_off - a.obj_off));
        }
        (t, bases)
    };
    let Target::Mem {
        addr,
        len,
        object: Some(o),
        obj_off,
        ..
    } = target
    else {
        return Err(bad(format!("{}: CPU steps run on memory objects", at.name)));
    };
    if !addr.is_multiple_of(4) || !len.is_multiple_of(4) {
        return Err(bad(format!("{}: CPU steps work on whole words", at.name)));
    }
    let bases = if bases.is_empty() { vec![addr] } else { bases };
    let w0 = (obj_off / 4) as usize;
    let expect: Vec<u32> = o.shadow()[w0..w0 + (len / 4) as usize].to_vec();
    let units = units(addr, len);
    let gate = Barrier::new(n);
    let t0 = Instant::now();
    let results: Vec<Mismatch> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|t| {
                let (units, expect, gate) = (&units, &expect, &gate);
                let base = bases[t % bases.len()];
                let order = plan(*pattern, t, n, units.len());
                let access = *access;
                let barrier = *barrier;
                s.spawn(move || {
                    let mut m = Mismatch::default();
                    for u in order {
                        if barrier {
                            gate.wait();
                        }
                        let (a, b) = units[u];
                        // SAFETY: `base` maps the range (the caller's
                        // scenario keeps it mapped during the step).
                        unsafe { touch_unit(base, a, b, access, value, expect, &mut m) };
                    }
                    m
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join().unwrap_or(Mismatch {
                    bad: u64::MAX,
                    first: None,
                })
            })
            .collect()
    });
    let elapsed = t0.elapsed();
    let mut m = Mismatch::default();
    for r in results {
        m.merge(r);
    }
    update_shadow(
        &mut o.shadow()[w0..w0 + expect.len()],
        *access,
        value,
        visits(*pattern, n),
    );
    let checked = matches!(access, Access::Read | Access::Touch);
    let words = match access {
        Access::Touch => units.len() * n,
        _ => expect.len() * visits(*pattern, n) as usize,
    };
    let detail = format!(
        "{access:?} by {n} threads ({pattern:?}) over {} ({} bytes) in {:.1} ms: {}",
        at.name,
        len,
        elapsed.as_secs_f64() * 1e3,
        if checked {
            m.describe(words)
        } else {
            format!("{words} words written")
        }
    );
    ctx.report.check(m.bad == 0, label, &detail);
    Ok(())
}

/// One unit (words `a..b` from `base`) by one thread.
///
/// # Safety
/// `base + 4 * b` must be inside memory mapped for the access.
unsafe fn touch_unit(
    base: u64,
    a: usize,
    b: usize,
    access: Access,
    value: u32,
    expect: &[u32],
    m: &mut Mismatch,
) {
    let p = base as *mut u32;
    // SAFETY (every access below): inside the unit the caller vouches for;
    // volatile or atomic because the pager and other threads share it.
    unsafe {
        match access {
            Access::Read => {
                for (i, want) in expect.iter().enumerate().take(b).skip(a) {
                    let got = std::ptr::read_volatile(p.add(i));
                    if got != *want {
                        m.add(i, got, *want);
                    }
                }
            }
            Access::Touch => {
                let got = std::ptr::read_volatile(p.add(a));
                if got != expect[a] {
                    m.add(a, got, expect[a]);
                }
            }
            Access::Write => (a..b).for_each(|i| std::ptr::write_volatile(p.add(i), value)),
            Access::Inc => (a..b).for_each(|i| {
                let v = std::ptr::read_volatile(p.add(i));
                std::ptr::write_volatile(p.add(i), v.wrapping_add(value));
            }),
            Access::AtomicInc => (a..b).for_each(|i| {
                AtomicU32::from_ptr(p.add(i)).fetch_add(value, Ordering::AcqRel);
            }),
        }
    }
}

/// What the step did to every word, applied to the shadow.
pub fn update_shadow(words: &mut [u32], access: Access, value: u32, visits: u32) {
    match access {
        Access::Read | Access::Touch => {}
        Access::Write => words.iter_mut().for_each(|w| *w = value),
        Access::Inc | Access::AtomicInc => words
            .iter_mut()
            .for_each(|w| *w = w.wrapping_add(value.wrapping_mul(visits))),
    }
}

/// `wait_word`: polls a word until it holds the value or the step's bound
/// (less a margin, so the check is reported before the runner's deadline)
/// has passed.
pub fn wait_word(ctx: &Ctx, step: &Step, label: &str, bound: std::time::Duration) -> StepResult {
    let Step::WaitWord { at, value } = step else {
        unreachable!("dispatched by op")
    };
    let want = u32::try_from(value.get()).map_err(|_| bad("value: 32 bits"))?;
    let t = ctx.world().resolve(at, Some(4))?;
    if !t.addr().is_multiple_of(4) || matches!(t, Target::Bo { .. }) {
        return Err(bad(format!("{}: a word the CPU can read", at.name)));
    }
    let t0 = Instant::now();
    let give_up = bound.mul_f64(0.8);
    loop {
        // SAFETY: a mapped word of this scenario's memory.
        let got = unsafe { std::ptr::read_volatile(t.addr() as *const u32) };
        if got == want {
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            ctx.report.check(
                true,
                label,
                &format!("{} reached {want:#x} after {ms:.1} ms", at.name),
            );
            return Ok(());
        }
        if t0.elapsed() > give_up {
            ctx.report.check(
                false,
                label,
                &format!("{} is {got:#x}, never {want:#x} in {give_up:?}", at.name),
            );
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_follow_page_boundaries() {
        assert_eq!(units(0x1000, 8192), vec![(0, 1024), (1024, 2048)]);
        assert_eq!(units(0x1ff0, 32), vec![(0, 4), (4, 8)]);
    }

    #[test]
    fn every_pattern_covers_every_page() {
        for p in [
            Pattern::Own,
            Pattern::Interleaved,
            Pattern::SamePage,
            Pattern::Staggered,
        ] {
            let mut seen = vec![0u32; 10];
            for t in 0..3 {
                for u in plan(p, t, 3, 10) {
                    seen[u] += 1;
                }
            }
            assert!(seen.iter().all(|s| *s == visits(p, 3)), "{p:?}: {seen:?}");
        }
        assert_eq!(plan(Pattern::Staggered, 1, 2, 4), vec![2, 3, 0, 1]);
    }

    #[test]
    fn the_shadow_follows_the_threads() {
        let mut w = vec![1u32; 4];
        update_shadow(&mut w, Access::AtomicInc, 2, 3);
        assert_eq!(w, vec![7; 4]);
        update_shadow(&mut w, Access::Write, 5, 3);
        assert_eq!(w, vec![5; 4]);
        update_shadow(&mut w, Access::Read, 9, 3);
        assert_eq!(w, vec![5; 4]);
    }
}
