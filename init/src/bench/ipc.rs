//! The IPC round trip: a typed call to the booted pager (`Pager::Advise`
//! through the client stub, the pager's serve loop and handler) against a
//! bare `SOCK_SEQPACKET` round trip of the same sizes to an echo process
//! (`svm bench-helper echo`). Both cross a process boundary. Every reply is
//! checked: a typed call must succeed, an echo must carry its request's
//! sequence number.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipc_protocol::interfaces::pager::{Advise, CreateObject, DestroyObject};
use ipc_protocol::transport::{inherited_fd, pass_fds_to_child, SeqPacket};
use ipc_protocol::types::Advice;
use rustix::net::{recv, send, RecvFlags, SendFlags};
use serde::Serialize;

use super::{median, BenchError};
use crate::supervisor::Connection;

/// The frame sizes of a `Pager::Advise` request and its reply
/// (`tests/golden/ipc-v1.txt`), so the bare round trip moves the same bytes.
const REQUEST_BYTES: usize = 45;
const REPLY_BYTES: usize = 24;
/// A bare round trip that takes longer than this has lost its peer.
const ECHO_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Serialize)]
pub struct RoundTrip {
    pub bare_us: f64,
    pub typed_us: f64,
    pub typed_over_bare: f64,
    pub calls: u64,
    /// Echoes with the wrong sequence and typed calls that failed.
    pub bad: u64,
}

/// Median of `reps` batches of `calls` round trips, microseconds per call.
fn per_call_us(
    reps: usize,
    calls: usize,
    mut call: impl FnMut(u64) -> Result<bool, BenchError>,
    bad: &mut u64,
) -> Result<f64, BenchError> {
    let mut times = Vec::with_capacity(reps);
    let mut seq = 0u64;
    for _ in 0..reps {
        let t = Instant::now();
        for _ in 0..calls {
            seq += 1;
            if !call(seq)? {
                *bad += 1;
            }
        }
        times.push(t.elapsed().as_secs_f64() * 1e6 / calls.max(1) as f64);
    }
    Ok(median(&times))
}

pub fn measure(
    svm: &Path,
    c: &Connection,
    reps: usize,
    calls: usize,
) -> Result<RoundTrip, BenchError> {
    let mut bad = 0;
    let bare_us = bare(svm, reps, calls, &mut bad)?;
    let typed_us = typed(c, reps, calls, &mut bad)?;
    Ok(RoundTrip {
        bare_us,
        typed_us,
        typed_over_bare: typed_us / bare_us,
        calls: (reps * calls) as u64,
        bad,
    })
}

fn bare(svm: &Path, reps: usize, calls: usize, bad: &mut u64) -> Result<f64, BenchError> {
    let host = |e: &dyn std::fmt::Display| BenchError::Host(e.to_string());
    let (mine, theirs) = SeqPacket::pair().map_err(|e| host(&e))?;
    let (mine, theirs) = (owned(&mine)?, owned(&theirs)?);
    rustix::net::sockopt::set_socket_timeout(
        &mine,
        rustix::net::sockopt::Timeout::Recv,
        Some(ECHO_TIMEOUT),
    )
    .map_err(|e| host(&e))?;
    let mut cmd = Command::new(svm);
    cmd.args(["bench-helper", "echo", "--fd", "3"])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let held = pass_fds_to_child(&mut cmd, &[(&theirs, 3)]).map_err(|e| host(&e))?;
    let mut child = cmd.spawn().map_err(|e| host(&e))?;
    drop((held, theirs));
    let mut request = [0u8; REQUEST_BYTES];
    let mut reply = [0u8; REPLY_BYTES + 1];
    let result = per_call_us(
        reps,
        calls,
        |seq| {
            request[..8].copy_from_slice(&seq.to_le_bytes());
            send(&mine, &request, SendFlags::NOSIGNAL).map_err(|e| host(&e))?;
            let n = recv(&mine, &mut reply, RecvFlags::empty())
                .map_err(|e| BenchError::Helper(format!("echo: {e}")))?
                .0;
            Ok(n == REPLY_BYTES && reply[..8] == seq.to_le_bytes())
        },
        bad,
    );
    drop(mine);
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn owned(s: &SeqPacket) -> Result<OwnedFd, BenchError> {
    s.fd()
        .try_clone_to_owned()
        .map_err(|e| BenchError::Host(e.to_string()))
}

fn typed(c: &Connection, reps: usize, calls: usize, bad: &mut u64) -> Result<f64, BenchError> {
    let system = |e: &dyn std::fmt::Display| BenchError::System(e.to_string());
    let (created, _memfd) = c
        .pager
        .call_with_handles(CreateObject { size_bytes: 4096 }, vec![])
        .map_err(|e| system(&e))?;
    let object = created.object;
    let result = per_call_us(
        reps,
        calls,
        |_| {
            Ok(c.pager
                .call(Advise {
                    object,
                    first_page: 0,
                    pages: 1,
                    advice: Advice::PreferDevice,
                })
                .is_ok())
        },
        bad,
    );
    c.pager
        .call(DestroyObject { object })
        .map_err(|e| system(&e))?;
    result
}

/// `svm bench-helper echo`: answers each datagram on the inherited socket
/// with a reply frame that starts with the request's first 8 bytes.
pub fn echo_main(fd: i32) -> i32 {
    // SAFETY: the bench started this process with the socket at `fd`.
    let sock = unsafe { inherited_fd(fd) };
    let mut buf = [0u8; 256];
    let mut reply = [0u8; REPLY_BYTES];
    loop {
        match recv(&sock, &mut buf, RecvFlags::empty()) {
            Ok((0, _)) => return 0,
            Ok((n, _)) if n >= 8 => reply[..8].copy_from_slice(&buf[..8]),
            Ok(_) => reply[..8].fill(0),
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return 1,
        }
        if send(&sock, &reply, SendFlags::NOSIGNAL).is_err() {
            return 0;
        }
    }
}
