//! Peer migration through the servers (several GPUs, issue 17): two GPUs
//! booted, a buffer GPU 0 touched into its VRAM, then GPU 1's touch takes
//! it VRAM to VRAM; the counters say nothing went through RAM and the CPU
//! reads every word back right; the same when one `Gpu::Prefetch` on GPU 1
//! moves the pages instead of its faults. `svm run peer` as a user runs
//! it, too.

mod common;

use std::time::Duration;

use common::{bounded, svm_within as svm};
use init::peer_migrate::{self, Config, Mover};
use init::supervisor::{BootOptions, System};

const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn pages_move_vram_to_vram_and_every_word_is_right() {
    peer_migration_moves_every_page(Mover::Touch, 0);
}

/// With fault-ahead (`--fault-ahead 4`) the GPU servers move chunks ahead
/// of GPU 1's faults (and of GPU 0's, from RAM): 10 MiB is five chunks, the
/// last three moved ahead of a stream, and every word must still be right.
#[test]
fn with_fault_ahead_pages_move_vram_to_vram_and_every_word_is_right() {
    peer_migration_moves_every_page(Mover::Touch, 4);
}

/// Prefetch moves four chunks at once (`PREFETCH_LANES`): 4 MiB is two
/// chunks, 6 MiB three, each in its own lane.
#[test]
fn a_prefetch_moves_pages_vram_to_vram_with_no_fault_and_every_word_right() {
    peer_migration_moves_every_page(Mover::Prefetch, 0);
}

fn peer_migration_moves_every_page(by: Mover, ahead: u8) {
    bounded(LIMIT, move || {
        let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_svm"));
        std::env::set_var("SVM_BIN_DIR", exe.parent().unwrap());
        let mut opts = BootOptions::default();
        opts.device.vram_bytes = 32 << 20;
        opts.gpus = 2;
        opts.set_fault_ahead(ahead).expect("a depth in range");
        let (system, clients) = System::boot(&opts).expect("two GPUs boot");
        let c = clients.expect("clients");
        let bytes: usize = if ahead > 0 { 10 << 20 } else { 6 << 20 };
        let pages = (bytes / 4096) as u64;
        let cfg = Config {
            bytes,
            reps: 2,
            gpu_threads: 64,
            by,
        };
        let r = peer_migrate::run(&c, &cfg, |rep| eprintln!("{}", rep.line()))
            .expect("the peer migration ran");
        eprintln!("{}", r.line());
        assert_eq!(r.reps.len(), 2);
        assert_eq!(r.pages, pages);
        for rep in &r.reps {
            assert_eq!(rep.bad_words, 0, "{}", rep.line());
            assert_eq!(
                rep.gpu0_pages_to_vram,
                pages,
                "GPU 0 took every page: {}",
                rep.line()
            );
            assert_eq!(
                rep.gpu1_pages_to_vram,
                pages,
                "GPU 1 took every page: {}",
                rep.line()
            );
            assert_eq!(
                rep.gpu0_pages_to_ram,
                0,
                "none went through RAM: {}",
                rep.line()
            );
            assert_eq!(
                rep.gpu0_vram_used_after,
                0,
                "GPU 0 gave every page: {}",
                rep.line()
            );
            assert!(rep.vram_to_vram && rep.migrate_us > 0.0);
            if by == Mover::Prefetch {
                assert_eq!(
                    rep.gpu1_faults,
                    0,
                    "no GPU fault moved them: {}",
                    rep.line()
                );
            }
        }
        assert_eq!(r.bad, 0);
        assert!(r.passed() && r.floor.gbps > 0.0 && r.ratio > 0.0);
        drop(c);
        assert!(system.shutdown().is_empty(), "the system stopped cleanly");
    });
}

#[test]
fn svm_run_peer_reports_the_ratio_and_bad_zero() {
    for by in ["touch", "prefetch"] {
        svm_run_peer_by(by);
    }
}

fn svm_run_peer_by(by: &str) {
    let args = [
        "run", "peer", "--size", "4M", "--reps", "1", "--json", "--by", by,
    ];
    let (ok, out, err) = svm(&args, LIMIT);
    assert!(ok, "svm run peer failed:\n{out}\n{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("a JSON line");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["bad"], 0, "{line}");
    assert_eq!(v["vram_to_vram"], true, "{line}");
    assert_eq!(v["size_kib"], 4096, "{line}");
    let rep = &v["reps"][0];
    assert_eq!(rep["gpu1_pages_to_vram"], 1024, "{line}");
    assert_eq!(rep["gpu0_pages_to_ram"], 0, "{line}");
    assert!(v["ratio"].as_f64().unwrap() > 0.0, "{line}");
}

/// Every number is checked before anything boots.
#[test]
fn bad_numbers_are_refused_before_booting() {
    for args in [
        &["run", "peer", "--size", "0"][..],
        &["run", "peer", "--size", "5000"],
        &["run", "peer", "--size", "16G"],
        &["run", "peer", "--reps", "0"],
        &["run", "peer", "--reps", "1001"],
        &["run", "peer", "--by", "teleport"],
        &["--vram-mib", "8", "run", "peer", "--size", "16M"],
        &["--fault-ahead", "9", "run", "peer"],
        &["--fault-ahead", "-1", "run", "peer"],
    ] {
        let (ok, out, err) = svm(args, Duration::from_secs(20));
        assert!(!ok, "{args:?} was accepted:\n{out}");
        assert!(err.starts_with("svm: "), "{args:?}: {err}");
        assert!(!err.contains("system"), "{args:?} booted: {err}");
    }
}
