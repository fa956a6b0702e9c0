//! Page ranges of pager objects: the memory the heap and the program's
//! anonymous mappings are carved from.
//!
//! A **region** is one pager object of [`REGION_BYTES`] (more for a larger
//! request) mapped once, 2 MiB aligned, and attached as one view with its
//! own userfaultfd. Its pages are handed out and taken back as ranges
//! (first fit, coalescing within a region). A range taken back is
//! discarded (`Pager::Discard`): its data goes wherever it is, VRAM
//! included, without a copy back, and the range is zero when next handed
//! out. Every mirror VM binds every region at its CPU address.
//!
//! Locking: everything here is reached under the heap lock
//! (`crate::heap::HEAP`), except [`owns`], which reads the region table
//! lock-free: a region's span is published (start, then end with release)
//! before any of its pages is handed out and is never removed.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};

use ipc_protocol::interfaces::gpu::{
    BindView, Protect, MAX_PROTECTED_RANGES, PROT_READ, PROT_WRITE,
};
use ipc_protocol::interfaces::pager::{AttachView, CreateObject, Discard};
use ipc_protocol::types::{ObjectId, ViewId, VmId};
use session::RangeMap;

use crate::conn::conn;
use crate::error::SvmError;
use crate::sys;

pub const PAGE: u64 = 4096;
/// 2 MiB: regions are aligned to it so the GPU can map whole chunks.
pub const CHUNK: u64 = 2 << 20;
/// The size of the first region; each next one doubles, up to 2 GiB,
/// unless one allocation needs more (the pager's default budget is 8 GiB
/// of objects and 16 address spaces per client).
pub const REGION_BYTES: u64 = 256 << 20;
pub const MAX_REGIONS: usize = 16;

struct Span {
    start: AtomicU64,
    end: AtomicU64,
}

static SPANS: [Span; MAX_REGIONS] = [const {
    Span {
        start: AtomicU64::new(0),
        end: AtomicU64::new(0),
    }
}; MAX_REGIONS];

/// Whether `addr` lies in a region (pager memory of this process).
pub fn owns(addr: u64) -> bool {
    SPANS.iter().any(|s| {
        let end = s.end.load(Ordering::Acquire);
        end != 0 && addr < end && addr >= s.start.load(Ordering::Relaxed)
    })
}

pub struct Region {
    pub object: ObjectId,
    pub view: ViewId,
    pub addr: u64,
    pub len: u64,
    _memfd: OwnedFd,
}

#[derive(Debug, Clone, Copy)]
struct Free {
    len: u64,
    /// Every page reads as zero (fresh, or discarded).
    zeroed: bool,
}

/// The regions, their free ranges and the VMs that mirror them.
pub struct Pages {
    regions: Vec<Region>,
    free: BTreeMap<u64, Free>,
    pub mirrors: Vec<VmId>,
    /// The GPU's access to pager memory where it is not read-write (the
    /// `Gpu::Protect` bits), so a mirror made later starts with it.
    protected: RangeMap<u32>,
    /// Bytes handed out now, and at most so far.
    pub in_use: u64,
    pub peak: u64,
    /// Ranges discarded in the pager.
    pub discards: u64,
    /// After a refused region: allocations that go elsewhere before the
    /// next try (a program past its budget does not ask on every malloc).
    backoff: u32,
}

/// Allocations served elsewhere after a region was refused.
const BACKOFF: u32 = 4096;

/// Rounds `len` up to whole pages; `None` on overflow or zero.
pub fn page_len(len: u64) -> Option<u64> {
    (len != 0).then_some(())?;
    len.checked_next_multiple_of(PAGE)
}

impl Default for Pages {
    fn default() -> Self {
        Self::new()
    }
}

impl Pages {
    pub const fn new() -> Self {
        Self {
            regions: Vec::new(),
            free: BTreeMap::new(),
            mirrors: Vec::new(),
            protected: RangeMap::new(PROT_READ | PROT_WRITE, MAX_PROTECTED_RANGES),
            in_use: 0,
            peak: 0,
            discards: 0,
            backoff: 0,
        }
    }

    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    fn region_of(&self, addr: u64) -> Option<&Region> {
        self.regions
            .iter()
            .find(|r| addr >= r.addr && addr - r.addr < r.len)
    }

    /// `len` bytes (whole pages) at an `align`-aligned address (a power of
    /// two, at least a page); returns the address and whether the range
    /// is known to read as zeros.
    pub fn alloc(&mut self, len: u64, align: u64) -> Result<(u64, bool), SvmError> {
        if let Some(got) = self.take(len, align) {
            return Ok(got);
        }
        if self.backoff > 0 {
            self.backoff -= 1;
            return Err(SvmError::OverBudget);
        }
        let want = len.checked_add(align).ok_or(SvmError::NoMemory)?;
        self.new_region(want).inspect_err(|e| {
            crate::log_error(b"a new region of pager memory", *e);
            self.backoff = BACKOFF;
        })?;
        self.take(len, align).ok_or(SvmError::NoMemory)
    }

    fn take(&mut self, len: u64, align: u64) -> Option<(u64, bool)> {
        let (start, f, at) = self.free.iter().find_map(|(&start, f)| {
            let at = start.checked_next_multiple_of(align)?;
            let end = at.checked_add(len)?;
            (end <= start + f.len).then_some((start, *f, at))
        })?;
        self.free.remove(&start);
        self.handed_out(len);
        if at > start {
            self.free.insert(
                start,
                Free {
                    len: at - start,
                    zeroed: f.zeroed,
                },
            );
        }
        let tail = start + f.len - (at + len);
        if tail > 0 {
            self.free.insert(
                at + len,
                Free {
                    len: tail,
                    zeroed: f.zeroed,
                },
            );
        }
        Some((at, f.zeroed))
    }

    /// Takes `[addr, addr + len)` if it is free (growing a range in place).
    pub fn take_at(&mut self, addr: u64, len: u64) -> Option<bool> {
        let (&start, &f) = self.free.range(..=addr).next_back()?;
        let end = addr.checked_add(len)?;
        if end > start + f.len || self.region_of(addr)?.addr != self.region_of(start)?.addr {
            return None;
        }
        self.free.remove(&start);
        self.handed_out(len);
        if addr > start {
            self.free.insert(
                start,
                Free {
                    len: addr - start,
                    zeroed: f.zeroed,
                },
            );
        }
        if start + f.len > end {
            self.free.insert(
                end,
                Free {
                    len: start + f.len - end,
                    zeroed: f.zeroed,
                },
            );
        }
        Some(f.zeroed)
    }

    /// Takes back `[addr, addr + len)` (whole pages, handed out before):
    /// its data is discarded first.
    pub fn free(&mut self, addr: u64, len: u64) {
        self.in_use = self.in_use.saturating_sub(len);
        let zeroed = match self.discard(addr, len) {
            Ok(()) => {
                self.discards += 1;
                true
            }
            Err(e) => {
                crate::log_error(b"discard failed; the range will be cleared when reused", e);
                false
            }
        };
        self.insert(addr, Free { len, zeroed });
    }

    /// Every range handed out now (the complement of the free ranges).
    pub fn in_use(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for r in &self.regions {
            let end = r.addr + r.len;
            let mut at = r.addr;
            for (&start, f) in self.free.range(r.addr..end) {
                if start > at {
                    out.push((at, start - at));
                }
                at = start + f.len;
            }
            if at < end {
                out.push((at, end - at));
            }
        }
        out
    }

    fn handed_out(&mut self, len: u64) {
        self.in_use = self.in_use.saturating_add(len);
        self.peak = self.peak.max(self.in_use);
    }

    /// Inserts a free range, merging it with free neighbours of its region.
    fn insert(&mut self, mut addr: u64, mut f: Free) {
        let Some(base) = self.region_of(addr).map(|r| r.addr) else {
            return;
        };
        let same = |a: u64, this: &Self| this.region_of(a).is_some_and(|r| r.addr == base);
        if let Some((&s, &p)) = self.free.range(..addr).next_back() {
            if s + p.len == addr && same(s, self) {
                self.free.remove(&s);
                addr = s;
                f = Free {
                    len: p.len + f.len,
                    zeroed: p.zeroed && f.zeroed,
                };
            }
        }
        if let Some(&n) = self.free.get(&(addr + f.len)) {
            if same(addr + f.len, self) {
                self.free.remove(&(addr + f.len));
                f = Free {
                    len: f.len + n.len,
                    zeroed: f.zeroed && n.zeroed,
                };
            }
        }
        self.free.insert(addr, f);
    }

    /// Drops the data of `[addr, addr + len)` (whole pages of one region)
    /// in the pager: the next touch reads zeros, nothing is copied back.
    pub fn discard(&self, addr: u64, len: u64) -> Result<(), SvmError> {
        let r = self.region_of(addr).ok_or(SvmError::Invalid)?;
        let end = addr.checked_add(len).ok_or(SvmError::Invalid)?;
        if len == 0
            || !addr.is_multiple_of(PAGE)
            || !len.is_multiple_of(PAGE)
            || end > r.addr + r.len
        {
            return Err(SvmError::Invalid);
        }
        conn()?.pager.call(Discard {
            object: r.object,
            first_page: (addr - r.addr) / PAGE,
            pages: len / PAGE,
        })?;
        Ok(())
    }

    /// The GPU follows an `mprotect` of pager memory: `Gpu::Protect` in
    /// every mirror VM (where regions are bound at their CPU addresses).
    /// `prot` is the C call's (`PROT_EXEC` has no GPU meaning).
    pub fn protect(&mut self, addr: u64, len: u64, prot: i32) -> Result<(), SvmError> {
        let mut gpu = 0;
        if prot & libc::PROT_READ != 0 {
            gpu |= PROT_READ;
        }
        if prot & libc::PROT_WRITE != 0 {
            gpu |= PROT_READ | PROT_WRITE;
        }
        let start = addr & !(PAGE - 1);
        let end = addr.checked_add(len).ok_or(SvmError::Invalid)?;
        let end = end
            .checked_next_multiple_of(PAGE)
            .ok_or(SvmError::Invalid)?;
        if end == start || (self.protected.is_empty() && gpu == PROT_READ | PROT_WRITE) {
            return Ok(());
        }
        self.protected
            .set(start, end, gpu)
            .map_err(|_| SvmError::OverBudget)?;
        for &vm in &self.mirrors {
            conn()?.gpu.call(Protect {
                vm,
                gpu_addr: start,
                len: end - start,
                prot: gpu,
            })?;
        }
        Ok(())
    }

    /// A new mirror `vm` takes the protections made so far.
    pub fn protect_new_mirror(&self, vm: VmId) -> Result<(), SvmError> {
        for (start, end, prot) in self.protected.iter() {
            conn()?.gpu.call(Protect {
                vm,
                gpu_addr: start,
                len: end - start,
                prot,
            })?;
        }
        Ok(())
    }

    /// A new region of at least `min` bytes, bound into every mirror VM.
    fn new_region(&mut self, min: u64) -> Result<(), SvmError> {
        let slot = SPANS
            .iter()
            .position(|s| s.end.load(Ordering::Relaxed) == 0)
            .ok_or(SvmError::OverBudget)?;
        let step = REGION_BYTES << self.regions.len().min(3);
        let len = min.max(step);
        let len = len
            .checked_next_multiple_of(CHUNK)
            .ok_or(SvmError::NoMemory)?;
        let region = map_region(len)?;
        for vm in &self.mirrors {
            let bind = BindView {
                vm: *vm,
                view: region.view,
                gpu_addr: region.addr,
                flags: 0,
            };
            if let Err(e) = conn()?.gpu.call(bind) {
                crate::log_error(b"binding a new region into a mirror VM", e.into());
            }
        }
        SPANS[slot].start.store(region.addr, Ordering::Relaxed);
        SPANS[slot].end.store(region.addr + len, Ordering::Release);
        self.free.insert(region.addr, Free { len, zeroed: true });
        self.regions.push(region);
        Ok(())
    }
}

/// Creates a pager object of `len` bytes, maps it 2 MiB aligned and
/// attaches it as a view with a userfaultfd of its own.
fn map_region(len: u64) -> Result<Region, SvmError> {
    let c = conn()?;
    let (created, mut fds) = c
        .pager
        .call_with_handles(CreateObject { size_bytes: len }, vec![])?;
    let memfd = fds.pop().ok_or(SvmError::Internal)?;
    let addr = map_aligned(&memfd, len)?;
    let uffd = new_uffd().inspect_err(|_| {
        let _ = sys::munmap(addr as usize, len as usize);
    })?;
    let attach = AttachView {
        object: created.object,
        addr,
        object_first_page: 0,
        pages: len / PAGE,
    };
    match c.pager.call_with_handles(attach, vec![uffd]) {
        Ok((a, _)) => Ok(Region {
            object: created.object,
            view: a.view,
            addr,
            len,
            _memfd: memfd,
        }),
        Err(e) => {
            let _ = sys::munmap(addr as usize, len as usize);
            let _ = c
                .pager
                .call(ipc_protocol::interfaces::pager::DestroyObject {
                    object: created.object,
                });
            Err(e.into())
        }
    }
}

/// Maps `len` bytes of `memfd` shared, at a [`CHUNK`]-aligned address.
fn map_aligned(memfd: &OwnedFd, len: u64) -> Result<u64, SvmError> {
    use std::os::fd::AsRawFd;
    let len = usize::try_from(len).map_err(|_| SvmError::NoMemory)?;
    let align = CHUNK as usize;
    let reserve = len.checked_add(align).ok_or(SvmError::NoMemory)?;
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    let area =
        sys::mmap(0, reserve, libc::PROT_NONE, flags, -1, 0).map_err(|_| SvmError::NoMemory)?;
    let at = area.next_multiple_of(align);
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let fixed = libc::MAP_SHARED | libc::MAP_FIXED;
    let mapped = sys::mmap(at, len, rw, fixed, memfd.as_raw_fd(), 0);
    if mapped.is_err() {
        let _ = sys::munmap(area, reserve);
        return Err(SvmError::NoMemory);
    }
    let head = at - area;
    if head > 0 {
        let _ = sys::munmap(area, head);
    }
    let tail = reserve - head - len;
    if tail > 0 {
        let _ = sys::munmap(at + len, tail);
    }
    Ok(at as u64)
}

/// A userfaultfd of this process for the pager (non-blocking, DESIGN.md 10).
fn new_uffd() -> Result<OwnedFd, SvmError> {
    use rustix::mm::UserfaultfdFlags;
    // SAFETY: creating a descriptor; the pager drives its ioctls.
    unsafe { rustix::mm::userfaultfd(UserfaultfdFlags::CLOEXEC | UserfaultfdFlags::NONBLOCK) }
        .map_err(|_| SvmError::NotSupported)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages over one made-up region of `len` bytes at `addr` (never
    /// touched: only the range bookkeeping runs; without a connection
    /// a range given back is kept as not known to be zero).
    fn pages(addr: u64, len: u64) -> Pages {
        let memfd = rustix::fs::memfd_create("test", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let mut p = Pages::new();
        p.regions.push(Region {
            object: ObjectId::raw(1),
            view: ViewId::raw(1),
            addr,
            len,
            _memfd: memfd,
        });
        p.free.insert(addr, Free { len, zeroed: true });
        p
    }

    const BASE: u64 = 0x7000_0000_0000;

    #[test]
    fn ranges_are_first_fit_aligned_and_coalesce_when_given_back() {
        let mut p = pages(BASE, 64 * PAGE);
        let (a, z) = p.take(4 * PAGE, PAGE).unwrap();
        assert_eq!((a, z), (BASE, true));
        let (b, _) = p.take(PAGE, 16 * PAGE).unwrap();
        assert_eq!(b, BASE + 16 * PAGE, "aligned past the first range");
        assert_eq!(p.in_use(), vec![(BASE, 4 * PAGE), (BASE + 16 * PAGE, PAGE)]);
        let (c, _) = p.take(2 * PAGE, PAGE).unwrap();
        assert_eq!(c, BASE + 4 * PAGE, "the hole before the aligned one");
        p.free(a, 4 * PAGE);
        p.free(c, 2 * PAGE);
        p.free(b, PAGE);
        assert_eq!(p.in_use(), vec![]);
        assert_eq!(p.free.len(), 1, "all one range again: {:?}", p.free);
        assert!(p.take(65 * PAGE, PAGE).is_none(), "larger than the region");
        assert_eq!(p.in_use, 0);
        assert_eq!(p.peak, 7 * PAGE);
    }

    #[test]
    fn a_range_grows_in_place_only_into_free_pages_of_its_region() {
        let mut p = pages(BASE, 16 * PAGE);
        let (a, _) = p.take(4 * PAGE, PAGE).unwrap();
        assert!(p.take_at(a + 4 * PAGE, 4 * PAGE).is_some());
        let (b, _) = p.take(PAGE, PAGE).unwrap();
        assert_eq!(b, a + 8 * PAGE);
        assert!(p.take_at(a + 8 * PAGE, PAGE).is_none(), "taken");
        assert!(
            p.take_at(a + 9 * PAGE, 8 * PAGE).is_none(),
            "past the region"
        );
        assert!(p.take_at(a + 9 * PAGE, 7 * PAGE).is_some());
        assert_eq!(p.in_use(), vec![(BASE, 16 * PAGE)]);
    }

    #[test]
    fn page_len_rounds_up_and_refuses_zero_and_overflow() {
        assert_eq!(page_len(1), Some(PAGE));
        assert_eq!(page_len(PAGE), Some(PAGE));
        assert_eq!(page_len(0), None);
        assert_eq!(page_len(u64::MAX), None);
    }
}
