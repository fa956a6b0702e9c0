//! A restarted pager's question (`GpuNotify::Frames`, issue 14): which
//! pages this server holds in VRAM, and at which frames. The reverse of
//! the pager's `Resident` (`adopt.rs`).
//!
//! The pager rebuilds its page states from its memfds and this answer
//! (`pager/src/core/rebuild.rs`): a page with a hole in its memfd and a
//! frame here is in VRAM; a page with data in RAM and a frame here holds
//! a stale frame, which the pager frees. So every frame a page holds is
//! listed, those of a finalize whose answer was lost with the pager too
//! (`pager_restarted` keeps them).

use ipc_protocol::interfaces::gpu_notify::FrameRuns;
use ipc_protocol::interfaces::pager_migrate::RunGather;
use ipc_protocol::types::GpuId;

use crate::platform::Platform;
use crate::server::{Inner, GPU};

/// This GPU, as the protocol names it (checked when compiled).
const GPU_ID: GpuId = match GpuId::new(GPU) {
    Some(g) => g,
    None => panic!("GPU is outside GpuId's range"),
};

impl<P: Platform> Inner<P> {
    /// Up to one reply of runs, from (`from_object`, `from_page`) on in
    /// object id order.
    pub fn frames(&self, from_object: u32, from_page: u64) -> FrameRuns {
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
            gpu: GPU_ID,
            runs,
            more,
            next_object,
            next_page,
        }
    }
}
