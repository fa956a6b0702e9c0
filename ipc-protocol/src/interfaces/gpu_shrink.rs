//! `GpuShrink`: served by xe-svm, called by mm-server (rule 7).

wire_struct!(
    /// Evict up to `bytes` of idle buffer objects to SRAM, trylock only.
    pub struct Shrink {
        pub bytes: u64,
    }
);
wire_struct!(
    pub struct Shrunk {
        pub bytes: u64,
        pub bos: u32,
    }
);
wire_struct!(
    pub struct Usage {}
);
wire_struct!(
    pub struct VramUsage {
        pub total: u64,
        pub bo_bytes: u64,
        pub svm_bytes: u64,
    }
);

interface! {
    /// The GPU server's shrinker interface for the memory-pressure broker.
    interface GpuShrink = 6;
    errors ShrinkError {
        DeviceLost = 1,
    }
    calls {
        1 => Shrink [0] -> Shrunk [0] needs SHRINK;
        2 => Usage [0] -> VramUsage [0] needs SHRINK, idempotent;
    }
    notifications {}
}
