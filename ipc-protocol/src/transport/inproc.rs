//! In-process transport: a pair of channels carrying encoded frames, so
//! tests and the model exercise the same codec as the host processes.

use std::os::fd::OwnedFd;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Mutex;
use std::time::Duration;

use super::{Received, Transport, TransportError};
use crate::{MAX_FRAME, MAX_HANDLES};

type Packet = (Vec<u8>, Vec<OwnedFd>);

/// One end of an in-process link.
pub struct InProc {
    tx: Mutex<Sender<Packet>>,
    rx: Mutex<Receiver<Packet>>,
}

impl InProc {
    /// Two connected ends.
    pub fn pair() -> (Self, Self) {
        let (atx, brx) = mpsc::channel();
        let (btx, arx) = mpsc::channel();
        (
            Self {
                tx: Mutex::new(atx),
                rx: Mutex::new(arx),
            },
            Self {
                tx: Mutex::new(btx),
                rx: Mutex::new(brx),
            },
        )
    }
}

impl Transport for InProc {
    fn send(&self, frame: &[u8], handles: Vec<OwnedFd>) -> Result<(), TransportError> {
        let tx = self.tx.lock().map_err(|_| TransportError::Disconnected)?;
        tx.send((frame.to_vec(), handles))
            .map_err(|_| TransportError::Disconnected)
    }

    fn recv(&self, timeout: Option<Duration>) -> Result<Received, TransportError> {
        let rx = self.rx.lock().map_err(|_| TransportError::Disconnected)?;
        let (mut bytes, mut handles) = match timeout {
            None => rx.recv().map_err(|_| TransportError::Disconnected)?,
            Some(t) => rx.recv_timeout(t).map_err(|e| match e {
                RecvTimeoutError::Timeout => TransportError::TimedOut,
                RecvTimeoutError::Disconnected => TransportError::Disconnected,
            })?,
        };
        // Behave like the seqpacket transport's bounded receive buffers.
        let truncated = bytes.len() > MAX_FRAME;
        bytes.truncate(MAX_FRAME + 1);
        let handles_truncated = handles.len() > MAX_HANDLES;
        handles.truncate(MAX_HANDLES);
        Ok(Received {
            bytes,
            handles,
            truncated,
            handles_truncated,
        })
    }
}
