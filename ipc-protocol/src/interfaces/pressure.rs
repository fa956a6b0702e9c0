//! `Pressure`: served by mm-server, called by xe-svm and the pager.

use crate::types::{MemoryKind, World};

wire_struct!(
    pub struct ReportUsage {
        pub memory: MemoryKind,
        pub world: World,
        pub bytes: u64,
    }
);
wire_struct!(
    /// Reserve `bytes`; stalls in mm-server (never under page or BO locks,
    /// rule 5) until room appears or `timeout_ms` passes.
    pub struct Reserve {
        pub memory: MemoryKind,
        pub world: World,
        pub bytes: u64,
        pub timeout_ms: u32,
    }
);
wire_struct!(
    pub struct Reserved {
        pub bytes: u64,
    }
);
wire_struct!(
    pub struct Release {
        pub memory: MemoryKind,
        pub world: World,
        pub bytes: u64,
    }
);
wire_struct!(
    pub struct Status {}
);
wire_struct!(
    pub struct PressureStatus {
        pub vram_total: u64,
        pub vram_used: u64,
        pub low_watermark: u64,
        pub high_watermark: u64,
        /// VRAM held by each world, as last reported or refreshed.
        pub bo_vram_bytes: u64,
        pub svm_vram_bytes: u64,
        /// System memory holding SVM pages (from the pager).
        pub svm_sram_bytes: u64,
        /// What the eviction loop took back from each world so far.
        pub bo_evicted_bytes: u64,
        pub svm_evicted_bytes: u64,
        /// Eviction rounds run, and reservations that had to wait.
        pub rounds: u64,
        pub stalled_reservations: u64,
    }
);
wire_struct!(
    pub struct Done {}
);

interface! {
    /// The memory-pressure broker's interface.
    interface Pressure = 7;
    errors PressureError {
        TimedOut = 1,
        /// More than the memory's total was asked for.
        TooLarge = 2,
        /// A peer the broker needed did not answer.
        PeerUnavailable = 3,
    }
    calls {
        2 => Reserve [0] -> Reserved [0] needs PRESSURE_RESERVE;
        3 => Release [0] -> Done [0] needs PRESSURE_RESERVE;
        4 => Status [0] -> PressureStatus [0] needs PRESSURE_STATUS, idempotent;
    }
    notifications {
        1 => ReportUsage [0] needs PRESSURE_REPORT;
    }
}
