//! PPGTT entries of a 4-level, 48-bit GPU VM.
//!
//! Bits from `drivers/gpu/drm/xe/xe_gtt_defs.h` (Linux): `XE_PAGE_PRESENT`
//! bit 0, `XE_PAGE_RW` bit 1, `XE_PPGTT_PTE_PAT0/1` bits 3/4,
//! `XE_PPGTT_PTE_PAT2` bit 7 in a 4 KiB PTE but `XE_PPGTT_PDE_PDPE_PAT2`
//! bit 12 in a huge (2 MiB) PDE, since bit 7 there is `XE_PDE_PS_2M`;
//! `XE_PDE_64K` bit 6, `XE_PTE_PS64` bit 8 (all 16 PTEs of a 64 KiB page
//! carry it), `XE_PTE_NULL` bit 9, `XE_USM_PPGTT_PTE_AE` bit 10 (atomics
//! allowed), `XE_PPGTT_PTE_DM` bit 11 (address is in
//! device memory), `XE2_PPGTT_PTE_PAT4` bit 61, `XELPG_PPGTT_PTE_PAT3` bit
//! 62. The address field is bits 12..=51 (`XE_PTE_ADDR_MASK`). Levels
//! follow `xe_pt.c`: level 3 (PML4) down to level 0 (PTE), 9 index bits
//! each above the 12-bit page offset.

bitflags::bitflags! {
    /// Flag bits of a PPGTT entry.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct PteFlags: u64 {
        const PRESENT = 1 << 0;
        const RW = 1 << 1;
        const PAT0 = 1 << 3;
        const PAT1 = 1 << 4;
        /// Level-1 PDE: the level-0 table it points to is compact (64 KiB entries).
        const PDE_64K = 1 << 6;
        /// Level-1 PDE: this entry maps a 2 MiB page (shares bit 7 with PTE PAT2).
        const PS_2M = 1 << 7;
        /// Level-0 PTE: part of a 64 KiB page.
        const PS64 = 1 << 8;
        const NULL = 1 << 9;
        /// Leaf: GPU atomics are allowed here (`XE_USM_PPGTT_PTE_AE`); an
        /// atomic where it is clear faults (`AtomicAccessViolation`).
        const AE = 1 << 10;
        /// Leaf: the address is a device (VRAM) address.
        const DM = 1 << 11;
        const PAT4 = 1 << 61;
        const PAT3 = 1 << 62;
    }
}

pub const ADDR_MASK: u64 = ((1u64 << 52) - 1) & !0xfff;
/// PAT2 of a 4 KiB PTE.
const PTE_PAT2: u64 = 1 << 7;
/// PAT2 of a 2 MiB PDE.
const PDE_PAT2: u64 = 1 << 12;
pub const LEVELS: u32 = 4;
pub const ENTRIES_PER_TABLE: usize = 512;
/// Canonical GPU virtual addresses are below 2^48.
pub const VA_BITS: u32 = 48;

/// Leaf page sizes the driver uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PageSize {
    Size4K,
    Size64K,
    Size2M,
}

impl PageSize {
    pub const fn bytes(self) -> u64 {
        match self {
            Self::Size4K => 4 << 10,
            Self::Size64K => 64 << 10,
            Self::Size2M => 2 << 20,
        }
    }
    /// The level whose entry maps a page of this size.
    pub const fn level(self) -> u32 {
        match self {
            Self::Size4K | Self::Size64K => 0,
            Self::Size2M => 1,
        }
    }
}

/// What a leaf lets the GPU do besides read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeafAccess {
    pub writable: bool,
    /// GPU atomics (`AE`); they need `writable` too.
    pub atomics: bool,
}

impl LeafAccess {
    pub const READ: Self = Self {
        writable: false,
        atomics: false,
    };
    /// Writes and atomics.
    pub const ALL: Self = Self {
        writable: true,
        atomics: true,
    };
    /// Writes (if `writable`) and atomics with them.
    pub const fn writable(writable: bool) -> Self {
        Self {
            writable,
            atomics: writable,
        }
    }
}

/// Where a leaf's address points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// System memory, through the device's DMA address space.
    System,
    /// Device memory (VRAM): sets `DM`.
    Device,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PteError {
    /// The address is not aligned to the page size.
    Misaligned,
    /// The address does not fit the 52-bit address field.
    AddressTooLarge,
    /// PAT indices are 5 bits.
    PatOutOfRange,
}

/// Index of `va` in the table at `level`.
pub const fn index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * level)) & 0x1ff) as usize
}

fn pat_bits(pat: u8, huge: bool) -> Result<u64, PteError> {
    if pat > 31 {
        return Err(PteError::PatOutOfRange);
    }
    let bit = |n: u8| (pat >> n) & 1 == 1;
    let mut b = 0;
    if bit(0) {
        b |= PteFlags::PAT0.bits();
    }
    if bit(1) {
        b |= PteFlags::PAT1.bits();
    }
    if bit(2) {
        b |= if huge { PDE_PAT2 } else { PTE_PAT2 };
    }
    if bit(3) {
        b |= PteFlags::PAT3.bits();
    }
    if bit(4) {
        b |= PteFlags::PAT4.bits();
    }
    Ok(b)
}

fn pat_of(raw: u64, huge: bool) -> u8 {
    let on = |m: u64| (raw & m != 0) as u8;
    on(PteFlags::PAT0.bits())
        | on(PteFlags::PAT1.bits()) << 1
        | on(if huge { PDE_PAT2 } else { PTE_PAT2 }) << 2
        | on(PteFlags::PAT3.bits()) << 3
        | on(PteFlags::PAT4.bits()) << 4
}

/// Encodes a leaf entry mapping `addr` with `size` (a 64 KiB page is 16
/// such PTEs, each with its own 4 KiB of `addr`).
pub fn encode_leaf(
    addr: u64,
    size: PageSize,
    target: Target,
    access: LeafAccess,
    pat: u8,
) -> Result<u64, PteError> {
    let align = if size == PageSize::Size64K {
        4096
    } else {
        size.bytes()
    };
    if addr % align != 0 {
        return Err(PteError::Misaligned);
    }
    if addr & !ADDR_MASK != 0 {
        return Err(PteError::AddressTooLarge);
    }
    let mut raw = addr | PteFlags::PRESENT.bits() | pat_bits(pat, size == PageSize::Size2M)?;
    if access.writable {
        raw |= PteFlags::RW.bits();
    }
    if access.atomics {
        raw |= PteFlags::AE.bits();
    }
    if target == Target::Device {
        raw |= PteFlags::DM.bits();
    }
    match size {
        PageSize::Size4K => {}
        PageSize::Size64K => raw |= PteFlags::PS64.bits(),
        PageSize::Size2M => raw |= PteFlags::PS_2M.bits(),
    }
    Ok(raw)
}

/// Encodes a directory entry pointing at the next-level table at `table`.
pub fn encode_table(table: u64) -> Result<u64, PteError> {
    if table % 4096 != 0 {
        return Err(PteError::Misaligned);
    }
    if table & !ADDR_MASK != 0 {
        return Err(PteError::AddressTooLarge);
    }
    Ok(table | PteFlags::PRESENT.bits() | PteFlags::RW.bits())
}

/// A decoded entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    NotPresent,
    /// Points at the next level's table.
    Table {
        addr: u64,
    },
    /// Maps a page.
    Leaf {
        addr: u64,
        size: PageSize,
        target: Target,
        writable: bool,
        atomics: bool,
        pat: u8,
    },
}

/// Decodes `raw` as read from a table at `level`.
pub fn decode(raw: u64, level: u32) -> Entry {
    let flags = PteFlags::from_bits_retain(raw);
    if !flags.contains(PteFlags::PRESENT) {
        return Entry::NotPresent;
    }
    let addr = raw & ADDR_MASK;
    let leaf = |size: PageSize, huge: bool| Entry::Leaf {
        addr: if huge {
            addr & !(size.bytes() - 1)
        } else {
            addr
        },
        size,
        target: if flags.contains(PteFlags::DM) {
            Target::Device
        } else {
            Target::System
        },
        writable: flags.contains(PteFlags::RW),
        atomics: flags.contains(PteFlags::AE),
        pat: pat_of(raw, huge),
    };
    match level {
        0 if flags.contains(PteFlags::PS64) => leaf(PageSize::Size64K, false),
        0 => leaf(PageSize::Size4K, false),
        1 if flags.contains(PteFlags::PS_2M) => leaf(PageSize::Size2M, true),
        _ => Entry::Table { addr },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writable without atomics, and read-only.
    const W: LeafAccess = LeafAccess {
        writable: true,
        atomics: false,
    };
    const R: LeafAccess = LeafAccess::READ;

    // Values computed by hand from xe_gtt_defs.h.
    #[test]
    fn vectors() {
        // Atomics allowed: AE, bit 10.
        assert_eq!(
            encode_leaf(
                0x1234_5000,
                PageSize::Size4K,
                Target::System,
                LeafAccess::ALL,
                0
            ),
            Ok(0x1234_5403)
        );
        // 4 KiB system page at 0x1234_5000, RW, PAT 0: PRESENT|RW.
        assert_eq!(
            encode_leaf(0x1234_5000, PageSize::Size4K, Target::System, W, 0),
            Ok(0x1234_5003)
        );
        // VRAM 4 KiB page at 0x2000, read-only, PAT 3 (PAT0|PAT1 = bits 3,4): 0x2000|1|0x18|0x800.
        assert_eq!(
            encode_leaf(0x2000, PageSize::Size4K, Target::Device, R, 3),
            Ok(0x2819)
        );
        // PAT 4 on a PTE is bit 7; on a 2 MiB PDE it is bit 12.
        assert_eq!(
            encode_leaf(0, PageSize::Size4K, Target::System, R, 4),
            Ok(0x81)
        );
        assert_eq!(
            encode_leaf(0x20_0000, PageSize::Size2M, Target::Device, W, 4),
            Ok(0x20_0000 | 0x1000 | 0x80 | 0x800 | 3)
        );
        // PAT 8 and 16: bits 62 and 61.
        assert_eq!(
            encode_leaf(0, PageSize::Size4K, Target::System, R, 8),
            Ok(1 << 62 | 1)
        );
        assert_eq!(
            encode_leaf(0, PageSize::Size4K, Target::System, R, 16),
            Ok(1 << 61 | 1)
        );
        // 64 KiB page: every 4 KiB PTE has PS64 (bit 8).
        assert_eq!(
            encode_leaf(0x1_1000, PageSize::Size64K, Target::Device, W, 0),
            Ok(0x1_1000 | 0x100 | 0x800 | 3)
        );
        // Table pointer: PRESENT|RW.
        assert_eq!(encode_table(0x7000), Ok(0x7003));
    }

    #[test]
    fn checked_constructors() {
        assert_eq!(
            encode_leaf(0x1000, PageSize::Size2M, Target::Device, W, 0),
            Err(PteError::Misaligned)
        );
        assert_eq!(
            encode_leaf(1 << 52, PageSize::Size4K, Target::Device, W, 0),
            Err(PteError::AddressTooLarge)
        );
        assert_eq!(
            encode_leaf(0, PageSize::Size4K, Target::Device, W, 32),
            Err(PteError::PatOutOfRange)
        );
        assert_eq!(encode_table(0x10), Err(PteError::Misaligned));
    }

    #[test]
    fn decode_roundtrip() {
        for pat in 0..32 {
            for (size, addr) in [
                (PageSize::Size4K, 0x5000u64),
                (PageSize::Size64K, 0x3_0000),
                (PageSize::Size2M, 0x4000_0000),
            ] {
                for target in [Target::System, Target::Device] {
                    for (writable, atomics) in [(false, false), (true, false), (true, true)] {
                        let access = LeafAccess { writable, atomics };
                        let raw = encode_leaf(addr, size, target, access, pat).unwrap();
                        assert_eq!(
                            decode(raw, size.level()),
                            Entry::Leaf {
                                addr,
                                size,
                                target,
                                writable,
                                atomics,
                                pat
                            }
                        );
                    }
                }
            }
        }
        assert_eq!(
            decode(encode_table(0x9000).unwrap(), 2),
            Entry::Table { addr: 0x9000 }
        );
        assert_eq!(decode(0x9000, 0), Entry::NotPresent);
    }

    #[test]
    fn indices() {
        let va = (3u64 << 39) | (5 << 30) | (7 << 21) | (9 << 12) | 0x123;
        assert_eq!(
            [index(va, 3), index(va, 2), index(va, 1), index(va, 0)],
            [3, 5, 7, 9]
        );
    }
}
