//! Views an `mremap` grew (issue 16 item 9). The kernel reports a move
//! (`REMAP`, with the old length) but not growth: the new tail of a grown
//! mapping is registered with the client's userfaultfd (it is part of the
//! same VMA) yet no view covers it, so its first fault arrives in no view.
//! Handing that page to the kernel would map the memfd directly, which
//! reads zeros for pages in VRAM and escapes every later migration.
//!
//! Instead the pager asks the runtime what the faulting thread has mapped
//! there (host: `/proc/<tid>/maps`, the VMA's range, file and offset). If
//! it is this space's object, the part of that mapping no view of the
//! space covers becomes a view of its own, and the fault is served through
//! it like any other. Nothing is guessed: no mapping, another file, or a
//! range outside the object leaves the old behaviour (the page goes to the
//! kernel, and the pager logs it).
//!
//! Locking: the mapping is read and the view recorded under the space's
//! view-change guard, so an unmap of the tail is applied either before
//! (the mapping is gone: nothing is recorded) or after (it removes the
//! new view). The GPU server hears of it then (`GpuNotify::ViewGrown`):
//! the bindings of the view it continues continue over it, so a mirror VM
//! sees the tail once the pager does. Before the tail's first CPU fault
//! nothing tells the pager of the growth, so a GPU access there first
//! faults as unbound (the job ends `Faulted`); a client that binds the
//! tail itself (`FindView`, then `BindView`) needs no CPU access.

use super::runtime::{FileMapping, Runtime};
use super::view::{Space, View, ViewSpec, PAGE};
use super::Core;
use crate::sync::Arc;

impl<R: Runtime> Core<R> {
    /// Records the grown part of a view around `addr` of `space`, as the
    /// faulting thread `tid` maps it; returns whether a view covers `addr`
    /// now.
    pub fn follow_growth(&self, space: &Space<R>, addr: u64, tid: u32) -> bool {
        if tid == 0 {
            return false;
        }
        let _changing = space.applying_changes();
        if space.view_at(addr).is_some() {
            return true;
        }
        let Some(m) = self.rt.mapping_at(tid, addr) else {
            return false;
        };
        let Some(spec) = self.grown_part(space, &m, addr) else {
            return false;
        };
        let (at, pages) = (spec.addr, spec.pages);
        match self.record_view(spec) {
            Ok(v) => {
                log::info!(
                    "pager: space {}: {at:#x}+{pages} pages grown by mremap; view {:#x}",
                    space.id,
                    v.id.raw()
                );
                self.tell_gpu_grown(space, &v);
                true
            }
            Err(e) => {
                log::warn!(
                    "pager: space {}: growth at {at:#x} not followed: {e:?}",
                    space.id
                );
                false
            }
        }
    }

    /// The GPU follows: the bindings of the view that `tail` continues (in
    /// the client's addresses and the object's pages) continue over it.
    fn tell_gpu_grown(&self, space: &Space<R>, tail: &View<R>) {
        let grew = space.views().into_iter().find(|v| {
            v.end() == tail.addr
                && Arc::ptr_eq(&v.object, &tail.object)
                && v.first_page + v.pages == tail.first_page
        });
        if let Some(v) = grew {
            for id in v.gpu_ids() {
                self.rt.view_grown(id, tail.id, tail.first_page, tail.pages);
            }
        }
    }

    /// The part of mapping `m` around `addr` that no view of `space`
    /// covers, as a view of the space's object, if `m` maps that object.
    fn grown_part(&self, space: &Space<R>, m: &FileMapping, addr: u64) -> Option<ViewSpec<R>> {
        let views = space.views();
        let object = views
            .iter()
            .map(|v| &v.object)
            .find(|o| self.rt.is_file(&o.memory, m.file))?
            .clone();
        if addr < m.start || addr >= m.end || m.start % PAGE != 0 || m.offset % PAGE != 0 {
            return None;
        }
        let lo = views
            .iter()
            .map(|v| v.end())
            .filter(|e| *e <= addr)
            .fold(m.start, u64::max);
        let hi = views
            .iter()
            .map(|v| v.addr)
            .filter(|a| *a > addr)
            .fold(m.end, u64::min);
        let first = m.offset.checked_add(lo - m.start)? / PAGE;
        let pages = (hi - lo) / PAGE;
        let end = first.checked_add(pages)?;
        if pages == 0 || end > object.pages() as u64 {
            return None;
        }
        let forked = space.forked;
        Some(ViewSpec {
            object,
            addr: lo,
            first_page: first as usize,
            pages: pages as usize,
            space: views.first()?.space.clone(),
            forked,
        })
    }
}
