//! The GPU server's budgets: what one client may make it hold, declared
//! once (defaults, the manifest's `--budget name=value,...` flag, the
//! README's table). Each session keeps a [`GpuQuotas`] (`session.rs`);
//! exhausting one is `GpuError::OverBudget` to that client only.
//! [`GpuBudget::arena_bytes_needed`] sizes the metadata arena (`arena.rs`).

use hw::xe::layout;

use crate::fault_log;

session::budgets! {
    /// What one client may make the GPU server hold.
    pub struct GpuBudget, GpuQuotas {
        /// GPU VMs (each holds an ASID and its page tables).
        vms: 8,
        /// Bindings of views in its VMs, those that follow a moved or
        /// split view included (each is a journal record, `journal.rs`).
        bindings: 4096,
        /// Buffer objects.
        bos: 1024,
        /// Bytes of the BO pool its buffer objects hold (their SRAM homes).
        bo_bytes: 128 << 20,
        /// Jobs submitted and not yet seen retired (past it a submit waits
        /// for one of its own jobs to retire).
        jobs_in_flight: 16,
        /// Job results kept for `Wait` (the oldest retired one of the same client goes first).
        result_slots: 256,
        /// DMA slots: objects whose views it bound (the device has 60 in all;
        /// over-committed: a client at its limit leaves 44 to the others).
        dma_slots: 16,
        /// Bytes of VRAM its SVM pages and buffer objects hold together
        /// (past it: system pages, SRAM homes).
        vram_bytes: 64 << 30,
        /// Bytes of server metadata: 4 per page of the objects it bound
        /// (8 MiB for 8 GiB), one record per BO chunk.
        metadata_bytes: 9 << 20,
    }
}

impl GpuBudget {
    /// No limit at all (the server-wide totals, tests).
    pub fn unlimited() -> Self {
        Self {
            vms: u64::MAX,
            bindings: u64::MAX,
            bos: u64::MAX,
            bo_bytes: u64::MAX,
            jobs_in_flight: u64::MAX,
            result_slots: u64::MAX,
            dma_slots: u64::MAX,
            vram_bytes: u64::MAX,
            metadata_bytes: u64::MAX,
        }
    }

    /// The arena bytes `clients` sessions at their `metadata_bytes` limits,
    /// the fault logs of their VMs and `peer_bytes` need together (`None`:
    /// past `u64`). VMs are bounded by the ASIDs too.
    pub fn arena_bytes_needed(&self, clients: usize, peer_bytes: u64) -> Option<u64> {
        let vms = self
            .vms
            .saturating_mul(clients as u64)
            .min(layout::MAX_ASIDS as u64 - 1);
        self.metadata_bytes
            .checked_mul(clients as u64)?
            .checked_add(vms * fault_log::RING_BYTES)?
            .checked_add(peer_bytes)
    }

    /// The journal bytes `clients` sessions at their `vms` and `bindings`
    /// limits need (`None`: past `u64`): one record each (`journal.rs`).
    pub fn journal_bytes_needed(&self, clients: usize) -> Option<u64> {
        self.vms
            .checked_add(self.bindings)?
            .checked_mul(clients as u64)?
            .checked_mul(crate::journal::RECORD_BYTES)
    }
}
