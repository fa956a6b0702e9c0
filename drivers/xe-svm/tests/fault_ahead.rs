//! Fault-ahead (`--fault-ahead N`, `fault_ahead.rs`): a stream of GPU
//! faults moves the chunks after it to VRAM before the kernel reaches
//! them, and the kernel then finds them mapped; a lone fault moves nothing
//! ahead, nothing moves where no binding is, and with it off only faulted
//! chunks move.

mod common;

use std::time::{Duration, Instant};

use common::World;
use ipc_protocol::types::JobStatus;
use xe_svm::budget::GpuBudget;

const A: u64 = 101;
const BASE: u64 = 0x1000_0000;
const CHUNK: u64 = 2 << 20;
/// Chunks bound, one view (a 2 MiB object) each, from `BASE`.
const BOUND: u64 = 8;

fn world(ahead: usize) -> (World, u32) {
    let w = World::with_fault_ahead(GpuBudget::default(), ahead);
    let vm = w.create_vm(A).unwrap().vm.get();
    for v in 0..BOUND {
        w.bind(A, vm, 10 + v as u32, BASE + v * CHUNK);
    }
    (w, vm)
}

/// Runs a kernel touching chunks `[first, first + n)` to its end.
fn touch(w: &World, vm: u32, first: u64, n: u64) {
    let job = w.touch(A, vm, BASE + first * CHUNK, n * CHUNK).unwrap();
    assert_eq!(w.wait(A, job, 20_000).unwrap().status, JobStatus::Completed);
}

/// Chunks moved to VRAM (and finalized) once they stop changing, or
/// `want` is reached, within 10 s.
fn chunks_in_vram(w: &World, want: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = (u64::MAX, Instant::now());
    loop {
        let now = w.stats(A).pages_to_vram * 4096 / CHUNK;
        if now == want || Instant::now() > deadline {
            return now;
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_millis(500) && now > want {
            return now;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_stream_of_faults_moves_the_chunks_ahead_of_it() {
    let (w, vm) = world(2);
    touch(&w, vm, 0, 1);
    touch(&w, vm, 1, 1);
    assert_eq!(chunks_in_vram(&w, 4), 4, "chunks 2 and 3 moved ahead");
    // A move maps its pages right after its finalize is counted.
    std::thread::sleep(Duration::from_millis(200));
    let faults = w.stats(A).gpu_faults;
    touch(&w, vm, 2, 2);
    assert_eq!(
        w.stats(A).gpu_faults,
        faults,
        "the kernel found them mapped"
    );
}

#[test]
fn nothing_moves_ahead_of_a_lone_fault_or_past_the_bindings() {
    let (w, vm) = world(2);
    touch(&w, vm, 4, 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(chunks_in_vram(&w, 1), 1, "a lone fault moved chunks ahead");
    // A stream into the last two bound chunks: 8 and 9 are not bound.
    touch(&w, vm, 6, 1);
    touch(&w, vm, 7, 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(chunks_in_vram(&w, 3), 3, "chunks past the bindings moved");
}

#[test]
fn with_fault_ahead_off_only_faulted_chunks_move() {
    let (w, vm) = world(0);
    touch(&w, vm, 0, 1);
    touch(&w, vm, 1, 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(chunks_in_vram(&w, 2), 2);
}
