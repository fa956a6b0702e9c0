//! A session's handle table: entries by generation-tagged [`Handle`], at
//! most a budgeted number of them, stored in the server's metadata arena.
//!
//! Growth goes through `try_reserve`, so a full arena or an exhausted
//! metadata quota is [`TableError::OutOfMetadata`], and the entry limit
//! (the client's budget for this kind of entry) is [`TableError::Full`];
//! neither ever panics or aborts.

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec;

use crate::handle::{next_generation, Handle, MAX_SLOTS};

/// Why an entry could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableError {
    /// The session's budget for these entries is used up.
    Full,
    /// The metadata arena (or the session's metadata quota) is exhausted.
    OutOfMetadata,
}

enum Slot<T> {
    /// Free; the next entry here gets `next_generation(generation)`.
    Free {
        generation: u32,
    },
    Used {
        generation: u32,
        value: T,
    },
}

/// Entries by handle, at most `limit` of them.
pub struct HandleTable<T, A: Allocator + Clone> {
    slots: Vec<Slot<T>, A>,
    /// Indices of free slots, reused before the table grows.
    free: Vec<u32, A>,
    len: usize,
    limit: usize,
    /// The handle index of slot 0: tables of one server can own disjoint
    /// index ranges, so their ids never collide (see [`Self::in_range`]).
    base: u32,
}

impl<T, A: Allocator + Clone> HandleTable<T, A> {
    /// An empty table that will hold at most `limit` entries.
    pub fn new_in(limit: usize, alloc: A) -> Self {
        Self::in_range(0, MAX_SLOTS, limit, alloc)
    }

    /// An empty table whose handles use slot indices `first..first + span`
    /// only (clipped to the index bits), at most `limit` entries. Tables of
    /// different sessions given disjoint ranges issue ids that are unique
    /// server-wide, for peers that key their own records by those ids; a
    /// lookup of an index outside the range names nothing.
    pub fn in_range(first: u32, span: u32, limit: usize, alloc: A) -> Self {
        let first = first.min(MAX_SLOTS);
        let span = span.min(MAX_SLOTS - first);
        Self {
            slots: Vec::new_in(alloc.clone()),
            free: Vec::new_in(alloc),
            len: 0,
            limit: limit.min(span as usize),
            base: first,
        }
    }

    /// The slot of handle `h` in this table, if its index is in range.
    fn slot_of(&self, h: Handle) -> Option<usize> {
        h.index().checked_sub(self.base).map(|i| i as usize)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Adds `value`; returns its new handle.
    pub fn insert(&mut self, value: T) -> Result<Handle, TableError> {
        self.insert_with(|_| value)
    }

    /// Adds the value `make` builds from its own new handle (for entries
    /// that carry their id); `make` runs only once room is certain.
    pub fn insert_with(&mut self, make: impl FnOnce(Handle) -> T) -> Result<Handle, TableError> {
        if self.len >= self.limit {
            return Err(TableError::Full);
        }
        // Room in `free` for every slot (this one included) to be removed
        // again, so `remove` never needs to allocate.
        let room = (self.slots.len() + 1).saturating_sub(self.free.len());
        self.free
            .try_reserve(room)
            .map_err(|_| TableError::OutOfMetadata)?;
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots
                    .try_reserve(1)
                    .map_err(|_| TableError::OutOfMetadata)?;
                self.slots.push(Slot::Free { generation: 0 });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        let generation = match slot {
            Slot::Free { generation } => next_generation(*generation),
            Slot::Used { .. } => unreachable!("a free-list index names a used slot"),
        };
        // `index < limit <= span`, so `base + index` stays in the range.
        let handle = Handle::new(self.base + index, generation);
        *slot = Slot::Used {
            generation,
            value: make(handle),
        };
        self.len += 1;
        Ok(handle)
    }

    /// Adds `value` under the handle `h` an earlier life of this table
    /// issued (a restarted server rebuilding what its clients hold, by the
    /// ids they hold). Its slot must be in range and free; the slots
    /// before it that do not exist yet are made free. `Full` past the
    /// limit or for a slot outside the range or in use.
    pub fn insert_at(&mut self, h: Handle, value: T) -> Result<(), TableError> {
        let i = self.slot_of(h).ok_or(TableError::Full)?;
        let valid = (1..=crate::handle::MAX_GENERATION).contains(&h.generation());
        if self.len >= self.limit || i >= self.limit || !valid {
            return Err(TableError::Full);
        }
        let grow = (i + 1).saturating_sub(self.slots.len());
        self.slots
            .try_reserve(grow)
            .map_err(|_| TableError::OutOfMetadata)?;
        // Room in `free` for every slot to be removed again (as `insert`).
        let room = (self.slots.len() + grow).saturating_sub(self.free.len());
        self.free
            .try_reserve(room)
            .map_err(|_| TableError::OutOfMetadata)?;
        while self.slots.len() <= i {
            self.free.push(self.slots.len() as u32);
            self.slots.push(Slot::Free { generation: 0 });
        }
        if !matches!(self.slots[i], Slot::Free { .. }) {
            return Err(TableError::Full);
        }
        self.free.retain(|&f| f as usize != i);
        self.slots[i] = Slot::Used {
            generation: h.generation(),
            value,
        };
        self.len += 1;
        Ok(())
    }

    pub fn get(&self, h: Handle) -> Option<&T> {
        match self.slots.get(self.slot_of(h)?)? {
            Slot::Used { generation, value } if *generation == h.generation() => Some(value),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, h: Handle) -> Option<&mut T> {
        let i = self.slot_of(h)?;
        match self.slots.get_mut(i)? {
            Slot::Used { generation, value } if *generation == h.generation() => Some(value),
            _ => None,
        }
    }

    pub fn contains(&self, h: Handle) -> bool {
        self.get(h).is_some()
    }

    /// Removes the entry `h` names; its slot's next entry gets a new
    /// generation, so `h` names nothing from now on.
    pub fn remove(&mut self, h: Handle) -> Option<T> {
        let i = self.slot_of(h)?;
        let slot = self.slots.get_mut(i)?;
        let generation = match slot {
            Slot::Used { generation, .. } if *generation == h.generation() => *generation,
            _ => return None,
        };
        let Slot::Used { value, .. } = core::mem::replace(slot, Slot::Free { generation }) else {
            return None;
        };
        // Capacity was reserved by `insert`: this push never allocates.
        self.free.push(i as u32);
        self.len -= 1;
        Some(value)
    }

    /// Every entry with its handle.
    pub fn iter(&self) -> impl Iterator<Item = (Handle, &T)> {
        let base = self.base;
        self.slots
            .iter()
            .enumerate()
            .filter_map(move |(i, s)| match s {
                Slot::Used { generation, value } => {
                    Some((Handle::new(base + i as u32, *generation), value))
                }
                Slot::Free { .. } => None,
            })
    }

    /// The handle of the first entry `pred` accepts.
    pub fn find(&self, mut pred: impl FnMut(&T) -> bool) -> Option<Handle> {
        self.iter().find(|(_, v)| pred(v)).map(|(h, _)| h)
    }

    /// Removes every entry (a session's end), calling `f` on each.
    pub fn drain(&mut self, mut f: impl FnMut(Handle, T)) {
        let handles: alloc::vec::Vec<Handle> = self.iter().map(|(h, _)| h).collect();
        for h in handles {
            if let Some(v) = self.remove(h) {
                f(h, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rebuilt table takes back the ids an earlier life issued; the
    /// slots around them are free for new entries, and a taken, out of
    /// range or never-issued id is refused.
    #[test]
    fn insert_at_takes_back_an_earlier_lifes_ids() {
        let mut t = HandleTable::in_range(1, 16, 8, allocator_api2::alloc::Global);
        let h = Handle::new(4, 7);
        assert_eq!(t.insert_at(h, "a"), Ok(()));
        assert_eq!(t.get(h), Some(&"a"));
        assert_eq!(t.insert_at(h, "b"), Err(TableError::Full), "taken");
        assert_eq!(
            t.insert_at(Handle::new(0, 1), "c"),
            Err(TableError::Full),
            "below the range"
        );
        assert_eq!(
            t.insert_at(Handle::new(12, 1), "c"),
            Err(TableError::Full),
            "past the limit"
        );
        assert_eq!(
            t.insert_at(Handle::from_raw(5), "c"),
            Err(TableError::Full),
            "generation 0"
        );
        let others: Vec<Handle> = (0..7).map(|_| t.insert("n").unwrap()).collect();
        assert!(others.iter().all(|o| o.index() != 4 && o.index() >= 1));
        assert_eq!(t.insert("full"), Err(TableError::Full));
        assert_eq!(t.remove(h), Some("a"));
        assert_eq!(t.get(h), None);
        let again = t.insert("d").unwrap();
        assert_eq!((again.index(), again.generation()), (4, 8));
    }
    use crate::arena::{Arena, Meta};
    use crate::budget::Quota;
    use alloc::sync::Arc;
    use allocator_api2::alloc::Global;
    use proptest::prelude::*;

    #[test]
    fn stale_and_guessed_handles_name_nothing() {
        let mut t: HandleTable<&str, Global> = HandleTable::new_in(4, Global);
        let a = t.insert("a").unwrap();
        assert_eq!(t.get(a), Some(&"a"));
        assert_eq!(t.remove(a), Some("a"));
        let b = t.insert("b").unwrap();
        assert_eq!(a.index(), b.index(), "the slot is reused");
        assert_eq!(t.get(a), None, "a stale handle does not name the new entry");
        assert_eq!(t.remove(a), None);
        assert_eq!(t.get(Handle::from_raw(0)), None, "id 0 is never valid");
        assert_eq!(
            t.get(Handle::from_raw(b.raw() ^ (1 << 20))),
            None,
            "a guessed generation"
        );
        assert_eq!(
            t.get(Handle::from_raw(b.raw() + 1)),
            None,
            "a guessed index"
        );
    }

    #[test]
    fn the_limit_is_the_budget() {
        let mut t: HandleTable<u32, Global> = HandleTable::new_in(2, Global);
        let a = t.insert(1).unwrap();
        t.insert(2).unwrap();
        assert_eq!(t.insert(3), Err(TableError::Full));
        t.remove(a);
        assert!(
            t.insert(3).is_ok(),
            "a removed entry frees its place in the budget"
        );
    }

    #[test]
    fn tables_in_disjoint_ranges_never_share_an_id() {
        let mut a: HandleTable<u32, Global> = HandleTable::in_range(0, 16, 16, Global);
        let mut b: HandleTable<u32, Global> = HandleTable::in_range(16, 16, 100, Global);
        assert_eq!(b.limit(), 16, "the limit is clipped to the range");
        let ha = a.insert(1).unwrap();
        let hb = b.insert(2).unwrap();
        assert_ne!(ha, hb);
        assert_eq!(hb.index(), 16);
        assert_eq!(a.get(hb), None, "another range's id names nothing");
        assert_eq!(b.get(ha), None);
        assert_eq!(b.remove(ha), None);
        assert_eq!(
            b.iter().map(|(h, _)| h).collect::<alloc::vec::Vec<_>>(),
            [hb]
        );
        assert_eq!(b.remove(hb), Some(2));
        let hc = b.insert_with(|h| h.raw()).unwrap();
        assert_eq!(b.get(hc), Some(&hc.raw()), "an entry can carry its own id");
        let full: HandleTable<u32, Global> = HandleTable::in_range(MAX_SLOTS - 2, 100, 100, Global);
        assert_eq!(full.limit(), 2, "the range stops at the index bits");
    }

    #[test]
    fn generations_wrap_without_issuing_zero() {
        let mut t: HandleTable<u32, Global> = HandleTable::new_in(1, Global);
        for _ in 0..(crate::handle::MAX_GENERATION * 2 + 3) {
            let h = t.insert(7).unwrap();
            assert_ne!(h.generation(), 0);
            assert_ne!(h.raw(), 0);
            t.remove(h).unwrap();
        }
    }

    #[test]
    fn an_exhausted_arena_is_out_of_metadata() {
        let arena = Arena::new(8 << 10).unwrap();
        let meta = Meta::new(arena, Arc::new(Quota::new(4 << 10)));
        let mut t: HandleTable<[u64; 16], Meta> = HandleTable::new_in(1 << 20, meta);
        let mut n = 0;
        let err = loop {
            match t.insert([0; 16]) {
                Ok(_) => n += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(err, TableError::OutOfMetadata);
        assert!(n > 0);
        t.drain(|_, _| {});
        assert!(t.is_empty());
    }

    proptest! {
        /// Any sequence of inserts and removes: live handles name their
        /// values, removed ones name nothing, the count never passes the limit.
        #[test]
        fn handles_stay_exact(ops in proptest::collection::vec((any::<bool>(), 0usize..8), 1..200)) {
            let mut t: HandleTable<u32, Global> = HandleTable::new_in(5, Global);
            let mut live: alloc::vec::Vec<(Handle, u32)> = alloc::vec::Vec::new();
            let mut dead: alloc::vec::Vec<Handle> = alloc::vec::Vec::new();
            for (n, (insert, pick)) in ops.into_iter().enumerate() {
                if insert {
                    match t.insert(n as u32) {
                        Ok(h) => live.push((h, n as u32)),
                        Err(e) => {
                            prop_assert_eq!(e, TableError::Full);
                            prop_assert_eq!(live.len(), 5);
                        }
                    }
                } else if !live.is_empty() {
                    let (h, v) = live.remove(pick % live.len());
                    prop_assert_eq!(t.remove(h), Some(v));
                    dead.push(h);
                }
                for (h, v) in &live {
                    prop_assert_eq!(t.get(*h), Some(v));
                }
                for h in &dead {
                    prop_assert!(t.get(*h).is_none());
                }
                prop_assert_eq!(t.len(), live.len());
            }
        }
    }
}
