//! View changes while pages live in VRAM (issue 6, the seed's scenarios):
//! `mremap` (plain and `MREMAP_DONTUNMAP`) under threads hammering reads,
//! and `fork` with a child that reads or writes while the parent's GPU
//! works. Every word of every page is checked.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use ipc_protocol::interfaces::gpu::{BindView, Stats, Unbind};
use ipc_protocol::types::{JobStatus, KernelKind, VmId};
use scopeguard::ScopeGuard;

use crate::client::{
    destroy_vm, run_kernel, scoped_buffer, scoped_vm, ScopedBuffer, ScopedVm, SvmBuffer,
};
use crate::supervisor::Connection;

unsafe extern "C" {
    fn mremap(
        old: *mut std::ffi::c_void,
        old_len: usize,
        new_len: usize,
        flags: i32,
        ...
    ) -> *mut std::ffi::c_void;
    fn write(fd: i32, buf: *const std::ffi::c_void, count: usize) -> isize;
    fn fork() -> i32;
    fn _exit(code: i32) -> !;
}
const MREMAP_MAYMOVE: i32 = 1;
const MREMAP_FIXED: i32 = 2;
const MREMAP_DONTUNMAP: i32 = 4;
const PAGE: usize = 4096;

#[derive(Debug)]
pub enum ViewsError {
    Pager(String),
    Gpu(String),
    /// A GPU job that should have completed did not.
    Job(JobStatus),
    /// A host call (mremap, fork, pipe) failed.
    Host(String),
}

impl std::fmt::Display for ViewsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pager(e) => write!(f, "pager: {e}"),
            Self::Gpu(e) => write!(f, "GPU server: {e}"),
            Self::Job(s) => write!(f, "a GPU job ended {s:?}, not Completed"),
            Self::Host(e) => write!(f, "host: {e}"),
        }
    }
}

fn gpu_err<E: std::fmt::Display>(e: E) -> ViewsError {
    ViewsError::Gpu(e.to_string())
}

/// The value word `i` starts with.
fn pattern(i: usize) -> u32 {
    (i as u32).wrapping_mul(2_654_435_761) ^ 0x5a5a_5a5a
}

/// Words of `[addr, addr + words * 4)` that are not `pattern(i) + add`.
fn bad_words(addr: u64, words: usize, add: u32) -> u64 {
    words_outside(addr, words, add, add)
}

/// Words of `[addr, addr + 4 * words)` not `pattern` plus `lo` to `hi`.
fn words_outside(addr: u64, words: usize, lo: u32, hi: u32) -> u64 {
    (0..words)
        .filter(|&i| {
            // SAFETY: the caller names a mapped range of `words` words.
            let v = unsafe { std::ptr::read_volatile((addr as *const u32).add(i)) };
            !(lo..=hi).any(|add| v == pattern(i).wrapping_add(add))
        })
        .count() as u64
}

/// A buffer of `bytes` with `pattern` data, bound in a new VM at its own
/// address, incremented once by the GPU: every page is in VRAM. Both go
/// if dropped (an early return), so an interrupted race leaves nothing.
fn buffer_in_vram(
    c: &Connection,
    bytes: usize,
) -> Result<(ScopedVm<'_>, ScopedBuffer<'_>), ViewsError> {
    let scoped = scoped_vm(&c.gpu).map_err(gpu_err)?;
    let vm = *scoped;
    let buf = SvmBuffer::new(&c.pager, bytes).map_err(|e| ViewsError::Pager(e.to_string()))?;
    let buf = scoped_buffer(&c.pager, buf);
    c.gpu
        .call(BindView {
            vm,
            view: buf.view,
            gpu_addr: buf.addr,
            flags: 0,
        })
        .map_err(gpu_err)?;
    // SAFETY: ours; nothing else runs on it yet.
    for (i, w) in unsafe { buf.words() }.iter_mut().enumerate() {
        *w = pattern(i);
    }
    expect_completed(c, vm, buf.addr, bytes)?;
    Ok((scoped, buf))
}

/// Phases of a race that took long, logged: a slow round says where.
struct Phases {
    what: &'static str,
    last: std::time::Instant,
}

/// A phase longer than this is logged.
const SLOW_PHASE: std::time::Duration = std::time::Duration::from_millis(300);

impl Phases {
    fn start(what: &'static str) -> Self {
        Self {
            what,
            last: std::time::Instant::now(),
        }
    }

    /// The phase `done` ended now.
    fn mark(&mut self, done: &str) {
        let took = self.last.elapsed();
        if took > SLOW_PHASE {
            log::warn!("{}: {done}: {} ms", self.what, took.as_millis());
        }
        self.last = std::time::Instant::now();
    }
}

/// Releases what [`buffer_in_vram`] made, with the results.
fn release(c: &Connection, vm: ScopedVm<'_>, buf: ScopedBuffer<'_>) -> Result<(), ViewsError> {
    ScopeGuard::into_inner(buf)
        .release(&c.pager)
        .map_err(|e| ViewsError::Pager(e.to_string()))?;
    destroy_vm(&c.gpu, vm).map_err(gpu_err)
}

/// One `+1` on every word of `[addr, addr + bytes)` by the GPU.
fn expect_completed(c: &Connection, vm: VmId, addr: u64, bytes: usize) -> Result<(), ViewsError> {
    match run_kernel(&c.gpu, vm, KernelKind::IncrementAll, addr, bytes as u64, 1)
        .map_err(gpu_err)?
        .status
    {
        JobStatus::Completed => Ok(()),
        s => Err(ViewsError::Job(s)),
    }
}

fn pages_to_ram(c: &Connection) -> Result<u64, ViewsError> {
    Ok(c.gpu.call(Stats {}).map_err(gpu_err)?.pages_to_ram)
}

#[derive(Debug, Clone)]
pub struct MremapConfig {
    pub bytes: usize,
    /// `MREMAP_DONTUNMAP`: the old range stays a view of the object.
    pub dontunmap: bool,
    /// Threads hammering reads on the range while it moves.
    pub readers: usize,
}

#[derive(Debug, Clone)]
pub struct MremapReport {
    pub cfg: MremapConfig,
    /// Pages read (and checked) by the hammering threads.
    pub pages_read: u64,
    /// Reads that found the old range gone and went on at the new one.
    pub reads_redirected: u64,
    /// Words that were wrong: during the race, after it at the new address,
    /// at the old address (kept with `MREMAP_DONTUNMAP`), after the GPU's
    /// second pass.
    pub bad_words: u64,
    pub pages_to_ram: u64,
    /// The GPU binding followed the view: a kernel at the view's address
    /// now completed (and, after a plain move, one at the old address
    /// faulted).
    pub gpu_follows: bool,
}

impl MremapReport {
    pub fn line(&self) -> String {
        format!(
            "mremap{} size={}KiB readers={} pages_read={} redirected={} pages_to_ram={} gpu_binding_followed={} bad={}",
            if self.cfg.dontunmap { "+dontunmap" } else { "" },
            self.cfg.bytes / 1024,
            self.cfg.readers,
            self.pages_read,
            self.reads_redirected,
            self.pages_to_ram,
            self.gpu_follows,
            self.bad_words
        )
    }
}

/// A PROT_NONE reservation to move a view onto.
fn reserve(bytes: usize) -> Result<u64, ViewsError> {
    // SAFETY: a fresh anonymous reservation at a kernel-chosen address.
    unsafe {
        rustix::mm::mmap_anonymous(
            std::ptr::null_mut(),
            bytes,
            rustix::mm::ProtFlags::empty(),
            rustix::mm::MapFlags::PRIVATE | rustix::mm::MapFlags::NORESERVE,
        )
    }
    .map(|p| p as u64)
    .map_err(|e| ViewsError::Host(e.to_string()))
}

type Pipe = (std::os::fd::OwnedFd, std::os::fd::OwnedFd);

fn new_pipe() -> Result<Pipe, ViewsError> {
    rustix::pipe::pipe().map_err(|e| ViewsError::Host(e.to_string()))
}

/// Reads page `page` of the view at `base` through a pipe: the kernel's
/// copy faults like a load (and is served by the pager), but an address
/// that is no longer mapped gives `EFAULT` instead of a crash, so a reader
/// can race a plain `mremap`. `None`: the address is gone.
fn read_page(
    pipe: &mut Pipe,
    base: u64,
    page: usize,
    out: &mut [u8; PAGE],
) -> Result<Option<()>, ViewsError> {
    use std::os::fd::AsRawFd;
    // SAFETY: `write` only reads `PAGE` bytes at that address; an unmapped
    // one fails with EFAULT, it is never dereferenced here.
    let n = unsafe {
        write(
            pipe.1.as_raw_fd(),
            (base as usize + page * PAGE) as *const std::ffi::c_void,
            PAGE,
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return if e.raw_os_error() == Some(rustix::io::Errno::FAULT.raw_os_error()) {
            // A write that failed with EFAULT may leave an empty buffer in
            // the pipe's ring (Linux 6.1 does); sixteen of them fill the
            // pipe and the next write blocks for good. Go on with a fresh one.
            *pipe = new_pipe()?;
            Ok(None)
        } else {
            Err(ViewsError::Host(e.to_string()))
        };
    }
    let mut got = 0;
    while got < n as usize {
        got += rustix::io::read(&pipe.0, &mut out[got..n as usize])
            .map_err(|e| ViewsError::Host(e.to_string()))?;
    }
    if (n as usize) < PAGE {
        return Err(ViewsError::Host(format!("short pipe write: {n}")));
    }
    Ok(Some(()))
}

/// The seed's scenario: threads hammer reads on a range whose pages are in
/// VRAM while the main thread moves it with `mremap`.
/// How long `mremap_race`'s readers may go without progress: past the
/// pager's fault deadline (10 s), after which a fault it cannot serve ends.
const READERS_STALL: std::time::Duration = std::time::Duration::from_secs(60);

pub fn mremap_race(c: &Connection, cfg: &MremapConfig) -> Result<MremapReport, ViewsError> {
    let mut phases = Phases::start("mremap");
    let (scoped, mut buf) = buffer_in_vram(c, cfg.bytes)?;
    phases.mark("buffer in VRAM");
    let vm = *scoped;
    let (old, bytes, words, pages) = (buf.addr, cfg.bytes, cfg.bytes / 4, cfg.bytes / PAGE);
    let ram_before = pages_to_ram(c)?;
    // Where readers read now; a reader that finds it gone reloads it.
    let base = Arc::new(AtomicU64::new(old));
    let stop = Arc::new(AtomicBool::new(false));
    let passes = Arc::new(AtomicU32::new(0));
    let readers: Vec<_> = (0..cfg.readers.max(1))
        .map(|t| {
            let (base, stop, passes) = (base.clone(), stop.clone(), passes.clone());
            let n = cfg.readers.max(1);
            std::thread::spawn(move || -> Result<(u64, u64, u64), ViewsError> {
                let mut pipe = new_pipe()?;
                let mut page = [0u8; PAGE];
                let (mut read, mut redirected, mut bad) = (0u64, 0u64, 0u64);
                let mut k = 0usize;
                while !stop.load(Ordering::Acquire) {
                    let pg = (k + t * pages / n) % pages;
                    match read_page(&mut pipe, base.load(Ordering::Acquire), pg, &mut page)? {
                        None => {
                            redirected += 1;
                            std::thread::yield_now();
                            continue;
                        }
                        Some(()) => {}
                    }
                    for (j, w) in page.chunks_exact(4).enumerate() {
                        let i = pg * 1024 + j;
                        if u32::from_ne_bytes([w[0], w[1], w[2], w[3]])
                            != pattern(i).wrapping_add(1)
                        {
                            bad += 1;
                        }
                    }
                    read += 1;
                    k += 1;
                    if k % pages == 0 {
                        passes.fetch_add(1, Ordering::AcqRel);
                    }
                }
                Ok((read, redirected, bad))
            })
        })
        .collect();
    // Let the herd get going on the VRAM pages, then move the range. No
    // wait here is unbounded: readers that stop making progress are an
    // error, not a hang.
    let deadline = std::time::Instant::now() + READERS_STALL;
    while passes.load(Ordering::Acquire) == 0 && pages_to_ram(c)? == ram_before {
        if std::time::Instant::now() >= deadline {
            stop.store(true, Ordering::Release);
            return Err(ViewsError::Host("the readers never started".into()));
        }
        std::thread::yield_now();
    }
    let dst = reserve(bytes)?;
    let flags = MREMAP_MAYMOVE | MREMAP_FIXED | if cfg.dontunmap { MREMAP_DONTUNMAP } else { 0 };
    // SAFETY: moves our own view onto our own reservation; the readers only
    // reach it through `write(2)`, which tolerates the old range vanishing.
    let new = unsafe {
        mremap(
            old as *mut _,
            bytes,
            bytes,
            flags,
            dst as *mut std::ffi::c_void,
        )
    } as u64;
    if new != dst {
        stop.store(true, Ordering::Release);
        return Err(ViewsError::Host(format!(
            "mremap: {}",
            std::io::Error::last_os_error()
        )));
    }
    if !cfg.dontunmap {
        base.store(new, Ordering::Release);
        buf.moved_to(new);
    }
    phases.mark("readers started, range moved");
    // Every reader finishes a whole pass after the move.
    let after = passes.load(Ordering::Acquire) + cfg.readers.max(1) as u32;
    let deadline = std::time::Instant::now() + READERS_STALL;
    while passes.load(Ordering::Acquire) < after {
        if std::time::Instant::now() >= deadline {
            stop.store(true, Ordering::Release);
            log::error!(
                "mremap: stalled; the threads:\n{}",
                crate::stall::thread_report()
            );
            return Err(ViewsError::Host(format!(
                "the readers made no whole pass within {READERS_STALL:?} of the move"
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    stop.store(true, Ordering::Release);
    phases.mark("a whole pass after the move");
    let (mut pages_read, mut reads_redirected, mut bad) = (0, 0, 0);
    for r in readers {
        let (a, b, c) = r
            .join()
            .map_err(|_| ViewsError::Host("a reader panicked".into()))??;
        pages_read += a;
        reads_redirected += b;
        bad += c;
    }
    bad += bad_words(new, words, 1);
    if cfg.dontunmap {
        bad += bad_words(old, words, 1);
    }
    // A GPU server restart starts its counters again: never negative.
    let pages_to_ram = pages_to_ram(c)?.saturating_sub(ram_before);
    // The GPU binding: after a plain move it follows to the new address
    // (and nothing is mapped at the old one); with DONTUNMAP it stays at
    // the old range, which is still a view.
    phases.mark("readers joined, words checked");
    let incremented = expect_completed(c, vm, if cfg.dontunmap { old } else { new }, bytes);
    phases.mark("GPU pass at the new address");
    let gpu_follows = if cfg.dontunmap {
        incremented.is_ok()
    } else {
        let at_old =
            run_kernel(&c.gpu, vm, KernelKind::TouchPages, old, bytes as u64, 0).map(|d| d.status);
        phases.mark("GPU pass at the old address");
        incremented.is_ok() && matches!(at_old, Ok(JobStatus::Faulted))
    };
    // A job a GPU server restart cut short (`DeviceReset`) did some of its
    // pages: each word then holds one increment or two, never anything
    // else (the words are checked all the same, never excused).
    bad += match incremented {
        Ok(()) => bad_words(new, words, 2),
        Err(_) => words_outside(new, words, 1, 2),
    };
    let unbound = c.gpu.call(Unbind {
        vm,
        gpu_addr: if cfg.dontunmap { old } else { new },
    });
    let gpu_follows = gpu_follows && unbound.is_ok();
    if cfg.dontunmap {
        // The copy at the new address is a view too; unmapping it ends it.
        // SAFETY: our own mapping, not used after this.
        unsafe { rustix::mm::munmap(new as *mut _, bytes) }
            .map_err(|e| ViewsError::Host(e.to_string()))?;
    }
    phases.mark("unbound");
    release(c, scoped, buf)?;
    phases.mark("released");
    Ok(MremapReport {
        cfg: cfg.clone(),
        pages_read,
        reads_redirected,
        bad_words: bad,
        pages_to_ram,
        gpu_follows,
    })
}

#[derive(Debug, Clone)]
pub struct ForkConfig {
    pub bytes: usize,
    /// Threads in the parent hammering reads while the child reads.
    pub readers: usize,
    /// GPU passes (`+1` on every word) in the parent while the child writes.
    pub kernels: u32,
    /// Passes of `+1` on every word by the child, with CPU atomics.
    pub child_rounds: u32,
}

#[derive(Debug, Clone)]
pub struct ForkReport {
    pub cfg: ForkConfig,
    /// Words the child read wrong (its exit status, capped at 255).
    pub child_bad: u64,
    /// Words the parent's readers and final check found wrong.
    pub bad_words: u64,
    pub pages_to_ram: u64,
    pub pages_to_vram: u64,
}

impl ForkReport {
    pub fn line(&self) -> String {
        format!(
            "fork size={}KiB readers={} gpu_kernels={} child_rounds={} pages_to_vram={} pages_to_ram={} child_bad={} bad={}",
            self.cfg.bytes / 1024,
            self.cfg.readers,
            self.cfg.kernels,
            self.cfg.child_rounds,
            self.pages_to_vram,
            self.pages_to_ram,
            self.child_bad,
            self.bad_words
        )
    }
}

/// Forks; the child runs `child` on the buffer and exits with its result
/// (capped at 255). Returns the child's pid.
///
/// The child of a multithreaded process may only do async-signal-safe
/// work: `child` touches memory and returns a number, nothing more.
fn fork_child(child: impl FnOnce() -> u64) -> Result<rustix::process::Pid, ViewsError> {
    // SAFETY: see above; the child never returns from this function.
    let pid = unsafe { fork() };
    if pid < 0 {
        return Err(ViewsError::Host(
            std::io::Error::last_os_error().to_string(),
        ));
    }
    if pid == 0 {
        let r = child();
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { _exit(r.min(255) as i32) };
    }
    rustix::process::Pid::from_raw(pid)
        .ok_or_else(|| ViewsError::Host("fork returned pid 0 in the parent".into()))
}

fn wait_child(pid: rustix::process::Pid) -> Result<u64, ViewsError> {
    let status = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())
        .map_err(|e| ViewsError::Host(e.to_string()))?;
    match status.and_then(|(_, s)| s.exit_status()) {
        Some(code) => Ok(code as u64),
        None => Err(ViewsError::Host("the child did not exit normally".into())),
    }
}

/// Fork with pages in VRAM: (1) the parent hammers reads while a child
/// reads every word through its own view (pulling pages back from VRAM);
/// (2) the GPU increments every word `kernels` times in the parent while
/// the child adds 1 to every word `child_rounds` times with CPU atomics.
/// The object is shared, not copy-on-write: at the end every word is its
/// start value plus both sides' increments.
pub fn fork_race(c: &Connection, cfg: &ForkConfig) -> Result<ForkReport, ViewsError> {
    let (scoped, buf) = buffer_in_vram(c, cfg.bytes)?;
    let vm = *scoped;
    let before = c.gpu.call(Stats {}).map_err(gpu_err)?;
    let (addr, words) = (buf.addr, cfg.bytes / 4);
    // (1) Readers in the parent, a reading child.
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..cfg.readers)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut bad, mut i) = (0u64, t * 997);
                while !stop.load(Ordering::Acquire) {
                    i = (i + 1021) % words;
                    // SAFETY: inside the buffer, which outlives the readers.
                    if unsafe { std::ptr::read_volatile((addr as *const u32).add(i)) }
                        != pattern(i).wrapping_add(1)
                    {
                        bad += 1;
                    }
                }
                bad
            })
        })
        .collect();
    let child = fork_child(|| bad_words(addr, words, 1))?;
    let child_bad = wait_child(child)?;
    stop.store(true, Ordering::Release);
    let mut bad: u64 = readers
        .into_iter()
        .map(|r| r.join().unwrap_or(u64::MAX))
        .sum();
    // (2) Back to VRAM, then the GPU and a writing child at once.
    expect_completed(c, vm, addr, cfg.bytes)?;
    let rounds = cfg.child_rounds;
    let child = fork_child(|| {
        for _ in 0..rounds {
            for i in 0..words {
                // SAFETY: inside the buffer; aligned u32 words.
                unsafe { AtomicU32::from_ptr((addr as *mut u32).add(i)) }
                    .fetch_add(1, Ordering::AcqRel);
            }
        }
        0
    })?;
    let mut gpu_result = Ok(());
    for _ in 0..cfg.kernels {
        if let Err(e) = expect_completed(c, vm, addr, cfg.bytes) {
            gpu_result = Err(e);
            break;
        }
    }
    let child_status = wait_child(child)?;
    gpu_result?;
    bad += bad_words(addr, words, 2 + cfg.kernels + cfg.child_rounds);
    let after = c.gpu.call(Stats {}).map_err(gpu_err)?;
    c.gpu.call(Unbind { vm, gpu_addr: addr }).map_err(gpu_err)?;
    release(c, scoped, buf)?;
    Ok(ForkReport {
        cfg: cfg.clone(),
        child_bad: child_bad + child_status,
        bad_words: bad,
        pages_to_ram: after.pages_to_ram.saturating_sub(before.pages_to_ram),
        pages_to_vram: after.pages_to_vram.saturating_sub(before.pages_to_vram),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many reads of a gone range, then one of a mapped page, through one
    /// reader's pipe: the read after them completes (on Linux 6.1 each
    /// failed `write(2)` left an empty buffer in the pipe, and the 17th
    /// write blocked for good).
    #[test]
    fn a_reader_goes_on_after_many_reads_of_a_gone_range() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let gone = reserve(PAGE).unwrap();
            // SAFETY: our own reservation, now a hole.
            unsafe { rustix::mm::munmap(gone as *mut _, PAGE) }.unwrap();
            let data: Box<[u8; PAGE]> = Box::new([7; PAGE]);
            let mut pipe = new_pipe().unwrap();
            let mut page = [0u8; PAGE];
            for _ in 0..64 {
                assert!(read_page(&mut pipe, gone, 0, &mut page).unwrap().is_none());
            }
            let r = read_page(&mut pipe, data.as_ptr() as u64, 0, &mut page);
            tx.send(r.map(|o| o.is_some() && page == [7; PAGE]).unwrap_or(false))
                .unwrap();
        });
        let ok = rx.recv_timeout(std::time::Duration::from_secs(30));
        assert_eq!(ok, Ok(true), "the read after the faults did not complete");
    }
}
