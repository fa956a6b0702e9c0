//! A client that keeps its memory moving: the GPU pulls a buffer into
//! VRAM, the CPU reads every page back, round after round, and prints
//! `round N` after each. Tests start it as a separate process and kill it
//! in the middle of a migration (`svm client ... churn`).

use std::io::Write;

use ipc_protocol::interfaces::gpu::{BindView, CreateVm};
use ipc_protocol::types::{JobStatus, KernelKind};

use crate::client::{run_kernel, SvmBuffer};
use crate::supervisor::Connection;

/// Runs `rounds` rounds (forever with `None`) on a buffer of `bytes`;
/// returns the rounds done. Every word is checked each round.
pub fn run(
    c: &Connection,
    bytes: usize,
    rounds: Option<u64>,
    out: &mut impl Write,
) -> Result<u64, String> {
    let vm = c.gpu.call(CreateVm {}).map_err(|e| e.to_string())?.vm;
    let buf = SvmBuffer::new(&c.pager, bytes).map_err(|e| e.to_string())?;
    c.gpu
        .call(BindView {
            vm,
            view: buf.view,
            gpu_addr: buf.addr,
            flags: 0,
        })
        .map_err(|e| e.to_string())?;
    let words = bytes / 4;
    let mut n = 0u64;
    while rounds.is_none_or(|r| n < r) {
        let done = run_kernel(
            &c.gpu,
            vm,
            KernelKind::IncrementAll,
            buf.addr,
            bytes as u64,
            1,
        )
        .map_err(|e| e.to_string())?;
        if done.status != JobStatus::Completed {
            return Err(format!("GPU job ended {:?}", done.status));
        }
        n += 1;
        // SAFETY: the buffer is ours; the GPU job is done.
        let w = unsafe { buf.words() };
        let bad = (0..words)
            .filter(|&i| unsafe { std::ptr::read_volatile(&w[i]) } != n as u32)
            .count();
        if bad > 0 {
            return Err(format!("round {n}: {bad} bad words"));
        }
        writeln!(out, "round {n}")
            .and_then(|_| out.flush())
            .map_err(|e| e.to_string())?;
    }
    Ok(n)
}
