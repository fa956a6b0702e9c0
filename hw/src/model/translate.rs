//! Address translation: a walk of the driver's 4-level page tables and a
//! TLB that keeps serving an entry until the driver invalidates it, so a
//! missing invalidation shows up as reads and writes of the old page.
//!
//! An invalidation dropped by fault injection is still reported complete;
//! its entries stay, marked. Using a marked entry re-walks the tables, and
//! if the tables now say something else the device counts a stale-TLB use
//! (`REG_STALE_TLB_USES`) and logs it: the driver was told the mapping was
//! gone while the device still used it.
//!
//! A fill is atomic with respect to invalidations, as a hardware walker's
//! is: a walk that an invalidation overtook (the driver may have cleared
//! the entry it read and been told the invalidation completed) is not
//! cached; the walk is taken again.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use super::memory::Memory;
use crate::shm::Region;
use crate::xe::commands::{InvalidationScope, TlbInvalidation};
use crate::xe::layout::{CONTEXT_TABLE, MAX_ASIDS, REG_STALE_TLB_USES};
use crate::xe::pte::{decode, index, Entry, PageSize, Target, VA_BITS};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// Device address of the page's first byte.
    pub base: u64,
    /// Virtual address of the page's first byte.
    pub va_base: u64,
    pub size: u64,
    pub writable: bool,
    /// GPU atomics allowed (`AE`).
    pub atomics: bool,
    pub device: bool,
}

impl Translation {
    pub fn address(&self, va: u64) -> u64 {
        self.base + (va - self.va_base)
    }
}

/// Why a walk failed: the level whose entry was not present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Miss {
    pub level: u8,
}

#[derive(Clone, Copy)]
struct TlbEntry {
    t: Translation,
    /// An invalidation covering this entry was dropped (fault injection).
    dropped: bool,
}

#[derive(Default)]
struct Entries {
    /// (asid, va of the page) -> entry. Large pages are one entry.
    map: HashMap<(u32, u64), TlbEntry>,
    /// Invalidations applied so far: a walk caches its result only if none
    /// was applied since it began.
    invalidations: u64,
}

#[derive(Default)]
pub struct Tlb {
    entries: Mutex<Entries>,
}

/// Walks ASID `asid`'s tables for `va`.
pub fn walk(regs: &Region, mem: &Memory, asid: u32, va: u64) -> Result<Translation, Miss> {
    if asid as usize >= MAX_ASIDS || va >> VA_BITS != 0 {
        return Err(Miss { level: 3 });
    }
    let mut table = regs
        .u64_at(CONTEXT_TABLE + asid as usize * 8)
        .load(Ordering::Acquire);
    if table == 0 {
        return Err(Miss { level: 3 });
    }
    for level in (0..4u32).rev() {
        let raw = mem
            .read_u64(table + index(va, level) as u64 * 8)
            .ok_or(Miss { level: level as u8 })?;
        match decode(raw, level) {
            Entry::NotPresent => return Err(Miss { level: level as u8 }),
            Entry::Table { addr } if level > 0 => table = addr,
            Entry::Table { .. } => return Err(Miss { level: 0 }),
            Entry::Leaf {
                addr,
                size,
                target,
                writable,
                atomics,
                ..
            } => {
                let (va_base, base, bytes) = match size {
                    // The TLB caches a 64 KiB page whole: its base is the
                    // first 4 KiB PTE's address minus this PTE's offset in it.
                    PageSize::Size64K => {
                        let off = va & 0xf000;
                        (va & !0xffff, addr.wrapping_sub(off), 64 << 10)
                    }
                    s => (va & !(s.bytes() - 1), addr, s.bytes()),
                };
                return Ok(Translation {
                    base,
                    va_base,
                    size: bytes,
                    writable,
                    atomics,
                    device: target == Target::Device,
                });
            }
        }
    }
    Err(Miss { level: 0 })
}

impl Tlb {
    fn key_candidates(asid: u32, va: u64) -> [(u32, u64); 3] {
        [
            (asid, va & !0xfff),
            (asid, va & !0xffff),
            (asid, va & !0x1f_ffff),
        ]
    }

    /// Translates through the TLB, walking on a miss.
    pub fn translate(
        &self,
        regs: &Region,
        mem: &Memory,
        asid: u32,
        va: u64,
    ) -> Result<Translation, Miss> {
        self.translate_walked(regs, mem, asid, va, || {})
    }

    /// [`Self::translate`], calling `walked` after each walk and before its
    /// result is cached (tests run an invalidation there).
    fn translate_walked(
        &self,
        regs: &Region,
        mem: &Memory,
        asid: u32,
        va: u64,
        mut walked: impl FnMut(),
    ) -> Result<Translation, Miss> {
        loop {
            let began = {
                let entries = self.lock();
                if let Some(hit) = Self::hit(&entries, asid, va) {
                    drop(entries);
                    if hit.dropped && walk(regs, mem, asid, va).ok() != Some(hit.t) {
                        regs.u32_at(REG_STALE_TLB_USES)
                            .fetch_add(1, Ordering::AcqRel);
                        log::error!(
                            "stale TLB use: asid {asid} va {va:#x} \
                             after an acknowledged invalidation"
                        );
                    }
                    return Ok(hit.t);
                }
                entries.invalidations
            };
            let t = walk(regs, mem, asid, va)?;
            walked();
            let mut entries = self.lock();
            if entries.invalidations != began {
                // An invalidation completed while we walked: the entry we
                // read may be one the driver has since cleared.
                continue;
            }
            entries
                .map
                .insert((asid, t.va_base), TlbEntry { t, dropped: false });
            return Ok(t);
        }
    }

    /// The cached entry translating `va` of `asid`, if any.
    fn hit(entries: &Entries, asid: u32, va: u64) -> Option<TlbEntry> {
        Self::key_candidates(asid, va)
            .iter()
            .filter_map(|key| entries.map.get(key))
            .find(|e| e.t.va_base <= va && va < e.t.va_base + e.t.size)
            .copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies an invalidation; `drop_it` (fault injection) keeps the
    /// entries and marks them instead.
    pub fn invalidate(&self, inv: &TlbInvalidation, drop_it: bool) {
        let mut entries = self.lock();
        entries.invalidations += 1;
        let end = inv
            .address
            .saturating_add(1u64.checked_shl(inv.len_log2 as u32).unwrap_or(u64::MAX));
        let covered = |(asid, _): &(u32, u64), e: &TlbEntry| match inv.scope {
            InvalidationScope::Full => true,
            InvalidationScope::Range => {
                *asid == inv.asid && e.t.va_base < end && inv.address < e.t.va_base + e.t.size
            }
        };
        if drop_it {
            for (k, e) in entries.map.iter_mut() {
                if covered(k, e) {
                    e.dropped = true;
                }
            }
        } else {
            entries.map.retain(|k, e| !covered(k, e));
        }
    }

    pub fn len(&self) -> usize {
        self.lock().map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xe::layout::REGION_BYTES;
    use crate::xe::pte::{encode_leaf, encode_table, LeafAccess};

    const ASID: u32 = 1;
    const VA: u64 = 0x7f12_3456_7000;
    /// Page tables at VRAM pages 1 (level 3) to 4 (level 0); data pages
    /// at 8 and 9.
    const FRAME_A: u64 = 8 << 12;
    const FRAME_B: u64 = 9 << 12;

    fn device() -> (Region, Memory) {
        let regs = Region::create("tlb-test-regs", REGION_BYTES).unwrap();
        let vram = Region::create("tlb-test-vram", 16 << 12).unwrap();
        regs.u64_at(CONTEXT_TABLE + ASID as usize * 8)
            .store(1 << 12, Ordering::Release);
        for level in (1..4u32).rev() {
            let table = (4 - level as u64) << 12;
            vram.u64_at((table + index(VA, level) as u64 * 8) as usize)
                .store(encode_table(table + 4096).unwrap(), Ordering::Release);
        }
        (regs, Memory::new(vram))
    }

    fn set_pte(mem: &Memory, frame: Option<u64>) {
        let raw = frame.map_or(0, |f| {
            encode_leaf(f, PageSize::Size4K, Target::Device, LeafAccess::ALL, 0).unwrap()
        });
        mem.vram
            .u64_at((4 << 12) + index(VA, 0) * 8)
            .store(raw, Ordering::Release);
    }

    fn invalidation() -> TlbInvalidation {
        TlbInvalidation {
            seqno: 1,
            scope: InvalidationScope::Range,
            asid: ASID,
            address: VA,
            len_log2: 12,
        }
    }

    #[test]
    fn an_invalidated_entry_is_walked_again() {
        let (regs, mem) = device();
        let tlb = Tlb::default();
        set_pte(&mem, Some(FRAME_A));
        assert_eq!(tlb.translate(&regs, &mem, ASID, VA).unwrap().base, FRAME_A);
        // Without an invalidation the TLB keeps serving the old entry.
        set_pte(&mem, Some(FRAME_B));
        assert_eq!(tlb.translate(&regs, &mem, ASID, VA).unwrap().base, FRAME_A);
        tlb.invalidate(&invalidation(), false);
        assert_eq!(tlb.translate(&regs, &mem, ASID, VA).unwrap().base, FRAME_B);
    }

    /// The driver clears the entry a walk has just read, invalidates, and
    /// is told the invalidation completed, all before the walk's result is
    /// cached: that result must not be used afterwards (a GPU write through
    /// it lands in VRAM the driver already copied out and freed: the lost
    /// increments of `init`'s eviction race).
    #[test]
    fn a_walk_overtaken_by_an_invalidation_is_not_cached() {
        let (regs, mem) = device();
        let tlb = Tlb::default();
        set_pte(&mem, Some(FRAME_A));
        let mut raced = false;
        let t = tlb.translate_walked(&regs, &mem, ASID, VA, || {
            if !raced {
                raced = true;
                set_pte(&mem, Some(FRAME_B));
                tlb.invalidate(&invalidation(), false);
            }
        });
        assert!(raced);
        assert_eq!(t.unwrap().base, FRAME_B, "the fill used the cleared entry");
        assert_eq!(
            tlb.translate(&regs, &mem, ASID, VA).unwrap().base,
            FRAME_B,
            "the TLB kept an entry the driver cleared and invalidated"
        );
        // An entry cleared (not replaced) faults.
        let mut raced = false;
        tlb.invalidate(&invalidation(), false);
        set_pte(&mem, Some(FRAME_A));
        let t = tlb.translate_walked(&regs, &mem, ASID, VA, || {
            if !raced {
                raced = true;
                set_pte(&mem, None);
                tlb.invalidate(&invalidation(), false);
            }
        });
        assert!(t.is_err(), "a cleared entry was used: {t:?}");
        assert!(tlb.translate(&regs, &mem, ASID, VA).is_err());
    }
}
