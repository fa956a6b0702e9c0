//! The pager's Linux runtime: the core ([`crate::core`]) over memfds,
//! client userfaultfds and IPC. Thin by design: userfaultfd and memfd
//! mechanics ([`runtime`], [`uffd`]), the event reader and fault workers
//! of each address space ([`space`]), the staging buffer ([`staging`]),
//! and the IPC glue below (each endpoint's requests go to the session of
//! its badge; a closed endpoint ends that session).
//!
//! **Lock order of the runtime**, on top of the core's (`core/mod.rs`):
//! the runtime's own locks are leaves, taken alone and never across a
//! call into the core or a wait on a page:
//! - `HostPort::faults` (a space's fault queue: the reader pushes, the
//!   workers pop);
//! - `SlotPool::slots` (the free and quarantined staging slots; a slot is
//!   lent across one GPU copy and one `UFFDIO_COPY`, never while waiting
//!   on anything but that copy).
//!
//! The reader holds its space's `applying_changes` guard (core level 2)
//! while the core applies a change, and calls the GPU server only after
//! dropping it.

pub mod maps;
pub mod orphans;
pub mod runtime;
pub mod space;
/// The staging slots (shared with the Redox runtime).
pub use crate::staging;
pub mod uffd;

use std::os::fd::OwnedFd;
use std::sync::Arc;

use ipc_protocol::client::{CallError, Client};
use ipc_protocol::interfaces::gpu_notify::{AttachStaging, GpuNotify};
use ipc_protocol::interfaces::{pager as p, pager_migrate as m, pager_reclaim as r};
use ipc_protocol::server::Handler;
use ipc_protocol::transport::TransportError;
use ipc_protocol::Capability;
use session::Handle;

use ipc_protocol::keeper;

use self::runtime::HostRuntime;
use self::staging::SLOT_BYTES;
use crate::core::rebuild::Rebuilt;
use crate::core::Core;
use crate::journal::{Journal, Record};
use crate::state::Residency;

/// How long a restarted pager waits for `init` to give back the
/// descriptors it kept.
const TAKE_BACK_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Limits and sizes of one pager on the host.
#[derive(Debug, Clone)]
pub struct Config {
    /// The core's: budgets, the arena, the rules' switches.
    pub core: crate::core::Config,
    /// Fault workers per address space (client userfaultfd).
    pub threads_per_view: usize,
    pub staging_slots: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            core: crate::core::Config::default(),
            threads_per_view: 4,
            staging_slots: 8,
        }
    }
}

/// Why sharing the staging buffer failed.
enum ShareError {
    /// The GPU server restarted before answering (now generation `.0`).
    Restarted(u32),
    Failed(String),
}
use ShareError::{Failed, Restarted};

impl std::fmt::Display for ShareError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Restarted(g) => write!(f, "the GPU server restarted (generation {g})"),
            Failed(e) => f.write_str(e),
        }
    }
}

/// The pager server: one per system, shared by every endpoint it serves.
#[derive(Clone)]
pub struct PagerServer {
    core: Arc<Core<HostRuntime>>,
}

impl PagerServer {
    pub fn new(cfg: Config) -> Result<Self, String> {
        let rt = HostRuntime::new(cfg.threads_per_view, cfg.staging_slots)
            .map_err(|e| format!("staging buffer: {e}"))?;
        let core = Arc::new(Core::new(rt, cfg.core).map_err(|e| e.to_string())?);
        crate::startup::spawn_lease_reaper(&core).map_err(|e| format!("lease reaper: {e}"))?;
        Ok(Self { core })
    }

    pub fn core(&self) -> &Arc<Core<HostRuntime>> {
        &self.core
    }

    /// Connects GPU `id`'s server's notifier (rule 8, migrations to RAM
    /// and to peers) and shares the staging buffer with it.
    pub fn attach_gpu(&self, id: u8, gpu: Client<GpuNotify>) -> Result<(), String> {
        let notifier = self
            .core
            .rt
            .gpu
            .of(id)
            .map_err(|_| format!("no GPU {id}"))?;
        let size = (self.core.rt.staging.slots() * SLOT_BYTES) as u64;
        let core = self.core.clone();
        // Shares the buffer: now, and again with each new generation.
        let share = move |gpu: &Client<GpuNotify>| {
            let memfd = &core.rt.staging.memfd;
            let dup =
                rustix::io::fcntl_dupfd_cloexec(memfd, 0).map_err(|e| Failed(e.to_string()))?;
            gpu.call_with_handles(AttachStaging { size_bytes: size }, vec![dup])
                .map(|_| ())
                .map_err(|e| match e {
                    CallError::Transport(TransportError::PeerRestarted(g)) => Restarted(g),
                    e => Failed(e.to_string()),
                })
        };
        match share(&gpu) {
            Ok(()) => {}
            // It died before answering: its next generation gets the buffer
            // with our first call to it (`GpuNotifier::keep_staging`).
            Err(Restarted(g)) => {
                log::warn!("pager: the GPU server restarted (generation {g}) while attaching")
            }
            Err(Failed(e)) => return Err(e),
        }
        notifier.reattach_with(Box::new(move |gpu| share(gpu).map_err(|e| e.to_string())));
        notifier
            .set(gpu)
            .map_err(|_| format!("GPU {id} already attached"))
    }

    /// The views that reach client `client`'s `object` now: (client
    /// address, first page, pages, born of a fork).
    pub fn views_of_object(&self, client: u64, object: u32) -> Vec<(u64, usize, usize, bool)> {
        let mut v: Vec<_> = self
            .core
            .find_client(client)
            .and_then(|s| s.object(Handle::from_raw(object)))
            .map(|o| o.views())
            .unwrap_or_default()
            .iter()
            .map(|v| (v.addr, v.first_page, v.pages, v.forked))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Where page `page` of client `client`'s `object` is.
    pub fn object_state(&self, client: u64, object: u32, page: usize) -> Option<Residency> {
        self.core
            .find_client(client)
            .and_then(|s| s.object(Handle::from_raw(object)))
            .and_then(|o| o.table.info(page).ok())
            .map(|i| i.residency)
    }

    /// Records objects, spaces and views in the journal `words` from now
    /// on and hands their descriptors to the keeper at `keeper` (both from
    /// `init`); returns the records a predecessor left there.
    pub fn attach_journal(
        &self,
        words: &'static [std::sync::atomic::AtomicU64],
        keeper: Arc<dyn ipc_protocol::transport::Transport>,
    ) -> Vec<(u32, Record)> {
        let (journal, records) = Journal::open(words);
        self.core.attach_journal(journal);
        let _ = self.core.rt.keeper.set(keeper);
        records
    }

    /// A restarted pager takes over (`core/rebuild.rs`): takes back the
    /// descriptors the keeper held, rebuilds what `records` describe, and
    /// has the keeper drop the descriptors no record claimed. Before it
    /// serves anything; the GPU server must be attached.
    pub fn take_over(&self, records: &[(u32, Record)]) -> Result<Rebuilt, String> {
        let keeper = self.core.rt.keeper.get().ok_or("no keeper")?;
        let generation = self.core.cfg.generation;
        let mut kept = keeper::take_back(&**keeper, generation, TAKE_BACK_DEADLINE)
            .map_err(|e| format!("taking back the kept descriptors: {e:?}"))?;
        let r = self
            .core
            .rebuild(records, &mut |k| kept.remove(&k.key()))
            .map_err(|e| format!("rebuilding: {e:?}"))?;
        for key in kept.into_keys() {
            let _ = keeper::send(&**keeper, keeper::KeeperMsg::Drop(key), None);
        }
        Ok(r)
    }

    /// A client is gone: its session ends (`core/end.rs`).
    pub fn client_gone(&self, badge: u64) {
        self.core.end_client(badge);
    }
}

impl Handler<p::Pager> for PagerServer {
    fn disconnected(&self, caller: &Capability) {
        self.client_gone(caller.badge.0);
    }

    fn handle(
        &self,
        caller: &Capability,
        req: p::Request,
        handles: Vec<OwnedFd>,
    ) -> Result<(p::Reply, Vec<OwnedFd>), p::PagerError> {
        let session = self.core.client(caller.badge.0)?;
        self.core.pager_request(&session, req, handles)
    }
}

impl Handler<m::PagerMigrate> for PagerServer {
    /// The GPU server died: its collects in flight are undone.
    fn disconnected(&self, caller: &Capability) {
        self.core.end_gpu(caller.badge.0);
    }

    /// The GPU server was restarted: its session goes on, so that the
    /// objects keep their ids; the new server's first `Resident` undoes
    /// the collects the old one left (`core/resident.rs`).
    fn peer_restarted(&self, caller: &Capability, generation: u32) {
        log::info!(
            "pager: GPU server {} restarted (generation {generation})",
            caller.badge.0
        );
    }

    fn handle(
        &self,
        caller: &Capability,
        req: m::Request,
        _handles: Vec<OwnedFd>,
    ) -> Result<(m::Reply, Vec<OwnedFd>), m::MigrateError> {
        let gpu = crate::notifier::gpu_of_migrate_badge(caller.badge.0)?;
        let session = self.core.gpu_session(caller.badge.0, gpu)?;
        self.core.migrate_request(&session, req)
    }
}

impl Handler<r::PagerReclaim> for PagerServer {
    fn handle(
        &self,
        _caller: &Capability,
        req: r::Request,
        _handles: Vec<OwnedFd>,
    ) -> Result<(r::Reply, Vec<OwnedFd>), r::ReclaimError> {
        Ok((self.core.reclaim_request(req)?, vec![]))
    }
}
