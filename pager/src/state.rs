//! The page state table (DESIGN.md section 3): one atomic word per 4 KiB
//! page of a memory object, nothing else per page.
//!
//! Word layout (u64):
//!
//! | bits | field |
//! | --- | --- |
//! | 0..=1 | residency: 0 EMPTY, 1 SYSTEM, 2 DEVICE |
//! | 2 | LOCKED: the page lock; while set the page is MIGRATING (a migration entry) |
//! | 3 | WAITERS: someone sleeps on this page's wait bucket |
//! | 4..=11 | temporary references (a migration fails while any is held) |
//! | 12..=15 | GPU holding a DEVICE page |
//! | 16..=63 | VRAM page frame of a DEVICE page |
//!
//! 8 bytes per page: within the 16-byte budget. The words of a client's
//! object come from the server's metadata arena, charged to the client
//! ([`PageTable::new_in`]); tests and the explorer use the heap
//! ([`PageTable::new`]). Sleepers share a fixed table of wait buckets,
//! hashed by page, like the kernel's page waitqueues. The table also counts
//! its SYSTEM and DEVICE pages per 2 MiB chunk as they change (one more
//! word per chunk, from the same store), so usage reports never scan pages
//! and faults on different chunks never share a counter.
//!
//! Locking rules this file enforces:
//! - Rule 1: migrations take page locks with [`PageTable::try_lock`] only.
//! - Rule 3: a CPU faulter checks the state and takes the lock in one
//!   compare-and-swap ([`PageTable::fault_lock`]); losers sleep on the
//!   page ([`PageTable::wait_unlocked`]) and re-check.

use core::alloc::Layout;
use core::ptr::NonNull;

use allocator_api2::alloc::{AllocError, Allocator, Global};
use allocator_api2::vec::Vec as AllocVec;
use session::Meta;

use crate::sync::{lock, AtomicU64, Condvar, Mutex, Ordering};

const RES_MASK: u64 = 0b11;
const LOCKED: u64 = 1 << 2;
const WAITERS: u64 = 1 << 3;
const REF_SHIFT: u32 = 4;
const REF_ONE: u64 = 1 << REF_SHIFT;
const REF_MASK: u64 = 0xff << REF_SHIFT;
const GPU_SHIFT: u32 = 12;
const PFN_SHIFT: u32 = 16;
/// Largest VRAM page frame a word can hold (48 bits: 1 EiB of VRAM).
pub const MAX_PFN: u64 = (1 << 48) - 1;
const WAIT_BUCKETS: usize = 64;

/// Where a page's data is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Residency {
    /// Never touched: the first touch zero-fills.
    Empty,
    /// In system RAM (the memory object's memfd).
    System,
    /// In VRAM of `gpu`, at page frame `pfn`.
    Device { gpu: u8, pfn: u64 },
}

impl Residency {
    fn encode(self) -> u64 {
        match self {
            Self::Empty => 0,
            Self::System => 1,
            Self::Device { gpu, pfn } => {
                2 | ((gpu as u64 & 0xf) << GPU_SHIFT) | ((pfn & MAX_PFN) << PFN_SHIFT)
            }
        }
    }

    fn decode(word: u64) -> Self {
        match word & RES_MASK {
            0 => Self::Empty,
            2 => Self::Device {
                gpu: ((word >> GPU_SHIFT) & 0xf) as u8,
                pfn: word >> PFN_SHIFT,
            },
            _ => Self::System,
        }
    }
}

/// A snapshot of one page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageInfo {
    pub residency: Residency,
    /// Locked: a migration entry is installed and the holder is moving it.
    pub locked: bool,
    pub refs: u8,
}

/// What a CPU faulter found (rule 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultCheck {
    /// In SYSTEM and unlocked: nothing to move, just map it.
    Resident,
    /// This faulter now holds the page lock; the page was in this state.
    Locked(Residency),
    /// Another migration holds the page: wait, then check again.
    Busy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateError {
    /// A page index past the object's end.
    OutOfRange,
    /// 255 temporary references are already held.
    TooManyRefs,
    /// The words could not be allocated (arena or metadata quota exhausted).
    OutOfMetadata,
}

/// Where a table's words live: the heap, or a session's share of the
/// server's metadata arena.
#[derive(Clone)]
pub enum WordStore {
    Heap,
    Arena(Meta),
}

// SAFETY: forwards to the heap or to `Meta`; a block is always freed by
// the same variant that allocated it (a table's store never changes).
unsafe impl Allocator for WordStore {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        match self {
            Self::Heap => Global.allocate(layout),
            Self::Arena(m) => m.allocate(layout),
        }
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe {
            match self {
                Self::Heap => Global.deallocate(ptr, layout),
                Self::Arena(m) => m.deallocate(ptr, layout),
            }
        }
    }
}

struct Bucket {
    mutex: Mutex<()>,
    cv: Condvar,
}

/// The state words of one memory object's pages.
pub struct PageTable {
    words: AllocVec<AtomicU64, WordStore>,
    /// Per 2 MiB chunk: pages in SYSTEM (low 32 bits) and in DEVICE (high
    /// 32 bits) now, kept by `unlock`.
    counts: AllocVec<AtomicU64, WordStore>,
    buckets: Box<[Bucket]>,
}

/// Pages per counted chunk (2 MiB of 4 KiB pages).
const COUNT_CHUNK: usize = 512;
const DEVICE_ONE: u64 = 1 << 32;

/// What a page in `r` adds to its chunk's count word.
fn count_of(r: Residency) -> u64 {
    match r {
        Residency::Empty => 0,
        Residency::System => 1,
        Residency::Device { .. } => DEVICE_ONE,
    }
}

impl PageTable {
    /// A table on the heap (tests, the explorer).
    pub fn new(pages: usize) -> Self {
        match Self::new_in(pages, WordStore::Heap) {
            Ok(t) => t,
            // The heap aborts rather than fail; this arm is not reached.
            Err(e) => panic!("page table of {pages} pages: {e:?}"),
        }
    }

    /// A table whose words come from `store`; a store that cannot give
    /// them is `OutOfMetadata`, never an abort.
    pub fn new_in(pages: usize, store: WordStore) -> Result<Self, StateError> {
        let zeroed = |n: usize, store: WordStore| {
            let mut v = AllocVec::new_in(store);
            v.try_reserve_exact(n)
                .map_err(|_| StateError::OutOfMetadata)?;
            for _ in 0..n {
                v.push(AtomicU64::new(0));
            }
            Ok(v)
        };
        let words = zeroed(pages, store.clone())?;
        let counts = zeroed(pages.div_ceil(COUNT_CHUNK), store)?;
        Ok(Self {
            words,
            counts,
            buckets: (0..WAIT_BUCKETS)
                .map(|_| Bucket {
                    mutex: Mutex::new(()),
                    cv: Condvar::new(),
                })
                .collect(),
        })
    }

    /// Pages in SYSTEM and in DEVICE now: counted as pages change (a page
    /// locked for migration counts as its last state), summed per chunk.
    pub fn counts(&self) -> (u64, u64) {
        self.counts.iter().fold((0, 0), |(s, d), c| {
            let w = c.load(Ordering::Acquire);
            (s + (w & (DEVICE_ONE - 1)), d + (w >> 32))
        })
    }

    /// Bytes this table took from its store (state words and counts).
    pub fn word_bytes(&self) -> usize {
        (self.words.capacity() + self.counts.capacity()) * core::mem::size_of::<AtomicU64>()
    }

    /// One atomic add per change of class, on the page's chunk's word.
    fn count_change(&self, page: usize, was: Residency, now: Residency) {
        let (from, to) = (count_of(was), count_of(now));
        if from != to {
            if let Some(c) = self.counts.get(page / COUNT_CHUNK) {
                // Wrapping: the word's halves never go below zero.
                c.fetch_add(to.wrapping_sub(from), Ordering::AcqRel);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    fn word(&self, page: usize) -> Result<&AtomicU64, StateError> {
        self.words.get(page).ok_or(StateError::OutOfRange)
    }

    fn bucket(&self, page: usize) -> &Bucket {
        &self.buckets[page.wrapping_mul(0x9e37_79b9) % WAIT_BUCKETS]
    }

    pub fn info(&self, page: usize) -> Result<PageInfo, StateError> {
        let w = self.word(page)?.load(Ordering::Acquire);
        Ok(PageInfo {
            residency: Residency::decode(w),
            locked: w & LOCKED != 0,
            refs: ((w & REF_MASK) >> REF_SHIFT) as u8,
        })
    }

    /// Rule 3: reads the state and takes the lock in one atomic step, so a
    /// herd of faulters elects exactly one migrator per page and every
    /// other faulter sees either the lock (and waits) or the result.
    pub fn fault_lock(&self, page: usize) -> Result<FaultCheck, StateError> {
        let word = self.word(page)?;
        let mut cur = word.load(Ordering::Acquire);
        loop {
            if cur & LOCKED != 0 {
                return Ok(FaultCheck::Busy);
            }
            let res = Residency::decode(cur);
            if res == Residency::System {
                return Ok(FaultCheck::Resident);
            }
            match word.compare_exchange_weak(cur, cur | LOCKED, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(FaultCheck::Locked(res)),
                Err(now) => cur = now,
            }
        }
    }

    /// Rule 1: takes the page lock only if it is free and no temporary
    /// reference is held; never waits. Returns the state it locked.
    pub fn try_lock(&self, page: usize) -> Result<Option<Residency>, StateError> {
        let word = self.word(page)?;
        let mut cur = word.load(Ordering::Acquire);
        loop {
            if cur & LOCKED != 0 || cur & REF_MASK != 0 {
                return Ok(None);
            }
            match word.compare_exchange_weak(cur, cur | LOCKED, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(Some(Residency::decode(cur))),
                Err(now) => cur = now,
            }
        }
    }

    /// Releases a page lock the caller holds, publishing `now` as the
    /// page's state, and wakes everyone waiting on the page.
    pub fn unlock(&self, page: usize, now: Residency) -> Result<(), StateError> {
        let was = self.publish(page, REF_MASK, now)?;
        if was & WAITERS != 0 {
            let b = self.bucket(page);
            // Taking the mutex orders this wake after any waiter's check.
            let _g = lock(&b.mutex);
            b.cv.notify_all();
        }
        Ok(())
    }

    /// Records that the locked `page` is `now`, keeping the lock: its
    /// data already moved, and the holder has more to do before others
    /// may use it (`core/backend.rs`, `release_vram`).
    pub fn settle(&self, page: usize, now: Residency) -> Result<(), StateError> {
        self.publish(page, LOCKED | WAITERS | REF_MASK, now)
            .map(|_| ())
    }

    /// Makes the locked `page`'s state `now`, keeping the bits of its word
    /// in `keep` (the rest goes); returns the word before.
    fn publish(&self, page: usize, keep: u64, now: Residency) -> Result<u64, StateError> {
        let word = self.word(page)?;
        let mut cur = word.load(Ordering::Acquire);
        loop {
            debug_assert!(cur & LOCKED != 0, "page {page} is not locked");
            let next = (cur & keep) | now.encode();
            match word.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(w) => cur = w,
            }
        }
        self.count_change(page, Residency::decode(cur), now);
        Ok(cur)
    }

    /// Sleeps until `page` is not locked (the wait on a migration entry).
    pub fn wait_unlocked(&self, page: usize) -> Result<(), StateError> {
        let word = self.word(page)?;
        let b = self.bucket(page);
        let mut g = lock(&b.mutex);
        loop {
            // Announce the waiter and check in one step, under the bucket
            // mutex the unlocker takes before it notifies.
            let w = word.fetch_or(WAITERS, Ordering::AcqRel);
            if w & LOCKED == 0 {
                return Ok(());
            }
            g = b.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Takes a temporary reference (like `get_page`): migrations of the
    /// page fail while it is held.
    pub fn get_ref(&self, page: usize) -> Result<(), StateError> {
        let word = self.word(page)?;
        let mut cur = word.load(Ordering::Acquire);
        loop {
            if cur & REF_MASK == REF_MASK {
                return Err(StateError::TooManyRefs);
            }
            match word.compare_exchange_weak(
                cur,
                cur + REF_ONE,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(now) => cur = now,
            }
        }
    }

    pub fn put_ref(&self, page: usize) -> Result<(), StateError> {
        let prev = self.word(page)?.fetch_sub(REF_ONE, Ordering::AcqRel);
        debug_assert!(
            prev & REF_MASK != 0,
            "put_ref without a reference on page {page}"
        );
        Ok(())
    }

    /// Bytes of per-page metadata (the words; the wait buckets are shared).
    pub const BYTES_PER_PAGE: usize = core::mem::size_of::<u64>();
}

#[cfg(all(test, not(feature = "shuttle")))]
mod tests {
    use super::*;

    #[test]
    fn words_roundtrip_every_residency() {
        let t = PageTable::new(4);
        for (i, r) in [
            Residency::Empty,
            Residency::System,
            Residency::Device {
                gpu: 15,
                pfn: MAX_PFN,
            },
            Residency::Device { gpu: 3, pfn: 12345 },
        ]
        .into_iter()
        .enumerate()
        {
            assert_eq!(t.try_lock(i), Ok(Some(Residency::Empty)));
            t.unlock(i, r).unwrap();
            assert_eq!(
                t.info(i).unwrap(),
                PageInfo {
                    residency: r,
                    locked: false,
                    refs: 0
                }
            );
        }
        assert_eq!(PageTable::BYTES_PER_PAGE, 8);
        assert_eq!(t.info(4), Err(StateError::OutOfRange));
        assert_eq!(t.counts(), (1, 2), "one SYSTEM page, two DEVICE pages");
    }

    #[test]
    fn words_come_from_the_arena_and_go_back() {
        use std::sync::Arc;
        let arena = session::Arena::new(64 << 10).unwrap();
        let quota = Arc::new(session::Quota::new(16 << 10));
        let meta = Meta::new(arena.clone(), quota.clone());
        let t = PageTable::new_in(1024, WordStore::Arena(meta.clone())).unwrap();
        // 8 bytes per page and per chunk's count, charged to the owner.
        assert_eq!(quota.used(), 1024 * 8 + 2 * 8);
        assert_eq!(t.word_bytes(), 1024 * 8 + 2 * 8);
        assert_eq!(
            PageTable::new_in(4096, WordStore::Arena(meta)).err(),
            Some(StateError::OutOfMetadata),
            "past the owner's metadata quota"
        );
        drop(t);
        assert_eq!((quota.used(), arena.used()), (0, 0));
    }

    #[test]
    fn rule3_check_and_lock_in_one_step() {
        let t = PageTable::new(1);
        assert_eq!(t.try_lock(0), Ok(Some(Residency::Empty)));
        t.unlock(0, Residency::Device { gpu: 0, pfn: 7 }).unwrap();
        assert_eq!(
            t.fault_lock(0),
            Ok(FaultCheck::Locked(Residency::Device { gpu: 0, pfn: 7 }))
        );
        assert_eq!(t.fault_lock(0), Ok(FaultCheck::Busy));
        t.unlock(0, Residency::System).unwrap();
        assert_eq!(t.fault_lock(0), Ok(FaultCheck::Resident));
    }

    #[test]
    fn rule1_trylock_fails_on_locked_or_referenced_pages() {
        let t = PageTable::new(1);
        t.get_ref(0).unwrap();
        assert_eq!(
            t.try_lock(0),
            Ok(None),
            "a temporary reference blocks migration"
        );
        t.put_ref(0).unwrap();
        assert_eq!(t.try_lock(0), Ok(Some(Residency::Empty)));
        assert_eq!(t.try_lock(0), Ok(None));
        // A reference taken while locked survives the unlock.
        t.get_ref(0).unwrap();
        t.unlock(0, Residency::System).unwrap();
        assert_eq!(t.info(0).unwrap().refs, 1);
    }

    #[test]
    fn waiters_wake_on_unlock() {
        let t = std::sync::Arc::new(PageTable::new(1));
        assert!(t.try_lock(0).unwrap().is_some());
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    t.wait_unlocked(0).unwrap();
                    t.info(0).unwrap().residency
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(20));
        t.unlock(0, Residency::System).unwrap();
        for w in waiters {
            assert_eq!(w.join().unwrap(), Residency::System);
        }
    }
}
