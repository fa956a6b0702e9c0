//! What the core asks of the runtime it runs on: the side effects, named
//! for what they do, not for how one host does them.
//!
//! The Linux runtime (`crate::host`) implements them with memfds,
//! userfaultfd and IPC clients; the simulation with its simulated machine;
//! a Redox runtime would with its own memory and fault channels. Faults
//! and view changes reach the core through [`Core::serve_fault`] and the
//! `follow_*` calls, whatever delivers them.
//!
//! [`Core::serve_fault`]: super::Core::serve_fault

use ipc_protocol::types::PageMask;
use session::Handle;

use super::view::Space;
use super::Core;
pub use crate::journal::Kept;
use crate::sync::Arc;

/// Why a runtime call failed, in the terms the core acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtError {
    /// A view change of this address space is being delivered; try again
    /// once it is applied (host: `EAGAIN`).
    Again,
    /// The range is not mapped there any more (host: `ENOENT`).
    Unmapped,
    /// The page is already present (host: `EEXIST`).
    Exists,
    /// The address space's process is gone (host: `ESRCH`).
    Gone,
    /// A handle the client passed is not what the call needs.
    BadHandle,
    /// The GPU server refused, or its endpoint is gone.
    Gpu,
    /// The GPU server did not answer call `id` within its deadline: what
    /// it was asked may still be carried out later.
    Unanswered(u64),
    /// Any other failure (host: the errno, for the log).
    Host(i32),
    /// The runtime's kernel lacks what this needs (Redox today: no fault
    /// delivery; docs/redox.md section 5). Clients get `NotSupported`.
    Unsupported(KernelCall),
}

/// A kernel facility a runtime needs and its kernel does not have yet,
/// named as docs/redox.md section 5 proposes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelCall {
    /// 5.1 + 5.2: a lazy grant on `MmapPrep` (`CqeOpcode::RespondLazy`) and
    /// the `Opcode::RequestMmap` fault upcall for it.
    FaultUpcall,
    /// 5.3: `CqeOpcode::ProvideMmap`, installing a page into every waiter.
    ProvideMmap,
    /// 5.4: `SchemeSocketCall::Revoke` (unmap or write-protect a range of a
    /// handle in every address space).
    Revoke,
}

impl KernelCall {
    /// What to look for in docs/redox.md.
    pub fn proposal(self) -> &'static str {
        match self {
            Self::FaultUpcall => "5.1-5.2 RespondLazy + Opcode::RequestMmap",
            Self::ProvideMmap => "5.3 CqeOpcode::ProvideMmap",
            Self::Revoke => "5.4 SchemeSocketCall::Revoke",
        }
    }
}

/// Where the data of pages being installed comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Zero pages (a first touch).
    Zeros,
    /// A staging slot the GPU server copied VRAM into; page `i` of the
    /// chunk is at index `i` of the slot.
    Staging(usize),
}

/// What a runtime pauses for (the host sleeps, a simulation yields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// Between tries of a CPU fault that failed.
    FaultRetry,
    /// Between write-protect passes that met view changes.
    ProtectRetry,
    /// Between tries to bring an ending object's pages back.
    BringBack,
    /// While `SyncViews` waits for a reader to apply what it read.
    SyncViews,
    /// While a move's notes wait for another space's reader to tell the
    /// GPU server that a view left the destination (`changes.rs`).
    ViewOrder,
    /// While a restarted GPU server's `Resident` waits for its
    /// predecessor's finalizes in progress (`resident.rs`).
    FinalizeDrain,
    /// While a new space waits for the threads of spaces whose process
    /// was found gone to give their budget back (`reap.rs`).
    SpaceBudget,
}

/// The runtime under a [`Core`].
pub trait Runtime: Send + Sync + Sized + 'static {
    /// A handle that travels with a message (host: a file descriptor).
    type Handle: Send;
    /// A memory object's pages in RAM (host: its memfd).
    type Memory: Send + Sync;
    /// A client address space's fault channel (host: its userfaultfd and
    /// the queue its fault workers serve).
    type Port: Send + Sync;

    // Memory objects.
    /// New object memory of `bytes`, sealed against shrinking and growing,
    /// and the handle the client gets for it.
    fn create_memory(&self, bytes: u64) -> Result<(Self::Memory, Self::Handle), RtError>;
    /// Another handle for `m` (the GPU server's, for a binding).
    fn share_memory(&self, m: &Self::Memory) -> Result<Self::Handle, RtError>;
    /// Drops the RAM copies of `pages` pages from `first` out of every view
    /// (host: a hole punch).
    fn drop_pages(&self, m: &Self::Memory, first: usize, pages: usize) -> Result<(), RtError>;
    /// Writes `pages` pages from `src` (from its page `src_index`) into the
    /// object from page `first`, each page whole to any reader.
    fn write_pages(
        &self,
        m: &Self::Memory,
        first: usize,
        src: Source,
        src_index: usize,
        pages: usize,
    ) -> Result<(), RtError>;

    // Address spaces.
    /// Takes the fault channel a client passed with `AttachView`.
    fn open_port(&self, h: Self::Handle) -> Result<Self::Port, RtError>;
    /// Starts serving `[addr, addr + len)` (missing and write-protect faults).
    fn register(&self, p: &Self::Port, addr: u64, len: u64) -> Result<(), RtError>;
    /// Hands `[addr, addr + len)` back to the kernel.
    fn unregister(&self, p: &Self::Port, addr: u64, len: u64) -> Result<(), RtError>;
    /// Sets or clears write protection (clearing wakes blocked writers).
    fn write_protect(&self, p: &Self::Port, addr: u64, len: u64, on: bool) -> Result<(), RtError>;
    /// Installs `pages` pages at `dst` (object pages from `page` of `m`)
    /// from `src` (from its page `src_index`), each page whole, and wakes
    /// the threads waiting there. Returns the pages installed before it
    /// stopped and why it stopped (`None`: all of them).
    #[allow(clippy::too_many_arguments)]
    fn install(
        &self,
        p: &Self::Port,
        m: &Self::Memory,
        dst: u64,
        page: usize,
        src: Source,
        src_index: usize,
        pages: usize,
    ) -> (usize, Option<RtError>);
    /// Wakes threads waiting on a fault in the range.
    fn wake(&self, p: &Self::Port, addr: u64, len: u64) -> Result<(), RtError>;
    /// Starts the threads that deliver `space`'s faults and view changes
    /// to the core.
    fn start_space(&self, core: &Arc<Core<Self>>, space: &Arc<Space<Self>>) -> Result<(), RtError>;
    /// `space` stopped: its threads finish what they hold and exit.
    fn stop_space(&self, space: &Space<Self>);
    /// Threads one address space runs (charged to its owner's budget).
    fn threads_per_space(&self) -> u64;
    /// Whether the process behind `p` is gone, asked with a probe that
    /// changes nothing in a live one; `spare` is a page of its addresses
    /// no view covers (`reap.rs`). A runtime that cannot tell says no.
    fn process_gone(&self, _p: &Self::Port, _spare: u64) -> bool {
        false
    }
    /// Waits a little before trying again.
    fn pause(&self, why: Pause, attempt: u32);

    // Staging: where the GPU server copies VRAM for a migration to RAM.
    /// Takes a staging slot, waiting while all are lent; `None` once every
    /// slot is quarantined (`slots.rs`).
    fn take_slot(&self) -> Option<usize>;
    fn put_slot(&self, slot: usize);
    /// The GPU server may still copy into `slot` (its `MigrateToRam`, call
    /// `call`, went unanswered): it is not lent again until that call's
    /// late answer says the copy is done.
    fn quarantine_slot(&self, slot: usize, call: u64);

    // The GPU servers' notifiers (`GpuNotify`), one per GPU. `gpu` names
    // the GPU whose server is called; `object` is the id that server knows
    // the object by (its `PagerMigrate` session's handle). The view notes
    // go to every GPU server: each binds views by the clients' ids.
    /// Whether GPU `gpu`'s server is attached.
    fn gpu_attached(&self, gpu: u8) -> bool;
    /// Rule 8: unmap the chunk's GPU mappings of `object` (whose memory is
    /// `m`) on GPU `gpu`; the reply is the acknowledgement.
    fn invalidate(
        &self,
        m: &Self::Memory,
        gpu: u8,
        object: Handle,
        first: usize,
        count: usize,
        seq: u64,
    ) -> Result<(), RtError>;
    /// Copies `pages` of the chunk from GPU `gpu`'s VRAM into staging
    /// `slot`; returns the pages copied (they left VRAM).
    fn migrate_to_ram(
        &self,
        gpu: u8,
        object: Handle,
        first: usize,
        count: usize,
        pages: &PageMask,
        slot: usize,
    ) -> Result<PageMask, RtError>;
    /// Drops GPU `gpu`'s VRAM of `pages` (no view reaches them any more).
    fn free_pages(
        &self,
        gpu: u8,
        object: Handle,
        first: usize,
        count: usize,
        pages: &PageMask,
    ) -> Result<(), RtError>;
    /// Peer migration: GPU `gpu` unmaps the chunk as [`Self::invalidate`]
    /// with `seq` does (rule 8), then pushes `pages` of it from its VRAM
    /// into GPU `to`'s, page `i` to frame `to_first_pfn + i`, and keeps its
    /// frames until [`Self::free_pages`]. Returns the pages that landed. A
    /// runtime without peer windows refuses (the pages stay).
    #[allow(clippy::too_many_arguments)]
    fn push_to_peer(
        &self,
        gpu: u8,
        object: Handle,
        first: usize,
        count: usize,
        pages: &PageMask,
        to: u8,
        to_first_pfn: u64,
        seq: u64,
    ) -> Result<PageMask, RtError> {
        let _ = (gpu, object, first, count, pages, to, to_first_pfn, seq);
        Err(RtError::Gpu)
    }
    /// Rule 8 for views: every binding of `view` goes.
    fn view_gone(&self, view: Handle);
    /// The whole of `view` also appears at `to` as `new_view`.
    fn view_copied(&self, view: Handle, new_view: Handle, from: u64, to: u64);
    /// Part of a view lives on as another record (`GpuNotify::ViewPart`).
    fn view_part(&self, part: &PartNote);
    /// `view` grew: object pages `first_page..first_page + pages` right
    /// after it are the view `tail` (`GpuNotify::ViewGrown`).
    fn view_grown(&self, view: Handle, tail: Handle, first_page: usize, pages: usize);
    /// A monotonic clock in microseconds (anti-thrashing windows, fault
    /// deadlines).
    fn now_us(&self) -> u64;
    /// Ends the faults on `[addr, addr + len)` of `p` with an error the
    /// client sees (host: `UFFDIO_POISON`, the access gets `SIGBUS`).
    fn poison(&self, _p: &Self::Port, _addr: u64, _len: u64) -> Result<(), RtError> {
        Err(RtError::Host(0))
    }
    /// The file mapping covering `addr` in the address space of thread
    /// `tid`, if the runtime can tell (host: `/proc/<tid>/maps`); follows
    /// a view an mremap grew (`growth.rs`).
    fn mapping_at(&self, _tid: u32, _addr: u64) -> Option<FileMapping> {
        None
    }
    /// Whether `m` is the file `file` names.
    fn is_file(&self, _m: &Self::Memory, _file: FileId) -> bool {
        false
    }

    // A restart (issue 14; `crate::journal`, `rebuild.rs`). A runtime
    // whose pager is never restarted (the simulation, Redox today) keeps
    // nothing and rebuilds nothing.
    /// Hands a duplicate of `m` to the keeper, filed as `kept`.
    fn keep_memory(&self, _kept: Kept, _m: &Self::Memory) {}
    /// Hands a duplicate of `p`'s fault channel to the keeper.
    fn keep_port(&self, _kept: Kept, _p: &Self::Port) {}
    /// The keeper drops what it holds as `kept`.
    fn drop_kept(&self, _kept: Kept) {}
    /// Object memory from a handle the keeper held for this generation:
    /// `bytes` long, or refused.
    fn adopt_memory(&self, _h: Self::Handle, _bytes: u64) -> Result<Self::Memory, RtError> {
        Err(RtError::Unsupported(KernelCall::FaultUpcall))
    }
    /// A fault channel a predecessor set up (host: a userfaultfd past its
    /// handshake, its ranges still registered).
    fn reopen_port(&self, _h: Self::Handle) -> Result<Self::Port, RtError> {
        Err(RtError::Unsupported(KernelCall::FaultUpcall))
    }
    /// Which of `m`'s first `pages` pages hold data in RAM (host: not a
    /// hole of the memfd).
    fn data_pages(&self, _m: &Self::Memory, _pages: usize) -> Result<Vec<bool>, RtError> {
        Err(RtError::Unsupported(KernelCall::FaultUpcall))
    }
    /// GPU `gpu`'s server's resident frames from (`object`, `page`) on
    /// (`GpuNotify::Frames`): the runs, and where the next call starts.
    fn gpu_frames(&self, _gpu: u8, _from: (u32, u64)) -> Result<FrameRuns, RtError> {
        Err(RtError::Gpu)
    }
}

/// One `gpu_frames` answer: pages `first_page..+pages` of the object the
/// GPU server knows as `object` sit at frames `first_pfn..` of GPU `gpu`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrameRuns {
    pub gpu: u8,
    /// (object, first page, pages, first pfn).
    pub runs: Vec<(u32, u64, u32, u64)>,
    /// Where to ask again from, if there is more.
    pub next: Option<(u32, u64)>,
}

/// The GPU server's answer as the wire carries it.
impl From<ipc_protocol::interfaces::gpu_notify::FrameRuns> for FrameRuns {
    fn from(r: ipc_protocol::interfaces::gpu_notify::FrameRuns) -> Self {
        Self {
            gpu: r.gpu.get(),
            runs: r
                .runs
                .as_slice()
                .iter()
                .map(|x| (x.object.get(), x.first_page, x.pages, x.first_pfn))
                .collect(),
            next: r.more.then_some((r.next_object, r.next_page)),
        }
    }
}

/// A file's identity: its device (major, minor) and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub major: u32,
    pub minor: u32,
    pub ino: u64,
}

/// A client mapping of a file: `[start, end)` shows the file from byte
/// `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMapping {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub file: FileId,
}

/// Object pages `first_page..+pages` of view `view` live on as `new_view`,
/// moved from client address `from` to `to` (equal: left in place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartNote {
    pub view: Handle,
    pub new_view: Handle,
    pub first_page: usize,
    pub pages: usize,
    pub from: u64,
    pub to: u64,
}
