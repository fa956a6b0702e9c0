//! Sequences of requests driven into the broker core, for the cargo-fuzz
//! target `fuzz/fuzz_targets/pressure_sequence.rs` and the bounded
//! proptest in `tests/tests/handler_fuzz.rs`.
//!
//! The input bytes are read as a program of `Pressure` requests, each
//! decoded from the program's bytes as the server would decode a frame
//! (opcode, payload), served by the broker's handler with every right.
//! A reservation's timeout is cut to a few milliseconds so a program ends
//! (a peer's long timeout is its own wait, not the server's). After every
//! step: nothing panicked, a grant fits the VRAM total, and the VRAM in
//! use is exactly what was reported plus what was granted and not
//! released (a model kept beside); nothing waits once a call returned.

use ipc_protocol::interfaces::pressure::{Pressure, Reply, Request};
use ipc_protocol::server::Handler;
use ipc_protocol::types::{MemoryKind, World};
use ipc_protocol::{Capability, Message, Rights};

use crate::broker::{world, Broker};

/// Steps one program may take.
pub const MAX_STEPS: usize = 128;
/// The longest a reservation in a program waits.
const MAX_WAIT_MS: u32 = 2;

/// What the program did: requests served and refused.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Ran {
    pub served: u64,
    pub refused: u64,
}

/// The broker's figures as a model expects them.
#[derive(Default)]
struct Model {
    vram: [u64; 2],
    reserved: [u64; 2],
}

impl Model {
    fn used(&self) -> u64 {
        self.vram
            .iter()
            .chain(&self.reserved)
            .fold(0u64, |a, b| a.saturating_add(*b))
    }
}

/// Runs the program in `data`; panics on a broken property (a finding).
pub fn run(data: &[u8]) -> Ran {
    let mut bytes = data.iter().copied();
    let mut next = || bytes.next();
    let total = match (next(), next()) {
        (Some(a), Some(b)) => (u16::from_le_bytes([a, b]) as u64 + 1) << 20,
        _ => return Ran::default(),
    };
    let broker = Broker::new(total);
    let caller = Capability::new(1, Rights::all());
    let mut model = Model::default();
    let mut ran = Ran::default();
    for _ in 0..MAX_STEPS {
        let (Some(op), Some(len)) = (next(), next()) else {
            break;
        };
        let opcode = op as u16 % 5;
        // Half the time the payload has the size the opcode's request
        // needs, so programs reach the handler and not only the decoder.
        let n = match (len & 0x80, opcode) {
            (0, 1 | 3) => 10,
            (0, 2) => 14,
            (0, _) => 0,
            _ => len % 24,
        };
        let payload: Vec<u8> = (0..n).map_while(|_| next()).collect();
        let Ok(mut req) = Request::decode_payload(opcode, &payload, 0) else {
            continue;
        };
        if let Request::Reserve(r) = &mut req {
            r.timeout_ms = r.timeout_ms.min(MAX_WAIT_MS);
        }
        let before = model.used();
        let answer = Handler::<Pressure>::handle(&broker, &caller, req.clone(), vec![]);
        match (&req, &answer) {
            (Request::ReportUsage(u), _) if u.memory == MemoryKind::Vram => {
                model.vram[world(u.world)] = u.bytes
            }
            (Request::Reserve(r), Ok((Reply::Reserve(g), _))) => {
                assert_eq!(g.bytes, r.bytes, "a grant of another size");
                assert!(
                    before.saturating_add(g.bytes) <= total,
                    "granted {} with {before} of {total} in use",
                    g.bytes
                );
                let w = &mut model.reserved[world(r.world)];
                *w = w.saturating_add(g.bytes);
            }
            (Request::Release(r), Ok(_)) => {
                let w = &mut model.reserved[world(r.world)];
                *w = w.saturating_sub(r.bytes);
            }
            _ => {}
        }
        match answer {
            Ok(_) => ran.served += 1,
            Err(_) => ran.refused += 1,
        }
        let status = broker.status();
        assert_eq!(status.vram_used, model.used(), "after {req:?}");
        assert_eq!(broker.lock().waiting, 0, "a returned call still waits");
    }
    for w in [World::Bo, World::Svm] {
        broker.release(w, model.reserved[world(w)]);
    }
    model.reserved = [0; 2];
    assert_eq!(broker.status().vram_used, model.used());
    ran
}

#[cfg(test)]
mod tests {
    use super::run;

    #[test]
    fn a_program_of_reports_reservations_and_releases_runs() {
        let mut p = vec![15, 0]; // 16 MiB of VRAM
                                 // Report 8 MiB of SVM VRAM (opcode 1: kind, world, bytes).
        p.extend([1, 0, 1, 2]);
        p.extend((8u64 << 20).to_le_bytes());
        // Reserve 4 MiB for buffer objects (opcode 2: kind, world, bytes, ms).
        p.extend([2, 0, 1, 1]);
        p.extend((4u64 << 20).to_le_bytes());
        p.extend(1000u32.to_le_bytes());
        // Reserve 8 MiB more: it does not fit and times out.
        p.extend([2, 0, 1, 1]);
        p.extend((8u64 << 20).to_le_bytes());
        p.extend(u32::MAX.to_le_bytes());
        // A report near 2^64, then a status.
        p.extend([1, 0, 1, 1]);
        p.extend(u64::MAX.to_le_bytes());
        p.extend([4, 0]);
        let ran = run(&p);
        assert_eq!((ran.served, ran.refused), (4, 1), "{ran:?}");
    }
}
