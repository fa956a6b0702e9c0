//! Issue 14's "server restarts" fault for the GPU server: it is killed at
//! a point the schedule picks, and its next generation takes over from
//! the pager's page states, while GPU and CPU faults go on.
//!
//! What dies with it, as with the process: its endpoints (queued calls
//! answer nothing, `net.rs`), and what the device did for it: the device
//! resets to a new driver epoch ([`Machine::reset`]), which drops its
//! page tables and stops its copies, so nothing it still asks of the
//! device lands. What survives: VRAM's data and the pager's session with
//! the GPU server (the objects keep their ids). What still reaches the
//! pager from it is what sat in its socket: a collect or finalize of the
//! old generation, which the pager fences (`pager::core::resident`).
//!
//! The new generation's core runs its real take-over
//! (`Inner::take_over`: `Resident`, then adoption) before it is wired to
//! anyone; then the client, whose VM went with the old server, makes
//! another and binds its view again.
//!
//! [`Machine::reset`]: crate::machine::Machine::reset

use shuttle::sync::Arc;
use shuttle::thread::spawn;
use xe_svm::server::Inner;

use crate::machine::{PAGE, STAGING_BASE, STAGING_SLOTS};
use crate::net::Endpoint;
use crate::platform::SimPlatform;
use crate::scenarios::{
    evictions, finish, gpu_pass, gpu_passes, join, restarter, start, view, world, Scenario,
};
use crate::world::{bind_client_view, GpuSide, World, WorldConfig};
use crate::GpuCore;

impl World {
    /// Kills the GPU server and starts its next generation; returns that
    /// generation. Callers that find the old one dead meanwhile wait for
    /// this to end (`SimRuntime::wait_for_gpu`).
    pub fn restart_gpu(&self) -> u32 {
        let pager_core = self.pager.core();
        let rt = &pager_core.rt;
        let _restarting = pager::sync::lock(&rt.outlives.gpu_gate);
        let old = self.side();
        let generation = old.core.generation() + 1;
        let (old_notify, mm) = {
            let (_, notify) = rt.gpu.get().expect("a GPU server");
            (notify, old.core.hw.mm())
        };
        old.faults.kill();
        old_notify.kill();
        // It dies wherever it was: from here on, what it asks of the
        // device or the pager fails (`SimPlatform::live`), as a dead
        // process sends nothing more. A collect it sent already may still
        // be served, after the new generation's `Resident` or before, and
        // a reply it sent may still arrive. Its threads run on only to
        // find that out (joined at the end).
        let epoch = self.machine.reset();
        let dying =
            std::mem::take(&mut *self.gpu_threads.lock().unwrap_or_else(|e| e.into_inner()));
        let (notify, mut threads) = Endpoint::start("gpu-notify", 2);
        let (faults, fault_threads) = Endpoint::start("gpu-faults", 1);
        threads.extend(fault_threads);
        let core = self.next_core(epoch, mm);
        let adopted = core.take_over(generation).expect("the take-over");
        assert_eq!(
            adopted.refused, 0,
            "generation {generation} refused pages: {adopted:?}"
        );
        core.attach_staging(STAGING_BASE, STAGING_SLOTS as u64 * 512 * PAGE);
        self.refill(&core);
        rt.gpu.set((Arc::downgrade(&core), notify.clone()));
        if let Some(mm) = &self.mm {
            mm.worlds.gpu.set(Arc::downgrade(&core));
        }
        let at = self.gpu_base.load(std::sync::atomic::Ordering::Acquire);
        let (vm, vm_id) = bind_client_view(&core, &self.pager, at, false);
        self.side.set(GpuSide {
            core,
            faults: faults.clone(),
            vm,
            vm_id,
        });
        *self.gpu_threads.lock().unwrap_or_else(|e| e.into_inner()) = threads;
        let mut r = self.restarted.lock().unwrap_or_else(|e| e.into_inner());
        r.endpoints.extend([notify, faults]);
        r.threads.extend(dying);
        r.cores.push(old.core);
        generation
    }

    /// The other users' VRAM (the filler) is held in the new allocator
    /// too, so the pressure a scenario set up outlives the restart.
    fn refill(&self, core: &GpuCore) {
        let mut filler = self.filler.lock().unwrap_or_else(|e| e.into_inner());
        let held = filler.len();
        *filler = (0..held).filter_map(|_| core.vram.alloc(0).ok()).collect();
        assert_eq!(
            filler.len(),
            held,
            "the filler fits beside the adopted pages"
        );
    }

    /// A fresh core over the same machine, the device at `epoch`, calling
    /// the same pager and mm-server.
    fn next_core(
        &self,
        epoch: u32,
        mm: Option<(Arc<Endpoint>, Arc<crate::platform::Mm>)>,
    ) -> Arc<GpuCore> {
        let hw = SimPlatform {
            machine: self.machine.clone(),
            pager: self.pager.clone(),
            pressure: shuttle::sync::Mutex::new(mm),
            jobs: Default::default(),
            epoch,
            gpu: 0,
        };
        let pages = self.machine.vram(0).len() as u64;
        let budget = self.gpu_budget.clone();
        let arena = xe_svm::arena::Config::for_clients(budget.clone(), 4)
            .arena()
            .expect("the GPU core's metadata arena");
        Arc::new(Inner::with_arena(hw, 0, pages, budget, arena))
    }
}

/// One server's restart fault, as the scenario bodies below play it
/// (the pager's is in `pager_restart.rs`).
pub(crate) struct Fault {
    /// Kills the server and starts its next generation; returns that
    /// generation.
    pub restart: fn(&World) -> u32,
    /// The world journals the pager (its restarts take over from it).
    pub pager_journal: bool,
    /// Checked once the actors are done, before `World::finish`.
    pub check: fn(&World),
}

const GPU_SERVER: Fault = Fault {
    restart: World::restart_gpu,
    pager_journal: false,
    check: |_| {},
};

/// The scenarios of this fault.
pub fn all() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "gpu_server_restarts",
            about: "the GPU server is killed while a GPU pass and two CPU threads move every \
                    page both ways; its next generation adopts what VRAM holds",
            run: || while_pages_move(&GPU_SERVER),
        },
        Scenario {
            name: "gpu_server_restarts_mid_eviction",
            about: "the GPU server is killed while mm-server evicts from a nearly full VRAM and \
                    GPU and CPU faults move the same pages",
            run: || mid_eviction(&GPU_SERVER),
        },
        Scenario {
            name: "gpu_server_restarts_twice",
            about: "two GPU server kills, one after the other, under a GPU pass and CPU reads",
            run: || twice(&GPU_SERVER),
        },
    ]
}

fn restartable(f: &Fault, pages: usize, broker: Option<u64>) -> Arc<World> {
    world(WorldConfig {
        pages,
        broker,
        pager_journal: f.pager_journal,
        ..Default::default()
    })
}

/// Pages in VRAM when the kill comes at a point the seed picks: in a
/// collect, a copy either way, a finalize, an invalidation, a CPU fault.
/// No increment is lost or made twice, no page stays locked, every VRAM
/// frame a page is in is allocated and counted once (`World::finish`), and
/// the new generation serves a last GPU pass.
pub(crate) fn while_pages_move(f: &Fault) {
    let w = restartable(f, 6, None);
    gpu_pass(&w);
    let killer = restarter(&w, 1, 12, f.restart);
    let gpu = gpu_passes(&w, 1);
    let cpus: Vec<_> = (0..2usize)
        .map(|t| {
            let w = w.clone();
            spawn(move || {
                for p in (t..w.machine.pages).step_by(2) {
                    w.cpu_access(&view(0), p, 1);
                }
            })
        })
        .collect();
    join([killer, gpu].into_iter().chain(cpus).collect());
    gpu_pass(&w);
    (f.check)(&w);
    finish(w, |p| start(p) + 4);
}

/// The kill may land in an eviction pass (mm-server's `Evict` to the
/// pager, the copy back it drives) or in a GPU fault waiting in mm-server
/// for room: rules 5 to 7 hold across it.
pub(crate) fn mid_eviction(f: &Fault) {
    let w = restartable(f, 6, Some(3));
    gpu_pass(&w);
    let mm = evictions(&w, 2);
    let killer = restarter(&w, 1, 10, f.restart);
    let gpu = gpu_passes(&w, 1);
    let cpu = {
        let w = w.clone();
        spawn(move || {
            for p in (0..w.machine.pages).rev() {
                w.cpu_access(&view(0), p, 1);
            }
        })
    };
    join(vec![mm, killer, gpu, cpu]);
    (f.check)(&w);
    finish(w, |p| start(p) + 3);
}

/// A second kill may come while the first successor's take-over or its
/// first faults run.
pub(crate) fn twice(f: &Fault) {
    let w = restartable(f, 4, None);
    gpu_pass(&w);
    let killer = restarter(&w, 2, 6, f.restart);
    let gpu = gpu_passes(&w, 1);
    let cpu = {
        let w = w.clone();
        spawn(move || {
            for p in (0..w.machine.pages).rev() {
                let v = w.cpu_access(&view(0), p, 0);
                assert!(v == start(p) + 1 || v == start(p) + 2, "page {p} read {v}");
            }
        })
    };
    join(vec![killer, gpu, cpu]);
    (f.check)(&w);
    finish(w, |p| start(p) + 2);
}
