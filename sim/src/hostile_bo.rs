//! The BO world under a hostile client (issue 12), on the same core the
//! GPU server runs (`xe_svm::bo`, its reservation locks on the sync shim).
//!
//! The victim runs its SVM race and jobs on a buffer object of its own;
//! beside it a hostile client creates buffer objects past its budget,
//! names the victim's VM and object, maps at addresses that wrap, runs
//! jobs on its own objects, and exits at a random moment, maybe with a job
//! still running, after destroying one of its objects (refused while a job
//! uses it); mm-server presses both worlds meanwhile (VRAM is nearly
//! full). In every schedule: each hostile call gets a typed error, the
//! victim's buffer object holds exactly one increment per job and its SVM
//! pages their exact data, no job reaches VRAM that was given back, and
//! once the hostile client is gone nothing of it is left (its objects,
//! VRAM, quotas, page tables).

use ipc_protocol::interfaces::gpu::GpuError;
use shuttle::rand::{thread_rng, Rng};
use shuttle::sync::Arc;
use shuttle::thread::{spawn, JoinHandle};
use std::sync::atomic::Ordering;
use xe_svm::budget::GpuBudget;

use crate::hostile::{finish, join, victim, world, HOSTILE};
use crate::machine::PAGE;
use crate::pager::CLIENT;
use crate::scenarios::{start, Scenario};
use crate::world::{World, WorldConfig};

/// Where each client maps its buffer objects in its VM (away from the
/// victim's SVM binding at `GPU_BASE`).
const BO_VA: u64 = 0x6000_0000;
/// Pages of each buffer object.
const BO_PAGES: u64 = 4;
/// Jobs each client runs.
const JOBS: u64 = 3;
/// The hostile client's buffer objects (its `bos` budget).
const HOSTILE_BOS: u64 = 2;

pub fn all() -> Vec<Scenario> {
    vec![Scenario {
        name: "hostile_bos_race_the_victim",
        about: "a hostile client floods buffer objects past its budget, forges ids and \
                wrapping addresses, runs jobs and exits mid-job, while the victim's jobs \
                and SVM race and mm-server evicts both worlds",
        run: hostile_bos_race_the_victim,
    }]
}

fn hostile_bos_race_the_victim() {
    let w = world(WorldConfig {
        pages: 8,
        broker: Some(16),
        gpu_budget: GpuBudget {
            bos: HOSTILE_BOS,
            bo_bytes: HOSTILE_BOS * BO_PAGES * PAGE,
            ..GpuBudget::default()
        },
        ..Default::default()
    });
    let victim_bo = w
        .gpu()
        .create_bo(CLIENT, BO_PAGES * PAGE)
        .expect("the victim's object");
    w.gpu()
        .map_bo(CLIENT, w.vm_id(), victim_bo, BO_VA)
        .expect("the victim maps it");
    let (hostile_vm, hostile_asid) = hostile_vm(&w);
    hostile_forges(&w, victim_bo, hostile_vm);
    let session = w.gpu().session(HOSTILE);
    let mut hs = victim(&w);
    hs.push(jobs(&w, w.vm(), 1, true));
    hs.push(jobs(&w, hostile_asid, HOSTILE_BOS, false));
    hs.push(press(&w));
    let exit = {
        let w = w.clone();
        spawn(move || {
            // Its last object goes mid-run: refused while a job uses it.
            if let Some(&bo) = w.gpu().bos.ids_of(HOSTILE).last() {
                let r = w.gpu().destroy_bo(HOSTILE, bo);
                assert!(matches!(r, Ok(()) | Err(GpuError::Busy)), "destroy: {r:?}");
            }
            if thread_rng().gen_bool(0.5) {
                w.gpu().end_session(HOSTILE);
            }
        })
    };
    join(hs);
    exit.join().expect("the hostile exit");
    w.gpu().end_session(HOSTILE);
    nothing_hostile_is_left(&w, &session, hostile_asid);
    victim_bo_is_exact(&w, victim_bo);
    w.gpu()
        .destroy_bo(CLIENT, victim_bo)
        .expect("the victim frees its object");
    finish(w, |p| start(p) + 2);
}

/// The hostile client's VM; its id and ASID.
fn hostile_vm(w: &World) -> (u32, u32) {
    let vm = w.gpu().create_vm(HOSTILE).expect("a hostile VM");
    (vm, w.gpu().asid_of(HOSTILE, vm).expect("its ASID"))
}

/// Creates the hostile objects (up to its budget, and past it), maps
/// them, and sends what is not its own or does not fit: each a typed
/// error, nothing of the victim's touched.
fn hostile_forges(w: &World, victim_bo: u32, vm: u32) {
    let g = &w.gpu();
    for i in 0..HOSTILE_BOS {
        let bo = g
            .create_bo(HOSTILE, BO_PAGES * PAGE)
            .expect("within its budget");
        g.map_bo(HOSTILE, vm, bo, BO_VA + i * BO_PAGES * PAGE)
            .expect("mapped in its VM");
    }
    assert_eq!(g.create_bo(HOSTILE, PAGE), Err(GpuError::OverBudget));
    assert!(g.create_bo(HOSTILE, u64::MAX & !(PAGE - 1)).is_err());
    assert_eq!(g.create_bo(HOSTILE, PAGE + 1), Err(GpuError::BadRange));
    assert_eq!(g.destroy_bo(HOSTILE, victim_bo), Err(GpuError::NoSuchBo));
    let read = g.read_bo_with(HOSTILE, victim_bo, |_, _| Ok(()));
    assert_eq!(read, Err(GpuError::NoSuchBo));
    let own = g.bos.ids_of(HOSTILE)[0];
    assert_eq!(
        g.map_bo(HOSTILE, w.vm_id(), own, 0),
        Err(GpuError::NoSuchVm)
    );
    assert_eq!(g.map_bo(CLIENT, w.vm_id(), own, 0), Err(GpuError::NoSuchBo));
    assert_eq!(
        g.map_bo(HOSTILE, vm, own, u64::MAX - PAGE + 1),
        Err(GpuError::BadRange)
    );
    assert_eq!(
        g.map_bo(HOSTILE, vm, own, BO_VA),
        Err(GpuError::AddressInUse)
    );
}

/// An actor that runs `JOBS` jobs on the `objects` buffer objects mapped
/// at `BO_VA` of VM `asid`: each places them (restoring evicted chunks),
/// adds 1 to every page, and retires. `must_run`: the owner stays, so
/// every job must run (the hostile client's stop once it is gone).
fn jobs(w: &Arc<World>, asid: u32, objects: u64, must_run: bool) -> JoinHandle<()> {
    let w = w.clone();
    spawn(move || {
        let len = objects * BO_PAGES * PAGE;
        for _ in 0..JOBS {
            let sim_jobs = &w.gpu().hw.jobs;
            let job = w.gpu().submit_with_bos(asid, BO_VA, len, || {
                let job = sim_jobs.start();
                Ok((job, job))
            });
            let job = match job {
                Ok(job) => job,
                Err(e) => {
                    assert!(!must_run, "the victim's job was refused: {e:?}");
                    return;
                }
            };
            let mut ran = true;
            for va in (BO_VA..BO_VA + len).step_by(PAGE as usize) {
                let holds = |f| w.gpu().vram.holds(f);
                ran &= w.machine.bo_access(asid, va, 1, holds).is_some();
            }
            sim_jobs.retire(job);
            assert!(
                ran || !must_run,
                "the victim's job found its object unmapped"
            );
            if !ran {
                return;
            }
        }
    })
}

/// mm-server: two eviction passes, each pressing both worlds.
fn press(w: &Arc<World>) -> JoinHandle<()> {
    let mm = w.mm.clone().expect("a broker");
    spawn(move || {
        for _ in 0..2 {
            mm.reserve(BO_PAGES * PAGE);
        }
    })
}

/// The hostile client is gone: no object, quota, page table or VRAM of it.
fn nothing_hostile_is_left(w: &World, session: &xe_svm::session::GpuSession, asid: u32) {
    assert!(
        w.gpu().sessions.find(HOSTILE).is_none(),
        "the hostile session outlived its end"
    );
    assert!(
        w.gpu().bos.ids_of(HOSTILE).is_empty(),
        "a hostile object survived"
    );
    let held: Vec<_> = session
        .quotas
        .usage()
        .filter(|(_, used, _)| *used > 0)
        .collect();
    assert!(
        held.is_empty(),
        "the hostile client's budget did not come back: {held:?}"
    );
    assert!(
        w.machine.ptes(asid).is_empty(),
        "the hostile VM's PTEs survived"
    );
    let (count, _) = w.gpu().bos.count();
    assert_eq!(count, 1, "objects other than the victim's are left");
}

/// Every page of the victim's object holds one increment per job.
fn victim_bo_is_exact(w: &World, bo: u32) {
    let values = w.gpu().read_bo_with(CLIENT, bo, |_, runs| {
        let mut v = Vec::new();
        for &(addr, len) in runs {
            for off in (0..len).step_by(PAGE as usize) {
                let cell = w.machine.cell(addr + off).expect("object memory");
                v.push(cell.load(Ordering::Acquire));
            }
        }
        Ok(v)
    });
    assert_eq!(
        values,
        Ok(vec![JOBS; BO_PAGES as usize]),
        "the victim's object lost a job's work"
    );
}
