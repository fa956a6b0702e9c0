//! Anti-thrashing in the simulation (issue 16 item 6): holds never lose a
//! write, whatever the schedule.
//!
//! A page ping-pongs between the GPU and the CPU until its region is held
//! (GPU faults map it in system memory); a GPU access then leaves it in
//! RAM. Then a GPU thread and two CPU threads race over every page while
//! the hold (a few dozen ticks of the machine's logical clock) runs out,
//! so GPU faults switch from mapping in place to migrating mid-run.
//! Checked at the end: every page holds exactly its increments, no lock is
//! held, and every GPU mapping points where its page is.

use std::sync::atomic::AtomicU64;

use pager::core::thrash::ThrashPolicy;
use pager::state::Residency;
use shuttle::thread::spawn;

use crate::hostile::{finish, join, world};
use crate::scenarios::{start, Scenario};
use crate::world::WorldConfig;

const PAGES: usize = 16;
/// Ping-pong rounds before the race (the hold starts at the second).
const ROUNDS: u64 = 2;

pub fn all() -> Vec<Scenario> {
    vec![Scenario {
        name: "thrash_hold_keeps_data",
        about: "a ping-ponging region is held (GPU faults map it in RAM), then GPU and CPU \
                writers race while the hold runs out",
        run: thrash_hold_keeps_data,
    }]
}

fn thrash_hold_keeps_data() {
    let w = world(WorldConfig {
        pages: PAGES,
        thrash: Some(ThrashPolicy {
            window_us: 100_000,
            threshold: 2,
            hold_us: 40,
        }),
        ..Default::default()
    });
    let view = AtomicU64::new(0);
    for _ in 0..ROUNDS {
        assert!(w.gpu_access(0, 1), "the GPU could not reach page 0");
        w.cpu_access(&view, 0, 1);
    }
    assert!(w.gpu_access(0, 1), "the GPU could not reach page 0");
    let r = w.pager.table().info(0).expect("page in range").residency;
    assert_eq!(r, Residency::System, "a held page stays in RAM");
    let gpu = {
        let w = w.clone();
        spawn(move || {
            for p in 0..PAGES {
                assert!(w.gpu_access(p, 1), "the GPU could not reach page {p}");
            }
        })
    };
    let cpus: Vec<_> = (0..2)
        .map(|t| {
            let w = w.clone();
            spawn(move || {
                let view = AtomicU64::new(0);
                for i in 0..PAGES {
                    let p = if t == 0 { i } else { PAGES - 1 - i };
                    w.cpu_access(&view, p, 1);
                }
            })
        })
        .collect();
    join(cpus.into_iter().chain([gpu]).collect());
    let ping_pong = |p: usize| if p == 0 { 2 * ROUNDS + 1 } else { 0 };
    finish(w, move |p| start(p) + ping_pong(p) + 3);
}
