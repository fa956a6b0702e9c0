//! What a restarted GPU server rebuilds its clients' VMs and bindings
//! from (issue 14): one record per VM and per binding, in a memfd that
//! `init` creates at boot and hands every generation of the server
//! (`--journal-fd`).
//!
//! **Why `init` keeps it.** The description must outlive the process that
//! wrote it, and `init` outlives every server. It holds the memfd and
//! never reads it, so it learns nothing a client sent. The pager could
//! keep it too, but VMs and bindings are the GPU server's alone, and a
//! description held by a peer would have to be sent over IPC on every
//! bind and would go with that peer if it died.
//!
//! **A record is whole or absent** (`session::journal`, the slots this
//! journal shares with the pager's): a server killed while it writes or
//! clears one leaves a free slot or a whole record. The server writes a record while it holds its state lock, before it answers
//! the client: a binding the client was told about is in the journal.
//!
//! **The next generation trusts nothing in it.** A record names what a
//! client asked for, and restoring it goes through the same checks the
//! client's request did (`rebuild.rs`): the VM id must be free, the pager
//! must still know the view as the client's, the pages must lie in it and
//! the addresses must be free. A record that fails is cleared.
//!
//! **Budget.** A VM's record comes with the VM (`vms` budget) and each
//! binding's is charged to the client's `bindings` budget; the journal is
//! as large as every session at both limits needs
//! (`GpuBudget::journal_bytes_needed`), so one client cannot fill it for
//! the others.

use std::sync::atomic::AtomicU64;

use session::journal::{Body, SlotJournal};
pub use session::journal::{JournalFull, RECORD_BYTES, SLOT_WORDS};

const KIND_VM: u64 = 0x766d_0001;
const KIND_BINDING: u64 = 0x626e_0002;

/// A binding as the journal keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindingRecord {
    pub view: u32,
    pub gpu_addr: u64,
    pub object: u32,
    pub first_page: u64,
    pub pages: u64,
    pub read_only: bool,
}

/// One record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// Client `owner` holds VM id `vm`.
    Vm { owner: u64, vm: u32 },
    /// A binding in `owner`'s VM `vm`.
    Binding {
        owner: u64,
        vm: u32,
        binding: BindingRecord,
    },
}

/// What a slot belongs to in this generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    Vm(u64, u32),
    /// By the server's binding id (unique for its life).
    Binding(u64),
}

pub struct Journal {
    slots: SlotJournal<Key>,
}

impl Journal {
    /// The journal over `words` (a whole number of slots is used) and the
    /// records an earlier generation left in it, by slot. Those slots are
    /// neither free nor owned until [`Self::keep_vm`],
    /// [`Self::keep_binding`] or [`SlotJournal::discard`] says which.
    pub fn open(words: &'static [AtomicU64]) -> (Self, Vec<(u32, Record)>) {
        let (slots, found) = SlotJournal::open_records(words, decode);
        (Self { slots }, found)
    }

    /// Records that `owner` holds VM `vm`.
    pub fn record_vm(&self, owner: u64, vm: u32) -> Result<(), JournalFull> {
        self.slots
            .put(Key::Vm(owner, vm), &encode(&Record::Vm { owner, vm }))
    }

    /// Records binding `id` of `owner`'s VM `vm`.
    pub fn record_binding(
        &self,
        id: u64,
        owner: u64,
        vm: u32,
        binding: BindingRecord,
    ) -> Result<(), JournalFull> {
        let r = Record::Binding { owner, vm, binding };
        self.slots.put(Key::Binding(id), &encode(&r))
    }

    /// Clears the record of `owner`'s VM `vm`; whether there was one.
    pub fn forget_vm(&self, owner: u64, vm: u32) -> bool {
        self.slots.clear(Key::Vm(owner, vm))
    }

    /// Clears binding `id`'s record; whether there was one.
    pub fn forget_binding(&self, id: u64) -> bool {
        self.slots.clear(Key::Binding(id))
    }

    /// The restored VM `vm` of `owner` owns the record in `slot`.
    pub fn keep_vm(&self, slot: u32, owner: u64, vm: u32) {
        self.slots.keep(slot, Key::Vm(owner, vm));
    }

    /// The restored binding `id` owns the record in `slot`.
    pub fn keep_binding(&self, slot: u32, id: u64) {
        self.slots.keep(slot, Key::Binding(id));
    }
}

/// `discard`, `len` and `is_empty` are the slots'.
impl std::ops::Deref for Journal {
    type Target = SlotJournal<Key>;

    fn deref(&self) -> &SlotJournal<Key> {
        &self.slots
    }
}

fn encode(r: &Record) -> Body {
    match *r {
        Record::Vm { owner, vm } => [KIND_VM, owner, u64::from(vm), 0, 0, 0, 0, 0],
        Record::Binding {
            owner,
            vm,
            binding: b,
        } => [
            KIND_BINDING,
            owner,
            u64::from(vm) | (u64::from(b.view) << 32),
            b.gpu_addr,
            u64::from(b.object) | (u64::from(b.read_only) << 32),
            b.first_page,
            b.pages,
            0,
        ],
    }
}

/// The record in `v`, if it holds a whole one (anything else is free).
fn decode(v: &Body) -> Option<Record> {
    let lo = |x: u64| x as u32;
    // Words a record does not use are zero in every record written.
    match v[0] {
        KIND_VM if v[3..].iter().all(|&x| x == 0) => Some(Record::Vm {
            owner: v[1],
            vm: u32::try_from(v[2]).ok()?,
        }),
        KIND_BINDING if v[4] >> 33 == 0 && v[7] == 0 => Some(Record::Binding {
            owner: v[1],
            vm: lo(v[2]),
            binding: BindingRecord {
                view: (v[2] >> 32) as u32,
                gpu_addr: v[3],
                object: lo(v[4]),
                first_page: v[5],
                pages: v[6],
                read_only: v[4] >> 32 == 1,
            },
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    use session::journal::leaked as words;

    fn binding(view: u32) -> BindingRecord {
        BindingRecord {
            view,
            gpu_addr: 0x7f00_0000_0000,
            object: 0x1_0005,
            first_page: 3,
            pages: 512,
            read_only: view % 2 == 1,
        }
    }

    /// A slot's words: a record as written, one with a word changed, or
    /// anything.
    fn slot() -> impl proptest::strategy::Strategy<Value = [u64; SLOT_WORDS]> {
        use proptest::prelude::*;
        let rec = (
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            any::<u32>(),
        )
            .prop_map(|(owner, vm, view, addr, object)| {
                if view % 2 == 0 {
                    encode(&Record::Vm { owner, vm })
                } else {
                    let binding = BindingRecord {
                        view,
                        gpu_addr: addr,
                        object,
                        first_page: addr >> 20,
                        pages: u64::from(vm),
                        read_only: object % 3 == 0,
                    };
                    encode(&Record::Binding { owner, vm, binding })
                }
            });
        prop_oneof![
            rec.clone(),
            (rec, 0..SLOT_WORDS, any::<u64>()).prop_map(|(mut w, i, v)| {
                w[i] = v;
                w
            }),
            proptest::array::uniform8(any::<u64>()),
        ]
    }

    proptest::proptest! {
        /// Whatever the memfd holds, `open` reads it without panicking,
        /// and each record it finds is exactly the words in its slot (a
        /// slot with anything else in it is free).
        #[test]
        fn any_words_open_into_whole_records_or_free_slots(
            slots in proptest::collection::vec(slot(), 4)
        ) {
            let w = words(4);
            let raw: Vec<u64> = slots.iter().flatten().copied().collect();
            for (cell, v) in w.iter().zip(&raw) {
                cell.store(*v, Ordering::Relaxed);
            }
            let (j, found) = Journal::open(w);
            for (slot, r) in &found {
                let at = *slot as usize * SLOT_WORDS;
                proptest::prop_assert_eq!(&encode(r)[..], &raw[at..at + SLOT_WORDS]);
            }
            // The rest is free: as many records fit as slots were not found.
            for n in 0..4 - found.len() {
                proptest::prop_assert!(j.record_vm(1, n as u32).is_ok());
            }
            proptest::prop_assert_eq!(j.record_vm(2, 0), Err(JournalFull));
        }
    }

    /// What one generation recorded, the next finds, and nothing it forgot.
    #[test]
    fn records_outlive_the_generation_that_wrote_them() {
        let w = words(4);
        let (j, found) = Journal::open(w);
        assert!(found.is_empty());
        j.record_vm(100, 0x10_0001).unwrap();
        j.record_binding(7, 100, 0x10_0001, binding(5)).unwrap();
        j.record_binding(8, 100, 0x10_0001, binding(6)).unwrap();
        j.forget_binding(7);
        let (_, found) = Journal::open(w);
        let records: Vec<Record> = found.iter().map(|(_, r)| *r).collect();
        assert_eq!(
            records,
            [
                Record::Vm {
                    owner: 100,
                    vm: 0x10_0001
                },
                Record::Binding {
                    owner: 100,
                    vm: 0x10_0001,
                    binding: binding(6)
                },
            ]
        );
    }

    /// A record whose first word was never written (the server died in
    /// the middle) is no record; a full journal refuses, and a slot
    /// discarded or forgotten is used again.
    #[test]
    fn half_records_are_free_and_a_full_journal_refuses() {
        let w = words(2);
        // A torn write: body without its kind word.
        w[SLOT_WORDS + 1].store(42, Ordering::Relaxed);
        let (j, found) = Journal::open(w);
        assert!(found.is_empty());
        j.record_vm(1, 1).unwrap();
        j.record_vm(1, 2).unwrap();
        assert_eq!(j.record_vm(1, 3), Err(JournalFull));
        j.forget_vm(1, 1);
        j.record_vm(1, 3).unwrap();
        let (j2, found) = Journal::open(w);
        assert_eq!(found.len(), 2);
        j2.keep_vm(found[0].0, 1, 3);
        j2.discard(found[1].0);
        assert_eq!(j2.len(), 1);
        j2.record_vm(1, 4).unwrap();
        assert_eq!(j2.record_vm(1, 5), Err(JournalFull));
    }
}
