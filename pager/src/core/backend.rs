//! The migration protocols' side effects (`crate::migrate::Backend`) over
//! the runtime, for one object (DESIGN.md 8 on the host).
//!
//! - A page becomes visible to a view only complete: data comes in through
//!   [`Runtime::install`] from a complete source (a staging slot the GPU
//!   server copied VRAM into, or zeros), through the faulting view.
//! - Data the GPU copied out of VRAM always lands in the object: through
//!   the faulting view, else another view, else straight into the object.
//! - To VRAM: collect write-protects the pages in every view (writers
//!   block in the pager, readers go on) while holding off view changes of
//!   those views' spaces (the guard in `host/space.rs`); finalize drops the
//!   RAM copies from every view and clears the protection, so blocked
//!   writers retry and fault on a DEVICE page.

use ipc_protocol::types::PageMask;
use session::Handle;

use super::object::Object;
use super::runtime::{Pause, RtError, Runtime, Source};
use super::view::{View, PAGE};
use super::Core;
use crate::migrate::{Backend, BackendError, Chunk, Pushed};
use crate::state::Residency;
use crate::sync::Arc;

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

/// Gives up a write-protect pass that keeps meeting view changes after
/// this many tries; the collect is abandoned and the GPU fault retried.
const PROTECT_TRIES: u32 = 1000;

fn rt_error(e: RtError) -> BackendError {
    match e {
        RtError::Gpu | RtError::Unanswered(_) => BackendError::Gpu,
        RtError::Host(n) => BackendError::Host(n),
        _ => BackendError::Host(0),
    }
}

pub struct CoreBackend<'a, R: Runtime> {
    pub core: &'a Core<R>,
    pub object: &'a Object<R>,
    /// The view that faulted (where pages are installed first).
    pub view: Option<&'a View<R>>,
    /// The GPU whose collect this serves: every other GPU unmaps the pages
    /// it takes (rule 8); its own mappings are its server's business.
    pub collector: Option<u8>,
    /// Whether `Advice::DeviceOnly` refuses CPU faults (off where the
    /// runtime cannot end a refused access: the fault moves the page).
    pub refuse_cpu: bool,
}

impl<'a, R: Runtime> CoreBackend<'a, R> {
    pub fn new(core: &'a Core<R>, object: &'a Object<R>, view: Option<&'a View<R>>) -> Self {
        Self {
            core,
            object,
            view,
            collector: None,
            refuse_cpu: true,
        }
    }

    /// The backend of GPU `gpu`'s collect and finalize.
    pub fn for_gpu(core: &'a Core<R>, object: &'a Object<R>, gpu: u8) -> Self {
        Self {
            collector: Some(gpu),
            ..Self::new(core, object, None)
        }
    }

    /// The pages of `mask` the faulting view maps (every page when there is
    /// no faulting view: eviction installs through any view or the object).
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

    /// Installs the pages of `mask` (all mapped by `view`) from `src`
    /// through `view`; returns the pages now present there. A page already
    /// present counts as installed; a view whose range is gone installs
    /// nothing more.
    fn install_via(&self, view: &View<R>, chunk: Chunk, mask: &PageMask, src: Source) -> PageMask {
        let rt = &self.core.rt;
        let mut done = PageMask::EMPTY;
        for (start, len) in runs(chunk, mask) {
            let mut i = start;
            // A run the kernel refuses whole (it spans mappings an
            // mprotect split: one install may not cross them) goes page by
            // page from where it stopped.
            let mut one_by_one = false;
            while i < start + len {
                let Some(dst) = view.address_of(chunk.first + i) else {
                    break;
                };
                let left = if one_by_one { 1 } else { start + len - i };
                let (n, stop) = rt.install(
                    &view.space.port,
                    &self.object.memory,
                    dst,
                    chunk.first + i,
                    src,
                    i,
                    left,
                );
                for k in i..i + n {
                    done.set(k);
                }
                i += n;
                match stop {
                    None => {}
                    Some(RtError::Exists) => {
                        // Present already (put there behind the pager's
                        // back, e.g. written through the client's memfd).
                        log::warn!(
                            "pager: object {:#x} page {} was already present in view {:#x}",
                            self.object.id.raw(),
                            chunk.first + i,
                            view.id.raw()
                        );
                        done.set(i);
                        i += 1;
                    }
                    Some(RtError::Unmapped) if !one_by_one && n == 0 && left > 1 => {
                        one_by_one = true;
                    }
                    Some(e) => {
                        if !self.address_space_gone(view, e) {
                            log::debug!(
                                "pager: installing through view {:#x} at {dst:#x}: {e:?}",
                                view.id.raw()
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
    /// through the object's other views, then straight into the object:
    /// data copied out of VRAM is never dropped.
    fn install(
        &self,
        chunk: Chunk,
        mask: &PageMask,
        src: Source,
    ) -> Result<PageMask, BackendError> {
        let mut done = match self.view {
            Some(v) => self.install_via(v, chunk, mask, src),
            None => PageMask::EMPTY,
        };
        for view in self.object.views() {
            let rest = mask.and_not(&done);
            if rest.is_empty() {
                return Ok(done);
            }
            if self.view.is_some_and(|v| core::ptr::eq(v, &*view)) {
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
            self.core
                .rt
                .write_pages(&self.object.memory, chunk.first + start, src, start, len)
                .map_err(rt_error)?;
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
        views: &[Arc<View<R>>],
        chunk: Chunk,
        mask: &PageMask,
        skip_unmapped: bool,
        f: impl Fn(&View<R>, u64, u64) -> Result<(), RtError>,
    ) -> Result<(), RtError> {
        for view in views {
            for (start, len) in runs(chunk, mask) {
                // Clip the run to the pages this view maps.
                let first = (chunk.first + start).max(view.first_page);
                let last = (chunk.first + start + len).min(view.first_page + view.pages);
                if first >= last {
                    continue;
                }
                let Some(addr) = view.address_of(first) else {
                    continue;
                };
                match f(view, addr, (last - first) as u64 * PAGE) {
                    Ok(()) => {}
                    Err(e) if self.address_space_gone(view, e) => break,
                    Err(RtError::Unmapped) if skip_unmapped => break,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Whether `e` says the view's process is gone (a forked child that
    /// exited without unmapping). Its space is retired on the spot; the
    /// pages are still the object's.
    fn address_space_gone(&self, view: &View<R>, e: RtError) -> bool {
        if e != RtError::Gone {
            return false;
        }
        log::info!(
            "pager: space {} (view {:#x}) belongs to a process that is gone; retiring it",
            view.space.id,
            view.id.raw()
        );
        self.core.space_gone(&view.space);
        true
    }
}

/// The distinct spaces of `views`, by id (the order guards are taken in).
fn spaces_of<R: Runtime>(views: &[Arc<View<R>>]) -> Vec<Arc<super::view::Space<R>>> {
    let mut s: Vec<Arc<super::view::Space<R>>> = Vec::new();
    for v in views {
        if !s.iter().any(|x| x.id == v.space.id) {
            s.push(v.space.clone());
        }
    }
    s.sort_by_key(|x| x.id);
    s
}

fn same_views<R: Runtime>(a: &[Arc<View<R>>], b: &[Arc<View<R>>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y))
}

/// The pages of `mask` split by the GPU whose VRAM `from` says holds
/// them, in GPU order (pages not in VRAM are in no part).
pub fn by_gpu(mask: &PageMask, from: &[Residency]) -> Vec<(u8, PageMask)> {
    let mut parts: Vec<(u8, PageMask)> = Vec::new();
    for i in mask.iter() {
        let Some(&Residency::Device { gpu, .. }) = from.get(i) else {
            continue;
        };
        match parts.iter_mut().find(|(g, _)| *g == gpu) {
            Some((_, m)) => m.set(i),
            None => {
                let mut m = PageMask::EMPTY;
                m.set(i);
                parts.push((gpu, m));
            }
        }
    }
    parts.sort_by_key(|(g, _)| *g);
    parts
}

impl<R: Runtime> CoreBackend<'_, R> {
    /// Brings `pages` of `chunk`, all in GPU `gpu`'s VRAM, back to RAM.
    fn migrate_from_gpu(
        &self,
        gpu: u8,
        chunk: Chunk,
        mask: &PageMask,
    ) -> Result<PageMask, BackendError> {
        let rt = &self.core.rt;
        let object = self.object.gpu_id(gpu).ok_or(BackendError::Gpu)?;
        if !rt.gpu_attached(gpu) {
            return Err(BackendError::Gpu);
        }
        // Rule 8: the GPU unmaps before the pages change, and so does
        // every other GPU that may map them in place through its peer
        // window (`Advice::AccessInPlace`); the sequence lets a GPU fault
        // that read the old state refuse to bind.
        if !self.core.cfg.skip_invalidate {
            self.invalidate(chunk, |_| true)?;
        }
        let Some(slot) = rt.take_slot() else {
            log::error!("pager: no staging slot left (all quarantined); the pages stay in VRAM");
            return Err(BackendError::Gpu);
        };
        let copied = match rt.migrate_to_ram(gpu, object, chunk.first, chunk.count, mask, slot) {
            Ok(copied) => copied.and(mask),
            Err(e) => {
                log::warn!("pager: migrate to RAM from GPU {gpu} failed: {e:?}; the pages stay");
                // A copy that went unanswered may still land in the slot.
                match e {
                    RtError::Unanswered(call) => rt.quarantine_slot(slot, call),
                    _ => rt.put_slot(slot),
                }
                return Err(BackendError::Gpu);
            }
        };
        let installed = self.install(chunk, &copied, Source::Staging(slot));
        rt.put_slot(slot);
        let installed = installed?;
        self.release_vram(gpu, object, chunk, &installed);
        Ok(installed)
    }

    /// Rule 8 on the GPUs `which` picks (`Core::invalidate_gpus`): each
    /// unmaps `chunk` under one new sequence.
    fn invalidate(&self, chunk: Chunk, which: impl Fn(u8) -> bool) -> Result<(), BackendError> {
        let pages = (chunk.first, chunk.count);
        self.core
            .invalidate_gpus(self.object, pages, which)
            .map_err(|e| {
                log::warn!("pager: invalidating a chunk on the GPUs failed: {e:?}");
                BackendError::Gpu
            })
    }

    /// Write-protects `pages` in every view of the object, holding off view
    /// changes of those views' spaces meanwhile (the guard in `space.rs`).
    fn protect_views(&self, chunk: Chunk, pages: &PageMask) -> Result<(), BackendError> {
        let rt = &self.core.rt;

        for attempt in 0..PROTECT_TRIES {
            if attempt > 0 {
                rt.pause(Pause::ProtectRetry, attempt);
            }
            let views = self.object.views();
            let spaces = spaces_of(&views);
            let guards: Vec<_> = spaces.iter().map(|s| s.hold_changes()).collect();
            if !same_views(&views, &self.object.views()) {
                continue; // a view change was applied before the guards
            }
            let r = self.each_view_run(&views, chunk, pages, false, |v, addr, len| {
                rt.write_protect(&v.space.port, addr, len, true)
            });
            drop(guards);
            match r {
                Ok(()) => return Ok(()),
                // A view change is being delivered: its event may add a
                // mapping; start over once it is applied.
                Err(RtError::Again) => continue,
                Err(e) => return Err(rt_error(e)),
            }
        }
        log::warn!(
            "pager: object {:#x} chunk {}: view changes kept a collect from protecting its pages",
            self.object.id.raw(),
            chunk.first
        );
        Err(BackendError::Host(0))
    }

    /// The copies of `installed` landed in RAM: GPU `gpu`'s server drops their
    /// VRAM now, while we still hold their page locks (`MigrateToRam`
    /// copies and keeps; see `xe-svm`'s `migrate_to_ram`). If it does not
    /// answer, its frames stay allocated (counted, never read: the pages
    /// say System) until the object ends; nothing is lost.
    ///
    /// **The pages say System before the free is sent** (still locked).
    /// A restarted GPU server adopts the frames `Resident` lists, which
    /// are the Device pages (`resident.rs`). Listed before this point, a
    /// page's frame belongs to a generation that is alive when the free
    /// is sent, or to none (the stub sends an idempotent call again after
    /// a restart, and a later generation lists the page as System).
    /// Marked after the free instead, a predecessor that answered just
    /// before it died would leave its successor a frame nobody frees, and
    /// one its GPU faults map for a page already back in RAM.
    fn release_vram(&self, gpu: u8, object: Handle, chunk: Chunk, installed: &PageMask) {
        if installed.is_empty() {
            return;
        }
        for (i, p) in chunk.pages() {
            if installed.get(i) {
                let _ = self.object.table.settle(p, Residency::System);
            }
        }
        if let Err(e) = self
            .core
            .rt
            .free_pages(gpu, object, chunk.first, chunk.count, installed)
        {
            log::error!(
                "pager: freeing the VRAM of {} page(s) that came back to RAM: {e:?}; \
                 it stays allocated until the object ends",
                installed.count()
            );
        }
    }
}

impl<R: Runtime> Backend for CoreBackend<'_, R> {
    /// Each GPU holding some of `pages` copies its own back; a GPU that
    /// fails keeps its pages (the others' still come back).
    fn migrate_to_ram(
        &self,
        chunk: Chunk,
        pages: &PageMask,
        from: &[Residency],
    ) -> Result<PageMask, BackendError> {
        let mask = self.in_view(chunk, pages);
        let (mut done, mut failed) = (PageMask::EMPTY, None);
        for (gpu, part) in by_gpu(&mask, from) {
            match self.migrate_from_gpu(gpu, chunk, &part) {
                Ok(m) => done = done.or(&m),
                Err(e) => failed = Some(e),
            }
        }
        match failed {
            Some(e) if done.is_empty() => Err(e),
            _ => Ok(done),
        }
    }

    fn zero_fill(&self, chunk: Chunk, pages: &PageMask) -> Result<PageMask, BackendError> {
        let mask = self.in_view(chunk, pages);
        // Pages not installed stay EMPTY: nothing is lost.
        match self.view {
            Some(v) => Ok(self.install_via(v, chunk, &mask, Source::Zeros)),
            None => self.install(chunk, &mask, Source::Zeros),
        }
    }

    /// Write-protects `pages` in every view of the object, holding off view
    /// changes of those views' spaces meanwhile (the guard in `space.rs`).
    /// For a GPU's collect, every other GPU unmaps them first (rule 8):
    /// one may map them as system pages, whose RAM copies its finalize
    /// drops.
    fn protect(&self, chunk: Chunk, pages: &PageMask) -> Result<(), BackendError> {
        if let Some(gpu) = self.collector {
            self.invalidate(chunk, |other| other != gpu)?;
        }
        self.protect_views(chunk, pages)
    }

    fn moved_to_device(&self, chunk: Chunk, pages: &PageMask) -> Result<(), BackendError> {
        for (start, len) in runs(chunk, pages) {
            self.core
                .rt
                .drop_pages(&self.object.memory, chunk.first + start, len)
                .map_err(rt_error)?;
        }
        self.unprotect(chunk, pages)
    }

    /// Clears the protection in the views known now. A mapping made since
    /// (a fork's copy, a moved range) keeps it until its first writer
    /// faults; the fault path clears it then, under the page lock.
    fn unprotect(&self, chunk: Chunk, pages: &PageMask) -> Result<(), BackendError> {
        let rt = &self.core.rt;
        let views = self.object.views();
        self.each_view_run(&views, chunk, pages, true, |v, addr, len| loop {
            match rt.write_protect(&v.space.port, addr, len, false) {
                Err(RtError::Again) => crate::sync::yield_now(),
                r => return r,
            }
        })
        .map_err(rt_error)
    }

    /// Each source GPU unmaps its pages (rule 8), then pushes them with
    /// its own copy engine; a source that fails keeps its pages, and one
    /// that does not answer in time may still push them later.
    fn push_to_peer(
        &self,
        chunk: Chunk,
        pages: &PageMask,
        from: &[Residency],
        to: u8,
        first_pfn: u64,
    ) -> Result<Pushed, BackendError> {
        let rt = &self.core.rt;
        let mut done = Pushed::default();
        for (gpu, part) in by_gpu(pages, from) {
            let Some(id) = self.object.gpu_id(gpu).filter(|_| rt.gpu_attached(gpu)) else {
                continue;
            };
            // Rule 8: the push unmaps the chunk on its source first (one
            // call, not an `Invalidate` and a push), with a new sequence.
            let seq = self.core.next_invalidation(self.object);
            let (first, count) = (chunk.first, chunk.count);
            match rt.push_to_peer(gpu, id, first, count, &part, to, first_pfn, seq) {
                Ok(pushed) => done.landed = done.landed.or(&pushed.and(&part)),
                Err(RtError::Unanswered(_)) => {
                    log::error!(
                        "pager: GPU {gpu} did not answer a push to GPU {to}: the pages stay; \
                         GPU {to} keeps their frames out of use"
                    );
                    done.unanswered = done.unanswered.or(&part);
                }
                Err(e) => log::warn!("pager: GPU {gpu} pushing to GPU {to}: {e:?}; pages stay"),
            }
        }
        Ok(done)
    }

    /// The sources free the frames they pushed from (no mapping of them is
    /// left: each unmapped before its push). A source that does not answer
    /// keeps them allocated, never read, until the object ends.
    fn free_peer_frames(&self, chunk: Chunk, pages: &PageMask, from: &[Residency]) {
        for (gpu, part) in by_gpu(pages, from) {
            let Some(id) = self.object.gpu_id(gpu) else {
                continue;
            };
            if let Err(e) = self
                .core
                .rt
                .free_pages(gpu, id, chunk.first, chunk.count, &part)
            {
                log::warn!("pager: GPU {gpu} freeing frames it pushed: {e:?}");
            }
        }
    }

    fn device_preferred(&self, chunk: Chunk) -> PageMask {
        super::advice::device_preferred(self.object, chunk)
    }

    fn cpu_refused(&self, page: usize) -> bool {
        self.refuse_cpu && super::advice::device_only(self.object, page)
    }
}
