//! Field types shared by several interfaces.

use crate::{ProtocolError, Reader, Wire, Writer};

/// Pages one message may name: one 2 MiB chunk of 4 KiB pages.
pub const MAX_PAGES_PER_MESSAGE: u16 = 512;
pub const PAGE_SIZE: u64 = 4096;

wire_newtype!(
    /// A memory object of the pager (DESIGN.md 2), named per client.
    pub struct ObjectId(u32)
);
wire_newtype!(
    /// A view: one client mapping of a memory object.
    pub struct ViewId(u32)
);
wire_newtype!(
    /// A GPU VM of the GPU server.
    pub struct VmId(u32)
);
wire_newtype!(
    /// A buffer object of the GPU server.
    pub struct BoId(u32)
);
wire_newtype!(
    /// A submitted GPU job.
    pub struct JobId(u64)
);
wire_newtype!(
    /// Which GPU (GPU server instance) a page lives on.
    pub struct GpuId(u8) in 0, 15
);

impl GpuId {
    /// GPU 0: the one GPU of a system with one.
    pub const ZERO: Self = match Self::new(0) {
        Some(g) => g,
        None => panic!("0 is a GPU id"),
    };
}
wire_newtype!(
    /// An invalidation sequence number (DESIGN.md rule 8).
    pub struct Seq(u64)
);
wire_newtype!(
    /// A count of 4 KiB pages in one message: 1 to 512.
    pub struct PageCount(u16) in 1, MAX_PAGES_PER_MESSAGE
);

/// One bit per page of a chunk of up to 512 pages (bit `i` is page
/// `first_page + i`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct PageMask(pub [u64; 8]);

impl PageMask {
    pub const EMPTY: Self = Self([0; 8]);

    /// The first `n` pages set.
    pub fn first(n: usize) -> Self {
        let mut m = Self::EMPTY;
        for i in 0..n.min(512) {
            m.set(i);
        }
        m
    }
    pub fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    pub fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
    pub fn get(&self, i: usize) -> bool {
        i < 512 && self.0[i / 64] & (1 << (i % 64)) != 0
    }
    pub fn count(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }
    pub fn and(&self, o: &Self) -> Self {
        let mut m = *self;
        for (a, b) in m.0.iter_mut().zip(o.0) {
            *a &= b;
        }
        m
    }
    pub fn or(&self, o: &Self) -> Self {
        let mut m = *self;
        for (a, b) in m.0.iter_mut().zip(o.0) {
            *a |= b;
        }
        m
    }
    pub fn and_not(&self, o: &Self) -> Self {
        let mut m = *self;
        for (a, b) in m.0.iter_mut().zip(o.0) {
            *a &= !b;
        }
        m
    }
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..512).filter(move |i| self.get(*i))
    }
}

impl Wire for PageMask {
    const MIN_SIZE: usize = 64;
    const MAX_SIZE: usize = 64;
    fn encode(&self, w: &mut Writer) {
        for word in self.0 {
            word.encode(w);
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        let mut m = Self::EMPTY;
        for word in m.0.iter_mut() {
            *word = u64::decode(r)?;
        }
        Ok(m)
    }
    fn example() -> Self {
        Self([
            0x8000_0000_0000_0001,
            0,
            0xff,
            0,
            0,
            0x0123_4567_89ab_cdef,
            0,
            1 << 63,
        ])
    }
    fn schema() -> crate::schema::Type {
        crate::schema::Type::Bitmap {
            name: "PageMask",
            doc: &[
                " One bit per page of a chunk of up to 512 pages (bit `i` is page",
                " `first_page + i`).",
            ],
            bits: 512,
        }
    }
    #[cfg(feature = "proptest")]
    fn strategy() -> proptest::strategy::BoxedStrategy<Self> {
        use proptest::strategy::Strategy;
        proptest::array::uniform8(proptest::arbitrary::any::<u64>())
            .prop_map(Self)
            .boxed()
    }
}

wire_enum!(
    /// Where a page's data lives.
    pub enum Location: u8 {
        System = 1,
        Device = 2,
    }
);

wire_enum!(
    /// A page's state as the pager reports it (DESIGN.md 3).
    pub enum PageStateCode: u8 {
        Empty = 0,
        System = 1,
        Device = 2,
        Migrating = 3,
    }
);

wire_enum!(
    /// Placement advice for a range.
    pub enum Advice: u8 {
        Default = 0,
        PreferSystem = 1,
        PreferDevice = 2,
        /// GPU atomics need the pages in VRAM.
        AtomicDevice = 3,
        /// GPU atomics work wherever the pages are, system memory too.
        AtomicGlobal = 4,
        /// GPU atomics are refused (CPU atomics only): a GPU atomic there
        /// faults and its job ends `Faulted`.
        AtomicCpu = 5,
        /// A location: the pages live in VRAM. GPU faults migrate them
        /// there; a CPU access to a page in VRAM is refused (`SIGBUS`)
        /// instead of moving it back. Pages in RAM serve the CPU.
        DeviceOnly = 6,
        /// A location: the pages stay where they are and every GPU maps
        /// them there, in system memory or in a peer GPU's VRAM through
        /// its peer window (several GPUs): a peer access in place, slower
        /// per access, no migration (xe's preferred location on a peer's
        /// `devmem_fd`, UVM's peer mappings). CPU faults move them back
        /// as usual.
        AccessInPlace = 7,
        /// A location naming a GPU (xe's preferred location on that
        /// device's `devmem_fd`): `PreferGpuK` prefers GPU K's VRAM. GPU
        /// K's faults and prefetches move the pages into its VRAM (from RAM
        /// or, VRAM to VRAM, from a peer); every other GPU maps them where
        /// they are (GPU K's VRAM through its peer window, or system
        /// memory) instead of taking them. Pages reach GPU K when GPU K
        /// faults or prefetches them: rule 9 keeps the pager from asking
        /// GPU K to pull them during another GPU's fault. As with
        /// `PreferDevice`, a CPU fault on another page of the chunk leaves
        /// them in VRAM. See [`Advice::prefer_gpu`].
        PreferGpu0 = 8,
        PreferGpu1 = 9,
        PreferGpu2 = 10,
        PreferGpu3 = 11,
        PreferGpu4 = 12,
        PreferGpu5 = 13,
        PreferGpu6 = 14,
        PreferGpu7 = 15,
    }
);

impl Advice {
    /// The advice preferring GPU `gpu`'s VRAM (`None` past the eighth).
    pub fn prefer_gpu(gpu: u8) -> Option<Self> {
        let code = (Self::PreferGpu0 as u8).checked_add(gpu)?;
        Self::ALL
            .iter()
            .copied()
            .find(|a| *a as u8 == code && a.preferred_gpu().is_some())
    }

    /// The GPU a `PreferGpuK` advice names.
    pub fn preferred_gpu(self) -> Option<u8> {
        let code = self as u8;
        (Self::PreferGpu0 as u8..=Self::PreferGpu7 as u8)
            .contains(&code)
            .then(|| code - Self::PreferGpu0 as u8)
    }
}

wire_enum!(
    /// What a GPU kernel does to its range (run by many hardware threads).
    pub enum KernelKind: u8 {
        /// Read one word per 4 KiB page.
        TouchPages = 1,
        /// Add `value` to every u32 of the range.
        IncrementAll = 2,
        /// Write `value` to one u32 every `stride` bytes.
        StridedWrite = 3,
        /// Read `threads * 64` words at pseudo-random pages.
        RandomRead = 4,
        /// Atomically add `value` to the first u32 of every page.
        AtomicAdd = 5,
        /// Read one word per 4 KiB page while the hardware prefetcher runs
        /// a page ahead; its faults (CTYPE prefetch) are acknowledged and
        /// dropped by the GPU server, never fatal (`GpuStats::prefetch_faults`).
        Speculative = 6,
    }
);

wire_enum!(
    /// How a GPU job ended.
    pub enum JobStatus: u8 {
        Completed = 1,
        /// An access faulted and the fault could not be resolved.
        Faulted = 2,
        /// Still running when the wait's timeout expired.
        Running = 3,
        /// A batch held an instruction the GPU cannot run.
        BadCommand = 4,
        /// A batch ran past the GPU's bounds (an endless loop, a semaphore
        /// wait that never held) and was stopped.
        Hung = 5,
    }
);

wire_enum!(
    /// Kind of memory being accounted.
    pub enum MemoryKind: u8 {
        Vram = 1,
        Sram = 2,
    }
);

wire_enum!(
    /// The two worlds of DESIGN.md rule 7.
    pub enum World: u8 {
        /// Buffer objects (the TTM world).
        Bo = 1,
        /// SVM pages (the core-mm world).
        Svm = 2,
    }
);

#[cfg(test)]
mod tests {
    use super::Advice;

    #[test]
    fn prefer_gpu_names_each_of_eight_gpus_and_no_more() {
        for gpu in 0..8u8 {
            let a = Advice::prefer_gpu(gpu).expect("an advice for GPUs 0..8");
            assert_eq!(a.preferred_gpu(), Some(gpu));
        }
        assert_eq!(Advice::prefer_gpu(8), None);
        assert_eq!(Advice::prefer_gpu(u8::MAX), None);
        assert_eq!(Advice::PreferDevice.preferred_gpu(), None);
        assert_eq!(Advice::AccessInPlace.preferred_gpu(), None);
    }
}
