//! Every client's jobs and their results.
//!
//! The device keeps a job's result in slot `job % JOB_SLOTS` of its job
//! table, and a later job in the same slot overwrites it. So the server
//! copies each result into the submitting client's own record before the
//! slot is used again ("harvest"), and never starts a job whose slot still
//! belongs to a job running: a flood of jobs fills its own client's
//! records (at most `result_slots`, the oldest retired one of that client
//! goes first) and can never overwrite another client's result.
//!
//! A job's id is a generation-tagged handle of this table; its record
//! carries its owner, checked on every lookup (`NoSuchJob` otherwise).
//!
//! Locking: the table has its own lock, taken with the BO store's submit
//! lock held (job ids are allocated in submission order) and never with
//! the VM lock held. Nothing waits while holding it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use allocator_api2::alloc::Global;
use hw::xe::layout::JOB_SLOTS;
use ipc_protocol::interfaces::gpu::GpuError;
use session::{Handle, HandleTable};

use crate::session::{self as ses, GpuSession};

/// Most job records server-wide (in flight or holding a result).
const MAX_RECORDS: usize = 1 << 16;

struct Record {
    /// `None` once its session ended (kept only until it retires, to hold
    /// its device slot).
    owner: Option<Arc<GpuSession>>,
    device_job: u32,
    /// (status word, faults) once it retired.
    result: Option<(u32, u32)>,
}

/// Reads a device job's result once it retired.
pub type Retired<'a> = &'a dyn Fn(u32) -> Option<(u32, u32)>;

pub struct JobTable {
    records: HandleTable<Record, Global>,
    /// The job whose result each device slot will hold, until harvested.
    slots: Vec<Option<Handle>>,
    /// Each session's records, oldest first.
    by_owner: BTreeMap<u64, VecDeque<Handle>>,
}

/// What `Wait` finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// It retired: (status word, faults).
    Done(u32, u32),
    /// Still running on the device as this job id.
    Running(u32),
}

impl Default for JobTable {
    fn default() -> Self {
        Self::new()
    }
}

impl JobTable {
    pub fn new() -> Self {
        Self {
            records: HandleTable::new_in(MAX_RECORDS, Global),
            slots: vec![None; JOB_SLOTS],
            by_owner: Default::default(),
        }
    }

    /// Copies the result of the job in device slot `slot` into its record
    /// if it retired (its owner's job in flight is released); `false` if it
    /// still runs.
    fn harvest_slot(&mut self, slot: usize, retired: Retired) -> bool {
        let Some(h) = self.slots[slot] else {
            return true;
        };
        let Some(rec) = self.records.get_mut(h) else {
            self.slots[slot] = None;
            return true;
        };
        let Some(r) = retired(rec.device_job) else {
            return false;
        };
        rec.result = Some(r);
        self.slots[slot] = None;
        match rec.owner.clone() {
            Some(s) => s.release(ses::jobs_in_flight, 1),
            // An ended session's job: nothing waits for it.
            None => {
                self.records.remove(h);
            }
        }
        true
    }

    fn owned_by(r: &Record, badge: u64) -> bool {
        r.owner.as_ref().is_some_and(|s| s.badge == badge)
    }

    /// Harvests every retired job of `session` (their in-flight charges go).
    pub fn harvest(&mut self, session: &GpuSession, retired: Retired) {
        let running: Vec<usize> = self
            .by_owner
            .get(&session.badge)
            .into_iter()
            .flatten()
            .filter_map(|h| self.records.get(*h))
            .filter(|r| r.result.is_none())
            .map(|r| r.device_job as usize % JOB_SLOTS)
            .collect();
        for slot in running {
            self.harvest_slot(slot, retired);
        }
    }

    /// Admits device job `device_job` for `session`, whose job in flight the
    /// caller charged already (`Inner::reserve_job`), charging one result
    /// slot; returns its id. The device slot must be free of a running job,
    /// whoever's it is (`Busy` otherwise).
    pub fn admit(
        &mut self,
        session: &Arc<GpuSession>,
        device_job: u32,
        retired: Retired,
    ) -> Result<Handle, GpuError> {
        self.harvest(session, retired);
        let slot = device_job as usize % JOB_SLOTS;
        if !self.harvest_slot(slot, retired) {
            return Err(GpuError::Busy);
        }
        self.make_room(session)?;
        let h = match self.records.insert(Record {
            owner: Some(session.clone()),
            device_job,
            result: None,
        }) {
            Ok(h) => h,
            Err(_) => {
                session.release(ses::result_slots, 1);
                return Err(GpuError::OutOfMetadata);
            }
        };
        self.slots[slot] = Some(h);
        self.by_owner.entry(session.badge).or_default().push_back(h);
        Ok(h)
    }

    /// The device job of `badge`'s oldest job still running.
    pub fn oldest_running(&self, badge: u64) -> Option<u32> {
        self.by_owner
            .get(&badge)?
            .iter()
            .filter_map(|h| self.records.get(*h))
            .find(|r| r.result.is_none())
            .map(|r| r.device_job)
    }

    /// Gives back a job admitted but never started (the device refused
    /// it): its record and result slot (the caller releases its job in
    /// flight).
    pub fn cancel(&mut self, session: &GpuSession, h: Handle) {
        if let Some(r) = self.records.remove(h) {
            let slot = r.device_job as usize % JOB_SLOTS;
            if self.slots[slot] == Some(h) {
                self.slots[slot] = None;
            }
            session.release(ses::result_slots, 1);
        }
        if let Some(mine) = self.by_owner.get_mut(&session.badge) {
            mine.retain(|x| *x != h);
        }
    }

    /// Charges one result slot, dropping `session`'s oldest retired record
    /// when it has none left (`OverBudget` if all its records still run).
    fn make_room(&mut self, session: &GpuSession) -> Result<(), GpuError> {
        if session.charge(ses::result_slots, 1).is_ok() {
            return Ok(());
        }
        let mine = self.by_owner.entry(session.badge).or_default();
        let records = &self.records;
        let at = mine
            .iter()
            .position(|h| records.get(*h).is_some_and(|r| r.result.is_some()))
            .ok_or(GpuError::OverBudget)?;
        if let Some(h) = mine.remove(at) {
            self.records.remove(h);
        }
        // The dropped record's result slot is the new job's.
        Ok(())
    }

    /// `owner`'s job `id`: its result, or the device job still running.
    pub fn lookup(&self, owner: u64, id: u64) -> Result<Lookup, GpuError> {
        let h = u32::try_from(id)
            .map(Handle::from_raw)
            .map_err(|_| GpuError::NoSuchJob)?;
        let r = self
            .records
            .get(h)
            .filter(|r| Self::owned_by(r, owner))
            .ok_or(GpuError::NoSuchJob)?;
        Ok(match r.result {
            Some((state, faults)) => Lookup::Done(state, faults),
            None => Lookup::Running(r.device_job),
        })
    }

    /// Records the result `Wait` read from the device for `owner`'s job.
    pub fn complete(&mut self, session: &GpuSession, id: u64, result: (u32, u32)) {
        let Ok(raw) = u32::try_from(id) else { return };
        let h = Handle::from_raw(raw);
        let Some(r) = self
            .records
            .get_mut(h)
            .filter(|r| Self::owned_by(r, session.badge))
        else {
            return;
        };
        if r.result.is_none() {
            r.result = Some(result);
            session.release(ses::jobs_in_flight, 1);
            let slot = r.device_job as usize % JOB_SLOTS;
            if self.slots[slot] == Some(h) {
                self.slots[slot] = None;
            }
        }
    }

    /// `session` ended: its records go; jobs still running keep their
    /// device slot (ownerless) until they retire. Its quotas are released.
    pub fn end(&mut self, session: &GpuSession, retired: Retired) {
        self.harvest(session, retired);
        for h in self.by_owner.remove(&session.badge).into_iter().flatten() {
            let running = self.records.get(h).is_some_and(|r| r.result.is_none());
            if running {
                if let Some(r) = self.records.get_mut(h) {
                    r.owner = None;
                }
                session.release(ses::jobs_in_flight, 1);
            } else {
                self.records.remove(h);
            }
            session.release(ses::result_slots, 1);
        }
    }

    /// Jobs still running (ownerless ones included), after harvesting
    /// those of ended sessions that retired.
    pub fn in_flight(&mut self, retired: Retired) -> usize {
        for slot in 0..JOB_SLOTS {
            let orphan = self.slots[slot]
                .and_then(|h| self.records.get(h))
                .is_some_and(|r| r.owner.is_none());
            if orphan {
                self.harvest_slot(slot, retired);
            }
        }
        self.records
            .iter()
            .filter(|(_, r)| r.result.is_none())
            .count()
    }

    /// Records held, server-wide.
    pub fn records(&self) -> usize {
        self.records.len()
    }
}

#[cfg(all(test, not(feature = "shuttle")))]
mod tests {
    use super::*;
    use crate::budget::GpuBudget;
    use std::cell::RefCell;
    use std::collections::HashSet;

    fn session(badge: u64, spec: &str) -> Arc<GpuSession> {
        let mut b = GpuBudget::default();
        b.apply(spec).unwrap();
        crate::session::Sessions::new(b).get_or_open(badge)
    }

    /// Charges the job in flight as `Inner::reserve_job` does, then admits.
    fn admit(
        t: &mut JobTable,
        s: &Arc<GpuSession>,
        job: u32,
        retired: Retired,
    ) -> Result<Handle, GpuError> {
        t.harvest(s, retired);
        s.charge(ses::jobs_in_flight, 1)?;
        t.admit(s, job, retired)
            .inspect_err(|_| s.release(ses::jobs_in_flight, 1))
    }

    /// A device whose jobs in `done` have retired with status 1.
    struct Device(RefCell<HashSet<u32>>);

    impl Device {
        fn retired(&self) -> impl Fn(u32) -> Option<(u32, u32)> + '_ {
            |j| self.0.borrow().contains(&j).then_some((1, 0))
        }
        fn finish(&self, j: u32) {
            self.0.borrow_mut().insert(j);
        }
    }

    #[test]
    fn a_running_jobs_slot_is_never_reused() {
        let dev = Device(RefCell::new(HashSet::new()));
        let a = session(1, "jobs_in_flight=1000,result_slots=1000");
        let mut t = JobTable::new();
        let first = admit(&mut t, &a, 1, &dev.retired()).unwrap();
        let same_slot = 1 + JOB_SLOTS as u32;
        assert_eq!(
            admit(&mut t, &a, same_slot, &dev.retired()),
            Err(GpuError::Busy)
        );
        dev.finish(1);
        admit(&mut t, &a, same_slot, &dev.retired()).unwrap();
        assert_eq!(t.lookup(1, first.raw() as u64), Ok(Lookup::Done(1, 0)));
    }

    #[test]
    fn results_are_pushed_out_only_by_their_own_clients_jobs() {
        let dev = Device(RefCell::new(HashSet::new()));
        let (a, b) = (session(1, "result_slots=2"), session(2, "result_slots=2"));
        let mut t = JobTable::new();
        let victim = admit(&mut t, &a, 1, &dev.retired()).unwrap();
        dev.finish(1);
        let mut flood = Vec::new();
        for j in 2..500u32 {
            flood.push(admit(&mut t, &b, j, &dev.retired()).unwrap());
            dev.finish(j);
        }
        assert_eq!(t.lookup(1, victim.raw() as u64), Ok(Lookup::Done(1, 0)));
        assert_eq!(t.lookup(2, flood[0].raw() as u64), Err(GpuError::NoSuchJob));
        assert_eq!(
            t.lookup(1, flood[497].raw() as u64),
            Err(GpuError::NoSuchJob)
        );
        assert!(b.quotas.result_slots.used() <= 2);
        // All of one client's jobs still run: it has no result to give up.
        let c = session(3, "result_slots=1,jobs_in_flight=5");
        admit(&mut t, &c, 600, &dev.retired()).unwrap();
        assert_eq!(
            admit(&mut t, &c, 601, &dev.retired()),
            Err(GpuError::OverBudget)
        );
        assert_eq!(
            c.quotas.jobs_in_flight.used(),
            1,
            "the refused job took nothing"
        );
    }

    #[test]
    fn an_ended_sessions_running_jobs_hold_their_slots_until_they_retire() {
        let dev = Device(RefCell::new(HashSet::new()));
        let a = session(1, "");
        let mut t = JobTable::new();
        admit(&mut t, &a, 7, &dev.retired()).unwrap();
        admit(&mut t, &a, 8, &dev.retired()).unwrap();
        dev.finish(8);
        t.end(&a, &dev.retired());
        assert!(a.quotas.is_empty(), "{:?}", a.quotas);
        assert_eq!(t.in_flight(&dev.retired()), 1);
        let b = session(2, "");
        let later = 7 + JOB_SLOTS as u32;
        assert_eq!(
            admit(&mut t, &b, later, &dev.retired()),
            Err(GpuError::Busy)
        );
        dev.finish(7);
        assert_eq!(t.in_flight(&dev.retired()), 0);
        assert_eq!(t.records(), 0);
        admit(&mut t, &b, later, &dev.retired()).unwrap();
    }
}
