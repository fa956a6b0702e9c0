//! Records that outlive the server that wrote them (issue 14): fixed-size
//! slots in memory a longer-lived process holds (on the host, a memfd
//! `init` makes at boot and hands every generation of the server).
//!
//! Each server says what its records are (the GPU server's VMs and
//! bindings, the pager's objects, spaces and views); this is the part they
//! share: slots, which are free, and which record of this generation owns
//! which slot.
//!
//! **A record is whole or absent.** A slot is [`SLOT_WORDS`] words; word 0
//! says what the slot holds (never [`FREE`] for a record) and is written
//! last (`Release`) when a record is made and first when it is cleared, so
//! a server killed in the middle of either leaves a free slot or a whole
//! record, never half of one. Which bodies are whole records is the
//! server's to say ([`SlotJournal::open`]'s `whole`): a record's unused
//! words are zero, so a torn or foreign slot reads as free.
//!
//! **The next generation trusts nothing in it.** The slots a predecessor
//! left are neither free nor owned until the server restored their record
//! ([`SlotJournal::keep`]) or refused it ([`SlotJournal::discard`]).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Words per record slot.
pub const SLOT_WORDS: usize = 8;
/// Bytes of a record.
pub const RECORD_BYTES: u64 = (SLOT_WORDS * 8) as u64;
/// Word 0 of a free slot.
pub const FREE: u64 = 0;

/// The words of one record.
pub type Body = [u64; SLOT_WORDS];

/// The journal is full (cannot happen within the budgets that size it;
/// refused rather than left out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalFull;

/// Slots over `words`, each owned by the record of a key `K` (what the
/// record belongs to in this generation).
pub struct SlotJournal<K> {
    words: &'static [AtomicU64],
    index: spin::Mutex<Index<K>>,
    /// Set by [`SlotJournal::close`]: writes are dropped.
    closed: AtomicBool,
}

struct Index<K> {
    free: Vec<u32>,
    slots: BTreeMap<K, u32>,
}

impl<K: Ord + Copy> SlotJournal<K> {
    /// The journal over `words` (a whole number of slots is used) and the
    /// records an earlier generation left in it, as `decode` reads them
    /// (`None`: not a whole record), by slot, lowest first. Every other
    /// slot is cleared and free.
    pub fn open_records<R>(
        words: &'static [AtomicU64],
        decode: impl Fn(&Body) -> Option<R>,
    ) -> (Self, Vec<(u32, R)>) {
        let (journal, found) = Self::open(words, |b| decode(b).is_some());
        let records = found
            .iter()
            .filter_map(|(slot, b)| Some((*slot, decode(b)?)))
            .collect();
        (journal, records)
    }

    /// The journal over `words` (a whole number of slots is used) and the
    /// bodies an earlier generation left in it that `whole` accepts, by
    /// slot, lowest first. Every other slot is cleared and free.
    pub fn open(
        words: &'static [AtomicU64],
        whole: impl Fn(&Body) -> bool,
    ) -> (Self, Vec<(u32, Body)>) {
        let slots = (words.len() / SLOT_WORDS) as u32;
        let mut index = Index {
            free: Vec::new(),
            slots: BTreeMap::new(),
        };
        let mut found = Vec::new();
        // Popped from the end: the lowest slots are used first.
        for slot in (0..slots).rev() {
            let body = read(words, slot);
            if body[0] != FREE && whole(&body) {
                found.push((slot, body));
            } else {
                slot_words(words, slot)[0].store(FREE, Ordering::Release);
                index.free.push(slot);
            }
        }
        found.reverse();
        let journal = Self {
            words,
            index: spin::Mutex::new(index),
            closed: AtomicBool::new(false),
        };
        (journal, found)
    }

    /// Writes `body` as `key`'s record (replacing the one it had).
    /// `body[0]` must not be [`FREE`].
    pub fn put(&self, key: K, body: &Body) -> Result<(), JournalFull> {
        debug_assert_ne!(body[0], FREE, "a record's first word says what it is");
        let mut ix = self.index.lock();
        if self.is_closed() {
            return Ok(());
        }
        if let Some(old) = ix.slots.remove(&key) {
            self.free_slot(&mut ix, old);
        }
        let slot = ix.free.pop().ok_or(JournalFull)?;
        let w = slot_words(self.words, slot);
        for (cell, v) in w.iter().zip(body).skip(1) {
            cell.store(*v, Ordering::Relaxed);
        }
        // Last: the record exists only once it is whole.
        w[0].store(body[0], Ordering::Release);
        ix.slots.insert(key, slot);
        Ok(())
    }

    /// Clears `key`'s record; whether it had one.
    pub fn clear(&self, key: K) -> bool {
        let mut ix = self.index.lock();
        if self.is_closed() {
            return false;
        }
        let Some(slot) = ix.slots.remove(&key) else {
            return false;
        };
        self.free_slot(&mut ix, slot);
        true
    }

    /// The restored `key` owns the record a predecessor left in `slot`,
    /// unless restoring it wrote `key` a record of this generation
    /// already: then the predecessor's is freed, not left to leak a slot
    /// (and be found again) at every restart.
    pub fn keep(&self, slot: u32, key: K) {
        let mut ix = self.index.lock();
        if self.is_closed() {
            return;
        }
        match ix.slots.get(&key) {
            Some(&mine) if mine != slot => self.free_slot(&mut ix, slot),
            _ => {
                ix.slots.insert(key, slot);
            }
        }
    }

    /// A record a predecessor left in `slot` that could not be restored
    /// is cleared.
    pub fn discard(&self, slot: u32) {
        let mut ix = self.index.lock();
        if !self.is_closed() {
            self.free_slot(&mut ix, slot);
        }
    }

    /// This generation writes no more: its process is going away while
    /// the next one may already read and write the same words (the
    /// simulation's kill; a dead process writes nothing). Checked under
    /// the index lock, so a write in progress ends whole first.
    pub fn close(&self) {
        let _ix = self.index.lock();
        self.closed.store(true, Ordering::Release);
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Records held now.
    pub fn len(&self) -> usize {
        self.index.lock().slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn free_slot(&self, ix: &mut Index<K>, slot: u32) {
        if (slot as usize) < self.words.len() / SLOT_WORDS {
            slot_words(self.words, slot)[0].store(FREE, Ordering::Release);
            ix.free.push(slot);
        }
    }
}

/// Zeroed journal memory of `slots` slots that is never freed: what
/// tests and the simulation journal into in place of a memfd.
pub fn leaked(slots: usize) -> &'static [AtomicU64] {
    let v: Vec<AtomicU64> = (0..slots * SLOT_WORDS).map(|_| AtomicU64::new(0)).collect();
    alloc::boxed::Box::leak(v.into_boxed_slice())
}

fn slot_words(words: &[AtomicU64], slot: u32) -> &[AtomicU64] {
    let at = slot as usize * SLOT_WORDS;
    &words[at..at + SLOT_WORDS]
}

/// The words of `slot`, word 0 first (`Acquire`: the rest are as written
/// before it).
fn read(words: &[AtomicU64], slot: u32) -> Body {
    let mut v = [0u64; SLOT_WORDS];
    for (x, c) in v.iter_mut().zip(slot_words(words, slot)) {
        *x = c.load(Ordering::Acquire);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::leaked as words;

    fn body(kind: u64, x: u64) -> Body {
        [kind, x, 0, 0, 0, 0, 0, 0]
    }

    /// What one generation put, the next finds; what it cleared, not.
    #[test]
    fn records_outlive_the_generation_that_wrote_them() {
        let w = words(4);
        let (j, found) = SlotJournal::<u32>::open(w, |_| true);
        assert!(found.is_empty());
        j.put(1, &body(7, 10)).unwrap();
        j.put(2, &body(7, 20)).unwrap();
        j.put(1, &body(7, 11)).unwrap();
        assert!(j.clear(2));
        assert!(!j.clear(2));
        let (_, found) = SlotJournal::<u32>::open(w, |_| true);
        let bodies: Vec<Body> = found.iter().map(|(_, b)| *b).collect();
        assert_eq!(bodies, [body(7, 11)]);
    }

    /// A closed generation writes nothing: the next one, which opened
    /// the same words meanwhile, finds its records as it left them.
    #[test]
    fn a_closed_journal_writes_nothing() {
        let w = words(4);
        let (old, _) = SlotJournal::<u32>::open(w, |_| true);
        old.put(1, &body(7, 10)).unwrap();
        old.close();
        let (new, found) = SlotJournal::<u32>::open(w, |_| true);
        assert_eq!(found.len(), 1);
        new.keep(found[0].0, 1);
        old.put(2, &body(7, 20)).unwrap();
        assert!(!old.clear(1), "a closed journal clears nothing");
        old.discard(found[0].0);
        let (_, again) = SlotJournal::<u32>::open(w, |_| true);
        let bodies: Vec<Body> = again.iter().map(|(_, b)| *b).collect();
        assert_eq!(bodies, [body(7, 10)]);
    }

    /// A record the next generation wrote again while restoring it (the
    /// pager's GPU session) is kept once: the predecessor's slot is freed.
    #[test]
    fn a_record_written_again_while_restored_is_kept_once() {
        let w = words(4);
        let (old, _) = SlotJournal::<u32>::open(w, |_| true);
        old.put(1, &body(7, 10)).unwrap();
        for _ in 0..3 {
            let (new, found) = SlotJournal::<u32>::open(w, |_| true);
            assert_eq!(found.len(), 1, "one record, whatever the restarts");
            new.put(1, &body(7, 10)).unwrap();
            new.keep(found[0].0, 1);
            assert_eq!(new.len(), 1);
        }
    }

    /// A body `whole` refuses (torn, or foreign) is a free slot; a full
    /// journal refuses; a slot discarded is used again.
    #[test]
    fn refused_bodies_are_free_and_a_full_journal_refuses() {
        let w = words(2);
        // A torn write: body without its kind word.
        w[SLOT_WORDS + 1].store(42, Ordering::Relaxed);
        w[0].store(9, Ordering::Relaxed);
        let (j, found) = SlotJournal::<u32>::open(w, |b| b[0] == 7);
        assert!(found.is_empty());
        j.put(1, &body(7, 1)).unwrap();
        j.put(2, &body(7, 2)).unwrap();
        assert_eq!(j.put(3, &body(7, 3)), Err(JournalFull));
        let (j2, found) = SlotJournal::<u32>::open(w, |b| b[0] == 7);
        assert_eq!(found.len(), 2);
        j2.keep(found[0].0, 1);
        j2.discard(found[1].0);
        assert_eq!(j2.len(), 1);
        j2.put(4, &body(7, 4)).unwrap();
        assert_eq!(j2.put(5, &body(7, 5)), Err(JournalFull));
    }
}
