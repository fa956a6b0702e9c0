//! The device model's copy engine against memcpy: 2 MiB from a system
//! memfd into VRAM through the copy ring (`MEM_COPY`, submission to
//! completion), beside memcpy of the same 2 MiB between two shared
//! mappings. The copy engine is what every migration of ours goes
//! through. The VRAM copy is checked byte for byte.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use hw::bar::Bar;
use hw::model::{spawn_in_process, Config};
use hw::shm::Region;
use hw::xe::commands::{Command, MemCopy};
use hw::xe::layout::{self, Ring};
use serde::Serialize;

use super::{median, BenchError};

const BYTES: usize = 2 << 20;
const REPS: usize = 15;
const COPIES_PER_REP: usize = 20;

#[derive(Debug, Clone, Serialize)]
pub struct CopyEngine {
    pub bytes: u64,
    pub memcpy_us: f64,
    pub engine_us: f64,
    pub engine_over_memcpy: f64,
    /// Bytes of VRAM that differ from the source after the copies.
    pub bad_bytes: u64,
}

/// A device model in this process with `vram_bytes` of VRAM.
pub(super) fn device(vram_bytes: u64) -> Result<Bar, BenchError> {
    let sys = |e: &dyn std::fmt::Debug| BenchError::System(format!("device model: {e:?}"));
    let (transport, _model) = spawn_in_process(Config {
        vram_bytes,
        ..Default::default()
    })
    .map_err(|e| sys(&e))?;
    Bar::connect(transport, Duration::from_secs(10)).map_err(|e| sys(&e))
}

/// Copy `n` (its seqno) on `bar`'s copy ring, submission to completion.
pub(super) fn copy_on_engine(bar: &Bar, n: u32, cmd: &Command) -> Result<(), BenchError> {
    let dev = |e: hw::bar::BarError| BenchError::System(format!("copy engine: {e:?}"));
    bar.submit(Ring::Copy, n, cmd).map_err(dev)?;
    bar.wait_seqno(layout::REG_BCS_DONE, n, Duration::from_secs(10))
        .map_err(dev)
}

/// Median of the reps, microseconds per copy.
pub(super) fn per_copy_us(
    mut copy: impl FnMut() -> Result<(), BenchError>,
) -> Result<f64, BenchError> {
    let mut times = Vec::with_capacity(REPS);
    for _ in 0..REPS {
        let t = Instant::now();
        for _ in 0..COPIES_PER_REP {
            copy()?;
        }
        times.push(t.elapsed().as_secs_f64() * 1e6 / COPIES_PER_REP as f64);
    }
    Ok(median(&times))
}

pub fn measure() -> Result<CopyEngine, BenchError> {
    let host = |e: &dyn std::fmt::Display| BenchError::Host(e.to_string());
    let src = Region::create("src", BYTES).map_err(|e| host(&e))?;
    let dst = Region::create("dst", BYTES).map_err(|e| host(&e))?;
    let pattern: Vec<u8> = (0..BYTES).map(|i| (i * 7 + i / 4096) as u8).collect();
    src.write(0, &pattern);
    dst.write(0, &vec![0u8; BYTES]);
    let mut buf = vec![0u8; BYTES];
    let memcpy_us = per_copy_us(|| {
        src.read(0, &mut buf);
        dst.write(0, &buf);
        Ok(())
    })?;
    let bar = device(16 << 20)?;
    let dma = bar
        .dma_map(0, src.dup_fd().map_err(|e| host(&e))?, BYTES as u64)
        .map_err(|e| BenchError::System(format!("dma map: {e:?}")))?;
    let cmd = Command::MemCopy(
        MemCopy::contiguous(dma, 0, BYTES as u64)
            .map_err(|e| BenchError::System(format!("MEM_COPY: {e:?}")))?,
    );
    let seqno = AtomicU32::new(1);
    let engine_us =
        per_copy_us(|| copy_on_engine(&bar, seqno.fetch_add(1, Ordering::Relaxed), &cmd))?;
    let mut vram = vec![0u8; BYTES];
    let read = bar.vram().read(0, &mut vram);
    let bad_bytes = if read {
        vram.iter().zip(&pattern).filter(|(a, b)| a != b).count() as u64
    } else {
        BYTES as u64
    };
    Ok(CopyEngine {
        bytes: BYTES as u64,
        memcpy_us,
        engine_us,
        engine_over_memcpy: engine_us / memcpy_us,
        bad_bytes,
    })
}
