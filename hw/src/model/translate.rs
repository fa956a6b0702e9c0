//! Address translation: a walk of the driver's 4-level page tables and a
//! TLB that keeps serving an entry until the driver invalidates it, so a
//! missing invalidation shows up as reads and writes of the old page.
//!
//! An invalidation dropped by fault injection is still reported complete;
//! its entries stay, marked. Using a marked entry re-walks the tables, and
//! if the tables now say something else the device counts a stale-TLB use
//! (`REG_STALE_TLB_USES`) and logs it: the driver was told the mapping was
//! gone while the device still used it.

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

pub struct Tlb {
    /// (asid, va of the page) -> entry. Large pages are one entry.
    entries: Mutex<HashMap<(u32, u64), TlbEntry>>,
}

impl Default for Tlb {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }
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
        {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            for key in Self::key_candidates(asid, va) {
                if let Some(e) = entries.get(&key) {
                    if e.t.va_base <= va && va < e.t.va_base + e.t.size {
                        let hit = *e;
                        drop(entries);
                        if hit.dropped && walk(regs, mem, asid, va).ok() != Some(hit.t) {
                            regs.u32_at(REG_STALE_TLB_USES)
                                .fetch_add(1, Ordering::AcqRel);
                            log::error!("stale TLB use: asid {asid} va {va:#x} after an acknowledged invalidation");
                        }
                        return Ok(hit.t);
                    }
                }
            }
        }
        let t = walk(regs, mem, asid, va)?;
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((asid, t.va_base), TlbEntry { t, dropped: false });
        Ok(t)
    }

    /// Applies an invalidation; `drop_it` (fault injection) keeps the
    /// entries and marks them instead.
    pub fn invalidate(&self, inv: &TlbInvalidation, drop_it: bool) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
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
            for (k, e) in entries.iter_mut() {
                if covered(k, e) {
                    e.dropped = true;
                }
            }
        } else {
            entries.retain(|k, e| !covered(k, e));
        }
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
