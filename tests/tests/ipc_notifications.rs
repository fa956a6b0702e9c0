//! One-way notifications: delivered to the handler, never answered, and
//! interleaved with calls on the same endpoint.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ipc_protocol::client::{CallError, Client};
use ipc_protocol::interfaces::pressure::*;
use ipc_protocol::server::Handler;
use ipc_protocol::transport::SeqPacket;
use ipc_protocol::types::{MemoryKind, World};
use ipc_protocol::{Capability, Rights};

#[derive(Default)]
struct Counter {
    reported: AtomicU64,
}

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

impl Handler<Pressure> for Counter {
    fn handle(
        &self,
        _: &Capability,
        req: Request,
        _: Vec<OwnedFd>,
    ) -> Result<(Reply, Vec<OwnedFd>), PressureError> {
        match req {
            Request::ReportUsage(r) => {
                self.reported.fetch_add(r.bytes, Ordering::AcqRel);
                Ok((Reply::Status(status(0)), vec![]))
            }
            Request::Status(_) => Ok((
                Reply::Status(status(self.reported.load(Ordering::Acquire))),
                vec![],
            )),
            _ => Err(PressureError::PeerUnavailable),
        }
    }
}

#[test]
fn notifications_are_delivered_in_order_without_replies() {
    let (c, s) = SeqPacket::pair().unwrap();
    let counter = Arc::new(Counter::default());
    ipc_protocol::server::spawn::<Pressure, _>(
        "pressure",
        Arc::new(s),
        Capability::new(1, Rights::all()),
        counter.clone(),
        1,
    );
    let client: Client<Pressure> =
        Client::new(Arc::new(c)).with_timeout(std::time::Duration::from_secs(10));
    for _ in 0..100 {
        client
            .notify(ReportUsage {
                memory: MemoryKind::Vram,
                world: World::Svm,
                bytes: 4096,
            })
            .unwrap();
    }
    // The next call is answered after all 100 notifications were handled
    // (one serving thread, one ordered socket): no reply was queued for them.
    let status = client.call(Status {}).unwrap();
    assert_eq!(status.vram_used, 100 * 4096);
    // A call type cannot be sent as a notification, nor the reverse.
    assert_eq!(client.notify(Status {}), Err(CallError::UnexpectedReply));
}

#[test]
fn a_notification_without_the_right_is_dropped_silently() {
    let (c, s) = SeqPacket::pair().unwrap();
    let counter = Arc::new(Counter::default());
    ipc_protocol::server::spawn::<Pressure, _>(
        "pressure",
        Arc::new(s),
        Capability::new(1, Rights::PRESSURE_RESERVE | Rights::PRESSURE_STATUS),
        counter.clone(),
        1,
    );
    let client: Client<Pressure> =
        Client::new(Arc::new(c)).with_timeout(std::time::Duration::from_secs(10));
    client
        .notify(ReportUsage {
            memory: MemoryKind::Vram,
            world: World::Bo,
            bytes: 1,
        })
        .unwrap();
    // The next call is answered after the notification was handled: it was
    // not counted.
    assert_eq!(client.call(Status {}).unwrap().vram_used, 0);
    assert_eq!(counter.reported.load(Ordering::Acquire), 0);
}

#[derive(Default)]
struct Goodbyes {
    count: AtomicU64,
    badge: AtomicU64,
}

impl Handler<Pressure> for Goodbyes {
    fn handle(
        &self,
        _: &Capability,
        _: Request,
        _: Vec<OwnedFd>,
    ) -> Result<(Reply, Vec<OwnedFd>), PressureError> {
        Err(PressureError::PeerUnavailable)
    }
    fn disconnected(&self, caller: &Capability) {
        self.badge.store(caller.badge.0, Ordering::Release);
        self.count.fetch_add(1, Ordering::AcqRel);
    }
}

#[test]
fn a_peer_that_goes_away_is_reported_once_per_endpoint() {
    let (c, s) = SeqPacket::pair().unwrap();
    let h = Arc::new(Goodbyes::default());
    let threads = ipc_protocol::server::spawn::<Pressure, _>(
        "bye",
        Arc::new(s),
        Capability::new(42, Rights::all()),
        h.clone(),
        3,
    );
    drop(c);
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        h.count.load(Ordering::Acquire),
        1,
        "reported once, not once per serving thread"
    );
    assert_eq!(h.badge.load(Ordering::Acquire), 42);
}
