//! Shared helpers of the conformance and system tests.

pub mod conformance_server;
pub mod ipc_doc;

use std::path::PathBuf;

/// `tests/golden/` in the source tree.
pub fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden")
}

/// Logs from tests go to stderr when `RUST_LOG` asks for them.
pub fn init_logging() {
    let _ = env_logger::builder().is_test(true).try_init();
}
