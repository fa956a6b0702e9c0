//! mm-server as its own process: reports and reservations over IPC.

use std::process::{Command, Stdio};
use std::sync::Arc;

use ipc_protocol::client::{CallError, Client};
use ipc_protocol::interfaces::pressure::*;
use ipc_protocol::transport::{pass_fds_to_child, SeqPacket};
use ipc_protocol::types::{MemoryKind, World};
use ipc_protocol::Rights;

#[test]
fn reports_and_reservations_across_processes() {
    use std::os::fd::AsFd;
    let (mine, theirs) = SeqPacket::pair().unwrap();
    let fd = theirs.fd().as_fd().try_clone_to_owned().unwrap();
    drop(theirs);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mm-server"));
    let rights = Rights::PRESSURE_REPORT | Rights::PRESSURE_RESERVE | Rights::PRESSURE_STATUS;
    cmd.args([
        "--gpu-fd=3",
        "--vram-bytes=1048576",
        &format!("--gpu-rights={}", rights.bits()),
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::null());
    let _held = pass_fds_to_child(&mut cmd, &[(&fd, 3)]).unwrap();
    let mut child = cmd.spawn().unwrap();
    drop(fd);
    let c: Client<Pressure> =
        Client::new(Arc::new(mine)).with_timeout(std::time::Duration::from_secs(10));
    c.notify(ReportUsage {
        memory: MemoryKind::Vram,
        world: World::Svm,
        bytes: 512 << 10,
    })
    .unwrap();
    assert_eq!(c.call(Status {}).unwrap().vram_used, 512 << 10);
    assert_eq!(
        c.call(Reserve {
            memory: MemoryKind::Vram,
            world: World::Bo,
            bytes: 256 << 10,
            timeout_ms: 100
        })
        .unwrap()
        .bytes,
        256 << 10
    );
    // Full: a second reservation stalls, then times out with a typed error.
    let e = c.call(Reserve {
        memory: MemoryKind::Vram,
        world: World::Bo,
        bytes: 512 << 10,
        timeout_ms: 50,
    });
    assert_eq!(e, Err(CallError::Server(PressureError::TimedOut)));
    c.call(Release {
        memory: MemoryKind::Vram,
        world: World::Bo,
        bytes: 256 << 10,
    })
    .unwrap();
    assert_eq!(c.call(Status {}).unwrap().vram_used, 512 << 10);
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
}
