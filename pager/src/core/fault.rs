//! CPU faults, however the runtime delivers them (host: a fault worker
//! popping a userfaultfd event): find the view that covers the address
//! now, then resolve the fault by the protocols in `crate::migrate`
//! (rules 1 to 3). Nothing here takes a lock another client's fault
//! needs: the view is found in the faulting space, the page in its object.

use super::backend::CoreBackend;
use super::runtime::{Pause, RtError, Runtime};
use super::view::{Space, View, PAGE};
use super::Core;
use crate::migrate::{cpu_fault, FaultError, FaultOutcome};
use crate::state::{Residency, StateError};

impl<R: Runtime> Core<R> {
    /// Serves one CPU fault at `addr` of `space` (`wp`: a write that met
    /// write protection) and wakes the faulting thread.
    pub fn serve_fault(&self, space: &Space<R>, addr: u64, wp: bool) {
        self.serve_fault_from(space, addr, wp, 0);
    }

    /// [`Self::serve_fault`] for thread `tid` (0: unknown), whose mappings
    /// tell a view an mremap grew.
    pub fn serve_fault_from(&self, space: &Space<R>, addr: u64, wp: bool, tid: u32) {
        let page_addr = addr & !(PAGE - 1);
        let mut attempt = 0;
        let mut failing_since = None;
        let mut refuse_cpu = true;
        loop {
            // The view that covers the address now: views move and go
            // while faults wait in the queue.
            let Some(view) = space.view_at(addr) else {
                // Registered, but no view: an mremap grew a view (the
                // kernel sends no event for the new tail): follow it.
                if self.follow_growth(space, addr, tid) {
                    continue;
                }
                // Or a change was not followed. Hand the page back to the
                // kernel rather than leave the thread faulting.
                log::warn!(
                    "pager: space {}: fault at {addr:#x} in no view; unregistering that page",
                    space.id
                );
                let _ = self.rt.unregister(&space.port, page_addr, PAGE);
                break;
            };
            let Some(page) = view.page_at(addr) else {
                break;
            };
            let r = if wp {
                self.clear_stale_protection(&view, page, page_addr)
            } else {
                let mut backend = CoreBackend::new(self, &view.object, Some(&view));
                backend.refuse_cpu = refuse_cpu;
                match cpu_fault(&view.object.table, &backend, page, self.cfg.policy) {
                    Ok(FaultOutcome::Migrated { .. }) => {
                        self.note_cpu_return(&view.object, page);
                        Ok(())
                    }
                    Ok(_) => Ok(()),
                    Err(FaultError::Refused) => {
                        if self.refuse(space, page_addr) {
                            return;
                        }
                        refuse_cpu = false;
                        continue;
                    }
                    Err(e) => Err(format!("{e:?}")),
                }
            };
            match r {
                Ok(()) => break,
                Err(e) if space.stopped() => {
                    log::debug!(
                        "pager: space {} stopped while a fault failed: {e}",
                        space.id
                    );
                    return;
                }
                Err(e) => {
                    let since = *failing_since.get_or_insert_with(|| self.rt.now_us());
                    let late = self.rt.now_us().saturating_sub(since) > self.cfg.fault_deadline_us;
                    if late && self.end_unservable(space, page_addr, &e) {
                        return;
                    }
                    log::warn!(
                        "pager: fault on page {page} of object {:#x}: {e}; retrying",
                        view.object.id.raw()
                    );
                    self.rt.pause(Pause::FaultRetry, attempt);
                    attempt = attempt.saturating_add(1);
                }
            }
        }
        match self.rt.wake(&space.port, page_addr, PAGE) {
            Err(RtError::Gone) => self.space_gone(space),
            Err(e) => log::debug!("pager: wake at {page_addr:#x}: {e:?}"),
            Ok(()) => {}
        }
    }

    /// No hang: a fault that kept failing past the deadline ends with an
    /// error the client sees (the runtime poisons the page: `SIGBUS`) and
    /// the pager says why. The page keeps its state (its data may still be
    /// in VRAM); `false` if the runtime cannot end it (the fault retries).
    fn end_unservable(&self, space: &Space<R>, page_addr: u64, e: &str) -> bool {
        let ended = self.rt.poison(&space.port, page_addr, PAGE).is_ok();
        if ended {
            log::error!(
                "pager: space {}: the fault at {page_addr:#x} failed for {} ms ({e}); \
                 the access gets SIGBUS",
                space.id,
                self.cfg.fault_deadline_us / 1000
            );
        }
        ended
    }

    /// `Advice::DeviceOnly` refuses the CPU fault at `page_addr`: the
    /// runtime ends the access (`SIGBUS`); `false` if it cannot (the
    /// caller moves the page back instead).
    fn refuse(&self, space: &Space<R>, page_addr: u64) -> bool {
        if self.rt.poison(&space.port, page_addr, PAGE).is_ok() {
            log::info!(
                "pager: space {}: CPU access at {page_addr:#x} refused (device-only range)",
                space.id
            );
            return true;
        }
        log::warn!(
            "pager: space {}: cannot refuse the CPU access at {page_addr:#x} to a \
             device-only range; moving the page back",
            space.id
        );
        false
    }

    /// A writer blocked by write protection: once no migration holds the
    /// page, clear the protection in this view under the page lock. Usually
    /// finalize already did; a mapping made while the page was protected
    /// (a fork's copy, a moved range) inherits it and is cleared here.
    pub fn clear_stale_protection(
        &self,
        view: &View<R>,
        page: usize,
        page_addr: u64,
    ) -> Result<(), String> {
        let table = &view.object.table;
        let err = |e: StateError| format!("{e:?}");
        loop {
            table.wait_unlocked(page).map_err(err)?;
            let Some(state) = table.try_lock(page).map_err(err)? else {
                crate::sync::yield_now();
                continue;
            };
            let r = if state == Residency::System {
                self.rt
                    .write_protect(&view.space.port, page_addr, PAGE, false)
            } else {
                Ok(())
            };
            let _ = table.unlock(page, state);
            return match r {
                Ok(()) | Err(RtError::Unmapped) => Ok(()),
                Err(RtError::Gone) => {
                    self.space_gone(&view.space);
                    Ok(())
                }
                Err(e) => Err(format!("{e:?}")),
            };
        }
    }
}
