//! Per-range attributes a client sets on its own resources (the GPU's
//! access to a VM range, the preferred location of object pages): a map
//! of disjoint ranges to a value, everything outside them at the default.
//! Equal neighbours merge, and a map holds at most `cap` ranges: a client
//! that would make the server keep more gets [`TooManyRanges`], so the
//! server's memory for them is bounded whatever the client sends.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// A [`RangeMap::set`] would keep more ranges than the map's cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyRanges;

/// Disjoint `[start, end)` ranges of `u64` keys, each with a value other
/// than the default.
#[derive(Debug, Clone)]
pub struct RangeMap<V> {
    ranges: BTreeMap<u64, (u64, V)>,
    default: V,
    cap: usize,
}

impl<V: Copy + Eq> RangeMap<V> {
    /// An empty map: every key at `default`; at most `cap` ranges.
    pub const fn new(default: V, cap: usize) -> Self {
        Self {
            ranges: BTreeMap::new(),
            default,
            cap,
        }
    }

    /// The value at `key`.
    pub fn at(&self, key: u64) -> V {
        match self.ranges.range(..=key).next_back() {
            Some((_, &(end, v))) if key < end => v,
            _ => self.default,
        }
    }

    /// Whether `[start, end)` has one value throughout.
    pub fn uniform(&self, start: u64, end: u64) -> bool {
        let inside = |x: u64| start < x && x < end;
        let around = self.ranges.range(..=start).next_back();
        around.is_none_or(|(_, &(e, _))| e <= start || !inside(e))
            && self.ranges.range(start + 1..end).next().is_none()
    }

    /// The ranges kept now, in order: `(start, end, value)`.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64, V)> + '_ {
        self.ranges.iter().map(|(&s, &(e, v))| (s, e, v))
    }

    /// Ranges kept now.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Sets `[start, end)` to `v`. Past the cap nothing changes.
    pub fn set(&mut self, start: u64, end: u64, v: V) -> Result<(), TooManyRanges> {
        let next = self.with(start, end, v);
        if next.len() > self.cap {
            return Err(TooManyRanges);
        }
        self.ranges = next;
        Ok(())
    }

    /// Sets each key of `[start, end)` to `f` of its value now (one field
    /// of a value, say, leaving the rest as it is). Past the cap nothing
    /// changes.
    pub fn update(
        &mut self,
        start: u64,
        end: u64,
        f: impl Fn(V) -> V,
    ) -> Result<(), TooManyRanges> {
        // The pieces of [start, end) with one value each, then each set.
        let mut cuts: Vec<u64> = self
            .ranges
            .iter()
            .flat_map(|(&s, &(e, _))| [s, e])
            .filter(|&k| start < k && k < end)
            .collect();
        cuts.push(start);
        cuts.push(end);
        cuts.sort_unstable();
        cuts.dedup();
        let mut next = self.clone();
        for w in cuts.windows(2) {
            let v = f(self.at(w[0]));
            next.ranges = next.with(w[0], w[1], v);
        }
        if next.ranges.len() > self.cap {
            return Err(TooManyRanges);
        }
        self.ranges = next.ranges;
        Ok(())
    }

    /// Puts `[start, end)` back at the default; never fails: where that
    /// would split a range past the cap, every range it meets goes back to
    /// the default whole (more than asked, never more kept).
    pub fn clear(&mut self, start: u64, end: u64) {
        let next = self.with(start, end, self.default);
        if next.len() <= self.cap {
            self.ranges = next;
            return;
        }
        let meeting: Vec<u64> = self
            .ranges
            .iter()
            .filter(|(&s, &(e, _))| s < end && start < e)
            .map(|(&s, _)| s)
            .collect();
        for s in meeting {
            self.ranges.remove(&s);
        }
    }

    /// The map with `[start, end)` at `v`.
    fn with(&self, start: u64, end: u64, v: V) -> BTreeMap<u64, (u64, V)> {
        let mut next = self.ranges.clone();
        if start >= end {
            return next;
        }
        // Cut the ranges that straddle either end, then drop what is inside.
        for cut in [start, end] {
            if let Some((&s, &(e, old))) = next.range(..cut).next_back() {
                if cut < e {
                    next.insert(s, (cut, old));
                    next.insert(cut, (e, old));
                }
            }
        }
        let inside: Vec<u64> = next.range(start..end).map(|(&s, _)| s).collect();
        for s in inside {
            next.remove(&s);
        }
        if v != self.default {
            next.insert(start, (end, v));
        }
        merge_neighbours(next)
    }
}

/// Joins adjacent ranges with the same value.
fn merge_neighbours<V: Copy + Eq>(m: BTreeMap<u64, (u64, V)>) -> BTreeMap<u64, (u64, V)> {
    let mut out: BTreeMap<u64, (u64, V)> = BTreeMap::new();
    for (s, (e, v)) in m {
        match out.iter_mut().next_back() {
            Some((_, last)) if last.0 == s && last.1 == v => last.0 = e,
            _ => {
                out.insert(s, (e, v));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_split_merge_and_fall_back_to_the_default() {
        let mut m = RangeMap::new(3u32, 8);
        m.set(0x1000, 0x5000, 1).unwrap();
        assert_eq!(
            (m.at(0), m.at(0x1000), m.at(0x4fff), m.at(0x5000)),
            (3, 1, 1, 3)
        );
        m.set(0x2000, 0x3000, 0).unwrap();
        assert_eq!((m.at(0x1000), m.at(0x2000), m.at(0x3000)), (1, 0, 1));
        assert!(!m.uniform(0x1000, 0x5000) && m.uniform(0x3000, 0x5000));
        m.set(0x2000, 0x3000, 1).unwrap();
        assert_eq!(m.len(), 1, "the three parts merged");
        m.set(0, 0x8000, 3).unwrap();
        assert!(m.is_empty());
    }

    #[test]
    fn past_the_cap_set_is_refused_and_clear_drops_whole_ranges() {
        let mut m = RangeMap::new(0u8, 2);
        m.set(0, 10, 1).unwrap();
        m.set(20, 30, 1).unwrap();
        assert_eq!(m.set(40, 50, 1), Err(TooManyRanges));
        assert_eq!(m.at(45), 0, "nothing changed");
        // A hole in the middle of [0, 10) would make three ranges.
        m.clear(4, 6);
        assert_eq!((m.at(2), m.at(8), m.at(25)), (0, 0, 1));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn update_changes_one_field_across_pieces() {
        let mut m = RangeMap::new((0u8, 0u8), 8);
        m.set(0, 10, (1, 0)).unwrap();
        m.set(10, 20, (2, 0)).unwrap();
        m.update(5, 15, |(a, _)| (a, 7)).unwrap();
        assert_eq!(
            (m.at(0), m.at(5), m.at(12), m.at(17)),
            ((1, 0), (1, 7), (2, 7), (2, 0))
        );
        assert_eq!(m.at(30), (0, 0));
    }

    proptest::proptest! {
        /// Whatever a client sends, the map answers like a plain array
        /// of values and never keeps more than its cap.
        #[test]
        fn a_range_map_is_an_array(ops in proptest::collection::vec(
            (0u64..64, 0u64..64, 0u8..3, proptest::bool::ANY), 0..40)) {
            let mut m = RangeMap::new(0u8, 6);
            let mut model = [0u8; 64];
            for (a, b, v, clear) in ops {
                let (s, e) = (a.min(b), a.max(b));
                if clear {
                    let before = model;
                    m.clear(s, e);
                    // The range is at the default; elsewhere a value stays or
                    // (past the cap) goes back to the default, nothing else.
                    for k in 0..64u64 {
                        let now = m.at(k);
                        if (s..e).contains(&k) {
                            proptest::prop_assert_eq!(now, 0);
                        } else {
                            proptest::prop_assert!(now == before[k as usize] || now == 0);
                        }
                        model[k as usize] = now;
                    }
                } else if m.set(s, e, v).is_ok() {
                    for k in s..e { model[k as usize] = v; }
                }
                proptest::prop_assert!(m.len() <= 6);
                for k in 0..64 { proptest::prop_assert_eq!(m.at(k), model[k as usize]); }
            }
        }
    }
}
