//! Anonymous mappings served from regions: `mmap(MAP_ANONYMOUS)` without
//! a fixed address gets a page range of pager memory; `munmap`, `mremap`
//! and the discarding `madvise` advice act on such ranges here. Anything
//! else goes to the kernel unchanged.
//!
//! Limits (docs/c-api.md): fixed addresses, `MAP_GROWSDOWN`, `MAP_STACK`,
//! `MAP_HUGETLB` and `PROT_NONE` reservations go to the kernel (plain
//! memory); `mremap` with `MREMAP_FIXED` or `MREMAP_DONTUNMAP` of a pager
//! range is refused (`EINVAL`), as is a partial `mremap` of one.

use crate::heap::PagerHeap;
use crate::pages::{page_len, PAGE};

/// Largest single mapping served from pager memory.
pub const MAX_MAP: u64 = 4 << 30;

/// Whether an `mmap` call is one this library serves.
pub fn served(len: usize, prot: i32, flags: i32) -> bool {
    let passed = libc::MAP_FIXED
        | libc::MAP_FIXED_NOREPLACE
        | libc::MAP_GROWSDOWN
        | libc::MAP_STACK
        | libc::MAP_HUGETLB;
    flags & libc::MAP_ANONYMOUS != 0
        && flags & passed == 0
        && prot & (libc::PROT_READ | libc::PROT_WRITE) != 0
        && len != 0
        && len as u64 <= MAX_MAP
}

impl PagerHeap {
    /// A new anonymous mapping; `None`: let the kernel do it.
    pub fn map(&mut self, len: usize, prot: i32) -> Option<usize> {
        let len = page_len(len as u64)?;
        let (addr, zeroed) = self.pages().alloc(len, PAGE).ok()?;
        if !zeroed {
            // SAFETY: the range was just handed to us.
            unsafe { core::ptr::write_bytes(addr as *mut u8, 0, len as usize) };
        }
        self.maps.insert(addr, len);
        if prot != libc::PROT_READ | libc::PROT_WRITE {
            // The GPU follows a mapping made without write (or read)
            // access as it follows mprotect; one it cannot follow is not
            // served (the kernel maps it, out of the GPU's reach).
            let _ = crate::sys::mprotect(addr as usize, len as usize, prot);
            if self.pages().protect(addr, len, prot).is_err() {
                let _ = self.unmap(addr, len);
                return None;
            }
        }
        Some(addr as usize)
    }

    /// Unmaps `[addr, addr + len)` of our mappings (splitting any it cuts);
    /// errno `EINVAL` when the range holds pager memory that is not a
    /// mapping (the heap's own).
    pub fn unmap(&mut self, addr: u64, len: u64) -> Result<(), i32> {
        let len = page_len(len).ok_or(libc::EINVAL)?;
        let end = addr.checked_add(len).ok_or(libc::EINVAL)?;
        if !addr.is_multiple_of(PAGE) {
            return Err(libc::EINVAL);
        }
        let hit: Vec<(u64, u64)> = self
            .maps
            .range(..end)
            .rev()
            .take_while(|(&a, &l)| a + l > addr)
            .map(|(&a, &l)| (a, l))
            .collect();
        if hit.is_empty() {
            return Err(libc::EINVAL);
        }
        for (a, l) in hit {
            self.maps.remove(&a);
            let (cut_from, cut_to) = (a.max(addr), (a + l).min(end));
            if a < cut_from {
                self.maps.insert(a, cut_from - a);
            }
            if cut_to < a + l {
                self.maps.insert(cut_to, a + l - cut_to);
            }
            let rw = libc::PROT_READ | libc::PROT_WRITE;
            let _ = crate::sys::mprotect(cut_from as usize, (cut_to - cut_from) as usize, rw);
            // The GPU's access back too, before the pages are reused.
            let _ = self.pages().protect(cut_from, cut_to - cut_from, rw);
            self.pages().free(cut_from, cut_to - cut_from);
        }
        Ok(())
    }

    /// `mremap` of one whole mapping of ours.
    pub fn remap(&mut self, old: u64, old_len: u64, new_len: u64, flags: i32) -> Result<u64, i32> {
        if flags & !libc::MREMAP_MAYMOVE != 0 {
            return Err(libc::EINVAL);
        }
        let have = *self.maps.get(&old).ok_or(libc::EINVAL)?;
        let new = page_len(new_len).ok_or(libc::EINVAL)?;
        if page_len(old_len) != Some(have) {
            return Err(libc::EINVAL);
        }
        if new <= have {
            if new < have {
                self.pages().free(old + new, have - new);
            }
            self.maps.insert(old, new);
            return Ok(old);
        }
        let grown = self.pages().take_at(old + have, new - have);
        if let Some(zeroed) = grown {
            if !zeroed {
                // SAFETY: the grown tail was just handed to us.
                unsafe {
                    core::ptr::write_bytes((old + have) as *mut u8, 0, (new - have) as usize)
                };
            }
            self.maps.insert(old, new);
            return Ok(old);
        }
        if flags & libc::MREMAP_MAYMOVE == 0 {
            return Err(libc::ENOMEM);
        }
        let to = self
            .map(new as usize, libc::PROT_READ | libc::PROT_WRITE)
            .ok_or(libc::ENOMEM)?;
        // SAFETY: both ranges are ours and do not overlap.
        unsafe { core::ptr::copy_nonoverlapping(old as *const u8, to as *mut u8, have as usize) };
        self.unmap(old, have)?;
        Ok(to as u64)
    }

    /// `madvise(MADV_DONTNEED | MADV_FREE | MADV_REMOVE)` on our mappings:
    /// private anonymous memory reads zeros afterwards, so the range is
    /// discarded (a shared memfd would keep its data otherwise).
    pub fn advise_discard(&mut self, addr: u64, len: u64) -> Result<(), i32> {
        let len = page_len(len).ok_or(libc::EINVAL)?;
        let end = addr.checked_add(len).ok_or(libc::EINVAL)?;
        let inside = self
            .maps
            .range(..=addr)
            .next_back()
            .is_some_and(|(&a, &l)| end <= a + l)
            || self
                .large
                .range(..=addr)
                .next_back()
                .is_some_and(|(&a, &l)| end <= a + l);
        if !addr.is_multiple_of(PAGE) || !inside {
            return Err(libc::EINVAL);
        }
        self.pages().discard(addr, len).map_err(|_| libc::EAGAIN)
    }
}
