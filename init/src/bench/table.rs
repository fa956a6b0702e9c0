//! The report as text: the tables, then the single numbers and errors.

use std::fmt::Write;

use super::report::{Flatness, GpuRow, HerdRow, Report};
use super::sample::Impl;

pub fn size_name(kib: u64) -> String {
    if kib % 1024 == 0 {
        format!("{} MiB", kib / 1024)
    } else {
        format!("{kib} KiB")
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.filter(|v| v.is_finite())
        .map_or("-".into(), |v| format!("{v:.digits$}"))
}

fn herd_table(out: &mut String, rows: &[HerdRow]) {
    let present: Vec<Impl> = Impl::ALL
        .into_iter()
        .filter(|i| rows.iter().any(|r| r.us_per_page.contains_key(i)))
        .collect();
    let others: Vec<Impl> = present
        .iter()
        .copied()
        .filter(|i| *i != Impl::Ours)
        .collect();
    let _ = write!(out, "{:<9} {:>7} {:>3} |", "mode", "size", "thr");
    for i in &present {
        let _ = write!(out, " {:>11}", i.name());
    }
    let _ = write!(out, " |");
    for i in &others {
        let _ = write!(out, " {:>11}", format!("/{}", i.name()));
    }
    let _ = writeln!(out, " | bad");
    for r in rows {
        let _ = write!(
            out,
            "{:<9} {:>7} {:>3} |",
            r.mode,
            size_name(r.size_kib),
            r.threads
        );
        for i in &present {
            let _ = write!(out, " {:>11}", opt(r.us_per_page.get(i).copied(), 3));
        }
        let _ = write!(out, " |");
        for i in &others {
            let _ = write!(out, " {:>11}", opt(r.ours_over.get(i).copied(), 2));
        }
        let _ = writeln!(out, " | {}", r.bad);
    }
}

fn gpu_table(out: &mut String, rows: &[GpuRow]) {
    let _ = writeln!(
        out,
        "{:<9} {:>7} | {:>10} {:>9} | {:>11} {:>13} | {:>10} {:>9}",
        "mode", "size", "ours us", "ours GB/s", "memcpy GB/s", "ours/memcpy", "UVM us", "ours/UVM"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<9} {:>7} | {:>10.1} {:>9.2} | {:>11} {:>13} | {:>10} {:>9}",
            r.mode,
            size_name(r.size_kib),
            r.ours_us,
            r.ours_gbps,
            opt(r.memcpy_gbps, 2),
            opt(r.ours_share_of_memcpy, 2),
            opt(r.uvm_us, 1),
            opt(r.ours_over_uvm, 2)
        );
    }
}

fn flatness_table(out: &mut String, flat: &[Flatness]) {
    for f in flat {
        let _ = writeln!(
            out,
            "  {:<11} {:<9} {:>7}: {}/{} threads {:.2}",
            f.imp.name(),
            f.mode,
            size_name(f.size_kib),
            f.threads.1,
            f.threads.0,
            f.ratio
        );
    }
}

fn singles(out: &mut String, r: &Report) {
    if let Some(i) = &r.ipc {
        let _ = writeln!(
            out,
            "\nIPC round trip (two processes, {} calls): bare SOCK_SEQPACKET {:.2} us | typed \
             Pager::Advise {:.2} us | typed/bare {:.2} | bad {}",
            i.calls, i.bare_us, i.typed_us, i.typed_over_bare, i.bad
        );
    }
    if let Some(c) = &r.copy_engine {
        let gbps = |us: f64| c.bytes as f64 / us / 1e3;
        let _ = writeln!(
            out,
            "\n2 MiB system -> VRAM: memcpy {:.1} us ({:.2} GB/s) | copy engine {:.1} us \
             ({:.2} GB/s) | engine/memcpy {:.2} | bad bytes {}",
            c.memcpy_us,
            gbps(c.memcpy_us),
            c.engine_us,
            gbps(c.engine_us),
            c.engine_over_memcpy,
            c.bad_bytes
        );
    }
    if let Some(c) = &r.peer_copy {
        let gbps = |us: f64| c.bytes as f64 / us / 1e3;
        let _ = writeln!(
            out,
            "\n2 MiB VRAM -> peer VRAM: memcpy between the VRAM memfds {:.1} us ({:.2} GB/s) | \
             peer push {:.1} us ({:.2} GB/s) | push/memcpy throughput {:.2} | bad bytes {}",
            c.memcpy_us,
            gbps(c.memcpy_us),
            c.push_us,
            gbps(c.push_us),
            c.push_throughput_of_memcpy,
            c.bad_bytes
        );
    }
    if let Some(x) = &r.random {
        let _ = writeln!(
            out,
            "\nrandom 4 KiB GPU reads: {} MiB buffer over {} MiB VRAM, {} reads in {:.0} ms \
             ({} GPU faults)\n  touched {:.1} MiB | moved to VRAM {:.1} MiB | moved/touched \
             {:.2} | moved back to RAM {:.1} MiB | bad pages {}",
            x.buffer_mib,
            x.vram_mib,
            x.reads,
            x.job_ms,
            x.gpu_faults,
            x.touched_bytes as f64 / 1048576.0,
            x.moved_to_vram_bytes as f64 / 1048576.0,
            x.moved_over_touched,
            x.moved_to_ram_bytes as f64 / 1048576.0,
            x.bad_pages
        );
    }
    if let Some(m) = &r.metadata {
        let _ = writeln!(
            out,
            "\nper-page metadata ({} pages, RssAnon growth): pager {:.2} B | xe-svm {:.2} B | \
             total {:.2} B (budget 16) | bad pages {}",
            m.pages,
            m.pager_bytes_per_page,
            m.gpu_bytes_per_page,
            m.total_bytes_per_page,
            m.bad_pages
        );
    }
}

/// The report as text: the tables, then the single numbers and errors.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# svm bench on {}", r.machine.line());
    if !r.herd.is_empty() {
        let _ = writeln!(
            out,
            "\nherd CPU phase, us per 4 KiB page ({}); /X columns are ours / X",
            r.reps
                .map_or("medians".into(), |n| format!("median of {n} reps"))
        );
        herd_table(&mut out, &r.herd);
    }
    if !r.gpu_phase.is_empty() {
        let _ = writeln!(
            out,
            "\nGPU phase: the whole buffer to VRAM by GPU faults (median over thread counts)"
        );
        gpu_table(&mut out, &r.gpu_phase);
    }
    if !r.flatness.is_empty() {
        let _ = writeln!(
            out,
            "\nflatness: per-page cost at the most threads / the fewest"
        );
        flatness_table(&mut out, &r.flatness);
    }
    singles(&mut out, r);
    for e in &r.errors {
        let _ = writeln!(out, "error: {e}");
    }
    let _ = writeln!(
        out,
        "\n{}",
        if r.bad == 0 && r.errors.is_empty() {
            "every word checked: 0 bad".to_string()
        } else {
            format!("FAILED: {} bad, {} errors", r.bad, r.errors.len())
        }
    );
    out
}
