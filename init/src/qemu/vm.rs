//! Booting the guest in `qemu-system-x86_64` and reading its serial
//! console: every line is echoed as it comes and kept, QEMU is killed at the
//! deadline, and the caller judges the run from the log.
//!
//! Accelerator: KVM when it works, else TCG (emulation). `/dev/kvm` existing
//! is not enough: on some hosts a KVM guest hangs in the firmware. So KVM is
//! probed once by booting the kernel alone with a short deadline (it panics
//! for want of a root file system, and `panic=-1` + `-no-reboot` end QEMU);
//! the answer is cached beside QEMU, keyed by the host kernel.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::ValueEnum;

use super::QemuError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Accel {
    /// KVM if a probe boot under KVM completes, else TCG.
    Auto,
    Kvm,
    Tcg,
}

/// The kernel's command line: the serial console, no reboot loop on a
/// panic (QEMU's `-no-reboot` turns the reboot into an exit), an oops is a
/// panic (a broken guest ends instead of limping), and the kernel's own
/// messages kept to errors unless asked for.
fn cmdline(verbose: bool) -> String {
    let quiet = if verbose { "" } else { " quiet loglevel=3" };
    format!("console=ttyS0 panic=-1 oops=panic rdinit=/init{quiet}")
}

/// How long the KVM probe boot may take (a TCG boot of the same kernel to
/// its panic takes about 3 s here).
const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
pub struct Vm {
    /// The `qemu-system-x86_64` wrapper from `scripts/fetch-qemu.sh`.
    pub qemu: PathBuf,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub accel: Accel,
    pub cpus: u32,
    pub mem_mib: u32,
    pub verbose: bool,
}

/// One boot: everything the serial console said, and how QEMU ended.
#[derive(Debug)]
pub struct Boot {
    pub log: String,
    /// `None`: killed at the deadline.
    pub status: Option<ExitStatus>,
    pub elapsed: Duration,
}

impl Vm {
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.qemu);
        match self.accel {
            Accel::Kvm => c.args(["-accel", "kvm", "-cpu", "host"]),
            _ => c.args(["-accel", "tcg,thread=multi"]),
        };
        c.args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-serial", "stdio", "-monitor", "none", "-no-reboot"])
            .args([
                "-smp",
                &self.cpus.to_string(),
                "-m",
                &format!("{}M", self.mem_mib),
            ])
            .arg("-kernel")
            .arg(&self.kernel);
        if let Some(initrd) = &self.initrd {
            c.arg("-initrd").arg(initrd);
        }
        c.args(["-append", &cmdline(self.verbose)]);
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Boots, echoing each console line to `echo`, until QEMU exits or
    /// `timeout` passes (then it is killed).
    pub fn boot(&self, timeout: Duration, echo: &mut dyn Write) -> Result<Boot, QemuError> {
        let start = Instant::now();
        let mut child = self.command().spawn().map_err(QemuError::Spawn)?;
        let (tx, rx) = mpsc::channel::<String>();
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).split(b'\n') {
                    let Ok(line) = line else { break };
                    let text = String::from_utf8_lossy(&line)
                        .trim_end_matches('\r')
                        .to_owned();
                    if tx.send(text).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let deadline = start + timeout;
        let mut log = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    let _ = writeln!(echo, "{line}");
                    log.push_str(&line);
                    log.push('\n');
                }
                // Both pipes closed: QEMU is gone.
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Ok(Boot {
                        log,
                        status: None,
                        elapsed: start.elapsed(),
                    });
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
        let status = child.wait().map_err(QemuError::Spawn)?;
        Ok(Boot {
            log,
            status: Some(status),
            elapsed: start.elapsed(),
        })
    }
}

/// Resolves `Auto` to KVM or TCG, probing KVM (once per host kernel).
pub fn choose_accel(asked: Accel, vm: &Vm, cache_dir: &Path) -> Accel {
    if asked != Accel::Auto {
        return asked;
    }
    let usable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !usable {
        return Accel::Tcg;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cache = cache_dir.join("kvm-probe");
    if let Ok(saved) = std::fs::read_to_string(&cache) {
        if let Some(answer) = saved.strip_prefix(&format!("{}:", host.trim())) {
            return if answer.trim() == "kvm" {
                Accel::Kvm
            } else {
                Accel::Tcg
            };
        }
    }
    eprintln!(
        "svm qemu: probing KVM (at most {} s)",
        KVM_PROBE_TIMEOUT.as_secs()
    );
    let probe = Vm {
        initrd: None,
        accel: Accel::Kvm,
        verbose: true,
        ..vm.clone()
    };
    let works = matches!(
        probe.boot(KVM_PROBE_TIMEOUT, &mut std::io::sink()),
        Ok(Boot { status: Some(_), ref log, .. }) if log.contains("Kernel panic")
    );
    let answer = if works { Accel::Kvm } else { Accel::Tcg };
    eprintln!(
        "svm qemu: KVM {}",
        if works {
            "works"
        } else {
            "did not boot in time: using TCG"
        }
    );
    let name = if works { "kvm" } else { "tcg" };
    let _ = std::fs::write(&cache, format!("{}:{name}\n", host.trim()));
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_ends_the_guest_on_a_panic() {
        let vm = Vm {
            qemu: "qemu".into(),
            kernel: "vmlinuz".into(),
            initrd: Some("initrd".into()),
            accel: Accel::Tcg,
            cpus: 2,
            mem_mib: 1024,
            verbose: false,
        };
        let args: Vec<String> = vm
            .command()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        for want in [
            "-accel tcg,thread=multi",
            "-no-reboot",
            "-serial stdio",
            "-smp 2",
            "-m 1024M",
            "-kernel vmlinuz",
            "-initrd initrd",
        ] {
            assert!(joined.contains(want), "{want} missing from {joined}");
        }
        let append = &args[args.iter().position(|a| a == "-append").unwrap() + 1];
        assert!(append.contains("panic=-1") && append.contains("console=ttyS0"));
    }
}
