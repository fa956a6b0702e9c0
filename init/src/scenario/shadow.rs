//! What every word should hold. The runner keeps, per memory object, the
//! value each word must have after the steps so far (the shadow), updates
//! it as CPU and GPU steps write, and compares every word of the real
//! memory against it: no check is written by hand, and none can be
//! skipped by a scenario that forgets one.

use super::format::Fill;

/// The value `fill` gives word `i` of an allocation (`None`: untouched).
pub fn fill_value(fill: Fill, i: usize) -> Option<u32> {
    match fill {
        Fill::Index => Some(i as u32),
        Fill::Hash => Some((i as u32).wrapping_mul(2_654_435_761) ^ 0x5a5a_5a5a),
        Fill::Zero => Some(0),
        Fill::Byte(b) => Some(u32::from_ne_bytes([b; 4])),
        Fill::Word(w) => Some(w),
        Fill::None => None,
    }
}

/// Words that differ from the shadow: how many, and the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mismatch {
    pub bad: u64,
    /// The first bad word: its index, what was read, what was expected.
    pub first: Option<(usize, u32, u32)>,
}

impl Mismatch {
    pub fn add(&mut self, i: usize, got: u32, want: u32) {
        self.bad += 1;
        if self.first.is_none() {
            self.first = Some((i, got, want));
        }
    }
    pub fn merge(&mut self, o: Mismatch) {
        self.bad += o.bad;
        if self.first.is_none() {
            self.first = o.first;
        }
    }
    pub fn describe(&self, words: usize) -> String {
        match self.first {
            None => format!("{words} words, all as expected"),
            Some((i, got, want)) => format!(
                "{} of {words} words wrong; first: word {i} (byte {:#x}) is {got:#x}, \
                 expected {want:#x}",
                self.bad,
                i * 4
            ),
        }
    }
}

/// Compares the words at `addr` with `expect`, word `i` with `expect[i]`.
///
/// # Safety
/// `[addr, addr + 4 * expect.len())` must be mapped readable.
pub unsafe fn compare(addr: u64, expect: &[u32]) -> Mismatch {
    let mut m = Mismatch::default();
    for (i, want) in expect.iter().enumerate() {
        // SAFETY: in the range the caller vouches for; volatile because the
        // pager and the GPU change this memory behind the compiler's back.
        let got = unsafe { std::ptr::read_volatile((addr as *const u32).add(i)) };
        if got != *want {
            m.add(i, got, *want);
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills() {
        assert_eq!(fill_value(Fill::Index, 7), Some(7));
        assert_eq!(fill_value(Fill::Byte(5), 0), Some(0x0505_0505));
        assert_eq!(fill_value(Fill::None, 0), None);
        assert_ne!(fill_value(Fill::Hash, 1), fill_value(Fill::Hash, 2));
    }

    #[test]
    fn compare_finds_every_wrong_word() {
        let mut mem = vec![0u32; 1024];
        let want: Vec<u32> = (0..1024).collect();
        // SAFETY: `mem` is 1024 readable words.
        let m = unsafe { compare(mem.as_ptr() as u64, &want) };
        assert_eq!(m.bad, 1023, "every word but word 0");
        for (i, w) in mem.iter_mut().enumerate() {
            *w = i as u32;
        }
        mem[700] = 1;
        // SAFETY: as above.
        let m = unsafe { compare(mem.as_ptr() as u64, &want) };
        assert_eq!((m.bad, m.first), (1, Some((700, 1, 700))));
        assert!(m.describe(1024).contains("word 700"));
    }
}
