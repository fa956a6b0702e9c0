//! One measured herd configuration of one implementation, the unit every
//! table and plot is made from. The same JSON line comes from ours
//! (`svm run herd --json`, which has no `impl` field), the floors
//! (`svm bench floor`) and the UVM herd (`bench/uvm_herd.cu`).

use std::io::BufRead;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::BenchError;
use crate::herd::Mode;

/// Who measured a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Impl {
    /// xe-svm: the booted system's herd.
    Ours,
    /// A pager process answering each fault with one `UFFDIO_COPY` of the chunk.
    FloorCopy,
    /// Minor-mode userfaultfd: page cache filled beforehand, one
    /// `UFFDIO_CONTINUE` per chunk.
    FloorMinor,
    /// One thread's memcpy of the buffer, per 4 KiB page.
    Memcpy,
    /// NVIDIA UVM (managed memory) on the same workload.
    Uvm,
}

impl Impl {
    pub const ALL: [Impl; 5] = [
        Impl::Ours,
        Impl::FloorCopy,
        Impl::FloorMinor,
        Impl::Memcpy,
        Impl::Uvm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Impl::Ours => "ours",
            Impl::FloorCopy => "copy floor",
            Impl::FloorMinor => "minor floor",
            Impl::Memcpy => "memcpy",
            Impl::Uvm => "UVM",
        }
    }
}

fn ours() -> Impl {
    Impl::Ours
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    #[serde(rename = "impl", default = "ours")]
    pub imp: Impl,
    #[serde(serialize_with = "mode_out", deserialize_with = "mode_in")]
    pub mode: Mode,
    pub size_kib: u64,
    pub threads: u64,
    /// The CPU phase per 4 KiB page, microseconds (median rep).
    pub per_page_cpu_us: f64,
    #[serde(default)]
    pub cpu_phase_med_us: Option<f64>,
    /// The GPU phase (ours, UVM): the whole buffer to VRAM, microseconds.
    #[serde(default)]
    pub gpu_phase_med_us: Option<f64>,
    /// Pages with a wrong word (any fails the run).
    pub bad: u64,
    #[serde(default)]
    pub reps: Option<u64>,
}

impl Sample {
    /// The configuration a sample belongs to, in table order.
    pub fn key(&self) -> Key {
        Key {
            mode: mode_rank(self.mode),
            size_kib: self.size_kib,
            threads: self.threads,
        }
    }
}

/// A herd configuration: mode (touch first), size, threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    mode: u8,
    pub size_kib: u64,
    pub threads: u64,
}

impl Key {
    pub fn mode(&self) -> Mode {
        if self.mode == 0 {
            Mode::Touch
        } else {
            Mode::IncAll
        }
    }
}

fn mode_rank(m: Mode) -> u8 {
    match m {
        Mode::Touch => 0,
        Mode::IncAll => 1,
    }
}

fn mode_out<S: Serializer>(m: &Mode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(m.name())
}

fn mode_in<'de, D: Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
    let name = String::deserialize(d)?;
    parse_mode(&name).ok_or_else(|| serde::de::Error::custom(format!("unknown mode {name:?}")))
}

/// `touch-pg`/`touch` and `inc-all`.
pub fn parse_mode(name: &str) -> Option<Mode> {
    match name {
        "touch-pg" | "touch" => Some(Mode::Touch),
        "inc-all" => Some(Mode::IncAll),
        _ => None,
    }
}

/// The first sample found in `line`: a JSON object anywhere in it (the
/// kit prefixes each with a tag, and other output may share the line).
fn sample_in(line: &str) -> Option<Result<Sample, serde_json::Error>> {
    let mut last_err = None;
    for (at, _) in line.match_indices('{') {
        let mut values = serde_json::Deserializer::from_str(&line[at..]).into_iter::<Sample>();
        match values.next() {
            Some(Ok(s)) => return Some(Ok(s)),
            Some(Err(e)) => last_err = Some(e),
            None => {}
        }
    }
    last_err.map(Err)
}

/// The samples in a file of JSON lines; other lines (logs, headers) are
/// skipped, as are JSON lines that are not samples (a report's summary).
pub fn read_lines(path: &Path) -> Result<Vec<Sample>, BenchError> {
    let f = std::fs::File::open(path)
        .map_err(|e| BenchError::Io(format!("{}: {e}", path.display())))?;
    let mut out = Vec::new();
    for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| BenchError::Io(format!("{}: {e}", path.display())))?;
        match sample_in(&line) {
            Some(Ok(s)) if s.per_page_cpu_us.is_finite() && s.size_kib > 0 && s.threads > 0 => {
                out.push(s)
            }
            Some(Ok(_)) => log::warn!(
                "{}:{}: a sample with no usable number",
                path.display(),
                n + 1
            ),
            Some(Err(e)) => log::debug!("{}:{}: not a sample: {e}", path.display(), n + 1),
            None => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_found_in_tagged_lines_and_ours_is_the_default() {
        let ours = concat!(
            r#"R1 ours mm-server: serving {"mode":"touch-pg","size_kib":2048,"threads":4,"#,
            r#""gpu_phase_med_us":1.0,"cpu_phase_med_us":2.0,"per_page_cpu_us":0.5,"#,
            r#""bad":0,"pages_to_vram":512,"pages_to_ram":512}  rc=0"#
        );
        let s = sample_in(ours).unwrap().unwrap();
        assert_eq!(
            (s.imp, s.mode, s.threads, s.per_page_cpu_us),
            (Impl::Ours, Mode::Touch, 4, 0.5)
        );
        let uvm = concat!(
            r#"{"impl":"uvm","mode":"inc-all","size_kib":65536,"threads":16,"#,
            r#""per_page_cpu_us":0.7,"bad":0}"#
        );
        let s = sample_in(uvm).unwrap().unwrap();
        assert_eq!(
            (s.imp, s.mode, s.gpu_phase_med_us),
            (Impl::Uvm, Mode::IncAll, None)
        );
        assert!(sample_in("xe-svm: probed ProbeReport { vram_bytes: 1 }")
            .unwrap()
            .is_err());
        assert!(sample_in("no json here").is_none());
        let wrong_mode =
            r#"{"mode":"sideways","size_kib":4,"threads":1,"per_page_cpu_us":1,"bad":0}"#;
        assert!(sample_in(wrong_mode).unwrap().is_err());
    }
}
