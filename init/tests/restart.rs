//! Supervision (issue 14): a restartable server that dies is started again
//! on the same endpoints as its next generation, announces itself, and the
//! system goes on with every word right. A crash loop is stopped.

use std::time::{Duration, Instant};

use init::oversub::{self, Config};
use init::supervisor::{BootOptions, Clients, System};
use ipc_protocol::client::CallError;
use ipc_protocol::interfaces::pressure::Status;
use ipc_protocol::transport::TransportError;

fn boot(vram_mib: u64) -> (System, Clients) {
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_svm"));
    std::env::set_var("SVM_BIN_DIR", exe.parent().unwrap());
    let mut opts = BootOptions::default();
    opts.device.vram_bytes = vram_mib << 20;
    let (s, c) = System::boot(&opts).unwrap();
    (s, c.unwrap())
}

/// The status endpoint answers again after a restart (a call caught by the
/// announcement is `Status`, idempotent, so the stub sends it again).
fn status_after_restart(c: &Clients) -> ipc_protocol::interfaces::pressure::PressureStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match c.pressure.call(Status {}) {
            Ok(s) => return s,
            Err(CallError::Transport(TransportError::PeerRestarted(_)))
                if Instant::now() < deadline => {}
            Err(e) => panic!("mm-server did not come back: {e}"),
        }
    }
}

#[test]
fn a_killed_mm_server_comes_back_and_eviction_goes_on() {
    let (mut system, c) = boot(32);
    assert_eq!(system.generation("mm-server"), Some(1));
    system.kill("mm-server").unwrap();
    assert!(
        system.wait_generation("mm-server", 2, Duration::from_secs(10)),
        "mm-server was not restarted"
    );
    assert_eq!(system.restarts(), 1);
    let s = status_after_restart(&c);
    assert_eq!(
        c.pressure.generation(),
        2,
        "the new generation announced itself"
    );
    assert_eq!(s.rounds, 0, "a new broker: {s:?}");
    // Twice VRAM: only the new broker's eviction loop can make room.
    let r = oversub::run(
        &c,
        &Config {
            ratio: 2.0,
            passes: 1,
            ..Default::default()
        },
    )
    .unwrap();
    println!("{}", r.text());
    assert_eq!((r.bad_pages, r.bad_bos), (0, 0), "{r:?}");
    let p = r
        .pressure
        .clone()
        .expect("the restarted mm-server answered");
    assert!(
        p.rounds > 0 && p.svm_evicted_bytes > 0,
        "no eviction after the restart: {p:?}"
    );
    system.check_alive().unwrap();
    drop(c);
    assert!(system.shutdown().is_empty());
}

#[test]
fn a_crash_loop_is_stopped_and_reported() {
    let (mut system, c) = boot(32);
    let mut generation = 1;
    for _ in 0..init::process::MAX_RESTARTS {
        system.kill("mm-server").unwrap();
        generation += 1;
        assert!(system.wait_generation("mm-server", generation, Duration::from_secs(10)));
    }
    system.kill("mm-server").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while system.check_alive().is_ok() {
        assert!(
            Instant::now() < deadline,
            "a crash loop was restarted forever"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        system.generation("mm-server"),
        Some(generation),
        "no restart after the limit"
    );
    drop(c);
    system.shutdown();
}

/// No hang (issue 14): once the pager is gone, a GPU fault that needs it
/// (a page to collect) fails and the job ends `Faulted` within the wait,
/// instead of replaying forever; the GPU server keeps serving.
#[test]
fn a_gpu_fault_fails_once_the_pager_is_gone() {
    use init::client::SvmBuffer;
    use ipc_protocol::interfaces::gpu::{BindView, CreateVm, Stats, Submit, Wait};
    use ipc_protocol::types::{JobStatus, KernelKind};
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_svm"));
    std::env::set_var("SVM_BIN_DIR", exe.parent().unwrap());
    let mut opts = init::supervisor::BootOptions::default();
    opts.device.vram_bytes = 32 << 20;
    opts.supervision = init::supervisor::Supervision::Report;
    let (mut system, c) = System::boot(&opts).unwrap();
    let c = c.unwrap();
    let vm = c.gpu.call(CreateVm {}).unwrap().vm;
    let buf = SvmBuffer::new(&c.pager, 64 << 10).unwrap();
    let bind = BindView {
        vm,
        view: buf.view,
        gpu_addr: buf.addr,
        flags: 0,
    };
    c.gpu.call(bind).unwrap();
    system.kill("pager").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let job = c
        .gpu
        .call(Submit {
            vm,
            kernel: KernelKind::TouchPages,
            addr: buf.addr,
            len: 64 << 10,
            stride: 4,
            value: 1,
            threads: 4,
        })
        .unwrap()
        .job;
    let started = Instant::now();
    let done = c
        .gpu
        .call(Wait {
            job,
            timeout_ms: 30_000,
        })
        .unwrap();
    assert_eq!(
        done.status,
        JobStatus::Faulted,
        "after {:?}",
        started.elapsed()
    );
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
    use init::client::SvmBuffer;
    use ipc_protocol::interfaces::gpu::{BindView, CreateVm, Submit, Wait};
    use ipc_protocol::types::{JobStatus, KernelKind};
    use rustix::process::{kill_process, Pid, Signal};
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_svm"));
    std::env::set_var("SVM_BIN_DIR", exe.parent().unwrap());
    let mut opts = init::supervisor::BootOptions::default();
    opts.device.vram_bytes = 32 << 20;
    opts.supervision = init::supervisor::Supervision::Report;
    opts.gpu_args = vec!["--pager-timeout-ms=1500".into()];
    opts.pager_args = vec!["--collect-lease-ms=3000".into()];
    let (system, c) = System::boot(&opts).unwrap();
    let c = c.unwrap();
    let vm = c.gpu.call(CreateVm {}).unwrap().vm;
    let len = 64 << 10;
    let buf = SvmBuffer::new(&c.pager, len).unwrap();
    // SAFETY: ours until `release`; the GPU touches it only inside jobs
    // we wait for.
    let words = unsafe { buf.words() };
    for (i, w) in words.iter_mut().enumerate() {
        *w = i as u32 ^ 0x5a5a_0000;
    }
    let bind = BindView {
        vm,
        view: buf.view,
        gpu_addr: buf.addr,
        flags: 0,
    };
    c.gpu.call(bind).unwrap();
    let pager = Pid::from_raw(system.pid("pager").unwrap() as i32).unwrap();
    kill_process(pager, Signal::STOP).unwrap();
    let submit = Submit {
        vm,
        kernel: KernelKind::IncrementAll,
        addr: buf.addr,
        len: len as u64,
        stride: 4,
        value: 1,
        threads: 4,
    };
    let job = c.gpu.call(submit.clone()).unwrap().job;
    let started = Instant::now();
    let done = c
        .gpu
        .call(Wait {
            job,
            timeout_ms: 30_000,
        })
        .unwrap();
    let took = started.elapsed();
    kill_process(pager, Signal::CONT).unwrap();
    assert_eq!(done.status, JobStatus::Faulted, "after {took:?}");
    assert!(took < Duration::from_secs(10), "the fault waited {took:?}");
    // The CPU reads every word as written (waiting, bounded, for the
    // lease to unlock what the stopped pager had collected).
    for (i, w) in words.iter().enumerate() {
        // SAFETY: inside the buffer; volatile: the pager maps its pages.
        let v = unsafe { std::ptr::read_volatile(w) };
        assert_eq!(v, i as u32 ^ 0x5a5a_0000, "word {i}");
    }
    // And the GPU gets the pages again.
    let job = c.gpu.call(submit).unwrap().job;
    let done = c
        .gpu
        .call(Wait {
            job,
            timeout_ms: 30_000,
        })
        .unwrap();
    assert_eq!(done.status, JobStatus::Completed);
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

/// `svm run chaos --kill mm`: mm-server killed about every second while
/// the workloads run; every kill comes back, no word is wrong, no probe
/// waits past the bound, and the verdict line says so.
#[test]
fn chaos_with_mm_server_kills_loses_nothing() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_svm"))
        .args(["--vram-mib", "64", "run", "chaos", "--kill", "mm"])
        .args(["--every", "1s", "--for", "12s", "--seed", "3"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdict = stdout.lines().last().unwrap();
    let field = |name: &str| -> f64 {
        let kv = verdict.split(' ').find(|kv| kv.starts_with(name)).unwrap();
        kv.split('=').nth(1).unwrap().parse().unwrap()
    };
    assert!(field("restarts=") >= 4.0, "{verdict}");
    assert_eq!(field("bad="), 0.0, "{verdict}");
    assert!(field("longest_wait_ms=") <= 15_000.0, "{verdict}");
}

/// A server the supervisor does not restart is refused before booting.
#[test]
fn chaos_refuses_a_server_that_does_not_restart() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_svm"))
        .args(["run", "chaos", "--kill", "pager", "--for", "1s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pager is not restarted"), "{stderr}");
}
