//! What the GPU server's SVM core needs from the world around it: the
//! device (copy engine, TLB invalidation, page tables), the pager
//! (`PagerMigrate`) and mm-server (`Pressure`). The host runtime
//! (`host.rs`) implements it with the device model and IPC clients; the
//! deterministic simulation (`sim/`) with simulated actors. The core's
//! rules (5, 6, 8, 9) live in `server.rs` and `views.rs`, once, for both.

use std::time::Duration;

use hw::xe::pte::{LeafAccess, PageSize, Target};
use ipc_protocol::interfaces::pager_migrate::{
    Collect, Collected, Finalize, Finalized, Resident, ResidentRuns,
};
use ipc_protocol::types::{GpuId, World};

/// A call to the pager that got no answer or an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortError;

/// Why a `Finalize` did not go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalizeError {
    /// The pager answered no (the object went, the collect's lease ran
    /// out) or is gone: it did not take the pages, the copies are nobody's.
    Refused,
    /// No answer within the call's deadline: whether the pager took the
    /// pages is unknown, so the copies and their frames must stay (a page
    /// the pager names in VRAM must be there); if it did not, they are
    /// leaked, never freed under a page that uses them.
    Unanswered,
    /// The pager was restarted before it answered (issue 14): whether it
    /// took the pages is unknown, so the frames stay, mapped nowhere. The
    /// restarted pager sorts them out before it serves (a hole in the
    /// memfd: the page is in VRAM at that frame; data: it frees the frame,
    /// `GpuNotify::Frames`), and the replayed fault maps what it decided.
    Restarted,
}

pub trait Platform: Send + Sync + 'static {
    /// One GPU VM's page tables.
    type Tables: Send + 'static;

    /// Copies `(source, destination, bytes)` runs in device address space
    /// (VRAM frames or DMA-mapped system memory). `false`: the copy engine
    /// reported an error; `Err`: the device is gone.
    fn copy(&self, copies: &[(u64, u64, u64)]) -> Result<bool, PortError>;
    /// Invalidates `[va, va + len)` of `asid` in every TLB and returns once
    /// accesses in flight through old entries have drained.
    fn invalidate_tlb(&self, asid: u32, va: u64, len: u64) -> Result<(), PortError>;
    /// Page tables for a new VM `asid`, installed as its context.
    fn new_tables(&self, asid: u32) -> Result<Self::Tables, PortError>;
    /// Maps `va` to `addr`; without `access.writable` a GPU write faults (a
    /// write access violation), without `access.atomics` a GPU atomic does
    /// (an atomic access violation), instead of landing.
    fn map(
        &self,
        t: &mut Self::Tables,
        va: u64,
        addr: u64,
        size: PageSize,
        target: Target,
        access: LeafAccess,
    );
    /// Clears the leaves of `[va, va + len)`; `true` when one was present
    /// (then the caller invalidates the TLB before it lets go of the state
    /// lock). `false` means no translation there can be cached: every
    /// clearing of a present leaf is followed by an invalidation under the
    /// same lock, and nothing was mapped since.
    fn unmap(&self, t: &mut Self::Tables, va: u64, len: u64) -> bool;
    /// The VM is gone: its context is cleared, its TLB entries dropped and
    /// its page tables freed.
    fn drop_tables(&self, asid: u32, t: Self::Tables);
    /// Gives back the DMA slot of an object no VM binds any more.
    fn dma_unmap(&self, slot: u32);
    /// Device address of a 2 MiB zero buffer (the source for EMPTY pages).
    fn zero_source(&self) -> u64;

    /// `PagerMigrate::Collect` (rule 9: called with no lock of ours held).
    fn collect(&self, c: Collect) -> Result<Collected, PortError>;
    /// `PagerMigrate::Finalize`.
    /// The pages of the chunk now in our VRAM (`device_pages`), and those
    /// whose frames a late peer push may still write (`late`).
    fn finalize(&self, f: Finalize) -> Result<Finalized, FinalizeError>;
    /// `PagerMigrate::Resident`: one page of the runs the pager records in
    /// our VRAM (a restarted server's take-over, `restart.rs`).
    fn resident(&self, r: Resident) -> Result<ResidentRuns, PortError>;
    /// Whether the last `collect` found the pager gone or unresponsive
    /// (no answer within the call's deadline), not merely failing: a fault
    /// that needs it cannot be served until a pager answers again, so it
    /// fails instead of replaying forever (issue 14: no hangs).
    fn pager_gone(&self) -> bool {
        false
    }

    /// Whether the pager retired this GPU (`MigrateError::Retired`: the
    /// device is going away and nothing moves into its VRAM any more): a
    /// GPU fault that needs a migration fails instead of replaying.
    fn retired(&self) -> bool {
        false
    }

    /// The pager's generation as last announced to us (0: never, its
    /// first); sent with each `Collect` so that a restarted pager refuses
    /// one its predecessor left queued.
    fn pager_generation(&self) -> u32 {
        0
    }

    /// Before the first `GpuNotify::Frames` answer to a restarted pager
    /// (issue 14, `frames.rs`): waits until every `GpuNotify` request
    /// read before that one was handled (a dead generation's `FreePages`
    /// or `MigrateToRam` left in the socket must not act after it) and
    /// `migrating()` is false (no migration whose collect was answered
    /// is still waiting for its finalize's answer). `false`: it gave up
    /// at its bound.
    fn quiesce_for_frames(&self, _migrating: &dyn Fn() -> bool) -> bool {
        true
    }

    /// The GPU this device is, as the pager names GPUs (0 with one GPU).
    fn gpu(&self) -> GpuId {
        GpuId::ZERO
    }

    /// The device address of this device's peer window on GPU `gpu`'s
    /// VRAM (several GPUs, issue 17), if one is mapped.
    fn peer_window(&self, gpu: u8) -> Option<u64> {
        let _ = gpu;
        None
    }

    /// Whether an mm-server is there to wait in.
    fn has_broker(&self) -> bool;
    /// Waits in mm-server for `bytes` of VRAM for `world` (rule 5: the
    /// caller holds no page or reservation lock); the bytes granted, 0 when
    /// refused, timed out or gone.
    fn reserve(&self, world: World, bytes: u64, timeout_ms: u32) -> u64;
    fn release(&self, world: World, bytes: u64);
    /// Tells mm-server what each world holds now (one-way).
    fn report_usage(&self, bo_bytes: u64, svm_bytes: u64);

    /// The BO world's SRAM pool, where evicted buffer objects live: its
    /// device address and bytes (`(0, 0)`: no pool, no buffer objects).
    fn bo_pool(&self) -> (u64, u64) {
        (0, 0)
    }
    /// Zeroes `[addr, addr + len)` of the SRAM pool (a new object's home).
    fn clear_bo_home(&self, addr: u64, len: u64);

    /// Whether device job `job` (0: none) has retired, so nothing it does
    /// can reach a binding any more. Where there are no jobs: always.
    fn job_retired(&self, job: u32) -> bool {
        let _ = job;
        true
    }
    /// Waits up to `timeout` for `job` to retire; whether it did.
    fn wait_job(&self, job: u32, timeout: Duration) -> bool {
        let _ = timeout;
        self.job_retired(job)
    }
    /// The result of a retired job (`None`: still running, or unknown).
    fn job_result(&self, job: u32) -> Option<(u32, u32)> {
        let _ = job;
        None
    }
}
