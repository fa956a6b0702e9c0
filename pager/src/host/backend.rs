//! The core's side effects on the Linux host (DESIGN.md 8).
//!
//! - A page becomes visible to a view only complete: data comes in with
//!   `UFFDIO_COPY` from a buffer in the pager's own memory (the staging
//!   buffer the GPU server copied VRAM into, or a zero buffer), which
//!   installs it in the memfd, maps it in the faulting view and wakes the
//!   threads waiting on it, in one call.
//! - To VRAM: collect write-protects the pages in every view (writers
//!   block in the pager, readers go on); finalize punches them out of the
//!   memfd (zapping every view) and clears the protection, so blocked
//!   writers retry and take a missing fault on a DEVICE page.

use ipc_protocol::interfaces::gpu_notify::{Invalidate, MigrateToRam};
use ipc_protocol::types::{ObjectId, PageCount, PageMask, Seq};
use rustix::fs::{fallocate, FallocateFlags};

use super::objects::{Object, View};
use super::Inner;
use crate::migrate::{Backend, BackendError, Chunk};
use crate::state::Residency;
use crate::sync::Ordering;

const PAGE: u64 = 4096;

/// Runs of consecutive set bits of `mask` within `chunk`: (first index, length).
pub fn runs(chunk: Chunk, mask: &PageMask) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < chunk.count {
        if mask.get(i) {
            let start = i;
            while i < chunk.count && mask.get(i) {
                i += 1;
            }
            out.push((start, i - start));
        } else {
            i += 1;
        }
    }
    out
}

pub struct HostBackend<'a> {
    pub pager: &'a Inner,
    pub object: &'a Object,
    /// The view that faulted (where `UFFDIO_COPY` installs pages).
    pub view: Option<&'a View>,
}

fn host(e: rustix::io::Errno) -> BackendError {
    BackendError::Host(e.raw_os_error())
}

impl HostBackend<'_> {
    /// The pages of `mask` the faulting view maps (every page when there is
    /// no view at all: then the memfd itself is the target).
    fn in_view(&self, chunk: Chunk, mask: &PageMask) -> PageMask {
        let views = match self.view {
            Some(_) => Vec::new(),
            None => self.object.views_snapshot(),
        };
        if self.view.is_none() && views.is_empty() {
            return *mask;
        }
        let mut m = PageMask::EMPTY;
        for (i, p) in chunk.pages() {
            let reachable = match self.view {
                Some(v) => v.address_of(p).is_some(),
                None => views.iter().any(|v| v.address_of(p).is_some()),
            };
            if mask.get(i) && reachable {
                m.set(i);
            }
        }
        m
    }

    /// Installs the pages of `mask` from `src` (page `i` at `src + i * 4K`)
    /// into the faulting view; returns the pages installed.
    fn install(&self, chunk: Chunk, mask: &PageMask, src: *const u8) -> Result<PageMask, BackendError> {
        let Some(view) = self.view else {
            return self.install_without_view(chunk, mask, src);
        };
        let mut done = PageMask::EMPTY;
        for (start, len) in runs(chunk, mask) {
            let dst = view.address_of(chunk.first + start).ok_or(BackendError::Gpu)?;
            // SAFETY: `src` covers the chunk (a staging slot or the zero buffer).
            let copied = unsafe { view.uffd.copy(dst, src.add(start * PAGE as usize), len as u64 * PAGE) }.map_err(host)?;
            for i in start..start + (copied / PAGE) as usize {
                done.set(i);
            }
            if copied < len as u64 * PAGE {
                log::error!("pager: UFFDIO_COPY stopped at {} of {} bytes at {dst:#x}", copied, len as u64 * PAGE);
            }
        }
        Ok(done)
    }

    /// Installs pages when no view faulted (eviction): through any view of
    /// the object with `UFFDIO_COPY`, so each page appears complete; or, when
    /// the object has no view, straight into the memfd, which nobody maps.
    fn install_without_view(&self, chunk: Chunk, mask: &PageMask, src: *const u8) -> Result<PageMask, BackendError> {
        let views = self.object.views_snapshot();
        if views.is_empty() {
            for (start, len) in runs(chunk, mask) {
                // SAFETY: `src` covers the chunk (a staging slot).
                let data = unsafe { std::slice::from_raw_parts(src.add(start * PAGE as usize), len * PAGE as usize) };
                rustix::io::pwrite(&self.object.memfd, data, (chunk.first + start) as u64 * PAGE).map_err(host)?;
            }
            return Ok(*mask);
        }
        let mut done = PageMask::EMPTY;
        for view in &views {
            let rest = mask.and_not(&done);
            if rest.is_empty() {
                break;
            }
            let via = HostBackend { pager: self.pager, object: self.object, view: Some(view) };
            let reachable = via.in_view(chunk, &rest);
            let got = via.install(chunk, &reachable, src)?;
            for i in got.iter() {
                done.set(i);
            }
        }
        Ok(done)
    }

    /// Applies `f(view, address, bytes)` to every run of `mask` in every view.
    fn each_view_run(&self, chunk: Chunk, mask: &PageMask, mut f: impl FnMut(&View, u64, u64) -> Result<(), BackendError>) -> Result<(), BackendError> {
        for view in self.object.views_snapshot() {
            for (start, len) in runs(chunk, mask) {
                // Clip the run to the pages this view maps.
                let pages: Vec<usize> = (chunk.first + start..chunk.first + start + len).filter(|p| view.address_of(*p).is_some()).collect();
                if let (Some(first), Some(last)) = (pages.first(), pages.last()) {
                    let addr = view.address_of(*first).ok_or(BackendError::Gpu)?;
                    f(&view, addr, (last - first + 1) as u64 * PAGE)?;
                }
            }
        }
        Ok(())
    }
}

impl Backend for HostBackend<'_> {
    fn migrate_to_ram(&self, chunk: Chunk, pages: &PageMask, _from: &[Residency]) -> Result<PageMask, BackendError> {
        let gpu = self.pager.gpu().ok_or(BackendError::Gpu)?;
        let mask = self.in_view(chunk, pages);
        if mask.is_empty() {
            return Ok(mask);
        }
        let count = PageCount::new(chunk.count as u16).ok_or(BackendError::Gpu)?;
        let object = ObjectId::raw(self.object.id);
        // Rule 8: the GPU unmaps before the pages change; the sequence lets
        // a GPU fault that read the old state refuse to bind.
        let seq = self.object.seq.fetch_add(1, Ordering::AcqRel) + 1;
        if !self.pager.skips_invalidate() {
            gpu.call(Invalidate { object, first_page: chunk.first as u64, count, seq: Seq::raw(seq) }).map_err(|e| {
                log::warn!("pager: invalidate failed: {e}");
                BackendError::Gpu
            })?;
        }
        let slot = self.pager.staging.take();
        let result = gpu.call(MigrateToRam { object, first_page: chunk.first as u64, count, pages: mask, staging_offset: slot.offset() });
        let installed = match result {
            Ok(r) => self.install(chunk, &r.copied.and(&mask), slot.ptr()),
            Err(e) => {
                log::warn!("pager: migrate to RAM failed: {e}");
                Err(BackendError::Gpu)
            }
        };
        self.pager.staging.put(slot);
        installed
    }

    fn zero_fill(&self, chunk: Chunk, pages: &PageMask) -> Result<PageMask, BackendError> {
        let mask = self.in_view(chunk, pages);
        self.install(chunk, &mask, self.pager.zeros.as_ptr())
    }

    fn protect(&self, chunk: Chunk, pages: &PageMask) -> Result<(), BackendError> {
        self.each_view_run(chunk, pages, |v, addr, len| v.uffd.write_protect(addr, len, true).map_err(host))
    }

    fn moved_to_device(&self, chunk: Chunk, pages: &PageMask) -> Result<(), BackendError> {
        for (start, len) in runs(chunk, pages) {
            let off = (chunk.first + start) as u64 * PAGE;
            fallocate(&self.object.memfd, FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE, off, len as u64 * PAGE).map_err(host)?;
        }
        self.unprotect(chunk, pages)
    }

    fn unprotect(&self, chunk: Chunk, pages: &PageMask) -> Result<(), BackendError> {
        self.each_view_run(chunk, pages, |v, addr, len| v.uffd.write_protect(addr, len, false).map_err(host))
    }
}
