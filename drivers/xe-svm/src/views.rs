//! GPU bindings follow the pager's views (DESIGN.md 2 and 5, "Unmap /
//! mremap / fork / exit").
//!
//! A binding maps a view's object pages at a GPU address (normally the
//! view's CPU address). When the client unmaps the view, detaches it or
//! dies, the pager sends `ViewGone`: the binding's PTEs are unmapped and the
//! TLB invalidated before the reply, and the binding is dropped, so a GPU
//! access there faults as unbound. When the whole view moves (`mremap`),
//! `ViewMoved`: the old range is unmapped the same way and the binding
//! shifts by the distance the view moved; its pages fault in again at the
//! new address. Rule 8 holds either way: nothing stays mapped at an address
//! the binding no longer covers. The object's pages themselves stay where
//! they are (they are the object's, not the view's); a fork changes nothing
//! here (the GPU keeps running against the parent's view).
//!
//! Like every notifier handler these take only the VM lock and never call
//! the pager (rule 9).

use ipc_protocol::interfaces::gpu_notify::NotifyError;

use crate::platform::Platform;
use crate::server::Inner;

const PAGE: u64 = 4096;
/// GPU virtual addresses are 48-bit (4-level PPGTT).
const VA_LIMIT: u64 = 1 << 47;

impl<P: Platform> Inner<P> {
    /// Unmaps and drops every binding of `view`; returns how many.
    pub(crate) fn view_gone(&self, view: u32) -> Result<u16, NotifyError> {
        let mut st = self.lock();
        let mut ranges = Vec::new();
        let mut objects = Vec::new();
        for (asid, vm) in st.vms.iter_mut() {
            vm.bindings.retain(|b| {
                if b.view != view {
                    return true;
                }
                let _ = self.hw.unmap(&mut vm.tables, b.gpu_addr, b.pages * PAGE);
                ranges.push((*asid, b.gpu_addr, b.pages * PAGE));
                objects.push(b.object);
                false
            });
        }
        self.invalidate_ranges(&ranges).map_err(|_| NotifyError::CopyFailed)?;
        for o in objects {
            self.drop_object_if_unused(&mut st, o);
        }
        if !ranges.is_empty() {
            log::info!("xe-svm: view {view} is gone; {} binding(s) unmapped", ranges.len());
        }
        Ok(ranges.len() as u16)
    }

    /// The whole of `view` moved from CPU address `from` to `to`: each of
    /// its bindings is unmapped at its old GPU range and shifted by the
    /// same distance, or dropped if the new range is taken or out of range.
    /// Returns (bindings moved, bindings dropped).
    pub(crate) fn view_moved(&self, view: u32, from: u64, to: u64) -> Result<(u16, u16), NotifyError> {
        let mut st = self.lock();
        let st = &mut *st;
        let (mut moved, mut dropped) = (0u16, 0u16);
        let mut ranges = Vec::new();
        let mut lost = Vec::new();
        for (asid, vm) in st.vms.iter_mut() {
            let mut i = 0;
            while i < vm.bindings.len() {
                if vm.bindings[i].view != view {
                    i += 1;
                    continue;
                }
                let (old, len) = (vm.bindings[i].gpu_addr, vm.bindings[i].pages * PAGE);
                let _ = self.hw.unmap(&mut vm.tables, old, len);
                ranges.push((*asid, old, len));
                let new = old.wrapping_add(to.wrapping_sub(from));
                let fits = new % PAGE == 0 && new.checked_add(len).is_some_and(|end| end <= VA_LIMIT);
                let taken = vm.bindings.iter().enumerate().any(|(j, b)| j != i && new < b.gpu_addr + b.pages * PAGE && b.gpu_addr < new + len)
                    || vm.bos.iter().any(|m| m.overlaps(new, len));
                if fits && !taken {
                    vm.bindings[i].gpu_addr = new;
                    moved += 1;
                    i += 1;
                } else {
                    log::warn!("xe-svm: view {view} moved to {to:#x}; its binding at {old:#x} in VM {asid} cannot follow to {new:#x} and is dropped");
                    lost.push(vm.bindings.remove(i).object);
                    dropped += 1;
                }
            }
        }
        self.invalidate_ranges(&ranges).map_err(|_| NotifyError::CopyFailed)?;
        for o in lost {
            self.drop_object_if_unused(st, o);
        }
        Ok((moved, dropped))
    }
}
