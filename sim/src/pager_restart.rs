//! Issue 14's "server restarts" fault for the pager: it is killed at a
//! point the schedule picks, and its next generation takes over from the
//! journal, the keeper's descriptors and the GPU server's frames, while
//! GPU and CPU faults go on.
//!
//! What dies with it, as with the process: its endpoints (queued calls
//! answer nothing, and a call it was serving answers nothing either:
//! `SimPager::call`), and every side effect it has not made yet (its
//! runtime checks `SimRuntime::dead` before each, `pager.rs`). Its threads
//! run on only to find that out: `Core::shut_down` stops its spaces and
//! undoes its collects, so none waits on a page lock that only a dead
//! collect held, and closes its journal.
//!
//! What survives: the machine's memory (the memfds: a page with data, or
//! a hole a finalize punched), the CPU's mappings and write protection,
//! the keeper's duplicates of the object memory and fault channels, the
//! journal's words, and the GPU server with its frames. A CPU fault that
//! finds the pager dead waits for the next generation (the kernel holds
//! it while the keeper holds the fault channel); a GPU fault whose collect
//! or finalize was cut replays once the next generation serves, and a
//! finalize cut keeps its frames (`FinalizeError::Restarted`).
//!
//! The new generation runs the pager's real take-over
//! (`Core::rebuild`, `pager/src/core/rebuild.rs`) before it is wired to
//! anyone. Page states come from the memory (data or hole) and the GPU
//! server's `Frames` answer, never from the dead generation's table.

use pager::sync::lock;
use shuttle::sync::{Arc, Mutex};
use shuttle::thread::spawn;

use crate::machine::Machine;
use crate::net::Endpoint;
use crate::pager::{new_core, CpuView, PagerEnds, PagerGen, SimPager, CLIENT};
use crate::scenarios::{
    evictions, finish, gpu_pass, gpu_passes, join, restarter, start, view, world, Scenario,
};
use crate::world::{World, WorldConfig};

impl World {
    /// Kills the pager and starts its next generation; returns that
    /// generation. Callers that find the old one dead meanwhile wait for
    /// this to end (`SimPager::wait_for_restart`).
    pub fn restart_pager(&self) -> u32 {
        let p = &self.pager;
        let _restarting = lock(&p.outlives.pager_gate);
        let old = p.now();
        let generation = old.core.cfg.generation + 1;
        kill(&old, &p.ends());
        let (migrate, mut threads) = Endpoint::start("pager-migrate", 2);
        let (reclaim, more) = Endpoint::start("pager-reclaim", 1);
        threads.extend(more);
        let next = take_over(p, &self.machine, &old, generation);
        p.replace(
            next,
            PagerEnds {
                migrate: migrate.clone(),
                reclaim: reclaim.clone(),
            },
        );
        let mut r = self.restarted.lock().unwrap_or_else(|e| e.into_inner());
        r.endpoints.extend([migrate, reclaim]);
        r.threads.extend(threads);
        r.pagers.push(old);
        generation
    }
}

/// The pager dies wherever it was: from here on nothing it does lands
/// (its runtime is dead first, so no effect follows the kill), its
/// endpoints answer nothing, and its threads run out.
fn kill(old: &PagerGen, ends: &PagerEnds) {
    old.core
        .rt
        .dead
        .store(true, std::sync::atomic::Ordering::Release);
    ends.migrate.kill();
    ends.reclaim.kill();
    old.core.shut_down();
}

/// Generation `generation` takes over from what outlived `old`: every
/// record is restored (none may be dropped: nothing in these worlds is
/// refused), and the victim's CPU views are served by the restored spaces.
fn take_over(p: &SimPager, machine: &Arc<Machine>, old: &PagerGen, generation: u32) -> PagerGen {
    let (core, records) = new_core(machine.clone(), &p.outlives, p.config(generation));
    let mut kept = p.outlives.hand_over();
    let rebuilt = core
        .rebuild(&records, &mut |k| kept.remove(&k.key()))
        .expect("the take-over");
    assert_eq!(
        rebuilt.dropped, 0,
        "generation {generation} dropped records: {rebuilt:?}"
    );
    p.outlives.drop_kept(kept.into_keys());
    let victim = core.find_client(CLIENT).expect("the victim's session");
    let object = victim
        .object(p.object_id())
        .expect("the victim's object under its id");
    let spaces = victim.spaces();
    let views = lock(&old.views)
        .iter()
        .map(|v| {
            v.as_ref().map(|v| CpuView {
                space: spaces
                    .iter()
                    .find(|s| s.id == v.space.id)
                    .expect("each CPU view's space, restored")
                    .clone(),
                base: v.base,
            })
        })
        .collect();
    PagerGen {
        core,
        victim,
        object,
        views: Mutex::new(views),
    }
}

/// The actor that kills the pager `kills` times.
fn killer(w: &Arc<World>, kills: u32, spacing: u32) -> shuttle::thread::JoinHandle<()> {
    restarter(w, kills, spacing, World::restart_pager)
}

/// The scenarios of this fault.
pub fn all() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "pager_restarts",
            about: "the pager is killed while a GPU pass and two CPU threads move every page \
                    both ways; its next generation takes over from the journal, the keeper \
                    and the GPU server's frames",
            run: pager_restarts,
        },
        Scenario {
            name: "pager_restarts_mid_eviction",
            about: "the pager is killed while mm-server evicts from a nearly full VRAM and GPU \
                    and CPU faults move the same pages",
            run: pager_restarts_mid_eviction,
        },
        Scenario {
            name: "pager_restarts_twice",
            about: "two pager kills, one after the other, under a GPU pass and CPU reads",
            run: pager_restarts_twice,
        },
    ]
}

fn journaled(pages: usize, broker: Option<u64>) -> Arc<World> {
    world(WorldConfig {
        pages,
        broker,
        pager_journal: true,
        ..Default::default()
    })
}

/// The pager's records at the end, as a next generation would find them:
/// the GPU server's session, the victim's object, space and view, each
/// once (none leaked, none lost).
fn records_whole(w: &World) {
    let words = w.pager.outlives.journal.expect("a journal");
    let (_, records) = pager::journal::Journal::open(words);
    assert_eq!(
        records.len(),
        4,
        "the journal holds the GPU, object, space and view: {records:?}"
    );
}

/// Pages in VRAM when the kill comes at a point the seed picks: in a
/// collect or a finalize, a copy back, an invalidation, a CPU fault. No
/// increment is lost or made twice, no page stays locked, every VRAM
/// frame a page is in is allocated and counted once (`World::finish`),
/// and the new generation serves a last GPU pass.
fn pager_restarts() {
    let w = journaled(6, None);
    gpu_pass(&w);
    let killer = killer(&w, 1, 12);
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
    records_whole(&w);
    finish(w, |p| start(p) + 4);
}

/// The kill may land in an eviction pass (mm-server's `Evict`, the copy
/// back it drives) or while a GPU fault waits in mm-server for room.
fn pager_restarts_mid_eviction() {
    let w = journaled(6, Some(3));
    gpu_pass(&w);
    let mm = evictions(&w, 2);
    let killer = killer(&w, 1, 10);
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
    records_whole(&w);
    finish(w, |p| start(p) + 3);
}

/// A second kill may come while the first successor's take-over or its
/// first faults run.
fn pager_restarts_twice() {
    let w = journaled(4, None);
    gpu_pass(&w);
    let killer = killer(&w, 2, 6);
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
    records_whole(&w);
    finish(w, |p| start(p) + 2);
}
