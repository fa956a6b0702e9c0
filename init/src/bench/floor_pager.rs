//! The pager process of the two userfaultfd floors (`svm bench-helper
//! floor-pager`): it holds the client's userfaultfd, as our pager does, and
//! answers each fault with one call for the 2 MiB chunk around it:
//! `UFFDIO_COPY` from its mapping of the "VRAM" memfd (the copy floor), or
//! `UFFDIO_CONTINUE` over page cache it filled before the timed phase (the
//! minor floor). One thread serves faults, as in the anchors' floor.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ipc_protocol::transport::{inherited_fd, SeqPacket};

use super::floor_wire::{self, Answer, Control, PagerStats, ANSWER_TIMEOUT};
use super::memory::{self, Mapping};
use super::uffd::{Fault, FloorUffd, Resolve, Resolved};
use super::BenchError;

/// How long the pager waits for its client's next control message.
const IDLE_LIMIT: Duration = Duration::from_secs(300);

/// The client's view, as the pager sees it.
struct Space {
    uffd: FloorUffd,
    resolve: Resolve,
    base: u64,
    len: u64,
    chunk: u64,
    object: OwnedFd,
    vram: Mapping,
    /// Held while a batch of faults is read and resolved, and while `Arm`
    /// empties and refills the object: a fault read in one rep is never
    /// resolved in the next (it would map a chunk before that rep's
    /// readers start, or meet half-filled page cache).
    batch: Mutex<()>,
}

#[derive(Default)]
struct Counters {
    faults: AtomicU64,
    minor_faults: AtomicU64,
    chunks_mapped: AtomicU64,
    already_there: AtomicU64,
    errors: AtomicU64,
}

/// Runs the pager on the control socket inherited as `control_fd`.
pub fn main(control_fd: i32) -> i32 {
    // SAFETY: the bench started this process with the socket at `control_fd`.
    let link = SeqPacket::from_fd(unsafe { inherited_fd(control_fd) });
    match serve(&link) {
        Ok(()) => 0,
        Err(e) => {
            let _ = floor_wire::send(
                &link,
                &Answer::Failed {
                    what: e.to_string(),
                },
                vec![],
            );
            eprintln!("svm bench-helper floor-pager: {e}");
            1
        }
    }
}

fn serve(link: &SeqPacket) -> Result<(), BenchError> {
    let space = setup(link)?;
    floor_wire::send(link, &Answer::Ready, vec![])?;
    let stop = AtomicBool::new(false);
    let counters = Counters::default();
    std::thread::scope(|s| {
        let server = s.spawn(|| serve_faults(&space, &stop, &counters));
        let result = control_loop(link, &space, &counters);
        stop.store(true, Ordering::Release);
        let _ = server.join();
        result
    })
}

/// Takes the client's descriptors and registers its view.
fn setup(link: &SeqPacket) -> Result<Space, BenchError> {
    let (msg, rx) = floor_wire::recv::<Control>(link, ANSWER_TIMEOUT)?;
    let Control::Setup {
        resolve,
        base,
        len,
        chunk,
    } = msg
    else {
        return Err(BenchError::Helper(format!("expected Setup, got {msg:?}")));
    };
    let end = base.checked_add(len);
    if len == 0 || chunk == 0 || len % 4096 != 0 || chunk % 4096 != 0 || end.is_none() {
        return Err(BenchError::Helper(format!(
            "bad view: base {base:#x}, {len} bytes, chunk {chunk}"
        )));
    }
    let [uffd, object, vram]: [OwnedFd; 3] = rx
        .handles
        .try_into()
        .map_err(|_| BenchError::Helper("Setup needs three descriptors".into()))?;
    let uffd = FloorUffd::new(uffd);
    uffd.register(resolve, base, len)
        .map_err(|e| BenchError::Host(format!("userfaultfd {resolve:?} registration: {e}")))?;
    let vram = Mapping::shared(&vram, len as usize, false)?;
    // Fault the source in now: the floor measures the client's faults.
    // SAFETY: read-only use of our own mapping.
    let sum = unsafe { vram.bytes() }
        .iter()
        .step_by(4096)
        .fold(0u8, |a, b| a.wrapping_add(*b));
    std::hint::black_box(sum);
    Ok(Space {
        uffd,
        resolve,
        base,
        len,
        chunk,
        object,
        vram,
        batch: Mutex::new(()),
    })
}

fn control_loop(link: &SeqPacket, space: &Space, counters: &Counters) -> Result<(), BenchError> {
    loop {
        let (msg, _) = floor_wire::recv::<Control>(link, IDLE_LIMIT)?;
        match msg {
            Control::Arm => {
                let _batch = space.batch.lock().unwrap_or_else(|e| e.into_inner());
                // The migration to VRAM: every page leaves the object and
                // every mapping of it.
                memory::punch(&space.object, space.len as usize)?;
                let t = Instant::now();
                if space.resolve == Resolve::Minor {
                    // SAFETY: read-only use of our own mapping.
                    memory::fill(&space.object, unsafe { space.vram.bytes() })?;
                }
                let fill_us = t.elapsed().as_secs_f64() * 1e6;
                floor_wire::send(link, &Answer::Armed { fill_us }, vec![])?;
            }
            Control::Stop => {
                let stats = PagerStats {
                    faults: counters.faults.load(Ordering::Relaxed),
                    minor_faults: counters.minor_faults.load(Ordering::Relaxed),
                    chunks_mapped: counters.chunks_mapped.load(Ordering::Relaxed),
                    already_there: counters.already_there.load(Ordering::Relaxed),
                    errors: counters.errors.load(Ordering::Relaxed),
                };
                return floor_wire::send(link, &Answer::Stopped(stats), vec![]);
            }
            Control::Setup { .. } => {
                return Err(BenchError::Helper("a second Setup".into()));
            }
        }
    }
}

fn serve_faults(space: &Space, stop: &AtomicBool, counters: &Counters) {
    let mut faults = Vec::with_capacity(64);
    while !stop.load(Ordering::Acquire) {
        if !space.uffd.wait_readable(Duration::from_millis(10)) {
            continue;
        }
        faults.clear();
        let _batch = space.batch.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = space.uffd.read_faults(&mut faults) {
            log::error!("floor pager: reading faults: {e}");
            counters.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        for f in &faults {
            counters.faults.fetch_add(1, Ordering::Relaxed);
            if f.minor {
                counters.minor_faults.fetch_add(1, Ordering::Relaxed);
            }
            match resolve(space, f) {
                Ok(Resolved::Mapped) => {
                    counters.chunks_mapped.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Resolved::AlreadyThere) => {
                    counters.already_there.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    // Not woken: the client's deadline ends the run, and
                    // the error makes it bad.
                    log::error!("floor pager: fault at {:#x}: {e}", f.address);
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Maps the chunk around one fault (or wakes the faulter when an earlier
/// fault mapped it).
fn resolve(space: &Space, f: &Fault) -> Result<Resolved, String> {
    let off = f
        .address
        .checked_sub(space.base)
        .filter(|o| *o < space.len)
        .ok_or_else(|| format!("fault outside the view ({:#x})", f.address))?;
    let chunk = off / space.chunk * space.chunk;
    let end = (chunk + space.chunk).min(space.len);
    let r = map_range(space, chunk, end)?;
    if r == Resolved::AlreadyThere {
        // The chunk's first page was there. The faulting page is too, as a
        // rule; if it is not, map from it on rather than wake it to fault
        // again.
        if map_range(space, off & !4095, end)? == Resolved::Mapped {
            return Ok(Resolved::Mapped);
        }
        space
            .uffd
            .wake(f.address & !4095, 4096)
            .map_err(|e| format!("wake: {e}"))?;
    }
    Ok(r)
}

/// One resolving call over the object bytes `[from, to)` of the view.
fn map_range(space: &Space, from: u64, to: u64) -> Result<Resolved, String> {
    let (dst, len) = (space.base + from, to - from);
    match space.resolve {
        // SAFETY: `to <= space.len`, the size of the VRAM mapping.
        Resolve::Copy => unsafe {
            space
                .uffd
                .copy(dst, (space.vram.addr() + from as usize) as *const u8, len)
        },
        Resolve::Minor => space.uffd.continue_range(dst, len),
    }
    .map_err(|e| e.to_string())
}
