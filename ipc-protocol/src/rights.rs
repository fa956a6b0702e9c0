//! Capabilities: a badge the server assigned plus rights.
//!
//! On the host an endpoint is one connected `SOCK_SEQPACKET` socket; the
//! server records the [`Capability`] it minted for that socket when `init`
//! created it, so the badge cannot be forged from the payload. A server
//! decides every request from the endpoint's capability alone.

bitflags::bitflags! {
    /// What an endpoint may ask for. One bit per group of operations; each
    /// request declares the bits it needs in its interface description.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Rights: u32 {
        /// Pager: create and destroy memory objects.
        const OBJECT = 1 << 0;
        /// Pager: attach and detach views.
        const VIEW = 1 << 1;
        /// Pager: advise and prefetch.
        const ADVISE = 1 << 2;
        /// Pager: read per-page state.
        const SNAPSHOT = 1 << 3;
        /// PagerMigrate: get pages, collect, finalize (GPU servers only).
        const MIGRATE = 1 << 4;
        /// PagerReclaim: evict SVM pages (mm-server only).
        const RECLAIM = 1 << 5;
        /// Gpu: create and destroy VMs, bind and unbind views.
        const GPU_VM = 1 << 6;
        /// Gpu: submit kernels and wait for them.
        const GPU_SUBMIT = 1 << 7;
        /// Gpu: buffer objects.
        const GPU_BO = 1 << 8;
        /// Gpu: read statistics.
        const GPU_STATS = 1 << 9;
        /// GpuNotify: invalidate and migrate to RAM (the pager only).
        const NOTIFY = 1 << 10;
        /// GpuShrink: evict buffer objects (mm-server only).
        const SHRINK = 1 << 11;
        /// Pressure: report usage.
        const PRESSURE_REPORT = 1 << 12;
        /// Pressure: reserve and release memory.
        const PRESSURE_RESERVE = 1 << 13;
        /// Pressure: read the broker's status.
        const PRESSURE_STATUS = 1 << 14;
    }
}

/// A server-assigned name for one endpoint (one client connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Badge(pub u64);

/// What a server knows about the sender of a message: the badge it assigned
/// and the rights it granted. Nothing in a payload can change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capability {
    pub badge: Badge,
    pub rights: Rights,
}

impl Capability {
    pub fn new(badge: u64, rights: Rights) -> Self {
        Self {
            badge: Badge(badge),
            rights,
        }
    }

    /// The rights in `needed` this capability lacks (empty when allowed).
    pub fn missing(&self, needed: Rights) -> Rights {
        needed.difference(self.rights)
    }
}
