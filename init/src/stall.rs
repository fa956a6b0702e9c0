//! What every thread of the system is doing, for a report when a workload
//! stalls: each process's threads with their name, state, the kernel
//! function they wait in (`wchan`) and, where the kernel shows it (root,
//! `CONFIG_STACKTRACE`), their kernel stack. A hang in a guest or on CI
//! leaves no debugger behind; this leaves the next best thing in the log.

use std::fmt::Write;

/// Thread names worth showing: ours and our servers'.
fn ours(comm: &str) -> bool {
    [
        "svm",
        "pager",
        "xe-svm",
        "xe-model",
        "mm-server",
        "xe_svm",
        "mm_server",
    ]
    .iter()
    .any(|p| comm.starts_with(p))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The state letter of a `/proc/.../stat` line (after the name's `)`).
fn state(stat: &str) -> &str {
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.split(' ').next())
        .unwrap_or("?")
}

/// The threads of `pid`, one line each, with their kernel stacks.
fn threads_of(pid: &str, out: &mut String) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    for t in tasks.flatten() {
        let tid = t.file_name().to_string_lossy().into_owned();
        let base = format!("/proc/{pid}/task/{tid}");
        let comm = read(&format!("{base}/comm"));
        let _ = writeln!(
            out,
            "  {tid} {:<24} {} wchan={}",
            comm.trim(),
            state(&read(&format!("{base}/stat"))),
            read(&format!("{base}/wchan")).trim()
        );
        for frame in read(&format!("{base}/stack")).lines().take(12) {
            let _ = writeln!(out, "      {frame}");
        }
    }
}

/// Every thread of every process of ours, as text.
pub fn thread_report() -> String {
    let mut out = String::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return "no /proc".into();
    };
    for p in procs.flatten() {
        let pid = p.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let comm = read(&format!("/proc/{pid}/comm"));
        if !ours(comm.trim()) {
            continue;
        }
        let _ = writeln!(out, "process {pid} {}", comm.trim());
        threads_of(&pid, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_names_this_process_and_its_threads() {
        let named = std::thread::Builder::new()
            .name("svm-stall-probe".into())
            .spawn(|| std::thread::sleep(std::time::Duration::from_secs(5)))
            .unwrap();
        // The new thread names itself once it runs: look until it has.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut out = String::new();
        while !out.contains("svm-stall-probe") && std::time::Instant::now() < deadline {
            out.clear();
            threads_of("self", &mut out);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(out.contains("svm-stall-probe"), "{out}");
        assert!(out.lines().all(|l| !l.trim().is_empty()), "{out}");
        drop(named);
    }

    #[test]
    fn the_state_is_read_after_the_name() {
        assert_eq!(state("12 (a (b) c) S 1 2"), "S");
        assert_eq!(state("garbage"), "?");
    }
}
