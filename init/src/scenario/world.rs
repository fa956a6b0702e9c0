//! What a running scenario has made: memory objects with their shadows,
//! the address ranges that map them, named allocations, the heap, GPU VMs,
//! buffer objects and counter marks; and how a name plus offset resolves
//! to memory.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};

use ipc_protocol::interfaces::gpu::GpuStats;
use ipc_protocol::types::{BoId, ObjectId, ViewId, VmId};

use super::exec::StepError;
use super::format::{AllocKind, Device};
use super::heap::Heap;
use super::report::Reporter;
use super::value::Addr;
use crate::supervisor::{Clients, Connection};
use ipc_protocol::client::Client;
use ipc_protocol::interfaces::gpu::Gpu;

/// A pager memory object this scenario created.
pub struct Object {
    pub id: ObjectId,
    pub client: usize,
    pub memfd: OwnedFd,
    pub bytes: u64,
    /// What each word must hold (see `shadow.rs`).
    pub shadow: Mutex<Vec<u32>>,
}

impl Object {
    pub fn shadow(&self) -> MutexGuard<'_, Vec<u32>> {
        self.shadow.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One address range of this process that maps part of an object.
#[derive(Clone)]
pub struct Mapping {
    pub addr: u64,
    pub len: u64,
    pub object: Arc<Object>,
    pub obj_off: u64,
    /// The view id the pager gave us for it, while it names this range.
    pub view: Option<ViewId>,
}

/// A named allocation.
#[derive(Clone)]
pub struct Alloc {
    pub kind: AllocKind,
    pub client: usize,
    pub addr: u64,
    pub len: u64,
    /// `None` for a reservation (nothing mapped).
    pub object: Option<Arc<Object>>,
    pub obj_off: u64,
    /// Byte ranges (from `addr`) that `munmap` took away.
    pub holes: Vec<(u64, u64)>,
    pub freed: bool,
}

impl Alloc {
    pub fn in_hole(&self, off: u64, len: u64) -> bool {
        self.holes
            .iter()
            .any(|&(a, l)| off < a + l && a < off + len)
    }
}

pub struct HeapState {
    pub heap: Heap,
    pub object: Arc<Object>,
    pub addr: u64,
}

pub struct Vm {
    pub id: VmId,
    pub client: usize,
    /// The GPU whose server holds it (`vm`'s `gpu`; 0 with one GPU).
    pub gpu: u8,
    pub mirror: bool,
}

pub struct Bo {
    pub id: BoId,
    pub client: usize,
    /// The GPU of the VM it was made for.
    pub gpu: u8,
    pub gpu_addr: u64,
    pub len: u64,
    pub shadow: Mutex<Vec<u32>>,
}

#[derive(Default)]
pub struct World {
    pub objects: Vec<Arc<Object>>,
    pub mappings: Vec<Mapping>,
    pub allocs: BTreeMap<String, Alloc>,
    pub heaps: BTreeMap<usize, HeapState>,
    pub vms: BTreeMap<String, Vm>,
    pub bos: BTreeMap<String, Arc<Bo>>,
    pub marks: BTreeMap<String, GpuStats>,
    /// Reservations to give back at the end.
    pub reserved: Vec<(u64, u64)>,
    /// Where the next buffer object goes in the GPU address space.
    pub next_bo_addr: u64,
    /// Batches submitted with `wait = false`, by name.
    pub jobs: BTreeMap<String, super::batch_steps::PendingJob>,
}

/// A resolved range of memory.
#[derive(Clone)]
pub enum Target {
    /// CPU (and, bound, GPU) address `addr`, `len` bytes, at `obj_off` of
    /// `object` (`None`: a reservation).
    Mem {
        addr: u64,
        len: u64,
        object: Option<Arc<Object>>,
        obj_off: u64,
        client: usize,
    },
    /// GPU address `gpu_addr` of a buffer object, `len` bytes from `off`.
    Bo {
        bo: Arc<Bo>,
        gpu_addr: u64,
        off: u64,
        len: u64,
    },
}

impl Target {
    pub fn addr(&self) -> u64 {
        match self {
            Self::Mem { addr, .. } => *addr,
            Self::Bo { gpu_addr, .. } => *gpu_addr,
        }
    }
    pub fn len(&self) -> u64 {
        match self {
            Self::Mem { len, .. } | Self::Bo { len, .. } => *len,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn scenario_err(msg: String) -> StepError {
    StepError::Scenario(msg)
}

impl World {
    pub fn alloc(&self, name: &str) -> Result<&Alloc, StepError> {
        self.allocs
            .get(name)
            .ok_or_else(|| scenario_err(format!("no allocation {name:?}")))
    }

    pub fn alloc_mut(&mut self, name: &str) -> Result<&mut Alloc, StepError> {
        self.allocs
            .get_mut(name)
            .ok_or_else(|| scenario_err(format!("no allocation {name:?}")))
    }

    pub fn vm(&self, name: &str) -> Result<&Vm, StepError> {
        self.vms
            .get(name)
            .ok_or_else(|| scenario_err(format!("no VM {name:?}")))
    }

    /// `at` (plus `len` bytes, default to the end of what it names).
    pub fn resolve(&self, at: &Addr, len: Option<u64>) -> Result<Target, StepError> {
        let fit = |total: u64| -> Result<u64, StepError> {
            let rest = total.checked_sub(at.offset).ok_or_else(|| {
                scenario_err(format!("{}+{:#x} is past its end", at.name, at.offset))
            })?;
            match len {
                None => Ok(rest),
                Some(l) if l <= rest => Ok(l),
                Some(l) => Err(scenario_err(format!(
                    "{}+{:#x}: {l} bytes run past its end",
                    at.name, at.offset
                ))),
            }
        };
        if let Some(a) = self.allocs.get(&at.name) {
            let len = fit(a.len)?;
            return Ok(Target::Mem {
                addr: a.addr + at.offset,
                len,
                object: a.object.clone(),
                obj_off: a.obj_off + at.offset,
                client: a.client,
            });
        }
        if let Some(b) = self.bos.get(&at.name) {
            let len = fit(b.len)?;
            return Ok(Target::Bo {
                bo: b.clone(),
                gpu_addr: b.gpu_addr + at.offset,
                off: at.offset,
                len,
            });
        }
        Err(scenario_err(format!(
            "{:?} is neither an allocation nor a buffer object",
            at.name
        )))
    }

    /// Mappings of `client` that the pager knows as views we attached.
    pub fn views_of(&self, client: usize) -> Vec<(ViewId, u64)> {
        self.mappings
            .iter()
            .filter(|m| m.object.client == client)
            .filter_map(|m| m.view.map(|v| (v, m.addr)))
            .collect()
    }
}

/// Everything a step runs with.
pub struct Ctx {
    pub clients: Clients,
    /// Connections of client slots 1.. (slot 0 is `clients.own`).
    pub extra: Vec<Connection>,
    pub world: Mutex<World>,
    /// Held while a client's heap is made (a call to the pager and a
    /// mapping, so not under `world`): threads whose first `malloc`s race
    /// make one heap, not one each with the last replacing the others.
    pub making_heap: Mutex<()>,
    pub report: Reporter,
    pub device: Device,
}

impl Ctx {
    pub fn new(clients: Clients, device: Device, report: Reporter) -> Self {
        let mut clients = clients;
        let extra = std::mem::take(&mut clients.slots)
            .into_iter()
            .map(|s| s.connect())
            .collect();
        Self {
            clients,
            extra,
            world: Mutex::new(World {
                next_bo_addr: 1 << 44,
                ..World::default()
            }),
            making_heap: Mutex::new(()),
            report,
            device,
        }
    }

    pub fn conn(&self, client: usize) -> Result<&Connection, StepError> {
        if client == 0 {
            return Ok(&self.clients.own);
        }
        self.extra.get(client - 1).ok_or_else(|| {
            scenario_err(format!(
                "client {client}: the device section gives {} clients",
                self.extra.len() + 1
            ))
        })
    }

    /// Client `client`'s connection to GPU `gpu`'s server.
    pub fn gpu(&self, client: usize, gpu: u8) -> Result<&Client<Gpu>, StepError> {
        self.conn(client)?.gpu_of(gpu).ok_or_else(|| {
            scenario_err(format!(
                "GPU {gpu}: the device section gives {} GPUs",
                self.device.gpus
            ))
        })
    }

    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }
}
