//! The herd's CPU phase for the floors: N threads read every page of a
//! buffer from staggered starts, as `crate::herd` does on our system, and
//! the whole buffer is checked afterwards.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::herd::Mode;

/// The word `w` of a herd buffer after the GPU phase (the CPU wrote `w`,
/// the GPU added 1 to every word, or to each page's first word).
pub fn herd_word(mode: Mode, w: usize) -> u32 {
    let first = (w as u32).wrapping_add(1);
    match mode {
        Mode::IncAll => first,
        Mode::Touch if w % 1024 == 0 => first,
        Mode::Touch => w as u32,
    }
}

/// The buffer as a herd leaves it: what the floors' "VRAM" holds.
pub fn herd_contents(mode: Mode, bytes: usize) -> Vec<u8> {
    (0..bytes / 4)
        .flat_map(|w| herd_word(mode, w).to_le_bytes())
        .collect()
}

/// Pages of `[base, base + bytes)` with any word that is not `herd_word`.
///
/// # Safety
/// The range must be mapped and readable.
pub unsafe fn bad_pages(base: usize, bytes: usize, mode: Mode) -> u64 {
    let words = base as *const u32;
    (0..bytes / 4096)
        .filter(|pg| {
            (0..1024).any(|i| {
                let w = pg * 1024 + i;
                // SAFETY: inside the range the caller vouches for.
                unsafe { std::ptr::read_volatile(words.add(w)) != herd_word(mode, w) }
            })
        })
        .count() as u64
}

/// A CPU phase in flight.
pub struct Herd {
    started: Instant,
    threads: Vec<JoinHandle<()>>,
    results: mpsc::Receiver<(u64, Instant)>,
    waiting: usize,
    bad: u64,
    last_end: Instant,
}

/// Starts `threads` readers over `[base, base + bytes)`: thread `t` reads
/// each page's first word (and last, in inc-all mode) starting at page
/// `t * pages / threads`.
pub fn start(base: usize, bytes: usize, threads: usize, mode: Mode) -> Herd {
    let pages = bytes / 4096;
    let (tx, results) = mpsc::channel();
    let started = Instant::now();
    let handles = (0..threads)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let words = base as *const u32;
                let mut bad = 0u64;
                for k in 0..pages {
                    let w = (k + t * pages / threads) % pages * 1024;
                    // SAFETY: inside the buffer the caller mapped; volatile
                    // because the floor's pager maps it under us.
                    if unsafe { std::ptr::read_volatile(words.add(w)) } != herd_word(mode, w) {
                        bad += 1;
                    }
                    if mode == Mode::IncAll {
                        let last = w + 1023;
                        // SAFETY: as above.
                        if unsafe { std::ptr::read_volatile(words.add(last)) }
                            != herd_word(mode, last)
                        {
                            bad += 1;
                        }
                    }
                }
                let _ = tx.send((bad, Instant::now()));
            })
        })
        .collect();
    Herd {
        started,
        threads: handles,
        results,
        waiting: threads,
        bad: 0,
        last_end: started,
    }
}

impl Herd {
    /// Waits until `deadline` for every reader: the phase's time (start to
    /// the last reader's end) and the wrong words they read; `Err(self)`
    /// if some reader is still stuck (the caller ends what holds it, then
    /// waits again).
    pub fn finish(mut self, deadline: Instant) -> Result<(Duration, u64), Self> {
        while self.waiting > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.results.recv_timeout(left) {
                Ok((bad, end)) => {
                    self.waiting -= 1;
                    self.bad += bad;
                    self.last_end = self.last_end.max(end);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => return Err(self),
                // A reader died without reporting: count it as wrong.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.bad += self.waiting as u64;
                    self.waiting = 0;
                }
            }
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        Ok((self.last_end - self.started, self.bad))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn herd_words_are_what_the_gpu_leaves() {
        assert_eq!(herd_word(Mode::Touch, 0), 1);
        assert_eq!(herd_word(Mode::Touch, 1), 1);
        assert_eq!(herd_word(Mode::Touch, 1024), 1025);
        assert_eq!(herd_word(Mode::Touch, 1025), 1025);
        assert_eq!(herd_word(Mode::IncAll, 1025), 1026);
        let bytes = herd_contents(Mode::IncAll, 8192);
        assert_eq!(bytes.len(), 8192);
        assert_eq!(&bytes[4096..4100], &1025u32.to_le_bytes());
    }

    #[test]
    fn one_wrong_word_is_one_bad_page_and_the_readers_see_it() {
        let bytes = 16 * 4096;
        for mode in [Mode::Touch, Mode::IncAll] {
            let mut buf: Vec<u32> = (0..bytes / 4).map(|w| herd_word(mode, w)).collect();
            let base = buf.as_ptr() as usize;
            // SAFETY: `buf` is `bytes` long and nobody writes it meanwhile.
            assert_eq!(unsafe { bad_pages(base, bytes, mode) }, 0);
            let (_, wrong) = start(base, bytes, 3, mode)
                .finish(Instant::now() + Duration::from_secs(10))
                .ok()
                .expect("readers of plain memory finish");
            assert_eq!(wrong, 0);
            // A word only the full check reads, then one every reader reads.
            buf[5 * 1024 + 7] ^= 1;
            let base = buf.as_ptr() as usize;
            // SAFETY: as above.
            assert_eq!(unsafe { bad_pages(base, bytes, mode) }, 1);
            buf[9 * 1024] ^= 1;
            // SAFETY: as above.
            assert_eq!(unsafe { bad_pages(base, bytes, mode) }, 2);
            let (_, wrong) = start(base, bytes, 3, mode)
                .finish(Instant::now() + Duration::from_secs(10))
                .ok()
                .expect("readers of plain memory finish");
            assert_eq!(wrong, 3, "three readers each read page 9's first word");
        }
    }
}
