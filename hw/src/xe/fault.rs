//! The GuC page-fault descriptor (G2H) and the page-fault reply (H2G).
//!
//! Layouts from `drivers/gpu/drm/xe/regs/xe_pagefault_desc.h` and
//! `abi/guc_fwif.h` (`struct xe_guc_pagefault_desc`, `struct
//! xe_guc_pagefault_reply`), Linux 6.17+:
//! - dw0: fault level 2:0, source id 10:3, engine instance 24:19, engine
//!   class 27:25, private data low 31:28
//! - dw1: private data high 11:0 (shifted left 4 when joined), ASID 31:12
//! - dw2: access type 1:0, fault type 3:2, VFID 9:4, address 31:12 (bits 31:12 of the VA)
//! - dw3: address bits 63:32
//! - the device model's own: dw0 bit 18 (reserved in that layout) marks a
//!   fault the prefetcher raised (IGT `xe_prefetch_fault`'s CTYPE
//!   prefetch), which no access waits for; its encoding on real hardware is
//!   not in the public headers this follows.
//!
//! Reply: dw0 valid 0, success 1, reply 4:2, descriptor type 11:10, ASID
//! 31:12; dw1 VFID 5:0, engine instance 12:7, engine class 15:13, private
//! data 31:16; dw2 reserved.

const fn field(v: u32, lo: u32, hi: u32) -> u32 {
    (v >> lo) & ((1u32 << (hi - lo + 1)) - 1)
}

const fn put(v: u32, lo: u32, hi: u32) -> u32 {
    (v & ((1u32 << (hi - lo + 1)) - 1)) << lo
}

/// `FLT_ACCESS_TYPE_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AccessType {
    Read = 0,
    Write = 1,
    Atomic = 2,
}

/// `FLT_TYPE_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FaultType {
    NotPresent = 0,
    WriteAccessViolation = 1,
    AtomicAccessViolation = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultDecodeError {
    ReservedAccessType,
    ReservedFaultType,
}

/// One page fault as the GuC reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultDescriptor {
    pub asid: u32,
    /// Faulting virtual address (page aligned).
    pub address: u64,
    pub access: AccessType,
    pub fault_type: FaultType,
    /// Page-table level at which the walk failed.
    pub level: u8,
    pub engine_class: u8,
    pub engine_instance: u8,
    pub source_id: u8,
    pub vfid: u8,
    /// 16 bits the hardware echoes back in the reply (the model puts the
    /// faulting hardware thread here).
    pub pdata: u16,
    /// Raised by the prefetcher (speculative): nothing waits for it; the
    /// driver acknowledges it and drops it.
    pub prefetch: bool,
}

impl FaultDescriptor {
    pub const DWORDS: usize = 4;

    pub fn encode(&self) -> [u32; 4] {
        let pdata = self.pdata as u32;
        [
            put(self.level as u32, 0, 2)
                | put(self.source_id as u32, 3, 10)
                | put(self.engine_instance as u32, 19, 24)
                | put(self.prefetch as u32, 18, 18)
                | put(self.engine_class as u32, 25, 27)
                | put(pdata & 0xf, 28, 31),
            put(pdata >> 4, 0, 11) | put(self.asid, 12, 31),
            put(self.access as u32, 0, 1)
                | put(self.fault_type as u32, 2, 3)
                | put(self.vfid as u32, 4, 9)
                | (self.address as u32 & 0xffff_f000),
            (self.address >> 32) as u32,
        ]
    }

    pub fn decode(dw: [u32; 4]) -> Result<Self, FaultDecodeError> {
        let access = match field(dw[2], 0, 1) {
            0 => AccessType::Read,
            1 => AccessType::Write,
            2 => AccessType::Atomic,
            _ => return Err(FaultDecodeError::ReservedAccessType),
        };
        let fault_type = match field(dw[2], 2, 3) {
            0 => FaultType::NotPresent,
            1 => FaultType::WriteAccessViolation,
            2 => FaultType::AtomicAccessViolation,
            _ => return Err(FaultDecodeError::ReservedFaultType),
        };
        Ok(Self {
            asid: field(dw[1], 12, 31),
            address: ((dw[3] as u64) << 32) | (dw[2] & 0xffff_f000) as u64,
            access,
            fault_type,
            level: field(dw[0], 0, 2) as u8,
            engine_class: field(dw[0], 25, 27) as u8,
            engine_instance: field(dw[0], 19, 24) as u8,
            source_id: field(dw[0], 3, 10) as u8,
            vfid: field(dw[2], 4, 9) as u8,
            pdata: (field(dw[0], 28, 31) | field(dw[1], 0, 11) << 4) as u16,
            prefetch: field(dw[0], 18, 18) == 1,
        })
    }
}

/// The driver's answer to one fault (`PFR_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultReply {
    /// `true`: the access is replayed; `false`: it fails (the job faults).
    pub success: bool,
    pub asid: u32,
    pub engine_class: u8,
    pub engine_instance: u8,
    pub vfid: u8,
    pub pdata: u16,
    /// `PFR_REPLY`: 0 access, 1 engine, 2 VF, 3 all (`xe_guc_fault_reply_type`).
    pub reply: u8,
}

impl FaultReply {
    pub const DWORDS: usize = 3;
    /// `FAULT_RESPONSE_DESC`.
    const DESC_TYPE: u32 = 1;

    /// The reply to `fault`.
    pub fn to(fault: &FaultDescriptor, success: bool) -> Self {
        Self {
            success,
            asid: fault.asid,
            engine_class: fault.engine_class,
            engine_instance: fault.engine_instance,
            vfid: fault.vfid,
            pdata: fault.pdata,
            reply: 0,
        }
    }

    pub fn encode(&self) -> [u32; 3] {
        [
            1 | put(self.success as u32, 1, 1)
                | put(self.reply as u32, 2, 4)
                | put(Self::DESC_TYPE, 10, 11)
                | put(self.asid, 12, 31),
            put(self.vfid as u32, 0, 5)
                | put(self.engine_instance as u32, 7, 12)
                | put(self.engine_class as u32, 13, 15)
                | put(self.pdata as u32, 16, 31),
            0,
        ]
    }

    /// `None` when the valid bit is clear.
    pub fn decode(dw: [u32; 3]) -> Option<Self> {
        if dw[0] & 1 == 0 {
            return None;
        }
        Some(Self {
            success: field(dw[0], 1, 1) == 1,
            reply: field(dw[0], 2, 4) as u8,
            asid: field(dw[0], 12, 31),
            vfid: field(dw[1], 0, 5) as u8,
            engine_instance: field(dw[1], 7, 12) as u8,
            engine_class: field(dw[1], 13, 15) as u8,
            pdata: field(dw[1], 16, 31) as u16,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FaultDescriptor {
        FaultDescriptor {
            asid: 0x12345,
            address: 0x7f12_3456_7000,
            access: AccessType::Write,
            fault_type: FaultType::NotPresent,
            level: 1,
            engine_class: 3,
            engine_instance: 2,
            source_id: 0x40,
            vfid: 0,
            pdata: 0xabcd,
            prefetch: false,
        }
    }

    #[test]
    fn descriptor_vector() {
        // By hand: dw0 = level 1 | src 0x40<<3 | inst 2<<19 | class 3<<25 | (0xd)<<28
        let dw0 = 1 | (0x40 << 3) | (2 << 19) | (3 << 25) | (0xd << 28);
        // dw1 = pdata>>4 (0xabc) | asid<<12
        let dw1 = 0xabc | (0x12345 << 12);
        // dw2 = access 1 | fault type 0 | addr[31:12]
        let dw2 = 1 | 0x3456_7000;
        let dw3 = 0x7f12;
        assert_eq!(sample().encode(), [dw0, dw1, dw2, dw3]);
        assert_eq!(FaultDescriptor::decode([dw0, dw1, dw2, dw3]), Ok(sample()));
    }

    #[test]
    fn reply_vector() {
        let r = FaultReply::to(&sample(), true);
        // dw0 = valid | success<<1 | desc type 1<<10 | asid<<12
        let dw0 = 1 | 2 | (1 << 10) | (0x12345 << 12);
        // dw1 = inst 2<<7 | class 3<<13 | pdata<<16
        let dw1 = (2 << 7) | (3 << 13) | (0xabcd << 16);
        assert_eq!(r.encode(), [dw0, dw1, 0]);
        assert_eq!(FaultReply::decode([dw0, dw1, 0]), Some(r));
        assert_eq!(FaultReply::decode([0, dw1, 0]), None);
    }

    #[test]
    fn the_prefetch_flag_round_trips_in_dw0_bit_18() {
        let f = FaultDescriptor {
            prefetch: true,
            ..sample()
        };
        let dw = f.encode();
        assert_eq!(dw[0] ^ sample().encode()[0], 1 << 18);
        assert_eq!(FaultDescriptor::decode(dw), Ok(f));
    }

    #[test]
    fn reserved_codes_are_errors() {
        let mut dw = sample().encode();
        dw[2] |= 3;
        assert_eq!(
            FaultDescriptor::decode(dw),
            Err(FaultDecodeError::ReservedAccessType)
        );
        let mut dw = sample().encode();
        dw[2] |= 3 << 2;
        assert_eq!(
            FaultDescriptor::decode(dw),
            Err(FaultDecodeError::ReservedFaultType)
        );
    }
}
