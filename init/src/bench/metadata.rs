//! Per-page metadata, measured: the growth of the pager's and the GPU
//! server's private memory (`RssAnon`) while a buffer is created, filled by
//! the CPU (every page gets its pager state) and moved to VRAM by the GPU
//! (every page gets its GPU-side frame), divided by the buffer's pages.
//!
//! The servers also allocate once, on first use, about as much again as a
//! 128 MiB buffer's metadata (seen: 0.6-0.9 MiB each), and a heap can hand
//! back memory freed earlier without growing. So a first buffer a quarter
//! the size pays those costs and stays; the growth is measured over the
//! second. Still an estimate (anything else allocated meanwhile counts
//! too) of the declared sizes: 8 bytes a page in the pager, 4 in xe-svm.
//! Every word of both buffers is checked after the GPU phase.

use ipc_protocol::interfaces::gpu::{BindView, CreateVm, DestroyVm, Unbind};
use ipc_protocol::types::{JobStatus, KernelKind, VmId};
use serde::Serialize;

use super::BenchError;
use crate::client::{run_kernel, SvmBuffer};
use crate::supervisor::{Clients, System};

#[derive(Debug, Clone, Serialize)]
pub struct Metadata {
    pub pages: u64,
    pub pager_bytes_per_page: f64,
    pub gpu_bytes_per_page: f64,
    pub total_bytes_per_page: f64,
    pub bad_pages: u64,
}

/// `RssAnon` of process `pid`, bytes.
fn rss_anon(pid: u32) -> Result<u64, BenchError> {
    let path = format!("/proc/{pid}/status");
    let status =
        std::fs::read_to_string(&path).map_err(|e| BenchError::Host(format!("{path}: {e}")))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| BenchError::Host(format!("{path}: no RssAnon")))
}

fn system(e: impl std::fmt::Display) -> BenchError {
    BenchError::System(e.to_string())
}

/// A buffer bound in `vm`, filled by the CPU (word i = i), then every
/// page's first word incremented by the GPU (so every page is in VRAM).
fn filled_and_moved(c: &Clients, vm: VmId, bytes: usize) -> Result<SvmBuffer, BenchError> {
    let buf = SvmBuffer::new(&c.pager, bytes).map_err(system)?;
    c.gpu
        .call(BindView {
            vm,
            view: buf.view,
            gpu_addr: buf.addr,
            flags: 0,
        })
        .map_err(system)?;
    // SAFETY: ours until `release`; the GPU writes it only inside the job
    // we wait for.
    for (i, w) in unsafe { buf.words() }.iter_mut().enumerate() {
        *w = i as u32;
    }
    let done =
        run_kernel(&c.gpu, vm, KernelKind::AtomicAdd, buf.addr, bytes as u64, 1).map_err(system)?;
    if done.status != JobStatus::Completed {
        return Err(BenchError::System(format!(
            "metadata job: {:?}",
            done.status
        )));
    }
    Ok(buf)
}

/// Pages of `buf` with a word other than what `filled_and_moved` left.
fn bad_pages(buf: &SvmBuffer) -> u64 {
    // SAFETY: ours until `release`; no job runs on it now.
    let words = unsafe { buf.words() };
    words
        .chunks(1024)
        .enumerate()
        .filter(|(pg, page)| {
            page.iter().enumerate().any(|(i, w)| {
                let start = (pg * 1024 + i) as u32;
                *w != if i == 0 { start.wrapping_add(1) } else { start }
            })
        })
        .count() as u64
}

fn release(c: &Clients, vm: VmId, buf: SvmBuffer) -> Result<(), BenchError> {
    c.gpu
        .call(Unbind {
            vm,
            gpu_addr: buf.addr,
        })
        .map_err(system)?;
    buf.release(&c.pager).map_err(system)
}

pub fn measure(sys: &System, c: &Clients, bytes: usize) -> Result<Metadata, BenchError> {
    let pid = |name| {
        sys.pid(name)
            .ok_or_else(|| BenchError::System(format!("no {name} process")))
    };
    let (pager, gpu) = (pid("pager")?, pid("xe-svm")?);
    let vm = c.gpu.call(CreateVm {}).map_err(system)?.vm;
    let first = filled_and_moved(c, vm, (bytes / 4).max(2 << 20) & !4095)?;
    let (pager0, gpu0) = (rss_anon(pager)?, rss_anon(gpu)?);
    let measured = filled_and_moved(c, vm, bytes)?;
    let (pager1, gpu1) = (rss_anon(pager)?, rss_anon(gpu)?);
    let bad = bad_pages(&first) + bad_pages(&measured);
    release(c, vm, first)?;
    release(c, vm, measured)?;
    c.gpu.call(DestroyVm { vm }).map_err(system)?;
    let pages = (bytes / 4096) as u64;
    let per_page = |a: u64, b: u64| b.saturating_sub(a) as f64 / pages as f64;
    let (p, g) = (per_page(pager0, pager1), per_page(gpu0, gpu1));
    Ok(Metadata {
        pages,
        pager_bytes_per_page: p,
        gpu_bytes_per_page: g,
        total_bytes_per_page: p + g,
        bad_pages: bad,
    })
}
