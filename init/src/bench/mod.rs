//! `svm bench`: each of our paths beside its floor, measured in the same
//! run (issue 15). The herd's CPU phase against two userfaultfd floors
//! (`floor.rs`: one `UFFDIO_COPY` per chunk; minor mode, one
//! `UFFDIO_CONTINUE` per chunk over page cache filled beforehand) and
//! memcpy; the GPU phase against memcpy bandwidth; the typed IPC round trip
//! against a bare one; the copy engine against memcpy; random GPU access
//! oversubscribed; per-page metadata.
//! Every number is also a correctness check: a wrong word anywhere fails
//! the run. `cli.rs` is the command line, `suite.rs` the order of the run,
//! `report.rs`, `table.rs` and `plot.rs` the output.

mod cli;
mod copy_engine;
mod floor;
mod floor_pager;
mod floor_wire;
mod ipc;
mod machine;
mod memcpy;
mod memory;
mod metadata;
mod peer_copy;
mod plot;
mod progress;
mod random;
mod readers;
mod report;
mod sample;
mod suite;
mod table;
mod uffd;

pub use cli::{helper_main, main, BenchArgs, Helper};

/// Why a step produced no number. (A wrong number is not an error: it is
/// counted as bad, and fails the run all the same.)
#[derive(Debug)]
pub enum BenchError {
    /// Bad arguments.
    Config(String),
    /// A system call failed.
    Host(String),
    /// A floor's helper process misbehaved or went away.
    Helper(String),
    /// Booting or calling the servers failed.
    System(String),
    /// A step ran past its time bound.
    TimedOut(&'static str),
    /// Writing the report or the plot failed.
    Io(String),
}

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(e) => write!(f, "{e}"),
            Self::Host(e) => write!(f, "host: {e}"),
            Self::Helper(e) => write!(f, "helper: {e}"),
            Self::System(e) => write!(f, "system: {e}"),
            Self::TimedOut(what) => write!(f, "{what} ran past its time bound"),
            Self::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BenchError {}

/// The median of `v` (NaN for none).
fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
