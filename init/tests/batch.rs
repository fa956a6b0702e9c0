//! Batch buffers in SVM memory, the way IGT's `xe_exec_system_allocator`
//! runs them: each batch lives in the malloc-like buffer next to the data
//! it writes, so the GPU faults on its own instructions and moves the
//! pages to VRAM; then the CPU checks every value, which moves them back.
//! Bad batches end with a typed status within a bound.

use std::time::{Duration, Instant};

use hw::xe::batch::Batch;
use hw::xe::mi::Compare;
use init::client::SvmBuffer;
use init::supervisor::{BootOptions, Clients, System};
use ipc_protocol::client::CallError;
use ipc_protocol::interfaces::gpu::{
    BindView, CreateVm, GpuError, GpuStats, JobDone, Stats, SubmitBatch, Wait,
};
use ipc_protocol::interfaces::pager::Snapshot;
use ipc_protocol::types::{JobId, JobStatus, PageCount, PageStateCode, VmId};

const WAIT_MS: u32 = 60_000;
/// IGT's `struct batch_data`: `batch[16]`, a u64 pad, then the data dword.
const SLOT_DATA: u64 = 72;
const SLOT_BYTES: u64 = 80;
const FENCE: u64 = 0xdead_beef_dead_beef;

fn boot() -> (System, Clients) {
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_svm"));
    std::env::set_var("SVM_BIN_DIR", exe.parent().unwrap());
    let mut opts = BootOptions::default();
    opts.device.vram_bytes = 128 << 20;
    let (s, c) = System::boot(&opts).unwrap();
    (s, c.unwrap())
}

/// An SVM buffer bound in a new VM at its CPU address.
fn bound_buffer(c: &Clients, bytes: usize) -> (VmId, SvmBuffer) {
    let vm = c.gpu.call(CreateVm {}).unwrap().vm;
    let buf = SvmBuffer::new(&c.pager, bytes).unwrap();
    c.gpu
        .call(BindView {
            vm,
            view: buf.view,
            gpu_addr: buf.addr,
            flags: 0,
        })
        .unwrap();
    (vm, buf)
}

/// Writes `words` into the buffer at GPU (= CPU) address `addr`.
fn put(buf: &SvmBuffer, addr: u64, words: &[u32]) {
    let at = ((addr - buf.addr) / 4) as usize;
    // SAFETY: inside the buffer; no GPU job runs while the CPU writes.
    let all = unsafe { buf.words() };
    all[at..at + words.len()].copy_from_slice(words);
}

/// The dword at `addr` inside a live buffer, read once the jobs are done.
fn get(addr: u64) -> u32 {
    // SAFETY: an aligned dword inside a live buffer.
    unsafe { std::ptr::read_volatile(addr as *const u32) }
}

fn get64(addr: u64) -> u64 {
    // SAFETY: an aligned qword inside a live buffer.
    unsafe { std::ptr::read_volatile(addr as *const u64) }
}

fn submit(c: &Clients, vm: VmId, batch: u64, fence: u64) -> JobId {
    c.gpu
        .call(SubmitBatch {
            vm,
            batch_addr: batch,
            fence_addr: fence,
            fence_value: FENCE,
        })
        .unwrap()
        .job
}

fn wait(c: &Clients, job: JobId) -> JobDone {
    c.gpu
        .call(Wait {
            job,
            timeout_ms: WAIT_MS,
        })
        .unwrap()
}

fn states(c: &Clients, buf: &SvmBuffer) -> Vec<PageStateCode> {
    let pages = buf.len as u64 / 4096;
    (0..pages)
        .step_by(512)
        .flat_map(|first| {
            let count = PageCount::new((pages - first).min(512) as u16).unwrap();
            c.pager
                .call(Snapshot {
                    object: buf.object,
                    first_page: first,
                    count,
                })
                .unwrap()
                .states
                .into_vec()
        })
        .collect()
}

fn stats(c: &Clients) -> GpuStats {
    c.gpu.call(Stats {}).unwrap()
}

/// IGT's value for slot `i`: random high bits, the index below bit 12.
fn value(i: u64) -> u32 {
    let mut x = (i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 29;
    (x as u32) << 12 | i as u32
}

/// Runs `n` IGT-style batches, slot `i` at `buf.addr + i * stride`, each
/// writing its own data dword and its own fence (at `fences + 8 * i`),
/// `wave` at a time; returns the faults the jobs took.
fn run_slots(c: &Clients, vm: VmId, buf: &SvmBuffer, n: u64, stride: u64, wave: u64) -> u64 {
    let fences = buf.addr + buf.len as u64 - 8 * n;
    for i in 0..n {
        let slot = buf.addr + i * stride;
        let batch = Batch::new().store_dword(slot + SLOT_DATA, value(i)).end();
        put(buf, slot, &batch);
    }
    let mut faults = 0;
    for first in (0..n).step_by(wave as usize) {
        let jobs: Vec<JobId> = (first..(first + wave).min(n))
            .map(|i| submit(c, vm, buf.addr + i * stride, fences + 8 * i))
            .collect();
        for job in jobs {
            let done = wait(c, job);
            assert_eq!(done.status, JobStatus::Completed, "{done:?}");
            faults += done.faults;
        }
    }
    // Every page a batch touched went to VRAM (no CPU access since).
    let s = states(c, buf);
    let page = |addr: u64| ((addr - buf.addr) / 4096) as usize;
    for i in 0..n {
        let slot = buf.addr + i * stride;
        for p in [page(slot), page(slot + SLOT_DATA), page(fences + 8 * i)] {
            assert_eq!(s[p], PageStateCode::Device, "page {p} of slot {i}");
        }
    }
    // The CPU checks every slot and every fence (pulling the pages back).
    for i in 0..n {
        let slot = buf.addr + i * stride;
        assert_eq!(get(slot + SLOT_DATA), value(i), "slot {i}");
        assert_eq!(get64(fences + 8 * i), FENCE, "fence {i}");
    }
    faults
}

#[test]
fn batches_in_svm_memory_fault_on_themselves_in_igt_shapes() {
    let (system, c) = boot();
    let t0 = Instant::now();

    // once: one batch, its data beside it.
    let (vm, buf) = bound_buffer(&c, 2 << 20);
    let before = stats(&c);
    let batch = Batch::new()
        .store_dword(buf.addr + SLOT_DATA, value(0))
        .end();
    put(&buf, buf.addr, &batch);
    let fence = buf.addr + 4096;
    let done = wait(&c, submit(&c, vm, buf.addr, fence));
    assert_eq!(done.status, JobStatus::Completed, "{done:?}");
    assert!(done.faults > 0, "the batch's own page must fault: {done:?}");
    let mid = stats(&c);
    assert!(mid.pages_to_vram > before.pages_to_vram, "{mid:?}");
    assert_eq!(states(&c, &buf)[0], PageStateCode::Device);
    assert_eq!(get(buf.addr + SLOT_DATA), value(0));
    assert_eq!(get64(fence), FENCE);
    assert!(
        stats(&c).pages_to_ram > mid.pages_to_ram,
        "the CPU read moved it back"
    );
    // The batch itself is still what the CPU wrote.
    assert_eq!(get(buf.addr), batch[0]);

    // many: 128 batches in consecutive slots, sharing pages.
    let (vm, buf) = bound_buffer(&c, 2 << 20);
    assert!(run_slots(&c, vm, &buf, 128, SLOT_BYTES, 128) > 0);

    // many-stride: 256 batches a page apart, in two waves (the device
    // keeps 192 job results).
    let (vm, buf) = bound_buffer(&c, 2 << 20);
    assert!(run_slots(&c, vm, &buf, 256, 4096, 128) > 0);

    // atomic inc from many batches at once: the exact sum.
    let (vm, buf) = bound_buffer(&c, 2 << 20);
    let counter = buf.addr + (1 << 20);
    let (batches, incs) = (64u64, 16);
    for b in 0..batches {
        let mut batch = Batch::new();
        for _ in 0..incs {
            batch = batch.atomic_inc(counter);
        }
        put(&buf, buf.addr + b * 256, &batch.end());
    }
    let jobs: Vec<JobId> = (0..batches)
        .map(|b| submit(&c, vm, buf.addr + b * 256, 0))
        .collect();
    for job in jobs {
        assert_eq!(wait(&c, job).status, JobStatus::Completed);
    }
    assert_eq!(get(counter), (batches * incs) as u32);
    assert_eq!(get(counter + 4), 0);

    assert!(
        t0.elapsed() < Duration::from_secs(300),
        "{:?}",
        t0.elapsed()
    );
    drop(c);
    assert!(system.shutdown().is_empty());
}

#[test]
fn bad_batches_end_with_a_typed_status_within_a_bound() {
    let (system, c) = boot();
    let (vm, buf) = bound_buffer(&c, 2 << 20);
    let data = buf.addr + 0x1000;

    // A batch at an address nothing maps: the fetch faults, xe-svm cannot
    // resolve it, the job ends Faulted.
    let t0 = Instant::now();
    let done = wait(&c, submit(&c, vm, 0x10_0000_0000, 0));
    assert_eq!(done.status, JobStatus::Faulted, "{done:?}");
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());

    // A good batch whose fence is unmapped: Faulted at the fence.
    put(&buf, buf.addr, &Batch::new().store_dword(data, 1).end());
    let done = wait(&c, submit(&c, vm, buf.addr, 0x10_0000_0000));
    assert_eq!(done.status, JobStatus::Faulted, "{done:?}");

    // An unknown instruction in SVM memory: BadCommand.
    put(&buf, buf.addr + 0x100, &[0x3f << 23, 0]);
    let done = wait(&c, submit(&c, vm, buf.addr + 0x100, 0));
    assert_eq!(done.status, JobStatus::BadCommand, "{done:?}");

    // A batch that loops forever, and one that waits forever: Hung.
    put(
        &buf,
        buf.addr + 0x200,
        &Batch::new().jump(buf.addr + 0x200).into_words(),
    );
    let never = Batch::new()
        .semaphore_wait(data + 4, Compare::Equal, 7)
        .end();
    put(&buf, buf.addr + 0x300, &never);
    let t0 = Instant::now();
    let looping = submit(&c, vm, buf.addr + 0x200, 0);
    let waiting = submit(&c, vm, buf.addr + 0x300, 0);
    assert_eq!(wait(&c, looping).status, JobStatus::Hung);
    assert_eq!(wait(&c, waiting).status, JobStatus::Hung);
    assert!(t0.elapsed() < Duration::from_secs(40), "{:?}", t0.elapsed());

    // Addresses xe-svm refuses before the device sees them.
    let refused = |batch_addr, fence_addr| {
        c.gpu.call(SubmitBatch {
            vm,
            batch_addr,
            fence_addr,
            fence_value: 1,
        })
    };
    let bad_range = Err(CallError::Server(GpuError::BadRange));
    assert_eq!(refused(buf.addr + 2, 0).map(|s| s.job), bad_range);
    assert_eq!(refused(1 << 47, 0).map(|s| s.job), bad_range);
    assert_eq!(refused(buf.addr, data + 4).map(|s| s.job), bad_range);
    assert_eq!(refused(buf.addr, u64::MAX - 7).map(|s| s.job), bad_range);
    let other_vm = VmId::raw(vm.get() + 1000);
    assert_eq!(
        c.gpu
            .call(SubmitBatch {
                vm: other_vm,
                batch_addr: buf.addr,
                fence_addr: 0,
                fence_value: 0,
            })
            .map(|s| s.job),
        Err(CallError::Server(GpuError::NoSuchVm))
    );

    // And the GPU still runs good batches.
    let done = wait(&c, submit(&c, vm, buf.addr, data + 8));
    assert_eq!(done.status, JobStatus::Completed, "{done:?}");
    assert_eq!((get(data), get64(data + 8)), (1, FENCE));
    drop(c);
    assert!(system.shutdown().is_empty());
}
