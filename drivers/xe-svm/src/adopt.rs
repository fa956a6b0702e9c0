//! A restarted GPU server adopts the pages its predecessor left in VRAM
//! (issue 14).
//!
//! VRAM belongs to the device and survives its driver; the pager's page
//! states say which page sits in which frame (`PagerMigrate::Resident`).
//! Before it allocates anything, a server of generation 2 or later learns
//! those frames and:
//! - claims them in its allocator, so no migration, buffer object or page
//!   table overwrites them (`Vram::claim`);
//! - knows each object by the id the pager's notifier names it by, with
//!   its frame words set, so a CPU fault's `MigrateToRam` copies the page
//!   from where it is and `FreePages` frees its frame.
//!
//! An adopted object has no DMA mapping and is charged to nobody until a
//! client binds a view of it again (`ObjectState::map_adopted`); it goes
//! like any unbound object once its last page left VRAM. The pager is
//! trusted for where its pages are, not for sizes: every number of a run
//! is checked, and a frame claimed twice or outside VRAM is refused (that
//! page is then reported, not silently dropped: the pager's copy back
//! fails `NotResident` and the fault ends with an error).

use std::collections::BTreeSet;

use ipc_protocol::interfaces::pager_migrate::ResidentRun;

use crate::platform::Platform;
use crate::server::{Inner, ObjectState};

/// What a restarted server took over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Adopted {
    pub objects: usize,
    pub pages: u64,
    /// Pages of the runs that could not be adopted (bad numbers, a frame
    /// named twice or outside VRAM, no metadata room).
    pub refused: u64,
}

/// Most pages one adopted object may have: what the metadata arena could
/// describe at 4 bytes a page is checked by the arena itself; this keeps
/// a hostile count from reaching the allocator as a huge request.
const MAX_OBJECT_PAGES: u64 = 1 << 32;

impl<P: Platform> Inner<P> {
    /// Adopts `runs`; must run before anything is allocated from VRAM.
    pub fn adopt(&self, runs: &[ResidentRun]) -> Adopted {
        let mut out = Adopted::default();
        let (mut frames, mut made) = (BTreeSet::new(), Vec::new());
        let mut st = self.lock();
        for run in runs {
            let object = run.object.get();
            let pages = u64::from(run.pages);
            let fits = run.object_pages <= MAX_OBJECT_PAGES
                && run
                    .first_page
                    .checked_add(pages)
                    .is_some_and(|end| end <= run.object_pages)
                && run.first_pfn.checked_add(pages).is_some();
            if !fits {
                out.refused += pages;
                continue;
            }
            if !st.objects.contains_key(&object) {
                match self.adopted_object(run.object_pages) {
                    Some(o) => {
                        st.objects.insert(object, o);
                        made.push(object);
                    }
                    None => {
                        out.refused += pages;
                        continue;
                    }
                }
            }
            let Some(o) = st.objects.get_mut(&object) else {
                continue;
            };
            for i in 0..pages {
                let (page, pfn) = (run.first_page + i, run.first_pfn + i);
                let known = (page as usize) < o.frame_words() && o.frame(page).is_none();
                if known && self.vram.manages(pfn) && frames.insert(pfn) {
                    o.set_frame(page, pfn);
                    out.pages += 1;
                } else {
                    out.refused += 1;
                }
            }
        }
        // An object none of whose pages could be adopted is not kept.
        for object in made {
            self.drop_object_if_unused(&mut st, object);
            out.objects += st.objects.contains_key(&object) as usize;
        }
        drop(st);
        let refused = self.vram.claim(&frames);
        if !refused.is_empty() {
            // Cannot happen on a fresh allocator; said loudly if it does.
            log::error!("xe-svm: {} adopted frame(s) were not free", refused.len());
        }
        out
    }

    /// A new adopted object of `pages` pages, its frame words from the
    /// metadata arena (`None`: no room).
    fn adopted_object(&self, pages: u64) -> Option<ObjectState> {
        let len = usize::try_from(pages).ok()?;
        let mut frames = self.meta_vec();
        frames.try_reserve_exact(len).ok()?;
        frames.resize(len, 0);
        Some(ObjectState::adopted(frames))
    }
}
