//! GPU bindings follow the pager's views (DESIGN.md 2 and 5, "Unmap /
//! mremap / fork / exit").
//!
//! A binding maps a view's object pages at a GPU address (normally the
//! view's CPU address). When the client unmaps the view, detaches it or
//! dies, the pager sends `ViewGone`: the binding's PTEs are unmapped and the
//! TLB invalidated before the reply, and the binding is dropped, so a GPU
//! access there faults as unbound. When the whole view also appears at a
//! new address (`mremap`), `ViewCopied`: each binding gets a twin at the
//! new address, shifted by the distance the view moved, whose pages fault
//! in there; the pager sends it before the client's mremap can return, so
//! work the client submits at the new address finds it bound. A plain move
//! then ends the old view (`ViewGone`). Rule 8 holds either way: nothing
//! stays mapped at an address no binding covers. The object's pages themselves stay where
//! they are (they are the object's, not the view's); a fork changes nothing
//! here (the GPU keeps running against the parent's view).
//!
//! Like every notifier handler these take only the VM lock and never call
//! the pager (rule 9).

use ipc_protocol::interfaces::gpu_notify::NotifyError;

use crate::platform::Platform;
use crate::server::{Binding, Inner, Vm};

const PAGE: u64 = 4096;
/// GPU virtual addresses are 48-bit (4-level PPGTT).
const VA_LIMIT: u64 = 1 << 47;

impl<P: Platform> Inner<P> {
    /// Unmaps and drops every binding of `view`; returns how many.
    pub fn view_gone(&self, view: u32) -> Result<u16, NotifyError> {
        let mut st = self.lock();
        let mut ranges = Vec::new();
        let mut objects = Vec::new();
        let mut gone = Vec::new();
        for (asid, vm) in st.vms.iter_mut() {
            let first = ranges.len();
            vm.bindings.retain(|b| {
                if b.view != view {
                    return true;
                }
                let _ = self.hw.unmap(&mut vm.tables, b.gpu_addr, b.pages * PAGE);
                ranges.push((*asid, b.gpu_addr, b.pages * PAGE));
                objects.push(b.object);
                gone.push((vm.owner, b.id));
                false
            });
            for &(_, start, len) in &ranges[first..] {
                forget_unbound(vm, start, start + len);
            }
        }
        for (owner, id) in gone {
            self.unjournal_binding(owner, id);
        }
        self.invalidate_ranges(&ranges)
            .map_err(|_| NotifyError::CopyFailed)?;
        for o in objects {
            self.drop_object_if_unused(&mut st, o);
        }
        if !ranges.is_empty() {
            log::info!(
                "xe-svm: view {view} is gone; {} binding(s) unmapped",
                ranges.len()
            );
        }
        Ok(ranges.len() as u16)
    }

    /// The whole of `view` also appears at CPU address `to` (it was at
    /// `from`) as view `new_view`: each binding of `view` gets a twin for
    /// `new_view` shifted by the same distance, unless the new range is
    /// taken or out of range. Nothing is mapped yet: the twin's pages fault
    /// in. Returns (twins made, bindings that could not follow).
    pub fn view_copied(
        &self,
        view: u32,
        new_view: u32,
        from: u64,
        to: u64,
    ) -> Result<(u16, u16), NotifyError> {
        Ok(self.twin_bindings(view, new_view, 0..u64::MAX, to.wrapping_sub(from)))
    }

    /// Object pages `first..first + pages` of `view` live on as `new_view`,
    /// moved by `to - from` (0: a part a munmap left in place). Each
    /// binding of `view` gets a twin for just those pages; the pager then
    /// ends `view` (`ViewGone`), so the twin may overlap its bindings.
    pub fn view_part(
        &self,
        view: u32,
        new_view: u32,
        pages: core::ops::Range<u64>,
        from: u64,
        to: u64,
    ) -> Result<(u16, u16), NotifyError> {
        Ok(self.twin_bindings(view, new_view, pages, to.wrapping_sub(from)))
    }

    /// `view` grew by object pages `pages` (right after its own), now the
    /// view `tail`: each binding of `view` ending at `pages.start` gets a
    /// binding of `tail` right after it. Returns (bindings made, bindings
    /// that could not follow).
    pub fn view_grown(
        &self,
        view: u32,
        tail: u32,
        pages: core::ops::Range<u64>,
    ) -> Result<(u16, u16), NotifyError> {
        let count = pages
            .end
            .checked_sub(pages.start)
            .ok_or(NotifyError::BadRange)?;
        if count == 0 || count > VA_LIMIT / PAGE {
            return Err(NotifyError::BadRange);
        }
        let grow = |b: &Binding| {
            (b.first_page + b.pages == pages.start).then(|| Binding {
                gpu_addr: b.end(),
                first_page: pages.start,
                pages: count,
                ..*b
            })
        };
        Ok(self.add_twins(view, tail, false, grow))
    }

    /// Gives each binding of `view` a twin for `new_view` over the object
    /// pages it shares with `pages`, `shift` bytes away. Returns (twins
    /// made, bindings that could not follow).
    fn twin_bindings(
        &self,
        view: u32,
        new_view: u32,
        pages: core::ops::Range<u64>,
        shift: u64,
    ) -> (u16, u16) {
        self.add_twins(view, new_view, shift == 0, |b| b.part(&pages, shift))
    }

    /// For each binding of `view` in every VM, the binding `make` gives
    /// (if any) is added for `new_view` where it fits (`in_place`: it may
    /// overlap `view`'s own bindings, which go right after). Returns
    /// (bindings made, bindings that could not follow).
    fn add_twins(
        &self,
        view: u32,
        new_view: u32,
        in_place: bool,
        make: impl Fn(&Binding) -> Option<Binding>,
    ) -> (u16, u16) {
        let mut st = self.lock();
        let (mut made, mut skipped) = (0u16, 0u16);
        for (asid, vm) in st.vms.iter_mut() {
            // Each twin with the GPU address its pages had in `view`.
            let twins: Vec<(Option<u64>, Binding)> = vm
                .bindings
                .iter()
                .filter(|b| b.view == view)
                .filter_map(|b| make(b).map(|t| (b.va_of(t.first_page), t)))
                .collect();
            for (from, t) in twins {
                let id = self.new_binding_id();
                let twin = t.twin(id, new_view, t.gpu_addr);
                if twin_fits(vm, &t, view, in_place)
                    && self.journal_binding(vm.owner, vm.id, &twin).is_ok()
                {
                    if let Some(from) = from.filter(|f| *f != t.gpu_addr) {
                        let len = t.pages * PAGE;
                        let shift = t.gpu_addr.wrapping_sub(from);
                        vm.protections.carry(from, from + len, shift);
                    }
                    vm.bindings.push(twin);
                    made = made.saturating_add(1);
                } else {
                    log::warn!(
                        "xe-svm: view {view}: pages {:#x}+{} cannot follow to {:#x} in VM {asid}",
                        t.first_page,
                        t.pages,
                        t.gpu_addr
                    );
                    skipped = skipped.saturating_add(1);
                }
            }
        }
        (made, skipped)
    }
}

/// The CPU range of a view that went is unmapped: its access goes back to
/// read-write where no binding that stays (a part left in place) covers it.
fn forget_unbound<T>(vm: &mut Vm<T>, start: u64, end: u64) {
    let mut kept: Vec<(u64, u64)> = vm
        .bindings
        .iter()
        .filter(|b| b.gpu_addr < end && start < b.end())
        .map(|b| (b.gpu_addr.max(start), b.end().min(end)))
        .collect();
    kept.sort_unstable();
    let mut at = start;
    for (s, e) in kept {
        if at < s {
            vm.protections.forget(at, s);
        }
        at = at.max(e);
    }
    if at < end {
        vm.protections.forget(at, end);
    }
}

/// Whether twin `t` lies inside the GPU address space and clear of every
/// binding and BO of `vm` (but those of `view` when it stays in place:
/// they go right after).
fn twin_fits<T>(vm: &Vm<T>, t: &Binding, view: u32, in_place: bool) -> bool {
    let (new, len) = (t.gpu_addr, t.pages * PAGE);
    let fits = new % PAGE == 0 && new.checked_add(len).is_some_and(|end| end <= VA_LIMIT);
    let taken = vm
        .bindings
        .iter()
        .filter(|b| !(in_place && b.view == view))
        .any(|b| new < b.end() && b.gpu_addr < new + len)
        || vm.bos.iter().any(|m| m.overlaps(new, len));
    fits && !taken
}
