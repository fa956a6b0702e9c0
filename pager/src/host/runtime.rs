//! The core's side effects on the Linux host (DESIGN.md 8): memfd objects
//! sealed against shrinking and growing, userfaultfd calls on the client's
//! descriptor, the staging buffer, and the GPU server's `GpuNotify`.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use rustix::fs::{fallocate, FallocateFlags, MemfdFlags, SealFlags};
use rustix::io::Errno;

use std::os::fd::{AsFd, BorrowedFd};

use ipc_protocol::keeper::{self, KeeperMsg};
use ipc_protocol::transport::{Transport, TransportError};

use super::space::HostPort;
use super::staging::{Staging, SLOT_BYTES};
use super::uffd::{self, Uffd};
use crate::core::runtime::{FileId, FileMapping, Kept, RtError, Runtime, Source};
use crate::core::view::{Space, PAGE};
use crate::core::Core;
use crate::notifier::GpuNotifiers;

pub struct HostRuntime {
    /// Fault workers per address space (one more thread reads its events).
    pub workers: usize,
    pub staging: Staging,
    /// A 2 MiB zero buffer for first-touch fills.
    zeros: Vec<u8>,
    pub gpu: GpuNotifiers,
    /// Where `now_us` counts from.
    born: std::time::Instant,
    /// `init`'s descriptor keeper (`--keep-fd`), when the pager is
    /// restartable (`crate::journal`).
    pub keeper: std::sync::OnceLock<Arc<dyn Transport>>,
    /// Fork children past their client's budget (`orphans.rs`).
    pub orphans: Arc<super::orphans::Orphans>,
}

impl HostRuntime {
    pub fn new(workers: usize, staging_slots: usize) -> rustix::io::Result<Self> {
        Ok(Self {
            workers: workers.max(1),
            staging: Staging::new(staging_slots)?,
            zeros: vec![0u8; SLOT_BYTES],
            gpu: GpuNotifiers::default(),
            born: std::time::Instant::now(),
            keeper: std::sync::OnceLock::new(),
            orphans: Arc::default(),
        })
    }

    /// Sends the keeper `msg` with a duplicate of `fd`.
    fn to_keeper(&self, msg: KeeperMsg, fd: Option<BorrowedFd<'_>>) {
        let Some(k) = self.keeper.get() else { return };
        let dup = match fd
            .map(|fd| rustix::io::fcntl_dupfd_cloexec(fd, 0))
            .transpose()
        {
            Ok(d) => d,
            Err(e) => {
                log::error!("pager: keeper {msg:?}: dup: {e}; a restart would not find it");
                return;
            }
        };
        match keeper::send(&**k, msg, dup) {
            Ok(()) => {}
            // Init is gone (the system stops): there is no restart to come.
            Err(TransportError::Disconnected) => log::debug!("pager: keeper {msg:?}: init is gone"),
            Err(e) => log::error!("pager: keeper {msg:?}: {e}; a restart would not find it"),
        }
    }

    /// Page `index` of `src` in our own memory.
    fn source(&self, src: Source, index: usize) -> Option<*const u8> {
        let base = match src {
            Source::Zeros => self.zeros.as_ptr(),
            Source::Staging(slot) => self.staging.ptr(slot)?,
        };
        // SAFETY: `index` is a page of a chunk (< 512): inside the buffer.
        (index < SLOT_BYTES / PAGE as usize).then(|| unsafe { base.add(index * PAGE as usize) })
    }
}

/// An errno in the core's terms.
pub fn rt(e: Errno) -> RtError {
    match e {
        Errno::AGAIN => RtError::Again,
        Errno::NOENT => RtError::Unmapped,
        Errno::EXIST => RtError::Exists,
        Errno::SRCH => RtError::Gone,
        e => RtError::Host(e.raw_os_error()),
    }
}

impl Runtime for HostRuntime {
    crate::notifier::os_runtime_methods!(OwnedFd);

    type Handle = OwnedFd;
    type Memory = OwnedFd;
    type Port = HostPort;

    /// A memfd sealed so that no one (the client included) can shrink or
    /// grow it once it is handed out: the GPU server and the device model
    /// size their view of it once.
    fn create_memory(&self, bytes: u64) -> Result<(OwnedFd, OwnedFd), RtError> {
        let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
        let memfd = rustix::fs::memfd_create("svm-object", flags).map_err(rt)?;
        rustix::fs::ftruncate(&memfd, bytes).map_err(rt)?;
        rustix::fs::fcntl_add_seals(
            &memfd,
            SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL,
        )
        .map_err(rt)?;
        let client = rustix::io::fcntl_dupfd_cloexec(&memfd, 0).map_err(rt)?;
        Ok((memfd, client))
    }

    fn share_memory(&self, m: &OwnedFd) -> Result<OwnedFd, RtError> {
        rustix::io::fcntl_dupfd_cloexec(m, 0).map_err(rt)
    }

    fn drop_pages(&self, m: &OwnedFd, first: usize, pages: usize) -> Result<(), RtError> {
        let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        fallocate(m, flags, first as u64 * PAGE, pages as u64 * PAGE).map_err(rt)
    }

    /// A `pwrite` fills each page under its page-cache lock, so a reader
    /// through some other mapping sees it whole or not at all.
    fn write_pages(
        &self,
        m: &OwnedFd,
        first: usize,
        src: Source,
        src_index: usize,
        pages: usize,
    ) -> Result<(), RtError> {
        let ptr = self.source(src, src_index).ok_or(RtError::Host(0))?;
        if src_index + pages > SLOT_BYTES / PAGE as usize {
            return Err(RtError::Host(0));
        }
        // SAFETY: the source buffer holds `pages` pages from `src_index` (checked).
        let data = unsafe { std::slice::from_raw_parts(ptr, pages * PAGE as usize) };
        let off = first as u64 * PAGE;
        let mut written = 0;
        while written < data.len() {
            written += rustix::io::pwrite(m, &data[written..], off + written as u64).map_err(rt)?;
        }
        Ok(())
    }

    fn open_port(&self, h: OwnedFd) -> Result<HostPort, RtError> {
        let uffd = Uffd::new(h);
        uffd.handshake(uffd::features())
            .map_err(|_| RtError::BadHandle)?;
        HostPort::new(uffd).map_err(|e| RtError::Host(e.raw_os_error().unwrap_or(0)))
    }

    fn register(&self, p: &HostPort, addr: u64, len: u64) -> Result<(), RtError> {
        p.uffd.register(addr, len).map_err(rt)
    }

    fn unregister(&self, p: &HostPort, addr: u64, len: u64) -> Result<(), RtError> {
        p.uffd.unregister(addr, len).map_err(rt)
    }

    fn write_protect(&self, p: &HostPort, addr: u64, len: u64, on: bool) -> Result<(), RtError> {
        p.uffd.write_protect(addr, len, on).map_err(rt)
    }

    fn install(
        &self,
        p: &HostPort,
        _m: &OwnedFd,
        dst: u64,
        _page: usize,
        src: Source,
        src_index: usize,
        pages: usize,
    ) -> (usize, Option<RtError>) {
        let Some(ptr) = self.source(src, src_index) else {
            return (0, Some(RtError::Host(0)));
        };
        if src_index + pages > SLOT_BYTES / PAGE as usize {
            return (0, Some(RtError::Host(0)));
        }
        // SAFETY: the source holds `pages` pages from `src_index` (checked).
        let (bytes, stop) = unsafe { p.uffd.copy(dst, ptr, pages as u64 * PAGE) };
        ((bytes / PAGE) as usize, stop.map(rt))
    }

    fn wake(&self, p: &HostPort, addr: u64, len: u64) -> Result<(), RtError> {
        p.uffd.wake(addr, len).map_err(rt)
    }

    fn poison(&self, p: &HostPort, addr: u64, len: u64) -> Result<(), RtError> {
        if !uffd::poison_supported() {
            return Err(RtError::Host(0));
        }
        p.uffd.poison(addr, len).map_err(rt)
    }

    fn start_space(&self, core: &Arc<Core<Self>>, space: &Arc<Space<Self>>) -> Result<(), RtError> {
        super::space::start(core, space, self.workers)
            .map_err(|e| RtError::Host(e.raw_os_error().unwrap_or(0)))
    }

    fn stop_space(&self, space: &Space<Self>) {
        space.port.stop();
    }

    fn threads_per_space(&self) -> u64 {
        1 + self.workers as u64
    }

    /// Clearing write protection on a page no view covers: `ESRCH` once
    /// the address space is gone, and nothing at all while it lives (the
    /// page is registered with no userfaultfd of ours: `ENOENT`).
    fn process_gone(&self, p: &HostPort, spare: u64) -> bool {
        p.uffd.write_protect(spare, PAGE, false) == Err(rustix::io::Errno::SRCH)
    }

    fn mapping_at(&self, tid: u32, addr: u64) -> Option<FileMapping> {
        let maps = std::fs::read_to_string(format!("/proc/{tid}/maps")).ok()?;
        maps.lines()
            .filter_map(super::maps::parse_line)
            .find(|m| addr >= m.start && addr < m.end)
    }

    fn keep_memory(&self, kept: Kept, m: &OwnedFd) {
        self.to_keeper(KeeperMsg::Keep(kept.key()), Some(m.as_fd()));
    }

    fn keep_port(&self, kept: Kept, p: &HostPort) {
        self.to_keeper(KeeperMsg::Keep(kept.key()), Some(p.uffd.as_fd()));
    }

    fn drop_kept(&self, kept: Kept) {
        self.to_keeper(KeeperMsg::Drop(kept.key()), None);
    }

    /// The memfd a predecessor made: sealed against shrinking and growing
    /// (as `create_memory` leaves it) and `bytes` long.
    fn adopt_memory(&self, h: OwnedFd, bytes: u64) -> Result<OwnedFd, RtError> {
        let seals = rustix::fs::fcntl_get_seals(&h).map_err(rt)?;
        let size = rustix::fs::fstat(&h).map_err(rt)?.st_size;
        if !seals.contains(SealFlags::SHRINK | SealFlags::GROW) || size as u64 != bytes {
            return Err(RtError::BadHandle);
        }
        Ok(h)
    }

    /// A userfaultfd past its handshake: its ranges are still registered.
    fn reopen_port(&self, h: OwnedFd) -> Result<HostPort, RtError> {
        HostPort::new(Uffd::new(h)).map_err(|e| RtError::Host(e.raw_os_error().unwrap_or(0)))
    }

    /// The memfd's data and holes (`SEEK_DATA`/`SEEK_HOLE`, page by page
    /// of the extents they report).
    fn data_pages(&self, m: &OwnedFd, pages: usize) -> Result<Vec<bool>, RtError> {
        use rustix::fs::{seek, SeekFrom};
        let end = pages as u64 * PAGE;
        let mut data = vec![false; pages];
        let mut at = 0u64;
        while at < end {
            let start = match seek(m, SeekFrom::Data(at)) {
                Ok(s) => s,
                Err(Errno::NXIO) => break,
                Err(e) => return Err(rt(e)),
            };
            let stop = seek(m, SeekFrom::Hole(start)).map_err(rt)?.min(end);
            for page in start / PAGE..stop.div_ceil(PAGE) {
                if let Some(d) = data.get_mut(page as usize) {
                    *d = true;
                }
            }
            at = stop.max(start + 1);
        }
        Ok(data)
    }

    fn is_file(&self, m: &OwnedFd, file: FileId) -> bool {
        rustix::fs::fstat(m).is_ok_and(|st| {
            let dev = st.st_dev;
            st.st_ino == file.ino
                && rustix::fs::major(dev) == file.major
                && rustix::fs::minor(dev) == file.minor
        })
    }
}
