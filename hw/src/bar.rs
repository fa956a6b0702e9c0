//! The driver's view of the device: registers and VRAM mapped from the
//! memfds the device handed over, ring producers for the copy, compute and
//! GuC rings, the consumer of the GuC-to-host ring, and DMA mapping of
//! system memfds. `drivers/xe-svm` reaches the device only through this.

use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipc_protocol::transport::{Transport, TransportError};

use crate::control::{self, ControlOp, ControlRecord, STATUS_OK};
use crate::shm::{wait_change, Region, RingError, RingView};
use crate::xe::commands::{Command, CommandError};
use crate::xe::layout::{self, Ring};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarError {
    /// The control channel failed (the device process died).
    Control(TransportError),
    /// The device did not say hello, or said something malformed.
    BadHello,
    /// Mapping a region failed (errno).
    Map(i32),
    /// The device refused a DMA map or unmap (its status code).
    Refused(u64),
    Ring(RingError),
    Command(CommandError),
    TimedOut,
}

impl std::fmt::Display for BarError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}
impl std::error::Error for BarError {}

impl From<RingError> for BarError {
    fn from(e: RingError) -> Self {
        Self::Ring(e)
    }
}

/// A mapped device.
pub struct Bar {
    regs: Region,
    vram: Region,
    control: Arc<dyn Transport>,
    control_lock: Mutex<()>,
    /// One lock per ring this side produces on.
    producers: [Mutex<()>; 3],
    consumer: Mutex<()>,
}

impl Bar {
    /// Probes the device on its control channel: receives its register and
    /// VRAM memfds and maps them.
    pub fn connect(control: Arc<dyn Transport>, timeout: Duration) -> Result<Self, BarError> {
        let (rec, mut fds) = control::recv(&*control, Some(timeout)).map_err(BarError::Control)?;
        let rec = rec
            .filter(|r| r.op == ControlOp::Hello && fds.len() == 2)
            .ok_or(BarError::BadHello)?;
        let vram_fd = fds.pop().ok_or(BarError::BadHello)?;
        let regs_fd = fds.pop().ok_or(BarError::BadHello)?;
        let regs = Region::map(regs_fd, layout::REGION_BYTES)
            .map_err(|e| BarError::Map(e.raw_os_error()))?;
        let vram =
            Region::map(vram_fd, rec.size as usize).map_err(|e| BarError::Map(e.raw_os_error()))?;
        if regs.u32_at(layout::REG_MAGIC).load(Ordering::Acquire) != layout::MAGIC {
            return Err(BarError::BadHello);
        }
        Ok(Self {
            regs,
            vram,
            control,
            control_lock: Mutex::new(()),
            producers: [Mutex::new(()), Mutex::new(()), Mutex::new(())],
            consumer: Mutex::new(()),
        })
    }

    pub fn regs(&self) -> &Region {
        &self.regs
    }
    /// VRAM through the BAR (the driver writes page tables here).
    pub fn vram(&self) -> &Region {
        &self.vram
    }
    pub fn vram_bytes(&self) -> u64 {
        self.vram.len() as u64
    }
    pub fn reg(&self, off: usize) -> u32 {
        self.regs.u32_at(off).load(Ordering::Acquire)
    }

    /// Points ASID `asid`'s context at the root (level 3) table `root`.
    pub fn set_context(&self, asid: u32, root: u64) {
        assert!(
            (asid as usize) < layout::MAX_ASIDS,
            "ASID {asid} beyond the model's context table"
        );
        self.regs
            .u64_at(layout::CONTEXT_TABLE + asid as usize * 8)
            .store(root, Ordering::Release);
    }

    /// Submits a command on `ring` (copy, compute or host-to-GuC).
    pub fn submit(&self, ring: Ring, seqno: u32, cmd: &Command) -> Result<(), BarError> {
        let lock = match ring {
            Ring::Copy => &self.producers[0],
            Ring::Compute => &self.producers[1],
            Ring::HostToGuc => &self.producers[2],
            Ring::GucToHost => return Err(BarError::Ring(RingError::BadPacket)),
        };
        let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
        RingView::new(&self.regs, ring).push(
            seqno,
            &cmd.encode(),
            Some(Duration::from_secs(10)),
        )?;
        Ok(())
    }

    /// The next GuC-to-host message (page faults, invalidation completions).
    pub fn next_guc_message(&self, timeout: Option<Duration>) -> Result<Command, BarError> {
        let _g = self.consumer.lock().unwrap_or_else(|e| e.into_inner());
        let (_, packet) = RingView::new(&self.regs, Ring::GucToHost).pop(timeout)?;
        Command::decode(packet.words()).map_err(BarError::Command)
    }

    /// Waits until the register at `off` reaches `value` or later
    /// (seqno order, wrapping).
    pub fn wait_seqno(&self, off: usize, value: u32, timeout: Duration) -> Result<(), BarError> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.reg(off);
            if (now.wrapping_sub(value) as i32) >= 0 {
                return Ok(());
            }
            if !wait_change(self.regs.u32_at(off), now, Some(deadline)) {
                return Err(BarError::TimedOut);
            }
        }
    }

    /// Waits until `job` retired and returns (status, faults); `None` when
    /// its job table slot went to a later job meanwhile (more jobs in
    /// flight than slots). [`BarError::TimedOut`] while it still runs.
    pub fn wait_job(&self, job: u32, timeout: Duration) -> Result<Option<(u32, u32)>, BarError> {
        let deadline = Instant::now() + timeout;
        let retired = self.regs.u32_at(layout::REG_JOBS_RETIRED);
        loop {
            let seen = retired.load(Ordering::Acquire);
            if let Some(r) = self.job_result(job) {
                return Ok(Some(r));
            }
            // Everything up to `job` retired, yet its slot holds another job.
            if (self.reg(layout::REG_CCS_DONE).wrapping_sub(job) as i32) >= 0 {
                return Ok(self.job_result(job));
            }
            if !wait_change(retired, seen, Some(deadline)) {
                return Err(BarError::TimedOut);
            }
        }
    }

    /// The job table slot of `job`: (status, faults) once it retired.
    pub fn job_result(&self, job: u32) -> Option<(u32, u32)> {
        let slot = layout::JOB_TABLE + (job as usize % layout::JOB_SLOTS) * 16;
        (self.reg(slot) == job && self.reg(slot + 4) != 0)
            .then(|| (self.reg(slot + 4), self.reg(slot + 8)))
    }

    /// Exposes `memfd` (`size` bytes) to the device at DMA slot `slot`.
    pub fn dma_map(&self, slot: u32, memfd: OwnedFd, size: u64) -> Result<u64, BarError> {
        self.control_call(
            ControlRecord {
                op: ControlOp::DmaMap,
                slot,
                size,
                status: 0,
            },
            vec![memfd],
        )?;
        Ok(layout::sysmem_address(slot, 0))
    }

    pub fn dma_unmap(&self, slot: u32) -> Result<(), BarError> {
        self.control_call(
            ControlRecord {
                op: ControlOp::DmaUnmap,
                slot,
                size: 0,
                status: 0,
            },
            vec![],
        )
    }

    /// Maps the VRAM memfd of the device whose GPU id is `gpu` (`size`
    /// bytes, its `Hello`'s VRAM) as this device's window on that peer;
    /// returns the window's device address ([`layout::peer_address`]).
    pub fn peer_map(&self, gpu: u8, vram: OwnedFd, size: u64) -> Result<u64, BarError> {
        self.control_call(
            ControlRecord {
                op: ControlOp::PeerMap,
                slot: gpu as u32,
                size,
                status: 0,
            },
            vec![vram],
        )?;
        Ok(layout::peer_address(gpu, 0))
    }

    /// Unmaps the window on peer `gpu`, once copies in flight through it
    /// are done.
    pub fn peer_unmap(&self, gpu: u8) -> Result<(), BarError> {
        self.control_call(
            ControlRecord {
                op: ControlOp::PeerUnmap,
                slot: gpu as u32,
                size: 0,
                status: 0,
            },
            vec![],
        )
    }

    fn control_call(&self, rec: ControlRecord, fds: Vec<OwnedFd>) -> Result<(), BarError> {
        let _g = self.control_lock.lock().unwrap_or_else(|e| e.into_inner());
        control::send(&*self.control, rec, fds).map_err(BarError::Control)?;
        let (reply, _) = control::recv(&*self.control, Some(Duration::from_secs(10)))
            .map_err(BarError::Control)?;
        match reply {
            Some(r) if r.op == ControlOp::Done && r.slot == rec.slot && r.status == STATUS_OK => {
                Ok(())
            }
            Some(r) if r.op == ControlOp::Done => Err(BarError::Refused(r.status)),
            _ => Err(BarError::BadHello),
        }
    }
}
