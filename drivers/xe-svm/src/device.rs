//! The GPU server's access to the device: copy-engine submissions, TLB
//! invalidations through the GuC, and the GuC-to-host message pump that
//! hands page faults to the fault worker.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use hw::bar::{Bar, BarError};
use hw::shm::RingError;
use hw::xe::commands::{Command, InvalidationScope, MemCopy, TlbInvalidation};
use hw::xe::fault::{FaultDescriptor, FaultReply};
use hw::xe::layout::{self, Ring};

const WAIT: Duration = Duration::from_secs(30);

pub struct Device {
    pub bar: Arc<Bar>,
    copy_lock: Mutex<()>,
    seq: AtomicU32,
    tlb_done: Mutex<HashSet<u32>>,
    tlb_cv: Condvar,
}

impl Device {
    pub fn new(bar: Arc<Bar>) -> Arc<Self> {
        let done = bar.reg(layout::REG_BCS_DONE);
        Arc::new(Self {
            bar,
            copy_lock: Mutex::new(()),
            // Past the copy engine's done register, which a driver before
            // us may have left anywhere (the device outlives its driver).
            seq: AtomicU32::new(done.wrapping_add(100)),
            tlb_done: Mutex::new(HashSet::new()),
            tlb_cv: Condvar::new(),
        })
    }

    /// Reads GuC messages until the device goes away: faults go to
    /// `faults`, invalidation completions wake their waiters. Never blocks
    /// on anything but the ring, so invalidations always complete.
    pub fn pump(self: Arc<Self>, faults: Sender<FaultDescriptor>) {
        loop {
            match self.bar.next_guc_message(Some(Duration::from_millis(200))) {
                Ok(Command::PageFault(f)) => {
                    if faults.send(f).is_err() {
                        return;
                    }
                }
                Ok(Command::TlbInvalidationDone { seqno }) => {
                    self.tlb_done
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(seqno);
                    self.tlb_cv.notify_all();
                }
                Ok(other) => log::warn!("xe-svm: unexpected GuC message {other:?}"),
                Err(BarError::Ring(RingError::TimedOut)) => {
                    if self.bar.reg(layout::REG_RUNNING) == 0 {
                        log::warn!("xe-svm: device stopped");
                        return;
                    }
                }
                Err(e) => log::error!("xe-svm: GuC ring: {e}"),
            }
        }
    }

    /// Runs `copies` (source, destination, bytes) on the copy engine and
    /// waits; `false` when the engine reported an error.
    pub fn copy(&self, copies: &[(u64, u64, u64)]) -> Result<bool, BarError> {
        if copies.is_empty() {
            return Ok(true);
        }
        // One batch at a time, so an error register value is ours.
        let _g = self.copy_lock.lock().unwrap_or_else(|e| e.into_inner());
        let error_before = self.bar.reg(layout::REG_BCS_ERROR);
        let mut last = 0;
        for &(src, dst, bytes) in copies {
            let mut off = 0;
            while off < bytes {
                let n = (bytes - off).min(2 << 20);
                last = self.seq.fetch_add(1, Ordering::Relaxed);
                let c = MemCopy::contiguous(src + off, dst + off, n).map_err(BarError::Command)?;
                self.bar.submit(Ring::Copy, last, &Command::MemCopy(c))?;
                off += n;
            }
        }
        self.bar.wait_seqno(layout::REG_BCS_DONE, last, WAIT)?;
        Ok(self.bar.reg(layout::REG_BCS_ERROR) == error_before)
    }

    /// Invalidates `[va, va + len)` of `asid` and waits for the GuC's
    /// completion: after this, no access through an old translation lands.
    pub fn invalidate(&self, asid: u32, va: u64, len: u64) -> Result<(), BarError> {
        let seqno = self.seq.fetch_add(1, Ordering::Relaxed);
        // Round the range up to a power-of-two, aligned span covering it.
        let mut log2 = 12u8;
        while log2 < 48 && ((va >> log2) != ((va + len.max(1) - 1) >> log2)) {
            log2 += 1;
        }
        let address = va & !((1u64 << log2) - 1);
        let inv = TlbInvalidation {
            seqno,
            scope: InvalidationScope::Range,
            asid,
            address,
            len_log2: log2,
        };
        self.bar
            .submit(Ring::HostToGuc, 0, &Command::TlbInvalidation(inv))?;
        let mut done = self.tlb_done.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if done.remove(&seqno) {
                return Ok(());
            }
            let (g, t) = self
                .tlb_cv
                .wait_timeout(done, WAIT)
                .unwrap_or_else(|e| e.into_inner());
            done = g;
            if t.timed_out() && !done.contains(&seqno) {
                return Err(BarError::TimedOut);
            }
        }
    }

    pub fn reply(&self, fault: &FaultDescriptor, success: bool) -> Result<(), BarError> {
        self.bar.submit(
            Ring::HostToGuc,
            0,
            &Command::PageFaultResponse(FaultReply::to(fault, success)),
        )
    }
}
