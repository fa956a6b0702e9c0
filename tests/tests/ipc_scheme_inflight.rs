//! The Redox adapter's worker threads, modelled on the host: a call is
//! started under the endpoints' lock, dispatched without it, and finished
//! under it again (`start_call`/`finish_call`). A handle closed while its
//! calls run is released by the last one, once; descriptors from a kernel
//! that passes no `sendfd`/`recvfd` tag (token 0) still reach their call.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;

use ipc_protocol::frame::encode_message;
use ipc_protocol::interfaces::pager::{self, Pager};
use ipc_protocol::scheme::call::{finish_call, start_call};
use ipc_protocol::scheme::{Caller, Endpoint, Endpoints, Errno, Opener, CALL_FRAME_V1};
use ipc_protocol::server::dispatch;
use ipc_protocol::types::PAGE_SIZE;
use ipc_protocol::{Capability, Frame, Interface, Kind, Rights, MAX_FRAME};
use tests::conformance_server::ConformancePager;

const INIT: Caller = Caller {
    pid: 7,
    uid: 0,
    gid: 0,
};

fn one_endpoint() -> (Endpoints, u64) {
    let declared = vec![Endpoint {
        path: "pager.100".into(),
        interface: Pager::ID,
        capability: Capability::new(100, Rights::all()),
    }];
    let mut eps = Endpoints::new(declared, Opener::Process(INIT.pid)).unwrap();
    let id = eps.open("pager.100", INIT).unwrap();
    (eps, id)
}

fn create_frame(request_id: u64) -> Vec<u8> {
    let create = pager::Request::CreateObject(pager::CreateObject {
        size_bytes: PAGE_SIZE,
    });
    encode_message(Pager::ID, Kind::Request, request_id, &create)
}

fn buffer(frame: &[u8]) -> (Vec<u8>, [u64; 2]) {
    let mut buf = vec![0u8; MAX_FRAME];
    buf[..frame.len()].copy_from_slice(frame);
    (buf, [CALL_FRAME_V1, frame.len() as u64])
}

fn a_descriptor() -> OwnedFd {
    rustix::pipe::pipe().unwrap().0
}

#[test]
fn a_close_during_calls_is_reported_by_the_last_call_once() {
    let (mut eps, id) = one_endpoint();
    let frame = create_frame(5);
    let (mut buf, meta) = buffer(&frame);
    let first = start_call(&mut eps, id, &buf, &meta).unwrap();
    let second = start_call(&mut eps, id, &buf, &meta).unwrap();
    // The last descriptor closes while both run: nothing is reported yet,
    // and the handle takes no new call.
    assert_eq!(eps.close(id), None);
    assert_eq!(eps.close(id), None, "a second close is no close");
    assert_eq!(
        start_call(&mut eps, id, &buf, &meta).unwrap_err(),
        Errno::BadHandle
    );
    let handler = ConformancePager::default();
    let reply = dispatch::<Pager, _>(&first.session.capability, &handler, first.rx);
    let (result, closed) = finish_call(&mut eps, id, first.token, &mut buf, reply);
    // The client is gone: its reply's memfd has nowhere to wait.
    assert_eq!(result, Err(Errno::BadHandle));
    assert_eq!(closed, None, "one call still runs");
    let (result, closed) = finish_call(&mut eps, id, second.token, &mut buf, None);
    assert_eq!(result, Ok(0));
    let closed = closed.expect("the last call reports the close");
    assert_eq!(closed.capability.badge.0, 100);
    assert_eq!(eps.end(id), None, "released once");
}

#[test]
fn without_a_close_calls_finish_normally() {
    let (mut eps, id) = one_endpoint();
    let frame = create_frame(9);
    let (mut buf, meta) = buffer(&frame);
    let started = start_call(&mut eps, id, &buf, &meta).unwrap();
    let handler = ConformancePager::default();
    let reply = dispatch::<Pager, _>(&started.session.capability, &handler, started.rx);
    let (result, closed) = finish_call(&mut eps, id, started.token, &mut buf, reply);
    let len = result.unwrap();
    assert_eq!(closed, None);
    let f = Frame::parse(&buf[..len], 1).unwrap();
    assert_eq!((f.header.kind, f.header.request_id), (Kind::Reply, 9));
    assert_eq!(eps.receive_fds(id, 9, 1).unwrap().len(), 1);
    assert!(
        eps.close(id).is_some(),
        "no call in flight: released at once"
    );
}

#[test]
fn untagged_descriptors_go_with_the_next_call_and_come_back_oldest_first() {
    let (mut eps, id) = one_endpoint();
    // Token 0: the kernel did not pass sendfd's argument.
    assert_eq!(eps.send_fds(id, 0, vec![a_descriptor()]), Ok(1));
    let frame = create_frame(31);
    let (buf, meta) = buffer(&frame);
    let started = start_call(&mut eps, id, &buf, &meta).unwrap();
    assert_eq!(
        started.rx.handles.len(),
        1,
        "the untagged descriptor came along"
    );
    assert_eq!(eps.end(id), None);
    // Two replies' descriptors wait; an untagged recvfd takes the oldest.
    eps.stage_outgoing(id, 40, vec![a_descriptor()]).unwrap();
    eps.stage_outgoing(id, 41, vec![a_descriptor(), a_descriptor()])
        .unwrap();
    assert_eq!(eps.receive_fds(id, 0, 2).unwrap_err(), Errno::Invalid);
    assert_eq!(eps.receive_fds(id, 0, 1).unwrap().len(), 1);
    assert_eq!(eps.receive_fds(id, 0, 2).unwrap().len(), 2);
    assert_eq!(eps.receive_fds(id, 0, 1).unwrap_err(), Errno::Again);
}

#[test]
fn calls_from_several_threads_share_one_table() {
    const THREADS: usize = 4;
    let (eps, id) = one_endpoint();
    let eps = Arc::new(Mutex::new(eps));
    let handler = Arc::new(ConformancePager::default());
    let barrier = Arc::new(Barrier::new(THREADS));
    let workers: Vec<_> = (0..THREADS as u64)
        .map(|t| {
            let (eps, handler, barrier) = (eps.clone(), handler.clone(), barrier.clone());
            thread::spawn(move || {
                let frame = create_frame(100 + t);
                let (mut buf, meta) = buffer(&frame);
                let started = start_call(&mut eps.lock().unwrap(), id, &buf, &meta).unwrap();
                // Every call is in flight at once, none holding the lock.
                barrier.wait();
                let cap = started.session.capability;
                let reply = dispatch::<Pager, _>(&cap, &*handler, started.rx);
                let mut eps = eps.lock().unwrap();
                let (result, closed) = finish_call(&mut eps, id, started.token, &mut buf, reply);
                assert!(closed.is_none());
                let len = result.unwrap();
                Frame::parse(&buf[..len], 1).unwrap().header.request_id
            })
        })
        .collect();
    let mut ids: Vec<u64> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![100, 101, 102, 103]);
    let mut eps = eps.lock().unwrap();
    for t in 100..104 {
        assert_eq!(eps.receive_fds(id, t, 1).unwrap().len(), 1, "reply {t}");
    }
}
