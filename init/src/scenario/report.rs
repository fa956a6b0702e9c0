//! What a running scenario tells the runner: a line per step it starts
//! (with the step's time bound, so the runner can stop a hang) and a line
//! per check. The scenario process writes them as JSON lines on stdout;
//! checks made inside `repeat` and `parallel` are gathered into one line
//! per body step (`128 of 128 passed`) so a long loop stays readable.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A top-level step started; it must end within `bound_ms`.
    Step {
        index: usize,
        op: String,
        bound_ms: u64,
    },
    /// A step inside `repeat`, `parallel` or `fork` started (its bound is
    /// its top-level step's; this names where a hang happened).
    Nested {
        path: String,
        op: String,
    },
    Check {
        ok: bool,
        what: String,
    },
    /// The scenario could not go on (a step failed in a way no check
    /// expected).
    Error {
        what: String,
    },
}

#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    first_failure: Option<String>,
    last: String,
}

#[derive(Default)]
struct State {
    /// Nesting of `repeat`/`parallel`; above 0 checks are gathered.
    depth: usize,
    gathered: BTreeMap<String, Tally>,
    events: Vec<Event>,
}

/// Where events go: a file as JSON lines (the scenario process's copy of
/// its stdout), or kept in memory (tests).
pub struct Reporter {
    out: Option<Mutex<std::fs::File>>,
    state: Mutex<State>,
}

impl Reporter {
    pub fn to_file(f: std::fs::File) -> Self {
        Self {
            out: Some(Mutex::new(f)),
            state: Mutex::default(),
        }
    }

    pub fn memory() -> Self {
        Self {
            out: None,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn emit(&self, e: Event) {
        let mut st = self.lock();
        self.emit_locked(&mut st, e);
    }

    fn emit_locked(&self, st: &mut State, e: Event) {
        if let Some(out) = &self.out {
            // A JSON line per event; serde_json cannot fail on these types.
            let line = serde_json::to_string(&e).unwrap_or_default();
            let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        st.events.push(e);
    }

    /// A check: `label` names it (stable across rounds), `detail` says
    /// what was found.
    pub fn check(&self, ok: bool, label: &str, detail: &str) {
        let mut st = self.lock();
        if st.depth == 0 {
            let what = format!("{label}: {detail}");
            self.emit_locked(&mut st, Event::Check { ok, what });
            return;
        }
        let t = st.gathered.entry(label.to_string()).or_default();
        if ok {
            t.passed += 1;
        } else {
            t.failed += 1;
            if t.first_failure.is_none() {
                t.first_failure = Some(detail.to_string());
            }
        }
        t.last = detail.to_string();
    }

    pub fn enter_group(&self) {
        self.lock().depth += 1;
    }

    /// Leaves a `repeat`/`parallel`; at the outermost one, one line per
    /// gathered label.
    pub fn leave_group(&self) {
        let mut st = self.lock();
        st.depth = st.depth.saturating_sub(1);
        if st.depth > 0 {
            return;
        }
        for (label, t) in std::mem::take(&mut st.gathered) {
            let n = t.passed + t.failed;
            let (ok, what) = match t.first_failure {
                None => (
                    true,
                    format!("{label}: {n} of {n} passed; last: {}", t.last),
                ),
                Some(first) => (
                    false,
                    format!(
                        "{label}: {} of {n} failed; first failure: {first}",
                        t.failed
                    ),
                ),
            };
            self.emit_locked(&mut st, Event::Check { ok, what });
        }
    }

    /// Every event so far (in-memory reporters).
    pub fn events(&self) -> Vec<Event> {
        self.lock().events.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_in_a_loop_become_one_line_per_label() {
        let r = Reporter::memory();
        r.check(true, "top", "fine");
        r.enter_group();
        for i in 0..4 {
            r.check(i != 2, "gpu", &format!("round {i}"));
            r.check(true, "cpu", "ok");
        }
        r.leave_group();
        let ev = r.events();
        assert_eq!(ev.len(), 3);
        assert_eq!(
            ev[0],
            Event::Check {
                ok: true,
                what: "top: fine".into()
            }
        );
        assert_eq!(
            ev[1],
            Event::Check {
                ok: true,
                what: "cpu: 4 of 4 passed; last: ok".into()
            }
        );
        assert_eq!(
            ev[2],
            Event::Check {
                ok: false,
                what: "gpu: 1 of 4 failed; first failure: round 2".into()
            }
        );
    }
}
