//! `PagerReclaim`: served by the pager, called by mm-server (rule 7).

use crate::types::GpuId;

wire_struct!(
    /// Evict up to `bytes` of SVM pages of `gpu` back to SRAM, page by page
    /// under rule 1.
    pub struct Evict {
        pub gpu: GpuId,
        pub bytes: u64,
    }
);
wire_struct!(
    pub struct Evicted {
        pub bytes: u64,
        pub pages: u64,
    }
);
wire_struct!(
    /// Device `gpu` goes away (its server is being stopped, or the device
    /// unplugged): from now on nothing is migrated to it (its collects are
    /// refused, `Retired`), and every page in its VRAM is brought back to
    /// RAM. Pages a peer faults on meanwhile move to the peer instead.
    pub struct Evacuate {
        pub gpu: GpuId,
    }
);
wire_struct!(
    /// `pages` came back to RAM; `left` are still in its VRAM (a copy
    /// that failed: asking again retries them).
    pub struct Evacuated {
        pub pages: u64,
        pub left: u64,
    }
);
wire_struct!(
    pub struct Usage {}
);
wire_struct!(
    pub struct SvmUsage {
        pub sram_bytes: u64,
        pub vram_bytes: u64,
    }
);

interface! {
    /// The pager's reclaim interface for the memory-pressure broker.
    interface PagerReclaim = 3;
    errors ReclaimError {
        NoSuchGpu = 1,
        GpuUnavailable = 2,
    }
    calls {
        1 => Evict [0] -> Evicted [0] needs RECLAIM;
        2 => Usage [0] -> SvmUsage [0] needs RECLAIM, idempotent;
        3 => Evacuate [0] -> Evacuated [0] needs RECLAIM, idempotent;
    }
    notifications {}
}
