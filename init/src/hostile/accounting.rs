//! What the servers hold, server-wide: the pager's `Accounting` (opcode 8)
//! and the GPU server's (opcode 13, where it has one). Taken before the
//! hostile client connects and again after it is gone: every figure must
//! come back (the victim holds the same then as before).

use std::time::{Duration, Instant};

use ipc_protocol::client::RawError;
use ipc_protocol::frame::{encode_raw, Frame, Kind};
use ipc_protocol::interfaces::gpu::Gpu;
use ipc_protocol::interfaces::pager::{Accounting, PagerTotals};
use ipc_protocol::{Interface, Message, ProtocolError};

use crate::supervisor::Clients;

/// `Gpu::Accounting`'s opcode.
pub const GPU_ACCOUNTING: u16 = 13;

/// The GPU server's totals, as the reply's payload (compared byte for
/// byte, so no layout needs to be known here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuTotals {
    Payload(Vec<u8>),
    /// The GPU server has no `Accounting` (an unknown opcode).
    NotAvailable,
}

/// Both servers' totals at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Totals {
    pub pager: PagerTotals,
    pub gpu: GpuTotals,
}

pub fn pager_totals(c: &Clients) -> Result<PagerTotals, String> {
    c.pager
        .call(Accounting {})
        .map_err(|e| format!("the pager's Accounting: {e}"))
}

pub fn gpu_totals(c: &Clients) -> Result<GpuTotals, String> {
    let id = c.gpu.next_request_id();
    let frame = encode_raw(Gpu::ID, GPU_ACCOUNTING, Kind::Request, 0, id, &[]);
    let rx = c
        .gpu
        .call_raw(id, &frame, vec![])
        .map_err(|e| format!("the GPU server's Accounting: {e}"))?;
    let f = Frame::parse(&rx.bytes, rx.handles.len())
        .map_err(|e| format!("the GPU server's Accounting: a malformed answer: {e:?}"))?;
    match f.header.kind {
        Kind::Reply => Ok(GpuTotals::Payload(f.payload.to_vec())),
        _ => match ipc_protocol::client::decode_error::<Gpu>(&rx) {
            Some(RawError::Protocol(ProtocolError::UnknownOpcode)) => Ok(GpuTotals::NotAvailable),
            e => Err(format!("the GPU server's Accounting: {e:?}")),
        },
    }
}

pub fn totals(c: &Clients) -> Result<Totals, String> {
    Ok(Totals {
        pager: pager_totals(c)?,
        gpu: gpu_totals(c)?,
    })
}

/// Waits (up to `limit`) until the totals are `baseline` again: a
/// session's end is asynchronous (fault threads exit within a poll).
/// Returns the last totals seen and whether they matched.
pub fn settle(c: &Clients, baseline: &Totals, limit: Duration) -> Result<(Totals, bool), String> {
    let deadline = Instant::now() + limit;
    loop {
        let now = totals(c)?;
        if now == *baseline {
            return Ok((now, true));
        }
        if Instant::now() >= deadline {
            return Ok((now, false));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One line for the report.
pub fn describe(t: &Totals) -> String {
    let p = &t.pager;
    let gpu = match &t.gpu {
        GpuTotals::Payload(b) => {
            match <Gpu as Interface>::Reply::decode_payload(GPU_ACCOUNTING, b, 0) {
                Ok(ipc_protocol::interfaces::gpu::Reply::Accounting(u)) => format!("{u:?}"),
                _ => format!("{} bytes of totals", b.len()),
            }
        }
        GpuTotals::NotAvailable => "not available (no Gpu::Accounting, opcode 13)".into(),
    };
    format!(
        "pager sessions={} objects={} object_bytes={} views={} spaces={} fault_threads={} \
         arena_bytes={} collects={}; gpu {gpu}",
        p.sessions,
        p.objects,
        p.object_bytes,
        p.views,
        p.spaces,
        p.fault_threads,
        p.arena_bytes,
        p.collects
    )
}
