//! The eviction loop: equal pressure on both worlds (DESIGN.md rule 7).
//!
//! When free VRAM falls below the low watermark, or a reservation waits,
//! the loop runs rounds. Each round asks the GPU server's shrinker to evict
//! `step` bytes of buffer objects and the pager to evict `step` bytes of SVM
//! pages: the same amount from each world, whatever each holds. It stops
//! when free VRAM reaches the high watermark (plus what reservations wait
//! for) or when a whole round freed nothing (everything left is busy or
//! locked; the waiting reservations time out with a typed error).
//!
//! Neither world's locks are visible here: the shrinker uses trylocks and
//! evicts only idle objects; the pager moves pages under rule 1 and frees
//! blocks under rule 6. A dead or slow peer costs a timeout and a logged,
//! typed error, never a hang: calls carry timeouts and the loop goes on.

use std::sync::Arc;
use std::time::Duration;

use ipc_protocol::client::{CallError, Client};
use ipc_protocol::interfaces::gpu_shrink::{GpuShrink, Shrink, Usage as ShrinkUsage};
use ipc_protocol::interfaces::pager_reclaim::{Evict, PagerReclaim, Usage as ReclaimUsage};
use ipc_protocol::types::GpuId;

use crate::broker::Broker;

/// A peer did not answer or answered with an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerError(pub String);

impl<E: core::fmt::Debug> From<CallError<E>> for PeerError {
    fn from(e: CallError<E>) -> Self {
        PeerError(format!("{e:?}"))
    }
}

/// VRAM as the GPU server sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VramFigures {
    pub total: u64,
    pub bo: u64,
    pub svm: u64,
}

/// The two worlds the loop presses on. The IPC implementation talks to
/// the GPU server and the pager; tests drive the loop with fakes.
pub trait Worlds: Send + Sync {
    /// The shrinker: evict up to `bytes` of idle buffer objects.
    fn shrink_bos(&self, bytes: u64) -> Result<u64, PeerError>;
    /// Page reclaim: evict up to `bytes` of SVM pages to system memory.
    fn evict_svm(&self, bytes: u64) -> Result<u64, PeerError>;
    fn vram(&self) -> Result<VramFigures, PeerError>;
    /// SVM pages in system memory.
    fn svm_sram(&self) -> Result<u64, PeerError>;
}

pub struct IpcWorlds {
    pub gpu: Client<GpuShrink>,
    pub pager: Client<PagerReclaim>,
    /// The GPU whose SVM pages `Evict` names.
    pub device: GpuId,
}

impl IpcWorlds {
    /// Calls to either peer give up after `timeout`.
    pub fn new(gpu: Client<GpuShrink>, pager: Client<PagerReclaim>, timeout: Duration) -> Self {
        Self {
            gpu: gpu.with_timeout(timeout),
            pager: pager.with_timeout(timeout),
            device: GpuId::ZERO,
        }
    }

    /// The broker of GPU `device`'s VRAM (several GPUs: one mm-server per
    /// device, each evicting its own GPU's pages).
    pub fn for_device(self, device: GpuId) -> Self {
        Self { device, ..self }
    }
}

impl Worlds for IpcWorlds {
    fn shrink_bos(&self, bytes: u64) -> Result<u64, PeerError> {
        Ok(self.gpu.call(Shrink { bytes })?.bytes)
    }
    fn evict_svm(&self, bytes: u64) -> Result<u64, PeerError> {
        let gpu = self.device;
        Ok(self.pager.call(Evict { gpu, bytes })?.bytes)
    }
    fn vram(&self) -> Result<VramFigures, PeerError> {
        let u = self.gpu.call(ShrinkUsage {})?;
        Ok(VramFigures {
            total: u.total,
            bo: u.bo_bytes,
            svm: u.svm_bytes,
        })
    }
    fn svm_sram(&self) -> Result<u64, PeerError> {
        Ok(self.pager.call(ReclaimUsage {})?.sram_bytes)
    }
}

/// Smallest amount asked of each world per round.
const MIN_STEP: u64 = 2 << 20;
/// Rounds per pass at most, so a pass always ends.
const MAX_ROUNDS: u32 = 256;

/// Refreshes the broker's figures from the GPU server; false if it failed.
fn refresh(broker: &Broker, worlds: &dyn Worlds) -> bool {
    match worlds.vram() {
        Ok(v) => {
            if v.total > 0 {
                broker.set_vram_total(v.total);
            }
            broker.refresh(v.bo, v.svm);
            true
        }
        Err(e) => {
            log::warn!("mm-server: GPU server usage: {e:?}");
            false
        }
    }
}

/// One pass: rounds of equal requests until the target is met or a round
/// frees nothing. Returns the bytes freed from (BOs, SVM).
pub fn run_pass(broker: &Broker, worlds: &dyn Worlds) -> (u64, u64) {
    let (mut total_bo, mut total_svm) = (0u64, 0u64);
    if !refresh(broker, worlds) {
        return (0, 0);
    }
    for _ in 0..MAX_ROUNDS {
        let (free, target) = {
            let u = broker.lock();
            (broker.free(&u), broker.target_free(&u))
        };
        if free >= target {
            break;
        }
        // Half the deficit from each world, the same from both.
        let step = ((target - free).div_ceil(2)).max(MIN_STEP);
        let bo = worlds.shrink_bos(step).unwrap_or_else(|e| {
            log::warn!("mm-server: shrinker: {e:?}");
            0
        });
        let svm = worlds.evict_svm(step).unwrap_or_else(|e| {
            log::warn!("mm-server: page reclaim: {e:?}");
            0
        });
        broker.account_round(bo, svm);
        // Peers' figures: saturating, a wild answer is never a panic.
        total_bo = total_bo.saturating_add(bo);
        total_svm = total_svm.saturating_add(svm);
        log::debug!("mm-server: round asked {step} of each world, got BO {bo}, SVM {svm}");
        if !refresh(broker, worlds) || bo.saturating_add(svm) == 0 {
            break;
        }
    }
    (total_bo, total_svm)
}

/// The loop thread: sleeps until kicked (or a periodic check finds VRAM
/// below the low watermark), then runs a pass.
pub fn run(broker: Arc<Broker>, worlds: Arc<dyn Worlds>) {
    // Learn the usable VRAM first: until then a reservation could be
    // granted against room the GPU server does not have.
    for _ in 0..50 {
        if refresh(&broker, &*worlds) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    loop {
        {
            let mut u = broker.lock();
            while !u.kicked {
                let (g, t) = broker
                    .kick
                    .wait_timeout(u, Duration::from_millis(500))
                    .unwrap_or_else(|e| e.into_inner());
                u = g;
                if t.timed_out() && broker.needs_eviction(&u) {
                    break;
                }
            }
            u.kicked = false;
        }
        let (bo, svm) = run_pass(&broker, &*worlds);
        if let Ok(sram) = worlds.svm_sram() {
            broker.set_svm_sram(sram);
        }
        if bo.saturating_add(svm) == 0 {
            // Nothing could move: let the holders make progress before the
            // next pass instead of spinning.
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipc_protocol::types::World;
    use std::sync::Mutex;

    /// Two worlds holding VRAM; eviction gives back what is asked, down to
    /// what each has evictable.
    struct Fake {
        state: Mutex<(u64, u64, u64, u64)>, // bo, svm, bo pinned, svm pinned
        total: u64,
        asks: Mutex<Vec<(u64, u64)>>,
    }

    impl Fake {
        fn new(total: u64, bo: u64, svm: u64, bo_pinned: u64, svm_pinned: u64) -> Self {
            Self {
                state: Mutex::new((bo, svm, bo_pinned, svm_pinned)),
                total,
                asks: Mutex::new(Vec::new()),
            }
        }
    }

    impl Worlds for Fake {
        fn shrink_bos(&self, bytes: u64) -> Result<u64, PeerError> {
            let mut s = self.state.lock().unwrap();
            let n = bytes.min(s.0 - s.2);
            s.0 -= n;
            self.asks.lock().unwrap().push((bytes, 0));
            Ok(n)
        }
        fn evict_svm(&self, bytes: u64) -> Result<u64, PeerError> {
            let mut s = self.state.lock().unwrap();
            let n = bytes.min(s.1 - s.3);
            s.1 -= n;
            self.asks.lock().unwrap().last_mut().unwrap().1 = bytes;
            Ok(n)
        }
        fn vram(&self) -> Result<VramFigures, PeerError> {
            let s = self.state.lock().unwrap();
            Ok(VramFigures {
                total: self.total,
                bo: s.0,
                svm: s.1,
            })
        }
        fn svm_sram(&self) -> Result<u64, PeerError> {
            Ok(0)
        }
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn equal_pressure_until_the_high_watermark() {
        let b = Broker::with_watermarks(100 * MIB, 10 * MIB, 30 * MIB);
        let w = Fake::new(100 * MIB, 48 * MIB, 48 * MIB, 0, 0);
        let (bo, svm) = run_pass(&b, &w);
        assert_eq!(bo, svm, "each world gave the same");
        assert!(
            100 * MIB - (96 * MIB - bo - svm) >= 30 * MIB,
            "stopped short of the high watermark"
        );
        assert!(
            w.asks.lock().unwrap().iter().all(|(a, b)| a == b),
            "asked each world the same"
        );
        assert_eq!(b.status().bo_evicted_bytes, bo);
    }

    #[test]
    fn a_round_that_frees_nothing_ends_the_pass() {
        let b = Broker::with_watermarks(100 * MIB, 10 * MIB, 30 * MIB);
        let w = Fake::new(100 * MIB, 48 * MIB, 48 * MIB, 47 * MIB, 47 * MIB);
        let (bo, svm) = run_pass(&b, &w);
        assert_eq!((bo, svm), (MIB, MIB));
        assert_eq!(
            w.asks.lock().unwrap().len(),
            2,
            "one round freed something, the next nothing"
        );
    }

    #[test]
    fn a_pinned_world_leaves_the_other_to_give() {
        let b = Broker::with_watermarks(100 * MIB, 10 * MIB, 30 * MIB);
        let w = Fake::new(100 * MIB, 48 * MIB, 48 * MIB, 48 * MIB, 0);
        let (bo, svm) = run_pass(&b, &w);
        assert_eq!(bo, 0);
        assert!(svm >= 26 * MIB);
    }

    struct Dead;
    impl Worlds for Dead {
        fn shrink_bos(&self, _: u64) -> Result<u64, PeerError> {
            Err(PeerError("gone".into()))
        }
        fn evict_svm(&self, _: u64) -> Result<u64, PeerError> {
            Err(PeerError("gone".into()))
        }
        fn vram(&self) -> Result<VramFigures, PeerError> {
            Err(PeerError("gone".into()))
        }
        fn svm_sram(&self) -> Result<u64, PeerError> {
            Err(PeerError("gone".into()))
        }
    }

    #[test]
    fn dead_peers_end_the_pass_and_waiters_time_out() {
        let b = Arc::new(Broker::with_watermarks(100 * MIB, 10 * MIB, 30 * MIB));
        b.report(World::Svm, 100 * MIB);
        let loop_broker = b.clone();
        std::thread::spawn(move || run(loop_broker, Arc::new(Dead)));
        let t0 = std::time::Instant::now();
        let r = b.reserve(World::Svm, 2 * MIB, Duration::from_millis(300));
        assert_eq!(
            r,
            Err(ipc_protocol::interfaces::pressure::PressureError::TimedOut)
        );
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_waiting_reservation_is_granted_after_the_loop_makes_room() {
        let b = Arc::new(Broker::with_watermarks(100 * MIB, 10 * MIB, 20 * MIB));
        let w = Arc::new(Fake::new(100 * MIB, 50 * MIB, 50 * MIB, 0, 0));
        b.refresh(50 * MIB, 50 * MIB);
        let loop_broker = b.clone();
        let worlds: Arc<dyn Worlds> = w.clone();
        std::thread::spawn(move || run(loop_broker, worlds));
        assert_eq!(
            b.reserve(World::Svm, 8 * MIB, Duration::from_secs(10)),
            Ok(8 * MIB)
        );
        let s = b.status();
        assert!(
            s.bo_evicted_bytes > 0 && s.bo_evicted_bytes == s.svm_evicted_bytes,
            "{s:?}"
        );
    }
}
