//! Golden byte vectors for every message of every interface, and every
//! error frame. `UPDATE_GOLDEN=1 cargo test -p tests --test ipc_golden`
//! rewrites `tests/golden/ipc-v1.txt`; review the diff: any change there is
//! a wire-format change another implementation must follow.

use std::fmt::Write as _;

use ipc_protocol::frame::{encode_message, encode_raw, ErrorPayload};
use ipc_protocol::interfaces::*;
use ipc_protocol::{Control, Frame, Interface, Kind, Message, ProtocolError, Rights, WireError};

const ID: u64 = 0x1122_3344_5566_7788;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn vectors<I: Interface>(out: &mut String) {
    for (name, m) in I::Request::examples() {
        let kind = if ipc_protocol::server::RequestInfo::one_way(&m) {
            Kind::Notification
        } else {
            Kind::Request
        };
        let id = if kind == Kind::Notification { 0 } else { ID };
        let frame = encode_message(I::ID, kind, id, &m);
        // The golden bytes decode back to the example.
        let f = Frame::parse(&frame, m.handle_count()).expect("golden frame parses");
        assert_eq!(
            I::Request::decode_payload(f.header.opcode, f.payload, m.handle_count()),
            Ok(m.clone())
        );
        writeln!(out, "{} request {name} {}", I::NAME, hex(&frame)).unwrap();
    }
    for (name, m) in I::Reply::examples() {
        let frame = encode_message(I::ID, Kind::Reply, ID, &m);
        let f = Frame::parse(&frame, m.handle_count()).expect("golden frame parses");
        assert_eq!(
            I::Reply::decode_payload(f.header.opcode, f.payload, m.handle_count()),
            Ok(m.clone())
        );
        writeln!(out, "{} reply {name} {}", I::NAME, hex(&frame)).unwrap();
    }
    for e in I::Error::all() {
        let frame = encode_raw(
            I::ID,
            1,
            Kind::Error,
            0,
            ID,
            &ErrorPayload::Server(*e).encode(),
        );
        writeln!(out, "{} error {e:?} {}", I::NAME, hex(&frame)).unwrap();
    }
}

fn all_vectors() -> String {
    let mut out =
        String::from("# xe-svm IPC wire format v1: <interface> <kind> <message> <frame hex>\n");
    vectors::<pager::Pager>(&mut out);
    vectors::<pager_migrate::PagerMigrate>(&mut out);
    vectors::<pager_reclaim::PagerReclaim>(&mut out);
    vectors::<gpu::Gpu>(&mut out);
    vectors::<gpu_notify::GpuNotify>(&mut out);
    vectors::<gpu_shrink::GpuShrink>(&mut out);
    vectors::<pressure::Pressure>(&mut out);
    for e in ProtocolError::ALL {
        let frame = encode_raw(
            1,
            1,
            Kind::Error,
            0,
            ID,
            &ErrorPayload::<pager::PagerError>::Protocol(e).encode(),
        );
        writeln!(out, "any protocol-error {e:?} {}", hex(&frame)).unwrap();
    }
    let denied =
        ErrorPayload::<pager::PagerError>::Denied(Rights::SNAPSHOT | Rights::ADVISE).encode();
    writeln!(
        out,
        "any denied SNAPSHOT|ADVISE {}",
        hex(&encode_raw(1, 7, Kind::Error, 0, ID, &denied))
    )
    .unwrap();
    // Control frames travel on any endpoint; this one on a `Pager` endpoint.
    let restarted = Control::Restarted {
        generation: 0x0102_0304,
    };
    let frame = restarted.encode(pager::Pager::ID);
    let f = Frame::parse(&frame, 0).expect("golden frame parses");
    assert_eq!(Control::decode(&f), Ok(restarted));
    writeln!(out, "any control Restarted {}", hex(&frame)).unwrap();
    out
}

#[test]
fn golden_vectors_match_the_checked_in_file() {
    let path = tests::golden_dir().join("ipc-v1.txt");
    let now = all_vectors();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &now).unwrap();
        return;
    }
    let checked_in = std::fs::read_to_string(&path)
        .expect("tests/golden/ipc-v1.txt (UPDATE_GOLDEN=1 writes it)");
    for (i, (a, b)) in checked_in.lines().zip(now.lines()).enumerate() {
        assert_eq!(
            a,
            b,
            "golden line {} differs: the wire format changed",
            i + 1
        );
    }
    assert_eq!(
        checked_in.lines().count(),
        now.lines().count(),
        "messages were added or removed"
    );
}

#[test]
fn every_message_has_a_golden_vector() {
    let v = all_vectors();
    let count = |name: &str| v.lines().filter(|l| l.starts_with(name)).count();
    // 7 interfaces; each of their messages appears.
    assert_eq!(count("Pager "), 11 + 11 + pager::PagerError::all().len());
    assert_eq!(count("Gpu "), 16 + 16 + gpu::GpuError::all().len());
    assert_eq!(
        count("Pressure "),
        4 + 3 + pressure::PressureError::all().len()
    );
}

#[test]
fn header_layout_is_as_documented() {
    // CreateObject { size_bytes: 0x1000 }, request id 7.
    let m = pager::Request::CreateObject(pager::CreateObject { size_bytes: 0x1000 });
    let f = encode_message(1, Kind::Request, 7, &m);
    let expected: Vec<u8> = [
        &b"XSVM"[..],
        &[1, 0],                   // version
        &[1, 0],                   // interface Pager
        &[1, 0],                   // opcode CreateObject
        &[1],                      // kind request
        &[0],                      // handles
        &[8, 0, 0, 0],             // payload length
        &[7, 0, 0, 0, 0, 0, 0, 0], // request id
        &[0, 0x10, 0, 0, 0, 0, 0, 0],
    ]
    .concat();
    assert_eq!(f, expected);
}
