//! The C API (`include/svm.h`): typed status codes, never a panic or an
//! abort across the boundary (each entry point catches unwinding and
//! answers `SVM_E_INTERNAL`).

use core::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

use hw::xe::batch::Batch;
use ipc_protocol::interfaces::gpu::{
    BindView, CreateVm, DestroyVm, FaultLog, Prefetch as GpuPrefetch, Stats, Submit, SubmitBatch,
    Wait,
};
use ipc_protocol::interfaces::pager::{Accounting, Advise, Prefetch, Snapshot};
use ipc_protocol::types::{
    Advice, GpuId, JobId, JobStatus, KernelKind, Location, ObjectId, PageCount, PageStateCode, VmId,
};

use crate::conn::{conn, connect_from_env};
use crate::error::SvmError;
use crate::heap::HEAP;
use crate::pages::{self, PAGE};

type R = Result<(), SvmError>;

fn entry(f: impl FnOnce() -> R) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => e.code(),
        Err(_) => SvmError::Internal.code(),
    }
}

/// Writes `v` through a C out-pointer.
fn put<T>(out: *mut T, v: T) -> R {
    if out.is_null() {
        return Err(SvmError::Invalid);
    }
    // SAFETY: the caller passed a writable pointer (checked non-null).
    unsafe { out.write(v) };
    Ok(())
}

#[no_mangle]
pub extern "C" fn svm_connect() -> i32 {
    entry(|| connect_from_env().map(|_| ()))
}

#[no_mangle]
pub extern "C" fn svm_connected() -> i32 {
    i32::from(conn().is_ok())
}

#[no_mangle]
pub extern "C" fn svm_owns(addr: *const c_void) -> i32 {
    i32::from(pages::owns(addr as u64))
}

#[no_mangle]
pub extern "C" fn svm_strerror(code: i32) -> *const c_char {
    SvmError::text(code).as_ptr().cast()
}

/// A VM that mirrors this process's pager memory: every region is bound
/// at its CPU address, now and as new regions come.
#[no_mangle]
pub extern "C" fn svm_vm_create_mirror(vm_out: *mut u32) -> i32 {
    entry(|| {
        let c = conn()?;
        if vm_out.is_null() {
            return Err(SvmError::Invalid);
        }
        HEAP.with(|h| {
            let vm = c.gpu.call(CreateVm {})?.vm;
            let mut pages = h.pages();
            for r in pages.regions() {
                let bind = BindView {
                    vm,
                    view: r.view,
                    gpu_addr: r.addr,
                    flags: 0,
                };
                if let Err(e) = c.gpu.call(bind) {
                    let _ = c.gpu.call(DestroyVm { vm });
                    return Err(e.into());
                }
            }
            if let Err(e) = pages.protect_new_mirror(vm) {
                let _ = c.gpu.call(DestroyVm { vm });
                return Err(e);
            }
            pages.mirrors.push(vm);
            put(vm_out, vm.get())
        })
    })
}

#[no_mangle]
pub extern "C" fn svm_vm_destroy(vm: u32) -> i32 {
    entry(|| {
        let c = conn()?;
        HEAP.with(|h| {
            c.gpu.call(DestroyVm { vm: VmId::raw(vm) })?;
            h.pages().mirrors.retain(|v| v.get() != vm);
            Ok(())
        })
    })
}

/// Runs the batch buffer at `batch` (any GPU-reachable address, 4-byte
/// aligned); when it ends the GPU writes `fence_value` at `fence` (8-byte
/// aligned; null: no fence).
#[no_mangle]
pub extern "C" fn svm_submit_batch(
    vm: u32,
    batch: *const c_void,
    fence: *mut u64,
    fence_value: u64,
    job_out: *mut u64,
) -> i32 {
    entry(|| {
        if batch.is_null() || job_out.is_null() {
            return Err(SvmError::Invalid);
        }
        let s = SubmitBatch {
            vm: VmId::raw(vm),
            batch_addr: batch as u64,
            fence_addr: fence as u64,
            fence_value,
        };
        let job = conn()?.gpu.call(s)?.job;
        put(job_out, job.get())
    })
}

/// Runs one of the built-in kernels (`svm_kernel`) over `[addr, addr+len)`.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn svm_submit_kernel(
    vm: u32,
    kernel: u32,
    addr: *mut c_void,
    len: u64,
    stride: u64,
    value: u32,
    threads: u32,
    job_out: *mut u64,
) -> i32 {
    entry(|| {
        let kernel = KernelKind::ALL
            .iter()
            .copied()
            .find(|k| *k as u32 == kernel)
            .ok_or(SvmError::Invalid)?;
        let threads = u16::try_from(threads).map_err(|_| SvmError::Invalid)?;
        let s = Submit {
            vm: VmId::raw(vm),
            kernel,
            addr: addr as u64,
            len,
            stride,
            value,
            threads,
        };
        let job = conn()?.gpu.call(s)?.job;
        put(job_out, job.get())
    })
}

/// What `svm_wait` reports (`svm.h`'s `svm_job_result`).
#[repr(C)]
pub struct JobResult {
    pub status: u32,
    pub faults: u64,
    pub elapsed_us: u64,
}

#[no_mangle]
pub extern "C" fn svm_wait(job: u64, timeout_ms: u32, out: *mut JobResult) -> i32 {
    entry(|| {
        let done = conn()?.gpu.call(Wait {
            job: JobId::raw(job),
            timeout_ms,
        })?;
        if !out.is_null() {
            put(
                out,
                JobResult {
                    status: done.status as u32,
                    faults: done.faults,
                    elapsed_us: done.elapsed_us,
                },
            )?;
        }
        match done.status {
            JobStatus::Completed => Ok(()),
            JobStatus::Faulted => Err(SvmError::JobFaulted),
            JobStatus::Running => Err(SvmError::Timeout),
            JobStatus::BadCommand | JobStatus::Hung => Err(SvmError::JobFailed),
        }
    })
}

/// The region, object and first page of `[addr, addr + len)`, which must
/// lie in one region; and its page count.
fn object_range(addr: *const c_void, len: usize) -> Result<(ObjectId, u64, u64), SvmError> {
    let a = addr as u64;
    let pages = pages::page_len(len as u64).ok_or(SvmError::Invalid)? / PAGE;
    HEAP.with(|h| {
        let p = h.pages();
        let r = p
            .regions()
            .iter()
            .find(|r| a >= r.addr && a - r.addr < r.len)
            .ok_or(SvmError::Invalid)?;
        let first = (a - r.addr) / PAGE;
        let end = first.checked_add(pages).ok_or(SvmError::Invalid)?;
        if end > r.len / PAGE {
            return Err(SvmError::Invalid);
        }
        Ok((r.object, first, pages))
    })
}

#[no_mangle]
pub extern "C" fn svm_advise(addr: *const c_void, len: usize, advice: u32) -> i32 {
    entry(|| {
        let advice = Advice::ALL
            .iter()
            .copied()
            .find(|a| *a as u32 == advice)
            .ok_or(SvmError::Invalid)?;
        let (object, first_page, pages) = object_range(addr, len)?;
        conn()?.pager.call(Advise {
            object,
            first_page,
            pages,
            advice,
        })?;
        Ok(())
    })
}

/// Moves `[addr, addr + len)` to `location` (1: system, 2: device) ahead
/// of use, chunk by chunk.
#[no_mangle]
pub extern "C" fn svm_prefetch(addr: *const c_void, len: usize, location: u32) -> i32 {
    entry(|| {
        let to = Location::ALL
            .iter()
            .copied()
            .find(|l| *l as u32 == location)
            .ok_or(SvmError::Invalid)?;
        let (object, first, pages) = object_range(addr, len)?;
        let c = conn()?;
        if to == Location::Device {
            return prefetch_to_device(c, addr as u64 & !(PAGE - 1), pages * PAGE);
        }
        let mut page = first;
        while page < first + pages {
            let n = (first + pages - page).min(512);
            c.pager.call(Prefetch {
                object,
                first_page: page,
                count: PageCount::new(n as u16).ok_or(SvmError::Invalid)?,
                to,
                gpu: GpuId::new(0).ok_or(SvmError::Internal)?,
            })?;
            page += n;
        }
        Ok(())
    })
}

/// To VRAM is a VM operation (`Gpu::Prefetch`): in this process's first
/// mirror VM, where every region is bound at its CPU address. No mirror
/// VM: nowhere to map it, `SVM_E_NOT_FOUND`.
fn prefetch_to_device(c: &crate::conn::Conn, addr: u64, len: u64) -> R {
    let vm = HEAP.with(|h| h.pages().mirrors.first().copied());
    let vm = vm.ok_or(SvmError::NotFound)?;
    c.gpu.call(GpuPrefetch {
        vm,
        gpu_addr: addr,
        len,
    })?;
    Ok(())
}

/// Drops the data of whole pages `[addr, addr + len)` of pager memory:
/// they read as zeros next, nothing is copied back from VRAM.
#[no_mangle]
pub extern "C" fn svm_discard(addr: *mut c_void, len: usize) -> i32 {
    entry(|| {
        if !(addr as u64).is_multiple_of(PAGE) || !(len as u64).is_multiple_of(PAGE) || len == 0 {
            return Err(SvmError::Invalid);
        }
        HEAP.with(|h| h.pages().discard(addr as u64, len as u64))
    })
}

/// Where each of `pages` pages from `addr` is: 0 never touched, 1 system
/// memory, 2 VRAM, 3 migrating.
#[no_mangle]
pub extern "C" fn svm_page_states(addr: *const c_void, pages: usize, out: *mut u8) -> i32 {
    entry(|| {
        if out.is_null() || !(addr as u64).is_multiple_of(PAGE) {
            return Err(SvmError::Invalid);
        }
        let len = pages.checked_mul(PAGE as usize).ok_or(SvmError::Invalid)?;
        let (object, first, n) = object_range(addr, len)?;
        let c = conn()?;
        let mut done = 0u64;
        while done < n {
            let k = (n - done).min(512);
            let states = c.pager.call(Snapshot {
                object,
                first_page: first + done,
                count: PageCount::new(k as u16).ok_or(SvmError::Invalid)?,
            })?;
            for (i, s) in states.states.as_slice().iter().enumerate() {
                let v = match s {
                    PageStateCode::Empty => 0,
                    PageStateCode::System => 1,
                    PageStateCode::Device => 2,
                    PageStateCode::Migrating => 3,
                };
                // SAFETY: the caller passed room for `pages` bytes.
                unsafe { out.add(done as usize + i).write(v) };
            }
            done += k;
        }
        Ok(())
    })
}

/// `svm.h`'s `svm_gpu_stats`.
#[repr(C)]
pub struct GpuStats {
    pub vram_total: u64,
    pub vram_used: u64,
    pub gpu_faults: u64,
    pub pages_to_vram: u64,
    pub pages_to_ram: u64,
    pub invalidations: u64,
}

#[no_mangle]
pub extern "C" fn svm_gpu_stats(out: *mut GpuStats) -> i32 {
    entry(|| {
        let s = conn()?.gpu.call(Stats {})?;
        put(
            out,
            GpuStats {
                vram_total: s.vram_total,
                vram_used: s.vram_used,
                gpu_faults: s.gpu_faults,
                pages_to_vram: s.pages_to_vram,
                pages_to_ram: s.pages_to_ram,
                invalidations: s.invalidations,
            },
        )
    })
}

/// `svm.h`'s `svm_fault_record`: one GPU fault that could not be served.
#[repr(C)]
pub struct FaultRecord {
    pub address: u64,
    pub access: u32,
    pub fault_type: u32,
    pub level: u32,
    pub time_us: u64,
}

/// Copies up to `max` of `vm`'s logged faults (oldest first) to `out`;
/// `*count` gets how many were copied, `*total` (may be NULL) how many
/// the VM has had.
#[no_mangle]
pub extern "C" fn svm_fault_log(
    vm: u32,
    out: *mut FaultRecord,
    max: usize,
    count: *mut usize,
    total: *mut u64,
) -> i32 {
    entry(|| {
        if count.is_null() || (out.is_null() && max > 0) {
            return Err(SvmError::Invalid);
        }
        let log = conn()?.gpu.call(FaultLog { vm: VmId::raw(vm) })?;
        let faults = log.faults.into_vec();
        let n = faults.len().min(max);
        for (i, f) in faults.iter().take(n).enumerate() {
            let r = FaultRecord {
                address: f.address,
                access: f.access.into(),
                fault_type: f.fault_type.into(),
                level: f.level.into(),
                time_us: f.time_us,
            };
            // SAFETY: the caller passed room for `max` records; i < n <= max.
            unsafe { out.add(i).write(r) };
        }
        put(count, n)?;
        if !total.is_null() {
            put(total, log.total)?;
        }
        Ok(())
    })
}

/// `svm.h`'s `svm_pager_totals` (the pager's server-wide accounting).
#[repr(C)]
pub struct PagerTotals {
    pub objects: u64,
    pub object_bytes: u64,
    pub views: u64,
    pub spaces: u64,
}

#[no_mangle]
pub extern "C" fn svm_pager_totals(out: *mut PagerTotals) -> i32 {
    entry(|| {
        let t = conn()?.pager.call(Accounting {})?;
        put(
            out,
            PagerTotals {
                objects: t.objects,
                object_bytes: t.object_bytes,
                views: t.views,
                spaces: t.spaces,
            },
        )
    })
}

/// Copies `b`'s words to `out` (room for `cap`); returns the count, or 0
/// when they do not fit.
fn emit(b: Batch, out: *mut u32, cap: usize) -> usize {
    let words = b.into_words();
    if out.is_null() || words.len() > cap {
        return 0;
    }
    // SAFETY: `out` has room for `cap` words (the caller's promise).
    unsafe { core::ptr::copy_nonoverlapping(words.as_ptr(), out, words.len()) };
    words.len()
}

fn batch_word(f: impl FnOnce() -> Batch, out: *mut u32, cap: usize) -> usize {
    catch_unwind(AssertUnwindSafe(|| emit(f(), out, cap))).unwrap_or(0)
}

/// `MI_STORE_DATA_IMM` of one dword.
#[no_mangle]
pub extern "C" fn svm_batch_store_dword(out: *mut u32, cap: usize, addr: u64, value: u32) -> usize {
    batch_word(|| Batch::new().store_dword(addr, value), out, cap)
}

/// `MI_STORE_DATA_IMM` of one qword.
#[no_mangle]
pub extern "C" fn svm_batch_store_qword(out: *mut u32, cap: usize, addr: u64, value: u64) -> usize {
    batch_word(|| Batch::new().store_qword(addr, value), out, cap)
}

/// `MI_ATOMIC` add of `value` to the dword at `addr`.
#[no_mangle]
pub extern "C" fn svm_batch_atomic_add(out: *mut u32, cap: usize, addr: u64, value: u32) -> usize {
    batch_word(|| Batch::new().atomic_add(addr, value), out, cap)
}

/// `MI_BATCH_BUFFER_END`.
#[no_mangle]
pub extern "C" fn svm_batch_end(out: *mut u32, cap: usize) -> usize {
    batch_word(
        || Batch::new().push(hw::xe::mi::Instruction::BatchBufferEnd),
        out,
        cap,
    )
}
