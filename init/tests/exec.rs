//! `svm exec` and libsvm (issue 18): the C programs in `tests/c` and the
//! example in docs/c-api.md, compiled with the system C compiler against
//! `libsvm/include/svm.h`, pass under `svm exec`; unmodified programs
//! (gzip, python3, sqlite3 when installed) write byte-identical output with
//! their heaps served by the pager. Every run has a time limit.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn svm() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_svm"))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The libsvm.so this test run built (a dev-dependency).
fn lib_dir() -> PathBuf {
    let dir = svm().parent().unwrap().to_path_buf();
    let lib = init::exec::library(Some(&dir.join("deps").join("libsvm.so")))
        .or_else(|_| init::exec::library(Some(&dir.join("libsvm.so"))))
        .expect("libsvm.so built (a dev-dependency of init)");
    lib.parent().unwrap().to_path_buf()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("svm-exec-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Compiles `src` into `out` against svm.h and libsvm.
fn cc(src: &Path, out: &Path, extra: &[&str]) {
    let lib = lib_dir();
    let status = Command::new("cc")
        .args(["-O1", "-Wall", "-Wextra", "-Werror", "-pthread"])
        .arg("-I")
        .arg(root().join("libsvm/include"))
        .arg("-I")
        .arg(root().join("tests/c"))
        .args(extra)
        .arg(src)
        .arg("-o")
        .arg(out)
        .arg(format!("-L{}", lib.display()))
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-lsvm")
        .status()
        .expect("the system C compiler (cc)");
    assert!(status.success(), "cc {}", src.display());
}

struct Ran {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
    secs: f64,
}

/// Runs `cmd` with stdin from `input` (or nothing), killing it past `limit`.
fn run(mut cmd: Command, input: Option<&Path>, limit: Duration, dir: &Path, tag: &str) -> Ran {
    let out = dir.join(format!("{tag}.out"));
    let err = dir.join(format!("{tag}.err"));
    cmd.stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap())
        .stdin(match input {
            Some(p) => Stdio::from(File::open(p).unwrap()),
            None => Stdio::null(),
        });
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn");
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{tag}: still running after {limit:?}; stderr:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ran {
        code: status.code().unwrap_or(-1),
        stdout: std::fs::read(&out).unwrap(),
        stderr: std::fs::read_to_string(&err).unwrap_or_default(),
        secs: start.elapsed().as_secs_f64(),
    }
}

fn exec_cmd(program: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(svm());
    c.env("SVM_BIN_DIR", svm().parent().unwrap())
        .env("SVM_LIB", lib_dir().join("libsvm.so"))
        .env("SVM_REPORT", "1")
        .env("RUST_LOG", "warn")
        .arg("exec")
        .arg("--")
        .arg(program)
        .args(args);
    c
}

#[test]
fn the_header_compiles_and_declares_what_the_library_exports() {
    let dir = scratch("header");
    let src = dir.join("header.c");
    let names = [
        "svm_connect",
        "svm_connected",
        "svm_owns",
        "svm_strerror",
        "svm_vm_create_mirror",
        "svm_vm_destroy",
        "svm_submit_batch",
        "svm_submit_kernel",
        "svm_wait",
        "svm_advise",
        "svm_prefetch",
        "svm_discard",
        "svm_page_states",
        "svm_gpu_stats",
        "svm_pager_totals",
        "svm_batch_store_dword",
        "svm_batch_store_qword",
        "svm_batch_atomic_add",
        "svm_batch_end",
    ];
    let table: Vec<String> = names
        .iter()
        .map(|n| format!("(void (*)(void)){n}"))
        .collect();
    std::fs::write(
        &src,
        format!(
            "#include \"svm.h\"\n#include <stdio.h>\n\
             static void (*const fns[])(void) = {{ {} }};\n\
             int main(void) {{ printf(\"%zu %s\\n\", sizeof fns / sizeof fns[0], \
             svm_strerror(SVM_E_JOB_FAULTED)); return svm_connected(); }}\n",
            table.join(", ")
        ),
    )
    .unwrap();
    let exe = dir.join("header");
    // Pedantic C99 and C++ compilers both accept the header.
    cc(&src, &exe, &["-std=c99", "-pedantic", "-Wno-pedantic"]);
    let r = run(
        Command::new(&exe),
        None,
        Duration::from_secs(20),
        &dir,
        "header",
    );
    assert_eq!(r.code, 0, "unconnected: svm_connected() is 0; {}", r.stderr);
    let line = String::from_utf8(r.stdout).unwrap();
    assert_eq!(line, format!("{} GPU job faulted\n", names.len()));
}

/// Each program prints "NAME: ok" and exits 0 under `svm exec`.
fn c_program_passes(name: &str, src: &Path) {
    let dir = scratch(name);
    let exe = dir.join(name);
    cc(src, &exe, &[]);
    let r = run(
        exec_cmd(&exe, &[]),
        None,
        Duration::from_secs(60),
        &dir,
        name,
    );
    let out = String::from_utf8_lossy(&r.stdout);
    assert!(
        r.code == 0 && out.contains(&format!("{name}: ok")),
        "{name}: exit {}, stdout:\n{out}\nstderr:\n{}",
        r.code,
        r.stderr
    );
    assert!(
        r.stderr.contains("mode connected regions"),
        "{name}: {}",
        r.stderr
    );
}

#[test]
fn the_c_programs_pass_under_svm_exec() {
    let mut names: Vec<PathBuf> = std::fs::read_dir(root().join("tests/c"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "c"))
        .collect();
    names.sort();
    assert!(names.len() >= 7, "tests/c holds the programs: {names:?}");
    for src in names {
        let name = src.file_stem().unwrap().to_str().unwrap().to_string();
        c_program_passes(&name, &src);
    }
}

#[test]
fn the_c_api_example_runs_under_svm_exec() {
    let doc = std::fs::read_to_string(root().join("docs/c-api.md")).unwrap();
    let start = doc.find("```c\n").expect("a C example in docs/c-api.md") + 5;
    let end = start + doc[start..].find("```").unwrap();
    let dir = scratch("example");
    let src = dir.join("example.c");
    std::fs::write(&src, &doc[start..end]).unwrap();
    let exe = dir.join("example");
    cc(&src, &exe, &[]);
    let r = run(
        exec_cmd(&exe, &[]),
        None,
        Duration::from_secs(60),
        &dir,
        "example",
    );
    let out = String::from_utf8_lossy(&r.stdout);
    assert_eq!(r.code, 0, "{out}\n{}", r.stderr);
    assert!(out.starts_with("example: the GPU wrote 10 words"), "{out}");
}

/// The report line libsvm prints at exit: (regions, peak bytes).
fn report(stderr: &str) -> Option<(u64, u64)> {
    let line = stderr
        .lines()
        .find(|l| l.contains("mode connected regions"))?;
    let field = |k: &str| -> Option<u64> {
        let mut it = line.split_whitespace();
        it.find(|w| *w == k)?;
        it.next()?.parse().ok()
    };
    Some((field("regions")?, field("peak_bytes")?))
}

/// `program args` plain and under `svm exec`: the same exit code and
/// byte-identical output; with `min_peak`, the program was connected and
/// at least that many bytes of pager memory were handed out to it.
fn identical(
    tag: &str,
    program: &Path,
    args: &[&str],
    input: Option<&Path>,
    min_peak: Option<u64>,
) {
    let dir = scratch(tag);
    let limit = Duration::from_secs(60);
    let mut plain = Command::new(program);
    plain.args(args);
    let a = run(plain, input, limit, &dir, &format!("{tag}-plain"));
    let b = run(
        exec_cmd(program, args),
        input,
        limit,
        &dir,
        &format!("{tag}-svm"),
    );
    assert_eq!(a.code, 0, "{tag} plain: {}", a.stderr);
    assert_eq!(b.code, 0, "{tag} under svm exec: {}", b.stderr);
    assert!(a.stdout == b.stdout, "{tag}: output differs under svm exec");
    // A program that leaves through `_exit` (dash) prints no report.
    let (regions, peak) = match min_peak {
        Some(min) => {
            let got = report(&b.stderr).unwrap_or_else(|| panic!("{tag}: {}", b.stderr));
            assert!(
                got.1 >= min && (min == 0 || got.0 >= 1),
                "{tag}: {} regions, peak {} bytes",
                got.0,
                got.1
            );
            got
        }
        None => report(&b.stderr).unwrap_or((0, 0)),
    };
    eprintln!(
        "{tag}: plain {:.2} s, svm exec {:.2} s, {} output bytes, {regions} regions, \
         pager peak {} KiB",
        a.secs,
        b.secs,
        a.stdout.len(),
        peak >> 10
    );
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

#[test]
fn gzip_output_is_byte_identical_under_svm_exec() {
    let gzip = which("gzip").expect("gzip");
    let dir = scratch("gzip-input");
    let input = dir.join("input.txt");
    let mut text = String::new();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in 0..200_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push_str(&format!("{i} {:x} pager vram chunk {}\n", x, x % 977));
    }
    std::fs::write(&input, text).unwrap();
    // gzip's buffers are static arrays (memory it had before the library
    // loaded): it is connected, and allocates next to nothing.
    identical("gzip", &gzip, &["-c", "-6"], Some(&input), Some(0));
}

#[test]
fn python_output_is_byte_identical_under_svm_exec() {
    let Some(py) = which("python3") else {
        eprintln!("python3 not installed: skipped");
        return;
    };
    let dir = scratch("py-script");
    let script = dir.join("work.py");
    std::fs::write(
        &script,
        "import hashlib, json, collections\n\
         d = collections.Counter()\n\
         rows = [{'i': i, 'k': 'k%d' % (i % 101), 'v': [i, str(i)]} for i in range(60000)]\n\
         for r in rows: d[r['k']] += r['i']\n\
         blob = json.dumps(rows).encode()\n\
         print(len(blob), hashlib.sha256(blob).hexdigest(), sorted(d.items())[:3])\n\
         big = bytearray(16 << 20)\n\
         big[::4096] = bytes(i % 251 for i in range(len(big[::4096])))\n\
         print(sum(big))\n",
    )
    .unwrap();
    identical(
        "python3",
        &py,
        &[script.to_str().unwrap()],
        None,
        Some(16 << 20),
    );
}

#[test]
fn sqlite_output_is_byte_identical_under_svm_exec() {
    let Some(sqlite) = which("sqlite3") else {
        eprintln!("sqlite3 not installed: skipped");
        return;
    };
    let dir = scratch("sqlite-input");
    let sql = dir.join("q.sql");
    std::fs::write(
        &sql,
        "CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v INTEGER);\n\
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 100000)\n\
         INSERT INTO t SELECT x, 'k' || (x % 997), x * 7 FROM c;\n\
         CREATE INDEX tk ON t(k);\n\
         SELECT k, count(*), sum(v) FROM t GROUP BY k ORDER BY sum(v) DESC LIMIT 5;\n\
         SELECT count(*) FROM t a JOIN t b ON a.k = b.k WHERE a.id < 300 AND b.id < 3000;\n",
    )
    .unwrap();
    identical("sqlite3", &sqlite, &[":memory:"], Some(&sql), Some(1 << 20));
}

/// A shell that forks and executes other programs (each child forked from
/// a process whose heap is pager memory gets a private copy of it; the
/// programs it runs are plain) writes the same bytes, and `svm exec`
/// exits with the program's status.
#[test]
fn a_forking_shell_pipeline_is_byte_identical_and_its_status_is_kept() {
    let sh = which("sh").expect("sh");
    let script = "x=''; for i in $(seq 1 300); do x=\"$x$i,\"; done; \
                  echo \"$x\" | tr , '\\n' | sort -n | tail -3; \
                  for i in 1 2 3 4 5 6 7 8; do echo $i | cat; done; \
                  printf 'abc\\n' | gzip -c | gzip -dc";
    identical("sh", &sh, &["-c", script], None, None);
    let dir = scratch("status");
    let r = run(
        exec_cmd(&sh, &["-c", "exit 3"]),
        None,
        Duration::from_secs(60),
        &dir,
        "status",
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
}
