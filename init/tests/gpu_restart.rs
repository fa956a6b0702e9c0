//! The GPU server restarted against a device that outlives it (issue 14):
//! init kills nothing but xe-svm, starts its next generation on a fresh
//! device control socket (sent to xe-model on its attach channel), and the
//! device model, hardware, is the same process throughout. Shutdown is
//! clean and fast: the device stops once init drops the attach channel.
//! Every test runs under a time limit, so a hang fails it.

mod common;

use std::time::{Duration, Instant};

use common::{bad_words, boot_mib, bound_buffer, bounded, increment};
use init::client::SvmBuffer;
use init::supervisor::{Clients, System};
use ipc_protocol::client::CallError;
use ipc_protocol::interfaces::gpu::{CreateVm, GpuError, Stats};

/// How long a test may run before it counts as hung.
const LIMIT: Duration = Duration::from_secs(90);
/// How long a killed GPU server may take to come back.
const RESTART: Duration = Duration::from_secs(20);
/// How long a clean shutdown may take (a server killed for not stopping
/// takes 5 s, so this catches it too).
const SHUTDOWN: Duration = Duration::from_secs(5);

fn boot() -> (System, Clients) {
    boot_mib(32)
}

/// Whether process `pid` exists and has not exited (a zombie has).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()?
                .split_whitespace()
                .next()
                .map(str::to_owned)
        })
        .is_some_and(|state| state != "Z")
}

/// Kills the GPU server and waits for generation `next`, which must stay
/// up (a crash of it would be restarted as yet another generation).
fn kill_and_wait(system: &mut System, next: u32) {
    let old = system.pid("xe-svm").unwrap();
    system.kill("xe-svm").unwrap();
    assert!(
        system.wait_generation("xe-svm", next, RESTART),
        "xe-svm was not restarted as generation {next}"
    );
    assert_ne!(system.pid("xe-svm"), Some(old), "a new process");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        system.generation("xe-svm"),
        Some(next),
        "generation {next} stayed up"
    );
    system.check_alive().unwrap();
}

#[test]
fn a_killed_gpu_server_comes_back_on_the_same_device() {
    bounded(LIMIT, || {
        let (mut system, c) = boot();
        assert_eq!(system.restartable("xe-svm"), Some(true));
        assert_eq!(system.generation("xe-svm"), Some(1));
        // Generation 1 serves before it is killed.
        c.gpu.call(Stats {}).unwrap();
        let model = system.pid("xe-model").unwrap();
        kill_and_wait(&mut system, 2);
        assert_eq!(system.restarts(), 1);
        assert_eq!(
            system.pid("xe-model"),
            Some(model),
            "the device was not restarted"
        );
        assert!(running(model), "xe-model outlived its driver");
        kill_and_wait(&mut system, 3);
        assert_eq!(system.restarts(), 2);
        assert!(running(model), "xe-model outlived its second driver");
        assert_eq!(system.generation("xe-model"), Some(1));
        drop(c);
        let t0 = Instant::now();
        let errors = system.shutdown();
        let took = t0.elapsed();
        assert!(errors.is_empty(), "{errors:?}");
        assert!(took < SHUTDOWN, "shutdown took {took:?}");
        assert!(!running(model), "xe-model stopped with the system");
    });
}

/// Kills that come faster than the device greets each new driver: a
/// driver may die before its `Hello` or while the device answers it; the
/// device takes that for a lost driver, not for its own end.
#[test]
fn the_device_survives_drivers_killed_in_quick_succession() {
    bounded(LIMIT, || {
        let (mut system, c) = boot();
        let model = system.pid("xe-model").unwrap();
        for next in 2..=6 {
            system.kill("xe-svm").unwrap();
            assert!(system.wait_generation("xe-svm", next, RESTART));
        }
        std::thread::sleep(Duration::from_secs(1));
        system.check_alive().unwrap();
        assert!(running(model), "xe-model outlived its drivers");
        drop(c);
        let errors = system.shutdown();
        assert!(errors.is_empty(), "{errors:?}");
    });
}

/// Pages a killed GPU server left in VRAM survive it: the next generation
/// adopts their frames (a buffer it fills VRAM with afterwards lands
/// elsewhere) and copies them back when the CPU reads them, every word.
/// The client's VM and binding survive too: the next generation rebuilds
/// them from its journal, and the client's next job runs in the same VM
/// without making or binding anything again.
#[test]
fn pages_in_vram_outlive_a_killed_gpu_server_word_for_word() {
    bounded(LIMIT, pages_in_vram_outlive_a_killed_gpu_server);
}

fn pages_in_vram_outlive_a_killed_gpu_server() {
    let (mut system, c) = boot_mib(64);
    let vm = c.gpu.call(CreateVm {}).expect("a VM").vm;
    let kept = bound_buffer(&c, vm, 16 << 20, 0);
    increment(&c, vm, &kept);
    system.kill("xe-svm").unwrap();
    assert!(
        system.wait_generation("xe-svm", 2, Duration::from_secs(20)),
        "the GPU server was not restarted"
    );
    // The first call may catch the restart's announcement.
    c.gpu.call(Stats {}).unwrap();
    // The same VM id, the same binding, as the dead server left them.
    increment(&c, vm, &kept);
    // Most of VRAM for a new buffer: without adoption its pages would
    // land on the frames `kept` is in.
    let vm2 = c.gpu.call(CreateVm {}).expect("a VM of generation 2").vm;
    let filler = bound_buffer(&c, vm2, 40 << 20, 0x5a5a_0000);
    increment(&c, vm2, &filler);
    let want = |i: usize| (i as u32).wrapping_add(0x5a5a_0001);
    assert_eq!(bad_words(&filler, want), 0, "the new buffer");
    assert_eq!(bad_words(&kept, |i| i as u32 + 2), 0, "the pages VRAM kept");
    system.check_alive().unwrap();
    filler.release(&c.pager).unwrap();
    kept.release(&c.pager).unwrap();
    drop(c);
    assert!(system.shutdown().is_empty());
}

/// `svm run recovery`: the GPU server killed with a buffer in VRAM, twice;
/// every word comes back and the four times are printed.
#[test]
fn recovery_rounds_lose_no_word() {
    bounded(LIMIT, || {
        let stdout = common::recovery(&[]);
        assert!(
            stdout.contains("kill to first CPU fault: median"),
            "{stdout}"
        );
    });
}

/// What the journal describes but the world changed while the GPU server
/// was down is not rebuilt: a buffer released meanwhile (its view is gone
/// at the pager) leaves no binding behind, so its address is free in the
/// rebuilt VM, while the buffer still bound is rebuilt and works.
#[test]
fn a_binding_whose_view_went_while_the_server_was_down_is_not_rebuilt() {
    bounded(LIMIT, || {
        let (mut system, c) = boot();
        let vm = c.gpu.call(CreateVm {}).expect("a VM").vm;
        let stays = bound_buffer(&c, vm, 1 << 20, 0);
        let goes = bound_buffer(&c, vm, 1 << 20, 0);
        increment(&c, vm, &goes);
        let addr = goes.addr;
        system.kill("xe-svm").unwrap();
        // Unmapped before the next generation rebuilds (its ViewGone
        // waits in the socket): the pager no longer knows the view.
        goes.release(&c.pager).unwrap();
        assert!(system.wait_generation("xe-svm", 2, RESTART));
        c.gpu.call(Stats {}).unwrap();
        increment(&c, vm, &stays);
        assert_eq!(bad_words(&stays, |i| i as u32 + 1), 0);
        // Its address is free again in the same VM: no binding was left.
        let again = SvmBuffer::new(&c.pager, 1 << 20).expect("a buffer");
        let bind = ipc_protocol::interfaces::gpu::BindView {
            vm,
            view: again.view,
            gpu_addr: addr,
            flags: 0,
        };
        let r = c.gpu.call(bind);
        assert!(
            !matches!(r, Err(CallError::Server(GpuError::AddressInUse))),
            "{r:?}"
        );
        system.check_alive().unwrap();
        again.release(&c.pager).unwrap();
        stays.release(&c.pager).unwrap();
        drop(c);
        assert!(system.shutdown().is_empty());
    });
}
