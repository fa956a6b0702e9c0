//! Anti-thrashing (issue 16 item 6), as UVM's thrashing throttle and
//! amdgpu's retry filter do it: a 2 MiB region whose pages a CPU fault
//! moved back from VRAM `threshold` times within `window` is *held* for
//! `hold`: GPU faults there map its pages where they are, in system
//! memory, over the bus (`Collected.remote`, as `PreferSystem` does)
//! instead of migrating them, so the CPU finds them in RAM. When the hold
//! ends, migration resumes and the count starts again.
//!
//! Only CPU faults that moved pages back count: eviction, `Pager::Prefetch`
//! and advice are explicit and never hold a region. Every path that maps a
//! held page maps it where it is, under its page lock; what sharing it
//! means for racing plain updates is below.
//!
//! Metadata: at most [`TRACKED`] regions per object (the least recently
//! returned one is forgotten first), so a client's objects bound it.
//!
//! **Opt-in** (the pager's `--thrash on`). Migration makes a page the
//! GPU's or the CPU's at a time, so even a program whose GPU and CPU
//! update the same words without atomics loses nothing: each access runs
//! where the page is, whole. A held region is shared over the bus instead,
//! as on any coherent SVM system (UVM's remote mapping included): such
//! racing plain updates interleave word by word and can lose increments.
//! `init/tests/views.rs`'s fork race (GPU plain increments against a
//! child's CPU atomics) lost two words with the hold on by default, so the
//! hold is a choice a program makes knowing its accesses are atomic or
//! apart.

use ipc_protocol::types::PageMask;

use super::object::Object;
use super::runtime::Runtime;
use super::Core;
use crate::migrate::Chunk;
use crate::sync::lock;

/// Pages per region tracked (2 MiB).
const REGION_PAGES: usize = 512;
/// Regions tracked per object.
pub const TRACKED: usize = 16;

/// When a region counts as thrashing, and how long it is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrashPolicy {
    pub window_us: u64,
    /// Returns to RAM within the window that start a hold.
    pub threshold: u16,
    pub hold_us: u64,
}

impl Default for ThrashPolicy {
    fn default() -> Self {
        Self {
            window_us: 500_000,
            threshold: 8,
            hold_us: 500_000,
        }
    }
}

impl ThrashPolicy {
    /// `off`, or `WINDOW_MS,THRESHOLD,HOLD_MS` (the pager's `--thrash`).
    pub fn parse(s: &str) -> Result<Option<Self>, String> {
        match s {
            "off" => return Ok(None),
            "on" => return Ok(Some(Self::default())),
            _ => {}
        }
        let n: Vec<u64> = s
            .split(',')
            .map(|x| x.trim().parse::<u64>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{s:?}: {e}"))?;
        let ms = |v: u64| v.checked_mul(1000).ok_or(format!("{v} ms: too long"));
        match n[..] {
            [w, t, h] if t >= 1 => Ok(Some(Self {
                window_us: ms(w)?,
                threshold: u16::try_from(t).map_err(|_| format!("threshold {t}: too large"))?,
                hold_us: ms(h)?,
            })),
            _ => Err(format!("{s:?}: `off` or WINDOW_MS,THRESHOLD,HOLD_MS")),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Region {
    index: usize,
    window_start: u64,
    returns: u16,
    held_until: u64,
    last: u64,
}

/// An object's regions that came back from VRAM lately.
#[derive(Debug, Default)]
pub struct ThrashLog {
    regions: Vec<Region>,
}

impl ThrashLog {
    /// A CPU fault moved pages of region `index` back at `now`; returns
    /// whether that starts a hold.
    fn returned(&mut self, index: usize, now: u64, p: &ThrashPolicy) -> bool {
        let r = match self.regions.iter().position(|r| r.index == index) {
            Some(i) => &mut self.regions[i],
            None => {
                if self.regions.len() >= TRACKED {
                    let oldest = (0..self.regions.len()).min_by_key(|i| self.regions[*i].last);
                    self.regions.swap_remove(oldest.unwrap_or(0));
                }
                self.regions.push(Region {
                    index,
                    window_start: now,
                    returns: 0,
                    held_until: 0,
                    last: now,
                });
                self.regions.last_mut().expect("just pushed")
            }
        };
        r.last = now;
        if now.saturating_sub(r.window_start) > p.window_us || r.held_until != 0 {
            // A new window (a hold that ended starts one too).
            if now >= r.held_until {
                *r = Region {
                    window_start: now,
                    returns: 0,
                    held_until: 0,
                    ..*r
                };
            }
        }
        r.returns = r.returns.saturating_add(1);
        if r.held_until == 0 && r.returns >= p.threshold {
            r.held_until = now.saturating_add(p.hold_us);
            return true;
        }
        false
    }

    /// Whether region `index` is held at `now`.
    fn held(&self, index: usize, now: u64) -> bool {
        self.regions
            .iter()
            .any(|r| r.index == index && now < r.held_until)
    }
}

impl<R: Runtime> Core<R> {
    /// A CPU fault moved pages around `page` of `o` back from VRAM.
    pub fn note_cpu_return(&self, o: &Object<R>, page: usize) {
        let Some(p) = self.cfg.thrash else { return };
        let now = self.rt.now_us();
        if lock(&o.thrash).returned(page / REGION_PAGES, now, &p) {
            log::info!(
                "pager: object {:#x}: pages {}.. ping-pong between CPU and GPU; GPU faults \
                 map them in system memory for {} ms",
                o.id.raw(),
                page / REGION_PAGES * REGION_PAGES,
                p.hold_us / 1000
            );
        }
    }

    /// The pages of `chunk` (relative to it) in a held region.
    pub fn held_pages(&self, o: &Object<R>, chunk: Chunk) -> PageMask {
        let mut mask = PageMask::EMPTY;
        if self.cfg.thrash.is_none() {
            return mask;
        }
        let now = self.rt.now_us();
        let log = lock(&o.thrash);
        for (i, p) in chunk.pages() {
            if log.held(p / REGION_PAGES, now) {
                mask.set(i);
            }
        }
        mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: ThrashPolicy = ThrashPolicy {
        window_us: 100,
        threshold: 3,
        hold_us: 50,
    };

    #[test]
    fn a_region_is_held_after_threshold_returns_within_the_window() {
        let mut log = ThrashLog::default();
        assert!(!log.returned(0, 0, &P));
        assert!(!log.returned(0, 10, &P));
        assert!(!log.held(0, 11));
        assert!(log.returned(0, 20, &P), "the third return holds it");
        assert!(log.held(0, 21) && log.held(0, 69) && !log.held(1, 21));
        assert!(!log.held(0, 70), "the hold ends");
        // A new window after the hold: three more returns to hold again.
        assert!(!log.returned(0, 80, &P));
        assert!(!log.returned(0, 81, &P));
        assert!(log.returned(0, 82, &P));
    }

    #[test]
    fn returns_spread_past_the_window_never_hold() {
        let mut log = ThrashLog::default();
        for t in 0..20 {
            assert!(!log.returned(0, t * 60, &P), "return {t}");
        }
    }

    #[test]
    fn the_flag_parses_or_says_why_not() {
        assert_eq!(ThrashPolicy::parse("off"), Ok(None));
        assert_eq!(ThrashPolicy::parse("on"), Ok(Some(ThrashPolicy::default())));
        let p = ThrashPolicy::parse("100,3,50").unwrap().unwrap();
        assert_eq!((p.window_us, p.threshold, p.hold_us), (100_000, 3, 50_000));
        for bad in [
            "",
            "1,2",
            "1,0,1",
            "1,70000,1",
            "x,1,1",
            "18446744073709551615,1,1",
        ] {
            assert!(ThrashPolicy::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_log_keeps_a_bounded_number_of_regions() {
        let mut log = ThrashLog::default();
        for r in 0..100 {
            log.returned(r, r as u64, &P);
        }
        assert_eq!(log.regions.len(), TRACKED);
    }
}
