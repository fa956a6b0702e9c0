//! A restarted GPU server rebuilds its clients' VMs and bindings from the
//! journal its predecessor kept (`journal.rs`, issue 14), after it adopted
//! the pages in VRAM (`adopt.rs`) and before it serves anyone.
//!
//! Each VM comes back under the id its client holds (the ASID is the id's
//! index, so it is the same too), charged to the client as a new one
//! would be; then each binding, through the checks a client's `BindView`
//! passes: the pager must still know the view as that client's and the
//! recorded pages must lie in it. A client whose VM and bindings came back
//! goes on submitting work as before; only its jobs that were running are
//! lost (`DeviceReset`). A record that cannot be restored (the view went
//! while the server was down, a budget changed) is cleared and counted.
//!
//! Not rebuilt: buffer objects (their contents went with the old server's
//! BO store: `NoSuchBo`), `Protect` ranges (the VM's access is read-write
//! again; a binding's `BIND_READ_ONLY` is kept), fault logs.

use ipc_protocol::interfaces::gpu::GpuError;
use ipc_protocol::types::ViewId;

use crate::host::GpuServer;
use crate::journal::{BindingRecord, Journal, Record};
use crate::platform::Platform;
use crate::server::{Binding, Inner};
use crate::session as ses;

/// What a restarted server took back from the journal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rebuilt {
    pub vms: usize,
    pub bindings: usize,
    /// Records that could not be restored (cleared).
    pub dropped: usize,
}

impl GpuServer {
    /// Restores `records` (what [`Journal::open`] found): VMs first, then
    /// their bindings.
    pub fn rebuild(&self, records: &[(u32, Record)]) -> Rebuilt {
        let mut out = Rebuilt::default();
        for &(slot, r) in records {
            if let Record::Vm { owner, vm } = r {
                match self.inner.restore_vm(slot, owner, vm) {
                    Ok(()) => out.vms += 1,
                    Err(e) => self.drop_record(slot, &r, e, &mut out),
                }
            }
        }
        for &(slot, r) in records {
            if let Record::Binding { owner, vm, binding } = r {
                match self.restore_binding(slot, owner, vm, &binding) {
                    Ok(()) => out.bindings += 1,
                    Err(e) => self.drop_record(slot, &r, e, &mut out),
                }
            }
        }
        log::info!(
            "xe-svm: rebuilt {} VM(s) and {} binding(s) from the journal ({} dropped)",
            out.vms,
            out.bindings,
            out.dropped
        );
        out
    }

    fn drop_record(&self, slot: u32, r: &Record, e: GpuError, out: &mut Rebuilt) {
        log::warn!("xe-svm: journal record {r:?} not restored: {e:?}");
        if let Some(j) = self.inner.journal.get() {
            j.discard(slot);
        }
        out.dropped += 1;
    }

    /// Binding `r` of `owner`'s VM `vm`, if the pager still knows its view
    /// as the client's and the recorded pages lie in it.
    fn restore_binding(
        &self,
        slot: u32,
        owner: u64,
        vm: u32,
        r: &BindingRecord,
    ) -> Result<(), GpuError> {
        self.inner.asid_of(owner, vm).ok_or(GpuError::NoSuchVm)?;
        let view = ViewId::new(r.view).ok_or(GpuError::NoSuchView)?;
        let opened = self.open_view(owner, view)?;
        let view_end = opened.object_first_page.checked_add(opened.pages);
        let end = r.first_page.checked_add(r.pages);
        let inside = matches!((view_end, end), (Some(ve), Some(e)) if e <= ve)
            && r.first_page >= opened.object_first_page;
        if opened.object.get() != r.object || !inside {
            return Err(GpuError::BadRange);
        }
        self.bind_opened(owner, vm, r, Some(slot))
    }
}

impl<P: Platform> Inner<P> {
    /// Gives the server its journal; from now on every VM and binding is
    /// recorded there. Once only (`false` after).
    pub fn attach_journal(&self, journal: Journal) -> bool {
        self.journal.set(journal).is_ok()
    }

    /// `owner`'s VM `vm` under its old id, from the record in `slot`.
    fn restore_vm(&self, slot: u32, owner: u64, vm: u32) -> Result<(), GpuError> {
        let session = self.session(owner);
        session.charge(ses::vms, 1)?;
        let r = self.make_vm(owner, Some((vm, slot)));
        if r.is_err() {
            session.release(ses::vms, 1);
        }
        r.map(|_| ())
    }

    /// Charges `owner` for one binding (journal or not).
    fn charge_binding(&self, owner: u64) -> Result<(), GpuError> {
        self.session(owner).charge(ses::bindings, 1)
    }

    fn release_binding(&self, owner: u64) {
        if let Some(s) = self.sessions.find(owner) {
            s.release(ses::bindings, 1);
        }
    }

    /// Records a new VM (nothing without a journal).
    pub(crate) fn journal_vm(&self, owner: u64, vm: u32) -> Result<(), GpuError> {
        let Some(j) = self.journal.get() else {
            return Ok(());
        };
        j.record_vm(owner, vm).map_err(|_| GpuError::OutOfMetadata)
    }

    /// A restored VM takes over its record in `slot`.
    pub(crate) fn keep_vm_record(&self, owner: u64, slot: u32, vm: u32) -> Result<(), GpuError> {
        let Some(j) = self.journal.get() else {
            return Ok(());
        };
        j.keep_vm(slot, owner, vm);
        Ok(())
    }

    pub(crate) fn unjournal_vm(&self, owner: u64, vm: u32) {
        if let Some(j) = self.journal.get() {
            j.forget_vm(owner, vm);
        }
    }

    /// Charges and records binding `b` of `owner`'s VM `vm`; every binding
    /// made goes through here or [`Self::keep_binding_record`], and every
    /// one that goes through [`Self::unjournal_binding`].
    pub(crate) fn journal_binding(&self, owner: u64, vm: u32, b: &Binding) -> Result<(), GpuError> {
        self.charge_binding(owner)?;
        let Some(j) = self.journal.get() else {
            return Ok(());
        };
        j.record_binding(b.id, owner, vm, b.record()).map_err(|_| {
            self.release_binding(owner);
            GpuError::OutOfMetadata
        })
    }

    /// A restored binding `id` takes over its record in `slot`.
    pub(crate) fn keep_binding_record(
        &self,
        owner: u64,
        slot: u32,
        id: u64,
    ) -> Result<(), GpuError> {
        self.charge_binding(owner)?;
        if let Some(j) = self.journal.get() {
            j.keep_binding(slot, id);
        }
        Ok(())
    }

    pub(crate) fn unjournal_binding(&self, owner: u64, id: u64) {
        self.release_binding(owner);
        if let Some(j) = self.journal.get() {
            j.forget_binding(id);
        }
    }
}
