//! `PagerMigrate`: served by the pager, called by a GPU server from its
//! fault path (DESIGN.md 5 "GPU fault"). Rule 9: the pager's handlers for
//! these never wait on the GPU server.

use crate::types::{GpuId, ObjectId, PageCount, PageMask, Seq, ViewId};
use crate::wire::BoundedVec;

/// In-place peer pages one `Collected` describes at most: a whole chunk's
/// (512 pages of 4 KiB), 4 bytes each, so the reply fits one frame.
pub const MAX_PEER_FRAMES: usize = 512;

/// Bits of a `Collected.peer_frames` entry below its GPU (the frame): 2
/// TiB of VRAM per GPU. The GPU takes the 3 bits above (8 GPUs).
const PEER_FRAME_BITS: u32 = 29;

/// A `Collected.peer_frames` entry: GPU `gpu`'s frame `pfn`. `None` past
/// 8 GPUs or past a frame of 29 bits (the pager migrates such a page
/// instead of describing it).
pub const fn peer_frame(gpu: u8, pfn: u64) -> Option<u32> {
    if gpu >= 8 || pfn >= 1 << PEER_FRAME_BITS {
        return None;
    }
    Some((gpu as u32) << PEER_FRAME_BITS | pfn as u32)
}

/// The (GPU, frame) a `Collected.peer_frames` entry names.
pub const fn split_peer_frame(entry: u32) -> (u8, u64) {
    (
        (entry >> PEER_FRAME_BITS) as u8,
        (entry & ((1 << PEER_FRAME_BITS) - 1)) as u64,
    )
}

wire_struct!(
    /// Open a client's view for a GPU binding. `client` is the client's
    /// badge as `init` assigned it in both servers; the pager refuses a view
    /// that is not that client's. The reply carries the object's memfd.
    pub struct OpenView {
        pub view: ViewId,
        pub client: u64,
    }
);
wire_struct!(
    pub struct ViewOpened {
        pub object: ObjectId,
        pub addr: u64,
        pub object_first_page: u64,
        pub pages: u64,
    }
);
wire_struct!(
    /// Per-page location plus the notifier sequence (like `hmm_range_fault`).
    pub struct GetPages {
        pub object: ObjectId,
        pub first_page: u64,
        pub count: PageCount,
    }
);
wire_struct!(
    pub struct Pages {
        pub seq: Seq,
        pub system: PageMask,
        pub device: PageMask,
        pub empty: PageMask,
    }
);
wire_struct!(
    /// Trylock the chunk's pages and install migration entries (rule 1).
    /// `generation`: the GPU server's (1 at boot): a collect of a server
    /// that was restarted since (its request still queued when it died)
    /// is refused or undone, so nothing waits for a finalize that will
    /// never come. `pager_generation`: the pager's generation as the GPU
    /// server last heard it announced (0: never, generation 1). A restarted
    /// pager refuses (`Stale`) a collect sent to its predecessor and left
    /// queued: its sender was told `PeerRestarted` and will not finalize it.
    pub struct Collect {
        pub object: ObjectId,
        pub first_page: u64,
        pub count: PageCount,
        pub gpu: GpuId,
        pub generation: u32,
        pub pager_generation: u32,
    }
);
wire_struct!(
    /// `got`: pages now locked for this migration (partial is normal);
    /// `zero`: those of them never written (no copy needed); `device`:
    /// pages already in this GPU's VRAM and not being migrated, which the
    /// GPU may map if `seq` is still current (rule 8). `remote`: pages of
    /// `got` the GPU maps where they are instead of migrating them (their
    /// preferred location is system memory, `Pager::Advise`; no view
    /// reaches them; or their region is held against thrashing).
    /// `cpu_atomics`: pages of the chunk whose atomics policy is CPU-only
    /// (`Advice::AtomicCpu`): the GPU maps them without atomics, so a GPU
    /// atomic there faults and is refused. `peer`: pages of `got` in
    /// another GPU's VRAM (several GPUs, issue 17): the GPU gives them
    /// frames but copies nothing; at finalize their source pushes them
    /// there (`GpuNotify::PushToPeer`). `peer_frames`: for each page of
    /// `peer` that is also `remote` (`Advice::AccessInPlace`,
    /// `PreferGpuK`), in page order, where it is ([`peer_frame`]: the GPU
    /// in the top 3 bits, the frame below); the GPU maps it there, through
    /// its peer window, if `seq` is still current.
    pub struct Collected {
        pub seq: Seq,
        pub got: PageMask,
        pub zero: PageMask,
        pub device: PageMask,
        pub remote: PageMask,
        pub cpu_atomics: PageMask,
        pub peer: PageMask,
        pub peer_frames: BoundedVec<u32, MAX_PEER_FRAMES>,
    }
);
wire_struct!(
    /// Per-page result: `migrated` pages become DEVICE at
    /// `vram_first_pfn + i`; the rest of the collected pages go back to
    /// SYSTEM. Unlocks every collected page. `got` is the collect's own
    /// mask, naming which collect this finalizes.
    pub struct Finalize {
        pub object: ObjectId,
        pub first_page: u64,
        pub count: PageCount,
        pub gpu: GpuId,
        pub vram_first_pfn: u64,
        pub got: PageMask,
        pub migrated: PageMask,
    }
);
wire_struct!(
    /// `device_pages`: the pages of the chunk now in this GPU's VRAM (a
    /// page whose RAM copy could not be dropped, or a peer page whose push
    /// did not land, is not, and its frame is the GPU's to give back).
    pub struct Finalized {
        pub device: u16,
        pub returned: u16,
        pub device_pages: PageMask,
        /// Peer pages whose source GPU did not answer the push in time:
        /// they stayed with their source, whose copy engine may still
        /// write them into this GPU's frames for them later. The GPU must
        /// never reuse those frames (it keeps them out of use).
        pub late: PageMask,
    }
);

wire_struct!(
    /// A restarted GPU server asks where its predecessor's pages are: the
    /// runs of pages the pager records in this GPU's VRAM, in (object,
    /// page) order from object `from_object`, page `from_page`. The first
    /// call (from 0, 0) also undoes the collects of earlier generations
    /// than `generation` (their pages go back unlocked) and refuses them
    /// from then on. Objects keep the ids the predecessor knew them by.
    pub struct Resident {
        pub gpu: GpuId,
        pub generation: u32,
        pub from_object: u32,
        pub from_page: u64,
    }
);
wire_struct!(
    /// Pages `first_page..first_page + pages` of `object` (of
    /// `object_pages` in all) sit at VRAM frames `first_pfn..`.
    pub struct ResidentRun {
        pub object: ObjectId,
        pub object_pages: u64,
        pub first_page: u64,
        pub pages: u32,
        pub first_pfn: u64,
    }
);
wire_struct!(
    /// Up to 64 runs; `more`: ask again from (`next_object`, `next_page`).
    /// `pager_generation`: the pager's, for the restarted GPU server's
    /// `Collect`s (it heard no announcement of a pager restart that came
    /// before it started).
    pub struct ResidentRuns {
        pub runs: BoundedVec<ResidentRun, 64>,
        pub more: bool,
        pub next_object: u32,
        pub next_page: u64,
        pub pager_generation: u32,
    }
);

interface! {
    /// The pager's migration interface for GPU servers.
    interface PagerMigrate = 2;
    errors MigrateError {
        NoSuchView = 1,
        NoSuchObject = 2,
        OutOfRange = 3,
        /// Finalize named pages this GPU did not collect.
        NotCollected = 4,
        /// The view belongs to another client, or the request names
        /// another GPU than the one this server's first request named.
        NotOwner = 5,
        Host = 6,
        /// Too many collects of this GPU server await their finalize.
        OverBudget = 7,
        /// A collect of a GPU server generation that has been restarted
        /// since.
        Stale = 8,
        /// This GPU is going away (`PagerReclaim::Evacuate`): nothing
        /// moves into its VRAM any more.
        Retired = 9,
    }
    calls {
        1 => OpenView [0] -> ViewOpened [1] needs MIGRATE, idempotent;
        2 => GetPages [0] -> Pages [0] needs MIGRATE, idempotent;
        3 => Collect [0] -> Collected [0] needs MIGRATE;
        4 => Finalize [0] -> Finalized [0] needs MIGRATE;
        5 => Resident [0] -> ResidentRuns [0] needs MIGRATE, idempotent;
    }
    notifications {}
}

/// Runs in one reply (`ResidentRuns`, `gpu_notify::FrameRuns`).
pub const RUNS_PER_REPLY: usize = 64;

/// Builds the runs of one reply listing resident pages, in (object, page)
/// order: the pager's `Resident` answer, and the GPU server's `Frames`
/// answer to a restarted pager.
#[derive(Debug, Default)]
pub struct RunGather {
    pub runs: alloc::vec::Vec<ResidentRun>,
    /// Where the next call starts, once the reply is full.
    pub next: Option<(u32, u64)>,
}

impl RunGather {
    /// Adds page `page` of `object` at frame `pfn`: it extends the last
    /// run when it follows it in both page and frame.
    pub fn add(&mut self, object: u32, object_pages: u64, page: u64, pfn: u64) {
        if let Some(r) = self.runs.last_mut().filter(|r| {
            r.object.get() == object
                && r.first_page + u64::from(r.pages) == page
                && r.first_pfn + u64::from(r.pages) == pfn
                && r.pages < u32::MAX
        }) {
            r.pages += 1;
            return;
        }
        if self.runs.len() == RUNS_PER_REPLY {
            self.next = Some((object, page));
            return;
        }
        self.runs.push(ResidentRun {
            object: ObjectId::raw(object),
            object_pages,
            first_page: page,
            pages: 1,
            first_pfn: pfn,
        });
    }

    pub fn full(&self) -> bool {
        self.next.is_some()
    }

    /// The reply's fields: the runs, whether there are more, and where
    /// the next call starts ((0, 0) when there are none).
    pub fn finish(self) -> (BoundedVec<ResidentRun, 64>, bool, u32, u64) {
        let (next_object, next_page) = self.next.unwrap_or((0, 0));
        let more = self.next.is_some();
        (
            BoundedVec::truncated(self.runs),
            more,
            next_object,
            next_page,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages of one object at every other frame: one run each.
    #[test]
    fn a_full_reply_says_where_the_next_one_starts() {
        let mut g = RunGather::default();
        for page in 0..100u64 {
            g.add(3, 1000, page, 2 * page);
            if g.full() {
                break;
            }
        }
        assert_eq!(g.runs.len(), RUNS_PER_REPLY);
        assert_eq!(g.next, Some((3, RUNS_PER_REPLY as u64)));
        // Pages that follow in page and frame make one run.
        let mut g = RunGather::default();
        for page in 10..20u64 {
            g.add(4, 20, page, 500 + page);
        }
        g.add(4, 20, 21, 600);
        assert_eq!(g.runs.len(), 2);
        assert_eq!((g.runs[0].first_page, g.runs[0].pages), (10, 10));
        assert_eq!(g.runs[0].first_pfn, 510);
    }

    #[test]
    fn a_peer_frame_holds_eight_gpus_and_29_bits_of_frame() {
        let top = (1u64 << 29) - 1;
        for gpu in 0..8 {
            for pfn in [0, 1, 12345, top] {
                assert_eq!(split_peer_frame(peer_frame(gpu, pfn).unwrap()), (gpu, pfn));
            }
        }
        assert_eq!(peer_frame(8, 0), None);
        assert_eq!(peer_frame(0, top + 1), None);
    }

    /// A reply naming a whole chunk's pages in place fits one frame.
    #[test]
    fn a_collect_of_a_whole_chunk_in_place_fits_a_frame() {
        use crate::Wire;
        assert!(Collected::MAX_SIZE <= crate::MAX_PAYLOAD);
    }
}
