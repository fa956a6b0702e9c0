//! `Gpu::Prefetch`: a VM range moved to VRAM ahead of use (xe's
//! `VM_BIND_OP_PREFETCH`, issue 16 item 1).
//!
//! Each 2 MiB chunk of the range goes the way of a GPU fault on every page
//! of it in the range (`Inner::resolve` with all of them as the batch, so
//! `density` sizes the migration to the chunk): the same rules hold (rule
//! 5: VRAM is allocated before any page lock; rule 1: pages another
//! migration holds are skipped, never waited for; rule 4: what it got is
//! finalized page by page). A chunk is resolved again while each round
//! brings more of it in (a short VRAM may give 64 KiB or 4 KiB at a time).
//! A round that brings nothing is tried again after [`RETRY_WAIT`], at
//! most [`PREFETCH_RETRIES`] times in the whole call: pages a CPU fault
//! has just brought in stay locked for a moment after the faulting thread
//! runs on, and a prefetch right behind it would otherwise leave their
//! chunk where it is. Past that budget a chunk that makes no progress is
//! left: a prefetch never spins.
//! Pages no binding covers are not moved. The reply counts the range's
//! pages in VRAM at the end: a hint, as in xe, never a promise that they
//! stay (eviction may take them the next moment).
//!
//! Chunks are moved by up to [`PREFETCH_LANES`] lanes at once, each taking
//! the next chunk not yet taken: one chunk's copy overlaps the next one's
//! collect and the last one's finalize, the round trips a chunk after
//! chunk prefetch would wait on. Chunks are disjoint, so the lanes share no
//! page and each chunk keeps the rules above; they are the runtime's
//! threads ([`Lanes`]), so the core starts none itself.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use ipc_protocol::interfaces::gpu::GpuError;

use crate::platform::Platform;
use crate::server::{Inner, PAGE, USER_VA_END};

/// The largest range one call moves (the caller's own VM, but up to
/// [`PREFETCH_LANES`] server threads serve the whole call).
pub const MAX_PREFETCH: u64 = 1 << 30;
const CHUNK: u64 = 2 << 20;
/// Chunks one prefetch moves at once, at most: the threads one call may
/// hold (a client's calls are served by a bounded pool, so its prefetches
/// hold at most this many times that).
pub const PREFETCH_LANES: usize = 4;
/// Rounds that brought nothing a whole prefetch call tries again.
pub const PREFETCH_RETRIES: u32 = 20;
/// How long such a round waits before it is tried again.
pub const RETRY_WAIT: Duration = Duration::from_millis(1);
/// Retries of one chunk moved ahead of faults (`fault_ahead.rs`): a
/// guess, so it gives up sooner.
const AHEAD_RETRIES: u32 = 2;
/// Runs `work` on up to `n` lanes at once (the runtime's threads, the
/// caller's among them) and returns once every lane has returned. Each
/// lane runs `work` to its end; fewer lanes than `n` only slow it down.
pub type Lanes<'a> = &'a dyn Fn(usize, &(dyn Fn() + Sync));

impl<P: Platform> Inner<P> {
    /// Serves `Gpu::Prefetch` for `owner` on `lanes`: returns (pages in
    /// VRAM, pages).
    pub fn prefetch(
        &self,
        owner: u64,
        vm: u32,
        addr: u64,
        len: u64,
        lanes: Lanes<'_>,
    ) -> Result<(u64, u64), GpuError> {
        let end = addr.checked_add(len).ok_or(GpuError::BadRange)?;
        let aligned = addr.is_multiple_of(PAGE) && len.is_multiple_of(PAGE);
        if len == 0 || len > MAX_PREFETCH || !aligned || end > USER_VA_END {
            return Err(GpuError::BadRange);
        }
        let asid = self.asid_of(owner, vm).ok_or(GpuError::NoSuchVm)?;
        let chunks: Vec<(u64, u64)> = (addr & !(CHUNK - 1)..end)
            .step_by(CHUNK as usize)
            .map(|chunk| (chunk.max(addr), (chunk + CHUNK).min(end)))
            .collect();
        let (next, in_vram) = (AtomicUsize::new(0), AtomicU64::new(0));
        let retries = AtomicU32::new(PREFETCH_RETRIES);
        let lane = || {
            while let Some(&(from, to)) = chunks.get(next.fetch_add(1, Ordering::Relaxed)) {
                let n = self.prefetch_chunk(asid, from, to, &retries);
                in_vram.fetch_add(n, Ordering::Relaxed);
            }
        };
        lanes(PREFETCH_LANES.min(chunks.len()), &lane);
        Ok((in_vram.into_inner(), len / PAGE))
    }

    /// Moves the chunk at `va` of `asid` to VRAM ahead of the VM's faults
    /// (`fault_ahead.rs`), as a prefetch of the whole chunk would.
    pub fn fault_ahead(&self, asid: u32, va: u64) {
        let from = va & !(CHUNK - 1);
        match from.checked_add(CHUNK) {
            Some(to) if to <= USER_VA_END => {
                self.prefetch_chunk(asid, from, to, &AtomicU32::new(AHEAD_RETRIES));
            }
            _ => {}
        }
    }

    /// Resolves `[from, to)` (inside one chunk) while it makes progress,
    /// a round without progress tried again while `retries` lasts;
    /// returns its pages in VRAM.
    fn prefetch_chunk(&self, asid: u32, from: u64, to: u64, retries: &AtomicU32) -> u64 {
        let (mut missing, mut bound) = self.not_in_vram(asid, from, to);
        while let Some((&first, rest)) = missing.split_first() {
            if !self.resolve(asid, first, rest) {
                break;
            }
            let (left, now_bound) = self.not_in_vram(asid, from, to);
            let progress = left.len() < missing.len();
            (missing, bound) = (left, now_bound);
            if !progress && !take_retry(retries) {
                break;
            }
        }
        bound - missing.len() as u64
    }

    /// The GPU addresses in `[from, to)` of `asid` that a binding covers
    /// and the VM may access, whose page is not in VRAM, and how many
    /// pages such bindings cover. A page the VM may not access at all
    /// (`Gpu::Protect` to none) is not moved: no access would use it, as
    /// a fault there is refused without a migration.
    fn not_in_vram(&self, asid: u32, from: u64, to: u64) -> (Vec<u64>, u64) {
        let st = self.lock();
        let Some(vm) = st.vms.get(&asid) else {
            return (Vec::new(), 0);
        };
        let mut bound = 0;
        let missing = (from..to)
            .step_by(PAGE as usize)
            .filter(|&va| {
                let Some(b) = vm.bindings.iter().find(|b| b.contains(va)) else {
                    return false;
                };
                let prot = vm.protections.at(va) & b.access_mask();
                if !crate::protect::permits(prot, false) {
                    return false;
                }
                bound += 1;
                let page = b.first_page + (va - b.gpu_addr) / PAGE;
                st.objects
                    .get(&b.object)
                    .is_none_or(|o| o.frame(page).is_none())
            })
            .collect();
        (missing, bound)
    }
}

/// Takes one retry from `retries` and waits [`RETRY_WAIT`]; `false` when
/// none is left.
fn take_retry(retries: &AtomicU32) -> bool {
    let took = retries
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok();
    if took {
        std::thread::sleep(RETRY_WAIT);
    }
    took
}
