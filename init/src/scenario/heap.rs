//! The malloc-like heap of a scenario: allocations carved out of one
//! memory object, with a 16-byte header before each (as glibc's chunks
//! have), so neighbours share pages and addresses are not page aligned; a
//! freed block is handed out again first-fit, which is what makes "free
//! VRAM-resident memory, malloc it again, touch it" happen.

/// Bytes before each allocation (the allocator's own bookkeeping in a real
/// malloc; here a gap no one writes).
pub const HEADER: u64 = 16;

/// Free and used ranges of a heap of `size` bytes, by offset.
#[derive(Debug, Clone)]
pub struct Heap {
    size: u64,
    /// Free blocks (offset, length), sorted by offset, never adjacent.
    free: Vec<(u64, u64)>,
    /// Used blocks: block start, block length, the user offset.
    used: Vec<(u64, u64, u64)>,
}

impl Heap {
    pub fn new(size: u64) -> Self {
        Self {
            size,
            free: vec![(0, size)],
            used: Vec::new(),
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Offset of `len` bytes aligned to `align` (a power of two, at least
    /// 16), first fit; `None` when no free block holds it.
    pub fn alloc(&mut self, len: u64, align: u64) -> Option<u64> {
        if len == 0 || !align.is_power_of_two() {
            return None;
        }
        let align = align.max(HEADER);
        for i in 0..self.free.len() {
            let (start, flen) = self.free[i];
            let user = (start.checked_add(HEADER)?).checked_next_multiple_of(align)?;
            let end = user.checked_add(len)?.checked_next_multiple_of(HEADER)?;
            if end > start + flen {
                continue;
            }
            self.free.remove(i);
            if end < start + flen {
                self.free.insert(i, (end, start + flen - end));
            }
            self.used.push((start, end - start, user));
            return Some(user);
        }
        None
    }

    /// Gives the block at user offset `user` back; `false` if no block
    /// starts there (a double free).
    /// Whether `user` is a block handed out and not freed.
    pub fn is_live(&self, user: u64) -> bool {
        self.used.iter().any(|u| u.2 == user)
    }

    pub fn free(&mut self, user: u64) -> bool {
        let Some(i) = self.used.iter().position(|u| u.2 == user) else {
            return false;
        };
        let (start, len, _) = self.used.swap_remove(i);
        let at = self.free.partition_point(|f| f.0 < start);
        self.free.insert(at, (start, len));
        // Merge with the neighbours.
        if at + 1 < self.free.len() && self.free[at].0 + self.free[at].1 == self.free[at + 1].0 {
            self.free[at].1 += self.free[at + 1].1;
            self.free.remove(at + 1);
        }
        if at > 0 && self.free[at - 1].0 + self.free[at - 1].1 == self.free[at].0 {
            self.free[at - 1].1 += self.free[at].1;
            self.free.remove(at);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_share_pages_and_are_unaligned() {
        let mut h = Heap::new(1 << 20);
        let a = h.alloc(100, 16).unwrap();
        let b = h.alloc(100, 16).unwrap();
        assert_eq!(a, 16);
        assert!(
            b > a + 100 && b / 4096 == a / 4096,
            "neighbours share a page"
        );
        assert_ne!(b % 4096, 0);
        let c = h.alloc(4096, 4096).unwrap();
        assert_eq!(c % 4096, 0);
    }

    #[test]
    fn a_freed_block_is_handed_out_again() {
        let mut h = Heap::new(16 << 20);
        let a = h.alloc(3 << 20, 16).unwrap();
        let _b = h.alloc(1 << 20, 16).unwrap();
        assert!(h.free(a));
        assert!(!h.free(a), "double free");
        assert_eq!(h.alloc(3 << 20, 16), Some(a));
    }

    #[test]
    fn freeing_merges_and_exhaustion_is_none() {
        let mut h = Heap::new(64 << 10);
        let v: Vec<u64> = (0..4)
            .map(|_| h.alloc((16 << 10) - 32, 16).unwrap())
            .collect();
        assert_eq!(h.alloc(4096, 16), None);
        for x in v {
            assert!(h.free(x));
        }
        assert_eq!(h.free, vec![(0, 64 << 10)]);
        assert!(h.alloc(60 << 10, 16).is_some());
        assert_eq!(h.alloc(0, 16), None);
        assert_eq!(h.alloc(16, 3), None);
    }
}
