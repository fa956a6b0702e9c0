//! The victim: one round is a herd pass (CPU fill, GPU touch, CPU threads
//! reading every page back) and an oversubscription pass (an SVM working
//! set larger than VRAM beside buffer-object jobs), every word checked.

use std::time::{Duration, Instant};

use crate::herd::{self, Mode};
use crate::oversub;
use crate::supervisor::Clients;

/// What the victim does in one round.
#[derive(Debug, Clone)]
pub struct VictimConfig {
    /// The herd's buffer.
    pub herd_bytes: usize,
    /// The SVM working set as a multiple of usable VRAM.
    pub oversub_ratio: f64,
}

impl Default for VictimConfig {
    fn default() -> Self {
        Self {
            herd_bytes: 2 << 20,
            oversub_ratio: 1.25,
        }
    }
}

/// One round's result: wrong words (pages and buffer objects with any
/// wrong word) and how long it took.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    pub bad: u64,
    pub elapsed: Duration,
}

/// Runs one victim round; the error says which pass failed and why.
pub fn round(c: &Clients, cfg: &VictimConfig) -> Result<Round, String> {
    let t0 = Instant::now();
    let h = herd::run(
        c,
        &herd::Config {
            mode: Mode::Touch,
            bytes: cfg.herd_bytes,
            threads: 2,
            reps: 1,
            gpu_threads: 16,
            same_start: false,
            gpus: 1,
        },
    )
    .map_err(|e| format!("the victim's herd pass: {e}"))?;
    let o = oversub::run(
        c,
        &oversub::Config {
            ratio: cfg.oversub_ratio,
            passes: 1,
            bos: 2,
            bo_share: 0.25,
            bo_threads: 1,
            gpu_threads: 16,
            cpu_threads: 2,
        },
    )
    .map_err(|e| format!("the victim's oversubscription pass: {e}"))?;
    Ok(Round {
        bad: h.bad + o.bad_pages + o.bad_bos,
        elapsed: t0.elapsed(),
    })
}
