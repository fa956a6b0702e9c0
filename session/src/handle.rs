//! Handles: the ids a client holds, tagged with a generation.
//!
//! A handle is a slot index in one session's table plus the generation the
//! slot had when the entry was made (as Hubris tags task ids). Reusing a
//! slot bumps its generation, so an id kept after its entry went (stale) or
//! made up by a client (guessed) names nothing: the table answers `None`
//! and the server answers `NoSuch*`. Tables are per session, so no id of
//! one client can ever name another client's entry.
//!
//! Layout of the 32-bit id: bits 0..20 the slot index, bits 20..32 the
//! generation (1 to 4095; 0 is never issued, so id 0 is never valid).

/// Bits of the slot index.
pub const INDEX_BITS: u32 = 20;
/// Most slots one table can have.
pub const MAX_SLOTS: u32 = 1 << INDEX_BITS;
const INDEX_MASK: u32 = MAX_SLOTS - 1;
/// Largest generation; the next one after it is 1 again.
pub const MAX_GENERATION: u32 = (1 << (32 - INDEX_BITS)) - 1;

/// A generation-tagged id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle(u32);

impl Handle {
    pub(crate) fn new(index: u32, generation: u32) -> Self {
        debug_assert!(index < MAX_SLOTS && (1..=MAX_GENERATION).contains(&generation));
        Self((generation << INDEX_BITS) | (index & INDEX_MASK))
    }

    /// The handle a client sent, as the wire carries it.
    pub const fn from_raw(raw: u32) -> Self {
        Self(raw)
    }

    /// The id to put on the wire.
    pub const fn raw(self) -> u32 {
        self.0
    }

    pub fn index(self) -> u32 {
        self.0 & INDEX_MASK
    }

    pub fn generation(self) -> u32 {
        self.0 >> INDEX_BITS
    }
}

/// The generation after `g` (1..=MAX_GENERATION, wrapping past 0).
pub(crate) fn next_generation(g: u32) -> u32 {
    if g >= MAX_GENERATION {
        1
    } else {
        g + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_wrap() {
        let h = Handle::new(5, 3);
        assert_eq!(h.raw(), (3 << 20) | 5);
        assert_eq!((h.index(), h.generation()), (5, 3));
        assert_eq!(Handle::from_raw(h.raw()), h);
        assert_eq!(
            next_generation(MAX_GENERATION),
            1,
            "generation 0 is never issued"
        );
        assert_eq!(next_generation(1), 2);
    }
}
