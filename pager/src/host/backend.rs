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
//! - Data the GPU copied out of VRAM always lands in the object: through
//!   the faulting view, else another view, else the memfd.

use std::sync::Arc;

use ipc_protocol::interfaces::gpu_notify::{Invalidate, MigrateToRam};
use ipc_protocol::types::{ObjectId, PageCount, PageMask, Seq};
use rustix::fs::{fallocate, FallocateFlags};
use rustix::io::Errno;

use super::objects::{Object, View};
use super::space::Space;
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

fn host(e: Errno) -> BackendError {
    BackendError::Host(e.raw_os_error())
}

/// Gives up a write-protect pass that keeps meeting view changes after
/// this many tries; the collect is abandoned and the GPU fault retried.
const PROTECT_TRIES: u32 = 1000;

impl HostBackend<'_> {
    /// The pages of `mask` the faulting view maps (every page when there is
    /// no faulting view: eviction installs through any view or the memfd).
    fn in_view(&self, chunk: Chunk, mask: &PageMask) -> PageMask {
        let Some(v) = self.view else { return *mask };
        let mut m = PageMask::EMPTY;
        for (i, p) in chunk.pages() {
            if mask.get(i) && v.address_of(p).is_some() {
                m.set(i);
            }
        }
        m
    }

    /// Installs the pages of `mask` from `src` (page `i` at `src + i * 4K`)
    /// through `view`; returns the pages now present there. A page already
    /// present counts as installed; a view whose range is gone installs
    /// nothing more.
    fn install_via(&self, view: &View, chunk: Chunk, mask: &PageMask, src: *const u8) -> PageMask {
        let mut done = PageMask::EMPTY;
        for (start, len) in runs(chunk, mask) {
            let mut i = start;
            while i < start + len {
                let Some(dst) = view.address_of(chunk.first + i) else {
                    break;
                };
                // SAFETY: `src` covers the chunk (a staging slot or the zero buffer).
                let (copied, stop) = unsafe {
                    view.uffd().copy(
                        dst,
                        src.add(i * PAGE as usize),
                        (start + len - i) as u64 * PAGE,
                    )
                };
                let n = (copied / PAGE) as usize;
                for k in i..i + n {
                    done.set(k);
                }
                i += n;
                match stop {
                    None => {}
                    Some(Errno::EXIST) => {
                        // Present already (put there behind the pager's
                        // back, e.g. written through the client's memfd).
                        log::warn!(
                            "pager: object {} page {} was already present in view {}",
                            self.object.id,
                            chunk.first + i,
                            view.id
                        );
                        done.set(i);
                        i += 1;
                    }
                    Some(e) => {
                        if !self.address_space_gone(view, e) {
                            log::debug!(
                                "pager: installing through view {} at {dst:#x}: {e}",
                                view.id
                            );
                        }
                        return done;
                    }
                }
            }
        }
        done
    }

    /// Installs `mask` through the faulting view, then what is left
    /// through the object's other views, then straight into the memfd:
    /// data copied out of VRAM is never dropped. A `pwrite` fills each page
    /// under its page-cache lock, so a reader through some other mapping
    /// sees it whole or not at all.
    fn install(
        &self,
        chunk: Chunk,
        mask: &PageMask,
        src: *const u8,
    ) -> Result<PageMask, BackendError> {
        let mut done = match self.view {
            Some(v) => self.install_via(v, chunk, mask, src),
            None => PageMask::EMPTY,
        };
        for view in self.object.views_snapshot() {
            let rest = mask.and_not(&done);
            if rest.is_empty() {
                return Ok(done);
            }
            if self.view.is_some_and(|v| std::ptr::eq(v, &*view)) {
                continue;
            }
            let mut reachable = PageMask::EMPTY;
            for i in rest.iter() {
                if view.address_of(chunk.first + i).is_some() {
                    reachable.set(i);
                }
            }
            done = done.or(&self.install_via(&view, chunk, &reachable, src));
        }
        for (start, len) in runs(chunk, &mask.and_not(&done)) {
            // SAFETY: `src` covers the chunk.
            let data = unsafe {
                std::slice::from_raw_parts(src.add(start * PAGE as usize), len * PAGE as usize)
            };
            let off = (chunk.first + start) as u64 * PAGE;
            let mut written = 0;
            while written < data.len() {
                written +=
                    rustix::io::pwrite(&self.object.memfd, &data[written..], off + written as u64)
                        .map_err(host)?;
            }
            for i in start..start + len {
                done.set(i);
            }
        }
        Ok(done)
    }

    /// Applies `f(view, address, bytes)` to every run of `mask` in each of
    /// `views`. A view whose process is gone is retired and skipped;
    /// `skip_unmapped` also skips views whose range is no longer mapped
    /// (their unmap event is on its way).
    fn each_view_run(
        &self,
        views: &[Arc<View>],
        chunk: Chunk,
        mask: &PageMask,
        skip_unmapped: bool,
        f: impl Fn(&View, u64, u64) -> Result<(), Errno>,
    ) -> Result<(), Errno> {
        for view in views {
            for (start, len) in runs(chunk, mask) {
                // Clip the run to the pages this view maps.
                let pages: Vec<usize> = (chunk.first + start..chunk.first + start + len)
                    .filter(|p| view.address_of(*p).is_some())
                    .collect();
                let (Some(first), Some(last)) = (pages.first(), pages.last()) else {
                    continue;
                };
                let Some(addr) = view.address_of(*first) else {
                    continue;
                };
                match f(view, addr, (last - first + 1) as u64 * PAGE) {
                    Ok(()) => {}
                    Err(e) if self.address_space_gone(view, e) => break,
                    Err(Errno::NOENT) if skip_unmapped => break,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Whether `e` says the view's process is gone (a forked child that
    /// exited without unmapping: `ESRCH` from the userfaultfd). Its space
    /// is retired on the spot; the pages are still the object's.
    fn address_space_gone(&self, view: &View, e: Errno) -> bool {
        if e != Errno::SRCH {
            return false;
        }
        log::info!(
            "pager: space {} (view {}) belongs to a process that is gone; retiring it",
            view.space.id,
            view.id
        );
        self.pager.space_gone(&view.space);
        true
    }
}

/// The distinct spaces of `views`, by id (the order guards are taken in).
fn spaces_of(views: &[Arc<View>]) -> Vec<Arc<Space>> {
    let mut s: Vec<Arc<Space>> = Vec::new();
    for v in views {
        if !s.iter().any(|x| x.id == v.space.id) {
            s.push(v.space.clone());
        }
    }
    s.sort_by_key(|x| x.id);
    s
}

fn same_views(a: &[Arc<View>], b: &[Arc<View>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y))
}

impl Backend for HostBackend<'_> {
    fn migrate_to_ram(
        &self,
        chunk: Chunk,
        pages: &PageMask,
        _from: &[Residency],
    ) -> Result<PageMask, BackendError> {
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
            gpu.call(Invalidate {
                object,
                first_page: chunk.first as u64,
                count,
                seq: Seq::raw(seq),
            })
            .map_err(|e| {
                log::warn!("pager: invalidate failed: {e}");
                BackendError::Gpu
            })?;
        }
        let slot = self.pager.staging.take();
        let result = gpu.call(MigrateToRam {
            object,
            first_page: chunk.first as u64,
            count,
            pages: mask,
            staging_offset: slot.offset(),
        });
        // What the GPU copied out has left VRAM: it must land in the object.
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
        // Pages not installed stay EMPTY: nothing is lost.
        Ok(match self.view {
            Some(v) => self.install_via(v, chunk, &mask, self.pager.zeros.as_ptr()),
            None => self.install(chunk, &mask, self.pager.zeros.as_ptr())?,
        })
    }

    /// Write-protects `pages` in every view of the object, holding off view
    /// changes of those views' spaces meanwhile (the guard in `space.rs`).
    fn protect(&self, chunk: Chunk, pages: &PageMask) -> Result<(), BackendError> {
        for attempt in 0..PROTECT_TRIES {
            if attempt > 0 {
                std::thread::sleep(std::time::Duration::from_micros(50 << attempt.min(6)));
            }
            let views = self.object.views_snapshot();
            let spaces = spaces_of(&views);
            log::trace!(
                "object {} protect attempt {attempt}: spaces {:?}",
                self.object.id,
                spaces.iter().map(|s| s.id).collect::<Vec<_>>()
            );
            let guards: Vec<_> = spaces.iter().map(|s| s.hold_changes()).collect();
            log::trace!("object {} protect: guards held", self.object.id);
            if !same_views(&views, &self.object.views_snapshot()) {
                continue; // a view change was applied before the guards
            }
            let r = self.each_view_run(&views, chunk, pages, false, |v, addr, len| {
                v.uffd().write_protect(addr, len, true)
            });
            drop(guards);
            log::trace!("object {} protect: {r:?}", self.object.id);
            match r {
                Ok(()) => return Ok(()),
                // A view change is being delivered: its event may add a
                // mapping; start over once it is applied.
                Err(Errno::AGAIN) => continue,
                Err(e) => return Err(host(e)),
            }
        }
        log::warn!(
            "pager: object {} chunk {}: view changes kept a collect from protecting its pages",
            self.object.id,
            chunk.first
        );
        Err(host(Errno::AGAIN))
    }

    fn moved_to_device(&self, chunk: Chunk, pages: &PageMask) -> Result<(), BackendError> {
        for (start, len) in runs(chunk, pages) {
            let off = (chunk.first + start) as u64 * PAGE;
            fallocate(
                &self.object.memfd,
                FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
                off,
                len as u64 * PAGE,
            )
            .map_err(host)?;
        }
        self.unprotect(chunk, pages)
    }

    /// Clears the protection in the views known now. A mapping made since
    /// (a fork's copy, a moved range) keeps it until its first writer
    /// faults; `serve_fault` clears it then, under the page lock.
    fn unprotect(&self, chunk: Chunk, pages: &PageMask) -> Result<(), BackendError> {
        let views = self.object.views_snapshot();
        self.each_view_run(&views, chunk, pages, true, |v, addr, len| loop {
            match v.uffd().write_protect(addr, len, false) {
                Err(Errno::AGAIN) => std::thread::yield_now(),
                r => return r,
            }
        })
        .map_err(host)
    }
}
