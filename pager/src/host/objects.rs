//! Memory objects and views (DESIGN.md 2): state belongs to the object's
//! pages; a view only translates addresses.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, RwLock};

use super::space::Space;
use super::uffd::Uffd;
use crate::migrate::{Chunk, Collected};
use crate::state::PageTable;
use crate::sync::AtomicU64;

pub struct Object {
    pub id: u32,
    /// Badge of the client that created it.
    pub owner: u64,
    pub memfd: OwnedFd,
    pub table: PageTable,
    views: RwLock<Vec<Arc<View>>>,
    /// Collects awaiting their finalize, by first page.
    pub collections: Mutex<HashMap<u64, Vec<(u8, Chunk, Collected)>>>,
    /// Invalidation sequence (rule 8).
    pub seq: AtomicU64,
    /// Being destroyed: no new collect may start on it.
    pub dying: std::sync::atomic::AtomicBool,
}

impl Object {
    pub fn new(id: u32, owner: u64, memfd: OwnedFd, pages: usize) -> Self {
        Self {
            id,
            owner,
            memfd,
            table: PageTable::new(pages),
            views: RwLock::new(Vec::new()),
            collections: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(0),
            dying: std::sync::atomic::AtomicBool::new(false),
        }
    }
    pub fn pages(&self) -> usize {
        self.table.len()
    }
    pub fn add_view(&self, v: Arc<View>) {
        self.views
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(v);
    }
    pub fn remove_view(&self, v: &View) {
        self.views
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|x| !std::ptr::eq(&**x, v));
    }
    pub fn views_snapshot(&self) -> Vec<Arc<View>> {
        self.views.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One mapping of an object in a client address space. A record only:
/// the space's threads serve it, and a changed mapping gets a new record.
pub struct View {
    pub id: u32,
    /// Badge of the client it belongs to.
    pub owner: u64,
    pub object: u32,
    /// Client address of the view's first page.
    pub addr: u64,
    pub first_page: usize,
    pub pages: usize,
    /// The address space (client userfaultfd) it is registered with.
    pub space: Arc<Space>,
    /// Born from a fork: the child's copy of a view. The client did not
    /// attach it and cannot detach or bind it; it goes when the child
    /// unmaps it or dies, or with the object.
    pub forked: bool,
}

impl View {
    pub fn len(&self) -> u64 {
        self.pages as u64 * 4096
    }
    pub fn end(&self) -> u64 {
        self.addr + self.len()
    }
    pub fn uffd(&self) -> &Uffd {
        &self.space.uffd
    }
    /// The same object pages seen from `[addr, addr + pages)` of `space`:
    /// a new record for a moved, split or forked view.
    pub fn derive(
        &self,
        id: u32,
        addr: u64,
        first_page: usize,
        pages: usize,
        space: Arc<Space>,
        forked: bool,
    ) -> View {
        View {
            id,
            owner: self.owner,
            object: self.object,
            addr,
            first_page,
            pages,
            space,
            forked,
        }
    }
    /// The client address of object page `page`, if this view maps it.
    pub fn address_of(&self, page: usize) -> Option<u64> {
        (page >= self.first_page && page < self.first_page + self.pages)
            .then(|| self.addr + (page - self.first_page) as u64 * 4096)
    }
    /// The object page at client address `addr`, if inside the view.
    pub fn page_at(&self, addr: u64) -> Option<usize> {
        let off = addr.checked_sub(self.addr)? / 4096;
        (off < self.pages as u64).then(|| self.first_page + off as usize)
    }
}

/// A bounded pool of 2 MiB staging slots the GPU server copies VRAM into
/// (one memfd, shared with the GPU server at boot).
pub struct Staging {
    pub memfd: OwnedFd,
    base: *mut u8,
    free: Mutex<Vec<usize>>,
    available: std::sync::Condvar,
    pub slots: usize,
}

// SAFETY: `base` is a shared mapping owned by this struct for its lifetime;
// slots are handed out exclusively.
unsafe impl Send for Staging {}
unsafe impl Sync for Staging {}

pub const SLOT_BYTES: usize = Chunk::MAX_BYTES;

pub struct Slot {
    index: usize,
    ptr: *const u8,
}

impl Slot {
    pub fn offset(&self) -> u64 {
        (self.index * SLOT_BYTES) as u64
    }
    pub fn ptr(&self) -> *const u8 {
        self.ptr
    }
}

impl Staging {
    pub fn new(slots: usize) -> rustix::io::Result<Self> {
        use rustix::mm::{mmap, MapFlags, ProtFlags};
        let memfd = rustix::fs::memfd_create("pager-staging", rustix::fs::MemfdFlags::CLOEXEC)?;
        rustix::fs::ftruncate(&memfd, (slots * SLOT_BYTES) as u64)?;
        // SAFETY: a fresh shared mapping of our own memfd, kept for our lifetime.
        let base = unsafe {
            mmap(
                std::ptr::null_mut(),
                slots * SLOT_BYTES,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &memfd,
                0,
            )?
        };
        Ok(Self {
            memfd,
            base: base.cast(),
            free: Mutex::new((0..slots).collect()),
            available: std::sync::Condvar::new(),
            slots,
        })
    }

    /// Takes a slot, waiting for one if all are in use. Slots are held only
    /// across one GPU copy and one `UFFDIO_COPY`, never across a wait.
    pub fn take(&self) -> Slot {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(index) = free.pop() {
                // SAFETY: index < slots, inside the mapping.
                return Slot {
                    index,
                    ptr: unsafe { self.base.add(index * SLOT_BYTES) },
                };
            }
            free = self.available.wait(free).unwrap_or_else(|e| e.into_inner());
        }
    }

    pub fn put(&self, slot: Slot) {
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(slot.index);
        self.available.notify_one();
    }
}
