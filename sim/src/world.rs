//! One simulated system: the machine, the pager, the GPU server's core,
//! mm-server, their endpoints and server threads, and the actors that
//! play CPU threads and GPU hardware threads. Built fresh for every
//! schedule, inside the shuttle run.

use std::sync::atomic::{AtomicU64 as StdAtomicU64, Ordering as StdOrdering};

use mm_server::broker::Broker;
use pager::migrate::Policy;
use pager::state::{PageTable, Residency};
use shuttle::sync::{Arc, Mutex};
use xe_svm::budget::GpuBudget;
use xe_svm::server::Inner;

use crate::link::Link;
use crate::machine::{GpuAccess, Machine, PAGE, STAGING_BASE, STAGING_SLOTS, SYS_BASE};
use crate::net::Endpoint;
use crate::pager::{where_is, where_is_on, PagerEnds, SimPager};
use crate::platform::{Mm, SimPlatform, SimWorlds};
use crate::GpuCore;

/// Where the view is bound in the GPU VM at first (GPU address = the
/// view's CPU address, DESIGN.md 2).
pub const GPU_BASE: u64 = crate::pager::VIEW_BASE;
/// Where a moved view lands.
pub const MOVED_BASE: u64 = 0x2000_0000;
const CLIENT: u64 = crate::pager::CLIENT;
/// A GPU access that faults this many times in a row made no progress.
pub const GPU_FAULT_RETRIES: u32 = 200;

#[derive(Debug, Clone)]
pub struct WorldConfig {
    pub pages: usize,
    pub policy: Policy,
    pub skip_invalidate: bool,
    /// A copy fails one time in this many (0: never).
    pub fail_copy_one_in: u32,
    /// An mm-server (and a VRAM filler that leaves it `free_pages` free).
    pub broker: Option<u64>,
    /// A VRAM filler that leaves this many pages free, without a broker.
    pub free_vram: Option<u64>,
    /// System pages for other clients' objects (the hostile scenarios).
    pub spare_pages: usize,
    /// What each client may make the GPU server hold.
    pub gpu_budget: GpuBudget,
    /// The pager's anti-thrashing, on the machine's logical clock.
    pub thrash: Option<pager::core::thrash::ThrashPolicy>,
    /// The victim's view bound with `BIND_READ_ONLY`.
    pub read_only_binding: bool,
    /// The pager journals what its next generation takes over from (the
    /// pager-restart scenarios; `pager_restart.rs`).
    pub pager_journal: bool,
    /// GPUs, each with its own GPU server under the one pager (several
    /// GPUs, issue 17; `gpus.rs`). GPU 0 is the one the other scenarios
    /// use; the others are never restarted and have no mm-server.
    pub gpus: u8,
    /// The peer windows drop what is copied through them (a push that
    /// never lands, reported done: the negative check).
    pub drop_peer_copies: bool,
}

impl Default for WorldConfig {
    fn default() -> Self {
        Self {
            pages: 16,
            policy: Policy::Rules,
            skip_invalidate: false,
            fail_copy_one_in: 0,
            broker: None,
            free_vram: None,
            spare_pages: 0,
            gpu_budget: GpuBudget::default(),
            thrash: None,
            read_only_binding: false,
            pager_journal: false,
            gpus: 1,
            drop_peer_copies: false,
        }
    }
}

/// Servers started after a kill, kept to be stopped at the end, and the
/// GPU cores they replaced (their server threads may still be finishing
/// a call).
#[derive(Default)]
pub(crate) struct Restarted {
    pub(crate) endpoints: Vec<Arc<Endpoint>>,
    pub(crate) threads: Vec<shuttle::thread::JoinHandle<()>>,
    pub(crate) cores: Vec<Arc<GpuCore>>,
    /// Pager generations killed (their threads may still be running out).
    pub(crate) pagers: Vec<Arc<crate::pager::PagerGen>>,
}

/// The GPU server now, as the actors reach it: its core, the endpoint its
/// fault worker serves, the client's VM on it. A restart replaces all of
/// it (`restart.rs`).
#[derive(Clone)]
pub struct GpuSide {
    pub core: Arc<GpuCore>,
    pub faults: Arc<Endpoint>,
    /// The client VM's ASID (the device's and the fault path's name for it).
    pub vm: u32,
    /// The client's id of that VM (what it names in its requests).
    pub vm_id: u32,
}

/// A fresh mm-server: a broker at the machine's VRAM size, pressing on the
/// pager (over its `PagerReclaim` endpoint) and the GPU core (wired once
/// it exists).
fn new_mm(machine: &Machine, pager: &Arc<SimPager>) -> Arc<Mm> {
    let total = machine.vram(0).len() as u64 * PAGE;
    Arc::new(Mm {
        broker: Broker::with_watermarks(total, total / 4, total),
        worlds: SimWorlds {
            pager: pager.clone(),
            gpu: Default::default(),
        },
    })
}

/// The client's VM on `gpu` with the victim's view bound at `at`: a new
/// client, or one whose VM went with a restarted server (`NoSuchVm`) and
/// makes it again. The GPU server knows the object by the id its pager
/// session (its GPU's) gave (the same across its restarts). Returns
/// (ASID, VM id).
pub(crate) fn bind_client_view(
    gpu: &GpuCore,
    pager: &SimPager,
    at: u64,
    read_only: bool,
) -> (u32, u32) {
    let vm_id = gpu.create_vm(CLIENT).expect("a VM");
    // The device and the fault path name the VM by its ASID.
    let vm = gpu.asid_of(CLIENT, vm_id).expect("its ASID");
    let object = pager.open_for_gpu_on(gpu.hw.gpu);
    let pages = pager.table().len() as u64;
    gpu.add_object(object, 0, SYS_BASE, None, pages);
    let view = pager.view.raw();
    gpu.bind(CLIENT, vm_id, view, object, 0, pages, at, read_only)
        .expect("binding the view");
    (vm, vm_id)
}

pub struct World {
    pub machine: Arc<Machine>,
    pub pager: Arc<SimPager>,
    pub mm: Option<Arc<Mm>>,
    pub endpoints: Vec<Arc<Endpoint>>,
    pub mm_endpoint: Option<Arc<Endpoint>>,
    servers: Vec<shuttle::thread::JoinHandle<()>>,
    /// The GPU server now (replaced by `restart_gpu`).
    pub(crate) side: Link<GpuSide>,
    /// The other GPUs' servers (GPU `i + 1` at `i`; `gpus.rs`).
    pub(crate) peers: Vec<GpuSide>,
    /// The threads serving its endpoints (joined when it dies).
    pub(crate) gpu_threads: std::sync::Mutex<Vec<shuttle::thread::JoinHandle<()>>>,
    /// The GPU server's budget, for the next generation.
    pub(crate) gpu_budget: GpuBudget,
    /// Servers started after a kill, and their threads.
    pub(crate) restarted: std::sync::Mutex<Restarted>,
    /// The bound view's GPU address now (it moves with the view).
    pub gpu_base: Arc<StdAtomicU64>,
    /// VRAM blocks held to leave little room (the pressure scenarios).
    pub(crate) filler: std::sync::Mutex<Vec<u64>>,
}

impl World {
    pub fn new(cfg: &WorldConfig) -> Self {
        let mut machine =
            Machine::with_gpus(cfg.pages, cfg.spare_pages, cfg.fail_copy_one_in, cfg.gpus);
        machine.drop_peer_copies = cfg.drop_peer_copies;
        let machine = Arc::new(machine);
        let mut pager_cfg = crate::pager::sim_config(cfg.policy, cfg.skip_invalidate);
        pager_cfg.thrash = cfg.thrash;
        let pager = Arc::new(SimPager::new(machine.clone(), pager_cfg, cfg.pager_journal));
        let mut servers = Vec::new();
        let mut start = |name, threads| {
            let (ep, hs) = Endpoint::start(name, threads);
            servers.extend(hs);
            ep
        };
        let migrate = start("pager-migrate", 2);
        let reclaim = start("pager-reclaim", 1);
        pager.wire(PagerEnds {
            migrate: migrate.clone(),
            reclaim: reclaim.clone(),
        });
        // The GPU server's own endpoints: its threads die with it.
        let (notify, mut gpu_threads) = Endpoint::start("gpu-notify", 2);
        if cfg.pager_journal {
            // The pager's restarts need its requests read in order
            // (`xe_svm::frames`).
            notify.read_in_order();
        }
        let (faults, fault_threads) = Endpoint::start("gpu-faults", 1);
        gpu_threads.extend(fault_threads);
        let (mm, mm_endpoint) = match cfg.broker {
            Some(_) => {
                let ep = start("mm-server", 1);
                (Some(new_mm(&machine, &pager)), Some(ep))
            }
            None => (None, None),
        };
        let hw = SimPlatform {
            machine: machine.clone(),
            pager: pager.clone(),
            pressure: Mutex::new(mm.clone().zip(mm_endpoint.clone()).map(|(m, e)| (e, m))),
            jobs: Default::default(),
            epoch: machine.driver_epoch(),
            gpu: 0,
        };
        let pages = machine.vram(0).len() as u64;
        let budget = cfg.gpu_budget.clone();
        let arena = xe_svm::arena::Config::for_clients(budget.clone(), 4)
            .arena()
            .expect("the GPU core's metadata arena");
        let gpu: Arc<GpuCore> = Arc::new(Inner::with_arena(hw, 0, pages, budget, arena));
        pager.gpu.set((Arc::downgrade(&gpu), notify.clone()));
        if let Some(mm) = &mm {
            mm.worlds.gpu.set(Arc::downgrade(&gpu));
        }
        gpu.attach_staging(STAGING_BASE, STAGING_SLOTS as u64 * 512 * PAGE);
        let (vm, vm_id) = bind_client_view(&gpu, &pager, GPU_BASE, cfg.read_only_binding);
        let mut filler = Vec::new();
        if let Some(free) = cfg.broker.or(cfg.free_vram) {
            // Leave `free` pages of VRAM: the rest is held, as by other users.
            while gpu.vram.total_pages() - gpu.vram.used_pages() > free {
                match gpu.vram.alloc(0) {
                    Ok(pfn) => filler.push(pfn),
                    Err(_) => break,
                }
            }
        }
        let mut endpoints = vec![migrate, notify, reclaim];
        let peers = (1..cfg.gpus)
            .map(|g| crate::gpus::start(g, cfg, &machine, &pager, &mut endpoints, &mut servers))
            .collect();
        let side = Link::default();
        side.set(GpuSide {
            core: gpu,
            faults,
            vm,
            vm_id,
        });
        Self {
            machine,
            pager,
            mm,
            endpoints,
            mm_endpoint,
            servers,
            side,
            peers,
            gpu_threads: std::sync::Mutex::new(gpu_threads),
            gpu_budget: cfg.gpu_budget.clone(),
            restarted: Default::default(),
            gpu_base: Arc::new(StdAtomicU64::new(GPU_BASE)),
            filler: std::sync::Mutex::new(filler),
        }
    }

    /// The GPU server now.
    pub fn side(&self) -> GpuSide {
        self.side.get().expect("a GPU server")
    }

    /// The GPU server's core now.
    pub fn gpu(&self) -> Arc<GpuCore> {
        self.side().core
    }

    /// The client VM's ASID on the GPU server now.
    pub fn vm(&self) -> u32 {
        self.side().vm
    }

    /// The client's id of its VM on the GPU server now.
    pub fn vm_id(&self) -> u32 {
        self.side().vm_id
    }

    /// The endpoint the GPU server's fault worker serves now.
    pub fn faults(&self) -> Arc<Endpoint> {
        self.side().faults
    }

    /// Page `p` starts as `value`, in RAM.
    pub fn seed(&self, p: usize, value: u64) {
        self.pager.seed_ram(p, value);
    }

    /// A CPU thread reads (`add == 0`) or adds `add` to page `p` through
    /// the view `view` names now (it may move meanwhile), faulting into
    /// the pager as needed; returns the value after.
    pub fn cpu_access(&self, view: &StdAtomicU64, p: usize, add: u64) -> u64 {
        self.try_cpu_access(view, p, add)
            .unwrap_or_else(|| panic!("a CPU access to page {p} got SIGBUS"))
    }

    /// [`Self::cpu_access`], or `None` where the pager poisoned the page
    /// in that view (the access got `SIGBUS`).
    pub fn try_cpu_access(&self, view: &StdAtomicU64, p: usize, add: u64) -> Option<u64> {
        let mut faults = 0;
        while faults < crate::pager::FAULT_RETRIES * 4 {
            let view = view.load(StdOrdering::Acquire) as usize;
            let missing = {
                let mmu = self.machine.mmu.lock().unwrap_or_else(|e| e.into_inner());
                if mmu.wp[view].is_empty() {
                    // The view moved away; the thread learns the new
                    // address once the mover's mremap returns.
                    drop(mmu);
                    shuttle::thread::yield_now();
                    continue;
                }
                if mmu.poisoned.contains(&(view, p)) {
                    return None;
                }
                let writable = add == 0 || !mmu.wp[view][p];
                if mmu.present[p] && writable {
                    return Some(self.machine.ram[p].fetch_add(add, StdOrdering::AcqRel) + add);
                }
                !mmu.present[p]
            };
            faults += 1;
            if missing {
                self.pager.cpu_fault(view, p);
            } else {
                self.pager.wp_fault(view, p);
            }
        }
        panic!(
            "a CPU access to page {p} through view {} never completed",
            view.load(StdOrdering::Acquire)
        );
    }

    /// A GPU hardware thread adds `add` to page `p` through the binding,
    /// raising faults to the GPU server's fault worker as needed. `false`:
    /// the address is not bound (the kernel's access fails).
    pub fn gpu_access(&self, p: usize, add: u64) -> bool {
        for _ in 0..GPU_FAULT_RETRIES {
            let va = self.gpu_base.load(StdOrdering::Acquire) + p as u64 * PAGE;
            let table = self.pager.table();
            let side = self.side();
            let vram = &side.core.vram;
            match self.machine.gpu_access(
                side.vm,
                va,
                p,
                add,
                || where_is(&table, p),
                |f| vram.holds(f),
            ) {
                GpuAccess::Done(_) => return true,
                GpuAccess::Fault => {
                    let (gpu, vm) = (side.core.clone(), side.vm);
                    // The GuC reports the fault; the reply may come late.
                    let reply = side.faults.call(move || gpu.resolve(vm, va, &[]));
                    // The server died (the device reset its job): the
                    // client submits again to its successor.
                    if reply.is_none() || side.core.hw.epoch != self.machine.driver_epoch() {
                        self.pager.core().rt.wait_for_gpu();
                        continue;
                    }
                    // Not bound there: unless the view moved meanwhile,
                    // the access fails.
                    let moved = self.gpu_base.load(StdOrdering::Acquire) + p as u64 * PAGE != va;
                    if reply == Some(false) && !moved {
                        return false;
                    }
                }
            }
        }
        panic!("a GPU access to page {p} made no progress in {GPU_FAULT_RETRIES} faults");
    }

    /// The VRAM the filler held comes free (other users went away).
    pub fn release_filler(&self) {
        for pfn in std::mem::take(&mut *self.filler.lock().unwrap_or_else(|e| e.into_inner())) {
            let _ = self.gpu().vram.free_unused(pfn);
        }
    }

    /// The whole view moves (a plain mremap), as the host's pager follows
    /// it: the CPU mappings move and the pager records the new view and
    /// tells the GPU server, which gives the binding a twin at the new
    /// address (`ViewCopied`), before the client learns the new address
    /// (its mremap returns); then the old range's unmap ends the old view
    /// (`ViewGone`).
    pub fn move_view(&self, view: usize) -> usize {
        let (new, pending) = self.pager.move_view(view, MOVED_BASE);
        self.gpu_base.store(MOVED_BASE, StdOrdering::Release);
        self.pager.finish_move(pending);
        new
    }

    /// mm-server restarts (issue 14): the running one is killed (its queued
    /// calls answer `None`, as a dead process's socket would), and a new one
    /// with a fresh broker takes its place; the GPU core calls the new one
    /// from its next reservation on. Reservations the old one granted are
    /// the GPU core's to keep; the new broker learns usage from reports.
    pub fn restart_mm(&self) {
        let gpu = self.gpu();
        let Some((old, _)) = gpu.hw.mm() else {
            return;
        };
        old.kill();
        let (ep, threads) = Endpoint::start("mm-server", 1);
        let fresh = new_mm(&self.machine, &self.pager);
        fresh.worlds.gpu.set(Arc::downgrade(&gpu));
        gpu.hw.set_mm(ep.clone(), fresh);
        let mut r = self.restarted.lock().unwrap_or_else(|e| e.into_inner());
        r.endpoints.push(ep);
        r.threads.extend(threads);
    }

    /// Stops the servers and checks the end of the run: no lock held, each
    /// page's data as `expect(p)` says (wherever it lives), every page in
    /// VRAM in an allocated block of its GPU, on every GPU each VRAM block
    /// counting exactly the pages in it and no block unowned but the
    /// filler's and the buffer objects', and no GPU mapping older than its
    /// page's last acknowledged invalidation on that GPU or pointing where
    /// the page is not.
    pub fn finish(mut self, expect: impl Fn(usize) -> u64) {
        if let Some(ep) = &self.mm_endpoint {
            ep.stop();
        }
        let restarted =
            std::mem::take(&mut *self.restarted.lock().unwrap_or_else(|e| e.into_inner()));
        for ep in &restarted.endpoints {
            ep.stop();
        }
        self.servers.extend(restarted.threads);
        let side = self.side();
        for ep in self.endpoints.iter().chain([&side.faults]) {
            ep.stop();
        }
        for h in std::mem::take(&mut self.servers) {
            h.join().expect("a server thread panicked");
        }
        let gpu_threads =
            std::mem::take(&mut *self.gpu_threads.lock().unwrap_or_else(|e| e.into_inner()));
        for h in gpu_threads {
            h.join().expect("a GPU server thread panicked");
        }
        drop(restarted.cores);
        drop(restarted.pagers);
        let table = self.pager.table();
        let mut frames = vec![Vec::new(); self.machine.gpus() as usize];
        for p in 0..self.machine.pages {
            let i = table.info(p).expect("page in range");
            assert!(!i.locked, "page {p} was left locked");
            assert_eq!(
                self.value_of(p, i.residency),
                expect(p),
                "page {p}: wrong data ({:?})",
                i.residency
            );
            if let Residency::Device { gpu, pfn } = i.residency {
                assert!(
                    self.side_of(gpu).core.vram.holds(pfn),
                    "rule 6: page {p} lives in frame {pfn} of GPU {gpu}, whose block was freed"
                );
                frames[gpu as usize].push(pfn);
            }
        }
        let filler = self.filler.lock().unwrap_or_else(|e| e.into_inner()).len() as u64;
        for (gpu, frames) in (0..).zip(&frames) {
            let side = self.side_of(gpu);
            let bo_pages = side.core.bos.vram_pages.load(StdOrdering::Acquire);
            let others = if gpu == 0 { filler } else { 0 };
            self.vram_holds_exactly(&side.core, frames, others + bo_pages);
            self.mappings_hold(gpu, side.vm, &table);
        }
    }

    /// GPU `gpu`'s mappings of the view at the end: none outlived a move
    /// of the view or is older than its page's last acknowledged
    /// invalidation, and each points where its page is.
    fn mappings_hold(&self, gpu: u8, vm: u32, table: &PageTable) {
        let base = self.gpu_base.load(StdOrdering::Acquire);
        for (va, pte) in self.machine.ptes_on(gpu, vm) {
            assert!(
                va >= base && va < base + self.machine.pages as u64 * PAGE,
                "a GPU mapping at {va:#x} outlived the move of its view"
            );
            let p = ((va - base) / PAGE) as usize;
            let acked = self.machine.last_ack(gpu, p);
            assert!(pte.made_at > acked, "rule 8: page {p} is still mapped by a PTE older than its last acknowledged invalidation");
            let (_, place) = where_is_on(table, p);
            let mapped = self.machine.pte_place(gpu, &pte);
            assert_eq!(
                mapped, place,
                "page {p}: GPU {gpu} maps it at (GPU, frame) {mapped:?} ({:?} PTE), \
                 where it is not (pager: {place:?})",
                pte.target
            );
        }
    }

    /// Rule 6 at the end: each block SVM pages hold counts exactly the
    /// pages in it and was filled once (a block stays while any of its
    /// pages does, so one some of whose pages left is no leak; one never
    /// filled is), and the blocks no page holds are the filler's and the
    /// buffer objects' (`unowned` pages).
    fn vram_holds_exactly(&self, gpu: &GpuCore, frames: &[u64], unowned: u64) {
        let mut idle = 0;
        for b in gpu.vram.blocks() {
            let (base, size, refs) = (b.first_pfn, b.pages, b.resident);
            let inside = frames
                .iter()
                .filter(|f| (base..base + size).contains(*f))
                .count();
            assert_eq!(
                inside, refs as usize,
                "VRAM block {base}+{size}: {refs} resident pages counted, {inside} pages in it"
            );
            if refs == 0 {
                idle += size;
            } else {
                assert!(
                    b.filled,
                    "VRAM block {base}+{size} was never filled (waste)"
                );
            }
        }
        assert_eq!(
            idle, unowned,
            "VRAM no page holds, other than the filler's and the objects' (a leak)"
        );
    }

    fn value_of(&self, p: usize, r: Residency) -> u64 {
        match r {
            Residency::Device { gpu, pfn } => {
                self.machine.vram(gpu)[pfn as usize].load(StdOrdering::Acquire)
            }
            _ => self.machine.ram[p].load(StdOrdering::Acquire),
        }
    }
}
