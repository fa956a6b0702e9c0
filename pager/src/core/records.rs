//! Keeping the journal (`crate::journal`) in step with the core, so that a
//! restarted pager finds every object, address space and view its clients
//! and the GPU server hold ids of (issue 14).
//!
//! **When.** A record is written where the core makes the thing it names
//! (`create_object`, `new_space`, `record_view`, the GPU server's first
//! request) and written again when an id in it changes (the GPU server
//! opens an object, a moved view takes the client's id), before the client
//! or the GPU server is answered; it is cleared where the thing ends
//! (`end_object`, `stop_space`, `retire_view`, `end_gpu`).
//!
//! **Descriptors first.** An object's memory and a space's fault channel
//! go to the runtime's keeper before their record is written, and are
//! dropped from it only after the record is cleared (`journal.rs` says
//! why).
//!
//! **A full journal** cannot happen within the budgets that size it
//! (`PagerBudget::journal_bytes_needed`); were it too small, the thing
//! still works in this generation and is logged as one the next would not
//! find.

use super::object::Object;
use super::runtime::Runtime;
use super::view::{Space, View};
use super::Core;
use crate::journal::{Journal, Kept, Record, ViewRecord};

impl<R: Runtime> Core<R> {
    /// Journals from now on into `j` (before the first request).
    pub fn attach_journal(&self, j: Journal) {
        if self.journal.set(j).is_err() {
            log::error!("pager: a journal was attached twice; keeping the first");
        }
    }

    pub fn journal(&self) -> Option<&Journal> {
        self.journal.get()
    }

    /// Where this generation's invalidation sequences (rule 8) start for
    /// each object: past every one an earlier generation can have sent.
    /// The GPU server keeps the newest sequence it saw per object and
    /// maps nothing a collect read before it (`resolve`); a restarted
    /// pager counting from 0 again would have every later fault refused
    /// forever. 2^40 invalidations of one object per generation;
    /// generation 1 counts from 0.
    pub fn first_seq(&self) -> u64 {
        u64::from(self.cfg.generation.saturating_sub(1)) << 40
    }

    /// Writes the record `make` builds, if there is a journal (made only
    /// then: building one reads atomics and locks, which a pager that
    /// journals nothing, or the schedule explorer, need not see).
    fn put(&self, make: impl FnOnce() -> Record) {
        if let Some(j) = self.journal() {
            let r = make();
            if j.put(&r).is_err() {
                log::error!("pager: journal full: a restart would not find {r:?}");
            }
        }
    }

    fn clear(&self, make: impl FnOnce() -> Record) {
        if let Some(j) = self.journal() {
            j.clear(&make());
        }
    }

    /// A new object: its memory to the keeper, then its record.
    pub(super) fn remember_object(&self, o: &Object<R>) {
        if self.journal().is_some() {
            self.rt.keep_memory(Kept::Object(o.id.raw()), &o.memory);
        }
        self.note_object(o);
    }

    /// Writes `o`'s record again (the GPU server's id for it changed).
    pub(super) fn note_object(&self, o: &Object<R>) {
        self.put(|| object_record(o));
    }

    pub(super) fn forget_object(&self, o: &Object<R>) {
        if self.journal().is_some() {
            self.clear(|| object_record(o));
            self.rt.drop_kept(Kept::Object(o.id.raw()));
        }
    }

    /// A new space: its fault channel to the keeper, then its record.
    pub(super) fn remember_space(&self, s: &Space<R>) {
        if self.journal().is_some() {
            self.rt.keep_port(Kept::Space(s.id), &s.port);
        }
        self.put(|| space_record(s));
    }

    pub(super) fn forget_space(&self, s: &Space<R>) {
        if self.journal().is_some() {
            self.clear(|| space_record(s));
            self.rt.drop_kept(Kept::Space(s.id));
        }
    }

    /// Writes `v`'s record (new, or its client's id changed).
    pub(super) fn note_view(&self, v: &View<R>) {
        self.put(|| view_record(v));
    }

    pub(super) fn forget_view(&self, v: &View<R>) {
        self.clear(|| view_record(v));
    }

    pub(super) fn note_gpu(&self, badge: u64, gpu: u8) {
        self.put(|| Record::Gpu { badge, gpu });
    }

    pub(super) fn forget_gpu(&self, badge: u64, gpu: u8) {
        self.clear(|| Record::Gpu { badge, gpu });
    }
}

fn object_record<R: Runtime>(o: &Object<R>) -> Record {
    Record::Object {
        owner: o.owner,
        id: o.id.raw(),
        gpu_ids: core::array::from_fn(|g| o.gpu_id(g as u8).map_or(0, |h| h.raw())),
        bytes: o.pages() as u64 * super::view::PAGE,
    }
}

fn space_record<R: Runtime>(s: &Space<R>) -> Record {
    Record::Space {
        owner: s.session.badge,
        id: s.id,
        forked: s.forked,
    }
}

fn view_record<R: Runtime>(v: &View<R>) -> Record {
    Record::View(ViewRecord {
        owner: v.space.session.badge,
        id: v.id.raw(),
        client_id: v.client_id().map_or(0, |h| h.raw()),
        object: v.object.id.raw(),
        space: v.space.id,
        addr: v.addr,
        first_page: v.first_page as u64,
        pages: v.pages as u64,
        forked: v.forked,
    })
}
