//! `Pager`: served by the pager, called by clients (DESIGN.md 5a).

use crate::types::{Advice, GpuId, Location, ObjectId, PageCount, PageStateCode, ViewId};
use crate::wire::BoundedVec;

wire_struct!(
    /// Create a memory object of `size_bytes` (a multiple of 4 KiB). The
    /// reply carries the object's memfd, which the client maps.
    pub struct CreateObject {
        pub size_bytes: u64,
    }
);
wire_struct!(
    pub struct ObjectCreated {
        pub object: ObjectId,
        pub size_bytes: u64,
    }
);
wire_struct!(
    pub struct DestroyObject {
        pub object: ObjectId,
    }
);
wire_struct!(
    /// Register a view: the client mapped `pages` pages of the object from
    /// `object_first_page` at `addr`; the handle is its userfaultfd.
    pub struct AttachView {
        pub object: ObjectId,
        pub addr: u64,
        pub object_first_page: u64,
        pub pages: u64,
    }
);
wire_struct!(
    pub struct ViewAttached {
        pub view: ViewId,
    }
);
wire_struct!(
    pub struct DetachView {
        pub view: ViewId,
    }
);
wire_struct!(
    pub struct Advise {
        pub object: ObjectId,
        pub first_page: u64,
        pub pages: u64,
        pub advice: Advice,
    }
);
wire_struct!(
    /// Move up to one chunk to `to` ahead of use.
    pub struct Prefetch {
        pub object: ObjectId,
        pub first_page: u64,
        pub count: PageCount,
        pub to: Location,
        pub gpu: GpuId,
    }
);
wire_struct!(
    pub struct Prefetched {
        pub moved: u16,
    }
);
wire_struct!(
    /// Per-page state, like the HMM selftests' snapshot.
    pub struct Snapshot {
        pub object: ObjectId,
        pub first_page: u64,
        pub count: PageCount,
    }
);
wire_struct!(
    pub struct PageStates {
        pub states: BoundedVec<PageStateCode, 512>,
    }
);
wire_struct!(
    pub struct Done {}
);
wire_struct!(
    /// Drop the data of `pages` pages of the object from `first_page`
    /// (the client's allocator freed them): wherever each page is (VRAM or
    /// RAM) it becomes never-touched, so its next touch is a fresh zero
    /// page and nothing is copied back. Idempotent.
    pub struct Discard {
        pub object: ObjectId,
        pub first_page: u64,
        pub pages: u64,
    }
);
wire_struct!(
    /// Returns once every view change the kernel has reported for the
    /// caller's address spaces (munmap, mremap, fork) is applied and the
    /// GPU server has heard of it. The kernel lets `munmap` and `mremap`
    /// return when the pager has *read* their event, not applied it: GPU
    /// work submitted right after them must follow this call to see the
    /// change (the scenario runner makes it after each munmap and mremap
    /// step; libsvm never unmaps or moves a view, it reuses its pages).
    /// `Busy` if a change is still being applied after the pager's deadline.
    pub struct SyncViews {}
);
wire_struct!(
    /// The caller's view that covers client address `addr` now. A munmap
    /// or a partial mremap splits a view: once `SyncViews` returns, each
    /// part left is a view of its own, still bound wherever the split one
    /// was, and the client's id of the split view names nothing. This is
    /// how the client learns the parts' ids (to detach or bind them).
    /// `NoSuchView` if no view covers `addr`.
    pub struct FindView {
        pub addr: u64,
    }
);
wire_struct!(
    pub struct ViewFound {
        pub view: ViewId,
        pub object: ObjectId,
        /// Where the view starts, and what it shows.
        pub addr: u64,
        pub object_first_page: u64,
        pub pages: u64,
    }
);
wire_struct!(
    /// Server-wide totals of what every session holds now (the hostile
    /// harness checks they come back to zero after a client exits).
    pub struct Accounting {}
);
wire_struct!(
    /// Totals over every live session: client sessions and peer sessions
    /// (the GPU server's `PagerMigrate`), objects and their bytes, views,
    /// address spaces and their fault threads (counted until the threads
    /// exit), metadata arena bytes in use, and collects the GPU server has
    /// not finalized yet.
    pub struct PagerTotals {
        pub sessions: u64,
        pub objects: u64,
        pub object_bytes: u64,
        pub views: u64,
        pub spaces: u64,
        pub fault_threads: u64,
        pub arena_bytes: u64,
        pub collects: u64,
    }
);

interface! {
    /// The pager's client interface.
    interface Pager = 1;
    errors PagerError {
        /// No such object, or not the caller's.
        NoSuchObject = 1,
        /// No such view, or not the caller's.
        NoSuchView = 2,
        /// A page range outside the object or view.
        OutOfRange = 3,
        /// A size of zero, not page-aligned, or over the pager's limit.
        BadSize = 4,
        /// The pager's metadata arena is full.
        OutOfMetadata = 5,
        /// The passed handle is not a usable userfaultfd.
        BadUserfaultfd = 6,
        /// Pages are locked by a migration; try again.
        Busy = 7,
        /// The GPU server needed for the request did not answer.
        GpuUnavailable = 8,
        /// A host call failed (the server logs the errno).
        Host = 9,
        /// The operation is not implemented by this pager yet.
        NotSupported = 10,
        /// The caller's budget for this resource is used up (objects,
        /// object bytes, views, address spaces, fault threads, metadata).
        OverBudget = 11,
    }
    calls {
        1 => CreateObject [0] -> ObjectCreated [1] needs OBJECT;
        2 => DestroyObject [0] -> Done [0] needs OBJECT;
        3 => AttachView [1] -> ViewAttached [0] needs VIEW;
        4 => DetachView [0] -> Done [0] needs VIEW;
        5 => Advise [0] -> Done [0] needs ADVISE, idempotent;
        6 => Prefetch [0] -> Prefetched [0] needs ADVISE;
        7 => Snapshot [0] -> PageStates [0] needs SNAPSHOT, idempotent;
        8 => Accounting [0] -> PagerTotals [0] needs SNAPSHOT, idempotent;
        9 => Discard [0] -> Done [0] needs ADVISE, idempotent;
        10 => SyncViews [0] -> Done [0] needs VIEW, idempotent;
        11 => FindView [0] -> ViewFound [0] needs VIEW, idempotent;
    }
    notifications {}
}
