//! The report: samples grouped by configuration, each path beside its
//! floors with the ratios, the GPU phase against memcpy, flatness in
//! threads, and the single numbers (IPC, copy engine, random access,
//! metadata). `table.rs` renders it as text.

use std::collections::BTreeMap;

use serde::Serialize;

use super::copy_engine::CopyEngine;
use super::ipc::RoundTrip;
use super::machine::Machine;
use super::median;
use super::metadata::Metadata;
use super::peer_copy::PeerCopy;
use super::random::RandomAccess;
use super::sample::{Impl, Key, Sample};

/// One herd configuration across implementations.
#[derive(Debug, Clone, Serialize)]
pub struct HerdRow {
    pub mode: &'static str,
    pub size_kib: u64,
    pub threads: u64,
    /// Microseconds per page, median over the samples of each implementation.
    pub us_per_page: BTreeMap<Impl, f64>,
    /// Ours divided by each other implementation (below 1: ours is faster).
    pub ours_over: BTreeMap<Impl, f64>,
    pub bad: u64,
}

/// The GPU phase (the whole buffer to VRAM by GPU faults), ours against
/// the host's memcpy bandwidth and UVM.
#[derive(Debug, Clone, Serialize)]
pub struct GpuRow {
    pub mode: &'static str,
    pub size_kib: u64,
    pub ours_us: f64,
    pub ours_gbps: f64,
    pub memcpy_gbps: Option<f64>,
    /// Our bandwidth as a share of memcpy's (the target is 0.8 or more).
    pub ours_share_of_memcpy: Option<f64>,
    pub uvm_us: Option<f64>,
    pub ours_over_uvm: Option<f64>,
}

/// Per-page cost at the most threads over the fewest (1.0: flat).
#[derive(Debug, Clone, Serialize)]
pub struct Flatness {
    #[serde(rename = "impl")]
    pub imp: Impl,
    pub mode: &'static str,
    pub size_kib: u64,
    pub threads: (u64, u64),
    pub ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub reps: Option<u64>,
    pub samples: Vec<Sample>,
    pub herd: Vec<HerdRow>,
    pub gpu_phase: Vec<GpuRow>,
    pub flatness: Vec<Flatness>,
    pub ipc: Option<RoundTrip>,
    pub copy_engine: Option<CopyEngine>,
    /// One device's copy engine pushing into a peer's VRAM (issue 17).
    pub peer_copy: Option<PeerCopy>,
    pub random: Option<RandomAccess>,
    pub metadata: Option<Metadata>,
    /// Steps that could not produce a number.
    pub errors: Vec<String>,
    /// Wrong pages, words or replies anywhere: any fails the run.
    pub bad: u64,
}

/// The samples of one implementation at one configuration.
struct Cell {
    per_page: Vec<f64>,
    gpu: Vec<f64>,
    bad: u64,
}

fn cells(samples: &[Sample]) -> BTreeMap<(Key, Impl), Cell> {
    let mut m: BTreeMap<(Key, Impl), Cell> = BTreeMap::new();
    for s in samples {
        let c = m.entry((s.key(), s.imp)).or_insert(Cell {
            per_page: vec![],
            gpu: vec![],
            bad: 0,
        });
        c.per_page.push(s.per_page_cpu_us);
        c.gpu.extend(s.gpu_phase_med_us.filter(|g| g.is_finite()));
        c.bad += s.bad;
    }
    m
}

pub fn herd_rows(samples: &[Sample]) -> Vec<HerdRow> {
    let mut rows: BTreeMap<Key, HerdRow> = BTreeMap::new();
    for ((key, imp), cell) in cells(samples) {
        let row = rows.entry(key).or_insert_with(|| HerdRow {
            mode: key.mode().name(),
            size_kib: key.size_kib,
            threads: key.threads,
            us_per_page: BTreeMap::new(),
            ours_over: BTreeMap::new(),
            bad: 0,
        });
        row.us_per_page.insert(imp, median(&cell.per_page));
        row.bad += cell.bad;
    }
    for row in rows.values_mut() {
        if let Some(&ours) = row.us_per_page.get(&Impl::Ours) {
            for (&imp, &v) in &row.us_per_page {
                if imp != Impl::Ours && v > 0.0 {
                    row.ours_over.insert(imp, ours / v);
                }
            }
        }
    }
    rows.into_values().collect()
}

/// Groups by (mode, size) the medians over thread counts of `pick`.
fn by_size(
    samples: &[Sample],
    imp: Impl,
    pick: impl Fn(&Sample) -> Option<f64>,
) -> BTreeMap<Key, f64> {
    let mut m: BTreeMap<Key, Vec<f64>> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.imp == imp) {
        if let Some(v) = pick(s).filter(|v| v.is_finite() && *v > 0.0) {
            let mut k = s.key();
            k.threads = 0;
            m.entry(k).or_default().push(v);
        }
    }
    m.into_iter().map(|(k, v)| (k, median(&v))).collect()
}

pub fn gpu_rows(samples: &[Sample]) -> Vec<GpuRow> {
    let ours = by_size(samples, Impl::Ours, |s| s.gpu_phase_med_us);
    let uvm = by_size(samples, Impl::Uvm, |s| s.gpu_phase_med_us);
    // memcpy bandwidth does not depend on the mode: any sample of the size.
    let memcpy_us = by_size(samples, Impl::Memcpy, |s| s.cpu_phase_med_us);
    ours.into_iter()
        .map(|(k, us)| {
            let bytes = (k.size_kib * 1024) as f64;
            let ours_gbps = bytes / us / 1e3;
            let memcpy_gbps = memcpy_us
                .iter()
                .find(|(m, _)| m.size_kib == k.size_kib)
                .map(|(_, m)| bytes / m / 1e3);
            let uvm_us = uvm.get(&k).copied();
            GpuRow {
                mode: k.mode().name(),
                size_kib: k.size_kib,
                ours_us: us,
                ours_gbps,
                memcpy_gbps,
                ours_share_of_memcpy: memcpy_gbps.map(|m| ours_gbps / m),
                uvm_us,
                ours_over_uvm: uvm_us.map(|u| us / u),
            }
        })
        .collect()
}

pub fn flatness(rows: &[HerdRow]) -> Vec<Flatness> {
    let mut out = Vec::new();
    for imp in Impl::ALL.into_iter().filter(|i| *i != Impl::Memcpy) {
        let mut groups: BTreeMap<(&str, u64), Vec<(u64, f64)>> = BTreeMap::new();
        for r in rows {
            if let Some(&v) = r.us_per_page.get(&imp) {
                groups
                    .entry((r.mode, r.size_kib))
                    .or_default()
                    .push((r.threads, v));
            }
        }
        for ((mode, size_kib), pts) in groups {
            let lo = pts.iter().min_by_key(|p| p.0);
            let hi = pts.iter().max_by_key(|p| p.0);
            if let (Some(lo), Some(hi)) = (lo, hi) {
                if hi.0 > lo.0 && lo.1 > 0.0 {
                    out.push(Flatness {
                        imp,
                        mode,
                        size_kib,
                        threads: (lo.0, hi.0),
                        ratio: hi.1 / lo.1,
                    });
                }
            }
        }
    }
    out
}

impl Report {
    /// Builds the tables from the samples and totals the bad counts.
    pub fn new(machine: Machine, reps: Option<u64>, samples: Vec<Sample>) -> Self {
        let herd = herd_rows(&samples);
        let gpu_phase = gpu_rows(&samples);
        let flatness = flatness(&herd);
        let bad = samples.iter().map(|s| s.bad).sum();
        Self {
            machine,
            reps,
            samples,
            herd,
            gpu_phase,
            flatness,
            ipc: None,
            copy_engine: None,
            peer_copy: None,
            random: None,
            metadata: None,
            errors: Vec::new(),
            bad,
        }
    }

    pub fn add_bad(&mut self, n: u64) {
        self.bad = self.bad.saturating_add(n);
    }

    pub fn ok(&self) -> bool {
        self.bad == 0 && self.errors.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::table::render;
    use crate::herd::Mode;

    fn sample(imp: Impl, mode: Mode, threads: u64, us: f64, bad: u64) -> Sample {
        Sample {
            imp,
            mode,
            size_kib: 65536,
            threads,
            per_page_cpu_us: us,
            cpu_phase_med_us: Some(us * 16384.0),
            gpu_phase_med_us: (imp == Impl::Ours).then_some(50_000.0),
            bad,
            reps: Some(5),
        }
    }

    fn machine() -> Machine {
        Machine::now()
    }

    #[test]
    fn ratios_are_ours_over_each_floor_with_medians_of_repeats() {
        let samples = vec![
            sample(Impl::Ours, Mode::Touch, 1, 3.0, 0),
            sample(Impl::FloorCopy, Mode::Touch, 1, 1.0, 0),
            sample(Impl::FloorCopy, Mode::Touch, 1, 2.0, 0),
            sample(Impl::FloorCopy, Mode::Touch, 1, 100.0, 0),
            sample(Impl::Memcpy, Mode::Touch, 1, 0.5, 0),
            sample(Impl::Ours, Mode::Touch, 16, 1.5, 0),
            sample(Impl::FloorCopy, Mode::Touch, 16, 3.0, 0),
            sample(Impl::Ours, Mode::IncAll, 1, 4.0, 0),
        ];
        let r = Report::new(machine(), Some(5), samples);
        assert!(r.ok());
        assert_eq!(r.herd.len(), 3);
        let first = &r.herd[0];
        assert_eq!((first.mode, first.threads), ("touch-pg", 1));
        assert_eq!(
            first.us_per_page[&Impl::FloorCopy],
            2.0,
            "the median of three"
        );
        assert_eq!(first.ours_over[&Impl::FloorCopy], 1.5);
        assert_eq!(first.ours_over[&Impl::Memcpy], 6.0);
        assert_eq!(r.herd[1].ours_over[&Impl::FloorCopy], 0.5);
        assert_eq!(r.herd[2].mode, "inc-all");
        assert!(r.herd[2].ours_over.is_empty());
        // 64 MiB in 50 ms against memcpy's 0.5 us per 4 KiB page.
        let g = &r.gpu_phase[0];
        let memcpy_gbps = 4096.0 / 0.5 / 1e3;
        assert!((g.memcpy_gbps.unwrap() - memcpy_gbps).abs() < 1e-9);
        assert!((g.ours_share_of_memcpy.unwrap() - g.ours_gbps / memcpy_gbps).abs() < 1e-9);
        let flat: Vec<_> = r.flatness.iter().filter(|f| f.imp == Impl::Ours).collect();
        assert_eq!(flat.len(), 1);
        assert_eq!((flat[0].threads, flat[0].ratio), ((1, 16), 0.5));
        assert!(render(&r).contains("every word checked: 0 bad"));
    }

    #[test]
    fn a_bad_page_anywhere_fails_the_report() {
        let samples = vec![
            sample(Impl::Ours, Mode::Touch, 1, 3.0, 0),
            sample(Impl::FloorMinor, Mode::Touch, 1, 1.0, 2),
        ];
        let r = Report::new(machine(), None, samples);
        assert!(!r.ok());
        assert_eq!(r.herd[0].bad, 2);
        assert!(render(&r).contains("FAILED: 2 bad"));
        let mut r = Report::new(
            machine(),
            None,
            vec![sample(Impl::Ours, Mode::Touch, 1, 3.0, 0)],
        );
        r.add_bad(1);
        assert!(!r.ok());
    }
}
