//! `fork` keeps private-memory semantics for the heap: pager memory is a
//! shared memfd, so without this a forked child and its parent would see
//! each other's heap writes (and the parent's next `malloc` would reuse
//! memory the child still reads). In the child, every range of pager
//! memory the program holds is replaced by a private copy at the same
//! address (pages in VRAM are read back for it); the parent waits in its
//! `fork` handler, holding the heap lock, until the child has its copy,
//! so the copy is the heap as it was at the `fork`. The child's own new
//! allocations are then the internal heap's (`conn::Mode::Forked`).
//!
//! Limits: a range the program made `PROT_NONE` or read-only is readable
//! and writable in the child; a write another thread of the parent makes
//! during the copy may show in the child (as if made before the fork).

use core::sync::atomic::{AtomicI32, Ordering};

use crate::heap::PagerHeap;
use crate::sys;

/// The socket pair the child says "copied" on: the parent's end, the
/// child's end (a socket, so the child's send can refuse `SIGPIPE` when
/// the parent gave up waiting).
static PIPE: [AtomicI32; 2] = [AtomicI32::new(-1), AtomicI32::new(-1)];
/// How long a parent waits for its child's copy.
const WAIT_MS: u64 = 60_000;

fn close(i: usize) {
    let fd = PIPE[i].swap(-1, Ordering::AcqRel);
    if fd >= 0 {
        // SAFETY: our own descriptor.
        unsafe { libc::close(fd) };
    }
}

/// Before `fork` (heap lock held): the pipe, when there is a heap to copy.
pub fn prepare(connected: bool) {
    if !connected {
        return;
    }
    let mut fds = [-1i32; 2];
    let kind = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
    // SAFETY: `fds` has room for two descriptors.
    if unsafe { libc::socketpair(libc::AF_UNIX, kind, 0, fds.as_mut_ptr()) } == 0 {
        PIPE[0].store(fds[0], Ordering::Release);
        PIPE[1].store(fds[1], Ordering::Release);
    }
}

/// In the parent after `fork`: waits (bounded) until the child copied or
/// exited. A signal (the program's `SIGCHLD` handler) does not end the
/// wait early.
pub fn parent() {
    close(1);
    let fd = PIPE[0].load(Ordering::Acquire);
    if fd >= 0 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(WAIT_MS);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd.
            let n = unsafe { libc::poll(&mut p, 1, left.as_millis() as i32) };
            // SAFETY: the errno of this thread.
            let eintr = n < 0 && unsafe { *libc::__errno_location() } == libc::EINTR;
            if eintr && !left.is_zero() {
                continue;
            }
            if n == 1 {
                let mut b = 0u8;
                // SAFETY: at most one byte into a local.
                unsafe { libc::read(fd, (&mut b as *mut u8).cast(), 1) };
            }
            break;
        }
    }
    close(0);
}

/// In the child after `fork` (the only thread; locks reset).
pub fn child(h: &mut PagerHeap) {
    close(0);
    if PIPE[1].load(Ordering::Acquire) < 0 {
        return;
    }
    let ranges = h.pages().in_use();
    for (addr, len) in ranges {
        if let Err(e) = privatize(addr as usize, len as usize) {
            let m = format!("libsvm: fork: copying {len} bytes at {addr:#x}: errno {e}\n");
            sys::write_stderr(m.as_bytes());
        }
    }
    let fd = PIPE[1].load(Ordering::Acquire);
    // SAFETY: one byte from a local; no SIGPIPE if the parent stopped waiting.
    unsafe { libc::send(fd, b"c".as_ptr().cast(), 1, libc::MSG_NOSIGNAL) };
    close(1);
}

/// Replaces `[addr, addr + len)` with a private copy of itself.
fn privatize(addr: usize, len: usize) -> Result<(), i32> {
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    sys::mprotect(addr, len, rw)?;
    let tmp = sys::mmap(0, len, rw, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)?;
    // SAFETY: both ranges are `len` bytes, mapped, and distinct.
    unsafe { core::ptr::copy_nonoverlapping(addr as *const u8, tmp as *mut u8, len) };
    let flags = libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED;
    sys::mremap(tmp, len, len, flags, addr).map(|_| ())
}
