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

mod capi;
pub mod conn;
pub mod error;
mod exports;
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
/// gets them consistent; the child is then `Forked`.
extern "C" fn before_fork() {
    heap::HEAP.lock.lock();
    internal::HEAP.lock.lock();
}
extern "C" fn after_fork_parent() {
    internal::HEAP.lock.unlock();
    heap::HEAP.lock.unlock();
}
extern "C" fn after_fork_child() {
    internal::HEAP.lock.reset_in_child();
    heap::HEAP.lock.reset_in_child();
    conn::forked();
}

/// Runs when the library is loaded, after libc is ready and before the
/// program's own constructors: what was allocated before this stays where
/// it is (the internal heap); what is allocated after is pager memory.
extern "C" fn on_load() {
    LOG.store(std::env::var_os("SVM_LOG").is_some(), Ordering::Relaxed);
    // SAFETY: registering handlers that take and release our own locks.
    unsafe {
        libc::pthread_atfork(Some(before_fork), Some(after_fork_parent), Some(after_fork_child));
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
