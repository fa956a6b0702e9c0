//! The control messages between a floor's client (the `svm bench`
//! process, whose memory faults) and its pager process. One JSON message
//! per seqpacket datagram; the descriptors ride along with `Setup`.

use std::time::Duration;

use ipc_protocol::transport::{Received, SeqPacket, Transport};
use serde::{Deserialize, Serialize};

use super::uffd::Resolve;
use super::BenchError;

/// Client -> pager.
#[derive(Debug, Serialize, Deserialize)]
pub enum Control {
    /// With three descriptors: the client's userfaultfd, the object memfd
    /// its view maps, and the "VRAM" memfd holding the data.
    Setup {
        resolve: Resolve,
        base: u64,
        len: u64,
        chunk: u64,
    },
    /// Get ready for a CPU phase: empty the object (hole punch, as a
    /// migration to VRAM does); the minor floor then fills the page cache,
    /// off the timed path.
    Arm,
    /// Report and exit.
    Stop,
}

/// Pager -> client.
#[derive(Debug, Serialize, Deserialize)]
pub enum Answer {
    Ready,
    Armed { fill_us: f64 },
    Stopped(PagerStats),
    Failed { what: String },
}

/// What the floor's pager did over all reps.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PagerStats {
    /// Fault messages read, and of those reported as MINOR.
    pub faults: u64,
    pub minor_faults: u64,
    /// Resolving ioctls that mapped a chunk, and faults whose chunk an
    /// earlier fault had mapped (only a wake-up was needed).
    pub chunks_mapped: u64,
    pub already_there: u64,
    /// Resolving ioctls that failed (any makes the floor's run bad).
    pub errors: u64,
}

/// A generous bound for one control exchange: the minor floor's fill of a
/// large buffer happens inside `Arm`.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

pub fn send<T: Serialize>(
    link: &SeqPacket,
    msg: &T,
    fds: Vec<std::os::fd::OwnedFd>,
) -> Result<(), BenchError> {
    let bytes = serde_json::to_vec(msg).map_err(|e| BenchError::Helper(e.to_string()))?;
    link.send(&bytes, fds)
        .map_err(|e| BenchError::Helper(format!("floor control: {e}")))
}

pub fn recv<T: for<'de> Deserialize<'de>>(
    link: &SeqPacket,
    timeout: Duration,
) -> Result<(T, Received), BenchError> {
    let rx = link
        .recv(Some(timeout))
        .map_err(|e| BenchError::Helper(format!("floor control: {e}")))?;
    let msg = serde_json::from_slice(&rx.bytes)
        .map_err(|e| BenchError::Helper(format!("floor control message: {e}")))?;
    Ok((msg, rx))
}
