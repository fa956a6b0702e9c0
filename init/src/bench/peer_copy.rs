//! Peer migration's copy (several GPUs, issue 17): 2 MiB pushed by one
//! device model's copy engine from its VRAM into a second device's VRAM
//! through its peer window (`MEM_COPY`, submission to completion), beside
//! one memcpy of the same 2 MiB between the two VRAM memfds' mappings, the
//! bare copy the issue names as the floor. The peer's VRAM is checked
//! byte for byte.

use std::sync::atomic::{AtomicU32, Ordering};

use hw::xe::commands::{Command, MemCopy};
use hw::xe::layout;
use serde::Serialize;

use super::copy_engine::{copy_on_engine, device, per_copy_us};
use super::BenchError;

const BYTES: u64 = 2 << 20;
const VRAM: u64 = 16 << 20;

#[derive(Debug, Clone, Serialize)]
pub struct PeerCopy {
    pub bytes: u64,
    /// One memcpy between the two VRAM mappings.
    pub memcpy_us: f64,
    /// The source's copy engine through its peer window.
    pub push_us: f64,
    /// Push throughput over memcpy throughput (the target: 0.8).
    pub push_throughput_of_memcpy: f64,
    /// Bytes of the peer's VRAM that differ from the source after the pushes.
    pub bad_bytes: u64,
}

pub fn measure() -> Result<PeerCopy, BenchError> {
    let host = |e: &dyn std::fmt::Display| BenchError::Host(e.to_string());
    let (source, peer) = (device(VRAM)?, device(VRAM)?);
    let pattern: Vec<u8> = (0..BYTES).map(|i| (i * 13 + i / 4096) as u8).collect();
    source.vram().write(0, &pattern);
    let memcpy_us = per_copy_us(
        || match source.vram().copy_to(0, peer.vram(), BYTES, BYTES) {
            true => Ok(()),
            false => Err(BenchError::Host("memcpy out of the VRAM mappings".into())),
        },
    )?;
    let vram = peer.vram().dup_fd().map_err(|e| host(&e))?;
    let window = source
        .peer_map(1, vram, VRAM)
        .map_err(|e| BenchError::System(format!("peer map: {e:?}")))?;
    let cmd = Command::MemCopy(
        MemCopy::contiguous(0, window, BYTES)
            .map_err(|e| BenchError::System(format!("MEM_COPY: {e:?}")))?,
    );
    let seqno = AtomicU32::new(1);
    let push_us = per_copy_us(|| {
        let n = seqno.fetch_add(1, Ordering::Relaxed);
        copy_on_engine(&source, n, &cmd)?;
        match source.reg(layout::REG_BCS_ERROR) == n {
            true => Err(BenchError::System("the peer push failed".into())),
            false => Ok(()),
        }
    })?;
    let mut landed = vec![0u8; BYTES as usize];
    let bad_bytes = if peer.vram().read(0, &mut landed) {
        landed.iter().zip(&pattern).filter(|(a, b)| a != b).count() as u64
    } else {
        BYTES
    };
    Ok(PeerCopy {
        bytes: BYTES,
        memcpy_us,
        push_us,
        push_throughput_of_memcpy: memcpy_us / push_us,
        bad_bytes,
    })
}

#[cfg(test)]
mod tests {
    /// The measurement's own check: every pushed byte lands (no speed is
    /// asserted; `svm bench` reports the ratio).
    #[test]
    fn a_peer_push_lands_every_byte() {
        let m = super::measure().expect("both device models and the push");
        assert_eq!(m.bad_bytes, 0);
        eprintln!("{m:?}");
    }
}
