//! A client's userfaultfd, held by the pager (DESIGN.md 8). The ioctls act
//! on the address space of the process that created the descriptor, so the
//! pager resolves faults in the client's views from its own threads.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use linux_raw_sys::general as uapi;
use linux_raw_sys::ioctl as nr;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::ioctl::{ioctl, Updater};

/// Write protection on shmem, without view-change events: what a bare
/// handler needs (the benchmark floor).
pub const WP_FEATURES: u64 =
    (uapi::UFFD_FEATURE_WP_HUGETLBFS_SHMEM | uapi::UFFD_FEATURE_PAGEFAULT_FLAG_WP) as u64;

/// Features the pager asks for: write-protection on shmem (the migration to
/// VRAM blocks writers with it), and the view-change events it follows:
/// fork (the child's registered ranges arrive on a new descriptor), remap,
/// unmap, and `madvise` removal (SVM memory is the client's anonymous
/// memory: `MADV_DONTNEED` drops its data, `core/removed.rs`). These events
/// hold the client's call until a service thread reads them, so every
/// registered range has readers; a range is unregistered before its
/// readers stop.
pub const FEATURES: u64 = WP_FEATURES
    | (uapi::UFFD_FEATURE_EVENT_FORK
        // The faulting thread's id: the pager reads its mappings to follow
        // a view an mremap grew (`core/growth.rs`).
        | uapi::UFFD_FEATURE_THREAD_ID
        | uapi::UFFD_FEATURE_EVENT_REMAP
        | uapi::UFFD_FEATURE_EVENT_REMOVE
        | uapi::UFFD_FEATURE_EVENT_UNMAP) as u64;

/// `UFFDIO_WRITEPROTECT_MODE_WP` (`include/uapi/linux/userfaultfd.h`,
/// bit 0); linux-raw-sys does not export it.
const WRITEPROTECT_MODE_WP: u64 = 1 << 0;
/// `_IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)` (Linux 6.6; not
/// in linux-raw-sys's ioctl list).
const UFFDIO_POISON: u32 = 0xc020_aa08;
/// `UFFD_FEATURE_POISON`.
const FEATURE_POISON: u64 = 1 << 14;

/// Whether this kernel can poison a userfaultfd range (asked once, on a
/// userfaultfd of our own: a failed handshake cannot be retried on the
/// client's).
pub fn poison_supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        create_for_client()
            .ok()
            .map(Uffd::new)
            .and_then(|u| u.handshake(0).ok())
            .is_some_and(|f| f & FEATURE_POISON != 0)
    })
}

/// The features the pager asks of a client's userfaultfd.
pub fn features() -> u64 {
    FEATURES
        | if poison_supported() {
            FEATURE_POISON
        } else {
            0
        }
}

/// `UFFDIO_COPY_MODE_DONTWAKE` (same header, bit 0).
const COPY_MODE_DONTWAKE: u64 = 1 << 0;

/// One event read from a userfaultfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    PageFault {
        address: u64,
        write: bool,
        wp: bool,
        /// The faulting thread (0: unknown).
        tid: u32,
    },
    /// The client forked; the child's copy of the registered ranges reports
    /// to the new descriptor `fd`, now installed in the pager.
    Fork {
        fd: i32,
    },
    Remap {
        from: u64,
        to: u64,
        len: u64,
    },
    Remove {
        start: u64,
        end: u64,
    },
    Unmap {
        start: u64,
        end: u64,
    },
    Unknown(u8),
}

pub struct Uffd {
    fd: OwnedFd,
}

impl Uffd {
    pub fn new(fd: OwnedFd) -> Self {
        Self { fd }
    }

    /// The descriptor (the keeper gets a duplicate of it).
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.fd)
    }

    /// The API handshake: must be the first ioctl on a new descriptor.
    pub fn handshake(&self, features: u64) -> Result<u64, Errno> {
        let mut api = uapi::uffdio_api {
            api: uapi::UFFD_API as u64,
            features,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_API reads and writes a `uffdio_api`.
        unsafe { ioctl(&self.fd, Updater::<{ nr::UFFDIO_API }, _>::new(&mut api))? };
        Ok(api.features)
    }

    /// Registers `[start, start + len)` for missing and write-protect faults.
    pub fn register(&self, start: u64, len: u64) -> Result<(), Errno> {
        let mut reg = uapi::uffdio_register {
            range: uapi::uffdio_range { start, len },
            mode: (uapi::UFFDIO_REGISTER_MODE_MISSING | uapi::UFFDIO_REGISTER_MODE_WP) as u64,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER reads and writes a `uffdio_register`.
        unsafe {
            ioctl(
                &self.fd,
                Updater::<{ nr::UFFDIO_REGISTER }, _>::new(&mut reg),
            )
        }
    }

    /// Unregisters `[start, start + len)`: faults there are the kernel's
    /// again and view changes there send no events.
    pub fn unregister(&self, start: u64, len: u64) -> Result<(), Errno> {
        let mut range = uapi::uffdio_range { start, len };
        // SAFETY: UFFDIO_UNREGISTER reads a `uffdio_range`.
        unsafe {
            ioctl(
                &self.fd,
                Updater::<{ nr::UFFDIO_UNREGISTER }, _>::new(&mut range),
            )
        }
    }

    /// Installs `len` bytes from `src` (in the pager's own memory) at `dst`
    /// in the view, atomically per page, and wakes threads waiting there.
    /// Stops at the first page it cannot install: returns the bytes
    /// installed before it and why it stopped (`None`: all of them).
    /// `EEXIST` means that page is already present.
    ///
    /// # Safety
    /// `src` must be readable for `len` bytes.
    pub unsafe fn copy(&self, dst: u64, src: *const u8, len: u64) -> (u64, Option<Errno>) {
        let (done, stop) = unsafe { self.copy_mode(dst, src, len, COPY_MODE_DONTWAKE) };
        // Waiters wake once, for everything installed: a copy interrupted
        // by a view change would otherwise wake them for its first part,
        // and a thread running ahead would fault again on the rest (an
        // event that may be served only after the page left RAM again).
        if done > 0 {
            let _ = self.wake(dst, done);
        }
        (done, stop)
    }

    /// `UFFDIO_COPY` in `mode` (0: each ioctl wakes the waiters of what it
    /// installed, as a bare handler does; the benchmark floor uses that).
    ///
    /// # Safety
    /// As [`Self::copy`].
    pub unsafe fn copy_mode(
        &self,
        dst: u64,
        src: *const u8,
        len: u64,
        mode: u64,
    ) -> (u64, Option<Errno>) {
        let mut done = 0u64;
        while done < len {
            let mut c = uapi::uffdio_copy {
                dst: dst + done,
                src: src as u64 + done,
                len: len - done,
                mode,
                copy: 0,
            };
            // SAFETY: UFFDIO_COPY reads a `uffdio_copy` and writes its `copy`;
            // the caller vouches for `src`.
            let r = unsafe { ioctl(&self.fd, Updater::<{ nr::UFFDIO_COPY }, _>::new(&mut c)) };
            let copied = c.copy.max(0) as u64;
            match r {
                Ok(()) => done += copied,
                // Interrupted, partial, or a view change in flight (the
                // event reader clears it): go on from what was copied.
                Err(Errno::AGAIN) | Err(Errno::INTR) => {
                    done += copied;
                    if copied == 0 {
                        std::thread::yield_now();
                    }
                }
                Err(e) => return (done + copied, Some(e)),
            }
        }
        (done, None)
    }

    /// Sets or clears write protection on a range; clearing wakes writers.
    /// `EAGAIN`: a view change of this address space is being delivered.
    pub fn write_protect(&self, start: u64, len: u64, protect: bool) -> Result<(), Errno> {
        let mut wp = uapi::uffdio_writeprotect {
            range: uapi::uffdio_range { start, len },
            mode: if protect { WRITEPROTECT_MODE_WP } else { 0 },
        };
        loop {
            // SAFETY: UFFDIO_WRITEPROTECT reads a `uffdio_writeprotect`.
            match unsafe {
                ioctl(
                    &self.fd,
                    Updater::<{ nr::UFFDIO_WRITEPROTECT }, _>::new(&mut wp),
                )
            } {
                Err(Errno::INTR) => continue,
                r => return r,
            }
        }
    }

    /// Installs poison over the range and wakes its waiters: an access
    /// there gets `SIGBUS` (a fault the pager cannot serve ends instead of
    /// retrying forever). Needs [`poison_supported`].
    pub fn poison(&self, start: u64, len: u64) -> Result<(), Errno> {
        let mut p = uapi::uffdio_poison {
            range: uapi::uffdio_range { start, len },
            mode: 0,
            updated: 0,
        };
        // SAFETY: UFFDIO_POISON reads and writes a `uffdio_poison`.
        unsafe { ioctl(&self.fd, Updater::<{ UFFDIO_POISON }, _>::new(&mut p)) }
    }

    /// Wakes threads waiting on faults in the range (they retry the access).
    pub fn wake(&self, start: u64, len: u64) -> Result<(), Errno> {
        let mut range = uapi::uffdio_range { start, len };
        // SAFETY: UFFDIO_WAKE reads a `uffdio_range`.
        unsafe { ioctl(&self.fd, Updater::<{ nr::UFFDIO_WAKE }, _>::new(&mut range)) }
    }

    /// Waits up to `timeout` for events; `true` when some may be there.
    pub fn wait_readable(&self, timeout: Duration) -> bool {
        let ts = Timespec {
            tv_sec: timeout.as_secs() as i64,
            tv_nsec: timeout.subsec_nanos() as _,
        };
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        // An error here (other than EINTR) shows up again in the read.
        !matches!(poll(&mut fds, Some(&ts)), Ok(0) | Err(Errno::INTR))
    }

    /// Waits up to `timeout` for events, or until `wake` is readable;
    /// `true` when events may be there.
    pub fn wait_readable_or(&self, wake: &impl AsFd, timeout: Duration) -> bool {
        let ts = Timespec {
            tv_sec: timeout.as_secs() as i64,
            tv_nsec: timeout.subsec_nanos() as _,
        };
        let mut fds = [
            PollFd::new(&self.fd, PollFlags::IN),
            PollFd::new(wake, PollFlags::IN),
        ];
        // An error here (other than EINTR) shows up again in the read.
        let r = poll(&mut fds, Some(&ts));
        !matches!(r, Ok(0) | Err(Errno::INTR)) && !fds[0].revents().is_empty()
    }

    /// Reads the next event, if one is queued, without waiting (the
    /// descriptor is non-blocking, DESIGN.md 8). One at a time: the kernel
    /// completes a view-change event when it is read, and the pager must
    /// act on it before the next one lets the client's mremap or munmap
    /// return (`space.rs`).
    pub fn read_events(&self, out: &mut Vec<Event>) -> Result<(), Errno> {
        const MSG: usize = core::mem::size_of::<uapi::uffd_msg>();
        let mut buf = [0u8; MSG];
        let n = match rustix::io::read(self.fd.as_fd(), &mut buf) {
            Ok(n) => n,
            Err(Errno::AGAIN) | Err(Errno::INTR) => return Ok(()),
            Err(e) => return Err(e),
        };
        for chunk in buf[..n].chunks_exact(MSG) {
            out.push(parse(chunk));
        }
        Ok(())
    }
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap_or([0; 8]))
}

/// Parses one `struct uffd_msg` (32 bytes: event at 0, union at 8).
fn parse(m: &[u8]) -> Event {
    let (a, b, c) = (u64_at(m, 8), u64_at(m, 16), u64_at(m, 24));
    match m[0] as u32 {
        uapi::UFFD_EVENT_PAGEFAULT => Event::PageFault {
            address: b,
            write: a & uapi::UFFD_PAGEFAULT_FLAG_WRITE as u64 != 0,
            wp: a & uapi::UFFD_PAGEFAULT_FLAG_WP as u64 != 0,
            tid: u32::from_le_bytes(m[24..28].try_into().unwrap_or([0; 4])),
        },
        uapi::UFFD_EVENT_FORK => Event::Fork {
            fd: u32::from_le_bytes(m[8..12].try_into().unwrap_or([0xff; 4])) as i32,
        },
        uapi::UFFD_EVENT_REMAP => Event::Remap {
            from: a,
            to: b,
            len: c,
        },
        uapi::UFFD_EVENT_REMOVE => Event::Remove { start: a, end: b },
        uapi::UFFD_EVENT_UNMAP => Event::Unmap { start: a, end: b },
        other => Event::Unknown(other as u8),
    }
}

/// Creates a userfaultfd in the calling process (the client), non-blocking
/// as DESIGN.md 8 requires, for handing to the pager.
pub fn create_for_client() -> Result<OwnedFd, Errno> {
    use rustix::mm::UserfaultfdFlags;
    // SAFETY: creating a userfaultfd has no memory-safety preconditions;
    // rustix marks it unsafe because its ioctls can change memory mappings.
    unsafe { rustix::mm::userfaultfd(UserfaultfdFlags::CLOEXEC | UserfaultfdFlags::NONBLOCK) }
}
