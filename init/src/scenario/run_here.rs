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
    if inst.device.gpus != 1 {
        report.emit(Event::Error {
            what: format!(
                "{} GPUs: one GPU server per device is issue 17; this system has one",
                inst.device.gpus
            ),
        });
        return report;
    }
    let mut opts = BootOptions::default();
    opts.device.vram_bytes = inst.device.vram.get();
    opts.device.hw_threads = inst.device.hw_threads;
    opts.device.inject.fail_copy_every = inst.device.fail_copy_every;
    opts.clients = inst.device.clients;
    if inst.device.thrash_hold {
        opts.pager_args.push("--thrash=on".into());
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
        ctx.conn(v.client)?.gpu.call(DestroyVm { vm: v.id })?;
    }
    let bos: Vec<_> = std::mem::take(&mut ctx.world().bos).into_values().collect();
    for b in bos {
        ctx.conn(b.client)?.gpu.call(DestroyBo { bo: b.id })?;
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
    loop {
        match ctx.clients.own.gpu.call(Stats {}) {
            Ok(s) if s.vram_used == 0 => {
                ctx.report
                    .check(true, "teardown", "everything released, no VRAM left in use");
                return;
            }
            Ok(s) if Instant::now() >= deadline => {
                ctx.report.check(
                    false,
                    "teardown",
                    &format!("{} bytes of VRAM still in use after release", s.vram_used),
                );
                return;
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                ctx.report.check(false, "teardown", &format!("Stats: {e}"));
                return;
            }
        }
    }
}
