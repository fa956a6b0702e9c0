//! The pager's core, driven by messages (STYLE: a server is a core plus a
//! thin runtime). No I/O: every side effect goes through [`Runtime`], which
//! the Linux runtime (`crate::host`), the simulation and tests implement,
//! and every lock through [`crate::sync`], so the same code runs on std and
//! under the shuttle explorer.
//!
//! What lives here:
//! - sessions ([`session`]): one per client badge, one per GPU server
//!   (its `PagerMigrate` endpoint; one GPU each, up to
//!   [`object::MAX_GPUS`]); each with its handle tables, its budget
//!   ([`budget`]) and one place where it ends ([`end`]);
//! - objects and views ([`object`], [`view`]) and the view changes the
//!   runtime reports (fork, remap, unmap: [`changes`]);
//! - the fault path ([`fault`]) and the migration side effects over the
//!   runtime ([`backend`]), on top of the protocols in [`crate::migrate`];
//! - the three interfaces' requests: clients ([`client`]), the GPU server
//!   ([`gpu`]), mm-server ([`reclaim`]).
//!
//! **Lock order** (a lock is only taken after those above it):
//! 1. a page lock (the state word's lock bit; held across side effects);
//! 2. `Space::changing` (read by a write-protect pass; written by the
//!    runtime while it applies view changes, which never takes a page lock);
//! 3. a session's tables (`objects`, `views`, `spaces`, `opened`,
//!    `collects`), the core's `clients` and `gpus` registries, `hand`;
//! 4. `Object::views`, `Space::views` (leaf locks, held for a copy);
//! 5. the metadata arena's spin lock (inside allocations only).
//!
//! No lock of levels 2 to 4 is held while waiting on a page, and no lock
//! at all is held across a call to the GPU server except page locks
//! (rule 9 is the GPU server's: its notifier never calls the pager).
//!
//! **Several GPUs, no global lock.** Each GPU server has its own session
//! and notifier; a page's state word names the GPU whose VRAM holds it.
//! A GPU's collect takes page locks only (trylocks, rule 1), has every
//! other GPU that opened the object unmap the chunk (rule 8, `backend.rs`
//! `protect`), and takes pages in a peer's VRAM too: its finalize
//! has their source unmap and push them VRAM to VRAM (`migrate.rs`
//! `PeerPush`). A CPU fault's pile goes back GPU by GPU. The pager calls
//! a GPU server while serving another's request (A's collect tells B to
//! unmap), never the reverse (rule 9): no call cycle, and no lock is
//! shared between GPUs (`pager/tests/several_gpus.rs`, `peer.rs`).

pub mod advice;
pub mod backend;
pub mod budget;
pub mod changes;
pub mod client;
pub mod discard;
pub mod end;
pub mod fault;
pub mod gpu;
pub mod growth;
pub mod object;
pub mod prefetch;
pub mod reap;
pub mod rebuild;
pub mod reclaim;
pub mod records;
pub mod removed;
pub mod resident;
pub mod runtime;
pub mod session;
pub mod sync_views;
pub mod thrash;
pub mod unreached;
pub mod view;

use ::session::{Arena, Meta, Quota};
use ipc_protocol::interfaces::pager::{PagerError, PagerTotals};
use ipc_protocol::interfaces::pager_migrate::MigrateError;

use self::budget::{Ledger, PagerBudget, PagerQuotas, IDS_PER_SESSION};
use self::object::Object;
use self::runtime::Runtime;
use self::session::{ClientSession, GpuSession};
use self::view::{Space, View, ViewSpec};
use crate::migrate::Policy;
use crate::sync::{lock, Arc, AtomicU64, Mutex, Ordering};

/// Client sessions a pager serves by default (the manifest's client slots).
pub const MAX_CLIENT_SESSIONS: usize = 8;
/// Slots the handle index bits leave for sessions.
pub const SESSION_SLOTS: u32 = ::session::handle::MAX_SLOTS / IDS_PER_SESSION;
/// Metadata the peer sessions may use (the GPU server's opened objects and
/// collects in flight).
pub const PEER_METADATA: u64 = 16 << 20;

/// Limits and choices of one pager.
#[derive(Debug, Clone)]
pub struct Config {
    /// What each client may make it hold.
    pub budget: PagerBudget,
    /// Client sessions at once.
    pub max_clients: usize,
    /// The metadata arena, sized at boot.
    pub arena_bytes: u64,
    /// Collects the GPU server may have awaiting finalize at once.
    pub gpu_collects: usize,
    /// Rule 2 broken on purpose for the tests that show it matters.
    pub policy: Policy,
    /// Breaks rule 8 on purpose: migrate pages back without telling the GPU
    /// server to unmap them first. Only for the test that shows the rule
    /// matters (`rule8_*` in `init/tests/race.rs`).
    pub skip_invalidate: bool,
    /// Anti-thrashing (`thrash.rs`); `None` (the default): every fault
    /// migrates.
    pub thrash: Option<thrash::ThrashPolicy>,
    /// How long a CPU fault may keep failing (the GPU server unreachable,
    /// copies failing) before it ends with an error the client sees
    /// (`SIGBUS`) instead of retrying: no hang.
    pub fault_deadline_us: u64,
    /// This pager's generation (1 at boot; `init` counts restarts): a
    /// collect sent to an earlier one is refused (`gpu.rs`).
    pub generation: u32,
    /// How long a collect may await its finalize. The GPU server's calls
    /// to us have a deadline (issue 14): one that gave up on a collect's
    /// reply never finalizes it, so past this lease the collect is undone
    /// (its pages unlocked, unchanged) and a late finalize is refused
    /// (`NotCollected`: the GPU server drops its copies). Longer than the
    /// GPU server's call deadline plus a copy.
    pub collect_lease_us: u64,
}

impl Default for Config {
    fn default() -> Self {
        let budget = PagerBudget::default();
        let arena_bytes = budget
            .arena_bytes_needed(MAX_CLIENT_SESSIONS, PEER_METADATA)
            .unwrap_or(u64::MAX);
        Self {
            budget,
            max_clients: MAX_CLIENT_SESSIONS,
            arena_bytes,
            gpu_collects: 4096,
            policy: Policy::Rules,
            skip_invalidate: false,
            // Opt-in (`thrash.rs` says why).
            thrash: None,
            fault_deadline_us: 10_000_000,
            generation: 1,
            collect_lease_us: 90_000_000,
        }
    }
}

/// Why a core could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The arena cannot hold every client at its metadata limit.
    ArenaTooSmall { need: u64, have: u64 },
    /// More client sessions than handle ids can tell apart.
    TooManyClients,
    /// The host would not give the arena.
    Arena(::session::arena::ArenaError),
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::ArenaTooSmall { need, have } => write!(
                f,
                "the metadata arena ({} MiB) is smaller than every client at its \
                 metadata_bytes budget needs ({} MiB)",
                have >> 20,
                need.div_ceil(1 << 20)
            ),
            Self::TooManyClients => write!(f, "at most {} clients", SESSION_SLOTS - 1),
            Self::Arena(e) => write!(f, "metadata arena: {e:?}"),
        }
    }
}

/// One pager: its runtime, its sessions, the server-wide totals.
pub struct Core<R: Runtime> {
    pub rt: R,
    pub cfg: Config,
    arena: Arc<Arena>,
    /// What every session holds, together (unlimited quotas).
    totals: Arc<PagerQuotas>,
    /// Client sessions by slot.
    clients: Mutex<Vec<Option<Arc<ClientSession<R>>>>>,
    /// The GPU servers' sessions, one per GPU (at most [`object::MAX_GPUS`]).
    gpus: Mutex<Vec<Arc<GpuSession<R>>>>,
    /// GPUs going away (bit per GPU, `reclaim.rs` `evacuate`): a session
    /// made for one later is retired from its start.
    retired: core::sync::atomic::AtomicU16,
    /// The metadata the GPU servers' sessions use, together (the arena
    /// holds [`PEER_METADATA`] for them however many GPUs there are).
    peer_quota: Arc<Quota>,
    /// Where the last eviction stopped (`reclaim.rs`).
    hand: Mutex<reclaim::Hand>,
    next_space: AtomicU64,
    /// Where objects, spaces and views are recorded for a restart
    /// (`records.rs`); none: nothing is.
    journal: std::sync::OnceLock<crate::journal::Journal>,
}

impl<R: Runtime> Core<R> {
    pub fn new(rt: R, cfg: Config) -> Result<Self, ConfigError> {
        if cfg.max_clients >= SESSION_SLOTS as usize {
            return Err(ConfigError::TooManyClients);
        }
        let need = cfg
            .budget
            .arena_bytes_needed(cfg.max_clients, PEER_METADATA)
            .unwrap_or(u64::MAX);
        if need > cfg.arena_bytes {
            return Err(ConfigError::ArenaTooSmall {
                need,
                have: cfg.arena_bytes,
            });
        }
        let bytes = usize::try_from(cfg.arena_bytes)
            .map_err(|_| ConfigError::Arena(::session::arena::ArenaError::BadSize))?;
        let arena = Arena::new(bytes).map_err(ConfigError::Arena)?;
        Ok(Self {
            rt,
            totals: Arc::new(PagerQuotas::new(&PagerBudget::unlimited())),
            clients: Mutex::new((0..cfg.max_clients).map(|_| None).collect()),
            gpus: Mutex::new(Vec::new()),
            peer_quota: Arc::new(Quota::new(PEER_METADATA)),
            retired: core::sync::atomic::AtomicU16::new(0),
            hand: Mutex::new(reclaim::Hand::default()),
            next_space: AtomicU64::new(1),
            journal: std::sync::OnceLock::new(),
            arena,
            cfg,
        })
    }

    /// The session of client `badge`, opened on its first request.
    pub fn client(&self, badge: u64) -> Result<Arc<ClientSession<R>>, PagerError> {
        let mut clients = lock(&self.clients);
        if let Some(s) = clients.iter().flatten().find(|s| s.badge == badge) {
            return Ok(s.clone());
        }
        let slot = clients
            .iter()
            .position(Option::is_none)
            .ok_or(PagerError::OverBudget)?;
        // Slot 0 of the ids is never a client's: it stays free for peers.
        let s = self.new_session(badge, slot as u32 + 1);
        clients[slot] = Some(s.clone());
        log::debug!("pager: client {badge} has a session (slot {})", slot + 1);
        Ok(s)
    }

    /// The session of client `badge` in `slot` (1-based, the slot its ids
    /// carry), made there if it has none: a restart gives each client the
    /// slot its ids were issued from (`rebuild.rs`).
    pub fn client_in_slot(&self, badge: u64, slot: u32) -> Option<Arc<ClientSession<R>>> {
        let mut clients = lock(&self.clients);
        if let Some(s) = clients.iter().flatten().find(|s| s.badge == badge) {
            return (s.slot == slot).then(|| s.clone());
        }
        let at = clients.get_mut((slot as usize).checked_sub(1)?)?;
        if at.is_some() {
            return None;
        }
        let s = self.new_session(badge, slot);
        *at = Some(s.clone());
        Some(s)
    }

    /// A session for client `badge` in id slot `slot`, with its budget.
    fn new_session(&self, badge: u64, slot: u32) -> Arc<ClientSession<R>> {
        let ledger = Arc::new(Ledger::new(&self.cfg.budget, self.totals.clone()));
        let meta = Meta::new(self.arena.clone(), ledger.metadata.clone());
        Arc::new(ClientSession::new(badge, slot, ledger, meta))
    }

    /// The session of client `badge`, if it has one.
    pub fn find_client(&self, badge: u64) -> Option<Arc<ClientSession<R>>> {
        lock(&self.clients)
            .iter()
            .flatten()
            .find(|s| s.badge == badge)
            .cloned()
    }

    /// Removes client `badge`'s session from the registry (its end).
    fn take_client(&self, badge: u64) -> Option<Arc<ClientSession<R>>> {
        lock(&self.clients)
            .iter_mut()
            .find(|s| s.as_ref().is_some_and(|s| s.badge == badge))
            .and_then(Option::take)
    }

    /// Every client session now.
    pub fn clients(&self) -> Vec<Arc<ClientSession<R>>> {
        lock(&self.clients).iter().flatten().cloned().collect()
    }

    /// The session of GPU `gpu`'s server, calling from `badge` (the
    /// endpoint that GPU's server was given). One server per GPU: another
    /// badge for the same GPU, or the same badge for another GPU, is
    /// refused (`NotOwner`).
    pub fn gpu_session(&self, badge: u64, gpu: u8) -> Result<Arc<GpuSession<R>>, MigrateError> {
        let mut g = lock(&self.gpus);
        if let Some(s) = g.iter().find(|s| s.badge == badge || s.gpu == gpu) {
            return match s.badge == badge && s.gpu == gpu {
                true => Ok(s.clone()),
                false => Err(MigrateError::NotOwner),
            };
        }
        if usize::from(gpu) >= object::MAX_GPUS {
            return Err(MigrateError::NotOwner);
        }
        // Each GPU's session may hold as many objects as the clients may.
        let meta = Meta::new(self.arena.clone(), self.peer_quota.clone());
        let objects = self
            .cfg
            .max_clients
            .saturating_mul(self.cfg.budget.objects.min(IDS_PER_SESSION as u64) as usize);
        let s = GpuSession::new(badge, gpu, meta, objects, self.cfg.gpu_collects);
        let s = Arc::new(s);
        // Under the registry's lock: an evacuation that did not see this
        // session set the bit before it looked.
        if self.is_retired(gpu) {
            s.retire();
        }
        g.push(s.clone());
        self.note_gpu(badge, gpu);
        Ok(s)
    }

    /// The GPU servers' sessions now.
    pub fn gpu_sessions(&self) -> Vec<Arc<GpuSession<R>>> {
        lock(&self.gpus).clone()
    }

    /// Whether GPU `gpu` is going away (`evacuate`).
    pub fn is_retired(&self, gpu: u8) -> bool {
        let bit = 1u16.checked_shl(u32::from(gpu)).unwrap_or(0);
        self.retired.load(core::sync::atomic::Ordering::SeqCst) & bit != 0
    }

    /// GPU `gpu`'s server's session, if it has one.
    pub fn gpu_of(&self, gpu: u8) -> Option<Arc<GpuSession<R>>> {
        lock(&self.gpus).iter().find(|s| s.gpu == gpu).cloned()
    }

    /// Server-wide totals (the `Accounting` reply).
    pub fn accounting(&self) -> PagerTotals {
        let t = &self.totals;
        let gpus = self.gpu_sessions();
        PagerTotals {
            sessions: (self.clients().len() + gpus.len()) as u64,
            objects: t.objects.used(),
            object_bytes: t.object_bytes.used(),
            views: t.views.used(),
            spaces: t.spaces.used(),
            fault_threads: t.fault_threads.used(),
            arena_bytes: self.arena.used() as u64,
            collects: gpus.iter().map(|g| g.in_flight() as u64).sum(),
        }
    }

    /// A new address space of `session`, charged to its budget.
    pub fn new_space(
        &self,
        session: &Arc<ClientSession<R>>,
        port: R::Port,
        forked: bool,
    ) -> Result<Arc<Space<R>>, PagerError> {
        let space = self.add_space(session, port, forked, None)?;
        self.remember_space(&space);
        Ok(space)
    }

    /// Address space `id` of `session` (a new id when `None`), charged to
    /// its budget; later new ones get higher ids (a restart brings back
    /// its predecessor's).
    fn add_space(
        &self,
        session: &Arc<ClientSession<R>>,
        port: R::Port,
        forked: bool,
        id: Option<u64>,
    ) -> Result<Arc<Space<R>>, PagerError> {
        let charge = self.charge_space(session, id.is_none())?;
        let id = match id {
            Some(id) => {
                self.next_space
                    .fetch_max(id.saturating_add(1), Ordering::Relaxed);
                id
            }
            None => self.next_space.fetch_add(1, Ordering::Relaxed),
        };
        let space = Arc::new(Space::new(id, session.clone(), port, forked, charge));
        session.add_space(space.clone())?;
        Ok(space)
    }

    /// Records a view with its object and its space.
    pub fn record_view(&self, spec: ViewSpec<R>) -> Result<Arc<View<R>>, PagerError> {
        let session = spec.space.session.clone();
        let view = session.insert_view(spec)?;
        view.object.add_view(view.clone());
        view.space.add_view(view.clone());
        self.note_view(&view);
        Ok(view)
    }

    /// Forgets `view`: the object no longer reaches its addresses, its ids
    /// name nothing. With `unregister`, the range is handed back to the
    /// kernel first. A space left without views stops.
    pub fn retire_view(&self, view: &View<R>, unregister: bool) {
        if unregister {
            let _ = self.rt.unregister(&view.space.port, view.addr, view.len());
        }
        self.forget_view(view);
        view.space.session.remove_view_ids(view);
        view.object.remove_view(view);
        if view.space.remove_view(view) {
            self.stop_space(&view.space);
        }
    }

    /// Rule 8 for views: a GPU binding of a view that went away is
    /// unmapped before the pager forgets it (a fork's twin has none).
    pub fn tell_gone(&self, view: &View<R>) {
        if !view.forked {
            for id in view.gpu_ids() {
                self.rt.view_gone(id);
            }
        }
    }

    /// Stops `space`; returns whether this call stopped it.
    pub fn stop_space(&self, space: &Space<R>) -> bool {
        let first = space.mark_stopped();
        if first {
            self.rt.stop_space(space);
            space.session.remove_space(space);
            self.forget_space(space);
        }
        first
    }

    /// The process behind `space` is gone: its views go (their GPU
    /// bindings too), the pages stay the object's.
    pub fn space_gone(&self, space: &Space<R>) {
        if !self.stop_space(space) {
            return;
        }
        for v in space.views() {
            self.retire_view(&v, false);
            self.tell_gone(&v);
        }
    }

    /// Rule 8 on the GPUs `which` picks among those whose server opened
    /// `o` and is attached: each unmaps object pages `[first, first +
    /// count)` under one new sequence (none taken when no GPU is told), so
    /// a GPU fault that read the old state refuses to map.
    pub(crate) fn invalidate_gpus(
        &self,
        o: &Object<R>,
        (first, count): (usize, usize),
        which: impl Fn(u8) -> bool,
    ) -> Result<(), runtime::RtError> {
        let gpus = o.gpu_ids();
        let mut told = gpus
            .iter()
            .filter(|&(g, _)| which(g) && self.rt.gpu_attached(g))
            .peekable();
        if told.peek().is_none() {
            return Ok(());
        }
        let seq = self.next_invalidation(o);
        for (gpu, id) in told {
            self.rt.invalidate(&o.memory, gpu, id, first, count, seq)?;
        }
        Ok(())
    }

    /// A new invalidation sequence of `o`'s (rule 8: a GPU that heard it
    /// does not bind from a collect that read an older one).
    pub(crate) fn next_invalidation(&self, o: &Object<R>) -> u64 {
        o.seq.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The arena (for tests and accounting).
    pub fn arena(&self) -> &Arc<Arena> {
        &self.arena
    }
}

/// The objects of every client, with their owner (eviction and usage).
pub(crate) fn all_objects<R: Runtime>(core: &Core<R>) -> Vec<(u64, Arc<Object<R>>)> {
    let mut v = Vec::new();
    for s in core.clients() {
        for o in s.objects() {
            v.push((s.badge, o));
        }
    }
    v
}
