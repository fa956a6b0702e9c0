//! The copy engines (issue 15): real Xe parts have several, so the model
//! has N (`Config::copy_engines`). The copy ring's engine thread is the
//! first; N - 1 helper threads are the others. A `MEM_COPY` of at least
//! [`SPLIT_BYTES`] is split by rows into N parts copied at once, so a 2 MiB
//! migration is not bound by one thread's memcpy; smaller ones stay on one
//! engine (handing a part over costs more than it saves).
//!
//! Lifetime rule the pointers depend on: [`CopyEngines::run`] returns only
//! after every part it handed out has been copied (its countdown reached
//! zero), so the rows it resolved (and the mappings their `Resolved` keep
//! alive) outlive every helper's use of them.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};

/// Copies below this size are not split.
pub const SPLIT_BYTES: u64 = 256 << 10;

/// One row to copy: source, destination, bytes (raw addresses, see the
/// lifetime rule in the module docs).
#[derive(Clone, Copy)]
pub struct Row {
    pub src: usize,
    pub dst: usize,
    pub len: usize,
}

/// Counts the parts still being copied; the submitter waits for zero.
struct Countdown {
    left: Mutex<usize>,
    zero: Condvar,
}

impl Countdown {
    fn done(&self) {
        let mut l = self.left.lock().unwrap_or_else(|e| e.into_inner());
        *l -= 1;
        if *l == 0 {
            self.zero.notify_all();
        }
    }
    fn wait(&self) {
        let l = self.left.lock().unwrap_or_else(|e| e.into_inner());
        let _l = self
            .zero
            .wait_while(l, |l| *l > 0)
            .unwrap_or_else(|e| e.into_inner());
    }
}

/// A part for a helper engine: rows `[first, first + count)` of the
/// submitter's row list at `rows`.
struct Part {
    rows: usize,
    first: usize,
    count: usize,
    done: Arc<Countdown>,
}

pub struct CopyEngines {
    /// `None` with a single engine; dropping it stops the helpers.
    parts: Option<Mutex<Sender<Part>>>,
    engines: usize,
}

impl CopyEngines {
    /// `engines` copy engines (at least one): spawns `engines - 1` helpers.
    /// Fewer helpers are kept if threads cannot be spawned.
    pub fn new(engines: u16) -> Self {
        let engines = engines.max(1) as usize;
        if engines == 1 {
            return Self {
                parts: None,
                engines: 1,
            };
        }
        let (tx, rx) = channel::<Part>();
        let rx = Arc::new(Mutex::new(rx));
        let mut spawned = 1;
        for i in 1..engines {
            let rx = rx.clone();
            let ok = std::thread::Builder::new()
                .name(format!("xe-model-bcs{i}"))
                .spawn(move || helper(&rx))
                .is_ok();
            if !ok {
                log::warn!("xe-model: copy engine {i} has no thread; {spawned} engines");
                break;
            }
            spawned += 1;
        }
        Self {
            parts: (spawned > 1).then(|| Mutex::new(tx)),
            engines: spawned,
        }
    }

    pub fn engines(&self) -> usize {
        self.engines
    }

    /// Copies every row, split across the engines when large enough.
    pub fn run(&self, rows: &[Row]) {
        let bytes: u64 = rows.iter().map(|r| r.len as u64).sum();
        let Some(parts) = self.parts.as_ref().filter(|_| bytes >= SPLIT_BYTES) else {
            copy_rows(rows);
            return;
        };
        let n = self.engines.min(rows.len()).max(1);
        let per = rows.len().div_ceil(n);
        let done = Arc::new(Countdown {
            left: Mutex::new(0),
            zero: Condvar::new(),
        });
        let mut handed = 0;
        {
            let tx = parts.lock().unwrap_or_else(|e| e.into_inner());
            let mut left = done.left.lock().unwrap_or_else(|e| e.into_inner());
            for first in (per..rows.len()).step_by(per) {
                let part = Part {
                    rows: rows.as_ptr() as usize,
                    first,
                    count: per.min(rows.len() - first),
                    done: done.clone(),
                };
                *left += 1;
                if tx.send(part).is_err() {
                    // No helper is left: copy it here.
                    *left -= 1;
                    copy_rows(&rows[first..first + per.min(rows.len() - first)]);
                } else {
                    handed += 1;
                }
            }
        }
        copy_rows(&rows[..per.min(rows.len())]);
        if handed > 0 {
            done.wait();
        }
    }
}

fn helper(rx: &Mutex<Receiver<Part>>) {
    loop {
        let part = {
            let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
            match rx.recv() {
                Ok(p) => p,
                Err(_) => return, // the device stopped
            }
        };
        // SAFETY: the submitter keeps the row list alive and unchanged
        // until this part's countdown is done (module docs).
        let rows = unsafe {
            std::slice::from_raw_parts((part.rows as *const Row).add(part.first), part.count)
        };
        copy_rows(rows);
        part.done.done();
    }
}

fn copy_rows(rows: &[Row]) {
    for r in rows {
        // SAFETY: each row was resolved in bounds of a live mapping, kept
        // alive by the submitter (module docs); `copy` tolerates overlap.
        // Concurrent CPU access to the same bytes is the driver's race to
        // prevent, as with real DMA.
        unsafe { std::ptr::copy(r.src as *const u8, r.dst as *mut u8, r.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(engines: u16, rows: usize, width: usize) {
        let src: Vec<u8> = (0..rows * width).map(|i| (i * 7 + 3) as u8).collect();
        let mut dst = vec![0u8; rows * width];
        let list: Vec<Row> = (0..rows)
            .map(|r| Row {
                src: src.as_ptr() as usize + r * width,
                dst: dst.as_mut_ptr() as usize + r * width,
                len: width,
            })
            .collect();
        let e = CopyEngines::new(engines);
        assert_eq!(e.engines(), engines.max(1) as usize);
        e.run(&list);
        assert!(src == dst, "{engines} engines, {rows} rows of {width}");
    }

    #[test]
    fn a_split_copy_copies_every_byte() {
        for engines in [1, 2, 3, 4, 8] {
            check(engines, 512, 4096);
            check(engines, 7, 64 << 10);
            check(engines, 3, 100);
        }
    }
}
