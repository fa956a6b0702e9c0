//! The conformance server as its own process: serves `Pager` on the
//! seqpacket socket inherited as descriptor 3 with the rights and badge
//! given on the command line (`<badge> <rights bits>`).

use ipc_protocol::interfaces::pager::Pager;
use ipc_protocol::transport::{inherited_fd, SeqPacket};
use ipc_protocol::{Capability, Rights};
use tests::conformance_server::ConformancePager;

fn main() {
    tests::init_logging();
    let mut args = std::env::args().skip(1);
    let badge: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let rights = args
        .next()
        .and_then(|a| a.parse().ok())
        .and_then(Rights::from_bits)
        .unwrap_or(Rights::all());
    // SAFETY: the parent passed the endpoint as descriptor 3 and nothing
    // else in this process owns it.
    let endpoint = SeqPacket::from_fd(unsafe { inherited_fd(3) });
    let server = ConformancePager::default();
    if let Err(e) =
        ipc_protocol::server::serve::<Pager, _>(&endpoint, Capability::new(badge, rights), &server)
    {
        eprintln!("ipc-conformance-server: {e}");
        std::process::exit(1);
    }
}
