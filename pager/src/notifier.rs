//! The GPU server's notifier (`GpuNotify`) as both runtimes call it: the
//! rule 8 invalidation, migration to RAM into a staging slot, freeing VRAM
//! pages, and view changes. Transport-agnostic: the client is over a
//! seqpacket socket on Linux and over a scheme handle on Redox.

use std::sync::OnceLock;

use ipc_protocol::client::{CallError, Client};
use ipc_protocol::interfaces::gpu_notify::{
    Frames, FreePages, GpuNotify, Invalidate, MigrateToRam, PushToPeer, ViewCopied, ViewGone,
    ViewGrown, ViewPart,
};
use ipc_protocol::interfaces::pager_migrate::MigrateError;
use ipc_protocol::transport::TransportError;
use ipc_protocol::types::{GpuId, ObjectId, PageCount, PageMask, Seq, ViewId};
use session::Handle;

use crate::core::object::MAX_GPUS;
use crate::core::runtime::{FrameRuns, PartNote, RtError};

/// The notifiers of every GPU's server, by GPU. A call that went
/// unanswered is named by its id with its GPU in the top byte (GPU 0's
/// ids are unchanged), so staging slots quarantined for one GPU's late
/// copy are released only by that GPU's late answer.
#[derive(Default)]
pub struct GpuNotifiers {
    gpus: [GpuNotifier; MAX_GPUS],
}

const GPU_TAG_SHIFT: u32 = 56;

/// The badge of GPU `gpu`'s server's `PagerMigrate` endpoint (GPU 0's is
/// 1, as it was with one GPU): the pager tells which GPU calls by it.
pub const fn migrate_badge(gpu: u8) -> u64 {
    1 + gpu as u64
}

/// The GPU whose `PagerMigrate` endpoint carries `badge`.
pub fn gpu_of_migrate_badge(badge: u64) -> Result<u8, MigrateError> {
    badge
        .checked_sub(1)
        .and_then(|g| u8::try_from(g).ok())
        .filter(|&g| usize::from(g) < MAX_GPUS)
        .ok_or(MigrateError::NotOwner)
}

impl GpuNotifiers {
    /// GPU `gpu`'s notifier (attached or not); none past [`MAX_GPUS`].
    pub fn of(&self, gpu: u8) -> Result<&GpuNotifier, RtError> {
        self.gpus.get(gpu as usize).ok_or(RtError::Gpu)
    }

    pub fn attached(&self, gpu: u8) -> bool {
        self.of(gpu).is_ok_and(GpuNotifier::attached)
    }

    /// Every attached GPU's notifier (the view notes go to each).
    pub fn each(&self) -> impl Iterator<Item = &GpuNotifier> {
        self.gpus.iter().filter(|g| g.attached())
    }

    /// `e` of GPU `gpu`, its unanswered call's id tagged with the GPU.
    pub fn tagged(gpu: u8, e: RtError) -> RtError {
        match e {
            RtError::Unanswered(id) if id != 0 => {
                RtError::Unanswered(id | (u64::from(gpu) << GPU_TAG_SHIFT))
            }
            e => e,
        }
    }

    /// Ids (tagged) of calls that went unanswered and were answered since.
    pub fn answered_late(&self) -> Vec<u64> {
        let mut ids = Vec::new();
        for (gpu, n) in (0u64..).zip(&self.gpus) {
            ids.extend(
                n.answered_late()
                    .into_iter()
                    .map(|id| id | (gpu << GPU_TAG_SHIFT)),
            );
        }
        ids
    }
}

/// A GPU server was attached already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlreadyAttached;

/// Shares the staging buffer with a GPU server (`AttachStaging`).
pub type AttachStaging = Box<dyn Fn(&Client<GpuNotify>) -> Result<(), String> + Send + Sync>;

/// The GPU server's notifier, once it is attached.
///
/// **A restarted GPU server gets the staging buffer again.** The buffer
/// is shared once per server generation: the first call after the client
/// saw a new generation announced (`Client::generation`) shares it
/// first. The announcement comes before any answer of the new server, so
/// no call the new server answers was sent before it could know the
/// buffer, except calls sent while it was being shared, which fail
/// (`NoStaging`) and are retried like any failed copy.
#[derive(Default)]
pub struct GpuNotifier {
    gpu: OnceLock<Client<GpuNotify>>,
    attach: OnceLock<AttachStaging>,
    /// The server generation the staging buffer was last shared with.
    staged: std::sync::atomic::AtomicU32,
}

fn count(n: usize) -> Result<PageCount, RtError> {
    u16::try_from(n)
        .ok()
        .and_then(PageCount::new)
        .ok_or(RtError::Gpu)
}

fn object(h: Handle) -> ObjectId {
    ObjectId::raw(h.raw())
}

/// A failed call as the core sees it: call `id` past its deadline may
/// still be carried out (`Unanswered`); any other failure was not. `id`
/// 0 names no call (request ids start at 1): for the calls whose late
/// answers nobody waits for.
fn failed<E: std::fmt::Debug>(what: &str, id: u64, e: CallError<E>) -> RtError {
    log::warn!("pager: {what}: {e}");
    match e {
        CallError::Transport(TransportError::TimedOut) => RtError::Unanswered(id),
        _ => RtError::Gpu,
    }
}

/// A failed push to a peer: past its deadline, or with its server gone
/// after it may have submitted the copy (the device outlives its driver),
/// the copy may still land (`Unanswered`: the collecting GPU keeps the
/// frames out of use); a refusal copied nothing.
fn push_failed<E: std::fmt::Debug>(id: u64, e: CallError<E>) -> RtError {
    log::warn!("pager: push to a peer: {e}");
    match e {
        CallError::Transport(
            TransportError::TimedOut
            | TransportError::PeerRestarted(_)
            | TransportError::Disconnected,
        ) => RtError::Unanswered(id),
        _ => RtError::Gpu,
    }
}

impl GpuNotifier {
    /// Attaches the GPU server (once; a second one is dropped).
    pub fn set(&self, gpu: Client<GpuNotify>) -> Result<(), AlreadyAttached> {
        self.gpu.set(gpu).map_err(|_| AlreadyAttached)
    }

    pub fn attached(&self) -> bool {
        self.gpu.get().is_some()
    }

    /// Shares the staging buffer again with each new server generation
    /// (`attach` has shared it with the first one already).
    pub fn reattach_with(&self, attach: AttachStaging) {
        let _ = self.attach.set(attach);
    }

    fn client(&self) -> Result<&Client<GpuNotify>, RtError> {
        let c = self.gpu.get().ok_or(RtError::Gpu)?;
        self.keep_staging(c);
        Ok(c)
    }

    /// Shares the staging buffer if the server restarted since it last
    /// was (one caller does; a failure leaves it to the next call).
    fn keep_staging(&self, c: &Client<GpuNotify>) {
        use std::sync::atomic::Ordering;
        let (now, had) = (c.generation(), self.staged.load(Ordering::Acquire));
        let Some(attach) = self.attach.get().filter(|_| now != had) else {
            return;
        };
        if self
            .staged
            .compare_exchange(had, now, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        match attach(c) {
            Ok(()) => log::info!("pager: staging shared with GPU server generation {now}"),
            Err(e) => {
                log::warn!("pager: sharing staging with generation {now}: {e}");
                let _ = self
                    .staged
                    .compare_exchange(now, had, Ordering::AcqRel, Ordering::Acquire);
            }
        }
    }

    /// Ids of calls that went unanswered and were answered since.
    pub fn answered_late(&self) -> Vec<u64> {
        self.gpu
            .get()
            .map(|g| g.take_answered_late())
            .unwrap_or_default()
    }

    /// Rule 8: unmap the chunk's GPU mappings; the reply is the ack.
    pub fn invalidate(&self, o: Handle, first: usize, n: usize, seq: u64) -> Result<(), RtError> {
        // Idempotent: sent again if the server restarts (no id needed).
        self.client()?
            .call(Invalidate {
                object: object(o),
                first_page: first as u64,
                count: count(n)?,
                seq: Seq::raw(seq),
            })
            .map(|_| ())
            .map_err(|e| failed("invalidate", 0, e))
    }

    /// Copies `pages` of the chunk from VRAM to `staging_offset`.
    pub fn migrate_to_ram(
        &self,
        o: Handle,
        first: usize,
        n: usize,
        pages: &PageMask,
        staging_offset: u64,
    ) -> Result<PageMask, RtError> {
        let (id, r) = self.client()?.call_with_id(MigrateToRam {
            object: object(o),
            first_page: first as u64,
            count: count(n)?,
            pages: *pages,
            staging_offset,
        });
        r.map(|r| r.copied)
            .map_err(|e| failed("migrate to RAM", id, e))
    }

    pub fn free_pages(
        &self,
        o: Handle,
        first: usize,
        n: usize,
        pages: &PageMask,
    ) -> Result<(), RtError> {
        self.client()?
            .call(FreePages {
                object: object(o),
                first_page: first as u64,
                count: count(n)?,
                pages: *pages,
            })
            .map(|_| ())
            .map_err(|e| failed("free pages", 0, e))
    }

    /// Has this GPU push `pages` of the chunk into GPU `to`'s VRAM from
    /// frame `to_first_pfn` on; returns the pages that landed.
    #[allow(clippy::too_many_arguments)]
    #[allow(clippy::too_many_arguments)]
    pub fn push_to_peer(
        &self,
        o: Handle,
        first: usize,
        n: usize,
        pages: &PageMask,
        to: u8,
        to_first_pfn: u64,
        seq: u64,
    ) -> Result<PageMask, RtError> {
        let to = GpuId::new(to).ok_or(RtError::Gpu)?;
        let (id, r) = self.client()?.call_with_id(PushToPeer {
            object: object(o),
            first_page: first as u64,
            count: count(n)?,
            pages: *pages,
            to,
            to_first_pfn,
            seq: Seq::raw(seq),
        });
        r.map(|r| r.pushed).map_err(|e| push_failed(id, e))
    }

    /// The frames the GPU server holds from (`object`, `page`) on (a
    /// restarted pager's rebuild); a server restarted meanwhile is asked
    /// again by the stub (the call is idempotent).
    pub fn frames(&self, from: (u32, u64)) -> Result<FrameRuns, RtError> {
        let q = Frames {
            from_object: from.0,
            from_page: from.1,
        };
        let r = self
            .client()?
            .call(q)
            .map_err(|e| failed("asking the GPU server for its frames", 0, e))?;
        Ok(FrameRuns::from(r))
    }

    pub fn view_gone(&self, view: Handle) {
        if let Some(gpu) = self.gpu.get() {
            if let Err(e) = gpu.call(ViewGone {
                view: ViewId::raw(view.raw()),
            }) {
                log::warn!(
                    "pager: telling the GPU server view {:#x} went away: {e}",
                    view.raw()
                );
            }
        }
    }

    pub fn view_copied(&self, view: Handle, new_view: Handle, from: u64, to: u64) {
        if let Some(gpu) = self.gpu.get() {
            if let Err(e) = gpu.call(ViewCopied {
                view: ViewId::raw(view.raw()),
                new_view: ViewId::raw(new_view.raw()),
                from,
                to,
            }) {
                log::warn!(
                    "pager: telling the GPU server view {:#x} is also at {to:#x}: {e}",
                    view.raw()
                );
            }
        }
    }

    pub fn view_part(&self, p: &PartNote) {
        if let Some(gpu) = self.gpu.get() {
            if let Err(e) = gpu.call(ViewPart {
                view: ViewId::raw(p.view.raw()),
                new_view: ViewId::raw(p.new_view.raw()),
                first_page: p.first_page as u64,
                pages: p.pages as u64,
                from: p.from,
                to: p.to,
            }) {
                log::warn!(
                    "pager: telling the GPU server part of view {:#x} lives on as {:#x}: {e}",
                    p.view.raw(),
                    p.new_view.raw()
                );
            }
        }
    }

    pub fn view_grown(&self, view: Handle, tail: Handle, first_page: usize, pages: usize) {
        if let Some(gpu) = self.gpu.get() {
            let grown = ViewGrown {
                view: ViewId::raw(view.raw()),
                tail: ViewId::raw(tail.raw()),
                first_page: first_page as u64,
                pages: pages as u64,
            };
            if let Err(e) = gpu.call(grown) {
                log::warn!(
                    "pager: telling the GPU server view {:#x} grew: {e}",
                    view.raw()
                );
            }
        }
    }
}

/// The `Runtime` methods the Linux and the Redox runtime carry out alike:
/// pauses by sleeping, staging slots from their `staging`, the GPU server
/// through their `gpu` ([`GpuNotifier`]), the clock from their `born`.
/// Expanded inside each `impl Runtime`; `$memory` is its `Memory` type.
macro_rules! os_runtime_methods {
    ($memory:ty) => {
        fn pause(&self, why: $crate::core::runtime::Pause, attempt: u32) {
            std::thread::sleep($crate::notifier::pause_for(why, attempt));
        }

        fn take_slot(&self) -> Option<usize> {
            // Slots whose late copies have landed may be lent again.
            self.staging.pool.release(&self.gpu.answered_late());
            self.staging.pool.take()
        }

        fn put_slot(&self, slot: usize) {
            self.staging.pool.put(slot);
        }

        fn quarantine_slot(&self, slot: usize, call: u64) {
            self.staging.pool.quarantine(slot, call);
        }

        fn gpu_attached(&self, gpu: u8) -> bool {
            self.gpu.attached(gpu)
        }

        fn invalidate(
            &self,
            _m: &$memory,
            gpu: u8,
            o: session::Handle,
            first: usize,
            n: usize,
            seq: u64,
        ) -> Result<(), $crate::core::runtime::RtError> {
            self.gpu.of(gpu)?.invalidate(o, first, n, seq)
        }

        fn migrate_to_ram(
            &self,
            gpu: u8,
            o: session::Handle,
            first: usize,
            n: usize,
            pages: &ipc_protocol::types::PageMask,
            slot: usize,
        ) -> Result<ipc_protocol::types::PageMask, $crate::core::runtime::RtError> {
            let offset = $crate::staging::Staging::offset(slot);
            self.gpu
                .of(gpu)?
                .migrate_to_ram(o, first, n, pages, offset)
                .map_err(|e| $crate::notifier::GpuNotifiers::tagged(gpu, e))
        }

        fn free_pages(
            &self,
            gpu: u8,
            o: session::Handle,
            first: usize,
            n: usize,
            pages: &ipc_protocol::types::PageMask,
        ) -> Result<(), $crate::core::runtime::RtError> {
            self.gpu.of(gpu)?.free_pages(o, first, n, pages)
        }

        fn push_to_peer(
            &self,
            gpu: u8,
            o: session::Handle,
            first: usize,
            n: usize,
            pages: &ipc_protocol::types::PageMask,
            to: u8,
            to_first_pfn: u64,
            seq: u64,
        ) -> Result<ipc_protocol::types::PageMask, $crate::core::runtime::RtError> {
            self.gpu
                .of(gpu)?
                .push_to_peer(o, first, n, pages, to, to_first_pfn, seq)
        }

        fn view_gone(&self, view: session::Handle) {
            self.gpu.each().for_each(|g| g.view_gone(view));
        }

        fn gpu_frames(
            &self,
            gpu: u8,
            from: (u32, u64),
        ) -> Result<$crate::core::runtime::FrameRuns, $crate::core::runtime::RtError> {
            self.gpu.of(gpu)?.frames(from)
        }

        fn view_copied(&self, view: session::Handle, new: session::Handle, from: u64, to: u64) {
            self.gpu
                .each()
                .for_each(|g| g.view_copied(view, new, from, to));
        }

        fn view_part(&self, p: &$crate::core::runtime::PartNote) {
            self.gpu.each().for_each(|g| g.view_part(p));
        }

        fn view_grown(&self, view: session::Handle, tail: session::Handle, first: usize, n: usize) {
            self.gpu
                .each()
                .for_each(|g| g.view_grown(view, tail, first, n));
        }

        fn now_us(&self) -> u64 {
            u64::try_from(self.born.elapsed().as_micros()).unwrap_or(u64::MAX)
        }
    };
}
pub(crate) use os_runtime_methods;

/// How long a runtime that sleeps waits before try `attempt` + 1.
pub fn pause_for(why: crate::core::runtime::Pause, attempt: u32) -> std::time::Duration {
    use crate::core::runtime::Pause;
    use std::time::Duration;
    match why {
        Pause::FaultRetry => {
            Duration::from_micros(100 << attempt.min(10)).min(Duration::from_millis(100))
        }
        Pause::ProtectRetry => Duration::from_micros(50 << attempt.min(6)),
        Pause::BringBack => Duration::from_millis(1),
        Pause::FinalizeDrain => Duration::from_micros(200),
        Pause::SpaceBudget => Duration::from_millis(5),
        Pause::SyncViews | Pause::ViewOrder => Duration::from_micros(20 << attempt.min(6)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A push whose copy may have been submitted is never taken for one
    /// that copied nothing.
    #[test]
    fn a_push_that_may_still_land_is_unanswered() {
        use TransportError::*;
        for t in [TimedOut, PeerRestarted(2), Disconnected] {
            let e: CallError<()> = CallError::Transport(t);
            assert_eq!(push_failed(7, e), RtError::Unanswered(7), "{t:?}");
        }
        let refused: CallError<()> = CallError::Server(());
        assert_eq!(push_failed(7, refused), RtError::Gpu);
        let host: CallError<()> = CallError::Transport(Host(5));
        assert_eq!(push_failed(7, host), RtError::Gpu);
    }
}
