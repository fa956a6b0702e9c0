//! The pager's Redox runtime: the same core over `/scheme/shm` objects and
//! the GPU server's notifier through a scheme handle. Redox delivers no
//! page faults to a user pager yet (docs/redox.md section 5), so there is
//! no fault channel: a port cannot be made ([`NoPort`] has no value), and
//! `AttachView` is answered `NotSupported` naming the missing kernel call.
//! Objects, their GPU side (`PagerMigrate`: collect, finalize, migration
//! to RAM) and reclaim are served; dropping the RAM copy of pages that
//! moved to VRAM needs 5.4 (`Revoke`) and fails with its name.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::shm::ShmMemory;
use crate::core::runtime::{KernelCall, RtError, Runtime, Source};
use crate::core::view::{Space, PAGE};
use crate::core::Core;
use crate::notifier::GpuNotifiers;
use crate::staging::{Staging, SLOT_BYTES};

/// A client address space's fault channel: none can exist on Redox today.
pub enum NoPort {}

pub struct RedoxRuntime {
    pub staging: Staging,
    zeros: Vec<u8>,
    pub gpu: GpuNotifiers,
    /// Where `now_us` counts from.
    born: std::time::Instant,
}

impl RedoxRuntime {
    pub fn new(staging: Staging) -> Self {
        Self {
            staging,
            zeros: vec![0u8; SLOT_BYTES],
            gpu: GpuNotifiers::default(),
            born: std::time::Instant::now(),
        }
    }

    /// Pages `index..index + pages` of `src`.
    fn source(&self, src: Source, index: usize, pages: usize) -> Option<&[u8]> {
        let start = index.checked_mul(PAGE as usize)?;
        let len = pages.checked_mul(PAGE as usize)?;
        if start.checked_add(len)? > SLOT_BYTES {
            return None;
        }
        let base = match src {
            Source::Zeros => self.zeros.as_ptr(),
            Source::Staging(slot) => self.staging.ptr(slot)?,
        };
        // SAFETY: [start, start + len) is inside the zero page run or the
        // slot (checked above); a staging slot is ours while the core
        // holds it, and the GPU server wrote it before its reply came.
        Some(unsafe { std::slice::from_raw_parts(base.add(start), len) })
    }
}

fn io(e: std::io::Error) -> RtError {
    RtError::Host(e.raw_os_error().unwrap_or(0))
}

impl Runtime for RedoxRuntime {
    crate::notifier::os_runtime_methods!(ShmMemory);

    type Handle = OwnedFd;
    type Memory = ShmMemory;
    type Port = NoPort;

    fn create_memory(&self, bytes: u64) -> Result<(ShmMemory, OwnedFd), RtError> {
        let m = ShmMemory::create(bytes)?;
        let client = m.fd.try_clone().map_err(io)?;
        Ok((m, client))
    }

    fn share_memory(&self, m: &ShmMemory) -> Result<OwnedFd, RtError> {
        m.fd.try_clone().map_err(io)
    }

    fn drop_pages(&self, _m: &ShmMemory, _first: usize, _pages: usize) -> Result<(), RtError> {
        Err(RtError::Unsupported(KernelCall::Revoke))
    }

    fn write_pages(
        &self,
        m: &ShmMemory,
        first: usize,
        src: Source,
        src_index: usize,
        pages: usize,
    ) -> Result<(), RtError> {
        let data = self.source(src, src_index, pages).ok_or(RtError::Host(0))?;
        let offset = first.checked_mul(PAGE as usize).ok_or(RtError::Host(0))?;
        m.write(offset, data).ok_or(RtError::Unmapped)
    }

    fn open_port(&self, _h: OwnedFd) -> Result<NoPort, RtError> {
        Err(RtError::Unsupported(KernelCall::FaultUpcall))
    }

    fn register(&self, p: &NoPort, _addr: u64, _len: u64) -> Result<(), RtError> {
        match *p {}
    }

    fn unregister(&self, p: &NoPort, _addr: u64, _len: u64) -> Result<(), RtError> {
        match *p {}
    }

    fn write_protect(&self, p: &NoPort, _: u64, _: u64, _: bool) -> Result<(), RtError> {
        match *p {}
    }

    fn install(
        &self,
        p: &NoPort,
        _m: &ShmMemory,
        _dst: u64,
        _page: usize,
        _src: Source,
        _src_index: usize,
        _pages: usize,
    ) -> (usize, Option<RtError>) {
        match *p {}
    }

    fn wake(&self, p: &NoPort, _addr: u64, _len: u64) -> Result<(), RtError> {
        match *p {}
    }

    fn start_space(
        &self,
        _core: &Arc<Core<Self>>,
        space: &Arc<Space<Self>>,
    ) -> Result<(), RtError> {
        match space.port {}
    }

    fn stop_space(&self, space: &Space<Self>) {
        match space.port {}
    }

    fn threads_per_space(&self) -> u64 {
        0
    }
}
