//! Several GPUs (issue 17): four GPU servers (the real
//! `xe_svm::server::Inner`, one per GPU, each on its own device with a
//! peer window on the others' VRAM, `gpus.rs`) under the one pager, and
//! eight CPU threads and four GPU hardware threads (one per GPU) that
//! fault the pages of one chunk in different orders. No lock covers a
//! range or a device: a page moves under its own lock alone, between RAM
//! and a GPU or straight from one GPU's VRAM into another's (the pager
//! has the source push it through its peer window), so racing faults
//! cannot wait on each other or livelock on the chunk.
//!
//! Checked in every schedule:
//! - every fault completes within its bound (a GPU access within
//!   `GPU_FAULT_RETRIES` faults, a CPU one within the pager's, the run
//!   within shuttle's step bound);
//! - exact data: each actor's writes count in a field of their own of the
//!   page's value, so every access checks that it sees every write its
//!   actor made there (reads see the last write), every write it saw there
//!   before, and no write nobody made; at the end every page holds exactly
//!   its writes, wherever it lives (every word: a page is one word here);
//! - a GPU's access always lands in its own VRAM (the page moved to it);
//! - pages move GPU to GPU without RAM: first GPU 1 takes every page from
//!   GPU 0's VRAM, which the machine counts as pushes through the window,
//!   with nothing copied out of or into VRAM otherwise; and every copy
//!   into a peer's VRAM comes from the copier's own (`Machine::copy`);
//! - rule 8 on every GPU (no mapping used or left older than that GPU's
//!   last acknowledged invalidation of the page, none pointing where the
//!   page is not) and rule 6 on every GPU's VRAM (`World::finish`).

use std::sync::atomic::{AtomicU64, Ordering};

use pager::state::Residency;
use shuttle::thread::spawn;

use crate::machine::Reached;
use crate::scenarios::{finish, join, start, world, Scenario};
use crate::world::{World, WorldConfig};

const GPUS: u8 = 4;
const CPUS: usize = 8;
/// The chunk's pages the actors fault.
const PAGES: usize = 6;
/// Pages each CPU thread writes.
const CPU_PAGES: usize = 3;
/// CPU threads first, then one hardware thread per GPU.
const ACTORS: usize = CPUS + GPUS as usize;
/// Bits of a page's value that count one actor's writes there.
const FIELD: usize = 4;

pub fn all() -> Vec<Scenario> {
    vec![Scenario {
        name: "four_gpus_eight_cpus_one_chunk",
        about: "four GPU servers and eight CPU threads fault one chunk's pages in different \
                orders, with no migration lock; pages move VRAM to VRAM between GPUs",
        run: four_gpus_eight_cpus_one_chunk,
    }]
}

fn four_gpus_eight_cpus_one_chunk() {
    four_gpus_with(WorldConfig::default());
}

/// The scenario on a world made from `cfg` (the negative check breaks
/// its peer window).
pub fn four_gpus_with(cfg: WorldConfig) {
    let w = world(WorldConfig {
        pages: PAGES,
        gpus: GPUS,
        ..cfg
    });
    every_page_to(&w, 0);
    let before = copies(&w);
    every_page_to(&w, 1);
    let after = copies(&w);
    assert_eq!(
        after,
        (before.0 + PAGES as u64, before.1, before.2),
        "GPU 1 took the pages from GPU 0's VRAM other than by pushes (peer, out, in)"
    );
    let hs = (0..ACTORS)
        .map(|a| {
            let w = w.clone();
            spawn(move || play(&w, a))
        })
        .collect();
    join(hs);
    finish(w, expect);
}

/// GPU `gpu` adds 1 to every page (the set-up passes, before the race,
/// GPU 0's then GPU 1's): each lands in its VRAM, sees every write before
/// it, and stays there.
fn every_page_to(w: &World, gpu: u8) {
    for p in 0..PAGES {
        let (v, reached) = w.gpu_access_on(gpu, p, 1);
        assert_eq!(
            reached,
            Reached::Vram(gpu),
            "GPU {gpu}'s access to page {p}"
        );
        let want = start(p) + 1 + u64::from(gpu);
        assert_eq!(v, want, "GPU {gpu}: page {p} read {v:#x}, not {want:#x}");
    }
    let table = w.pager.table();
    for p in 0..PAGES {
        let r = table.info(p).expect("page in range").residency;
        assert!(
            matches!(r, Residency::Device { gpu: g, .. } if g == gpu),
            "page {p} is {r:?}, not on GPU {gpu}"
        );
    }
}

/// Pages the copy engines moved: (VRAM to a peer's, out of VRAM, into
/// VRAM).
fn copies(w: &World) -> (u64, u64, u64) {
    let c = &w.machine.copies;
    let n = |a: &AtomicU64| a.load(Ordering::Acquire);
    (n(&c.peer), n(&c.out_of_vram), n(&c.into_vram))
}

/// Actor `a` writes each of its pages once, in its order, then reads them
/// back in the same order; every value it sees is checked against the
/// last one it saw there.
fn play(w: &World, a: usize) {
    let order = order(a);
    let mut seen = [0; PAGES];
    for add in [bit(a), 0] {
        for &p in &order {
            let v = access(w, a, p, add);
            check(a, p, v, seen[p]);
            seen[p] = v;
        }
    }
}

/// Actor `a` adds `add` to page `p` (reads it, `add == 0`): a CPU thread
/// through the view, a GPU's hardware thread through its binding, which
/// must land in that GPU's VRAM.
fn access(w: &World, a: usize, p: usize, add: u64) -> u64 {
    match a.checked_sub(CPUS) {
        None => w.cpu_access(&AtomicU64::new(0), p, add),
        Some(g) => {
            let gpu = g as u8;
            let (v, reached) = w.gpu_access_on(gpu, p, add);
            assert_eq!(reached, Reached::Vram(gpu), "GPU {gpu} on page {p}");
            v
        }
    }
}

/// The pages actor `a` touches, in its order: each starts elsewhere in
/// the chunk, odd ones going down. A GPU touches every page.
fn order(a: usize) -> Vec<usize> {
    let (n, first) = match a.checked_sub(CPUS) {
        None => (CPU_PAGES, a % PAGES),
        Some(g) => (PAGES, g * 2 % PAGES),
    };
    let step = if a % 2 == 1 { PAGES - 1 } else { 1 };
    (0..n).map(|i| (first + i * step) % PAGES).collect()
}

/// What one write of actor `a` adds.
fn bit(a: usize) -> u64 {
    1 << (FIELD * a)
}

/// What page `p` holds before the race: its start and the two set-up
/// passes.
fn base(p: usize) -> u64 {
    start(p) + 2
}

/// Actor `a`'s writes to page `p`.
fn writes(a: usize, p: usize) -> u64 {
    order(a).contains(&p) as u64
}

/// Page `p` at the end: every write made to it.
fn expect(p: usize) -> u64 {
    base(p) + (0..ACTORS).map(|a| writes(a, p) * bit(a)).sum::<u64>()
}

/// A value actor `a` saw on page `p` after its own write there (`seen`:
/// the one it saw before, 0 for none): it holds that write, every write
/// `seen` held (a read never goes back), and no write nobody made.
fn check(a: usize, p: usize, v: u64, seen: u64) {
    let d = v
        .checked_sub(base(p))
        .unwrap_or_else(|| panic!("actor {a}: page {p} read {v:#x}, below its start"));
    let before = seen.saturating_sub(base(p));
    let field = |d: u64, b: usize| (d >> (FIELD * b)) & ((1 << FIELD) - 1);
    for b in 0..ACTORS {
        let (now, then) = (field(d, b), field(before, b));
        assert!(
            now <= writes(b, p),
            "actor {a}: page {p} read {v:#x}, with a write actor {b} never made"
        );
        assert!(
            now >= then,
            "actor {a}: page {p} read {v:#x} after {seen:#x}: actor {b}'s write went"
        );
    }
    assert_eq!(
        field(d, a),
        1,
        "actor {a}: page {p} read {v:#x}, without its own write"
    );
    assert_eq!(d >> (FIELD * ACTORS), 0, "actor {a}: page {p} read {v:#x}");
}

/// The negative check: a peer window that drops what is pushed through
/// it while the copy reports success (the push skipped): the pages'
/// stale copies are caught.
pub fn peer_push_lost() {
    four_gpus_with(WorldConfig {
        drop_peer_copies: true,
        ..Default::default()
    });
}
