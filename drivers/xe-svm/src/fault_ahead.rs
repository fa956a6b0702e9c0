//! Fault-ahead: while a VM's GPU streams through its memory, the chunks
//! ahead of its faults are moved to VRAM before it reaches them, so the
//! kernel's next faults find their pages there (UVM's prefetcher does this
//! for a streaming access; xe has none). Off unless the server is started
//! with `--fault-ahead N` (`svm --fault-ahead N`): it changes how many
//! faults a kernel takes and when pages move, which a counter-exact test
//! must be able to rely on.
//!
//! Each VM's fault worker (`faults.rs`) owns one [`Ahead`]: `N` threads
//! taking 2 MiB chunk numbers from one queue. A fault on chunk `c` next to
//! a chunk faulted lately (a stream, not a random access; a kernel's
//! threads fault neighbouring chunks in any order) queues the `N` chunks
//! after the highest of the run of chunks faulted lately from `c` up, those
//! not queued or faulted lately, while fewer than four per thread are
//! queued or moving (a budget). A chunk moves the way `Gpu::Prefetch`
//! moves it (`Inner::fault_ahead`): the same rules hold (rule 5: VRAM
//! first; rule 1: pages another migration holds are skipped, never waited
//! for), and pages no binding covers, or the VM may not access, do not
//! move.
//!
//! A fault on a chunk that is queued or moving waits for that move, at
//! most [`WAIT`], and is then resolved as usual (finding its pages in
//! VRAM): without the wait its collect would find the pages held by the
//! move and the device would replay the fault until the move ends. The
//! wait is on our own move, which waits on no page lock and whose pager
//! calls have deadlines, so it cannot close a cycle.
//!
//! Locking: [`State`]'s lock is held only to queue, take or finish a chunk,
//! never across a move; a waiting fault sleeps on the condvar, which every
//! finished move wakes.

use std::collections::{HashSet, VecDeque};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Most chunks a worker moves ahead of its faults (and its threads).
pub const MAX_AHEAD: usize = 8;
/// How long a fault waits for the move of its chunk before it is
/// resolved anyway.
pub const WAIT: Duration = Duration::from_secs(2);
/// Chunks remembered as faulted or queued lately, at most.
const RECENT: usize = 64;
/// How long a chunk counts as faulted or queued lately: a stream's next
/// fault comes within it, and a chunk moved longer ago may have left VRAM
/// since.
const LATELY: Duration = Duration::from_millis(100);
const CHUNK_SHIFT: u32 = 21;
/// Chunks queued or moving at once, per thread: a kernel that faults
/// pairs of chunks all over its space faster than they move cannot grow
/// the queue (and the VRAM it asks for) without bound; past it, no more
/// are queued until some have moved.
const QUEUED_PER_THREAD: u64 = 4;

/// Moves the 2 MiB chunk at (ASID, GPU address) to VRAM ahead of use.
pub type Move = dyn Fn(u32, u64) + Send + Sync;

/// Why a chunk is remembered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    Faulted,
    Queued,
}

#[derive(Default)]
struct State {
    /// Queued or moving now.
    busy: HashSet<u64>,
    /// Faulted or queued lately, and when, oldest first.
    recent: VecDeque<(u64, Seen, Instant)>,
}

impl State {
    /// Remembers `chunk` as `seen` now; a fault outranks a queueing.
    fn remember(&mut self, chunk: u64, seen: Seen) {
        let now = Instant::now();
        while self
            .recent
            .front()
            .is_some_and(|(_, _, t)| now.duration_since(*t) > LATELY)
        {
            self.recent.pop_front();
        }
        let seen = match self.seen(chunk) {
            Some(Seen::Faulted) => Seen::Faulted,
            _ => seen,
        };
        self.recent.retain(|(c, _, _)| *c != chunk);
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back((chunk, seen, now));
    }

    /// How `chunk` was seen lately, if it was.
    fn seen(&self, chunk: u64) -> Option<Seen> {
        self.recent
            .iter()
            .find(|(c, _, t)| *c == chunk && t.elapsed() <= LATELY)
            .map(|(_, s, _)| *s)
    }

    fn faulted(&self, chunk: Option<u64>) -> bool {
        chunk.is_some_and(|c| self.seen(c) == Some(Seen::Faulted))
    }
}

type Shared = Arc<(Mutex<State>, Condvar)>;

fn lock(s: &Mutex<State>) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// One VM's fault-ahead: its queue and the threads that move its chunks.
/// Dropped with its worker: the threads finish the move they are in and
/// exit.
pub struct Ahead {
    depth: u64,
    queue: Sender<u64>,
    state: Shared,
}

impl Ahead {
    /// Starts `depth` (at most [`MAX_AHEAD`]) threads moving chunks of
    /// `asid` with `mover`; `None` for a depth of 0 or when no thread
    /// could be started (faults are then served as without it).
    pub fn start(asid: u32, depth: usize, mover: Arc<Move>) -> Option<Self> {
        let depth = depth.min(MAX_AHEAD);
        if depth == 0 {
            return None;
        }
        let (queue, rx) = channel();
        let rx = Arc::new(Mutex::new(rx));
        let state: Shared = Arc::default();
        for i in 0..depth {
            let (rx, state, mover) = (rx.clone(), state.clone(), mover.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("xe-svm-ahead{asid}.{i}"))
                .spawn(move || serve(asid, &rx, &state, &*mover));
            if let Err(e) = spawned {
                log::warn!("xe-svm: no fault-ahead thread for ASID {asid}: {e}");
                if i == 0 {
                    return None;
                }
                break;
            }
        }
        Some(Self {
            depth: depth as u64,
            queue,
            state,
        })
    }

    /// Waits (at most [`WAIT`]) while the chunk holding `va` is queued
    /// or moving.
    pub fn wait(&self, va: u64) {
        let chunk = va >> CHUNK_SHIFT;
        let deadline = Instant::now() + WAIT;
        let (m, cv) = &*self.state;
        let mut st = lock(m);
        while st.busy.contains(&chunk) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log::debug!("xe-svm: fault-ahead of chunk {chunk:#x} still moving");
                return;
            }
            st = cv
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// A fault at `va` was served: if a chunk next to its chunk was
    /// faulted lately, queues the chunks after the run of chunks faulted
    /// lately from it up, those not queued or faulted lately.
    pub fn faulted(&self, va: u64) {
        let chunk = va >> CHUNK_SHIFT;
        let mut st = lock(&self.state.0);
        st.remember(chunk, Seen::Faulted);
        let streaming = st.faulted(chunk.checked_sub(1)) || st.faulted(chunk.checked_add(1));
        if !streaming {
            return;
        }
        let mut top = chunk;
        while st.faulted(top.checked_add(1)) {
            top += 1;
        }
        for next in (1..=self.depth).filter_map(|k| top.checked_add(k)) {
            if st.busy.len() as u64 >= self.depth * QUEUED_PER_THREAD {
                break;
            }
            if st.seen(next).is_some() || st.busy.contains(&next) {
                continue;
            }
            if next
                .checked_shl(CHUNK_SHIFT)
                .is_none_or(|va| va >> CHUNK_SHIFT != next)
            {
                break;
            }
            if self.queue.send(next).is_err() {
                break;
            }
            log::debug!("xe-svm: fault-ahead: chunk {next:#x} after {chunk:#x}");
            st.busy.insert(next);
            st.remember(next, Seen::Queued);
        }
    }
}

/// One thread of an [`Ahead`]: moves queued chunks until the queue goes.
fn serve(asid: u32, rx: &Mutex<Receiver<u64>>, state: &Shared, mover: &Move) {
    loop {
        let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(chunk) = next else {
            return;
        };
        mover(asid, chunk << CHUNK_SHIFT);
        lock(&state.0).busy.remove(&chunk);
        state.1.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    const MIB2: u64 = 2 << 20;

    /// An `Ahead` whose moves are recorded (and take `slow` each).
    fn recording(depth: usize, slow: Duration) -> (Ahead, Arc<Mutex<Vec<u64>>>) {
        let moved = Arc::new(Mutex::new(Vec::new()));
        let m = moved.clone();
        let mover = move |asid: u32, va: u64| {
            assert_eq!(asid, 7);
            std::thread::sleep(slow);
            m.lock().unwrap().push(va);
        };
        (Ahead::start(7, depth, Arc::new(mover)).unwrap(), moved)
    }

    fn settle(a: &Ahead) {
        settle_from(a, 0);
    }

    fn settle_from(a: &Ahead, first: u64) {
        for c in first..first + 64 {
            a.wait(c * MIB2);
        }
    }

    /// A lone fault moves nothing ahead; the second of a stream moves the
    /// next `depth` chunks, once each.
    #[test]
    fn a_stream_moves_the_chunks_after_it_and_a_lone_fault_none() {
        let (a, moved) = recording(3, Duration::ZERO);
        a.faulted(10 * MIB2 + 4096);
        settle(&a);
        assert!(
            moved.lock().unwrap().is_empty(),
            "a lone fault moved chunks"
        );
        a.faulted(11 * MIB2);
        a.faulted(11 * MIB2 + 8192);
        settle(&a);
        let mut got = moved.lock().unwrap().clone();
        got.sort_unstable();
        assert_eq!(got, vec![12 * MIB2, 13 * MIB2, 14 * MIB2]);
        a.faulted(12 * MIB2);
        settle(&a);
        assert_eq!(moved.lock().unwrap().len(), 4, "only chunk 15 is new");
    }

    /// A kernel's threads fault neighbouring chunks in any order: the
    /// second of two neighbours starts the stream either way, and the
    /// chunks ahead start after the higher one.
    #[test]
    fn neighbours_faulted_in_either_order_start_a_stream() {
        let (a, moved) = recording(2, Duration::ZERO);
        a.faulted(21 * MIB2);
        a.faulted(20 * MIB2);
        settle_from(&a, 20);
        let mut got = moved.lock().unwrap().clone();
        got.sort_unstable();
        assert_eq!(got, vec![22 * MIB2, 23 * MIB2]);
    }

    /// Only faulted chunks extend a run: chunks queued ahead do not, so
    /// each fault queues at most `depth` chunks past the faults.
    #[test]
    fn chunks_queued_ahead_do_not_run_away() {
        let (a, moved) = recording(2, Duration::from_millis(20));
        for c in 0..4 {
            a.faulted(c * MIB2);
        }
        settle(&a);
        let mut got = moved.lock().unwrap().clone();
        got.sort_unstable();
        let want: Vec<u64> = (2..=5).map(|c| c * MIB2).collect();
        assert_eq!(
            got, want,
            "none past the last fault (3) by more than the depth"
        );
    }

    /// A fault on a chunk being moved ahead returns from `wait` only once
    /// the move has ended.
    #[test]
    fn a_fault_waits_for_the_move_of_its_chunk() {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let mover = move |_: u32, _: u64| {
            std::thread::sleep(Duration::from_millis(200));
            d.store(true, Ordering::SeqCst);
        };
        let a = Ahead::start(7, 1, Arc::new(mover)).unwrap();
        a.faulted(0);
        a.faulted(MIB2);
        a.wait(2 * MIB2);
        assert!(
            done.load(Ordering::SeqCst),
            "wait returned before the move ended"
        );
    }

    /// A kernel faulting pairs of chunks far apart, faster than they move,
    /// never has more than the budget queued or moving.
    #[test]
    fn the_queue_is_budgeted() {
        let (a, _moved) = recording(2, Duration::from_millis(50));
        for i in 0..50u64 {
            a.faulted(i * 1000 * MIB2);
            a.faulted((i * 1000 + 1) * MIB2);
            let busy = lock(&a.state.0).busy.len() as u64;
            assert!(busy <= 2 * QUEUED_PER_THREAD, "{busy} queued or moving");
        }
    }

    /// Depth 0 is off; depths past the most are cut to it.
    #[test]
    fn depth_is_bounded() {
        let mover: Arc<Move> = Arc::new(|_, _| {});
        assert!(Ahead::start(1, 0, mover.clone()).is_none());
        let a = Ahead::start(1, 1000, mover).unwrap();
        assert_eq!(a.depth, MAX_AHEAD as u64);
    }

    /// Chunk numbers at the top of the address space neither overflow nor
    /// wrap around to low chunks.
    #[test]
    fn the_top_of_the_address_space_does_not_wrap() {
        let (a, moved) = recording(4, Duration::ZERO);
        let top = !(MIB2 - 1);
        a.faulted(top - MIB2);
        a.faulted(top);
        settle(&a);
        assert!(moved.lock().unwrap().is_empty());
    }
}
