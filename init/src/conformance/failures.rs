//! Failure lists and the verdict, after protobuf's conformance runner: one
//! list per implementation (`tests/conformance/failures-<impl>.txt`), one
//! case id a line (`Interface/case`), `#` starting a comment that says
//! why. A listed failure is expected (XFAIL); an unlisted failure fails
//! the run (FAIL); a listed case that passes fails the run as well
//! (XPASS: take it off the list), and so does a listed case that no longer
//! exists among the interfaces that ran (STALE).

use std::io::Write;

use super::{CaseResult, Outcome};

#[derive(Debug, Clone)]
struct Entry {
    id: String,
    /// `file:line`
    at: String,
}

#[derive(Debug, Clone, Default)]
pub struct FailureList {
    entries: Vec<Entry>,
}

impl FailureList {
    /// Adds the entries of one list; `source` names it in messages.
    pub fn add(&mut self, source: &str, text: &str) -> Result<(), String> {
        for (n, line) in text.lines().enumerate() {
            // The reason after `#` is for the reader; the verdict cites the line.
            let id = line.split('#').next().unwrap_or("").trim();
            if id.is_empty() {
                continue;
            }
            if id.split_whitespace().count() != 1 || !id.contains('/') {
                return Err(format!("{source}:{}: not a case id: {id:?}", n + 1));
            }
            self.entries.push(Entry {
                id: id.into(),
                at: format!("{source}:{}", n + 1),
            });
        }
        Ok(())
    }

    fn find(&self, id: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.id == id)
    }
}

/// The counts of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub expected_failures: usize,
    pub unexpected_passes: usize,
    pub stale: usize,
    pub skipped: usize,
}

impl Summary {
    /// The run passes: nothing failed that is not listed, and the list
    /// holds nothing that passes or no longer exists.
    pub fn ok(&self) -> bool {
        self.failed + self.unexpected_passes + self.stale == 0
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} passed, {} failed, {} expected failures, {} unexpected passes, {} stale list \
             entries, {} skipped",
            self.passed,
            self.failed,
            self.expected_failures,
            self.unexpected_passes,
            self.stale,
            self.skipped
        )
    }
}

/// Judges `results` against `list`, one line per case on `out`. Entries
/// of interfaces in `interfaces_run` that match no case are stale.
pub fn judge(
    results: &[CaseResult],
    list: &FailureList,
    interfaces_run: &[String],
    out: &mut dyn Write,
) -> std::io::Result<Summary> {
    let mut s = Summary::default();
    for r in results {
        let listed = list.find(&r.id);
        match (&r.outcome, listed) {
            (Outcome::Pass, None) => {
                s.passed += 1;
                writeln!(out, "PASS  {}", r.id)?;
            }
            (Outcome::Note(n), None) => {
                s.passed += 1;
                writeln!(out, "PASS  {} ({n})", r.id)?;
            }
            (Outcome::Skip(why), _) => {
                s.skipped += 1;
                writeln!(out, "SKIP  {}: {why}", r.id)?;
            }
            (Outcome::Fail(why), None) => {
                s.failed += 1;
                writeln!(out, "FAIL  {}: {why}", r.id)?;
            }
            (Outcome::Fail(why), Some(e)) => {
                s.expected_failures += 1;
                writeln!(out, "XFAIL {}: {why} [listed at {}]", r.id, e.at)?;
            }
            (Outcome::Pass | Outcome::Note(_), Some(e)) => {
                s.unexpected_passes += 1;
                writeln!(
                    out,
                    "XPASS {}: passes but is listed as failing at {}; take it off the list",
                    r.id, e.at
                )?;
            }
        }
    }
    for e in &list.entries {
        let ran = interfaces_run
            .iter()
            .any(|i| e.id.starts_with(&format!("{i}/")));
        if ran && !results.iter().any(|r| r.id == e.id) {
            s.stale += 1;
            writeln!(
                out,
                "STALE {}: listed at {} but no such case ran",
                e.id, e.at
            )?;
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(id: &str, outcome: Outcome) -> CaseResult {
        CaseResult {
            id: id.into(),
            outcome,
        }
    }

    #[test]
    fn listed_failures_are_expected_and_listed_passes_fail_the_run() {
        let mut list = FailureList::default();
        list.add(
            "f.txt",
            "# comment\nPager/a  # known\nPager/b # fixed since\nPager/gone\nGpu/other\n",
        )
        .unwrap();
        let results = [
            r("Pager/a", Outcome::Fail("x".into())),
            r("Pager/b", Outcome::Pass),
            r("Pager/c", Outcome::Fail("y".into())),
            r("Pager/d", Outcome::Note("n".into())),
        ];
        let mut out = Vec::new();
        let s = judge(&results, &list, &["Pager".into()], &mut out).unwrap();
        assert_eq!(
            s,
            Summary {
                passed: 1,
                failed: 1,
                expected_failures: 1,
                unexpected_passes: 1,
                stale: 1,
                skipped: 0
            }
        );
        assert!(!s.ok());
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("XFAIL Pager/a: x [listed at f.txt:2]"),
            "{text}"
        );
        assert!(text.contains("STALE Pager/gone"), "{text}");
        assert!(!text.contains("Gpu/other"), "{text}");
        let mut only_expected = FailureList::default();
        only_expected.add("f.txt", "Pager/a").unwrap();
        let s = judge(
            &results[..1],
            &only_expected,
            &["Pager".into()],
            &mut Vec::new(),
        )
        .unwrap();
        assert!(s.ok());
    }

    #[test]
    fn a_line_that_is_not_a_case_id_is_refused() {
        assert!(FailureList::default().add("f", "not an id").is_err());
        assert!(FailureList::default().add("f", "Pager/a b").is_err());
    }
}
