//! `Gpu::BindView` on the host: the pager opens the client's view (it
//! checks the view is the caller's) and hands over the object's sealed
//! memfd; the first bind of an object DMA-maps it (one of the device's DMA
//! slots, charged to the caller's `dma_slots` and its frame words to
//! `metadata_bytes`; the words themselves come from the metadata arena,
//! `OutOfMetadata` when it is full), then the core binds it (`server.rs`).

use ipc_protocol::client::CallError;
use ipc_protocol::interfaces::gpu::{GpuError, BIND_READ_ONLY};
use ipc_protocol::interfaces::pager_migrate::{OpenView, ViewOpened};
use ipc_protocol::types::ViewId;

use crate::host::GpuServer;
use crate::journal::BindingRecord;
use crate::server::USER_VA_END;
use crate::session::{self as ses, GpuSession};

const PAGE: u64 = 4096;
/// Bytes of metadata per object page (its frame word, `server.rs`).
const META_PER_PAGE: u64 = 4;

impl GpuServer {
    pub(crate) fn bind_view(
        &self,
        owner: u64,
        vm: u32,
        view: ViewId,
        gpu_addr: u64,
        flags: u32,
    ) -> Result<(), GpuError> {
        let inner = &self.inner;
        inner.asid_of(owner, vm).ok_or(GpuError::NoSuchVm)?;
        if !gpu_addr.is_multiple_of(PAGE) || gpu_addr >= USER_VA_END || flags & !BIND_READ_ONLY != 0
        {
            return Err(GpuError::BadRange);
        }
        let opened = self.open_view(owner, view)?;
        let r = BindingRecord {
            view: view.get(),
            gpu_addr,
            object: opened.object.get(),
            first_page: opened.object_first_page,
            pages: opened.pages,
            read_only: flags & BIND_READ_ONLY != 0,
        };
        self.bind_opened(owner, vm, &r, None)
    }

    /// Binds `r`, whose view [`Self::open_view`] opened, in `owner`'s VM
    /// `vm` (its journal record new, or the predecessor's in `slot`). An
    /// object this leaves unbound gives its DMA slot back.
    pub(crate) fn bind_opened(
        &self,
        owner: u64,
        vm: u32,
        r: &BindingRecord,
        slot: Option<u32>,
    ) -> Result<(), GpuError> {
        let bound = self.inner.insert_binding(owner, vm, r, slot);
        if bound.is_err() {
            self.inner.forget_if_unused(r.object);
        }
        bound
    }

    /// Has the pager open `owner`'s view `view` (it checks the view is
    /// the caller's) and DMA-maps its object unless that is done already.
    pub(crate) fn open_view(&self, owner: u64, view: ViewId) -> Result<ViewOpened, GpuError> {
        let inner = &self.inner;
        let (opened, mut fds) = inner
            .hw
            .migrate
            .call_with_handles(
                OpenView {
                    view,
                    client: owner,
                },
                vec![],
            )
            .map_err(|e| match e {
                CallError::Server(_) => GpuError::NoSuchView,
                _ => GpuError::PagerUnavailable,
            })?;
        let memfd = fds.pop().ok_or(GpuError::PagerUnavailable)?;
        let object = opened.object.get();
        // An object a restarted server adopted is known but not mapped.
        if !inner.object_mapped(object) {
            let session = inner.session(owner);
            self.add_object(&session, object, memfd)?;
        }
        Ok(opened)
    }

    /// DMA-maps `object` (its memfd) for `session`, charging it.
    fn add_object(
        &self,
        session: &std::sync::Arc<GpuSession>,
        object: u32,
        memfd: std::os::fd::OwnedFd,
    ) -> Result<(), GpuError> {
        let inner = &self.inner;
        let size = rustix::fs::fstat(&memfd)
            .map_err(|_| GpuError::PagerUnavailable)?
            .st_size;
        let size = u64::try_from(size).map_err(|_| GpuError::PagerUnavailable)?;
        let pages = size / PAGE;
        let meta = pages
            .checked_mul(META_PER_PAGE)
            .ok_or(GpuError::OverBudget)?;
        session.charge(ses::dma_slots, 1)?;
        if let Err(e) = session.charge(ses::metadata_bytes, meta) {
            session.release(ses::dma_slots, 1);
            return Err(e);
        }
        let undo = || {
            session.release(ses::dma_slots, 1);
            session.release(ses::metadata_bytes, meta);
        };
        let Some(slot) = inner.hw.take_slot() else {
            undo();
            return Err(GpuError::OutOfMetadata);
        };
        let mapped = rustix::io::fcntl_dupfd_cloexec(&memfd, 0)
            .map_err(|_| GpuError::PagerUnavailable)
            .and_then(|dup| {
                inner
                    .hw
                    .dev
                    .bar
                    .dma_map(slot, dup, size)
                    .map_err(|_| GpuError::DeviceLost)
            });
        let dma = match mapped {
            Ok(dma) => dma,
            Err(e) => {
                inner.hw.give_back_slot(slot);
                undo();
                return Err(e);
            }
        };
        let added =
            inner.add_object_for(Some(session.clone()), object, slot, dma, Some(memfd), pages);
        if added != Ok(true) {
            // Another bind added it meanwhile, or the metadata arena is full.
            use crate::platform::Platform;
            inner.hw.dma_unmap(slot);
            undo();
        }
        added.map(|_| ())
    }
}
