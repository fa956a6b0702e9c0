//! One GPU VM's page tables, written into VRAM through the BAR with `hw`'s
//! PPGTT formats (4 levels, 4 KiB and 2 MiB leaves).

use std::sync::atomic::Ordering;

use hw::bar::Bar;
use hw::xe::pte::{
    decode, encode_leaf, encode_table, index, Entry, LeafAccess, PageSize, Target, ADDR_MASK,
};

use crate::vram::{Vram, VramError};

/// The end of the 4-level (48-bit) GPU virtual address space.
const VA_END: u64 = 1 << 48;

/// PAT index for write-back cached memory.
const PAT_WB: u8 = 0;

pub struct Ppgtt {
    pub asid: u32,
    pub root: u64,
    /// Page-table pages this VM allocated (freed with the VM).
    tables: Vec<u64>,
}

fn entry(bar: &Bar, table: u64, i: usize) -> &std::sync::atomic::AtomicU64 {
    bar.vram().u64_at((table + i as u64 * 8) as usize)
}

impl Ppgtt {
    pub fn new(bar: &Bar, pt: &Vram, asid: u32) -> Result<Self, VramError> {
        let root = pt.alloc(0)? * 4096;
        bar.vram().write(root, &[0u8; 4096]);
        bar.set_context(asid, root);
        Ok(Self {
            asid,
            root,
            tables: vec![root],
        })
    }

    /// The table at `level` covering `va`, created on the way when missing.
    /// A 2 MiB leaf in the way is split into 512 4 KiB entries.
    fn table_for(&mut self, bar: &Bar, pt: &Vram, va: u64, level: u32) -> Result<u64, VramError> {
        let mut table = self.root;
        for l in (level + 1..4).rev() {
            let e = entry(bar, table, index(va, l));
            let raw = e.load(Ordering::Acquire);
            table = match decode(raw, l) {
                Entry::Table { addr } => addr,
                Entry::NotPresent => {
                    let t = pt.alloc(0)? * 4096;
                    bar.vram().write(t, &[0u8; 4096]);
                    self.tables.push(t);
                    e.store(
                        encode_table(t).map_err(|_| VramError::NotAllocated)?,
                        Ordering::Release,
                    );
                    t
                }
                Entry::Leaf {
                    addr,
                    target,
                    writable,
                    atomics,
                    ..
                } => {
                    // Split a 2 MiB leaf to map inside it at 4 KiB.
                    let t = pt.alloc(0)? * 4096;
                    self.tables.push(t);
                    for i in 0..512u64 {
                        let pte = encode_leaf(
                            addr + i * 4096,
                            PageSize::Size4K,
                            target,
                            LeafAccess { writable, atomics },
                            PAT_WB,
                        )
                        .map_err(|_| VramError::NotAllocated)?;
                        entry(bar, t, i as usize).store(pte, Ordering::Release);
                    }
                    e.store(
                        encode_table(t).map_err(|_| VramError::NotAllocated)?,
                        Ordering::Release,
                    );
                    t
                }
            };
        }
        let _ = ADDR_MASK;
        Ok(table)
    }

    /// Maps one page (`size` 4 KiB or 2 MiB) at `va` to `addr`.
    pub fn map(
        &mut self,
        bar: &Bar,
        pt: &Vram,
        va: u64,
        addr: u64,
        (size, target): (PageSize, Target),
        access: LeafAccess,
    ) -> Result<(), VramError> {
        let table = self.table_for(bar, pt, va, size.level())?;
        let pte =
            encode_leaf(addr, size, target, access, PAT_WB).map_err(|_| VramError::NotAllocated)?;
        entry(bar, table, index(va, size.level())).store(pte, Ordering::Release);
        Ok(())
    }

    /// Clears every leaf covering `[va, va + len)` (4 KiB granularity; a 2 MiB
    /// leaf partly covered is split first). Returns whether a present leaf
    /// was cleared: then the caller invalidates the TLB.
    /// A range that is not inside the 48-bit space (its end wraps or passes
    /// 2^48) is [`VramError::BadRange`] and nothing is cleared.
    pub fn unmap(&mut self, bar: &Bar, pt: &Vram, va: u64, len: u64) -> Result<bool, VramError> {
        let end = va
            .checked_add(len)
            .filter(|&e| e <= VA_END)
            .ok_or(VramError::BadRange)?;
        let mut a = va & !4095;
        let mut cleared = false;
        while a < end {
            // Walk without creating tables.
            let mut table = self.root;
            let mut level = 3;
            let mut done = false;
            while !done {
                let e = entry(bar, table, index(a, level));
                match decode(e.load(Ordering::Acquire), level) {
                    Entry::NotPresent => done = true,
                    Entry::Table { addr } if level > 0 => {
                        table = addr;
                        level -= 1;
                    }
                    Entry::Table { .. } => done = true,
                    Entry::Leaf {
                        size: PageSize::Size2M,
                        ..
                    } if a % (2 << 20) == 0 && a + (2 << 20) <= end => {
                        e.store(0, Ordering::Release);
                        a += (2 << 20) - 4096;
                        (done, cleared) = (true, true);
                    }
                    Entry::Leaf {
                        size: PageSize::Size2M,
                        ..
                    } => {
                        let t = self.table_for(bar, pt, a, 0)?;
                        entry(bar, t, index(a, 0)).store(0, Ordering::Release);
                        (done, cleared) = (true, true);
                    }
                    Entry::Leaf { .. } => {
                        e.store(0, Ordering::Release);
                        (done, cleared) = (true, true);
                    }
                }
            }
            a += 4096;
        }
        Ok(cleared)
    }

    /// Frees the page-table pages (the VM is gone).
    pub fn release(self, pt: &Vram) {
        for t in self.tables {
            let _ = pt
                .add_refs(t / 4096, 1)
                .and_then(|_| pt.release_page(t / 4096));
        }
    }
}
