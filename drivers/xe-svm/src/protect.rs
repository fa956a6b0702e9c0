//! `Gpu::Protect` (issue 16: read-only and protection): the GPU's access
//! to ranges of a VM's SVM bindings, as `mprotect` sets the CPU's.
//!
//! Each VM keeps the ranges whose access is not read-write (at most
//! [`MAX_PROTECTED_RANGES`], disjoint, merged when equal). The rules:
//! - a GPU fault is checked against them before anything moves
//!   ([`Inner::resolve_access`]): a write (or atomic) where writing is not
//!   allowed, or any access where nothing is, is refused: the device
//!   fails the access, the job ends `Faulted`, the fault log keeps it;
//! - a page is mapped writable only where writing is allowed, so a write
//!   to a read-only page faults (a write access violation) instead of
//!   landing;
//! - a change unmaps the range in that VM and invalidates its TLB before
//!   the reply (rule 8's order), so no access through an old, more
//!   permissive mapping follows `Protect`; raising the access needs it
//!   too, since a TLB may keep a read-only entry a write would fault on
//!   again and again. The next faults map with the new access.
//!
//! All of it is under the VM lock (`State`), like the bindings it refines.
//! The access belongs to addresses, as `mprotect`'s does: it outlasts the
//! bindings over them, moves with a view an mremap moves (`views.rs`:
//! twins carry it) and goes back to read-write where a view went and no
//! binding that stays covers the range (the CPU unmapped it). A binding
//! made with `BIND_READ_ONLY` is read-only itself (`Binding::read_only`),
//! whatever the addresses allow; that goes with the binding (its twins
//! after a move keep it).

use ipc_protocol::interfaces::gpu::{GpuError, MAX_PROTECTED_RANGES, PROT_READ, PROT_WRITE};
use session::RangeMap;

use crate::platform::Platform;
use crate::server::{Inner, USER_VA_END};

const PAGE: u64 = 4096;
const RW: u32 = PROT_READ | PROT_WRITE;

/// The ranges of one VM whose access is not read-write.
pub struct Protections(RangeMap<u32>);

impl Default for Protections {
    fn default() -> Self {
        Self(RangeMap::new(RW, MAX_PROTECTED_RANGES))
    }
}

impl Protections {
    /// The access at `va` (read-write where no range says otherwise).
    pub fn at(&self, va: u64) -> u32 {
        self.0.at(va)
    }

    /// Whether `[start, end)` has one access throughout (a large page may
    /// map it).
    pub fn uniform(&self, start: u64, end: u64) -> bool {
        self.0.uniform(start, end)
    }

    /// Sets `[start, end)` to `prot`; `OverBudget` when the VM would keep
    /// too many ranges.
    fn set(&mut self, start: u64, end: u64, prot: u32) -> Result<(), GpuError> {
        self.0
            .set(start, end, prot)
            .map_err(|_| GpuError::OverBudget)
    }

    /// `[start, end)` was unmapped on the CPU (its view went): a mapping
    /// made there later starts read-write, as after `mprotect` and
    /// `munmap`. Never fails (the map only shrinks or splits within cap:
    /// where it cannot, whole ranges go back to read-write).
    pub(crate) fn forget(&mut self, start: u64, end: u64) {
        self.0.clear(start, end);
    }

    /// The access of `[start, end)` moves with its pages to `shift` bytes
    /// away (an mremap moves the CPU's protection with the mapping).
    /// Past the cap what does not fit stays read-write (logged).
    pub(crate) fn carry(&mut self, start: u64, end: u64, shift: u64) {
        let moved: Vec<(u64, u64, u32)> = self
            .0
            .iter()
            .filter(|&(s, e, _)| s < end && start < e)
            .map(|(s, e, v)| (s.max(start), e.min(end), v))
            .collect();
        for (s, e, v) in moved {
            let (to, to_end) = (s.wrapping_add(shift), e.wrapping_add(shift));
            if to < to_end && to_end <= USER_VA_END && self.set(to, to_end, v).is_err() {
                log::warn!("xe-svm: the access of {s:#x}..{e:#x} cannot follow its move");
            }
        }
    }
}

/// Whether an access (`write`: a write or an atomic) is allowed by `prot`.
pub fn permits(prot: u32, write: bool) -> bool {
    prot & PROT_READ != 0 && (!write || prot & PROT_WRITE != 0)
}

impl<P: Platform> Inner<P> {
    /// `Gpu::Protect`: sets the GPU's access to `[addr, addr + len)` of
    /// `owner`'s VM `vm`, and unmaps the range so faults map it anew.
    pub fn protect(
        &self,
        owner: u64,
        vm: u32,
        addr: u64,
        len: u64,
        prot: u32,
    ) -> Result<(), GpuError> {
        let end = addr.checked_add(len).ok_or(GpuError::BadRange)?;
        if len == 0 || addr % PAGE != 0 || len % PAGE != 0 || end > USER_VA_END {
            return Err(GpuError::BadRange);
        }
        if prot & !RW != 0 {
            return Err(GpuError::BadRange);
        }
        let mut st = self.lock();
        let asid = Self::vm_asid(&st, owner, vm)?;
        let v = st.vms.get_mut(&asid).ok_or(GpuError::NoSuchVm)?;
        v.protections.set(addr, end, prot)?;
        // Whole 2 MiB leaves: a large page may cover the range's ends.
        let (lo, hi) = (addr & !((2 << 20) - 1), end.next_multiple_of(2 << 20));
        let spans: Vec<(u64, u64)> = v
            .bindings
            .iter()
            .map(|b| (lo.max(b.gpu_addr), hi.min(b.gpu_addr + b.pages * PAGE)))
            .filter(|(s, e)| s < e)
            .collect();
        for &(s, e) in &spans {
            self.hw.unmap(&mut v.tables, s, e - s);
        }
        let ranges: Vec<(u32, u64, u64)> = spans.iter().map(|&(s, e)| (asid, s, e - s)).collect();
        self.invalidate_ranges(&ranges)
    }

    /// A GPU fault at `va` of `asid`, checked against the VM's access
    /// first (`write`: a write or atomic access): refused without a
    /// migration where the access is not allowed, else [`Self::resolve`].
    pub fn resolve_access(&self, asid: u32, va: u64, write: bool, near: &[u64]) -> bool {
        let prot = match self.lock().vms.get(&asid) {
            Some(v) => {
                let binding = v.bindings.iter().find(|b| b.contains(va));
                v.protections.at(va) & binding.map_or(RW, |b| b.access_mask())
            }
            None => return false,
        };
        permits(prot, write) && self.resolve(asid, va, near)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: u32 = PROT_READ;

    #[test]
    fn past_the_cap_is_over_budget_and_changes_nothing() {
        let mut p = Protections::default();
        for i in 0..MAX_PROTECTED_RANGES as u64 {
            p.set(i * 0x2000, i * 0x2000 + 0x1000, R).unwrap();
        }
        let top = MAX_PROTECTED_RANGES as u64 * 0x2000;
        assert_eq!(p.set(top, top + 0x1000, R), Err(GpuError::OverBudget));
        assert_eq!((p.at(top), p.at(0)), (RW, R));
    }

    #[test]
    fn writes_need_both_bits() {
        assert!(permits(RW, true) && permits(R, false));
        assert!(!permits(R, true) && !permits(0, false) && !permits(PROT_WRITE, false));
    }
}
