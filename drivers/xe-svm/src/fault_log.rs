//! Per-VM fault log (issue 16 item 7; xe 7.1's
//! `DRM_XE_VM_GET_PROPERTY_FAULTS`): the GPU faults that could not be
//! served, so a client learns why its job ended `Faulted` (which address,
//! which access, at which page-table level). Each VM keeps the last
//! [`FAULT_LOG_LEN`] and a count of all; a ring of fixed length, so a
//! client faulting in a loop costs the server a bounded amount of memory
//! (about 1.5 KiB per VM, within its `vms` budget). The ring is taken from
//! the metadata arena when the VM is made (`arena.rs` counts it), so a full
//! arena is `OutOfMetadata` at `CreateVm`, and logging never allocates.

use std::sync::OnceLock;
use std::time::Instant;

use hw::xe::fault::FaultDescriptor;
use ipc_protocol::interfaces::gpu::{FaultRecord, Faults, GpuError, FAULT_LOG_LEN};
use ipc_protocol::wire::BoundedVec;

use allocator_api2::vec::Vec as MetaVec;
use session::Meta;

use crate::platform::Platform;
use crate::server::Inner;

/// Arena bytes one VM's ring holds.
pub const RING_BYTES: u64 = (FAULT_LOG_LEN * std::mem::size_of::<FaultRecord>()) as u64;

/// The unserved faults of one VM.
pub struct FaultLogRing {
    /// Room for [`FAULT_LOG_LEN`], reserved up front: once full, `oldest`
    /// is the slot the next record overwrites.
    ring: MetaVec<FaultRecord, Meta>,
    oldest: usize,
    total: u64,
}

impl FaultLogRing {
    /// An empty ring, its room taken from `meta`; `None` if the arena is full.
    pub(crate) fn new_in(meta: Meta) -> Option<Self> {
        let mut ring = MetaVec::new_in(meta);
        ring.try_reserve_exact(FAULT_LOG_LEN).ok()?;
        Some(Self {
            ring,
            oldest: 0,
            total: 0,
        })
    }

    fn push(&mut self, r: FaultRecord) {
        if self.ring.len() < FAULT_LOG_LEN {
            // Within the room reserved in `new_in`: no allocation.
            self.ring.push(r);
        } else {
            self.ring[self.oldest] = r;
            self.oldest = (self.oldest + 1) % FAULT_LOG_LEN;
        }
        self.total = self.total.saturating_add(1);
    }

    /// Oldest first.
    fn records(&self) -> impl Iterator<Item = &FaultRecord> {
        let (newer, older) = self.ring.split_at(self.oldest);
        older.iter().chain(newer)
    }
}

/// Microseconds since the first fault this server logged's clock began.
fn now_us() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let us = START.get_or_init(Instant::now).elapsed().as_micros();
    u64::try_from(us).unwrap_or(u64::MAX)
}

impl<P: Platform> Inner<P> {
    /// Logs `f`, which could not be served, in its VM's log.
    pub fn log_unserved(&self, f: &FaultDescriptor) {
        let mut st = self.lock();
        if let Some(vm) = st.vms.get_mut(&f.asid) {
            vm.faults.push(FaultRecord {
                address: f.address,
                access: f.access as u8,
                fault_type: f.fault_type as u8,
                level: f.level,
                time_us: now_us(),
            });
        }
    }

    /// `Gpu::FaultLog` for `owner`'s VM `vm`.
    pub fn fault_log(&self, owner: u64, vm: u32) -> Result<Faults, GpuError> {
        let st = self.lock();
        let asid = Self::vm_asid(&st, owner, vm)?;
        let log = &st.vms.get(&asid).ok_or(GpuError::NoSuchVm)?.faults;
        let faults = log.records().cloned().collect();
        Ok(Faults {
            // The ring never holds more than the wire's bound.
            faults: BoundedVec::new(faults).ok_or(GpuError::OutOfMetadata)?,
            total: log.total,
        })
    }
}
