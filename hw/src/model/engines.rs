//! The device's engines (see the module docs of [`super`]).

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::MutexGuard;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

use ipc_protocol::transport::{Transport, TransportError};

use super::control::{
    self, ControlOp, ControlRecord, STATUS_BAD_REQUEST, STATUS_BAD_SLOT, STATUS_MAP_FAILED,
    STATUS_OK,
};
use super::copy::{CopyEngines, Row};
use super::cs;
use super::jobs::{HwThreads, RetireOrder};
use super::memory::Memory;
use super::translate::{Tlb, Translation};
use super::{Config, ModelError};
use crate::shm::{wake_all, Region, RingError, RingView};
use crate::xe::commands::{BatchSubmit, Command, KernelLaunch, KernelOp, MemCopy};
use crate::xe::fault::{AccessType, FaultDescriptor, FaultType};
use crate::xe::layout::{self, JobState, Ring};

const POLL: Duration = Duration::from_millis(50);
/// A stalled hardware thread gives up (the job faults) after this long.
const FAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// The engine class the model reports its compute engine as.
const COMPUTE_CLASS: u8 = 4;
/// Private data of a prefetch fault: the hardware thread with this bit set,
/// so its answer is told apart from the thread's own faults' answers.
pub const PREFETCH_PDATA: u16 = 0x8000;

/// One stalled hardware thread's mailbox for its fault reply.
#[derive(Default)]
struct FaultSlot {
    reply: Mutex<Option<bool>>,
    arrived: Condvar,
    /// The driver (`Device::driver_epoch`) the job on this thread was
    /// submitted by: once that driver is lost, the job ends at its next
    /// access instead of faulting to a driver that never heard of it.
    epoch: AtomicU64,
}

pub(super) struct Device {
    pub(super) cfg: Config,
    regs: Region,
    mem: Memory,
    tlb: Tlb,
    /// Accesses hold it shared; an invalidation takes it exclusively, so it
    /// completes only once accesses in flight have landed.
    access_gate: RwLock<()>,
    g2h: Mutex<()>,
    /// One fault mailbox per hardware thread.
    slots: Vec<FaultSlot>,
    hw_threads: HwThreads,
    retire_order: RetireOrder,
    pub(super) stop: AtomicBool,
    invalidations: AtomicU32,
    copies: AtomicU32,
    /// The copy ring's engines: its thread and the helpers (`copy.rs`).
    copy_engines: CopyEngines,
    /// Bumped when a driver is lost (`driver_lost`): the jobs of earlier
    /// drivers are dead, as a reset kills them on hardware.
    driver_epoch: AtomicU64,
    /// Held by each engine (copy, compute, GuC) while it takes a packet
    /// and reads `driver_epoch`, and by `driver_lost` while it bumps the
    /// epoch and empties the rings: a packet is either dropped with its
    /// ring or taken under the epoch of the driver that sent it.
    intake: [Mutex<()>; 3],
    /// Held by the copy engine while a copy runs. A copy holds its memory
    /// until it is done, so an unmap does not cut it short: the reset
    /// waits on this for a copy of the lost driver still writing (into a
    /// buffer the next driver may map again), so DMA in flight is done
    /// before the next driver is served.
    copying: Mutex<()>,
}

/// Runs a device until its driver closes the control channel: sends the
/// `Hello` unasked (Linux: the channel is a socket the device may speak
/// on first), then answers the driver's records.
pub fn run(cfg: Config, control: Arc<dyn Transport>) -> Result<(), ModelError> {
    let device = start(cfg)?;
    let result = device.serve_driver(&*control);
    device.stop();
    result
}

/// Runs a device that outlives its drivers, as hardware outlives a driver
/// reload: when a driver's channel closes the device is reset
/// ([`Running::driver_lost`]: VRAM kept, everything the driver set up
/// dropped) and the next driver's control socket is taken from `attach`
/// (init sends one for each new GPU server), which gets the `Hello`.
/// Ends when `attach` closes.
#[cfg(target_os = "linux")]
pub fn run_attached(
    cfg: Config,
    control: Arc<dyn Transport>,
    attach: Arc<dyn Transport>,
) -> Result<(), ModelError> {
    let device = start(cfg)?;
    let mut control = control;
    let result = loop {
        match device.serve_driver(&*control) {
            // A driver that died before its `Hello` or while we answered
            // it is lost as one that closed its channel.
            Ok(()) | Err(ModelError::Control(TransportError::Disconnected)) => {}
            Err(e) => break Err(e),
        }
        device.driver_lost();
        match next_driver(&*attach) {
            Some(next) => control = next,
            None => break Ok(()),
        }
    };
    device.stop();
    result
}

/// The next driver's control socket, passed on `attach` (`None`: closed).
#[cfg(target_os = "linux")]
fn next_driver(attach: &dyn Transport) -> Option<Arc<dyn Transport>> {
    loop {
        let mut rx = match attach.recv(None) {
            Ok(rx) => rx,
            Err(TransportError::Disconnected) => return None,
            Err(e) => {
                log::error!("xe-model: the attach channel: {e}");
                return None;
            }
        };
        match rx.handles.pop() {
            Some(fd) if rx.handles.is_empty() => {
                log::info!("xe-model: a new driver attaches");
                return Some(Arc::new(ipc_protocol::transport::SeqPacket::from_fd(fd)));
            }
            _ => log::warn!("xe-model: an attach message without one socket; ignored"),
        }
    }
}

/// VRAM from the memfd inherited as `fd`, which must be `bytes` long.
#[cfg(target_os = "linux")]
fn given_vram(fd: i32, bytes: u64) -> Result<Region, ModelError> {
    // SAFETY: the parent handed us this descriptor for VRAM (`--vram-fd`).
    let fd = unsafe { ipc_protocol::transport::inherited_fd(fd) };
    let len = rustix::fs::fstat(&fd).map_err(ModelError::Memory)?.st_size;
    if u64::try_from(len).ok() != Some(bytes) {
        return Err(ModelError::BadConfig("--vram-fd is not --vram-mib long"));
    }
    Region::map(fd, bytes as usize).map_err(ModelError::Memory)
}

#[cfg(not(target_os = "linux"))]
fn given_vram(_fd: i32, _bytes: u64) -> Result<Region, ModelError> {
    Err(ModelError::BadConfig("--vram-fd is for Linux"))
}

/// Brings a device up: its registers, VRAM and engine threads. Its driver
/// talks to it through [`Running::control`] (records from any channel).
pub fn start(cfg: Config) -> Result<Running, ModelError> {
    if cfg.vram_bytes == 0
        || cfg.vram_bytes % (2 << 20) != 0
        || cfg.vram_bytes >= layout::SYSMEM_BASE
    {
        return Err(ModelError::BadConfig(
            "VRAM must be a non-zero multiple of 2 MiB",
        ));
    }
    if cfg.hw_threads == 0 {
        return Err(ModelError::BadConfig("at least one hardware thread"));
    }
    let regs = Region::create("xe-model-regs", layout::REGION_BYTES).map_err(ModelError::Memory)?;
    let vram = match cfg.vram_fd {
        Some(fd) => given_vram(fd, cfg.vram_bytes)?,
        None => {
            Region::create("xe-model-vram", cfg.vram_bytes as usize).map_err(ModelError::Memory)?
        }
    };
    init_registers(&regs, &cfg);
    log::info!(
        "xe-model: up, {} MiB VRAM, {} hardware threads",
        cfg.vram_bytes >> 20,
        cfg.hw_threads
    );
    let slots = (0..cfg.hw_threads).map(|_| FaultSlot::default()).collect();
    let cfg_threads = cfg.hw_threads;
    let cfg_engines = cfg.copy_engines;
    let dev = Arc::new(Device {
        cfg,
        regs,
        mem: Memory::new(vram),
        tlb: Tlb::default(),
        access_gate: RwLock::new(()),
        g2h: Mutex::new(()),
        slots,
        hw_threads: HwThreads::new(cfg_threads),
        retire_order: RetireOrder::default(),
        stop: AtomicBool::new(false),
        invalidations: AtomicU32::new(0),
        copies: AtomicU32::new(0),
        copy_engines: CopyEngines::new(cfg_engines),
        driver_epoch: AtomicU64::new(0),
        intake: Default::default(),
        copying: Mutex::new(()),
    });
    log::info!("xe-model: {} copy engines", dev.copy_engines.engines());
    let engines = [
        ("xe-model-bcs", Ring::Copy),
        ("xe-model-ccs", Ring::Compute),
        ("xe-model-guc", Ring::HostToGuc),
    ]
    .into_iter()
    .map(|(name, ring)| {
        let d = dev.clone();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || d.engine_loop(ring))
    })
    .collect::<Result<_, _>>()
    .map_err(|_| ModelError::BadConfig("cannot spawn engine threads"))?;
    Ok(Running { dev, engines })
}

fn init_registers(regs: &Region, cfg: &Config) {
    for ring in [Ring::Copy, Ring::Compute, Ring::HostToGuc, Ring::GucToHost] {
        regs.u32_at(ring.header() + 8)
            .store(layout::RING_ENTRIES as u32, Ordering::Relaxed);
    }
    regs.u32_at(layout::REG_VERSION)
        .store(layout::VERSION, Ordering::Relaxed);
    regs.u32_at(layout::REG_VRAM_MIB)
        .store((cfg.vram_bytes >> 20) as u32, Ordering::Relaxed);
    regs.u32_at(layout::REG_HW_THREADS)
        .store(cfg.hw_threads as u32, Ordering::Relaxed);
    regs.u32_at(layout::REG_RUNNING).store(1, Ordering::Relaxed);
    regs.u32_at(layout::REG_MAGIC)
        .store(layout::MAGIC, Ordering::Release);
}

/// A device that is up, with its engine threads.
pub struct Running {
    dev: Arc<Device>,
    engines: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    /// The `Hello` record and the register and VRAM descriptors with it.
    pub fn hello(&self) -> Result<(ControlRecord, Vec<OwnedFd>), ModelError> {
        let hello = ControlRecord {
            op: ControlOp::Hello,
            slot: 0,
            size: self.dev.cfg.vram_bytes,
            status: 0,
        };
        let fds = vec![
            self.dev.regs.dup_fd().map_err(ModelError::Memory)?,
            self.dev.mem.vram.dup_fd().map_err(ModelError::Memory)?,
        ];
        Ok((hello, fds))
    }

    /// Answers one record of the driver's (`None`: undecodable): a `Hello`
    /// request with the `Hello`, a DMA map or unmap with `Done`.
    pub fn control(
        &self,
        rec: Option<ControlRecord>,
        fds: Vec<OwnedFd>,
    ) -> Result<(ControlRecord, Vec<OwnedFd>), ModelError> {
        if rec.is_some_and(|r| r.op == ControlOp::Hello) && fds.is_empty() {
            return self.hello();
        }
        Ok((self.dev.control_record(rec, fds), vec![]))
    }

    /// Serves one driver on a channel the device may speak on first: the
    /// `Hello` unasked, then its records until it closes the channel.
    fn serve_driver(&self, control: &dyn Transport) -> Result<(), ModelError> {
        let (hello, fds) = self.hello()?;
        control::send(control, hello, fds).map_err(ModelError::Control)?;
        self.control_loop(control)
    }

    fn control_loop(&self, control: &dyn Transport) -> Result<(), ModelError> {
        loop {
            let (rec, fds) = match control::recv(control, None) {
                Ok(r) => r,
                Err(TransportError::Disconnected) => return Ok(()),
                Err(e) => return Err(ModelError::Control(e)),
            };
            let (reply, fds) = self.control(rec, fds)?;
            control::send(control, reply, fds).map_err(ModelError::Control)?;
        }
    }

    /// The driver is gone: what it set up goes, VRAM stays. Faults stalled
    /// for it fail now (their jobs end `Faulted`), every context and TLB
    /// entry is dropped (a job still running faults at its next access and
    /// ends), every DMA mapping of its memory is unmapped (after accesses
    /// in flight, as an IOMMU unmap), and its unread GuC messages are
    /// discarded, so the next driver starts from a quiet device.
    pub fn driver_lost(&self) {
        let dev = &self.dev;
        let pending = dev.end_driver_epoch();
        for slot in &dev.slots {
            *slot.reply.lock().unwrap_or_else(|e| e.into_inner()) = Some(false);
            slot.arrived.notify_all();
        }
        {
            let _gate = dev.access_gate.write().unwrap_or_else(|e| e.into_inner());
            for asid in 0..layout::MAX_ASIDS {
                dev.regs
                    .u64_at(layout::CONTEXT_TABLE + asid * 8)
                    .store(0, Ordering::Release);
            }
            let all = crate::xe::commands::TlbInvalidation {
                seqno: 0,
                scope: crate::xe::commands::InvalidationScope::Full,
                asid: 0,
                address: 0,
                len_log2: 0,
            };
            dev.tlb.invalidate(&all, false);
            for slot in 0..layout::SYSMEM_SLOTS as u32 {
                dev.mem.unmap_slot(slot);
            }
        }
        // A copy the lost driver started runs to its end first.
        drop(dev.copying.lock().unwrap_or_else(|e| e.into_inner()));
        let dropped = {
            let _g = dev.g2h.lock().unwrap_or_else(|e| e.into_inner());
            RingView::new(&dev.regs, Ring::GucToHost).discard()
        };
        // A thread that faulted after the first wake sees the epoch now.
        for slot in &dev.slots {
            let _held = slot.reply.lock().unwrap_or_else(|e| e.into_inner());
            slot.arrived.notify_all();
        }
        // Its jobs end at their next access; the next driver numbers its
        // own past theirs, so they retire first.
        if !dev.hw_threads.wait_idle(Duration::from_secs(5)) {
            log::error!("xe-model: jobs of the lost driver still run after 5 s");
        }
        log::info!(
            "xe-model: driver lost; device reset ({dropped} GuC message(s), \
             {pending} ring packet(s) dropped)"
        );
    }

    /// Stops the engines; jobs still running end at their next step.
    pub fn stop(self) {
        let dev = self.dev;
        dev.stop.store(true, Ordering::Release);
        // Hardware threads stalled on a fault give up now, not at their
        // timeout (the lock orders this wake after their check of `stop`).
        for slot in &dev.slots {
            let _held = slot.reply.lock().unwrap_or_else(|e| e.into_inner());
            slot.arrived.notify_all();
        }
        dev.regs
            .u32_at(layout::REG_RUNNING)
            .store(0, Ordering::Release);
        wake_all(dev.regs.u32_at(layout::REG_RUNNING));
        for e in self.engines {
            let _ = e.join();
        }
        // Batch jobs see `stop` at their next instruction, poll or fault.
        if !dev.hw_threads.wait_idle(FAULT_REPLY_TIMEOUT) {
            log::error!("xe-model: batch jobs still running at shutdown");
        }
        log::info!("xe-model: stopped");
    }
}

impl Device {
    /// A DMA or peer map or unmap; anything else is a bad request.
    fn control_record(&self, rec: Option<ControlRecord>, mut fds: Vec<OwnedFd>) -> ControlRecord {
        let slot_status = |ok: bool| if ok { STATUS_OK } else { STATUS_BAD_SLOT };
        let (slot, status) = match rec {
            Some(ControlRecord {
                op: op @ (ControlOp::DmaMap | ControlOp::PeerMap),
                slot,
                size,
                ..
            }) if fds.len() == 1 => {
                let fd = fds.pop().expect("one fd, checked above");
                let region = if op == ControlOp::DmaMap {
                    Memory::checked_region(fd, size)
                } else {
                    Memory::checked_region_within(fd, size, layout::PEER_WINDOW_BYTES)
                };
                match region {
                    Some(r) if op == ControlOp::DmaMap => {
                        (slot, slot_status(self.mem.map_slot(slot, r)))
                    }
                    Some(r) => (slot, slot_status(self.mem.map_peer(slot, r))),
                    None => (slot, STATUS_MAP_FAILED),
                }
            }
            Some(ControlRecord {
                op: op @ (ControlOp::DmaUnmap | ControlOp::PeerUnmap),
                slot,
                ..
            }) => {
                // Unmapping waits for accesses in flight, like an IOMMU unmap.
                let _gate = self.access_gate.write().unwrap_or_else(|e| e.into_inner());
                let gone = if op == ControlOp::DmaUnmap {
                    self.mem.unmap_slot(slot)
                } else {
                    self.mem.unmap_peer(slot)
                };
                (slot, slot_status(gone))
            }
            other => (other.map(|r| r.slot).unwrap_or(0), STATUS_BAD_REQUEST),
        };
        ControlRecord {
            op: ControlOp::Done,
            slot,
            size: 0,
            status,
        }
    }

    /// The intake lock of `ring`'s engine.
    fn intake(&self, ring: Ring) -> MutexGuard<'_, ()> {
        let i = match ring {
            Ring::Copy => 0,
            Ring::Compute => 1,
            _ => 2,
        };
        self.intake[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A driver is gone: later packets are the next driver's. Empties the
    /// rings it fed; returns how many packets were dropped.
    fn end_driver_epoch(&self) -> u32 {
        let rings = [Ring::Copy, Ring::Compute, Ring::HostToGuc];
        let _held: Vec<_> = rings.iter().map(|r| self.intake(*r)).collect();
        self.driver_epoch.fetch_add(1, Ordering::AcqRel);
        rings
            .iter()
            .map(|r| RingView::new(&self.regs, *r).discard())
            .sum()
    }

    fn engine_loop(self: &Arc<Self>, ring: Ring) {
        let view = RingView::new(&self.regs, ring);
        while !self.stop.load(Ordering::Acquire) {
            // Waits without the intake lock, so `driver_lost` gets it at
            // once; takes the packet under it.
            if !view.wait_ready(Some(POLL)) {
                continue;
            }
            let (epoch, popped) = {
                let _intake = self.intake(ring);
                (
                    self.driver_epoch.load(Ordering::Acquire),
                    view.pop(Some(Duration::ZERO)),
                )
            };
            let (seqno, packet) = match popped {
                Ok(p) => p,
                Err(RingError::TimedOut) => continue,
                Err(RingError::BadPacket) => {
                    log::error!("xe-model: malformed packet on {ring:?}");
                    continue;
                }
            };
            match (ring, Command::decode(packet.words())) {
                (Ring::Copy, Ok(Command::MemCopy(c))) => {
                    let _copying = self.copying.lock().unwrap_or_else(|e| e.into_inner());
                    self.copy(seqno, &c)
                }
                (Ring::Compute, Ok(Command::Launch(k))) => self.launch(&k, epoch),
                (Ring::Compute, Ok(Command::Batch(b))) => self.dispatch_batch(b, epoch),
                (Ring::HostToGuc, Ok(Command::TlbInvalidation(inv))) => {
                    let n = self.invalidations.fetch_add(1, Ordering::AcqRel) + 1;
                    let every = self.cfg.inject.drop_tlb_invalidation_every;
                    let drop_it = every != 0 && n % every == 0;
                    {
                        let _gate = self.access_gate.write().unwrap_or_else(|e| e.into_inner());
                        self.tlb.invalidate(&inv, drop_it);
                    }
                    self.regs
                        .u32_at(layout::REG_TLB_INVALIDATIONS)
                        .fetch_add(1, Ordering::AcqRel);
                    self.to_host(&Command::TlbInvalidationDone { seqno: inv.seqno });
                }
                (Ring::HostToGuc, Ok(Command::PageFaultResponse(r))) => {
                    if !self.cfg.inject.fault_reply_delay.is_zero() {
                        std::thread::sleep(self.cfg.inject.fault_reply_delay);
                    }
                    self.regs
                        .u32_at(layout::REG_FAULTS_REPLIED)
                        .fetch_add(1, Ordering::AcqRel);
                    match self.slots.get(r.pdata as usize) {
                        // A prefetch fault's answer: nothing waits for it.
                        _ if r.pdata & PREFETCH_PDATA != 0 => {}
                        Some(slot) => {
                            *slot.reply.lock().unwrap_or_else(|e| e.into_inner()) = Some(r.success);
                            slot.arrived.notify_all();
                        }
                        None => log::error!(
                            "xe-model: fault reply for unknown hardware thread {}",
                            r.pdata
                        ),
                    }
                }
                (Ring::Copy, _) => {
                    log::error!("xe-model: copy engine: bad command (seqno {seqno})");
                    self.retire_copy(seqno, false);
                }
                (ring, cmd) => log::error!("xe-model: {ring:?}: unexpected {cmd:?}"),
            }
        }
    }

    fn to_host(&self, cmd: &Command) {
        let _g = self.g2h.lock().unwrap_or_else(|e| e.into_inner());
        if RingView::new(&self.regs, Ring::GucToHost)
            .push(0, &cmd.encode(), Some(FAULT_REPLY_TIMEOUT))
            .is_err()
        {
            log::error!("xe-model: GuC-to-host ring stayed full; dropped {cmd:?}");
        }
    }

    fn retire_copy(&self, seqno: u32, ok: bool) {
        if !ok {
            self.regs
                .u32_at(layout::REG_BCS_ERROR)
                .store(seqno, Ordering::Release);
        }
        let done = self.regs.u32_at(layout::REG_BCS_DONE);
        done.store(seqno, Ordering::Release);
        wake_all(done);
    }

    fn copy(&self, seqno: u32, c: &MemCopy) {
        let n = self.copies.fetch_add(1, Ordering::AcqRel) + 1;
        let every = self.cfg.inject.fail_copy_every;
        let ok = !(every != 0 && n % every == 0) && self.copy_rows(c);
        self.retire_copy(seqno, ok);
    }

    /// Resolves every row first (a row outside memory fails the whole
    /// copy before a byte moves), then copies them on the copy engines.
    fn copy_rows(&self, c: &MemCopy) -> bool {
        let mut held = Vec::with_capacity(2 * c.rows as usize);
        let mut rows = Vec::with_capacity(c.rows as usize);
        for row in 0..c.rows as u64 {
            let src = self
                .mem
                .resolve(c.src + row * c.src_pitch as u64, c.width as u64);
            let dst = self
                .mem
                .resolve(c.dst + row * c.dst_pitch as u64, c.width as u64);
            let (Some(src), Some(dst)) = (src, dst) else {
                return false;
            };
            rows.push(Row {
                src: src.ptr() as usize,
                dst: dst.ptr() as usize,
                len: c.width as usize,
            });
            // Keeps the mappings alive until the copy is done.
            held.push(src);
            held.push(dst);
        }
        self.copy_engines.run(&rows);
        drop(held);
        true
    }

    /// The prefetcher of hardware thread `hw` looks at `va` ahead of use:
    /// a miss raises a prefetch fault (marked in the descriptor, its
    /// private data tagged [`PREFETCH_PDATA`]) that nothing waits for; the
    /// thread goes on (hit under miss).
    fn prefetch(&self, asid: u32, va: u64, hw: u16) {
        let level = match self.tlb.translate(&self.regs, &self.mem, asid, va) {
            Ok(_) => return,
            Err(m) => m.level,
        };
        self.regs
            .u32_at(layout::REG_PREFETCH_FAULTS)
            .fetch_add(1, Ordering::AcqRel);
        self.to_host(&Command::PageFault(FaultDescriptor {
            asid,
            address: va & !0xfff,
            access: AccessType::Read,
            fault_type: FaultType::NotPresent,
            level,
            engine_class: COMPUTE_CLASS,
            engine_instance: 0,
            source_id: 0,
            vfid: 0,
            pdata: hw | PREFETCH_PDATA,
            prefetch: true,
        }));
    }

    /// Translates `va` for an access, faulting (and stalling) until the
    /// driver maps it or refuses. Returns `None` when the fault failed.
    fn access(
        &self,
        asid: u32,
        va: u64,
        kind: AccessType,
        hw: u16,
        faults: &AtomicU32,
    ) -> Option<Translation> {
        let slot = &self.slots[hw as usize];
        let lost =
            || slot.epoch.load(Ordering::Acquire) != self.driver_epoch.load(Ordering::Acquire);
        loop {
            if lost() {
                return None;
            }
            let (fault_type, level) = match self.tlb.translate(&self.regs, &self.mem, asid, va) {
                Ok(t) => match kind {
                    AccessType::Read => return Some(t),
                    _ if !t.writable => (FaultType::WriteAccessViolation, 0),
                    AccessType::Atomic if !t.atomics => (FaultType::AtomicAccessViolation, 0),
                    _ => return Some(t),
                },
                Err(m) => (FaultType::NotPresent, m.level),
            };
            faults.fetch_add(1, Ordering::Relaxed);
            *slot.reply.lock().unwrap_or_else(|e| e.into_inner()) = None;
            if lost() {
                return None;
            }
            self.regs
                .u32_at(layout::REG_FAULTS_RAISED)
                .fetch_add(1, Ordering::AcqRel);
            self.to_host(&Command::PageFault(FaultDescriptor {
                asid,
                address: va & !0xfff,
                access: kind,
                fault_type,
                level,
                engine_class: COMPUTE_CLASS,
                engine_instance: 0,
                source_id: 0,
                vfid: 0,
                pdata: hw,
                prefetch: false,
            }));
            let guard = slot.reply.lock().unwrap_or_else(|e| e.into_inner());
            let (guard, _) = slot
                .arrived
                .wait_timeout_while(guard, FAULT_REPLY_TIMEOUT, |r| {
                    r.is_none() && !self.stop.load(Ordering::Acquire) && !lost()
                })
                .unwrap_or_else(|e| e.into_inner());
            match *guard {
                Some(true) => continue, // replay
                Some(false) => return None,
                None if self.stop.load(Ordering::Acquire) || lost() => return None,
                None => {
                    log::error!("xe-model: no reply to a fault at {va:#x} (asid {asid})");
                    return None;
                }
            }
        }
    }

    /// Takes a hardware thread for batch job `b` and runs it there; the
    /// engine goes on with its ring meanwhile.
    fn dispatch_batch(self: &Arc<Self>, b: BatchSubmit, epoch: u64) {
        self.retire_order.begin(b.job);
        let Some(&hw) = self.hw_threads.take(1, &self.stop).first() else {
            self.retire(b.job, JobState::Hung, 0, 0);
            return;
        };
        self.stamp(&[hw], epoch);
        let dev = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("xe-model-cs{hw}"))
            .spawn(move || {
                let out = cs::run(&dev, &b, hw);
                dev.hw_threads.give_back(&[hw]);
                dev.retire(b.job, out.state, out.faults, out.instructions);
            });
        if spawned.is_err() {
            log::error!("xe-model: no thread for batch job {}", b.job);
            self.hw_threads.give_back(&[hw]);
            self.retire(b.job, JobState::Hung, 0, 0);
        }
    }

    /// Writes `job`'s slot of the job table, then tells waiters: the
    /// retired count at once, the in-order done register once every
    /// earlier job retired too.
    fn retire(&self, job: u32, state: JobState, faults: u32, extra: u32) {
        let slot = layout::JOB_TABLE + (job as usize % layout::JOB_SLOTS) * 16;
        self.regs.u32_at(slot + 4).store(0, Ordering::Release);
        self.regs.u32_at(slot).store(job, Ordering::Release);
        self.regs.u32_at(slot + 8).store(faults, Ordering::Release);
        self.regs.u32_at(slot + 12).store(extra, Ordering::Release);
        self.regs
            .u32_at(slot + 4)
            .store(state as u32, Ordering::Release);
        let retired = self.regs.u32_at(layout::REG_JOBS_RETIRED);
        retired.fetch_add(1, Ordering::AcqRel);
        wake_all(retired);
        if let Some(last) = self.retire_order.finish(job) {
            let done = self.regs.u32_at(layout::REG_CCS_DONE);
            done.store(last, Ordering::Release);
            wake_all(done);
        }
    }

    /// Marks hardware threads `hws` as running a job of driver `epoch`.
    fn stamp(&self, hws: &[u16], epoch: u64) {
        for &hw in hws {
            self.slots[hw as usize]
                .epoch
                .store(epoch, Ordering::Release);
        }
    }

    fn launch(&self, k: &KernelLaunch, epoch: u64) {
        self.retire_order.begin(k.job);
        // Threads a batch job holds are busy: the kernel runs on the rest.
        let hws = self.hw_threads.take(k.threads.max(1) as usize, &self.stop);
        self.stamp(&hws, epoch);
        let threads = hws.len();
        let first = k.addr & !0xfff;
        let end = k.addr.saturating_add(k.len);
        let pages = end.saturating_sub(first).div_ceil(4096);
        let faults = AtomicU32::new(0);
        let failed = AtomicBool::new(hws.is_empty());
        let checksum = AtomicU64::new(0);
        std::thread::scope(|s| {
            for (i, &hw) in hws.iter().enumerate() {
                let (faults, failed, checksum) = (&faults, &failed, &checksum);
                s.spawn(move || {
                    let mut rng =
                        (k.value as u64 ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(i as u64 + 1) | 1;
                    let work: Box<dyn Iterator<Item = u64>> = if k.op == KernelOp::RandomRead {
                        Box::new((0..64).map(move |_| {
                            rng ^= rng << 13;
                            rng ^= rng >> 7;
                            rng ^= rng << 17;
                            rng % pages.max(1)
                        }))
                    } else {
                        Box::new((i as u64..pages).step_by(threads))
                    };
                    for page in work {
                        if failed.load(Ordering::Relaxed) {
                            return;
                        }
                        let va_page = first + page * 4096;
                        // The kernel works on whole dwords: a client's
                        // unaligned start begins at the next one.
                        let lo = va_page.max(k.addr).next_multiple_of(4);
                        let hi = (va_page + 4096).min(end);
                        if lo >= hi {
                            continue;
                        }
                        if !self.run_page(k, lo, hi, hw, faults, checksum) {
                            failed.store(true, Ordering::Relaxed);
                            return;
                        }
                    }
                });
            }
        });
        self.hw_threads.give_back(&hws);
        let state = if failed.load(Ordering::Relaxed) {
            JobState::Faulted
        } else {
            JobState::Done
        };
        self.retire(
            k.job,
            state,
            faults.load(Ordering::Relaxed),
            checksum.load(Ordering::Relaxed) as u32,
        );
    }

    /// Runs kernel `k` on the bytes `[lo, hi)` of one page. `false`: a fault
    /// could not be resolved.
    fn run_page(
        &self,
        k: &KernelLaunch,
        lo: u64,
        hi: u64,
        hw: u16,
        faults: &AtomicU32,
        checksum: &AtomicU64,
    ) -> bool {
        let kind = match k.op {
            KernelOp::IncrementAll | KernelOp::StridedWrite => AccessType::Write,
            KernelOp::AtomicAdd => AccessType::Atomic,
            _ => AccessType::Read,
        };
        if k.op == KernelOp::Speculative {
            // The prefetcher runs a page ahead of the read.
            self.prefetch(k.asid, (lo & !0xfff) + 4096, hw);
        }
        let ran = self.with_translated(k.asid, lo, hi - lo, kind, hw, faults, |p| {
            let words = |off: u64| {
                // A client's unaligned stride writes the dword it falls in.
                let off = off & !3;
                // SAFETY: `p` covers [lo, hi), `lo` is 4-aligned and `off`
                // (rounded down to a dword) plus 4 stays inside it.
                unsafe { &*(p.add(off as usize) as *const AtomicU32) }
            };
            let len = (hi - lo) & !3;
            match k.op {
                KernelOp::TouchPages | KernelOp::RandomRead | KernelOp::Speculative => {
                    checksum.fetch_add(words(0).load(Ordering::Relaxed) as u64, Ordering::Relaxed);
                }
                KernelOp::IncrementAll => {
                    for off in (0..len).step_by(4) {
                        let w = words(off);
                        w.store(
                            w.load(Ordering::Relaxed).wrapping_add(k.value),
                            Ordering::Relaxed,
                        );
                    }
                }
                KernelOp::StridedWrite => {
                    let stride = k.stride.max(4) as u64;
                    // Offsets from the kernel's start that fall in this page.
                    let start = (lo - k.addr).div_ceil(stride) * stride + k.addr;
                    let mut va = start;
                    while va + 4 <= hi {
                        words(va - lo).store(k.value, Ordering::Relaxed);
                        va += stride;
                    }
                }
                KernelOp::AtomicAdd => {
                    words(0).fetch_add(k.value, Ordering::AcqRel);
                }
            }
        });
        ran.is_some()
    }

    /// Runs `f` on the device memory behind `[va, va + bytes)` (inside one
    /// page) once it is translated for an access, faulting and stalling
    /// hardware thread `hw` as needed, under the access gate: an
    /// invalidation completes only after `f` returned. `None` when a fault
    /// could not be resolved or the translation points outside device
    /// memory.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn with_translated<R>(
        &self,
        asid: u32,
        va: u64,
        bytes: u64,
        kind: AccessType,
        hw: u16,
        faults: &AtomicU32,
        f: impl FnOnce(*mut u8) -> R,
    ) -> Option<R> {
        loop {
            let t = self.access(asid, va, kind, hw, faults)?;
            let _gate = self.access_gate.read().unwrap_or_else(|e| e.into_inner());
            // The translation may have been invalidated between `access`
            // and the gate: take it again under the gate (a TLB hit, or a
            // miss that sends us round the fault loop once more).
            match self.tlb.translate(&self.regs, &self.mem, asid, va) {
                Ok(again) if again == t => {}
                _ => continue,
            }
            let Some(r) = self.mem.resolve(t.address(va), bytes) else {
                log::error!("xe-model: translation of {va:#x} points outside device memory");
                return None;
            };
            return Some(f(r.ptr()));
        }
    }
}
