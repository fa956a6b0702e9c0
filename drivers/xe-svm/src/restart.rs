//! What a restarted GPU server does before it serves (issue 14): learn
//! from the pager where its predecessor's pages are and adopt them
//! (`adopt.rs`), and tell the jobs its predecessor took from its own.
//!
//! **Job ids carry the server generation.** A client's job id is its job
//! table handle in the low 32 bits and the server's generation less one
//! in the high 32 (so generation 1 ids are the plain handles). A `Wait`
//! for a job an earlier generation took is answered `DeviceReset`: the
//! device was reset when that server died and the job's work is gone. The
//! client stub sends `Wait` again by itself after a restart (it is
//! idempotent), so a client waiting on a job when the server died gets
//! this answer, never a hang or another job's result.

use std::sync::atomic::Ordering;

use ipc_protocol::interfaces::gpu::GpuError;
use ipc_protocol::interfaces::pager_migrate::{Resident, ResidentRun};

use crate::adopt::Adopted;
use crate::host::GpuServer;
use crate::platform::Platform;
use crate::server::Inner;

/// Why a restarted server could not take over its predecessor's pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakeOverError {
    /// The pager did not answer `Resident` (the runtime logged why).
    Pager,
    /// The pager's cursor did not move forward (a pager bug; stopping
    /// rather than asking forever).
    NoProgress,
    /// It named more pages, or more runs, than VRAM holds pages.
    TooManyPages,
}

impl std::fmt::Display for TakeOverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pager => f.write_str("the pager did not say where the pages are"),
            Self::NoProgress => f.write_str("the pager's Resident cursor did not advance"),
            Self::TooManyPages => f.write_str("the pager named more pages than VRAM holds"),
        }
    }
}

impl GpuServer {
    /// Generation `generation`'s first step when it is past 1: every run
    /// of pages the pager records in our VRAM, adopted
    /// ([`Inner::take_over`]).
    pub fn take_over(&self, generation: u32) -> Result<Adopted, TakeOverError> {
        self.inner.take_over(generation)
    }
}

impl<P: Platform> Inner<P> {
    /// Generation `generation`'s first step when it is past 1, on any
    /// platform (the host runtime, the simulation): the pager's runs of
    /// our VRAM, adopted before anything allocates.
    pub fn take_over(&self, generation: u32) -> Result<Adopted, TakeOverError> {
        self.set_generation(generation);
        let runs = self.resident_runs()?;
        let adopted = self.adopt(&runs);
        log::info!(
            "xe-svm: generation {generation} adopted {} page(s) of {} object(s) in VRAM \
             ({} refused)",
            adopted.pages,
            adopted.objects,
            adopted.refused
        );
        self.report_usage();
        Ok(adopted)
    }

    /// Asks `Resident` from the start until the pager has no more.
    fn resident_runs(&self) -> Result<Vec<ResidentRun>, TakeOverError> {
        let gpu = self.hw.gpu();
        let most = self.vram.total_pages();
        let (mut runs, mut pages, mut from) = (Vec::new(), 0u64, (0u32, 0u64));
        loop {
            let r = self
                .hw
                .resident(Resident {
                    gpu,
                    generation: self.generation.load(Ordering::Acquire),
                    from_object: from.0,
                    from_page: from.1,
                })
                .map_err(|_| TakeOverError::Pager)?;
            for run in r.runs.as_slice() {
                pages = pages.saturating_add(u64::from(run.pages));
            }
            // Runs of no page would grow the list without bound.
            if pages > most || runs.len() as u64 + r.runs.len() as u64 > most {
                return Err(TakeOverError::TooManyPages);
            }
            runs.extend(r.runs.into_vec());
            if !r.more {
                return Ok(runs);
            }
            let next = (r.next_object, r.next_page);
            if next <= from {
                return Err(TakeOverError::NoProgress);
            }
            from = next;
        }
    }
    /// Records which generation of the server this is (job ids carry it).
    pub fn set_generation(&self, generation: u32) {
        self.generation.store(generation.max(1), Ordering::Release);
    }

    /// Which generation of the server this is (1 at boot).
    pub fn generation(&self) -> u32 {
        self.generation.load(Ordering::Acquire)
    }

    /// The id a client knows the job with table handle `raw` by.
    pub(crate) fn client_job_id(&self, raw: u32) -> u64 {
        let epoch = self.generation.load(Ordering::Acquire) - 1;
        (u64::from(epoch) << 32) | u64::from(raw)
    }

    /// The table handle of client job id `id`: `DeviceReset` for a job an
    /// earlier generation took, `NoSuchJob` for one no generation did.
    pub(crate) fn local_job_id(&self, id: u64) -> Result<u64, GpuError> {
        let epoch = u64::from(self.generation.load(Ordering::Acquire) - 1);
        match (id >> 32).cmp(&epoch) {
            std::cmp::Ordering::Less => Err(GpuError::DeviceReset),
            std::cmp::Ordering::Equal => Ok(id & u64::from(u32::MAX)),
            std::cmp::Ordering::Greater => Err(GpuError::NoSuchJob),
        }
    }
}
