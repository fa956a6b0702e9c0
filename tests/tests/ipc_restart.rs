//! Restarts on a live endpoint: a server announces its new generation
//! (`Control::Restarted`), a client stub fails the calls that were waiting
//! with `PeerRestarted` and sends idempotent ones again; a server told that
//! its client restarted drops that client's session.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipc_protocol::client::{CallError, Client};
use ipc_protocol::interfaces::pressure::*;
use ipc_protocol::server::{announce_restart, Handler};
use ipc_protocol::transport::{SeqPacket, Transport, TransportError};
use ipc_protocol::types::{MemoryKind, World};
use ipc_protocol::{Capability, Control, Frame, Interface, Kind, Rights};

const TIMEOUT: Duration = Duration::from_secs(10);

fn status(vram_used: u64) -> PressureStatus {
    PressureStatus {
        vram_total: 0,
        vram_used,
        low_watermark: 0,
        high_watermark: 0,
        bo_vram_bytes: 0,
        svm_vram_bytes: 0,
        svm_sram_bytes: 0,
        bo_evicted_bytes: 0,
        svm_evicted_bytes: 0,
        rounds: 0,
        stalled_reservations: 0,
    }
}

fn reserve() -> Reserve {
    Reserve {
        memory: MemoryKind::Vram,
        world: World::Svm,
        bytes: 4096,
        timeout_ms: 10,
    }
}

/// Reads one request off `server` and returns its request id.
fn take_request(server: &SeqPacket) -> u64 {
    let rx = server.recv(Some(TIMEOUT)).unwrap();
    let f = Frame::parse(&rx.bytes, rx.handles.len()).unwrap();
    assert_eq!(f.header.kind, Kind::Request);
    f.header.request_id
}

fn reply_status(server: &SeqPacket, id: u64, used: u64) {
    let frame = ipc_protocol::frame::encode_message(
        Pressure::ID,
        Kind::Reply,
        id,
        &Reply::Status(status(used)),
    );
    server.send(&frame, vec![]).unwrap();
}

#[test]
fn a_waiting_call_fails_with_peer_restarted_and_an_idempotent_one_is_sent_again() {
    let (c, s) = SeqPacket::pair().unwrap();
    let client = Arc::new(Client::<Pressure>::new(Arc::new(c)).with_timeout(TIMEOUT));
    // A non-idempotent call (`Reserve`) the old server read and never answered.
    let t = {
        let client = client.clone();
        std::thread::spawn(move || client.call(reserve()))
    };
    take_request(&s);
    // The new server announces itself on the same endpoint.
    announce_restart::<Pressure>(&s, 2).unwrap();
    match t.join().unwrap() {
        Err(CallError::Transport(TransportError::PeerRestarted(2))) => {}
        other => panic!("expected PeerRestarted(2), got {other:?}"),
    }
    assert_eq!(client.generation(), 2);

    // An idempotent call (`Status`) caught by a restart is sent again and
    // answered by the new server.
    let t = {
        let client = client.clone();
        std::thread::spawn(move || client.call(Status {}))
    };
    take_request(&s);
    announce_restart::<Pressure>(&s, 3).unwrap();
    let again = take_request(&s);
    reply_status(&s, again, 77);
    assert_eq!(t.join().unwrap().unwrap().vram_used, 77);
    assert_eq!(client.generation(), 3);
}

#[test]
fn a_late_reply_of_the_old_generation_is_dropped() {
    let (c, s) = SeqPacket::pair().unwrap();
    let client = Arc::new(Client::<Pressure>::new(Arc::new(c)).with_timeout(TIMEOUT));
    let t = {
        let client = client.clone();
        std::thread::spawn(move || client.call(reserve()))
    };
    let old = take_request(&s);
    announce_restart::<Pressure>(&s, 2).unwrap();
    assert!(t.join().unwrap().is_err());
    // The reply to the failed call arrives anyway; the next call must get
    // its own reply, not that one.
    reply_status(&s, old, 1);
    let t = {
        let client = client.clone();
        std::thread::spawn(move || client.call(Status {}))
    };
    let id = take_request(&s);
    assert_ne!(id, old);
    reply_status(&s, id, 2);
    assert_eq!(t.join().unwrap().unwrap().vram_used, 2);
}

/// Records what the serve loop told it.
#[derive(Default)]
struct Recorder {
    restarted: Mutex<Vec<(u64, u32)>>,
    calls: AtomicU32,
}

impl Handler<Pressure> for Recorder {
    fn handle(
        &self,
        _: &Capability,
        _: Request,
        _: Vec<OwnedFd>,
    ) -> Result<(Reply, Vec<OwnedFd>), PressureError> {
        self.calls.fetch_add(1, Ordering::AcqRel);
        Ok((Reply::Status(status(0)), vec![]))
    }

    fn peer_restarted(&self, caller: &Capability, generation: u32) {
        self.restarted
            .lock()
            .unwrap()
            .push((caller.badge.0, generation));
    }
}

#[test]
fn a_server_hears_that_its_client_restarted_and_keeps_serving() {
    let (c, s) = SeqPacket::pair().unwrap();
    let rec = Arc::new(Recorder::default());
    ipc_protocol::server::spawn::<Pressure, _>(
        "pressure",
        Arc::new(s),
        Capability::new(9, Rights::all()),
        rec.clone(),
        1,
    );
    let client = Client::<Pressure>::new(Arc::new(c)).with_timeout(TIMEOUT);
    client.announce_restart(4).unwrap();
    // Malformed control frames are dropped without an answer.
    let mut bad = Control::Restarted { generation: 5 }.encode(Pressure::ID);
    bad.push(0);
    bad[12] += 1; // payload length covers the extra byte: a trailing byte
    client.transport().send(&bad, vec![]).unwrap();
    // The next call is answered: the loop went on, and (one serving thread,
    // one ordered socket) the announcement was handled before it.
    client.call(Status {}).unwrap();
    assert_eq!(*rec.restarted.lock().unwrap(), vec![(9, 4)]);
    assert_eq!(rec.calls.load(Ordering::Acquire), 1);
}

/// A call past its deadline fails with `TimedOut`; its answer, if it comes
/// later, is not taken for another call's and is reported by id
/// (`take_answered_late`): the pager learns that a copy it gave up on has
/// landed, and may lend its staging slot again.
#[test]
fn a_call_answered_after_its_deadline_is_reported_late_by_id() {
    let (c, s) = SeqPacket::pair().unwrap();
    let short = Duration::from_millis(50);
    let client = Arc::new(Client::<Pressure>::new(Arc::new(c)).with_timeout(short));
    let (id, r) = client.call_with_id(Status {});
    assert!(
        matches!(r, Err(CallError::Transport(TransportError::TimedOut))),
        "{r:?}"
    );
    assert_eq!(take_request(&s), id);
    assert!(client.take_answered_late().is_empty(), "not answered yet");
    // The late answer, then a second call answered in time.
    reply_status(&s, id, 1);
    let t = {
        let client = client.clone();
        std::thread::spawn(move || client.call_with_id(Status {}))
    };
    let next = take_request(&s);
    reply_status(&s, next, 2);
    let (got, r) = t.join().unwrap();
    assert_eq!((got, r.unwrap().vram_used), (next, 2));
    assert_eq!(client.take_answered_late(), vec![id]);
    assert!(client.take_answered_late().is_empty(), "reported once");
}
