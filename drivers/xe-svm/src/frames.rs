//! A restarted pager's question (`GpuNotify::Frames`, issue 14): which
//! pages this server holds in VRAM, and at which frames. The reverse of
//! the pager's `Resident` (`adopt.rs`).
//!
//! The pager rebuilds its page states from its memfds and this answer
//! (`pager/src/core/rebuild.rs`): a page with a hole in its memfd and a
//! frame here is in VRAM; a page with data in RAM and a frame here holds
//! a stale frame, which the pager frees. So every frame a page holds is
//! listed, those of a finalize whose answer was lost with the pager too
//! (`FinalizeError::Restarted` keeps them).
//!
//! **The first answer waits for what the dead pager set going.** Two
//! things of the dead generation may still act on frames when its
//! successor asks:
//! - a migration whose collect it answered: its finalize may have reached
//!   it and punched the memfd holes before it died, so the frames must be
//!   recorded here (they are, once the finalize fails `Restarted`) before
//!   they are listed, or the hole would read as an empty page;
//! - a `FreePages` or `MigrateToRam` it sent that still sits in our
//!   socket: handled after the answer, it would free a frame the new
//!   pager just recorded, or copy into the staging slot it uses.
//!
//! So the answer from the first page waits (bounded,
//! `Platform::quiesce_for_frames`) until both are done. A collect answered
//! but not yet counted (the reply in hand, the count not taken) cannot
//! have a finalize out yet: at worst its frames are kept unlisted, and the
//! replayed fault gives them back when it fills the page again
//! (`server.rs`, the finalize path).

use core::sync::atomic::{AtomicU32, Ordering};

use ipc_protocol::interfaces::gpu_notify::FrameRuns;
use ipc_protocol::interfaces::pager_migrate::RunGather;

use crate::platform::Platform;
use crate::server::Inner;

/// A GPU fault's migration whose collect the pager answered, until its
/// finalize's answer (or its end without one).
pub(crate) struct AnsweredCollect<'a>(&'a AtomicU32);

impl Drop for AnsweredCollect<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<P: Platform> Inner<P> {
    /// Counts a migration from its collect's answer on.
    pub(crate) fn collect_answered(&self) -> AnsweredCollect<'_> {
        self.answered_collects.fetch_add(1, Ordering::AcqRel);
        AnsweredCollect(&self.answered_collects)
    }

    /// Up to one reply of runs, from (`from_object`, `from_page`) on in
    /// object id order.
    pub fn frames(&self, from_object: u32, from_page: u64) -> FrameRuns {
        if (from_object, from_page) == (0, 0) {
            let migrating = || self.answered_collects.load(Ordering::Acquire) > 0;
            if !self.hw.quiesce_for_frames(&migrating) {
                log::warn!(
                    "xe-svm: Frames: the dead pager's requests or migrations were still in \
                     flight at the bound; answering anyway"
                );
            }
        }
        let mut gather = RunGather::default();
        let st = self.lock();
        'objects: for (&id, o) in st.objects.range(from_object..) {
            let start = if id == from_object { from_page } else { 0 };
            let pages = o.frame_words() as u64;
            for page in start..pages {
                if let Some(pfn) = o.frame(page) {
                    gather.add(id, pages, page, pfn);
                    if gather.full() {
                        break 'objects;
                    }
                }
            }
        }
        drop(st);
        let (runs, more, next_object, next_page) = gather.finish();
        FrameRuns {
            gpu: self.hw.gpu(),
            runs,
            more,
            next_object,
            next_page,
        }
    }
}
