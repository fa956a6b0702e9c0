//! Never-touched pages the GPU writes where they are (no VRAM to move
//! them to): the pager gives each its RAM page before the GPU maps it, so
//! the GPU's write is data from then on. Before, such a page stayed EMPTY:
//! a CPU fault zero-filled over the GPU's write, and the next collect
//! took it for "never written" and moved zeros.

use shuttle::sync::Arc;
use shuttle::thread::spawn;

use crate::hostile::{finish, join};
use crate::scenarios::Scenario;
use crate::world::{World, WorldConfig};

const PAGES: usize = 8;

pub fn all() -> Vec<Scenario> {
    vec![Scenario {
        name: "gpu_writes_fresh_pages_in_place",
        about: "with no VRAM free, a GPU thread writes never-touched pages (mapped where \
                they are) while a CPU thread writes them too",
        run: gpu_writes_fresh_pages_in_place,
    }]
}

fn gpu_writes_fresh_pages_in_place() {
    // No page seeded: every page starts EMPTY.
    let w = Arc::new(World::new(&WorldConfig {
        pages: PAGES,
        free_vram: Some(0),
        ..Default::default()
    }));
    let gpu = {
        let w = w.clone();
        spawn(move || {
            for p in 0..PAGES {
                assert!(w.gpu_access(p, 1), "the GPU could not reach page {p}");
            }
        })
    };
    let cpu = {
        let w = w.clone();
        spawn(move || {
            let view = std::sync::atomic::AtomicU64::new(0);
            for p in (0..PAGES).rev() {
                w.cpu_access(&view, p, 1);
            }
        })
    };
    join(vec![gpu, cpu]);
    finish(w, |_| 2);
}
