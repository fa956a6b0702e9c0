//! The launcher hands a server the endpoints it calls through the
//! server's `control` endpoint (`ipc_protocol::scheme::handoff`): `sendfd`
//! tagged with the role, then a handoff call naming the role.

use std::os::fd::OwnedFd;

use ipc_protocol::interfaces::gpu_shrink::GpuShrink;
use ipc_protocol::interfaces::pager_reclaim::PagerReclaim;
use ipc_protocol::interfaces::pressure::Pressure;
use ipc_protocol::scheme::handoff::{
    endpoint_path, on_handoff, CALL_HANDOFF_V1, CONTROL_INTERFACE, CONTROL_PATH,
};
use ipc_protocol::scheme::{Caller, Endpoint, Endpoints, Errno, Opener};
use ipc_protocol::{Capability, Interface, Rights};

const ROOT: Caller = Caller {
    pid: 3,
    uid: 0,
    gid: 0,
};

fn a_descriptor() -> OwnedFd {
    rustix::pipe::pipe().unwrap().0
}

/// mm-server's scheme: `Pressure` for the GPU server and the control
/// endpoint.
fn mm_scheme() -> (Endpoints, u64, u64) {
    let declared = vec![
        Endpoint {
            path: endpoint_path(Pressure::NAME, 1),
            interface: Pressure::ID,
            capability: Capability::new(1, Rights::PRESSURE_REPORT),
        },
        Endpoint {
            path: CONTROL_PATH.into(),
            interface: CONTROL_INTERFACE,
            capability: Capability::new(0, Rights::empty()),
        },
    ];
    let mut eps = Endpoints::new(declared, Opener::Root).unwrap();
    let pressure = eps.open("pressure.1", ROOT).unwrap();
    let control = eps.open(CONTROL_PATH, ROOT).unwrap();
    (eps, pressure, control)
}

#[test]
fn each_role_gets_the_handle_sent_for_it() {
    let (mut eps, _, control) = mm_scheme();
    let (shrink, reclaim) = (u64::from(GpuShrink::ID), u64::from(PagerReclaim::ID));
    eps.send_fds(control, shrink, vec![a_descriptor()]).unwrap();
    eps.send_fds(control, reclaim, vec![a_descriptor()])
        .unwrap();
    let got = on_handoff(&mut eps, control, &[CALL_HANDOFF_V1, reclaim]).unwrap();
    assert_eq!(got.role, PagerReclaim::ID);
    let got = on_handoff(&mut eps, control, &[CALL_HANDOFF_V1, shrink]).unwrap();
    assert_eq!(got.role, GpuShrink::ID);
    // Nothing left to hand over.
    let none = on_handoff(&mut eps, control, &[CALL_HANDOFF_V1, shrink]);
    assert_eq!(none.unwrap_err(), Errno::Invalid);
}

#[test]
fn an_untagged_handle_goes_to_the_role_the_call_names() {
    let (mut eps, _, control) = mm_scheme();
    eps.send_fds(control, 0, vec![a_descriptor()]).unwrap();
    let role = u64::from(GpuShrink::ID);
    let got = on_handoff(&mut eps, control, &[CALL_HANDOFF_V1, role]).unwrap();
    assert_eq!(got.role, GpuShrink::ID);
}

#[test]
fn only_the_control_endpoint_takes_handoffs_and_hostile_ones_fail() {
    let (mut eps, pressure, control) = mm_scheme();
    let role = u64::from(GpuShrink::ID);
    eps.send_fds(pressure, role, vec![a_descriptor()]).unwrap();
    let on_pressure = on_handoff(&mut eps, pressure, &[CALL_HANDOFF_V1, role]);
    assert_eq!(on_pressure.unwrap_err(), Errno::NotSupported);
    // A role that is no u16, no role at all, an unknown handle.
    let big = on_handoff(&mut eps, control, &[CALL_HANDOFF_V1, 1 << 40]);
    assert_eq!(big.unwrap_err(), Errno::Invalid);
    let missing = on_handoff(&mut eps, control, &[CALL_HANDOFF_V1]);
    assert_eq!(missing.unwrap_err(), Errno::Invalid);
    let unknown = on_handoff(&mut eps, 99, &[CALL_HANDOFF_V1, role]);
    assert_eq!(unknown.unwrap_err(), Errno::BadHandle);
    // Two handles for one role are refused, not half taken.
    eps.send_fds(control, role, vec![a_descriptor(), a_descriptor()])
        .unwrap();
    let two = on_handoff(&mut eps, control, &[CALL_HANDOFF_V1, role]);
    assert_eq!(two.unwrap_err(), Errno::Invalid);
}

#[test]
fn endpoint_paths_are_the_interface_and_the_badge() {
    assert_eq!(endpoint_path(Pressure::NAME, 1), "pressure.1");
    assert_eq!(endpoint_path("Pager", 100), "pager.100");
    assert_ne!(CALL_HANDOFF_V1, ipc_protocol::scheme::CALL_FRAME_V1);
}
