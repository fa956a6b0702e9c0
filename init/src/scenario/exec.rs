//! Running steps: conditions, expected errors, `repeat`, `parallel`, and
//! the dispatch to each kind of step (`mem_steps`, `gpu_steps`,
//! `cpu_steps`, `fork`). A failed check is recorded and the scenario goes
//! on; an error no step expected ends it.

use std::time::Duration;

use ipc_protocol::client::CallError;

use super::expand::with_var;
use super::format::{parse_step, ParsedStep, Step, DEFAULT_STEP_TIMEOUT_S};
use super::report::Event;
use super::value::condition;
use super::world::Ctx;
use super::{cpu_steps, fork, gpu_steps, mem_steps};

/// Why a step could not do what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepError {
    /// A server answered with an error or the call failed: `name` is the
    /// error's name (`NotSupported`, `Busy`, `Transport`, `Denied`...).
    Call { name: String, detail: String },
    /// A host call failed.
    Host(String),
    /// The scenario names something that does not exist, or asks for
    /// something inconsistent.
    Scenario(String),
    /// The runner cannot do this yet.
    Unsupported(String),
}

impl StepError {
    /// What `expect_error` compares with.
    pub fn name(&self) -> &str {
        match self {
            Self::Call { name, .. } => name,
            Self::Host(_) => "Host",
            Self::Scenario(_) => "Scenario",
            Self::Unsupported(_) => "Unsupported",
        }
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Call { detail, .. } => write!(f, "{detail}"),
            Self::Host(e) => write!(f, "host call failed: {e}"),
            Self::Scenario(e) => write!(f, "bad scenario: {e}"),
            Self::Unsupported(e) => write!(f, "not supported yet: {e}"),
        }
    }
}

impl<E: std::fmt::Debug> From<CallError<E>> for StepError {
    fn from(e: CallError<E>) -> Self {
        let name = match &e {
            CallError::Server(s) => format!("{s:?}"),
            CallError::Protocol(_) => "Protocol".into(),
            CallError::Denied(_) => "Denied".into(),
            CallError::Transport(_) => "Transport".into(),
            CallError::UnexpectedReply => "UnexpectedReply".into(),
        };
        StepError::Call {
            name,
            detail: e.to_string(),
        }
    }
}

pub type StepResult = Result<(), StepError>;

/// Runs the top-level steps, announcing each with its time bound.
pub fn run_top(ctx: &Ctx, steps: &[toml::Table]) -> StepResult {
    for (i, table) in steps.iter().enumerate() {
        let p = parse_step(table).map_err(StepError::Scenario)?;
        if !applies(&p)? {
            continue;
        }
        let bound = Duration::from_secs(p.common.timeout_s.unwrap_or(DEFAULT_STEP_TIMEOUT_S));
        ctx.report.emit(Event::Step {
            index: i + 1,
            op: p.step.op().to_string(),
            bound_ms: bound.as_millis() as u64,
        });
        run_one(ctx, &p, &format!("{}", i + 1), bound)?;
    }
    Ok(())
}

/// Runs nested steps (a body of `repeat`, `parallel`, `fork`); their time
/// bound is their top-level step's.
pub fn run_nested(ctx: &Ctx, steps: &[toml::Table], path: &str) -> StepResult {
    for (i, table) in steps.iter().enumerate() {
        let p = parse_step(table).map_err(StepError::Scenario)?;
        if !applies(&p)? {
            continue;
        }
        let bound = Duration::from_secs(p.common.timeout_s.unwrap_or(DEFAULT_STEP_TIMEOUT_S));
        let path = format!("{path}.{}", i + 1);
        ctx.report.emit(Event::Nested {
            path: path.clone(),
            op: p.step.op().to_string(),
        });
        run_one(ctx, &p, &path, bound)?;
    }
    Ok(())
}

fn applies(p: &ParsedStep) -> Result<bool, StepError> {
    let eval = |c: &str| condition(c).map_err(|e| StepError::Scenario(e.0));
    for c in p.common.when.list() {
        if !eval(&c)? {
            return Ok(false);
        }
    }
    for c in p.common.unless.list() {
        if eval(&c)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The label of a step's check lines.
pub fn label(p: &ParsedStep, path: &str) -> String {
    match &p.common.label {
        Some(l) => l.clone(),
        None => format!("step {path} {}", p.step.op()),
    }
}

fn run_one(ctx: &Ctx, p: &ParsedStep, path: &str, bound: Duration) -> StepResult {
    let label = label(p, path);
    let r = dispatch(ctx, &p.step, &label, path, bound);
    match (r, &p.common.expect_error) {
        (r, None) => r,
        (Err(e), Some(want)) if e.name() == want => {
            ctx.report
                .check(true, &label, &format!("failed as expected with {want}"));
            Ok(())
        }
        (Err(e), Some(want)) => {
            ctx.report
                .check(false, &label, &format!("expected error {want}, got: {e}"));
            Ok(())
        }
        (Ok(()), Some(want)) => {
            ctx.report.check(
                false,
                &label,
                &format!("expected error {want}, but it succeeded"),
            );
            Ok(())
        }
    }
}

fn dispatch(ctx: &Ctx, step: &Step, label: &str, path: &str, bound: Duration) -> StepResult {
    match step {
        Step::Alloc { .. } | Step::Free { .. } => mem_steps::alloc_or_free(ctx, step, label),
        Step::Mremap { .. }
        | Step::Munmap { .. }
        | Step::Mprotect { .. }
        | Step::Madvise { .. } => mem_steps::change_view(ctx, step),
        Step::Advise { .. } | Step::Prefetch { .. } | Step::Snapshot { .. } => {
            mem_steps::placement(ctx, step, label)
        }
        Step::Check { .. } | Step::Probe { .. } => mem_steps::check(ctx, step, label),
        Step::Vm { .. } | Step::DestroyVm { .. } | Step::Bind { .. } | Step::Unbind { .. } => {
            gpu_steps::vm_step(ctx, step)
        }
        Step::Gpu { .. } | Step::Batch { .. } | Step::WaitJob { .. } => {
            gpu_steps::submit(ctx, step, label, bound)
        }
        Step::WaitWord { .. } => cpu_steps::wait_word(ctx, step, label, bound),
        Step::Rename { alloc, to } => {
            let mut w = ctx.world();
            if w.allocs.get(to).is_some_and(|a| !a.freed) {
                return Err(StepError::Scenario(format!("allocation {to:?} exists")));
            }
            let a = w
                .allocs
                .remove(alloc)
                .ok_or_else(|| StepError::Scenario(format!("no allocation {alloc:?}")))?;
            w.allocs.insert(to.clone(), a);
            Ok(())
        }
        Step::Bo { .. } | Step::CheckBo { .. } => gpu_steps::bo_step(ctx, step, label),
        Step::Mark { .. } | Step::Counters { .. } => gpu_steps::counters(ctx, step, label),
        Step::Cpu { .. } => cpu_steps::run(ctx, step, label),
        Step::Fork { .. } => fork::run(ctx, step, label, path),
        Step::Repeat { count, var, steps } => {
            ctx.report.enter_group();
            let mut r = Ok(());
            for round in 0..count.get() {
                let body: Vec<toml::Table> =
                    steps.iter().map(|s| with_var(s, var, round)).collect();
                r = run_nested(ctx, &body, path);
                if r.is_err() {
                    break;
                }
            }
            ctx.report.leave_group();
            r
        }
        Step::Parallel {
            threads,
            var,
            steps,
            branches,
        } => parallel(ctx, threads.map(|n| n.get()), var, steps, branches, path),
        Step::FaultLog {
            vm,
            at_least,
            at_most,
        } => {
            let bounds = (at_least.get(), at_most.map(|n| n.get()));
            gpu_steps::fault_log(ctx, vm, bounds, label)
        }
        Step::Sleep { us } => {
            std::thread::sleep(Duration::from_micros(us.get().min(10_000_000)));
            Ok(())
        }
        Step::Evacuate { gpu } => gpu_steps::evacuate(ctx, *gpu, label),
    }
}

/// Most threads one `parallel` or `cpu` step may start.
pub const MAX_THREADS: u64 = 256;

fn parallel(
    ctx: &Ctx,
    threads: Option<u64>,
    var: &str,
    steps: &[toml::Table],
    branches: &[Vec<toml::Table>],
    path: &str,
) -> StepResult {
    let bodies: Vec<Vec<toml::Table>> = match threads {
        Some(n) if n > MAX_THREADS => {
            return Err(StepError::Scenario(format!(
                "{n} threads: at most {MAX_THREADS}"
            )))
        }
        Some(n) => (0..n)
            .map(|t| steps.iter().map(|s| with_var(s, var, t)).collect())
            .collect(),
        None => branches.to_vec(),
    };
    ctx.report.enter_group();
    let results: Vec<StepResult> = std::thread::scope(|s| {
        let handles: Vec<_> = bodies
            .iter()
            .map(|body| s.spawn(move || run_nested(ctx, body, path)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(StepError::Host("a thread panicked".into())))
            })
            .collect()
    });
    ctx.report.leave_group();
    results.into_iter().collect()
}
