//! The GPUs this server drives: Xe2 parts, whose GPU page faults are
//! recoverable (what SVM needs). Device IDs as the public Linux
//! `include/drm/intel/pciids.h` lists them (`INTEL_LNL_IDS`,
//! `INTEL_BMG_IDS` with its G21 and G31 groups), which `xe_pci.c` binds to
//! the `lnl` and `bmg` descriptors. `redox/pcid.d/xe-svm.toml` must list
//! the same IDs (a test checks it).

pub const INTEL_VENDOR: u16 = 0x8086;
/// PCI class of a display controller (pcid.d's `class`).
pub const DISPLAY_CLASS: u8 = 0x03;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// Lunar Lake: integrated, no VRAM of its own (SVM in system memory).
    LunarLake,
    /// Battlemage: discrete, VRAM behind BAR2.
    Battlemage,
}

pub const XE2_DEVICES: &[(u16, Platform)] = &[
    (0x6420, Platform::LunarLake),
    (0x64A0, Platform::LunarLake),
    (0x64B0, Platform::LunarLake),
    // BMG G21
    (0xE202, Platform::Battlemage),
    (0xE209, Platform::Battlemage),
    (0xE20B, Platform::Battlemage),
    (0xE20C, Platform::Battlemage),
    (0xE20D, Platform::Battlemage),
    (0xE210, Platform::Battlemage),
    (0xE211, Platform::Battlemage),
    (0xE212, Platform::Battlemage),
    (0xE215, Platform::Battlemage),
    (0xE216, Platform::Battlemage),
    // BMG G31
    (0xE220, Platform::Battlemage),
    (0xE221, Platform::Battlemage),
    (0xE222, Platform::Battlemage),
    (0xE223, Platform::Battlemage),
];

/// The platform of an Intel device ID, if this server drives it.
pub fn platform(device: u16) -> Option<Platform> {
    XE2_DEVICES
        .iter()
        .find(|(id, _)| *id == device)
        .map(|(_, p)| *p)
}
