//! Random and truncated frames on both endpoints: bytes at random, valid
//! headers over random payloads (any interface, opcode, kind, length),
//! real requests cut short, stretched or with a byte flipped, handles the
//! header does not declare, and notifications and control frames no one
//! answers. Every framed request must get a typed error (or, by chance, a
//! legitimate reply).

use ipc_protocol::frame::{encode_message, Kind, HEADER_LEN, MAGIC, MAX_FRAME, VERSION};
use ipc_protocol::interfaces::gpu::{self as g, Gpu};
use ipc_protocol::interfaces::pager::{self as p, Pager};
use ipc_protocol::types::{ObjectId, PageCount, VmId};
use ipc_protocol::{Interface, Writer};

use super::conn::{not_a_uffd, Hostile};
use super::rng::Rng;

/// Frames in one round of this family.
pub const PER_ROUND: u64 = 64;

/// Sends [`PER_ROUND`] malformed or random frames, each to one of
/// `endpoints` (`true`: the `Gpu` endpoint, `false`: the `Pager` one).
pub fn round(h: &mut Hostile, endpoints: &[bool]) {
    for _ in 0..PER_ROUND {
        let gpu = h.rng.pick(endpoints);
        let iface = if gpu { Gpu::ID } else { Pager::ID };
        match h.rng.below(6) {
            0 => {
                let n = h
                    .rng
                    .pick(&[0usize, 1, 8, 23, 24, 25, 100, MAX_FRAME, MAX_FRAME + 64]);
                let bytes = answered(h.rng.bytes(n));
                h.raw(gpu, bytes, Vec::new());
            }
            1 => {
                let frame = random_header(&mut h.rng, iface);
                h.raw(gpu, frame, Vec::new());
            }
            2 => {
                let frame = mangled(&mut h.rng, gpu);
                h.raw(gpu, frame, Vec::new());
            }
            3 => {
                // A handle the header does not declare (or the reverse).
                let frame = mangled(&mut h.rng, gpu);
                let handles = not_a_uffd().into_iter().collect();
                h.raw(gpu, frame, handles);
            }
            4 => {
                let kind = h.rng.pick(&[Kind::Notification, Kind::Control]);
                let opcode = h.rng.below(16) as u16;
                let n = h.rng.below(16) as usize;
                let payload = h.rng.bytes(n);
                let frame = header(iface, opcode, kind as u8, 0, payload.len() as u32, &payload);
                h.one_way(gpu, &frame);
            }
            _ => {
                let frame = reply_kind(&mut h.rng, iface);
                h.raw(gpu, frame, Vec::new());
            }
        }
    }
}

/// Random bytes the server must answer: a kind byte that would make a
/// valid header one-way is made a request.
fn answered(mut bytes: Vec<u8>) -> Vec<u8> {
    if let Some(k) = bytes.get_mut(10) {
        if *k == Kind::Notification as u8 || *k == Kind::Control as u8 {
            *k = Kind::Request as u8;
        }
    }
    bytes
}

/// A header with its fields as given, then `payload`.
fn header(iface: u16, opcode: u16, kind: u8, handles: u8, len: u32, payload: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    w.put(&MAGIC);
    for v in [VERSION, iface, opcode] {
        w.put(&v.to_le_bytes());
    }
    w.put(&[kind, handles]);
    w.put(&len.to_le_bytes());
    w.put(&0u64.to_le_bytes());
    w.put(payload);
    w.into_bytes()
}

/// A request header with random interface, opcode, handle count and
/// declared length over a random payload.
fn random_header(rng: &mut Rng, own: u16) -> Vec<u8> {
    let iface = if rng.one_in(4) {
        rng.below(12) as u16
    } else {
        own
    };
    let opcode = rng.pick(&[0, 1, 5, 8, 12, 13, 14, 255, u16::MAX]);
    let n = rng.pick(&[0usize, 1, 4, 8, 16, 33, 64]);
    let payload = rng.bytes(n);
    let len = match rng.below(4) {
        0 => n as u32 + 1,
        1 => n.saturating_sub(1) as u32,
        2 => rng.pick(&[u32::MAX, (MAX_FRAME - HEADER_LEN + 1) as u32]),
        _ => n as u32,
    };
    let handles = rng.pick(&[0u8, 0, 1, 5, 255]);
    let mut f = header(iface, opcode, Kind::Request as u8, handles, len, &payload);
    if rng.one_in(8) {
        f[4] = rng.next_u64() as u8; // another version
    }
    f
}

/// A frame of a kind a server never takes (a reply or an error).
fn reply_kind(rng: &mut Rng, iface: u16) -> Vec<u8> {
    let kind = rng.pick(&[Kind::Reply as u8, Kind::Error as u8, 0, 6, 255]);
    header(iface, rng.below(14) as u16, kind, 0, 0, &[])
}

/// A real request of the endpoint's interface, cut short, stretched, or
/// with one byte flipped.
fn mangled(rng: &mut Rng, gpu: bool) -> Vec<u8> {
    let mut f = if gpu { real_gpu(rng) } else { real_pager(rng) };
    match rng.below(3) {
        0 => {
            let keep = rng.below(f.len() as u64) as usize;
            f.truncate(keep);
        }
        1 => {
            let n = 1 + rng.below(8) as usize;
            let extra = rng.bytes(n);
            f.extend(extra);
        }
        _ => {
            let i = rng.below(f.len() as u64) as usize;
            f[i] ^= 1 << rng.below(8);
        }
    }
    answered(f)
}

fn real_pager(rng: &mut Rng) -> Vec<u8> {
    let object = ObjectId::raw(rng.next_u64() as u32);
    let count = PageCount::new(1 + rng.below(512) as u16).unwrap_or(super::conn::pages(1));
    let req: p::Request = match rng.below(4) {
        0 => p::CreateObject {
            size_bytes: rng.next_u64(),
        }
        .into(),
        1 => p::Snapshot {
            object,
            first_page: rng.next_u64(),
            count,
        }
        .into(),
        2 => p::AttachView {
            object,
            addr: rng.next_u64(),
            object_first_page: 0,
            pages: 1,
        }
        .into(),
        _ => p::DestroyObject { object }.into(),
    };
    encode_message(Pager::ID, Kind::Request, 0, &req)
}

fn real_gpu(rng: &mut Rng) -> Vec<u8> {
    let vm = VmId::raw(rng.next_u64() as u32);
    let req: g::Request = match rng.below(3) {
        0 => g::Stats {}.into(),
        1 => g::Unbind {
            vm,
            gpu_addr: rng.next_u64(),
        }
        .into(),
        _ => g::DestroyVm { vm }.into(),
    };
    encode_message(Gpu::ID, Kind::Request, 0, &req)
}
