//! The device's address space: VRAM at `[0, vram)`, DMA-mapped system
//! memfds at `SYSMEM_BASE + slot * SYSMEM_SLOT_BYTES`, peers' VRAM at
//! `PEER_BASE + gpu * PEER_WINDOW_BYTES` (several GPUs: a copy into a
//! peer's window is a peer-to-peer push).

use std::os::fd::OwnedFd;
use std::sync::{Arc, RwLock};

use rustix::fs::fstat;

use crate::shm::Region;
use crate::xe::layout::{
    PEERS, PEER_BASE, PEER_WINDOW_BYTES, SYSMEM_BASE, SYSMEM_SLOTS, SYSMEM_SLOT_BYTES,
};

pub struct Memory {
    pub vram: Region,
    sysmem: Windows,
    peers: Windows,
}

/// A table of windows (DMA slots or peers), each a region or none.
type Windows = RwLock<Vec<Option<Arc<Region>>>>;

/// Puts `region` at `index` of `table` if the index exists and the region
/// fits a window of `limit` bytes.
fn map_in(table: &Windows, index: u32, region: Region, limit: u64) -> bool {
    let mut t = table.write().unwrap_or_else(|e| e.into_inner());
    match t.get_mut(index as usize) {
        Some(entry) if region.len() as u64 <= limit => {
            *entry = Some(Arc::new(region));
            true
        }
        _ => false,
    }
}

/// Empties `index` of `table`; whether it held a region.
fn unmap_in(table: &Windows, index: u32) -> bool {
    let mut t = table.write().unwrap_or_else(|e| e.into_inner());
    matches!(t.get_mut(index as usize).map(Option::take), Some(Some(_)))
}

/// A resolved device address: keeps a DMA mapping alive while in use.
pub struct Resolved {
    region: Option<Arc<Region>>,
    ptr: *mut u8,
}

impl Resolved {
    pub fn ptr(&self) -> *mut u8 {
        let _ = &self.region;
        self.ptr
    }
}

impl Memory {
    pub fn new(vram: Region) -> Self {
        Self {
            vram,
            sysmem: RwLock::new(vec![None; SYSMEM_SLOTS as usize]),
            peers: RwLock::new(vec![None; PEERS as usize]),
        }
    }

    /// Maps peer `gpu`'s VRAM (`region`) as its window; an id past
    /// [`PEERS`] or a region larger than a window is refused.
    pub fn map_peer(&self, gpu: u32, region: Region) -> bool {
        map_in(&self.peers, gpu, region, PEER_WINDOW_BYTES)
    }

    pub fn unmap_peer(&self, gpu: u32) -> bool {
        unmap_in(&self.peers, gpu)
    }

    pub fn map_slot(&self, slot: u32, region: Region) -> bool {
        map_in(&self.sysmem, slot, region, SYSMEM_SLOT_BYTES)
    }

    /// The memfd a driver DMA-maps, checked so that no later access can
    /// fault the device (SIGBUS past the end of a file): it must hold
    /// `size` bytes now (otherwise `None`: the map fails, typed), and it is
    /// sealed against shrinking here when its seals allow. (A memfd made
    /// without `MFD_ALLOW_SEALING` cannot be sealed: only its creator, a
    /// server, holds it. Client objects come sealed by the pager.) Redox
    /// has no seals: its shm scheme refuses to resize a mapped object,
    /// which this mapping is from here on.
    pub fn checked_region(fd: OwnedFd, size: u64) -> Option<Region> {
        Self::checked_region_within(fd, size, SYSMEM_SLOT_BYTES)
    }

    /// [`Memory::checked_region`] for a window of `limit` bytes.
    pub fn checked_region_within(fd: OwnedFd, size: u64, limit: u64) -> Option<Region> {
        if size == 0 || size > limit {
            return None;
        }
        #[cfg(target_os = "linux")]
        {
            use rustix::fs::{fcntl_add_seals, fcntl_get_seals, SealFlags};
            if let Ok(seals) = fcntl_get_seals(&fd) {
                if !seals.contains(SealFlags::SHRINK) && !seals.contains(SealFlags::SEAL) {
                    fcntl_add_seals(&fd, SealFlags::SHRINK).ok()?;
                }
            }
        }
        let held = u64::try_from(fstat(&fd).ok()?.st_size).ok()?;
        if held < size {
            return None;
        }
        Region::map(fd, usize::try_from(size).ok()?).ok()
    }

    pub fn unmap_slot(&self, slot: u32) -> bool {
        unmap_in(&self.sysmem, slot)
    }

    /// `[addr, addr + len)` as a pointer, if it lies inside one region.
    pub fn resolve(&self, addr: u64, len: u64) -> Option<Resolved> {
        if addr < SYSMEM_BASE {
            return self
                .vram
                .ptr(addr, len)
                .map(|ptr| Resolved { region: None, ptr });
        }
        let (table, rel, window) = if addr < PEER_BASE {
            (&self.sysmem, addr - SYSMEM_BASE, SYSMEM_SLOT_BYTES)
        } else {
            (&self.peers, addr - PEER_BASE, PEER_WINDOW_BYTES)
        };
        let slot = usize::try_from(rel / window).ok()?;
        let off = rel % window;
        let s = table.read().unwrap_or_else(|e| e.into_inner());
        let region = s.get(slot)?.clone()?;
        let ptr = region.ptr(off, len)?;
        Some(Resolved {
            region: Some(region),
            ptr,
        })
    }

    /// Reads the u64 at `addr` (a page-table entry).
    pub fn read_u64(&self, addr: u64) -> Option<u64> {
        if addr % 8 != 0 {
            return None;
        }
        let r = self.resolve(addr, 8)?;
        // SAFETY: resolved, in bounds and 8-aligned (regions are page aligned).
        Some(unsafe {
            (*(r.ptr() as *const std::sync::atomic::AtomicU64))
                .load(std::sync::atomic::Ordering::Acquire)
        })
    }
}
