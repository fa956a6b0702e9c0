//! One scenario in this process: boot a system with its device settings,
//! run its steps as a client, tear down what it made, check that nothing
//! leaked and every server is still up, stop the system. Events go to
//! stdout for the runner (`runner.rs`), which enforces the time bounds.

use std::time::{Duration, Instant};

use ipc_protocol::interfaces::gpu::{DestroyBo, DestroyVm, Stats};

use super::exec::{run_top, StepError};
use super::expand::Instance;
use super::mem_steps::release_object;
use super::memory;
use super::report::{Event, Reporter};
use super::world::Ctx;
use crate::supervisor::{BootOptions, System};

/// The bound of the teardown after the last step.
pub const TEARDOWN_BOUND: Duration = Duration::from_secs(30);

/// Runs `inst`; every result is in the events.
pub fn run(inst: &Instance, report: Reporter) -> Reporter {
    let mut opts = BootOptions::default();
    opts.gpus = inst.device.gpus;
    opts.device.vram_bytes = inst.device.vram.get();
    opts.device.hw_threads = inst.device.hw_threads;
    opts.device.inject.fail_copy_every = inst.device.fail_copy_every;
    opts.clients = inst.device.clients;
    if inst.device.thrash_hold {
        opts.pager_args.push("--thrash=on".into());
    }
    if let Err(e) = opts.set_fault_ahead(inst.device.fault_ahead) {
        report.emit(Event::Error {
            what: format!("[device] fault_ahead = {e}"),
        });
        return report;
    }
    let (mut system, clients) = match System::boot(&opts) {
        Ok((s, Some(c))) => (s, c),
        Ok((s, None)) => {
            s.shutdown();
            report.emit(Event::Error {
                what: "booted without clients".into(),
            });
            return report;
        }
        Err(e) => {
            report.emit(Event::Error {
                what: format!("boot failed: {e}"),
            });
            return report;
        }
    };
    let ctx = Ctx::new(clients, inst.device.clone(), report);
    match ctx.clients.own.gpu.call(Stats {}) {
        Ok(s) => {
            ctx.world().marks.insert("start".into(), s);
        }
        Err(e) => ctx.report.emit(Event::Error {
            what: format!("Stats: {e}"),
        }),
    }
    if let Err(e) = run_top(&ctx, &inst.steps) {
        ctx.report.emit(Event::Error {
            what: e.to_string(),
        });
    }
    ctx.report.emit(Event::Step {
        index: 0,
        op: "teardown".into(),
        bound_ms: TEARDOWN_BOUND.as_millis() as u64,
    });
    match teardown(&ctx) {
        Ok(()) => leak_check(&ctx),
        Err(e) => ctx.report.check(false, "teardown", &e.to_string()),
    }
    let alive = system.check_alive();
    ctx.report.check(
        alive.is_ok(),
        "teardown",
        &match alive {
            Ok(()) => "every server is still up".to_string(),
            Err(e) => e.to_string(),
        },
    );
    let Ctx {
        clients,
        extra,
        report,
        ..
    } = ctx;
    drop((clients, extra));
    let errors = system.shutdown();
    report.check(
        errors.is_empty(),
        "teardown",
        &if errors.is_empty() {
            "the system stopped cleanly".to_string()
        } else {
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        },
    );
    report
}

/// Destroys the VMs and buffer objects, releases every object and gives
/// back the reservations.
fn teardown(ctx: &Ctx) -> Result<(), StepError> {
    let vms: Vec<_> = std::mem::take(&mut ctx.world().vms).into_values().collect();
    for v in vms {
        ctx.gpu(v.client, v.gpu)?.call(DestroyVm { vm: v.id })?;
    }
    let bos: Vec<_> = std::mem::take(&mut ctx.world().bos).into_values().collect();
    for b in bos {
        ctx.gpu(b.client, b.gpu)?.call(DestroyBo { bo: b.id })?;
    }
    ctx.world().heaps.clear();
    let objects = ctx.world().objects.clone();
    for o in objects {
        release_object(ctx, &o)?;
    }
    for (addr, len) in std::mem::take(&mut ctx.world().reserved) {
        // SAFETY: our reservation; nothing refers to it any more.
        unsafe { memory::unmap(addr, len) }.map_err(StepError::Host)?;
    }
    Ok(())
}

/// With everything released, VRAM must come back to nothing in use.
fn leak_check(ctx: &Ctx) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let gpus = 0..ctx.device.gpus.max(1);
    // Every GPU's VRAM, waited for together (frees land asynchronously).
    let mut left: Vec<(u8, u64)>;
    loop {
        let mut stats = Vec::new();
        for gpu in gpus.clone() {
            match ctx.gpu(0, gpu).map(|c| c.call(Stats {})) {
                Ok(Ok(s)) => stats.push((gpu, s.vram_used)),
                Ok(Err(e)) => return ctx.report.check(false, "teardown", &format!("Stats: {e}")),
                Err(e) => return ctx.report.check(false, "teardown", &e.to_string()),
            }
        }
        left = stats.into_iter().filter(|(_, used)| *used != 0).collect();
        if left.is_empty() || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    match left.as_slice() {
        [] => ctx
            .report
            .check(true, "teardown", "everything released, no VRAM left in use"),
        [(gpu, used), ..] => ctx.report.check(
            false,
            "teardown",
            &format!("{used} bytes of GPU {gpu}'s VRAM still in use after release"),
        ),
    }
}
