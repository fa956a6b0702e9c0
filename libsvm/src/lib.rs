//! `libsvm.so`: xe-svm for C programs (`include/svm.h`, `docs/c-api.md`).
//!
//! Loaded into a process that `svm exec` started (or linked by one), it
//! connects to the running system through the endpoints the launcher
//! passed, and then serves the process's `malloc` family and its anonymous
//! `mmap`s from pager objects (`heap`, `maps`), so a GPU VM that mirrors
//! the address space (`svm_vm_create_mirror`) reaches every such pointer.
//! Without a system to connect to, the same calls are served by the
//! library's internal heap and the kernel: the program runs unchanged.

#![allow(clippy::missing_safety_doc)]
// The unit tests build without the exported C symbols that use the rest.
#![cfg_attr(test, allow(dead_code, unused_imports))]

mod capi;
pub mod conn;
pub mod error;
mod exports;
mod fork;
pub mod heap;
mod internal;
pub mod lock;
pub mod maps;
pub mod pages;
mod sys;

use std::sync::atomic::{AtomicBool, Ordering};

pub use error::SvmError;

/// The library's own Rust allocations never reach the `malloc` it exports.
#[cfg(not(test))]
#[global_allocator]
static ALLOC: internal::Internal = internal::Internal;

/// `SVM_LOG` set: errors are written to standard error.
static LOG: AtomicBool = AtomicBool::new(false);
/// `SVM_REPORT` set: one line about the pager heap on standard error at exit.
static REPORT: AtomicBool = AtomicBool::new(false);

/// Reports an error on standard error when `SVM_LOG` is set (programs'
/// own output stays byte-identical otherwise).
pub(crate) fn log_error(what: &[u8], e: SvmError) {
    if !LOG.load(Ordering::Relaxed) {
        return;
    }
    sys::write_stderr(b"libsvm: ");
    sys::write_stderr(what);
    sys::write_stderr(b": ");
    let text = SvmError::text(e.code());
    sys::write_stderr(&text[..text.len() - 1]);
    sys::write_stderr(b"\n");
}

/// `fork` handlers: the allocator's locks are held across `fork` (heap
/// first, then the internal heap, the order they nest in), so the child
/// gets them consistent; the child is then `Forked` and gets a private
/// copy of the pager heap (`fork`), which the parent waits for.
extern "C" fn before_fork() {
    heap::HEAP.lock.lock();
    internal::HEAP.lock.lock();
    fork::prepare(conn::mode() == conn::Mode::Connected);
}
extern "C" fn after_fork_parent() {
    fork::parent();
    internal::HEAP.lock.unlock();
    heap::HEAP.lock.unlock();
}
extern "C" fn after_fork_child() {
    internal::HEAP.lock.reset_in_child();
    heap::HEAP.lock.reset_in_child();
    conn::forked();
    heap::HEAP.with(fork::child);
}

/// Runs when the library is loaded, after libc is ready and before the
/// program's own constructors: what was allocated before this stays where
/// it is (the internal heap); what is allocated after is pager memory.
extern "C" fn on_load() {
    LOG.store(std::env::var_os("SVM_LOG").is_some(), Ordering::Relaxed);
    REPORT.store(std::env::var_os("SVM_REPORT").is_some(), Ordering::Relaxed);
    // SAFETY: registering handlers that take and release our own locks.
    unsafe {
        libc::pthread_atfork(
            Some(before_fork),
            Some(after_fork_parent),
            Some(after_fork_child),
        );
    }
    match conn::connect_from_env() {
        Ok(_) | Err(SvmError::NotConnected) => {}
        Err(e) => log_error(b"connecting to the system", e),
    }
}

#[cfg(not(test))]
#[used]
#[link_section = ".init_array"]
static ON_LOAD: extern "C" fn() = on_load;

/// At exit with `SVM_REPORT` set: how much of the heap the pager served
/// (`libsvm: pid P mode M regions R region_bytes B peak_bytes K
/// discards D`), so a test can tell an unmodified program's heap was
/// pager memory.
extern "C" fn on_unload() {
    if !REPORT.load(Ordering::Relaxed) || conn::mode() != conn::Mode::Connected {
        return;
    }
    let line = heap::HEAP.with(|h| {
        let p = h.pages();
        let bytes: u64 = p.regions().iter().map(|r| r.len).sum();
        format!(
            "libsvm: pid {} mode connected regions {} region_bytes {bytes} \
             peak_bytes {} discards {}\n",
            std::process::id(),
            p.regions().len(),
            p.peak,
            p.discards
        )
    });
    sys::write_stderr(line.as_bytes());
}

#[cfg(not(test))]
#[used]
#[link_section = ".fini_array"]
static ON_UNLOAD: extern "C" fn() = on_unload;
