//! The conformance server as its own process: serves `Pager` on the
//! seqpacket socket inherited as descriptor 3. Its badge and rights come
//! from the command line (`<badge> <rights bits>`) or, when started by
//! `svm conformance ipc --spawn`, from the environment that command sets
//! (`XSVM_BADGE`, `XSVM_RIGHTS`, `XSVM_INTERFACE`; docs/ipc.md). Started
//! again as generation 2 or later (`XSVM_GENERATION`), it announces that
//! on its endpoint before it serves.

use ipc_protocol::interfaces::pager::Pager;
use ipc_protocol::transport::{inherited_fd, SeqPacket};
use ipc_protocol::{Capability, Interface, Rights};
use tests::conformance_server::ConformancePager;

fn setting(arg: Option<String>, env: &str) -> Option<String> {
    arg.or_else(|| std::env::var(env).ok())
}

fn main() {
    tests::init_logging();
    if let Ok(iface) = std::env::var("XSVM_INTERFACE") {
        if iface != Pager::NAME {
            eprintln!("ipc-conformance-server: serves Pager only, not {iface}");
            std::process::exit(2);
        }
    }
    let mut args = std::env::args().skip(1);
    let badge: u64 = setting(args.next(), "XSVM_BADGE")
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let rights = setting(args.next(), "XSVM_RIGHTS")
        .and_then(|a| a.parse().ok())
        .and_then(Rights::from_bits)
        .unwrap_or(Rights::all());
    // SAFETY: the parent passed the endpoint as descriptor 3 and nothing
    // else in this process owns it.
    let endpoint = SeqPacket::from_fd(unsafe { inherited_fd(3) });
    let generation: u32 = std::env::var("XSVM_GENERATION")
        .ok()
        .and_then(|g| g.parse().ok())
        .unwrap_or(1);
    if generation > 1 {
        if let Err(e) = ipc_protocol::server::announce_restart::<Pager>(&endpoint, generation) {
            eprintln!("ipc-conformance-server: announcing generation {generation}: {e}");
            std::process::exit(1);
        }
    }
    let server = ConformancePager::default();
    if let Err(e) =
        ipc_protocol::server::serve::<Pager, _>(&endpoint, Capability::new(badge, rights), &server)
    {
        eprintln!("ipc-conformance-server: {e}");
        std::process::exit(1);
    }
}
