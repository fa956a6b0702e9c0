//! The Redox runtime's scheme mapping (`ipc_protocol::scheme`) driven on
//! the host the way the Redox kernel would drive it: hand-built request
//! records (`Sqe`, checked against redox_syscall's layout in the crate's
//! unit tests), call payload buffers as the kernel maps them, descriptors by
//! `sendfd`/`recvfd`. Every golden frame travels through a scheme call
//! unchanged, and a real `Pager` handler serves through it.

use std::collections::HashMap;
use std::os::fd::OwnedFd;

use ipc_protocol::frame::{encode_message, ErrorPayload};
use ipc_protocol::interfaces::pager::{self, Pager, PagerError};
use ipc_protocol::scheme::record::opcode;
use ipc_protocol::scheme::{
    on_call, Caller, Cqe, Endpoint, Endpoints, Errno, Opener, Request, Session, Sqe, CALL_FRAME_V1,
};
use ipc_protocol::server::dispatch;
use ipc_protocol::transport::Received;
use ipc_protocol::types::{ObjectId, PAGE_SIZE};
use ipc_protocol::{Capability, Frame, Interface, Kind, Message, Rights, MAX_FRAME};
use tests::conformance_server::{ConformancePager, SERVER_PATTERN};

const INIT_PID: u64 = 7;
const CLIENT_PID: u64 = 42;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// (interface, kind, message) -> frame, from tests/golden/ipc-v1.txt.
fn golden() -> HashMap<(String, String, String), Vec<u8>> {
    let text = std::fs::read_to_string(tests::golden_dir().join("ipc-v1.txt")).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            ((f[0].into(), f[1].into(), f[2].into()), unhex(f[3]))
        })
        .collect()
}

/// A pipe end: a real descriptor to pass around.
fn a_descriptor() -> OwnedFd {
    rustix::pipe::pipe().unwrap().0
}

/// What the kernel would write for a client's `call` on handle `id`: the
/// record, which travels as bytes, decoded back on the server's side.
fn call_record(tag: u32, id: u64, frame_len: usize) -> (u32, Caller, Request) {
    let mut sqe = Sqe {
        opcode: opcode::CALL,
        tag,
        caller: CLIENT_PID,
        ..Default::default()
    };
    sqe.args = [
        id,
        0x7000_0000,
        MAX_FRAME as u64,
        CALL_FRAME_V1,
        frame_len as u64,
        0,
    ];
    let sqe = Sqe::from_bytes(&sqe.to_bytes());
    (sqe.tag, sqe.caller(), sqe.request())
}

/// The client side of one call: `sendfd` of `fds` tagged with the frame's
/// request id if any, the call record, the server's answer as a completion.
fn call(
    eps: &mut Endpoints,
    id: u64,
    frame: &[u8],
    fds: Vec<OwnedFd>,
    serve: &mut dyn FnMut(&Session, Received) -> Option<(Vec<u8>, Vec<OwnedFd>)>,
) -> (Cqe, Vec<u8>) {
    let token = ipc_protocol::frame::Header::peek_request_id(frame);
    if !fds.is_empty() {
        let n = fds.len();
        assert_eq!(eps.send_fds(id, token, fds), Ok(n));
    }
    let (tag, caller, req) = call_record(9, id, frame.len());
    assert_eq!(caller.pid, CLIENT_PID);
    let Request::Call {
        id: on,
        payload_len,
        metadata,
    } = req
    else {
        panic!("not a call: {req:?}")
    };
    let mut payload = vec![0u8; payload_len as usize];
    payload[..frame.len()].copy_from_slice(frame);
    let result = on_call(eps, on, &mut payload, &metadata, serve);
    let cqe = Cqe::regular(tag, result);
    let reply = match result {
        Ok(n) => payload[..n].to_vec(),
        Err(_) => Vec::new(),
    };
    (cqe, reply)
}

fn endpoints(caps: &[(&str, Rights)]) -> Endpoints {
    let declared = caps
        .iter()
        .enumerate()
        .map(|(i, (path, rights))| Endpoint {
            path: (*path).into(),
            interface: Pager::ID,
            capability: Capability::new(100 + i as u64, *rights),
        })
        .collect();
    Endpoints::new(declared, Opener::Process(INIT_PID)).unwrap()
}

fn init_opens(eps: &mut Endpoints, path: &str) -> u64 {
    let caller = Caller {
        pid: INIT_PID,
        uid: 0,
        gid: 0,
    };
    eps.open(path, caller).unwrap()
}

#[test]
fn every_golden_frame_crosses_a_scheme_call_unchanged() {
    let golden = golden();
    let mut eps = endpoints(&[("any.100", Rights::all())]);
    let id = init_opens(&mut eps, "any.100");
    let mut requests = 0;
    for ((iface, kind, name), frame) in &golden {
        if kind != "request" {
            continue;
        }
        requests += 1;
        let handles = frame[11] as usize;
        let notification = frame[10] == Kind::Notification as u8;
        let reply = golden.get(&(iface.clone(), "reply".into(), name.clone()));
        assert!(
            notification || reply.is_some(),
            "{iface} {name}: no golden reply"
        );
        let mut seen = None;
        let mut serve = |_: &Session, rx: Received| {
            // The server gets exactly the golden bytes and their handles.
            let parsed = Frame::parse(&rx.bytes, rx.handles.len()).map(|f| f.header);
            seen = Some((rx.bytes.clone(), rx.handles.len(), parsed));
            let r = reply?.clone();
            let fds = (0..r[11]).map(|_| a_descriptor()).collect();
            Some((r, fds))
        };
        let fds = (0..handles).map(|_| a_descriptor()).collect();
        let (cqe, got) = call(&mut eps, id, frame, fds, &mut serve);
        let (bytes, n, parsed) = seen.expect("the server was called");
        assert_eq!((&bytes, n), (frame, handles), "{iface} {name}");
        assert!(parsed.is_ok(), "{iface} {name}: {parsed:?}");
        match reply.filter(|_| !notification) {
            Some(r) => {
                assert_eq!(&got, r, "{iface} {name}: reply bytes");
                assert_eq!(cqe.result, r.len() as u64);
                let token = ipc_protocol::frame::Header::peek_request_id(frame);
                let back = eps.receive_fds(id, token, r[11] as u64).unwrap_or_default();
                assert_eq!(back.len(), r[11] as usize, "{iface} {name}: reply handles");
            }
            None => assert_eq!(cqe.result, 0, "{iface} {name}: a notification answers 0"),
        }
    }
    assert!(requests >= 30, "only {requests} golden requests");
}

#[test]
fn a_pager_serves_through_the_scheme() {
    let handler = ConformancePager::default();
    let mut eps = endpoints(&[
        ("pager.100", Rights::OBJECT | Rights::SNAPSHOT),
        ("pager.101", Rights::SNAPSHOT),
    ]);
    let full = init_opens(&mut eps, "pager.100");
    let limited = init_opens(&mut eps, "pager.101");
    let mut serve = |s: &Session, rx: Received| {
        assert_eq!(s.interface, Pager::ID);
        dispatch::<Pager, _>(&s.capability, &handler, rx)
    };
    let create = pager::Request::CreateObject(pager::CreateObject {
        size_bytes: 4 * PAGE_SIZE,
    });
    let frame = encode_message(Pager::ID, Kind::Request, 77, &create);
    let (cqe, reply) = call(&mut eps, full, &frame, vec![], &mut serve);
    assert_eq!(cqe.result, reply.len() as u64);
    let f = Frame::parse(&reply, 1).unwrap();
    let object = match pager::Reply::decode_payload(f.header.opcode, f.payload, 1).unwrap() {
        pager::Reply::CreateObject(c) => c.object,
        other => panic!("{other:?}"),
    };
    // The memfd the reply carries waits for recvfd, keyed by request id 77.
    assert_eq!(eps.receive_fds(full, 78, 1).unwrap_err(), Errno::Again);
    assert_eq!(eps.receive_fds(full, 77, 2).unwrap_err(), Errno::Invalid);
    let memfd = eps.receive_fds(full, 77, 1).unwrap().pop().unwrap();
    let mut head = vec![0u8; SERVER_PATTERN.len()];
    rustix::io::pread(&memfd, &mut head, 0).unwrap();
    assert_eq!(head, SERVER_PATTERN, "the server's memfd came through");

    // The capability is the handle's: the limited endpoint may not create,
    // and the full one's object is not the limited one's.
    let (_, reply) = call(&mut eps, limited, &frame, vec![], &mut serve);
    let f = Frame::parse(&reply, 0).unwrap();
    assert_eq!(f.header.kind, Kind::Error);
    assert_eq!(
        ErrorPayload::<PagerError>::decode(f.payload),
        Ok(ErrorPayload::Denied(Rights::OBJECT))
    );
    let destroy = pager::Request::DestroyObject(pager::DestroyObject { object });
    let frame = encode_message(Pager::ID, Kind::Request, 78, &destroy);
    let (_, reply) = call(&mut eps, limited, &frame, vec![], &mut serve);
    let f = Frame::parse(&reply, 0).unwrap();
    assert_eq!(
        ErrorPayload::<PagerError>::decode(f.payload),
        Ok(ErrorPayload::Denied(Rights::OBJECT))
    );
    let (_, reply) = call(&mut eps, full, &frame, vec![], &mut serve);
    assert_eq!(Frame::parse(&reply, 0).unwrap().header.kind, Kind::Reply);
    let again = encode_message(Pager::ID, Kind::Request, 79, &destroy);
    let (_, reply) = call(&mut eps, full, &again, vec![], &mut serve);
    let f = Frame::parse(&reply, 0).unwrap();
    assert_eq!(
        ErrorPayload::<PagerError>::decode(f.payload),
        Ok(ErrorPayload::Server(PagerError::NoSuchObject))
    );
    let _ = ObjectId::raw(1);
}

#[test]
fn hostile_records_get_errnos_not_panics() {
    let mut eps = endpoints(&[("a.100", Rights::all()), ("b.101", Rights::all())]);
    let client = Caller {
        pid: CLIENT_PID,
        uid: 0,
        gid: 0,
    };
    // Only init opens, each endpoint once, declared paths only.
    assert_eq!(eps.open("a.100", client), Err(Errno::Access));
    assert_eq!(eps.open("nope", client), Err(Errno::NoEntry));
    let a = init_opens(&mut eps, "a.100");
    let init = Caller {
        pid: INIT_PID,
        uid: 0,
        gid: 0,
    };
    assert_eq!(eps.open("a.100", init), Err(Errno::Exists));

    let mut served = 0;
    let mut serve = |_: &Session, _: Received| {
        served += 1;
        None
    };
    let mut buf = vec![0u8; MAX_FRAME];
    // Unknown handles, wrong metadata, lengths past the buffer, a buffer
    // too small for any reply: refused before anything is served.
    for (id, len, meta, want) in [
        (99, MAX_FRAME, vec![CALL_FRAME_V1, 24], Errno::BadHandle),
        (
            u64::MAX,
            MAX_FRAME,
            vec![CALL_FRAME_V1, 24],
            Errno::BadHandle,
        ),
        (a, MAX_FRAME, vec![], Errno::NotSupported),
        (a, MAX_FRAME, vec![1, 24], Errno::NotSupported),
        (a, MAX_FRAME, vec![CALL_FRAME_V1], Errno::Invalid),
        (
            a,
            MAX_FRAME,
            vec![CALL_FRAME_V1, MAX_FRAME as u64 + 1],
            Errno::Invalid,
        ),
        (a, MAX_FRAME, vec![CALL_FRAME_V1, u64::MAX], Errno::Invalid),
        (a, 100, vec![CALL_FRAME_V1, 24], Errno::Invalid),
    ] {
        let r = on_call(&mut eps, id, &mut buf[..len], &meta, &mut serve);
        assert_eq!(r, Err(want), "id {id} len {len} meta {meta:?}");
    }
    assert_eq!(served, 0);

    // sendfd: bounded count per frame and frames per handle, one per token.
    assert_eq!(eps.send_fds(a, 1, vec![]), Err(Errno::MessageSize));
    let five = (0..5).map(|_| a_descriptor()).collect();
    assert_eq!(eps.send_fds(a, 1, five), Err(Errno::MessageSize));
    for token in 1..=4 {
        assert_eq!(eps.send_fds(a, token, vec![a_descriptor()]), Ok(1));
    }
    assert_eq!(eps.send_fds(a, 1, vec![a_descriptor()]), Err(Errno::Exists));
    assert_eq!(
        eps.send_fds(a, 5, vec![a_descriptor()]),
        Err(Errno::TooManyHandles)
    );
    assert_eq!(
        eps.send_fds(99, 5, vec![a_descriptor()]),
        Err(Errno::BadHandle)
    );

    // A frame whose descriptors were not all sent is the same protocol
    // error as on the host (the handle count in the header is checked).
    let create = pager::Request::CreateObject(pager::CreateObject {
        size_bytes: PAGE_SIZE,
    });
    let attach = pager::Request::AttachView(pager::AttachView {
        object: ObjectId::raw(1),
        pages: 1,
        object_first_page: 0,
        addr: 0x1000,
    });
    let handler = ConformancePager::default();
    let mut real = |s: &Session, rx: Received| dispatch::<Pager, _>(&s.capability, &handler, rx);
    let frame = encode_message(Pager::ID, Kind::Request, 500, &attach);
    let (_, reply) = call(&mut eps, a, &frame, vec![], &mut real);
    let f = Frame::parse(&reply, 0).unwrap();
    assert_eq!(
        ErrorPayload::<PagerError>::decode(f.payload),
        Ok(ErrorPayload::Protocol(
            ipc_protocol::ProtocolError::WrongHandleCount
        ))
    );
    // Closing the handle ends its session and drops what was in flight.
    let frame = encode_message(Pager::ID, Kind::Request, 501, &create);
    let (_, _) = call(&mut eps, a, &frame, vec![], &mut real);
    let session = eps.close(a).expect("the session");
    assert_eq!(session.capability.badge.0, 100);
    assert_eq!(eps.close(a), None);
    assert_eq!(eps.receive_fds(a, 501, 1).unwrap_err(), Errno::BadHandle);
    let (cqe, _) = call(&mut eps, a, &frame, vec![], &mut real);
    assert_eq!(cqe.result, Errno::BadHandle.result());
    assert_eq!(eps.open("a.100", init), Err(Errno::Exists));
}

#[test]
fn a_driver_started_by_pcid_lets_root_open_each_endpoint_once() {
    let declared = vec![Endpoint {
        path: "gpu.100".into(),
        interface: Pager::ID,
        capability: Capability::new(100, Rights::all()),
    }];
    let mut eps = Endpoints::new(declared.clone(), Opener::Root).unwrap();
    let user = Caller {
        pid: 5,
        uid: 1000,
        gid: 1000,
    };
    let root = Caller {
        pid: 6,
        uid: 0,
        gid: 0,
    };
    assert_eq!(eps.open("gpu.100", user), Err(Errno::Access));
    assert_eq!(eps.open("gpu.100", root), Ok(0));
    assert_eq!(eps.open("gpu.100", root), Err(Errno::Exists));
    // Two endpoints of one path are a configuration error.
    let twice = [declared.clone(), declared].concat();
    assert_eq!(
        Endpoints::new(twice, Opener::Root).unwrap_err(),
        Errno::Invalid
    );
}
