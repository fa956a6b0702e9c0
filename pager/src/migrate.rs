//! The migration protocols of the pager core.
//!
//! **CPU fault** ([`cpu_fault`]), DESIGN.md 5 "CPU fault on a DEVICE page":
//! - Rule 3: the faulter checks the page and takes its lock in one step;
//!   losers sleep on the page and check again, so a thundering herd moves
//!   each page once and everyone else just maps the result.
//! - Rule 1: the winner grows the migration to the page's 2 MiB chunk with
//!   trylocks only, taking whatever DEVICE pages it gets (partial is
//!   normal); it never waits on a lock while holding one.
//! - Rule 2: if the pile fails, it falls back to the faulting page alone,
//!   which it holds: every fault makes progress by its own page.
//!
//! **Collect / finalize** (the GPU server's fault path): collect trylocks a
//! chunk's SYSTEM and EMPTY pages (rule 1; pages held elsewhere are skipped,
//! rule 4: mixed ranges are normal) and blocks CPU writers; finalize marks
//! each page by its own result and unlocks. Rule 9: neither waits on a GPU
//! server.
//!
//! **Peer migration** (several GPUs, DESIGN.md 5 "GPU fault on a peer's
//! page"): a collect with [`Peers::Take`] also trylocks the chunk's pages in
//! another GPU's VRAM. They stay locked, their words still naming the
//! source, until finalize, which has the source GPU push each one the
//! collecting GPU kept a frame for ([`Backend::push_to_peer`]: the source
//! unmaps it, rule 8, then its copy engine writes it through its peer
//! window), never through RAM. A page the push did not land goes back to
//! its source unchanged. So a page moves between GPUs under its own lock
//! alone, as between RAM and VRAM: no lock covers a range or a device, and
//! racing GPUs and CPU faults cannot wait on each other (rule 1) or livelock
//! on a range (each fault keeps what it got, rule 4).

use ipc_protocol::types::PageMask;

use crate::state::{FaultCheck, PageTable, Residency, StateError};

/// Pages in one chunk: a 2 MiB window of 4 KiB pages.
pub const CHUNK_PAGES: usize = 512;

/// A run of at most [`CHUNK_PAGES`] pages of one object; bit `i` of a mask
/// over the chunk is page `first + i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    pub first: usize,
    pub count: usize,
}

impl Chunk {
    pub const MAX_BYTES: usize = CHUNK_PAGES * 4096;

    /// The 2 MiB-aligned chunk around `page`, clipped to the object.
    pub fn around(page: usize, pages: usize) -> Self {
        let first = page & !(CHUNK_PAGES - 1);
        Self {
            first,
            count: CHUNK_PAGES.min(pages - first),
        }
    }
    pub fn pages(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.count).map(move |i| (i, self.first + i))
    }
}

/// Why a side effect failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendError {
    /// The GPU server did not answer or refused.
    Gpu,
    /// A host call failed (errno).
    Host(i32),
}

/// The pager's side effects, implemented by the host runtime and by tests.
pub trait Backend {
    /// Copies the locked DEVICE `pages` of `chunk` back to RAM (after the
    /// GPU unmapped them, rule 8) and makes each visible to views only once
    /// complete. `from[i]` is page `first + i`'s residency. Returns the
    /// pages now in RAM; the others stay in VRAM.
    fn migrate_to_ram(
        &self,
        chunk: Chunk,
        pages: &PageMask,
        from: &[Residency],
    ) -> Result<PageMask, BackendError>;
    /// Makes the locked EMPTY `pages` of `chunk` zero pages visible to
    /// views; returns the pages that are now in RAM.
    fn zero_fill(&self, chunk: Chunk, pages: &PageMask) -> Result<PageMask, BackendError>;
    /// Collect: blocks CPU writers of `pages` (reads go on).
    fn protect(&self, chunk: Chunk, pages: &PageMask) -> Result<(), BackendError>;
    /// Finalize: `pages` moved to VRAM; drop their RAM copies from every
    /// view, then let blocked writers retry (they fault on DEVICE pages).
    fn moved_to_device(&self, chunk: Chunk, pages: &PageMask) -> Result<(), BackendError>;
    /// Finalize: `pages` stay in RAM; let blocked writers go on.
    fn unprotect(&self, chunk: Chunk, pages: &PageMask) -> Result<(), BackendError>;
    /// Peer migration: the locked `pages` of `chunk` sit in another GPU's
    /// VRAM (`from[i]`). Each one's source GPU unmaps it (rule 8) and pushes
    /// it into GPU `to`'s VRAM at frame `first_pfn + i`; the source keeps its
    /// frame until [`Backend::free_peer_frames`]. Returns the pages that
    /// landed, and those whose source did not answer in time. A runtime
    /// without peer windows refuses (the pages stay).
    fn push_to_peer(
        &self,
        chunk: Chunk,
        pages: &PageMask,
        from: &[Residency],
        to: u8,
        first_pfn: u64,
    ) -> Result<Pushed, BackendError> {
        let _ = (chunk, pages, from, to, first_pfn);
        Err(BackendError::Gpu)
    }
    /// The source frames (`from[i]`) of `pages`, pushed to a peer and now
    /// published there, go back to their GPUs.
    fn free_peer_frames(&self, chunk: Chunk, pages: &PageMask, from: &[Residency]) {
        let _ = (chunk, pages, from);
    }
    /// The pages of `chunk` whose preferred location is the device
    /// (`Pager::Advise`): a CPU fault on another page of the chunk leaves
    /// them in VRAM instead of growing its migration over them.
    fn device_preferred(&self, chunk: Chunk) -> PageMask {
        let _ = chunk;
        PageMask::EMPTY
    }
    /// Whether a CPU fault on the DEVICE `page` is refused instead of
    /// moving it back (`Advice::DeviceOnly`); asked under its lock.
    fn cpu_refused(&self, page: usize) -> bool {
        let _ = page;
        false
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultError {
    State(StateError),
    /// Even the faulting page alone could not be moved.
    Backend(BackendError),
    /// The page is in VRAM and its advice refuses the CPU
    /// ([`Backend::cpu_refused`]): nothing moved.
    Refused,
}

impl From<StateError> for FaultError {
    fn from(e: StateError) -> Self {
        Self::State(e)
    }
}

/// How one CPU fault was resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOutcome {
    /// The page was already in RAM (another faulter moved it).
    Resident,
    ZeroFilled,
    /// This faulter moved `pages` pages, its own among them; `fallback`
    /// when the pile failed and it moved its own page alone (rule 2).
    Migrated {
        pages: u32,
        fallback: bool,
    },
}

/// What the fault path may do; the alternatives exist so tests can show
/// that the rules matter (DESIGN.md 4, "fails when broken").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Rules 1 to 3 as designed.
    #[default]
    Rules,
    /// Rule 2 broken: no single-page fallback; a failed pile is retried
    /// whole (the seed's "spin-retry a pile").
    NoFallback,
}

/// Bound on pile retries under [`Policy::NoFallback`] before giving up
/// (smaller under the explorer, where each retry is a scheduling point).
#[cfg(not(feature = "shuttle"))]
pub const PILE_RETRIES: u32 = 10_000;
#[cfg(feature = "shuttle")]
pub const PILE_RETRIES: u32 = 20;

/// Resolves a CPU fault on `page` (rules 1, 2, 3).
pub fn cpu_fault(
    table: &PageTable,
    backend: &dyn Backend,
    page: usize,
    policy: Policy,
) -> Result<FaultOutcome, FaultError> {
    loop {
        match table.fault_lock(page)? {
            FaultCheck::Resident => return Ok(FaultOutcome::Resident),
            FaultCheck::Busy => {
                // Rule 3: wait on the migration entry, then re-check.
                table.wait_unlocked(page)?;
            }
            FaultCheck::Locked(Residency::Empty) => return zero_fill(table, backend, page),
            FaultCheck::Locked(Residency::System) => {
                // fault_lock never locks a SYSTEM page; keep the state as is.
                table.unlock(page, Residency::System)?;
                return Ok(FaultOutcome::Resident);
            }
            FaultCheck::Locked(own @ Residency::Device { .. }) => {
                if backend.cpu_refused(page) {
                    table.unlock(page, own)?;
                    return Err(FaultError::Refused);
                }
                return migrate_back(table, backend, page, own, policy);
            }
        }
    }
}

/// First touch: `page` is locked and EMPTY. Zero-fills the EMPTY pages of
/// its chunk that trylock gets (rule 1), its own page first among them.
fn zero_fill(
    table: &PageTable,
    backend: &dyn Backend,
    page: usize,
) -> Result<FaultOutcome, FaultError> {
    let chunk = Chunk::around(page, table.len());
    let mut held = PageMask::EMPTY;
    for (i, p) in chunk.pages() {
        if p == page {
            held.set(i);
        } else if let Some(r) = table.try_lock(p)? {
            if r == Residency::Empty {
                held.set(i);
            } else {
                table.unlock(p, r)?;
            }
        }
    }
    let result = backend.zero_fill(chunk, &held);
    let got = *result.as_ref().unwrap_or(&PageMask::EMPTY);
    for (i, p) in chunk.pages() {
        if held.get(i) {
            table.unlock(
                p,
                if got.get(i) {
                    Residency::System
                } else {
                    Residency::Empty
                },
            )?;
        }
    }
    match result {
        Ok(got) if got.get(page - chunk.first) => Ok(FaultOutcome::ZeroFilled),
        Ok(_) => Err(FaultError::Backend(BackendError::Gpu)),
        Err(e) => Err(FaultError::Backend(e)),
    }
}

/// The winner's part: `page` is locked and in VRAM.
fn migrate_back(
    table: &PageTable,
    backend: &dyn Backend,
    page: usize,
    own: Residency,
    policy: Policy,
) -> Result<FaultOutcome, FaultError> {
    let chunk = Chunk::around(page, table.len());
    let stay = backend.device_preferred(chunk);
    let mut tries = 0;
    loop {
        // Rule 1: grow to the chunk with trylocks only (not over pages
        // whose preferred location is the device).
        let mut held = PageMask::EMPTY;
        let mut from = vec![Residency::Empty; chunk.count];
        for (i, p) in chunk.pages() {
            if p == page {
                held.set(i);
                from[i] = own;
                continue;
            }
            if stay.get(i) {
                continue;
            }
            match table.try_lock(p)? {
                Some(r @ Residency::Device { .. }) => {
                    held.set(i);
                    from[i] = r;
                }
                Some(other) => table.unlock(p, other)?,
                None if policy == Policy::NoFallback => {
                    // Rule 2 broken: demand the whole pile of DEVICE pages.
                    if matches!(table.info(p)?.residency, Residency::Device { .. }) {
                        release(table, chunk, &held, &from, page)?;
                        tries += 1;
                        if tries >= PILE_RETRIES {
                            table.unlock(page, own)?;
                            return Err(FaultError::Backend(BackendError::Gpu));
                        }
                        // Spin-retry the pile, as the seed warns against.
                        crate::sync::yield_now();
                        held = PageMask::EMPTY;
                        break;
                    }
                }
                None => {}
            }
        }
        if held.is_empty() {
            continue; // NoFallback retry
        }
        let own_index = page - chunk.first;
        let got = backend
            .migrate_to_ram(chunk, &held, &from)
            .unwrap_or(PageMask::EMPTY);
        for (i, p) in chunk.pages() {
            if held.get(i) && p != page {
                table.unlock(
                    p,
                    if got.get(i) {
                        Residency::System
                    } else {
                        from[i]
                    },
                )?;
            }
        }
        if got.get(own_index) {
            table.unlock(page, Residency::System)?;
            return Ok(FaultOutcome::Migrated {
                pages: got.count(),
                fallback: false,
            });
        }
        if policy == Policy::NoFallback {
            tries += 1;
            if tries >= PILE_RETRIES {
                table.unlock(page, own)?;
                return Err(FaultError::Backend(BackendError::Gpu));
            }
            continue;
        }
        // Rule 2: the faulting page alone; we still hold its lock.
        let mut alone = PageMask::EMPTY;
        alone.set(own_index);
        return match backend.migrate_to_ram(chunk, &alone, &from) {
            Ok(m) if m.get(own_index) => {
                table.unlock(page, Residency::System)?;
                Ok(FaultOutcome::Migrated {
                    pages: 1,
                    fallback: true,
                })
            }
            Ok(_) => {
                table.unlock(page, own)?;
                Err(FaultError::Backend(BackendError::Gpu))
            }
            Err(e) => {
                table.unlock(page, own)?;
                Err(FaultError::Backend(e))
            }
        };
    }
}

/// Unlocks every held page but `keep`, restoring its state.
fn release(
    table: &PageTable,
    chunk: Chunk,
    held: &PageMask,
    from: &[Residency],
    keep: usize,
) -> Result<(), StateError> {
    for (i, p) in chunk.pages() {
        if held.get(i) && p != keep {
            table.unlock(p, from[i])?;
        }
    }
    Ok(())
}

/// Whether a collect takes pages that sit in another GPU's VRAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peers {
    /// Leave them where they are (a runtime without peer windows).
    Skip,
    /// Lock them for a peer migration (finalize has their source push them).
    Take,
}

/// What a collect took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Collected {
    /// Pages now locked for this migration.
    pub got: PageMask,
    /// Of those, pages that were EMPTY (no data to copy).
    pub zero: PageMask,
    /// Of those, pages in another GPU's VRAM: their words still name the
    /// source while locked; finalize has it push them ([`Peers::Take`]).
    pub peer: PageMask,
    /// Pages already in VRAM of the collecting GPU and not locked by any
    /// migration at collect time: the GPU may map them (subject to the
    /// sequence check), while a locked one may be on its way back to RAM.
    pub device: PageMask,
}

/// Collect (rule 1): trylocks the chunk's SYSTEM and EMPTY pages, blocks
/// their CPU writers, and returns what it got; with [`Peers::Take`], also
/// the pages in another GPU's VRAM (no CPU maps those). Pages locked
/// elsewhere or already in this GPU's VRAM are skipped (rule 4).
pub fn collect(
    table: &PageTable,
    backend: &dyn Backend,
    chunk: Chunk,
    gpu: u8,
    peers: Peers,
) -> Result<Collected, FaultError> {
    let mut c = Collected {
        got: PageMask::EMPTY,
        zero: PageMask::EMPTY,
        peer: PageMask::EMPTY,
        device: PageMask::EMPTY,
    };
    for (i, p) in chunk.pages() {
        match table.try_lock(p)? {
            Some(Residency::System) => c.got.set(i),
            Some(Residency::Empty) => {
                c.got.set(i);
                c.zero.set(i);
            }
            Some(Residency::Device { gpu: g, .. }) if g != gpu && peers == Peers::Take => {
                c.got.set(i);
                c.peer.set(i);
            }
            Some(dev @ Residency::Device { gpu: g, .. }) => {
                if g == gpu {
                    c.device.set(i);
                }
                table.unlock(p, dev)?;
            }
            None => {}
        }
    }
    let to_protect = c.got.and_not(&c.zero).and_not(&c.peer);
    if !to_protect.is_empty() {
        if let Err(e) = backend.protect(chunk, &to_protect) {
            abort_collect(table, chunk, &c)?;
            return Err(FaultError::Backend(e));
        }
    }
    Ok(c)
}

/// Undoes a collect that cannot go on: each page goes back to the state
/// it was collected in.
pub fn abort_collect(table: &PageTable, chunk: Chunk, c: &Collected) -> Result<(), StateError> {
    for (i, p) in chunk.pages() {
        if c.got.get(i) {
            let was = collected_from(table, c, i, p)?;
            table.unlock(p, was)?;
        }
    }
    Ok(())
}

/// The state collected page `p` (bit `i`) was taken in: a peer page's word
/// still names its source while locked.
fn collected_from(
    table: &PageTable,
    c: &Collected,
    i: usize,
    p: usize,
) -> Result<Residency, StateError> {
    Ok(if c.peer.get(i) {
        table.info(p)?.residency
    } else if c.zero.get(i) {
        Residency::Empty
    } else {
        Residency::System
    })
}

/// A collect that will never be finalized (its GPU server died): blocked
/// writers are let go and every collected page goes back, unlocked, to the
/// state it had (the RAM copies were never dropped: nothing is lost).
pub fn release_collect(
    table: &PageTable,
    backend: &dyn Backend,
    chunk: Chunk,
    c: &Collected,
) -> Result<(), FaultError> {
    let protected = c.got.and_not(&c.zero).and_not(&c.peer);
    let r = if protected.is_empty() {
        Ok(())
    } else {
        backend.unprotect(chunk, &protected)
    };
    abort_collect(table, chunk, c)?;
    r.map_err(FaultError::Backend)
}

/// What a peer push did ([`Backend::push_to_peer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pushed {
    /// The pages that landed in the collecting GPU's frames.
    pub landed: PageMask,
    /// The pages whose source did not answer within its deadline: its copy
    /// engine may still write them into those frames, later.
    pub unanswered: PageMask,
}

/// What a finalize did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finalized {
    /// Pages now DEVICE on the collecting GPU.
    pub device: PageMask,
    /// Pages that went back to the state they were collected in.
    pub returned: u32,
    /// Peer pages whose push went unanswered: they stayed with their
    /// source, and the collecting GPU must never reuse their frames (a
    /// late push may still land there, over whatever they would hold).
    pub late: PageMask,
}

/// Finalize: each collected page by its own result. `migrated` pages become
/// DEVICE on `gpu` at `first_pfn + i` (a peer page once its source pushed
/// it there; a RAM page once its RAM copies are dropped); the others
/// return to the state they were collected in.
pub fn finalize(
    table: &PageTable,
    backend: &dyn Backend,
    chunk: Chunk,
    c: &Collected,
    migrated: &PageMask,
    gpu: u8,
    first_pfn: u64,
) -> Result<Finalized, FaultError> {
    let peers = PeerPush::run(table, backend, chunk, c, migrated, gpu, first_pfn)?;
    let moved = c.got.and(migrated).and_not(&peers.unlanded());
    let stay = c.got.and_not(&moved);
    // Drop the RAM copies before the new state is published: a CPU access
    // from here on faults and finds the page locked, then DEVICE.
    let moved_ram = moved.and_not(&c.zero).and_not(&c.peer);
    let drop_result = if moved_ram.is_empty() {
        Ok(())
    } else {
        backend.moved_to_device(chunk, &moved_ram)
    };
    let unprotect_result = {
        let p = stay.and_not(&c.zero).and_not(&c.peer);
        if p.is_empty() {
            Ok(())
        } else {
            backend.unprotect(chunk, &p)
        }
    };
    // The GPU maps a page that stays where it is (a system page): one never
    // touched gets its RAM page now, or a GPU write into it would pass for
    // "never written" at the next collect and be replaced by zeros.
    let stay_zero = stay.and(&c.zero).and_not(&c.peer);
    let filled = if stay_zero.is_empty() {
        PageMask::EMPTY
    } else {
        backend
            .zero_fill(chunk, &stay_zero)
            .unwrap_or(PageMask::EMPTY)
    };
    // The pushed pages' source frames go back before the pages are
    // published on `gpu`: the source unmapped them and nothing else reaches
    // them, and the pages' next migration may then land in the same frames.
    if !peers.landed.is_empty() {
        backend.free_peer_frames(chunk, &peers.landed, &peers.from);
    }
    let mut device = PageMask::EMPTY;
    for (i, p) in chunk.pages() {
        if c.peer.get(i) {
            let now = if moved.get(i) {
                device.set(i);
                Residency::Device {
                    gpu,
                    pfn: first_pfn + i as u64,
                }
            } else {
                peers.from[i] // not pushed: it stays with its source
            };
            table.unlock(p, now)?;
        } else if moved.get(i) {
            let now = if drop_result.is_ok() || c.zero.get(i) {
                device.set(i);
                Residency::Device {
                    gpu,
                    pfn: first_pfn + i as u64,
                }
            } else {
                Residency::System // the RAM copy could not be dropped: it stays the data
            };
            table.unlock(p, now)?;
        } else if stay.get(i) {
            table.unlock(
                p,
                if c.zero.get(i) && !filled.get(i) {
                    Residency::Empty
                } else {
                    Residency::System
                },
            )?;
        }
    }
    drop_result
        .and(unprotect_result)
        .map_err(FaultError::Backend)?;
    Ok(Finalized {
        device,
        returned: stay.count(),
        late: peers.unanswered,
    })
}

/// The peer half of a finalize: where the collected peer pages were, and
/// which of those the collecting GPU kept a frame for landed there.
struct PeerPush {
    /// The pages' sources (`Empty` for pages that are not peer pages).
    from: Vec<Residency>,
    /// Peer pages to move to the collecting GPU.
    wanted: PageMask,
    /// Of those, the pages their sources pushed.
    landed: PageMask,
    /// Of those, the pages whose sources did not answer (not landed).
    unanswered: PageMask,
}

impl PeerPush {
    /// Has the sources push the peer pages of `migrated` (none: no call).
    fn run(
        table: &PageTable,
        backend: &dyn Backend,
        chunk: Chunk,
        c: &Collected,
        migrated: &PageMask,
        gpu: u8,
        first_pfn: u64,
    ) -> Result<Self, StateError> {
        let mut from = Vec::new();
        if !c.peer.is_empty() {
            from = vec![Residency::Empty; chunk.count];
            for (i, p) in chunk.pages() {
                if c.peer.get(i) {
                    from[i] = table.info(p)?.residency;
                }
            }
        }
        let wanted = c.peer.and(migrated);
        let pushed = if wanted.is_empty() {
            Pushed::default()
        } else {
            backend
                .push_to_peer(chunk, &wanted, &from, gpu, first_pfn)
                .unwrap_or_default()
        };
        let landed = pushed.landed.and(&wanted);
        Ok(Self {
            from,
            wanted,
            landed,
            unanswered: pushed.unanswered.and(&wanted).and_not(&landed),
        })
    }

    /// Peer pages the collecting GPU wanted that did not land.
    fn unlanded(&self) -> PageMask {
        self.wanted.and_not(&self.landed)
    }
}

/// Eviction (reclaim of VRAM, rule 7's SVM half): moves the chunk's pages
/// that are in `gpu`'s VRAM back to RAM, taking each with a trylock (rule 1)
/// so it never waits behind a fault; pages another migration holds are
/// left for the next round. Returns the pages moved.
pub fn evict(
    table: &PageTable,
    backend: &dyn Backend,
    chunk: Chunk,
    gpu: u8,
) -> Result<u32, FaultError> {
    let mut held = PageMask::EMPTY;
    let mut from = vec![Residency::Empty; chunk.count];
    for (i, p) in chunk.pages() {
        match table.try_lock(p)? {
            Some(r @ Residency::Device { gpu: g, .. }) if g == gpu => {
                held.set(i);
                from[i] = r;
            }
            Some(other) => table.unlock(p, other)?,
            None => {}
        }
    }
    if held.is_empty() {
        return Ok(0);
    }
    let got = backend
        .migrate_to_ram(chunk, &held, &from)
        .unwrap_or(PageMask::EMPTY);
    for (i, p) in chunk.pages() {
        if held.get(i) {
            table.unlock(
                p,
                if got.get(i) {
                    Residency::System
                } else {
                    from[i]
                },
            )?;
        }
    }
    Ok(got.and(&held).count())
}
