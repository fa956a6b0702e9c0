//! Two real processes over the seqpacket transport: a call and its reply, a
//! memfd passed back that both sides read and write, and a call refused for
//! a missing right.

use std::process::{Command, Stdio};
use std::sync::Arc;

use ipc_protocol::client::{CallError, Client};
use ipc_protocol::interfaces::pager::*;
use ipc_protocol::transport::{pass_fds_to_child, SeqPacket};
use ipc_protocol::types::{Advice, PageCount, PageStateCode};
use ipc_protocol::Rights;
use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};
use tests::conformance_server::SERVER_PATTERN;

#[test]
fn call_reply_shared_memfd_and_refusal_across_processes() {
    let (mine, theirs) = SeqPacket::pair().unwrap();
    let rights = Rights::all() - Rights::ADVISE;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ipc-conformance-server"));
    cmd.arg("42")
        .arg(rights.bits().to_string())
        .stdin(Stdio::null());
    // SeqPacket keeps its fd private; re-wrap via the raw descriptor.
    let theirs_fd: std::os::fd::OwnedFd = {
        use std::os::fd::AsFd;
        theirs.fd().as_fd().try_clone_to_owned().unwrap()
    };
    drop(theirs);
    let _held = pass_fds_to_child(&mut cmd, &[(&theirs_fd, 3)]).unwrap();
    let mut child = cmd.spawn().expect("spawn the conformance server");
    drop(theirs_fd);
    assert_ne!(child.id(), std::process::id());

    let client: Client<Pager> =
        Client::new(Arc::new(mine)).with_timeout(std::time::Duration::from_secs(10));
    let (created, mut fds) = client
        .call_with_handles(
            CreateObject {
                size_bytes: 3 * 4096,
            },
            vec![],
        )
        .unwrap();
    assert_eq!(created.size_bytes, 3 * 4096);
    let memfd = fds.pop().unwrap();

    // SAFETY: a fresh shared mapping of the memfd we own, unmapped below.
    let base = unsafe {
        mmap(
            std::ptr::null_mut(),
            3 * 4096,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED,
            &memfd,
            0,
        )
    }
    .unwrap();
    // SAFETY: the mapping is 3 pages long and stays mapped while we use it.
    let bytes = unsafe { std::slice::from_raw_parts_mut(base as *mut u8, 3 * 4096) };
    // The server wrote, we read.
    assert_eq!(&bytes[..SERVER_PATTERN.len()], SERVER_PATTERN);
    // We write page 1; the server reads it (Snapshot reports non-zero pages).
    bytes[4096 + 100] = 0x5a;
    let states = client
        .call(Snapshot {
            object: created.object,
            first_page: 0,
            count: PageCount::new(3).unwrap(),
        })
        .unwrap()
        .states
        .into_vec();
    assert_eq!(
        states,
        vec![
            PageStateCode::System,
            PageStateCode::System,
            PageStateCode::Empty
        ]
    );

    // The endpoint's badge lacks ADVISE: refused, typed.
    let e = client.call(Advise {
        object: created.object,
        first_page: 0,
        pages: 1,
        advice: Advice::PreferDevice,
    });
    assert_eq!(e, Err(CallError::Denied(Rights::ADVISE)));
    // And it still serves.
    client
        .call(DestroyObject {
            object: created.object,
        })
        .unwrap();

    // SAFETY: unmapping the mapping made above; `bytes` is not used after.
    unsafe { munmap(base, 3 * 4096) }.unwrap();
    drop(client); // closes our end: the server's loop ends cleanly
    let status = child.wait().unwrap();
    assert!(status.success(), "server exited with {status}");
}
