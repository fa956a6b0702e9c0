//! The device's side channel for what shared memory cannot carry: handing
//! its VRAM and register memfds to the driver at probe time (like BARs) and
//! DMA-mapping system memfds the driver exposes (like an IOMMU mapping).
//! Records are 24 bytes, little-endian: op u32, slot u32, size u64, status
//! u64; descriptors ride along as `SCM_RIGHTS`.
//!
//! On Redox the channel is a scheme handle of the device's (a `call` per
//! record, [`FRAMING`]), where nothing arrives unasked: the driver asks for
//! the `Hello` with [`hello_request`] and the device answers it as the
//! call's reply. On Linux the device sends it unasked at start.

use std::os::fd::OwnedFd;

use ipc_protocol::scheme::Framing;
use ipc_protocol::transport::{Received, Transport, TransportError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ControlOp {
    /// Device to driver, once: `size` = VRAM bytes; fds: registers, VRAM.
    Hello = 1,
    /// Driver to device: map the passed memfd (`size` bytes) at `slot`.
    DmaMap = 2,
    /// Driver to device: unmap `slot`.
    DmaUnmap = 3,
    /// Device to driver: answer to a map or unmap; `status` 0 is success.
    Done = 4,
    /// Driver to device: map the passed VRAM memfd of the device whose GPU
    /// id is `slot` (`size` bytes) as that peer's window.
    PeerMap = 5,
    /// Driver to device: unmap peer `slot`'s window.
    PeerUnmap = 6,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlRecord {
    pub op: ControlOp,
    pub slot: u32,
    pub size: u64,
    pub status: u64,
}

pub const RECORD_BYTES: usize = 24;

/// Status codes of [`ControlOp::Done`].
pub const STATUS_OK: u64 = 0;
pub const STATUS_BAD_SLOT: u64 = 1;
pub const STATUS_MAP_FAILED: u64 = 2;
pub const STATUS_BAD_REQUEST: u64 = 3;

impl ControlRecord {
    pub fn encode(&self) -> [u8; RECORD_BYTES] {
        let mut b = [0u8; RECORD_BYTES];
        b[0..4].copy_from_slice(&(self.op as u32).to_le_bytes());
        b[4..8].copy_from_slice(&self.slot.to_le_bytes());
        b[8..16].copy_from_slice(&self.size.to_le_bytes());
        b[16..24].copy_from_slice(&self.status.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != RECORD_BYTES {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or([0; 4]));
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let op = match u32_at(0) {
            1 => ControlOp::Hello,
            2 => ControlOp::DmaMap,
            3 => ControlOp::DmaUnmap,
            4 => ControlOp::Done,
            5 => ControlOp::PeerMap,
            6 => ControlOp::PeerUnmap,
            _ => return None,
        };
        Some(Self {
            op,
            slot: u32_at(4),
            size: u64_at(8),
            status: u64_at(16),
        })
    }
}

/// The device's scheme on Redox (`hw::model::scheme`) and its one
/// endpoint, `/scheme/xe-model/device`, whose calls carry these records.
pub const DEVICE_SCHEME: &str = "xe-model";
pub const DEVICE_ENDPOINT: &str = "device";
/// That endpoint's interface id: none of ours (its records are not frames).
pub const DEVICE_INTERFACE: u16 = 0xDC00;

/// What a driver opens to reach the device on Redox.
pub fn device_path() -> String {
    format!("/scheme/{DEVICE_SCHEME}/{DEVICE_ENDPOINT}")
}

/// Metadata word 0 of a scheme call carrying one control record.
pub const CALL_CONTROL_V1: u64 = (u32::from_be_bytes(*b"XCTL") as u64) << 32 | 1;

/// Control records as the payload of scheme calls: untagged (the driver
/// makes one control call at a time, `Bar`'s control lock), descriptors
/// by [`record_handles`].
pub const FRAMING: Framing = Framing {
    kind: CALL_CONTROL_V1,
    token: untagged,
    reply_handles: record_handles,
};

fn untagged(_record: &[u8]) -> u64 {
    0
}

/// How many descriptors come with a record: `Hello` two (registers,
/// VRAM), `DmaMap` and `PeerMap` one (the memfd), anything else none.
pub fn record_handles(b: &[u8]) -> usize {
    match ControlRecord::decode(b).map(|r| r.op) {
        Some(ControlOp::Hello) => 2,
        Some(ControlOp::DmaMap | ControlOp::PeerMap) => 1,
        _ => 0,
    }
}

/// The driver's request for the device's `Hello` on a channel where the
/// device cannot speak first (Redox).
pub fn hello_request() -> ControlRecord {
    ControlRecord {
        op: ControlOp::Hello,
        slot: 0,
        size: 0,
        status: 0,
    }
}

pub fn send(
    t: &dyn Transport,
    rec: ControlRecord,
    fds: Vec<OwnedFd>,
) -> Result<(), TransportError> {
    t.send(&rec.encode(), fds)
}

pub fn recv(
    t: &dyn Transport,
    timeout: Option<std::time::Duration>,
) -> Result<(Option<ControlRecord>, Vec<OwnedFd>), TransportError> {
    let Received { bytes, handles, .. } = t.recv(timeout)?;
    Ok((ControlRecord::decode(&bytes), handles))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_says_how_many_descriptors_ride_with_it() {
        let hello = ControlRecord {
            size: 64 << 20,
            ..hello_request()
        };
        assert_eq!(record_handles(&hello.encode()), 2);
        let map = ControlRecord {
            op: ControlOp::DmaMap,
            slot: 3,
            size: 4096,
            status: 0,
        };
        assert_eq!(record_handles(&map.encode()), 1);
        let done = ControlRecord {
            op: ControlOp::Done,
            ..map
        };
        assert_eq!(record_handles(&done.encode()), 0);
        assert_eq!(record_handles(&[0xff; RECORD_BYTES]), 0, "undecodable");
        assert_eq!(record_handles(&[]), 0);
    }

    #[test]
    fn control_calls_are_untagged_and_not_frames() {
        let rec = hello_request().encode();
        assert_eq!((FRAMING.token)(&rec), 0);
        assert_ne!(FRAMING.kind, ipc_protocol::scheme::CALL_FRAME_V1);
        assert_eq!(ControlRecord::decode(&rec), Some(hello_request()));
    }
}
