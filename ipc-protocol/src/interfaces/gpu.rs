//! `Gpu`: served by xe-svm, called by clients.

use crate::types::{BoId, JobId, JobStatus, KernelKind, ViewId, VmId};
use crate::wire::BoundedVec;

wire_struct!(
    pub struct CreateVm {}
);
wire_struct!(
    pub struct VmCreated {
        pub vm: VmId,
        pub asid: u32,
    }
);
wire_struct!(
    pub struct DestroyVm {
        pub vm: VmId,
    }
);
wire_struct!(
    /// Bind a view into a VM at `gpu_addr` (normally the view's CPU address).
    /// `flags`: [`BIND_READ_ONLY`] makes the bound range read-only for the
    /// GPU (as [`Protect`] with [`PROT_READ`] over it, set before the reply:
    /// a GPU write there ends its job `Faulted`); other bits are refused
    /// (`BadRange`). Without it the range keeps the access `Protect` gave
    /// its addresses (read-write by default).
    pub struct BindView {
        pub vm: VmId,
        pub view: ViewId,
        pub gpu_addr: u64,
        pub flags: u32,
    }
);
/// [`BindView`]: the GPU may only read the bound range.
pub const BIND_READ_ONLY: u32 = 1;
wire_struct!(
    pub struct Unbind {
        pub vm: VmId,
        pub gpu_addr: u64,
    }
);
wire_struct!(
    /// Run `kernel` over `[addr, addr + len)` with `threads` hardware threads.
    pub struct Submit {
        pub vm: VmId,
        pub kernel: KernelKind,
        pub addr: u64,
        pub len: u64,
        pub stride: u64,
        pub value: u32,
        pub threads: u16,
    }
);
wire_struct!(
    /// Run the batch buffer of MI instructions at `batch_addr` in `vm`
    /// (4-byte aligned, below 2^47); when it ends, write `fence_value` as a
    /// qword at `fence_addr` (8-byte aligned, below 2^47; 0: no fence)
    /// through the same page tables. The batch, its data and the fence may
    /// all be SVM memory: the GPU faults on them like on any access.
    pub struct SubmitBatch {
        pub vm: VmId,
        pub batch_addr: u64,
        pub fence_addr: u64,
        pub fence_value: u64,
    }
);
wire_struct!(
    pub struct Submitted {
        pub job: JobId,
    }
);
wire_struct!(
    pub struct Wait {
        pub job: JobId,
        pub timeout_ms: u32,
    }
);
wire_struct!(
    pub struct JobDone {
        pub status: JobStatus,
        pub faults: u64,
        pub elapsed_us: u64,
    }
);
wire_struct!(
    pub struct CreateBo {
        pub size_bytes: u64,
    }
);
wire_struct!(
    pub struct BoCreated {
        pub bo: BoId,
    }
);
wire_struct!(
    pub struct MapBo {
        pub vm: VmId,
        pub bo: BoId,
        pub gpu_addr: u64,
    }
);
wire_struct!(
    pub struct DestroyBo {
        pub bo: BoId,
    }
);
wire_struct!(
    /// Read a buffer object back: once its jobs are done, the server copies
    /// it into a new memfd (the one handle of the reply) the caller may map.
    pub struct ReadBo {
        pub bo: BoId,
    }
);
wire_struct!(
    pub struct BoData {
        pub size_bytes: u64,
    }
);
wire_struct!(
    /// Move `[gpu_addr, gpu_addr + len)` of `vm` to VRAM ahead of use and
    /// map it (xe's `VM_BIND_OP_PREFETCH`): each 2 MiB chunk goes the way
    /// of a GPU fault on every page of it. Page-aligned, not empty, at most
    /// 1 GiB. Pages another migration holds are skipped (rule 1), as are
    /// pages no binding covers; the reply counts the range's pages in VRAM
    /// afterwards.
    pub struct Prefetch {
        pub vm: VmId,
        pub gpu_addr: u64,
        pub len: u64,
    }
);
wire_struct!(
    /// The GPU's access to `[gpu_addr, gpu_addr + len)` of `vm`'s SVM
    /// bindings, as `mprotect` sets the CPU's (issue 16: read-only):
    /// `prot` is [`PROT_READ`] and [`PROT_WRITE`] bits (0: no access).
    /// A GPU write where `PROT_WRITE` is clear, or any access where `prot`
    /// is 0, is refused: the job ends `Faulted` and the fault log says why
    /// (a write access violation, or not present). Lowering the access
    /// unmaps the range's GPU mappings first, so no access through an old
    /// one follows the reply. Page-aligned, not empty; a VM keeps at most
    /// [`MAX_PROTECTED_RANGES`] ranges that are not read-write
    /// (`OverBudget` past it). Buffer-object mappings are not affected.
    pub struct Protect {
        pub vm: VmId,
        pub gpu_addr: u64,
        pub len: u64,
        pub prot: u32,
    }
);
/// [`Protect`]: the GPU may read.
pub const PROT_READ: u32 = 1;
/// [`Protect`]: the GPU may write (and run atomics).
pub const PROT_WRITE: u32 = 2;
/// Ranges of one VM whose access is not read-write, at most.
pub const MAX_PROTECTED_RANGES: usize = 256;
wire_struct!(
    pub struct Prefetched {
        /// Pages of the range in VRAM when the call returned.
        pub in_vram: u64,
        /// Pages of the range.
        pub pages: u64,
    }
);
wire_struct!(
    /// The VM's fault log (xe's `DRM_XE_VM_GET_PROPERTY_FAULTS`): the GPU
    /// faults that could not be served (an access where nothing is bound),
    /// newest last; the server keeps the last [`FAULT_LOG_LEN`] per VM.
    pub struct FaultLog {
        pub vm: VmId,
    }
);
wire_struct!(
    /// One unserved GPU fault.
    pub struct FaultRecord {
        /// The faulting GPU address (page-aligned).
        pub address: u64,
        /// 0 read, 1 write, 2 atomic (the hardware's access type).
        pub access: u8,
        /// 0 not present, 1 write access violation, 2 atomic violation.
        pub fault_type: u8,
        /// The page-table level at which the walk failed.
        pub level: u8,
        /// Microseconds since the GPU server started.
        pub time_us: u64,
    }
);
wire_struct!(
    pub struct Faults {
        pub faults: BoundedVec<FaultRecord, FAULT_LOG_LEN>,
        /// Unserved faults of the VM since it was created (the log keeps
        /// the last ones).
        pub total: u64,
    }
);
/// Unserved faults a VM's log keeps.
pub const FAULT_LOG_LEN: usize = 64;
wire_struct!(
    pub struct Stats {}
);
wire_struct!(
    /// Migrations of one page size (issue 16 item 7). A GPU fault's (or a
    /// prefetch's) migration moves a 4 KiB, 64 KiB or 2 MiB region to VRAM;
    /// a copy back to RAM counts in the smallest size its pages fit.
    pub struct SizeStat {
        /// 4096, 65536 or 2097152.
        pub page_bytes: u64,
        /// Migrations to VRAM of this size, the bytes they moved, and the
        /// microseconds they took (collect to finalize).
        pub to_vram: u64,
        pub to_vram_bytes: u64,
        pub to_vram_us: u64,
        /// Copies back to RAM, their bytes and microseconds.
        pub to_ram: u64,
        pub to_ram_bytes: u64,
        pub to_ram_us: u64,
    }
);
wire_struct!(
    pub struct GpuStats {
        pub vram_total: u64,
        pub vram_used: u64,
        pub gpu_faults: u64,
        /// Faults the hardware prefetcher raised: acknowledged and dropped.
        pub prefetch_faults: u64,
        pub pages_to_vram: u64,
        pub pages_to_ram: u64,
        pub bo_evictions: u64,
        pub bo_restores: u64,
        pub bo_vram_bytes: u64,
        pub invalidations: u64,
        /// Per page size: 4 KiB, 64 KiB, 2 MiB.
        pub by_size: BoundedVec<SizeStat, 3>,
    }
);
wire_struct!(
    pub struct Done {}
);
wire_struct!(
    /// What the caller's session holds now, and the server-wide totals.
    pub struct Accounting {}
);
wire_struct!(
    /// The caller's usage against its budget (`vms` .. `metadata_bytes`),
    /// then what the whole server holds: live sessions, VMs, buffer
    /// objects, jobs still running, objects holding a DMA slot.
    pub struct GpuUsage {
        pub vms: u64,
        pub bos: u64,
        pub bo_bytes: u64,
        pub jobs_in_flight: u64,
        pub dma_slots: u64,
        pub metadata_bytes: u64,
        pub sessions: u64,
        pub all_vms: u64,
        pub all_bos: u64,
        pub all_jobs_in_flight: u64,
        pub all_dma_slots: u64,
    }
);

interface! {
    /// The GPU server's client interface.
    interface Gpu = 4;
    errors GpuError {
        NoSuchVm = 1,
        NoSuchView = 2,
        NoSuchJob = 3,
        NoSuchBo = 4,
        /// Jobs still run against the binding.
        Busy = 5,
        OutOfVram = 6,
        /// The GPU address range overlaps another binding.
        AddressInUse = 7,
        /// A zero, unaligned or non-canonical range.
        BadRange = 8,
        /// The pager did not answer.
        PagerUnavailable = 9,
        OutOfMetadata = 10,
        /// The device stopped responding.
        DeviceLost = 11,
        /// The operation is not implemented by this server yet.
        NotSupported = 12,
        /// The caller reached one of its budgets (README, "Budgets").
        OverBudget = 13,
        /// The job ran on a GPU server that has since died and been
        /// restarted: the device was reset and the job's work is lost
        /// (submit it again). Its id carries the server generation that
        /// took it.
        DeviceReset = 14,
    }
    calls {
        1 => CreateVm [0] -> VmCreated [0] needs GPU_VM;
        2 => DestroyVm [0] -> Done [0] needs GPU_VM;
        3 => BindView [0] -> Done [0] needs GPU_VM;
        4 => Unbind [0] -> Done [0] needs GPU_VM;
        5 => Submit [0] -> Submitted [0] needs GPU_SUBMIT;
        6 => Wait [0] -> JobDone [0] needs GPU_SUBMIT, idempotent;
        7 => CreateBo [0] -> BoCreated [0] needs GPU_BO;
        8 => MapBo [0] -> Done [0] needs GPU_BO;
        9 => DestroyBo [0] -> Done [0] needs GPU_BO;
        10 => Stats [0] -> GpuStats [0] needs GPU_STATS, idempotent;
        11 => ReadBo [0] -> BoData [1] needs GPU_BO, idempotent;
        12 => SubmitBatch [0] -> Submitted [0] needs GPU_SUBMIT;
        13 => Accounting [0] -> GpuUsage [0] needs GPU_STATS, idempotent;
        14 => Prefetch [0] -> Prefetched [0] needs GPU_VM;
        15 => FaultLog [0] -> Faults [0] needs GPU_STATS, idempotent;
        16 => Protect [0] -> Done [0] needs GPU_VM, idempotent;
    }
    notifications {}
}
