//! The pager as the GPU server's peer (issue 14, no hangs): a pager that
//! is gone or stops answering ends the GPU faults that need it instead of
//! replaying them forever, and a pager that comes back leaves no page
//! locked. Its own test binary: a stopped pager blocks every `fork` of a
//! process with ranges it registered (the kernel waits for the fork event
//! to be read), so these must not share a process with tests that start
//! servers meanwhile.

use std::time::{Duration, Instant};

use init::supervisor::{BootOptions, Clients, System};

/// One system at a time in this process (see the module note).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn boot_with(opts: &BootOptions) -> (System, Clients) {
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_svm"));
    std::env::set_var("SVM_BIN_DIR", exe.parent().unwrap());
    let (s, c) = System::boot(opts).unwrap();
    (s, c.unwrap())
}

/// A 32 MiB system whose servers' deaths are reported, not restarted.
fn boot_reporting(gpu_args: &[&str], pager_args: &[&str]) -> (System, Clients) {
    let mut opts = BootOptions::default();
    opts.device.vram_bytes = 32 << 20;
    opts.supervision = init::supervisor::Supervision::Report;
    opts.gpu_args = gpu_args.iter().map(|a| a.to_string()).collect();
    opts.pager_args = pager_args.iter().map(|a| a.to_string()).collect();
    boot_with(&opts)
}

/// A VM and a pager buffer of `len` bytes bound in it at its address.
fn bound_buffer(c: &Clients, len: usize) -> (ipc_protocol::types::VmId, init::client::SvmBuffer) {
    use ipc_protocol::interfaces::gpu::{BindView, CreateVm};
    let vm = c.gpu.call(CreateVm {}).unwrap().vm;
    let buf = init::client::SvmBuffer::new(&c.pager, len).unwrap();
    let bind = BindView {
        vm,
        view: buf.view,
        gpu_addr: buf.addr,
        flags: 0,
    };
    c.gpu.call(bind).unwrap();
    (vm, buf)
}

/// Submits `kernel` over `len` bytes at `addr` (4 hardware threads, +1 a
/// word) and waits for it up to 30 s; its status and how long the wait
/// took.
fn run_and_wait(
    c: &Clients,
    vm: ipc_protocol::types::VmId,
    kernel: ipc_protocol::types::KernelKind,
    addr: u64,
    len: u64,
) -> (ipc_protocol::types::JobStatus, Duration) {
    use ipc_protocol::interfaces::gpu::{Submit, Wait};
    let submit = Submit {
        vm,
        kernel,
        addr,
        len,
        stride: 4,
        value: 1,
        threads: 4,
    };
    let job = c.gpu.call(submit).unwrap().job;
    let started = Instant::now();
    let wait = Wait {
        job,
        timeout_ms: 30_000,
    };
    let done = c.gpu.call(wait).unwrap();
    (done.status, started.elapsed())
}

/// No hang (issue 14): once the pager is gone, a GPU fault that needs it
/// (a page to collect) fails and the job ends `Faulted` within the wait,
/// instead of replaying forever; the GPU server keeps serving.
#[test]
fn a_gpu_fault_fails_once_the_pager_is_gone() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    use ipc_protocol::interfaces::gpu::Stats;
    use ipc_protocol::types::{JobStatus, KernelKind};
    let (mut system, c) = boot_reporting(&[], &[]);
    let (vm, buf) = bound_buffer(&c, 64 << 10);
    system.kill("pager").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let (status, took) = run_and_wait(&c, vm, KernelKind::TouchPages, buf.addr, 64 << 10);
    assert_eq!(status, JobStatus::Faulted, "after {took:?}");
    assert!(c.gpu.call(Stats {}).is_ok(), "the GPU server still answers");
    // The buffer's pages belong to a dead pager: never touch or detach it.
    std::mem::forget(buf);
    drop(c);
    let _ = system.shutdown();
}

/// A pager that stops answering (SIGSTOP) does not hang a GPU job: the
/// GPU server's call deadline fails the fault (`Faulted`); once the pager
/// runs again, the collect it made for a GPU server that gave up is undone
/// after its lease, so the pages are not locked forever: the CPU reads
/// every word as it was, and the GPU migrates them again.
#[test]
fn a_gpu_fault_ends_when_the_pager_hangs_and_its_pages_come_back() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    use ipc_protocol::types::{JobStatus, KernelKind};
    use rustix::process::{kill_process, Pid, Signal};
    let (system, c) = boot_reporting(&["--pager-timeout-ms=1500"], &["--collect-lease-ms=3000"]);
    let len = 64 << 10;
    let (vm, buf) = bound_buffer(&c, len as usize);
    // SAFETY: ours until `release`; the GPU touches it only inside jobs
    // we wait for.
    let words = unsafe { buf.words() };
    for (i, w) in words.iter_mut().enumerate() {
        *w = i as u32 ^ 0x5a5a_0000;
    }
    let pager = Pid::from_raw(system.pid("pager").unwrap() as i32).unwrap();
    kill_process(pager, Signal::STOP).unwrap();
    let increment = |c: &Clients| run_and_wait(c, vm, KernelKind::IncrementAll, buf.addr, len);
    let (status, took) = increment(&c);
    kill_process(pager, Signal::CONT).unwrap();
    assert_eq!(status, JobStatus::Faulted, "after {took:?}");
    assert!(took < Duration::from_secs(10), "the fault waited {took:?}");
    // The CPU reads every word as written (waiting, bounded, for the
    // lease to unlock what the stopped pager had collected).
    for (i, w) in words.iter().enumerate() {
        // SAFETY: inside the buffer; volatile: the pager maps its pages.
        let v = unsafe { std::ptr::read_volatile(w) };
        assert_eq!(v, i as u32 ^ 0x5a5a_0000, "word {i}");
    }
    // And the GPU gets the pages again.
    assert_eq!(increment(&c).0, JobStatus::Completed);
    for (i, w) in words.iter().enumerate() {
        // SAFETY: as above.
        let v = unsafe { std::ptr::read_volatile(w) };
        assert_eq!(
            v,
            (i as u32 ^ 0x5a5a_0000) + 1,
            "word {i} after the GPU pass"
        );
    }
    buf.release(&c.pager).unwrap();
    drop(c);
    let _ = system.shutdown();
}
