//! The malformed-input table: one case per protocol error, each asserting
//! the exact typed error and that the server still answers the next good
//! request; plus refusal for a missing right. Run over both transports.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use ipc_protocol::client::{decode_error, encode_raw_frame, Client, RawError};
use ipc_protocol::frame::encode_message;
use ipc_protocol::interfaces::pager::*;
use ipc_protocol::transport::{InProc, SeqPacket, Transport};
use ipc_protocol::types::PageCount;
use ipc_protocol::{Capability, Kind, ProtocolError, Rights, MAX_FRAME};
use tests::conformance_server::ConformancePager;

fn memfd() -> OwnedFd {
    rustix::fs::memfd_create("handle", rustix::fs::MemfdFlags::CLOEXEC).unwrap()
}

/// Starts the conformance server on one end; returns a client on the other.
fn start(transport: &str, rights: Rights) -> Client<Pager> {
    let (a, b): (Arc<dyn Transport>, Arc<dyn Transport>) = match transport {
        "inproc" => {
            let (a, b) = InProc::pair();
            (Arc::new(a), Arc::new(b))
        }
        _ => {
            let (a, b) = SeqPacket::pair().unwrap();
            (Arc::new(a), Arc::new(b))
        }
    };
    ipc_protocol::server::spawn::<Pager, _>(
        "conformance",
        b,
        Capability::new(7, rights),
        Arc::new(ConformancePager::default()),
        1,
    );
    Client::new(a).with_timeout(std::time::Duration::from_secs(10))
}

fn good(id: u64) -> Vec<u8> {
    encode_message(
        1,
        Kind::Request,
        id,
        &Request::CreateObject(CreateObject { size_bytes: 4096 }),
    )
}

fn payload_of(req: Request) -> Vec<u8> {
    let f = encode_message(1, Kind::Request, 0, &req);
    f[ipc_protocol::HEADER_LEN..].to_vec()
}

struct Case {
    name: &'static str,
    /// Builds the frame for request id `id` and the handles to pass.
    frame: fn(u64) -> (Vec<u8>, Vec<OwnedFd>),
    /// Whether the reply can carry the request id (the header was readable).
    id_known: bool,
    expect: ProtocolError,
}

fn table() -> Vec<Case> {
    vec![
        Case {
            name: "shorter than a header",
            frame: |id| (good(id)[..10].to_vec(), vec![]),
            id_known: false,
            expect: ProtocolError::Truncated,
        },
        Case {
            name: "payload shorter than declared",
            frame: |id| {
                let mut f = good(id);
                f.truncate(f.len() - 3);
                (f, vec![])
            },
            id_known: true,
            expect: ProtocolError::Truncated,
        },
        Case {
            name: "field runs past the payload",
            frame: |id| {
                (
                    encode_raw_frame(1, 1, Kind::Request, 0, id, &[1, 2, 3]),
                    vec![],
                )
            },
            id_known: true,
            expect: ProtocolError::Truncated,
        },
        Case {
            name: "datagram over the frame limit",
            frame: |id| {
                let mut f = good(id);
                f.resize(MAX_FRAME + 100, 0);
                (f, vec![])
            },
            id_known: true,
            expect: ProtocolError::Oversized,
        },
        Case {
            name: "declared payload over the limit",
            frame: |id| {
                let mut f = good(id);
                f[12..16].copy_from_slice(&(MAX_FRAME as u32).to_le_bytes());
                (f, vec![])
            },
            id_known: true,
            expect: ProtocolError::Oversized,
        },
        Case {
            name: "bad magic",
            frame: |id| {
                let mut f = good(id);
                f[0] = b'Y';
                (f, vec![])
            },
            id_known: true,
            expect: ProtocolError::BadMagic,
        },
        Case {
            name: "unknown version",
            frame: |id| {
                let mut f = good(id);
                f[4] = 2;
                (f, vec![])
            },
            id_known: true,
            expect: ProtocolError::UnknownVersion,
        },
        Case {
            name: "another interface's id",
            frame: |id| {
                let mut f = good(id);
                f[6] = 4;
                (f, vec![])
            },
            id_known: true,
            expect: ProtocolError::UnknownInterface,
        },
        Case {
            name: "unknown opcode",
            frame: |id| (encode_raw_frame(1, 99, Kind::Request, 0, id, &[]), vec![]),
            id_known: true,
            expect: ProtocolError::UnknownOpcode,
        },
        Case {
            name: "handle missing (AttachView needs its userfaultfd)",
            frame: |id| {
                let p = payload_of(Request::AttachView(AttachView {
                    object: ipc_protocol::types::ObjectId::raw(1),
                    addr: 0,
                    object_first_page: 0,
                    pages: 1,
                }));
                (encode_raw_frame(1, 3, Kind::Request, 0, id, &p), vec![])
            },
            id_known: true,
            expect: ProtocolError::WrongHandleCount,
        },
        Case {
            name: "handle passed to a call that takes none",
            frame: |id| {
                let mut f = good(id);
                f[11] = 1;
                (f, vec![memfd()])
            },
            id_known: true,
            expect: ProtocolError::WrongHandleCount,
        },
        Case {
            name: "header's handle count disagrees with what arrived",
            frame: |id| {
                let mut f = good(id);
                f[11] = 2;
                (f, vec![])
            },
            id_known: true,
            expect: ProtocolError::WrongHandleCount,
        },
        Case {
            name: "page count of zero",
            frame: |id| {
                let mut p = payload_of(Request::Snapshot(Snapshot {
                    object: ipc_protocol::types::ObjectId::raw(1),
                    first_page: 0,
                    count: PageCount::new(1).unwrap(),
                }));
                let n = p.len();
                p[n - 2..].copy_from_slice(&0u16.to_le_bytes());
                (encode_raw_frame(1, 7, Kind::Request, 0, id, &p), vec![])
            },
            id_known: true,
            expect: ProtocolError::FieldOutOfRange,
        },
        Case {
            name: "unknown enum code",
            frame: |id| {
                let mut p = payload_of(Request::Advise(Advise {
                    object: ipc_protocol::types::ObjectId::raw(1),
                    first_page: 0,
                    pages: 1,
                    advice: ipc_protocol::types::Advice::Default,
                }));
                let n = p.len();
                p[n - 1] = 77;
                (encode_raw_frame(1, 5, Kind::Request, 0, id, &p), vec![])
            },
            id_known: true,
            expect: ProtocolError::FieldOutOfRange,
        },
        Case {
            name: "trailing bytes after the last field",
            frame: |id| {
                let mut p = payload_of(Request::CreateObject(CreateObject { size_bytes: 4096 }));
                p.push(0);
                (encode_raw_frame(1, 1, Kind::Request, 0, id, &p), vec![])
            },
            id_known: true,
            expect: ProtocolError::TrailingBytes,
        },
        Case {
            name: "a reply sent to a server",
            frame: |id| {
                let mut f = good(id);
                f[10] = Kind::Reply as u8;
                (f, vec![])
            },
            id_known: true,
            expect: ProtocolError::BadKind,
        },
    ]
}

fn run_table(transport: &str) {
    tests::init_logging();
    let client = start(transport, Rights::all());
    let mut seen = std::collections::HashSet::new();
    for case in table() {
        let id = if case.id_known {
            client.next_request_id()
        } else {
            0
        };
        let (frame, handles) = (case.frame)(id);
        let reply = client
            .call_raw(id, &frame, handles)
            .unwrap_or_else(|e| panic!("{}: no answer: {e}", case.name));
        match decode_error::<Pager>(&reply) {
            Some(RawError::Protocol(e)) => {
                assert_eq!(e, case.expect, "{transport}: case '{}'", case.name)
            }
            other => panic!(
                "{transport}: case '{}': expected {:?}, got {other:?}",
                case.name, case.expect
            ),
        }
        seen.insert(case.expect);
        // The server keeps serving.
        let (created, fds) = client
            .call_with_handles(CreateObject { size_bytes: 4096 }, vec![])
            .unwrap();
        assert_eq!(created.size_bytes, 4096);
        assert_eq!(fds.len(), 1);
    }
    // Every error class the protocol defines is covered by a case.
    for e in ProtocolError::ALL {
        assert!(seen.contains(&e), "no malformed-input case for {e:?}");
    }
}

#[test]
fn malformed_table_inproc() {
    run_table("inproc");
}

#[test]
fn malformed_table_seqpacket() {
    run_table("seqpacket");
}

#[test]
fn missing_right_is_refused_and_server_keeps_serving() {
    for t in ["inproc", "seqpacket"] {
        let client = start(t, Rights::OBJECT | Rights::VIEW);
        let (obj, _) = client
            .call_with_handles(CreateObject { size_bytes: 8192 }, vec![])
            .unwrap();
        let e = client.call(Snapshot {
            object: obj.object,
            first_page: 0,
            count: PageCount::new(2).unwrap(),
        });
        assert_eq!(
            e,
            Err(ipc_protocol::client::CallError::Denied(Rights::SNAPSHOT))
        );
        client.call(DestroyObject { object: obj.object }).unwrap();
    }
}

#[test]
fn server_errors_are_typed() {
    let client = start("seqpacket", Rights::all());
    let e = client
        .call_with_handles(CreateObject { size_bytes: 1000 }, vec![])
        .map(|_| ());
    assert_eq!(
        e,
        Err(ipc_protocol::client::CallError::Server(PagerError::BadSize))
    );
    let e = client.call(DestroyObject {
        object: ipc_protocol::types::ObjectId::raw(999),
    });
    assert_eq!(
        e,
        Err(ipc_protocol::client::CallError::Server(
            PagerError::NoSuchObject
        ))
    );
    // A regular file is not a userfaultfd.
    let (obj, _) = client
        .call_with_handles(CreateObject { size_bytes: 4096 }, vec![])
        .unwrap();
    let e = client
        .call_with_handles(
            AttachView {
                object: obj.object,
                addr: 0,
                object_first_page: 0,
                pages: 1,
            },
            vec![memfd()],
        )
        .map(|_| ());
    assert_eq!(
        e,
        Err(ipc_protocol::client::CallError::Server(
            PagerError::BadUserfaultfd
        ))
    );
}

#[test]
fn many_threads_share_one_client_and_many_clients_share_one_server() {
    let (server_ends, client_ends): (Vec<_>, Vec<_>) =
        (0..4).map(|_| SeqPacket::pair().unwrap()).unzip();
    let server = Arc::new(ConformancePager::default());
    for (i, s) in server_ends.into_iter().enumerate() {
        ipc_protocol::server::spawn::<Pager, _>(
            "multi",
            Arc::new(s),
            Capability::new(i as u64 + 1, Rights::all()),
            server.clone(),
            2,
        );
    }
    let clients: Vec<Arc<Client<Pager>>> = client_ends
        .into_iter()
        .map(|c| Arc::new(Client::new(Arc::new(c))))
        .collect();
    let mut threads = Vec::new();
    for (ci, client) in clients.iter().enumerate() {
        for t in 0..4 {
            let client = client.clone();
            threads.push(std::thread::spawn(move || {
                for i in 0..50u64 {
                    let pages = 1 + (ci as u64 * 7 + t * 3 + i) % 5;
                    let (o, fds) = client
                        .call_with_handles(
                            CreateObject {
                                size_bytes: pages * 4096,
                            },
                            vec![],
                        )
                        .unwrap();
                    // The reply answers this thread's call, not another's.
                    assert_eq!(o.size_bytes, pages * 4096);
                    assert_eq!(
                        rustix::fs::fstat(&fds[0]).unwrap().st_size as u64,
                        pages * 4096
                    );
                    client.call(DestroyObject { object: o.object }).unwrap();
                }
            }));
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    // A client cannot name another client's object: badges differ.
    let (o, _) = clients[0]
        .call_with_handles(CreateObject { size_bytes: 4096 }, vec![])
        .unwrap();
    assert_eq!(
        clients[1].call(DestroyObject { object: o.object }),
        Err(ipc_protocol::client::CallError::Server(
            PagerError::NoSuchObject
        ))
    );
}
