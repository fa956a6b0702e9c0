//! Readiness (`init/src/process.rs`): every server says it serves on its
//! `--ready-fd`, and one that has not within its deadline is killed and
//! started again. A pager generation that hangs before it serves (a
//! take-over that never ends) is replaced by the next one instead of
//! leaving the system without a pager for good, and no word is lost.

mod common;

use std::time::Duration;

use common::{bad_words, bounded};
use init::client::SvmBuffer;
use init::supervisor::{BootOptions, System};
use ipc_protocol::interfaces::pager::Accounting;

const LIMIT: Duration = Duration::from_secs(90);
const DEADLINE: Duration = Duration::from_secs(2);

fn boot(stall_generation: Option<u32>) -> (System, init::supervisor::Clients) {
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_svm"));
    std::env::set_var("SVM_BIN_DIR", exe.parent().unwrap());
    let mut opts = BootOptions::default();
    opts.device.vram_bytes = 32 << 20;
    opts.ready_deadline = Some(DEADLINE);
    if let Some(g) = stall_generation {
        opts.pager_args.push(format!("--stall-before-serving={g}"));
    }
    let (s, c) = System::boot(&opts).expect("the system boots");
    (s, c.expect("clients"))
}

/// Generation 2 stalls before it serves: init kills it once the deadline
/// passes, generation 3 serves, and the words the client wrote are there.
#[test]
fn a_pager_generation_that_never_serves_is_killed_and_replaced() {
    bounded(LIMIT, || {
        let (mut system, c) = boot(Some(2));
        let buf = SvmBuffer::new(&c.pager, 1 << 20).expect("a buffer");
        // SAFETY: ours until release; no job runs on it.
        for (i, w) in unsafe { buf.words() }.iter_mut().enumerate() {
            *w = i as u32 ^ 0x5a5a_0f0f;
        }
        system.kill("pager").unwrap();
        assert!(system.wait_generation("pager", 2, Duration::from_secs(20)));
        assert!(
            system.wait_generation("pager", 3, DEADLINE * 10),
            "the stalled generation 2 was not replaced"
        );
        assert_eq!(system.not_ready_kills(), 1, "only generation 2 was late");
        c.pager.call(Accounting {}).expect("generation 3 serves");
        assert_eq!(bad_words(&buf, |i| i as u32 ^ 0x5a5a_0f0f), 0);
        drop(buf);
        drop(c);
        system.shutdown();
    });
}

/// A system whose servers all serve kills none of them, however long it
/// runs past the deadline.
#[test]
fn servers_that_serve_are_never_killed_for_it() {
    bounded(LIMIT, || {
        let (mut system, c) = boot(None);
        std::thread::sleep(DEADLINE * 2);
        c.pager.call(Accounting {}).expect("the pager serves");
        assert_eq!(system.not_ready_kills(), 0);
        assert_eq!(system.restarts(), 0);
        assert!(system.check_alive().is_ok());
        drop(c);
        assert!(system.shutdown().is_empty(), "the system stopped cleanly");
    });
}
