//! What `svm` does as PID 1 of a guest: mount what the servers need, make
//! the console stdin/stdout/stderr, run the plan while reaping every orphan,
//! then stop every other process and power off, whatever happened.
//!
//! PID 1 must never exit or panic (the kernel panics when it does); a panic
//! in the runner is caught and reported as a failed run, and if powering
//! off fails the process exits, which with `panic=-1` on the kernel command
//! line and QEMU's `-no-reboot` still ends the guest.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use rustix::fs::{Mode, OFlags};
use rustix::mount::{mount, MountFlags};
use rustix::process::{kill_process, Pid, Signal};

use super::plan::Plan;
use super::runner::{self, Reap};
use crate::summary::Summary;

/// Where `svm qemu` puts the plan in the initramfs.
pub const PLAN_PATH: &str = "/etc/svm/guest.plan";
/// Where the servers are in the initramfs.
pub const BIN_DIR: &str = "/bin";

/// (source, target, type, flags, data): what the servers use. `/dev/shm`
/// and `/tmp` for memfd-adjacent scratch, `/proc` for userfaultfd's
/// `/proc/sys/vm` knobs and process listing, devtmpfs for `/dev/console`
/// and `/dev/userfaultfd`.
const MOUNTS: &[(&str, &str, &str, MountFlags, &str)] = &[
    ("proc", "/proc", "proc", MountFlags::NOSUID, ""),
    ("sysfs", "/sys", "sysfs", MountFlags::NOSUID, ""),
    (
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MountFlags::NOSUID,
        "mode=0755",
    ),
    (
        "tmpfs",
        "/dev/shm",
        "tmpfs",
        MountFlags::NOSUID,
        "mode=1777",
    ),
    ("tmpfs", "/tmp", "tmpfs", MountFlags::NOSUID, "mode=1777"),
    ("tmpfs", "/run", "tmpfs", MountFlags::NOSUID, "mode=0755"),
];

/// Runs the guest as PID 1 and powers off; never returns.
pub fn main(plan_path: &Path) -> ! {
    mount_all();
    open_console();
    // The servers are looked up in $SVM_BIN_DIR (see `supervisor::bin_dir`).
    std::env::set_var("SVM_BIN_DIR", BIN_DIR);
    std::env::set_var("PATH", BIN_DIR);
    // A serial console shows escape codes as noise.
    std::env::set_var("RUST_LOG_STYLE", "never");
    println!("svm-guest: PID 1 up, plan {}", plan_path.display());
    let result = std::panic::catch_unwind(|| run_plan(plan_path));
    let summary = match result {
        Ok(Ok(s)) => s,
        Ok(Err(why)) => {
            println!("svm-guest: {why}");
            println!(
                "{}",
                Summary {
                    passed: 0,
                    failed: 1
                }
            );
            Summary {
                passed: 0,
                failed: 1,
            }
        }
        Err(_) => {
            println!("svm-guest: the runner panicked");
            println!(
                "{}",
                Summary {
                    passed: 0,
                    failed: 1
                }
            );
            Summary {
                passed: 0,
                failed: 1,
            }
        }
    };
    println!(
        "svm-guest: {} - powering off",
        if summary.is_green() { "green" } else { "red" }
    );
    power_off()
}

fn run_plan(plan_path: &Path) -> Result<Summary, String> {
    let text = std::fs::read_to_string(plan_path)
        .map_err(|e| format!("cannot read {}: {e}", plan_path.display()))?;
    let plan = Plan::parse(&text).map_err(|e| format!("{}: {e}", plan_path.display()))?;
    let svm = Path::new(BIN_DIR).join("svm");
    let mut out = std::io::stdout();
    Ok(runner::run(&plan, &svm, Reap::Orphans, &mut out))
}

fn mount_all() {
    for &(source, target, fstype, flags, data) in MOUNTS {
        if let Err(e) = std::fs::create_dir_all(target) {
            eprintln!("svm-guest: mkdir {target}: {e}");
        }
        let data = std::ffi::CString::new(data).unwrap_or_default();
        if let Err(e) = mount(source, target, fstype, flags, data.as_c_str()) {
            eprintln!("svm-guest: mount {fstype} on {target}: {e}");
        }
    }
}

/// The kernel opened the initramfs's `/dev/console` for us; devtmpfs now
/// covers that node, so take the console again from devtmpfs and make it
/// the controlling terminal of a new session.
fn open_console() {
    let console = match rustix::fs::open("/dev/console", OFlags::RDWR, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("svm-guest: open /dev/console: {e}");
            return;
        }
    };
    let _ = rustix::process::setsid();
    let _ = rustix::process::ioctl_tiocsctty(&console);
    let _ = rustix::stdio::dup2_stdin(&console);
    let _ = rustix::stdio::dup2_stdout(&console);
    let _ = rustix::stdio::dup2_stderr(&console);
}

/// Every process but this one (from `/proc`).
fn other_processes() -> Vec<Pid> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(Pid::from_raw)
        .filter(|p| !p.is_init())
        .collect()
}

/// TERM to everyone, a moment, then KILL; reaps what ends.
fn stop_everyone() {
    for (signal, pause) in [(Signal::TERM, 500), (Signal::KILL, 200)] {
        for pid in other_processes() {
            // Kernel threads ignore signals; that is fine.
            let _ = kill_process(pid, signal);
        }
        std::thread::sleep(Duration::from_millis(pause));
        while let Ok(Some(_)) = rustix::process::wait(rustix::process::WaitOptions::NOHANG) {}
    }
}

fn power_off() -> ! {
    stop_everyone();
    let _ = std::io::stdout().flush();
    rustix::fs::sync();
    if let Err(e) = rustix::system::reboot(rustix::system::RebootCommand::PowerOff) {
        eprintln!("svm-guest: power off failed: {e}");
    }
    // Exiting PID 1 panics the kernel, which `panic=-1` turns into a reboot
    // and `-no-reboot` into QEMU's exit.
    std::process::exit(1)
}
