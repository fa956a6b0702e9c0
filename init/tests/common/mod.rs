//! What the restart tests share (`gpu_restart.rs`, `pager_restart.rs`):
//! a time limit, a booted system, buffers with a pattern, a GPU pass.
#![allow(dead_code)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use init::client::{run_kernel, SvmBuffer};
use init::supervisor::{BootOptions, Clients, System};
use ipc_protocol::types::{JobStatus, KernelKind, VmId};

/// Runs `test` on its own thread and fails if it takes longer than `limit`
/// (the servers go with this process: their lifelines close).
/// Runs `svm --vram-mib 32 run recovery --rounds 2` with `args` and checks
/// its verdict (every word back, two rounds); returns its output.
pub fn recovery(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_svm"))
        .args(["--vram-mib", "32", "run", "recovery", "--rounds", "2"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}");
    assert_eq!(stdout.lines().last(), Some("bad=0"), "{stdout}");
    assert_eq!(stdout.matches("recovery: round").count(), 2, "{stdout}");
    stdout
}

pub fn bounded(limit: Duration, test: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        test();
        let _ = tx.send(());
    });
    match rx.recv_timeout(limit) {
        Ok(()) => t.join().unwrap(),
        Err(RecvTimeoutError::Disconnected) => match t.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the test ended without reporting"),
        },
        Err(RecvTimeoutError::Timeout) => panic!("the test ran past {limit:?}"),
    }
}

pub fn boot_mib(vram_mib: u64) -> (System, Clients) {
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_svm"));
    std::env::set_var("SVM_BIN_DIR", exe.parent().unwrap());
    let mut opts = BootOptions::default();
    opts.device.vram_bytes = vram_mib << 20;
    let (s, c) = System::boot(&opts).unwrap();
    (s, c.unwrap())
}

/// Words of `buf`, each checked against `want(i)`; returns how many differ.
pub fn bad_words(buf: &SvmBuffer, want: impl Fn(usize) -> u32) -> usize {
    let base = buf.addr as *const u32;
    (0..buf.len / 4)
        // SAFETY: inside the buffer, which lives until the test releases it.
        .filter(|&i| unsafe { std::ptr::read_volatile(base.add(i)) } != want(i))
        .count()
}

/// A buffer bound at its CPU address in `vm`, word `i` holding `i + base`.
pub fn bound_buffer(c: &Clients, vm: VmId, bytes: usize, base: u32) -> SvmBuffer {
    let buf = SvmBuffer::new(&c.pager, bytes).expect("a buffer");
    buf.bind(&c.gpu, vm).expect("bind");
    // SAFETY: ours until release; no job runs on it yet.
    for (i, w) in unsafe { buf.words() }.iter_mut().enumerate() {
        *w = (i as u32).wrapping_add(base);
    }
    buf
}

pub fn increment(c: &Clients, vm: VmId, buf: &SvmBuffer) {
    let done = run_kernel(
        &c.gpu,
        vm,
        KernelKind::IncrementAll,
        buf.addr,
        buf.len as u64,
        1,
    )
    .expect("the kernel ran");
    assert_eq!(done.status, JobStatus::Completed);
}

/// Runs `svm` with `args` (the servers beside it), killed and failed past
/// `limit`; (success, stdout, stderr).
pub fn svm_within(args: &[&str], limit: Duration) -> (bool, String, String) {
    let exe = env!("CARGO_BIN_EXE_svm");
    let mut child = Command::new(exe)
        .env("SVM_BIN_DIR", std::path::Path::new(exe).parent().unwrap())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut p: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = p.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    match status {
        Some(s) => (s.success(), out, err),
        None => panic!("svm {args:?} ran past {limit:?}:\n{out}\n{err}"),
    }
}
