//! `svm qemu`: the whole system as the first process of a Linux guest.
//!
//! Builds the servers statically (`static_build`), packs them with `svm`
//! as `/init` into an initramfs (`initramfs`), boots the distribution's
//! kernel from `scripts/fetch-qemu.sh` in QEMU (`vm`), where `svm` runs as
//! PID 1 (`crate::guest`) and runs the scenario set, and judges the run by
//! the summary line on the serial console.

pub mod initramfs;
pub mod static_build;
pub mod vm;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::guest::pid1::{BIN_DIR, PLAN_PATH};
use crate::guest::plan::{self, Check, Plan, PlanError};
use crate::summary::Summary;
use initramfs::{Initramfs, TreeError};
use vm::{Accel, Vm};

#[derive(Args, Debug, Clone)]
pub struct QemuArgs {
    /// `builtin`, `quick` (the CI subset), a plan file (`*.plan`: one check a
    /// line, `NAME TIMEOUT_S SVM_ARGS...`), or a scenario file or directory,
    /// copied into the guest and run there with `svm run`.
    #[arg(long, default_value = "builtin")]
    pub scenarios: String,
    /// GPUs in the guest (the system drives one today).
    #[arg(long, default_value_t = 1)]
    pub gpus: u32,
    /// Seconds the whole boot may take; QEMU is killed after that.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    #[arg(long, value_enum, default_value_t = Accel::Auto)]
    pub accel: Accel,
    /// Where `scripts/fetch-qemu.sh` put QEMU and the kernel
    /// (default: target/qemu).
    #[arg(long)]
    pub qemu_dir: Option<PathBuf>,
    /// Statically linked servers to use instead of building them.
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    #[arg(long, default_value_t = 1024)]
    pub mem_mib: u32,
    /// Show the kernel's boot messages too.
    #[arg(long)]
    pub verbose: bool,
}

#[derive(Debug)]
pub enum QemuError {
    /// No repository found above the current directory or `svm`.
    NoWorkspace,
    /// `scripts/fetch-qemu.sh` has not run (or not into this directory).
    NotFetched(PathBuf),
    Build(String),
    MissingBinary(PathBuf),
    /// A binary that needs a dynamic loader, which the guest lacks.
    NotStatic(PathBuf),
    BadSet(String),
    Plan(PlanError),
    Tree(TreeError),
    /// More GPUs than the system drives.
    Gpus(u32),
    BadSize(&'static str),
    Io(String, std::io::Error),
    Spawn(std::io::Error),
}

impl fmt::Display for QemuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoWorkspace => write!(f, "no repository (scripts/fetch-qemu.sh) found here"),
            Self::NotFetched(d) => write!(
                f,
                "no QEMU or kernel in {}: run scripts/fetch-qemu.sh first",
                d.display()
            ),
            Self::Build(e) => write!(f, "building the static servers: {e}"),
            Self::MissingBinary(p) => write!(f, "{} is missing", p.display()),
            Self::NotStatic(p) => write!(f, "{} is not statically linked", p.display()),
            Self::BadSet(s) => write!(f, "--scenarios {s}: not a set, plan or scenario path"),
            Self::Plan(e) => write!(f, "the plan: {e}"),
            Self::Tree(e) => write!(f, "the scenario directory: {e}"),
            Self::Gpus(n) => write!(
                f,
                "--gpus {n}: the system drives one GPU today (several GPUs: issue 17)"
            ),
            Self::BadSize(what) => write!(f, "{what} out of range"),
            Self::Io(what, e) => write!(f, "{what}: {e}"),
            Self::Spawn(e) => write!(f, "starting QEMU: {e}"),
        }
    }
}
impl std::error::Error for QemuError {}

/// What the guest is asked to run, and what has to travel with it.
#[derive(Debug, PartialEq, Eq)]
pub struct Workload {
    pub plan: Plan,
    /// A scenario tree to copy to `/scenarios/<name>`: (name, host path).
    pub tree: Option<(String, PathBuf)>,
}

/// Time the scenario runner gets in the guest: the whole timeout less
/// what the boot and the power-off need.
const BOOT_MARGIN_S: u64 = 60;

/// Resolves `--scenarios` to a plan (and the tree it needs).
pub fn workload(set: &str, timeout_s: u64) -> Result<Workload, QemuError> {
    let named = match set {
        "builtin" => Some(plan::BUILTIN),
        "quick" => Some(plan::QUICK),
        _ => None,
    };
    if let Some(text) = named {
        let plan = Plan::parse(text).map_err(QemuError::Plan)?;
        return Ok(Workload { plan, tree: None });
    }
    let path = Path::new(set);
    if set.ends_with(".plan") && path.is_file() {
        let text = std::fs::read_to_string(path).map_err(|e| QemuError::Io(set.into(), e))?;
        let plan = Plan::parse(&text).map_err(QemuError::Plan)?;
        return Ok(Workload { plan, tree: None });
    }
    if !path.exists() {
        return Err(QemuError::BadSet(set.into()));
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty() && !n.contains(char::is_whitespace))
        .ok_or_else(|| QemuError::BadSet(set.into()))?
        .to_owned();
    let guest_timeout = timeout_s
        .saturating_sub(BOOT_MARGIN_S)
        .clamp(60, plan::MAX_TIMEOUT_S);
    // Runs the scenario runner (`svm run FILE|DIR`) on the copy.
    let plan = Plan {
        checks: vec![Check {
            name: "scenarios".into(),
            timeout: Duration::from_secs(guest_timeout),
            args: vec!["run".into(), format!("/scenarios/{name}")],
        }],
    };
    Ok(Workload {
        plan,
        tree: Some((name, path.to_path_buf())),
    })
}

/// The initramfs for `workload`, with the executables from `bin_dir`.
pub fn pack(workload: &Workload, executables: &[PathBuf]) -> Result<Initramfs, QemuError> {
    let mut fs = Initramfs::default();
    fs.dir("bin");
    for exe in executables {
        let name = exe
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| QemuError::MissingBinary(exe.clone()))?;
        fs.host_file(&format!("{BIN_DIR}/{name}"), 0o755, exe);
    }
    fs.symlink("init", "bin/svm");
    for d in ["dev", "proc", "sys", "tmp", "run", "etc", "etc/svm"] {
        fs.dir(d);
    }
    // Before devtmpfs is mounted, the kernel opens this for init's stdio.
    fs.char_device("dev/console", 0o600, 5, 1);
    fs.bytes(PLAN_PATH, 0o644, workload.plan.to_text().as_bytes());
    if let Some((name, from)) = &workload.tree {
        fs.dir("scenarios");
        fs.tree(&format!("scenarios/{name}"), from)
            .map_err(QemuError::Tree)?;
    }
    Ok(fs)
}

/// `svm qemu`: the exit code (0: the guest's summary is green).
pub fn cli_main(args: &QemuArgs) -> i32 {
    match run(args) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("svm qemu: {e}");
            2
        }
    }
}

fn run(args: &QemuArgs) -> Result<bool, QemuError> {
    if args.gpus != 1 {
        return Err(QemuError::Gpus(args.gpus));
    }
    if !(1..=64).contains(&args.cpus) {
        return Err(QemuError::BadSize("--cpus (1-64)"));
    }
    if !(256..=65536).contains(&args.mem_mib) {
        return Err(QemuError::BadSize("--mem-mib (256-65536)"));
    }
    if !(10..=86_400).contains(&args.timeout) {
        return Err(QemuError::BadSize("--timeout (10-86400 s)"));
    }
    let workload = workload(&args.scenarios, args.timeout)?;
    let root = static_build::workspace_root();
    let qemu_dir = match (&args.qemu_dir, &root) {
        (Some(d), _) => d.clone(),
        (None, Some(r)) => r.join("target/qemu"),
        (None, None) => return Err(QemuError::NoWorkspace),
    };
    let (qemu, kernel) = (
        qemu_dir.join("qemu-system-x86_64"),
        qemu_dir.join("vmlinuz"),
    );
    if !qemu.is_file() || !kernel.is_file() {
        return Err(QemuError::NotFetched(qemu_dir));
    }
    let bin_dir = match (&args.bin_dir, &root) {
        (Some(d), _) => d.clone(),
        (None, Some(r)) => static_build::build(r)?,
        (None, None) => return Err(QemuError::NoWorkspace),
    };
    let executables = static_build::check(&bin_dir)?;
    let work = qemu_dir.join(format!("guest-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| QemuError::Io(work.display().to_string(), e))?;
    let initrd = work.join("initramfs.cpio");
    let bytes = pack(&workload, &executables)?
        .write_to(&initrd)
        .map_err(|e| QemuError::Io(initrd.display().to_string(), e))?;
    eprintln!(
        "svm qemu: initramfs {} MiB, {} checks",
        bytes >> 20,
        workload.plan.checks.len()
    );
    let mut vm = Vm {
        qemu,
        kernel,
        initrd: Some(initrd.clone()),
        accel: args.accel,
        cpus: args.cpus,
        mem_mib: args.mem_mib,
        verbose: args.verbose,
    };
    vm.accel = vm::choose_accel(args.accel, &vm, &qemu_dir);
    eprintln!(
        "svm qemu: booting ({:?}, at most {} s)",
        vm.accel, args.timeout
    );
    let boot = vm.boot(Duration::from_secs(args.timeout), &mut std::io::stdout())?;
    let log_path = work.join("serial.log");
    let _ = std::fs::write(&log_path, &boot.log);
    let _ = std::fs::remove_file(&initrd);
    Ok(judge(&boot, args.timeout, &log_path))
}

/// Green only when QEMU ended by itself and the last summary line on the
/// console is green.
fn judge(boot: &vm::Boot, timeout_s: u64, log_path: &Path) -> bool {
    let summary = Summary::last_in(&boot.log);
    let verdict = match (boot.status, summary) {
        (None, _) => format!("the guest did not finish within {timeout_s} s"),
        (Some(_), None) => "no summary line on the serial console".into(),
        (Some(_), Some(s)) if s.is_green() => String::new(),
        (Some(_), Some(s)) => format!("the guest reported {s}"),
    };
    eprintln!(
        "svm qemu: {} after {:.1} s; serial log in {}",
        if verdict.is_empty() {
            "green"
        } else {
            &verdict
        },
        boot.elapsed.as_secs_f64(),
        log_path.display()
    );
    verdict.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_sets_plans_and_scenario_paths() {
        let builtin = workload("builtin", 900).unwrap();
        assert!(builtin.tree.is_none() && builtin.plan.checks.len() >= 5);
        assert!(workload("quick", 900).unwrap().plan.checks.len() >= 3);
        assert!(matches!(
            workload("no-such-set", 900),
            Err(QemuError::BadSet(_))
        ));

        let d = std::env::temp_dir().join(format!("svm-qemu-set-{}", std::process::id()));
        std::fs::create_dir_all(d.join("my-set")).unwrap();
        let w = workload(d.join("my-set").to_str().unwrap(), 600).unwrap();
        assert_eq!(w.tree, Some(("my-set".into(), d.join("my-set"))));
        assert_eq!(w.plan.checks[0].args, ["run", "/scenarios/my-set"]);
        assert_eq!(w.plan.checks[0].timeout, Duration::from_secs(540));

        let plan_file = d.join("two.plan");
        std::fs::write(&plan_file, "a 10 boot --check\nb 20 run herd\n").unwrap();
        let w = workload(plan_file.to_str().unwrap(), 600).unwrap();
        assert_eq!(w.plan.checks.len(), 2);
        std::fs::write(&plan_file, "a 0 boot\n").unwrap();
        assert!(matches!(
            workload(plan_file.to_str().unwrap(), 600),
            Err(QemuError::Plan(PlanError::BadTimeout { line: 1 }))
        ));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_initramfs_has_init_console_plan_and_servers() {
        let w = workload("quick", 900).unwrap();
        let exes: Vec<PathBuf> = static_build::EXECUTABLES
            .iter()
            .map(|n| PathBuf::from(format!("/nonexistent/{n}")))
            .collect();
        let fs = pack(&w, &exes).unwrap();
        let find = |p: &str| {
            fs.entries()
                .iter()
                .find(|e| e.path == p)
                .map(|e| &e.content)
        };
        use initramfs::Content;
        assert_eq!(find("init"), Some(&Content::Symlink("bin/svm".into())));
        assert_eq!(
            find("dev/console"),
            Some(&Content::CharDevice { major: 5, minor: 1 })
        );
        let plan = find("etc/svm/guest.plan").unwrap();
        assert_eq!(plan, &Content::Bytes(w.plan.to_text().into_bytes()));
        for n in static_build::EXECUTABLES {
            assert!(find(&format!("bin/{n}")).is_some(), "{n}");
        }
    }
}
