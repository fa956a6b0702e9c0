//! Round-trip property tests for every message of every interface, and
//! "never panics" checks for arbitrary and truncated input.

use ipc_protocol::frame::encode_message;
use ipc_protocol::interfaces::*;
use ipc_protocol::{Frame, Interface, Kind, Message, ProtocolError};
use proptest::prelude::*;

fn roundtrip<M: Message>(iface: u16, kind: Kind, m: &M) -> Result<(), TestCaseError> {
    let frame = encode_message(iface, kind, 42, m);
    prop_assert!(frame.len() <= ipc_protocol::MAX_FRAME);
    let f = Frame::parse(&frame, m.handle_count())
        .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
    prop_assert_eq!(f.header.request_id, 42);
    let back = M::decode_payload(f.header.opcode, f.payload, m.handle_count());
    prop_assert_eq!(back, Ok(m.clone()));
    // Every strict prefix is refused, never a panic, never a wrong message.
    for cut in 0..frame.len() {
        let e = Frame::parse(&frame[..cut], m.handle_count())
            .and_then(|f| M::decode_payload(f.header.opcode, f.payload, m.handle_count()));
        prop_assert_eq!(e, Err(ProtocolError::Truncated), "prefix of {} bytes", cut);
    }
    Ok(())
}

macro_rules! interface_roundtrips {
    ($($name:ident: $iface:ty),* $(,)?) => {$(
        mod $name {
            use super::*;
            proptest! {
                #![proptest_config(ProptestConfig::with_cases(256))]
                #[test]
                fn requests(m in <<$iface as Interface>::Request as Message>::strategy()) {
                    let kind = if ipc_protocol::server::RequestInfo::one_way(&m) { Kind::Notification } else { Kind::Request };
                    roundtrip(<$iface>::ID, kind, &m)?;
                }
                #[test]
                fn replies(m in <<$iface as Interface>::Reply as Message>::strategy()) {
                    roundtrip(<$iface>::ID, Kind::Reply, &m)?;
                }
                #[test]
                fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
                    ipc_protocol::fuzzing::decode_frame::<$iface>(&data);
                }
            }
        }
    )*};
}

interface_roundtrips!(
    pager_rt: pager::Pager,
    pager_migrate_rt: pager_migrate::PagerMigrate,
    pager_reclaim_rt: pager_reclaim::PagerReclaim,
    gpu_rt: gpu::Gpu,
    gpu_notify_rt: gpu_notify::GpuNotify,
    gpu_shrink_rt: gpu_shrink::GpuShrink,
    pressure_rt: pressure::Pressure,
);

/// A bounded version of the cargo-fuzz run: mutated golden-shaped frames
/// through every decoder.
#[test]
fn fuzz_smoke_mutated_frames() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut bases: Vec<Vec<u8>> = Vec::new();
    for (_, m) in gpu::Request::examples() {
        bases.push(encode_message(4, Kind::Request, 1, &m));
    }
    for (_, m) in pager::Reply::examples() {
        bases.push(encode_message(1, Kind::Reply, 1, &m));
    }
    for i in 0..50_000 {
        let mut f = bases[i % bases.len()].clone();
        for _ in 0..(next() % 4 + 1) {
            let pos = (next() as usize) % f.len();
            f[pos] = next() as u8;
        }
        if next() % 8 == 0 {
            f.truncate((next() as usize) % (f.len() + 1));
        }
        let mut data = vec![(next() % 5) as u8];
        data.extend_from_slice(&f);
        ipc_protocol::fuzzing::decode_all(&data);
    }
}

#[test]
fn bounded_list_count_is_checked_before_allocating() {
    // PageStates with a declared count of 512 but no elements: Truncated,
    // and a count over the bound: Oversized.
    let mut payload = vec![0x00, 0x02];
    let e = pager::Reply::decode_payload(7, &payload, 0);
    assert_eq!(e, Err(ProtocolError::Truncated));
    payload = vec![0x01, 0x02]; // 513
    assert_eq!(
        pager::Reply::decode_payload(7, &payload, 0),
        Err(ProtocolError::Oversized)
    );
}
