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

use crate::machine::Machine;
use crate::net::Endpoint;
use crate::pager::{new_core, CpuView, PagerEnds, PagerGen, SimPager, CLIENT};
use crate::restart::{mid_eviction, twice, while_pages_move, Fault};
use crate::scenarios::Scenario;
use crate::world::World;

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

const PAGER: Fault = Fault {
    restart: World::restart_pager,
    pager_journal: true,
    check: records_whole,
};

/// The scenarios of this fault: the GPU server's (`restart.rs`), with the
/// pager killed instead.
pub fn all() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "pager_restarts",
            about: "the pager is killed while a GPU pass and two CPU threads move every page \
                    both ways; its next generation takes over from the journal, the keeper \
                    and the GPU server's frames",
            run: || while_pages_move(&PAGER),
        },
        Scenario {
            name: "pager_restarts_mid_eviction",
            about: "the pager is killed while mm-server evicts from a nearly full VRAM and GPU \
                    and CPU faults move the same pages",
            run: || mid_eviction(&PAGER),
        },
        Scenario {
            name: "pager_restarts_twice",
            about: "two pager kills, one after the other, under a GPU pass and CPU reads",
            run: || twice(&PAGER),
        },
    ]
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
