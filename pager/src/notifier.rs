//! The GPU server's notifier (`GpuNotify`) as both runtimes call it: the
//! rule 8 invalidation, migration to RAM into a staging slot, freeing VRAM
//! pages, and view changes. Transport-agnostic: the client is over a
//! seqpacket socket on Linux and over a scheme handle on Redox.

use std::sync::OnceLock;

use ipc_protocol::client::Client;
use ipc_protocol::interfaces::gpu_notify::{
    FreePages, GpuNotify, Invalidate, MigrateToRam, ViewCopied, ViewGone, ViewGrown, ViewPart,
};
use ipc_protocol::types::{ObjectId, PageCount, PageMask, Seq, ViewId};
use session::Handle;

use crate::core::runtime::{PartNote, RtError};

/// A GPU server was attached already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlreadyAttached;

/// The GPU server's notifier, once it is attached.
#[derive(Default)]
pub struct GpuNotifier {
    gpu: OnceLock<Client<GpuNotify>>,
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

impl GpuNotifier {
    /// Attaches the GPU server (once; a second one is dropped).
    pub fn set(&self, gpu: Client<GpuNotify>) -> Result<(), AlreadyAttached> {
        self.gpu.set(gpu).map_err(|_| AlreadyAttached)
    }

    pub fn attached(&self) -> bool {
        self.gpu.get().is_some()
    }

    fn client(&self) -> Result<&Client<GpuNotify>, RtError> {
        self.gpu.get().ok_or(RtError::Gpu)
    }

    /// Rule 8: unmap the chunk's GPU mappings; the reply is the ack.
    pub fn invalidate(&self, o: Handle, first: usize, n: usize, seq: u64) -> Result<(), RtError> {
        self.client()?
            .call(Invalidate {
                object: object(o),
                first_page: first as u64,
                count: count(n)?,
                seq: Seq::raw(seq),
            })
            .map(|_| ())
            .map_err(|e| {
                log::warn!("pager: invalidate: {e}");
                RtError::Gpu
            })
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
        self.client()?
            .call(MigrateToRam {
                object: object(o),
                first_page: first as u64,
                count: count(n)?,
                pages: *pages,
                staging_offset,
            })
            .map(|r| r.copied)
            .map_err(|e| {
                log::warn!("pager: migrate to RAM: {e}");
                RtError::Gpu
            })
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
            .map_err(|_| RtError::Gpu)
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
