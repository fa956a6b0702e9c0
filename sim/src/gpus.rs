//! The GPUs after the first (several GPUs, issue 17): each is its own
//! GPU server core (`xe_svm::server::Inner`, unchanged) on its own
//! [`SimPlatform`] (its GPU id, its device in the machine: VRAM, page
//! tables, a peer window on every other GPU's VRAM), with its own
//! notifier and fault endpoints, and its own `PagerMigrate` session with
//! the one pager (badge `GPU_SERVER + gpu`). The pager's runtime reaches
//! each over its own notifier (`SimRuntime`'s per-GPU calls). The client
//! binds its view on every GPU at the same address.
//!
//! These servers are never restarted and have no mm-server; GPU 0 stays
//! the [`World`]'s restartable one.

use std::sync::atomic::Ordering;

use shuttle::sync::{Arc, Mutex};
use shuttle::thread::JoinHandle;
use xe_svm::server::Inner;

use crate::machine::{Machine, Reached, PAGE, STAGING_BASE, STAGING_SLOTS};
use crate::net::Endpoint;
use crate::pager::{where_is_on, SimPager};
use crate::platform::SimPlatform;
use crate::world::{bind_client_view, GpuSide, World, WorldConfig, GPU_BASE, GPU_FAULT_RETRIES};
use crate::GpuCore;

/// GPU `gpu`'s server: its endpoints (added to `endpoints`, their
/// threads to `threads`), its core wired to the pager, and the client's
/// VM on it with the view bound at [`GPU_BASE`].
pub(crate) fn start(
    gpu: u8,
    cfg: &WorldConfig,
    machine: &Arc<Machine>,
    pager: &Arc<SimPager>,
    endpoints: &mut Vec<Arc<Endpoint>>,
    threads: &mut Vec<JoinHandle<()>>,
) -> GpuSide {
    let (notify, ts) = Endpoint::start("gpu-notify", 2);
    threads.extend(ts);
    let (faults, ts) = Endpoint::start("gpu-faults", 1);
    threads.extend(ts);
    endpoints.extend([notify.clone(), faults.clone()]);
    let core = new_core(gpu, cfg, machine, pager);
    let link = pager.outlives.link(gpu).expect("a GPU of the machine");
    link.set((Arc::downgrade(&core), notify));
    core.attach_staging(STAGING_BASE, STAGING_SLOTS as u64 * 512 * PAGE);
    let (vm, vm_id) = bind_client_view(&core, pager, GPU_BASE, cfg.read_only_binding);
    GpuSide {
        core,
        faults,
        vm,
        vm_id,
    }
}

/// GPU `gpu`'s core over its device in the machine.
fn new_core(
    gpu: u8,
    cfg: &WorldConfig,
    machine: &Arc<Machine>,
    pager: &Arc<SimPager>,
) -> Arc<GpuCore> {
    let hw = SimPlatform {
        machine: machine.clone(),
        pager: pager.clone(),
        pressure: Mutex::new(None),
        jobs: Default::default(),
        epoch: machine.driver_epoch_of(gpu),
        gpu,
    };
    let budget = cfg.gpu_budget;
    let arena = xe_svm::arena::Config::for_clients(budget, 4)
        .arena()
        .expect("the GPU core's metadata arena");
    let pages = machine.vram(gpu).len() as u64;
    Arc::new(Inner::with_arena(hw, 0, pages, budget, arena))
}

impl World {
    /// GPU `gpu`'s server.
    pub fn side_of(&self, gpu: u8) -> GpuSide {
        match gpu {
            0 => self.side(),
            g => self.peers[g as usize - 1].clone(),
        }
    }

    /// A hardware thread of GPU `gpu` adds `add` to page `p` (reads it,
    /// `add == 0`) through its binding, raising faults to that GPU's
    /// server as needed: the value after and where the access landed.
    /// Every access completes within [`GPU_FAULT_RETRIES`] faults.
    pub fn gpu_access_on(&self, gpu: u8, p: usize, add: u64) -> (u64, Reached) {
        let side = self.side_of(gpu);
        let va = self.gpu_base.load(Ordering::Acquire) + p as u64 * PAGE;
        for _ in 0..GPU_FAULT_RETRIES {
            let table = self.pager.table();
            let state = || where_is_on(&table, p);
            let holds = |g: u8, f: u64| self.side_of(g).core.vram.holds(f);
            let access = self
                .machine
                .gpu_access_on(gpu, side.vm, va, p, add, state, holds);
            if let Some(done) = access {
                return done;
            }
            let (core, vm) = (side.core.clone(), side.vm);
            let reply = side.faults.call(move || core.resolve(vm, va, &[]));
            assert_eq!(reply, Some(true), "GPU {gpu}: its fault on page {p} failed");
        }
        panic!("a GPU {gpu} access to page {p} made no progress in {GPU_FAULT_RETRIES} faults");
    }
}
