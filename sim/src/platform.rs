//! The GPU server's core (`xe_svm::server`, `xe_svm::views`, the VRAM
//! allocator) runs unchanged on [`SimPlatform`]: its device is the
//! simulated machine, its pager and mm-server are reached over simulated
//! endpoints. mm-server's eviction loop (`mm_server::evictor::run_pass`)
//! and accounting (`mm_server::broker::Broker`) run unchanged too, with
//! [`SimWorlds`] as the two worlds it presses on: the pager's SVM pages and
//! the GPU core's buffer objects (`xe_svm::bo`, its shrinker called as
//! mm-server's `GpuShrink` would). Device jobs are [`SimJobs`]: an actor
//! submits one, touches its buffer objects, and retires it.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};

use hw::xe::pte::{LeafAccess, PageSize, Target};
use ipc_protocol::interfaces::pager_migrate::{
    Collect, Collected, Finalize, Finalized, Resident, ResidentRuns,
};
use ipc_protocol::types::{GpuId, World};
use mm_server::broker::Broker;
use mm_server::evictor::{run_pass, PeerError, VramFigures, Worlds};
use shuttle::sync::{Arc, Mutex, Weak};
use xe_svm::platform::{FinalizeError, Platform, PortError};

use crate::link::Link;
use crate::machine::{Machine, SimTables, BO_POOL_BASE, BO_POOL_PAGES, PAGE, ZERO_BASE};
use crate::net::Endpoint;
use crate::pager::{Restarted, SimPager};
use crate::GpuCore;

/// How long `quiesce_for_frames` waits, in yields.
const QUIESCE_YIELDS: u32 = 20_000;

pub struct SimPlatform {
    pub machine: Arc<Machine>,
    /// The pager, over its `PagerMigrate` endpoint now.
    pub pager: Arc<SimPager>,
    /// `Pressure`, served by mm-server (absent: no broker); replaced when
    /// mm-server restarts (`World::restart_mm`).
    pub pressure: Mutex<Option<(Arc<Endpoint>, Arc<Mm>)>>,
    pub jobs: SimJobs,
    /// The device's driver epoch this server runs under
    /// ([`Machine::reset`]): once the device was reset from it, what it
    /// asks of the device does nothing.
    pub epoch: u32,
    /// The GPU this server drives (its device in the machine).
    pub gpu: u8,
}

/// The device's jobs: ids in submission order, and those still running.
#[derive(Default)]
pub struct SimJobs {
    next: AtomicU32,
    running: Mutex<BTreeSet<u32>>,
}

impl SimJobs {
    /// A job starts running; its id (never 0).
    pub fn start(&self) -> u32 {
        let job = self.next.fetch_add(1, Ordering::AcqRel) + 1;
        self.lock().insert(job);
        job
    }

    /// The job is done: nothing it does reaches memory any more.
    pub fn retire(&self, job: u32) {
        self.lock().remove(&job);
    }

    fn lock(&self) -> shuttle::sync::MutexGuard<'_, BTreeSet<u32>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Platform for SimPlatform {
    type Tables = SimTables;

    fn copy(&self, copies: &[(u64, u64, u64)]) -> Result<bool, PortError> {
        self.live()?;
        Ok(self.machine.copy(self.gpu, self.epoch, copies))
    }
    fn invalidate_tlb(&self, _asid: u32, _va: u64, _len: u64) -> Result<(), PortError> {
        self.machine.invalidate_tlb(self.gpu);
        Ok(())
    }
    fn new_tables(&self, asid: u32) -> Result<SimTables, PortError> {
        self.live()?;
        Ok(self.machine.new_tables(self.gpu, asid))
    }
    fn map(
        &self,
        t: &mut SimTables,
        va: u64,
        addr: u64,
        size: PageSize,
        target: Target,
        a: LeafAccess,
    ) {
        // The simulated MMU models writes, not atomics.
        self.machine.map(t, va, addr, size, target, a.writable);
    }
    fn unmap(&self, t: &mut SimTables, va: u64, len: u64) -> bool {
        self.machine.unmap(t, va, len)
    }
    fn drop_tables(&self, asid: u32, _t: SimTables) {
        // A reset dropped them, and the asid may be the next driver's now.
        if self.live().is_err() {
            return;
        }
        self.machine.drop_tables(self.gpu, asid);
        self.machine.invalidate_tlb(self.gpu);
    }
    fn dma_unmap(&self, _slot: u32) {}
    fn zero_source(&self) -> u64 {
        ZERO_BASE
    }
    fn collect(&self, c: Collect) -> Result<Collected, PortError> {
        self.live()?;
        let r = self.pager.collect(c);
        self.answered(r)
    }
    fn finalize(&self, f: Finalize) -> Result<Finalized, FinalizeError> {
        if self.live().is_err() {
            // Never sent: nobody will finalize that collect (the next
            // generation's `Resident` undoes it).
            return Err(FinalizeError::Unanswered);
        }
        match self.pager.finalize(f) {
            Ok(Some(done)) => Ok(done),
            // The simulated calls have no deadline: a refusal, or a pager
            // killed before it answered, never an unanswered one.
            Ok(None) => Err(FinalizeError::Refused),
            Err(Restarted) => Err(FinalizeError::Restarted),
        }
    }
    fn pager_generation(&self) -> u32 {
        self.pager.generation()
    }
    fn gpu(&self) -> GpuId {
        GpuId::new(self.gpu).expect("a GPU id")
    }
    /// Every other GPU of the machine (several GPUs, issue 17).
    fn peer_window(&self, gpu: u8) -> Option<u64> {
        self.machine.peer_window(self.gpu, gpu)
    }
    fn has_broker(&self) -> bool {
        self.mm().is_some()
    }
    /// As the host's (`xe_svm::host`), in yields; a wait past the bound is
    /// a livelock, and fails the run.
    fn quiesce_for_frames(&self, migrating: &dyn Fn() -> bool) -> bool {
        let Some((_, notify)) = self.pager.notifier(self.gpu) else {
            return true;
        };
        for _ in 0..QUIESCE_YIELDS {
            if notify.in_flight() <= 1 && !migrating() {
                return true;
            }
            shuttle::thread::yield_now();
        }
        panic!("a restarted pager's Frames waited {QUIESCE_YIELDS} yields");
    }
    fn reserve(&self, _world: World, bytes: u64, _timeout_ms: u32) -> u64 {
        let Some((ep, mm)) = self.mm() else {
            return 0;
        };
        ep.call(move || mm.reserve(bytes)).unwrap_or(0)
    }
    fn release(&self, _world: World, _bytes: u64) {}
    fn report_usage(&self, bo_bytes: u64, svm_bytes: u64) {
        if let Some((ep, mm)) = self.mm() {
            ep.notify(move || {
                mm.broker.report(World::Bo, bo_bytes);
                mm.broker.report(World::Svm, svm_bytes);
            });
        }
    }
    fn bo_pool(&self) -> (u64, u64) {
        (BO_POOL_BASE, BO_POOL_PAGES * PAGE)
    }
    fn clear_bo_home(&self, addr: u64, len: u64) {
        if self.live().is_err() {
            return;
        }
        for off in (0..len).step_by(PAGE as usize) {
            if let Some(c) = self.machine.cell_on(self.gpu, addr + off) {
                c.store(0, std::sync::atomic::Ordering::Release);
            }
        }
    }
    fn resident(&self, r: Resident) -> Result<ResidentRuns, PortError> {
        self.live()?;
        let r = self.pager.resident(r);
        self.answered(r)
    }
    fn job_retired(&self, job: u32) -> bool {
        job == 0 || !self.jobs.lock().contains(&job)
    }
}

impl SimPlatform {
    /// `Err` once the device was reset from this server's epoch: its
    /// process is dead, the device ignores what it still sends, and its
    /// calls to the pager are never sent.
    fn live(&self) -> Result<(), PortError> {
        if self.machine.driver_epoch_of(self.gpu) == self.epoch {
            Ok(())
        } else {
            Err(PortError)
        }
    }

    /// A pager's answer: refused, or cut by a pager restart, which the
    /// caller's stub waits out before it reports the failure (the fault
    /// replays to the next generation).
    fn answered<T>(&self, r: Result<Option<T>, Restarted>) -> Result<T, PortError> {
        match r {
            Ok(v) => v.ok_or(PortError),
            Err(Restarted) => {
                self.pager.wait_for_restart();
                Err(PortError)
            }
        }
    }

    /// The mm-server the GPU core calls now.
    pub fn mm(&self) -> Option<(Arc<Endpoint>, Arc<Mm>)> {
        self.pressure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A restarted mm-server takes the old one's place.
    pub fn set_mm(&self, ep: Arc<Endpoint>, mm: Arc<Mm>) {
        *self.pressure.lock().unwrap_or_else(|e| e.into_inner()) = Some((ep, mm));
    }
}

/// mm-server in the simulation: its broker and its eviction pass.
pub struct Mm {
    pub broker: Broker,
    pub worlds: SimWorlds,
}

impl Mm {
    /// A reservation: one eviction pass (equal pressure on both worlds),
    /// then what fits is granted.
    pub fn reserve(&self, bytes: u64) -> u64 {
        run_pass(&self.broker, &self.worlds);
        let Some(gpu) = self.worlds.gpu.get().and_then(|g| g.upgrade()) else {
            return 0; // the run is over
        };
        let free = (gpu.vram.total_pages() - gpu.vram.used_pages()) * PAGE;
        if free >= bytes {
            bytes
        } else {
            0
        }
    }
}

/// The two worlds as mm-server's loop sees them.
pub struct SimWorlds {
    /// The pager, over its `PagerReclaim` endpoint now.
    pub pager: Arc<SimPager>,
    /// Held weakly: the GPU core holds mm-server (its platform's pressure
    /// endpoint), and a strong reference back would be a cycle.
    pub gpu: Link<Weak<GpuCore>>,
}

impl Worlds for SimWorlds {
    fn shrink_bos(&self, bytes: u64) -> Result<u64, PeerError> {
        let gpu = self
            .gpu
            .get()
            .and_then(|g| g.upgrade())
            .ok_or_else(|| PeerError("GPU core not wired".into()))?;
        gpu.shrink_bos(bytes)
            .map(|(freed, _)| freed)
            .map_err(|e| PeerError(format!("{e:?}")))
    }
    fn evict_svm(&self, bytes: u64) -> Result<u64, PeerError> {
        self.pager
            .evict(bytes)
            .map_err(|_| PeerError("the pager restarted".into()))
    }
    fn vram(&self) -> Result<VramFigures, PeerError> {
        let gpu = self
            .gpu
            .get()
            .and_then(|g| g.upgrade())
            .ok_or_else(|| PeerError("no GPU server".into()))?;
        let (bo, svm) = gpu.vram_by_world();
        Ok(VramFigures {
            total: gpu.vram.total_pages() * PAGE,
            bo,
            svm,
        })
    }
    fn svm_sram(&self) -> Result<u64, PeerError> {
        Ok(0)
    }
}
