//! `GpuNotify`: served by xe-svm, called by the pager while it holds page
//! locks (rule 8). Rule 9: these handlers never call the pager, and the
//! unmap path never waits on a page lock.

use crate::interfaces::pager_migrate::ResidentRun;
use crate::types::{GpuId, ObjectId, PageCount, PageMask, Seq, ViewId};
use crate::wire::BoundedVec;

wire_struct!(
    /// Unmap every GPU PTE of the object's pages and invalidate the TLB;
    /// the reply is the acknowledgement. Bindings that read an older
    /// sequence must not bind.
    pub struct Invalidate {
        pub object: ObjectId,
        pub first_page: u64,
        pub count: PageCount,
        pub seq: Seq,
    }
);
wire_struct!(
    pub struct Invalidated {
        pub seq: Seq,
    }
);
wire_struct!(
    /// Copy the `pages` of the chunk from VRAM into the pager's staging
    /// memfd at `staging_offset`. The pages keep their VRAM: the pager
    /// drops it with `FreePages` once the copies landed in RAM, so a copy
    /// it stopped waiting for (its deadline) loses nothing.
    pub struct MigrateToRam {
        pub object: ObjectId,
        pub first_page: u64,
        pub count: PageCount,
        pub pages: PageMask,
        pub staging_offset: u64,
    }
);
wire_struct!(
    pub struct MigratedToRam {
        pub copied: PageMask,
    }
);
wire_struct!(
    /// Several GPUs (issue 17): push the `pages` of the chunk from this
    /// GPU's VRAM into GPU `to`'s, at frames `to_first_pfn + i`, with this
    /// device's copy engine through its peer window on `to`. First this
    /// GPU unmaps the chunk's `count` pages and invalidates its TLB, as
    /// `Invalidate` with `seq` does (rule 8: nothing reaches a page here
    /// while it is copied, and a binding that read an older sequence does
    /// not bind); one call instead of two. The pager holds the pages'
    /// locks; they keep their frames here until `FreePages`, as
    /// `MigrateToRam`'s do.
    pub struct PushToPeer {
        pub object: ObjectId,
        pub first_page: u64,
        pub count: PageCount,
        pub pages: PageMask,
        pub to: GpuId,
        pub to_first_pfn: u64,
        pub seq: Seq,
    }
);
wire_struct!(
    pub struct Pushed {
        pub pushed: PageMask,
    }
);
wire_struct!(
    /// Drop the VRAM references of pages no view reaches any more.
    pub struct FreePages {
        pub object: ObjectId,
        pub first_page: u64,
        pub count: PageCount,
        pub pages: PageMask,
    }
);
wire_struct!(
    pub struct Freed {
        pub pages: u16,
    }
);
wire_struct!(
    /// Share the pager's staging memfd (the handle) once at boot.
    pub struct AttachStaging {
        pub size_bytes: u64,
    }
);
wire_struct!(
    pub struct Done {}
);
wire_struct!(
    /// A view is gone (unmapped, detached, or its process died): unmap and
    /// drop every binding of it, then acknowledge. The object's pages stay
    /// (they are the object's, not the view's).
    pub struct ViewGone {
        pub view: ViewId,
    }
);
wire_struct!(
    pub struct Unbound {
        pub bindings: u16,
    }
);
wire_struct!(
    /// The whole view `view` also appears at CPU address `to` (it was at
    /// `from`), as the pager's view `new_view` (an mremap; a plain one
    /// then sends `ViewGone` for `view`). Every binding of `view` gets a
    /// twin binding `new_view` at its GPU address shifted by the same
    /// amount, unless that range is taken in its VM. The pager sends this
    /// before the client's mremap can return. Idempotent: a twin already
    /// made takes its range, so the same call again makes nothing (the
    /// stub sends it again to a restarted GPU server, which rebuilt what
    /// its predecessor did from its journal).
    pub struct ViewCopied {
        pub view: ViewId,
        pub new_view: ViewId,
        pub from: u64,
        pub to: u64,
    }
);
wire_struct!(
    /// Part of view `view` lives on as the pager's view `new_view`: its
    /// object pages `first_page..first_page + pages`, moved by `to - from`
    /// in the client's address space (`from == to` for a part a munmap
    /// left in place; a partial mremap moves one). Every binding of `view`
    /// gets a twin `new_view` over just those pages at its GPU address
    /// shifted the same way, unless that range is taken in its VM (by
    /// anything but `view` itself when nothing moved). The pager sends it,
    /// like `ViewCopied`, before the change it follows can return, and
    /// then `ViewGone` for `view`. Idempotent as `ViewCopied` is.
    pub struct ViewPart {
        pub view: ViewId,
        pub new_view: ViewId,
        pub first_page: u64,
        pub pages: u64,
        pub from: u64,
        pub to: u64,
    }
);
wire_struct!(
    /// View `view` grew (an mremap): its tail, object pages `first_page..
    /// first_page + pages` right after the view's own, is the pager's
    /// view `tail`, at the CPU addresses right after the view's. Every
    /// binding of `view` that ends at the view's last page gets a binding
    /// of `tail` that continues it at the next GPU address, unless that
    /// range is taken in its VM or past the GPU's address space; a binding
    /// made with `BIND_READ_ONLY` continues read-only. The pager sends it
    /// when it learns of the growth: Linux reports no event for it, so
    /// that is the tail's first CPU fault (`pager/src/core/growth.rs`).
    pub struct ViewGrown {
        pub view: ViewId,
        pub tail: ViewId,
        pub first_page: u64,
        pub pages: u64,
    }
);
wire_struct!(
    /// A restarted pager's question (issue 14): which pages this GPU
    /// server holds in VRAM, and where, from object `from_object`'s page
    /// `from_page` on, in object id order (the ids it knows objects by).
    /// The pager takes a page whose memfd has a hole as Device at that
    /// frame, and frees (`FreePages`) the frame of one whose memfd holds
    /// data. The reverse of `PagerMigrate::Resident`.
    pub struct Frames {
        pub from_object: u32,
        pub from_page: u64,
    }
);
wire_struct!(
    /// Up to 64 runs of GPU `gpu`; `more`: ask again from (`next_object`,
    /// `next_page`).
    pub struct FrameRuns {
        pub gpu: GpuId,
        pub runs: BoundedVec<ResidentRun, 64>,
        pub more: bool,
        pub next_object: u32,
        pub next_page: u64,
    }
);
wire_struct!(
    pub struct Copied {
        pub bindings: u16,
        pub skipped: u16,
    }
);

interface! {
    /// The GPU server's notifier interface for the pager.
    interface GpuNotify = 5;
    errors NotifyError {
        NoSuchObject = 1,
        /// A named page is not resident on this GPU.
        NotResident = 2,
        /// The copy engine reported an error.
        CopyFailed = 3,
        /// No staging buffer attached, or the range is outside it.
        NoStaging = 4,
        /// A page range that wraps.
        BadRange = 5,
        /// No peer window on that GPU (this GPU itself, or a peer whose
        /// VRAM was never mapped).
        NoPeer = 6,
    }
    calls {
        1 => Invalidate [0] -> Invalidated [0] needs NOTIFY, idempotent;
        2 => MigrateToRam [0] -> MigratedToRam [0] needs NOTIFY;
        3 => FreePages [0] -> Freed [0] needs NOTIFY, idempotent;
        4 => AttachStaging [1] -> Done [0] needs NOTIFY, idempotent;
        5 => ViewGone [0] -> Unbound [0] needs NOTIFY, idempotent;
        6 => ViewCopied [0] -> Copied [0] needs NOTIFY, idempotent;
        7 => ViewPart [0] -> Copied [0] needs NOTIFY, idempotent;
        8 => ViewGrown [0] -> Copied [0] needs NOTIFY, idempotent;
        9 => Frames [0] -> FrameRuns [0] needs NOTIFY, idempotent;
        10 => PushToPeer [0] -> Pushed [0] needs NOTIFY;
    }
    notifications {}
}
