//! What a restarted pager rebuilds its clients' objects, address spaces
//! and views from (issue 14): one record each, in a memfd `init` creates
//! at boot and hands every generation of the pager (`--journal-fd`).
//!
//! **What it holds, and what it does not.** The records say which objects
//! each client has (id, size, the id the GPU server knows it by), which
//! address spaces (one per client userfaultfd) and which views of which
//! object each space shows where, under the ids the clients and the GPU
//! server hold. The descriptors themselves (object memfds, userfaultfds)
//! cannot live in memory: the runtime hands a duplicate of each to a
//! keeper that outlives the pager (`init`; [`Kept`] names them). Page
//! states are not journaled at all: a restarted pager reads them from the
//! memfds (data: System, a hole: Empty) and from the GPU server (the
//! frames it holds: Device), which between them always know
//! (`core/rebuild.rs`).
//!
//! **Order.** A descriptor is handed to the keeper before its record is
//! written, and its record cleared before the keeper is told to drop it:
//! a record always has its descriptor, and a descriptor without a record
//! is dropped by the next generation.
//!
//! **A record is whole or absent**, and the next generation trusts nothing
//! in it: the slots are `session::journal`'s, and a record is restored
//! only through the checks a client's request passes (`core/rebuild.rs`).
//!
//! **Budget.** Each record is an object, a space or a view of some
//! client's budget (or the GPU server's one record); the journal is as
//! large as every client at those limits needs
//! ([`crate::core::budget::PagerBudget::journal_bytes_needed`]).

use std::sync::atomic::AtomicU64;

use session::journal::{Body, SlotJournal};
pub use session::journal::{JournalFull, RECORD_BYTES, SLOT_WORDS};

const KIND_OBJECT: u64 = 0x6f62_0001;
const KIND_SPACE: u64 = 0x7370_0002;
const KIND_VIEW: u64 = 0x7677_0003;
const KIND_GPU: u64 = 0x6770_0004;

/// A view as the journal keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewRecord {
    pub owner: u64,
    /// Its own entry in the owner's view table.
    pub id: u32,
    /// The client's id that names it (0: none).
    pub client_id: u32,
    pub object: u32,
    pub space: u64,
    pub addr: u64,
    pub first_page: u64,
    pub pages: u64,
    pub forked: bool,
}

/// One record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// Client `owner`'s object `id` of `bytes`; GPU `g`'s server knows it
    /// as `gpu_ids[g]` (0: it opened no view of it).
    Object {
        owner: u64,
        id: u32,
        gpu_ids: [u32; GPUS],
        bytes: u64,
    },
    /// Client `owner`'s address space `id` (a fork's child when `forked`).
    Space {
        owner: u64,
        id: u64,
        forked: bool,
    },
    View(ViewRecord),
    /// GPU `gpu`'s server's `PagerMigrate` badge: its session holds the
    /// ids it knows objects by.
    Gpu {
        badge: u64,
        gpu: u8,
    },
}

/// GPUs whose ids an object record keeps: all a pager serves.
pub const GPUS: usize = crate::core::object::MAX_GPUS;

/// What a slot belongs to in this generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    Object(u32),
    Space(u64),
    View(u32),
    Gpu(u8),
}

/// A descriptor the runtime's keeper holds for the next generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kept {
    /// Object `id`'s memory (host: its memfd).
    Object(u32),
    /// Address space `id`'s fault channel (host: the client userfaultfd).
    Space(u64),
}

const KEPT_OBJECT: u64 = 1 << 56;
const KEPT_SPACE: u64 = 2 << 56;
const KEPT_ID: u64 = (1 << 56) - 1;

impl Kept {
    /// The number the keeper files it under.
    pub fn key(self) -> u64 {
        match self {
            Self::Object(id) => KEPT_OBJECT | u64::from(id),
            Self::Space(id) => KEPT_SPACE | (id & KEPT_ID),
        }
    }

    pub fn from_key(key: u64) -> Option<Self> {
        match key & !KEPT_ID {
            KEPT_OBJECT => u32::try_from(key & KEPT_ID).ok().map(Self::Object),
            KEPT_SPACE => Some(Self::Space(key & KEPT_ID)),
            _ => None,
        }
    }
}

pub struct Journal {
    slots: SlotJournal<Key>,
}

impl Journal {
    /// The journal over `words` and the records an earlier generation
    /// left in it, by slot; those slots are neither free nor owned until
    /// [`Self::keep`] or [`SlotJournal::discard`] says which.
    pub fn open(words: &'static [AtomicU64]) -> (Self, Vec<(u32, Record)>) {
        let (slots, found) = SlotJournal::open_records(words, decode);
        (Self { slots }, found)
    }

    /// Writes `r` (replacing the record of the same object, space, view
    /// or GPU server).
    pub fn put(&self, r: &Record) -> Result<(), JournalFull> {
        self.slots.put(key(r), &encode(r))
    }

    /// Clears the record of what `r` names; whether there was one.
    pub fn clear(&self, r: &Record) -> bool {
        self.slots.clear(key(r))
    }

    /// The restored `r` owns the record in `slot`.
    pub fn keep(&self, slot: u32, r: &Record) {
        self.slots.keep(slot, key(r));
    }
}

/// `discard`, `len` and `is_empty` are the slots'.
impl std::ops::Deref for Journal {
    type Target = SlotJournal<Key>;

    fn deref(&self) -> &SlotJournal<Key> {
        &self.slots
    }
}

fn key(r: &Record) -> Key {
    match *r {
        Record::Object { id, .. } => Key::Object(id),
        Record::Space { id, .. } => Key::Space(id),
        Record::View(v) => Key::View(v.id),
        Record::Gpu { gpu, .. } => Key::Gpu(gpu),
    }
}

fn encode(r: &Record) -> Body {
    let pair = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    match *r {
        // GPU 0's id beside the object's (where one GPU's always was),
        // the others' in pairs after the size.
        Record::Object {
            owner,
            id,
            gpu_ids: g,
            bytes,
        } => [
            KIND_OBJECT,
            owner,
            pair(id, g[0]),
            bytes,
            pair(g[1], g[2]),
            pair(g[3], g[4]),
            pair(g[5], g[6]),
            pair(g[7], 0),
        ],
        Record::Space { owner, id, forked } => {
            [KIND_SPACE, owner, id, u64::from(forked), 0, 0, 0, 0]
        }
        Record::View(v) => [
            KIND_VIEW,
            v.owner,
            pair(v.id, v.client_id),
            pair(v.object, u32::from(v.forked)),
            v.space,
            v.addr,
            v.first_page,
            v.pages,
        ],
        Record::Gpu { badge, gpu } => [KIND_GPU, badge, u64::from(gpu), 0, 0, 0, 0, 0],
    }
}

/// The record in `v`, if it holds a whole one (anything else is free).
fn decode(v: &Body) -> Option<Record> {
    let lo = |x: u64| x as u32;
    let hi = |x: u64| (x >> 32) as u32;
    // Words a record does not use are zero in every record written.
    let zero_from = |i: usize| v[i..].iter().all(|&x| x == 0);
    match v[0] {
        KIND_OBJECT if hi(v[7]) == 0 => Some(Record::Object {
            owner: v[1],
            id: lo(v[2]),
            gpu_ids: [
                hi(v[2]),
                lo(v[4]),
                hi(v[4]),
                lo(v[5]),
                hi(v[5]),
                lo(v[6]),
                hi(v[6]),
                lo(v[7]),
            ],
            bytes: v[3],
        }),
        KIND_SPACE if v[3] <= 1 && zero_from(4) => Some(Record::Space {
            owner: v[1],
            id: v[2],
            forked: v[3] == 1,
        }),
        KIND_VIEW if hi(v[3]) <= 1 => Some(Record::View(ViewRecord {
            owner: v[1],
            id: lo(v[2]),
            client_id: hi(v[2]),
            object: lo(v[3]),
            forked: hi(v[3]) == 1,
            space: v[4],
            addr: v[5],
            first_page: v[6],
            pages: v[7],
        })),
        KIND_GPU if v[2] < GPUS as u64 && zero_from(3) => Some(Record::Gpu {
            badge: v[1],
            gpu: v[2] as u8,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use session::journal::leaked as words;

    fn record() -> impl Strategy<Value = Record> {
        let view = (
            any::<(u64, u32, u32, u32)>(),
            any::<(u64, u64, u64, u64, bool)>(),
        )
            .prop_map(
                |((owner, id, client_id, object), (space, addr, first_page, pages, forked))| {
                    Record::View(ViewRecord {
                        owner,
                        id,
                        client_id,
                        object,
                        space,
                        addr,
                        first_page,
                        pages,
                        forked,
                    })
                },
            );
        prop_oneof![
            any::<(u64, u32, [u32; GPUS], u64)>().prop_map(|(owner, id, gpu_ids, bytes)| {
                Record::Object {
                    owner,
                    id,
                    gpu_ids,
                    bytes,
                }
            }),
            any::<(u64, u64, bool)>().prop_map(|(owner, id, forked)| Record::Space {
                owner,
                id,
                forked
            }),
            view,
            (any::<u64>(), 0..GPUS as u8).prop_map(|(badge, gpu)| Record::Gpu { badge, gpu }),
        ]
    }

    proptest! {
        /// Every record reads back as itself; a slot with one word changed
        /// reads as that record changed, or as free, never as something
        /// `open` then panics on.
        #[test]
        fn records_read_back_and_changed_words_never_panic(
            r in record(), i in 0..SLOT_WORDS, x in any::<u64>()
        ) {
            prop_assert_eq!(decode(&encode(&r)), Some(r));
            let mut b = encode(&r);
            b[i] = x;
            if let Some(d) = decode(&b) {
                prop_assert_eq!(encode(&d), b);
            }
        }

        #[test]
        fn kept_keys_name_what_they_were_made_from(id in any::<u32>(), sp in 0..(1u64 << 56)) {
            prop_assert_eq!(Kept::from_key(Kept::Object(id).key()), Some(Kept::Object(id)));
            prop_assert_eq!(Kept::from_key(Kept::Space(sp).key()), Some(Kept::Space(sp)));
        }
    }

    /// What one generation wrote the next finds; a record put again
    /// replaces its old one; a cleared one is gone.
    #[test]
    fn records_outlive_the_generation_that_wrote_them() {
        let w = words(5);
        let (j, found) = Journal::open(w);
        assert!(found.is_empty());
        let object = |gpu_ids| Record::Object {
            owner: 7,
            id: 0x1001,
            gpu_ids,
            bytes: 1 << 20,
        };
        j.put(&object([0; GPUS])).unwrap();
        j.put(&object([0x5, 0, 0, 0x9, 0, 0, 0, 0x7])).unwrap();
        j.put(&Record::Gpu { badge: 9, gpu: 0 }).unwrap();
        j.put(&Record::Gpu { badge: 10, gpu: 3 }).unwrap();
        let space = Record::Space {
            owner: 7,
            id: 3,
            forked: false,
        };
        j.put(&space).unwrap();
        assert!(j.clear(&space));
        let (_, found) = Journal::open(w);
        let got: Vec<Record> = found.iter().map(|(_, r)| *r).collect();
        let gpus = [
            Record::Gpu { badge: 9, gpu: 0 },
            Record::Gpu { badge: 10, gpu: 3 },
        ];
        let object = object([0x5, 0, 0, 0x9, 0, 0, 0, 0x7]);
        assert_eq!(got, [object, gpus[0], gpus[1]]);
    }
}
