//! The userfaultfd calls the floors make (`include/uapi/linux/userfaultfd.h`
//! through linux-raw-sys). The floors are a bare mechanism measured beside
//! the pager, so they carry their own few ioctls and link no server crate.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use linux_raw_sys::general as uapi;
use linux_raw_sys::ioctl as nr;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::ioctl::{ioctl, Updater};

/// How a floor's pager resolves a fault (the two floors of issue 15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Resolve {
    /// Registered MISSING; each fault is one `UFFDIO_COPY` of the chunk.
    Copy,
    /// Registered MISSING|MINOR with `UFFD_FEATURE_MINOR_SHMEM`; the page
    /// cache is filled before the timed phase, each fault is one
    /// `UFFDIO_CONTINUE` of the chunk.
    Minor,
}

/// What one resolve call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// The whole range is mapped now (and its waiters woken).
    Mapped,
    /// Its first page was mapped already (an earlier fault of the same
    /// chunk, as a rule); nothing was mapped.
    AlreadyThere,
}

/// A fault read from the descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub address: u64,
    pub minor: bool,
}

pub struct FloorUffd {
    fd: OwnedFd,
}

/// A userfaultfd of the calling process (the floor's client), non-blocking
/// so the pager side can poll it.
pub fn create() -> Result<OwnedFd, Errno> {
    use rustix::mm::UserfaultfdFlags;
    // SAFETY: creating the descriptor has no memory-safety preconditions;
    // rustix marks it unsafe because its ioctls can change mappings.
    unsafe { rustix::mm::userfaultfd(UserfaultfdFlags::CLOEXEC | UserfaultfdFlags::NONBLOCK) }
}

impl FloorUffd {
    pub fn new(fd: OwnedFd) -> Self {
        Self { fd }
    }

    /// The API handshake and the registration of `[start, start + len)`.
    pub fn register(&self, how: Resolve, start: u64, len: u64) -> Result<(), Errno> {
        let (features, mode, needed) = match how {
            Resolve::Copy => (0, uapi::UFFDIO_REGISTER_MODE_MISSING, uapi::_UFFDIO_COPY),
            Resolve::Minor => (
                uapi::UFFD_FEATURE_MINOR_SHMEM as u64,
                uapi::UFFDIO_REGISTER_MODE_MISSING | uapi::UFFDIO_REGISTER_MODE_MINOR,
                uapi::_UFFDIO_CONTINUE,
            ),
        };
        let mut api = uapi::uffdio_api {
            api: uapi::UFFD_API as u64,
            features,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_API reads and writes a `uffdio_api`.
        unsafe { ioctl(&self.fd, Updater::<{ nr::UFFDIO_API }, _>::new(&mut api))? };
        let mut reg = uapi::uffdio_register {
            range: uapi::uffdio_range { start, len },
            mode: mode as u64,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER reads and writes a `uffdio_register`.
        unsafe {
            ioctl(
                &self.fd,
                Updater::<{ nr::UFFDIO_REGISTER }, _>::new(&mut reg),
            )?
        };
        // The kernel says which resolving ioctls the range supports.
        if reg.ioctls & (1u64 << needed) == 0 {
            return Err(Errno::NOTSUP);
        }
        Ok(())
    }

    /// `UFFDIO_COPY` of `len` bytes from `src` (in this process) to `dst`
    /// in the client, waking its waiters.
    ///
    /// # Safety
    /// `src` must be readable for `len` bytes.
    pub unsafe fn copy(&self, dst: u64, src: *const u8, len: u64) -> Result<Resolved, Errno> {
        self.resolve_loop(len, |done| {
            let mut c = uapi::uffdio_copy {
                dst: dst + done,
                src: src as u64 + done,
                len: len - done,
                mode: 0,
                copy: 0,
            };
            // SAFETY: UFFDIO_COPY reads a `uffdio_copy` and writes `copy`;
            // the caller vouches for `src`.
            let r = unsafe { ioctl(&self.fd, Updater::<{ nr::UFFDIO_COPY }, _>::new(&mut c)) };
            (r, c.copy)
        })
    }

    /// `UFFDIO_CONTINUE` over `[start, start + len)`: maps the page-cache
    /// pages already there and wakes the waiters.
    pub fn continue_range(&self, start: u64, len: u64) -> Result<Resolved, Errno> {
        self.resolve_loop(len, |done| {
            let mut c = uapi::uffdio_continue {
                range: uapi::uffdio_range {
                    start: start + done,
                    len: len - done,
                },
                mode: 0,
                mapped: 0,
            };
            // SAFETY: UFFDIO_CONTINUE reads a `uffdio_continue` and writes `mapped`.
            let r = unsafe { ioctl(&self.fd, Updater::<{ nr::UFFDIO_CONTINUE }, _>::new(&mut c)) };
            (r, c.mapped)
        })
    }

    /// Runs one resolving ioctl until the range is done. A partial result
    /// comes back as `EAGAIN` with the bytes done; `EEXIST` at the first
    /// byte means an earlier fault mapped the chunk; a page found mapped
    /// further on is skipped.
    fn resolve_loop(
        &self,
        len: u64,
        mut call: impl FnMut(u64) -> (Result<(), Errno>, i64),
    ) -> Result<Resolved, Errno> {
        let mut done = 0u64;
        // A retry that never progresses is an error, not a spin.
        let mut idle_retries = 0;
        while done < len {
            let (r, n) = call(done);
            match r {
                Ok(()) => return Ok(Resolved::Mapped),
                Err(Errno::AGAIN) | Err(Errno::INTR) if n > 0 => done += n as u64,
                Err(e @ (Errno::AGAIN | Errno::INTR)) => {
                    idle_retries += 1;
                    if idle_retries > 10_000 {
                        return Err(e);
                    }
                    std::thread::yield_now()
                }
                Err(Errno::EXIST) if done == 0 => return Ok(Resolved::AlreadyThere),
                // A page further on is there already: map the ones after it.
                Err(Errno::EXIST) => done += 4096,
                Err(e) => return Err(e),
            }
        }
        Ok(Resolved::Mapped)
    }

    /// Wakes the threads waiting on faults in the range.
    pub fn wake(&self, start: u64, len: u64) -> Result<(), Errno> {
        let mut range = uapi::uffdio_range { start, len };
        // SAFETY: UFFDIO_WAKE reads a `uffdio_range`.
        unsafe { ioctl(&self.fd, Updater::<{ nr::UFFDIO_WAKE }, _>::new(&mut range)) }
    }

    /// Waits up to `timeout` for faults; `true` when some may be queued.
    pub fn wait_readable(&self, timeout: Duration) -> bool {
        let ts = Timespec {
            tv_sec: timeout.as_secs() as i64,
            tv_nsec: timeout.subsec_nanos() as _,
        };
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        !matches!(poll(&mut fds, Some(&ts)), Ok(0) | Err(Errno::INTR))
    }

    /// Reads the queued faults (up to 64 at a time) into `out`. Without
    /// view-change features asked for, faults are the only events.
    pub fn read_faults(&self, out: &mut Vec<Fault>) -> Result<(), Errno> {
        const MSG: usize = core::mem::size_of::<uapi::uffd_msg>();
        let mut buf = [0u8; MSG * 64];
        let n = match rustix::io::read(self.fd.as_fd(), &mut buf) {
            Ok(n) => n,
            Err(Errno::AGAIN) | Err(Errno::INTR) => return Ok(()),
            Err(e) => return Err(e),
        };
        for m in buf[..n].chunks_exact(MSG) {
            if m[0] as u32 != uapi::UFFD_EVENT_PAGEFAULT {
                continue;
            }
            // struct uffd_msg: event at 0; pagefault.flags at 8, address at 16.
            let word = |off: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&m[off..off + 8]);
                u64::from_le_bytes(b)
            };
            out.push(Fault {
                address: word(16),
                minor: word(8) & uapi::UFFD_PAGEFAULT_FLAG_MINOR as u64 != 0,
            });
        }
        Ok(())
    }
}
