//! The device on a call-based channel, as on Redox (`hw::model::scheme`):
//! nothing arrives unasked, so the driver asks for the `Hello`; every
//! record is one call answered by `Running::control`. Here the "call" is
//! an in-memory transport, so the records, descriptors and the driver's
//! whole `Bar` bring-up run on the host exactly as over a scheme handle.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hw::bar::Bar;
use hw::control::{self, ControlRecord, FRAMING, RECORD_BYTES};
use hw::model::{start, Config, Running};
use hw::shm::Region;
use hw::xe::commands::{Command, MemCopy};
use hw::xe::layout::{self, Ring};
use ipc_protocol::scheme::call::{start_call, start_framed_call};
use ipc_protocol::scheme::{Caller, Endpoint, Endpoints, Errno, Opener, CALL_FRAME_V1};
use ipc_protocol::transport::{Received, Transport, TransportError};
use ipc_protocol::{Capability, Rights, MAX_FRAME};

/// One call per `send`: the reply waits for the next `recv`.
struct CallLink {
    device: Arc<Running>,
    replies: Mutex<VecDeque<Received>>,
}

impl Transport for CallLink {
    fn send(&self, frame: &[u8], handles: Vec<OwnedFd>) -> Result<(), TransportError> {
        let (reply, fds) = self
            .device
            .control(ControlRecord::decode(frame), handles)
            .map_err(|_| TransportError::Disconnected)?;
        self.replies.lock().unwrap().push_back(Received {
            bytes: reply.encode().to_vec(),
            handles: fds,
            truncated: false,
            handles_truncated: false,
        });
        Ok(())
    }

    fn recv(&self, _timeout: Option<Duration>) -> Result<Received, TransportError> {
        let next = self.replies.lock().unwrap().pop_front();
        next.ok_or(TransportError::TimedOut)
    }
}

fn small() -> Config {
    Config {
        vram_bytes: 4 << 20,
        hw_threads: 2,
        ..Config::default()
    }
}

#[test]
fn a_driver_that_asks_for_the_hello_drives_the_device() {
    let device = Arc::new(start(small()).unwrap());
    let link: Arc<dyn Transport> = Arc::new(CallLink {
        device: device.clone(),
        replies: Mutex::default(),
    });
    // Without asking, nothing comes: the Linux driver's wait would time out.
    assert!(link.recv(None).is_err());
    control::send(&*link, control::hello_request(), vec![]).unwrap();
    let bar = Bar::connect(link, Duration::from_secs(5)).expect("the Hello maps the device");
    assert_eq!(bar.vram_bytes(), 4 << 20);

    // A DMA map over the same channel, then a copy from it into VRAM.
    let sys = Region::create("call-link-sys", 8192).unwrap();
    assert!(sys.write(0, &[0x5a; 4096]));
    let addr = bar.dma_map(3, sys.dup_fd().unwrap(), 8192).unwrap();
    let copy = MemCopy::contiguous(addr, 1 << 20, 4096).unwrap();
    bar.submit(Ring::Copy, 7, &Command::MemCopy(copy)).unwrap();
    bar.wait_seqno(layout::REG_BCS_DONE, 7, Duration::from_secs(10))
        .unwrap();
    let mut back = [0u8; 4096];
    assert!(bar.vram().read(1 << 20, &mut back));
    assert!(back.iter().all(|&b| b == 0x5a), "the copy landed in VRAM");
    bar.dma_unmap(3).unwrap();
    assert!(bar.dma_unmap(3).is_err(), "a second unmap is refused");
    drop(bar);
    if let Ok(running) = Arc::try_unwrap(device) {
        running.stop();
    }
}

#[test]
fn a_hello_request_with_descriptors_is_not_a_hello() {
    let device = start(small()).unwrap();
    let (pipe, _w) = rustix::pipe::pipe().unwrap();
    let (reply, fds) = device
        .control(Some(control::hello_request()), vec![pipe])
        .unwrap();
    assert_eq!(reply.op, control::ControlOp::Done);
    assert_eq!(reply.status, control::STATUS_BAD_REQUEST);
    assert!(fds.is_empty());
    let (reply, _) = device.control(None, vec![]).unwrap();
    assert_eq!(reply.status, control::STATUS_BAD_REQUEST, "undecodable");
    device.stop();
}

const LAUNCHER: Caller = Caller {
    pid: 7,
    uid: 0,
    gid: 0,
};

/// The scheme side: the device endpoint takes control records and refuses
/// our frames' calls, and a frames endpoint refuses control records.
#[test]
fn a_framed_endpoint_takes_only_its_records() {
    let declared = vec![Endpoint {
        path: control::DEVICE_ENDPOINT.into(),
        interface: control::DEVICE_INTERFACE,
        capability: Capability::new(1, Rights::empty()),
    }];
    let mut eps = Endpoints::new(declared, Opener::Process(LAUNCHER.pid)).unwrap();
    let id = eps.open(control::DEVICE_ENDPOINT, LAUNCHER).unwrap();
    let mut buf = vec![0u8; MAX_FRAME];
    buf[..RECORD_BYTES].copy_from_slice(&control::hello_request().encode());
    let meta = [FRAMING.kind, RECORD_BYTES as u64];
    let started = start_framed_call(&mut eps, id, &buf, &meta, &FRAMING).unwrap();
    assert_eq!(
        ControlRecord::decode(&started.rx.bytes),
        Some(control::hello_request())
    );
    assert_eq!(started.token, 0, "control calls are untagged");
    let as_frame = [CALL_FRAME_V1, RECORD_BYTES as u64];
    assert_eq!(
        start_framed_call(&mut eps, id, &buf, &as_frame, &FRAMING).unwrap_err(),
        Errno::NotSupported
    );
    assert_eq!(
        start_call(&mut eps, id, &buf, &meta).unwrap_err(),
        Errno::NotSupported
    );
}
