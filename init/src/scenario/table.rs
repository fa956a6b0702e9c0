//! `docs/conformance.md`: the catalogue of outside tests (hmm-tests, IGT's
//! SVM tests; `tests/scenarios/_catalogue.toml`, in our words) joined with
//! the scenarios that stand for each and their results in a run. Written
//! by `svm run DIR --write-table FILE`; `--check-table FILE` fails when the
//! file is not what this run writes (stale), when a catalogue entry has no
//! scenario and no reason, or when a scenario covers no known entry.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use serde::Deserialize;

use super::expand::Instance;
use super::runner::{Outcome, Verdict};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// `suite/test`, what scenarios name in `covers`.
    pub id: String,
    pub suite: String,
    pub test: String,
    /// What the outside test asserts, in our words.
    pub asserts: String,
    /// Why it does not apply to this system and what we test instead.
    pub not_applicable: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Catalogue {
    test: Vec<Entry>,
}

pub fn load_catalogue(path: &Path) -> Result<Vec<Entry>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let c: Catalogue = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut seen = std::collections::HashSet::new();
    for e in &c.test {
        if !seen.insert(e.id.clone()) {
            return Err(format!("{}: {} twice", path.display(), e.id));
        }
    }
    Ok(c.test)
}

/// Problems that make the table incomplete: catalogue entries with no
/// scenario and no reason, and scenarios that cover unknown entries.
pub fn gaps(cat: &[Entry], instances: &[Instance]) -> Vec<String> {
    let ids: std::collections::HashSet<&str> = cat.iter().map(|e| e.id.as_str()).collect();
    let mut out = Vec::new();
    for i in instances {
        for c in &i.covers {
            if !ids.contains(c.as_str()) {
                out.push(format!(
                    "{} covers {c:?}, which the catalogue does not list",
                    i.name
                ));
            }
        }
    }
    for e in cat {
        let covered = instances.iter().any(|i| i.covers.contains(&e.id));
        if !covered && e.not_applicable.is_none() {
            out.push(format!(
                "{}: no scenario, and no reason why it does not apply",
                e.id
            ));
        }
        if covered && e.not_applicable.is_some() {
            out.push(format!(
                "{}: has scenarios and is marked not applicable",
                e.id
            ));
        }
    }
    out
}

/// The result column: counts by verdict (and of scenarios not run).
fn result_cell(instances: &[&Instance], outcomes: &BTreeMap<&str, &Outcome>) -> String {
    let (mut pass, mut fail, mut not_run) = (0, 0, 0);
    let mut xfail: BTreeMap<String, usize> = BTreeMap::new();
    for i in instances {
        match outcomes.get(i.name.as_str()).map(|o| o.verdict) {
            Some(Verdict::Pass) => pass += 1,
            Some(Verdict::Fail) => fail += 1,
            Some(Verdict::ExpectedFailure) => {
                let x = i
                    .expect_failure
                    .as_ref()
                    .expect("an expected failure is marked");
                *xfail
                    .entry(format!("#{} {}", x.issue, x.feature))
                    .or_default() += 1;
            }
            None => not_run += 1,
        }
    }
    let single = instances.len() == 1;
    let mut parts = Vec::new();
    if pass > 0 {
        parts.push(if single {
            "pass".into()
        } else {
            format!("{pass} pass")
        });
    }
    if fail > 0 {
        parts.push(if single {
            "**FAIL**".into()
        } else {
            format!("**{fail} FAIL**")
        });
    }
    for (why, n) in xfail {
        parts.push(if single {
            format!("expected failure ({why})")
        } else {
            format!("{n} expected failure ({why})")
        });
    }
    if not_run > 0 {
        parts.push(if single {
            "long run only".into()
        } else {
            format!("{not_run} long run only")
        });
    }
    parts.join(", ")
}

fn scenario_cell(instances: &[&Instance]) -> String {
    let mut files: BTreeMap<String, usize> = BTreeMap::new();
    for i in instances {
        let f = i
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        *files.entry(f).or_default() += 1;
    }
    files
        .into_iter()
        .map(|(f, n)| {
            if n == 1 {
                format!("`{f}`")
            } else {
                format!("`{f}` ×{n}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The whole of `docs/conformance.md` for this run.
pub fn render(cat: &[Entry], instances: &[Instance], outcomes: &[Outcome]) -> String {
    let by_name: BTreeMap<&str, &Outcome> = outcomes.iter().map(|o| (o.name.as_str(), o)).collect();
    let count = |v: Verdict| outcomes.iter().filter(|o| o.verdict == v).count();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Conformance: the outside suites, scenario by scenario\n\n\
         Generated from a run of the CI-sized set: `svm run tests/scenarios --write-table \
         docs/conformance.md`\n(`cargo test -p init --test scenarios` fails when this file is \
         stale). Do not edit by hand:\nthe tests and what they assert are in \
         `tests/scenarios/_catalogue.toml`, the scenarios beside it.\n\n\
         Each outside test is adapted to this system: a pager object and its views stand for \
         anonymous\nmemory, a GPU VM that binds every view at its CPU address (`mirror`) for a \
         fault-mode VM\nmirroring the address space; IGT's batches are batch programs placed \
         in the SVM buffer\n(`Gpu::SubmitBatch`). \"Expected failure\" names the issue \
         whose feature makes it pass;\nsuch a scenario runs every time and fails the run if it \
         starts to pass (so the mark goes).\n\"Long run only\": a larger size or pattern that \
         `svm run tests/scenarios --long` runs.\n\n\
         This run: {} scenarios passed, {} failed, {} expected failures, \
         {} in the long run only.\n",
        count(Verdict::Pass),
        count(Verdict::Fail),
        count(Verdict::ExpectedFailure),
        instances
            .iter()
            .filter(|i| !by_name.contains_key(i.name.as_str()))
            .count(),
    );
    let mut suite = "";
    for e in cat {
        if e.suite != suite {
            suite = &e.suite;
            let _ = writeln!(s, "\n## {suite}\n");
            let _ = writeln!(
                s,
                "| test | what it asserts | our scenario | result today |"
            );
            let _ = writeln!(s, "| --- | --- | --- | --- |");
        }
        let mine: Vec<&Instance> = instances
            .iter()
            .filter(|i| i.covers.contains(&e.id))
            .collect();
        let (scen, result) = match &e.not_applicable {
            Some(why) if mine.is_empty() => ("—".to_string(), format!("n/a: {}", cell(why))),
            _ if mine.is_empty() => ("**missing**".into(), "**missing**".into()),
            _ => (scenario_cell(&mine), result_cell(&mine, &by_name)),
        };
        let _ = writeln!(
            s,
            "| `{}` | {} | {scen} | {result} |",
            cell(&e.test),
            cell(&e.asserts)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::format::{Device, ExpectFailure};
    use crate::scenario::runner::Check;

    fn inst(name: &str, covers: &str, x: bool) -> Instance {
        Instance {
            name: name.into(),
            file: format!("{name}.toml").into(),
            about: String::new(),
            covers: vec![covers.into()],
            timeout: std::time::Duration::from_secs(1),
            device: Device::default(),
            expect_failure: x.then(|| ExpectFailure {
                issue: 16,
                feature: "prefetch".into(),
                matches: None,
            }),
            ci: true,
            steps: vec![],
        }
    }

    fn outcome(i: &Instance, v: Verdict) -> Outcome {
        Outcome {
            name: i.name.clone(),
            file: String::new(),
            covers: i.covers.clone(),
            ci: true,
            verdict: v,
            expect_failure: i.expect_failure.clone(),
            checks: vec![Check {
                ok: true,
                what: "x".into(),
            }],
            problems: vec![],
            elapsed_s: 0.0,
            stderr_tail: String::new(),
        }
    }

    fn entry(id: &str, na: Option<&str>) -> Entry {
        Entry {
            id: id.into(),
            suite: "s".into(),
            test: id.into(),
            asserts: "a".into(),
            not_applicable: na.map(Into::into),
        }
    }

    #[test]
    fn the_table_has_a_row_per_entry_with_its_result() {
        let cat = vec![
            entry("s/a", None),
            entry("s/b", None),
            entry("s/c", Some("hugetlbfs")),
        ];
        let a = inst("a", "s/a", false);
        let b1 = inst("b1", "s/b", true);
        let b2 = inst("b2", "s/b", true);
        let insts = vec![a.clone(), b1.clone(), b2.clone()];
        let outs = vec![
            outcome(&a, Verdict::Pass),
            outcome(&b1, Verdict::ExpectedFailure),
        ];
        let t = render(&cat, &insts, &outs);
        assert!(t.contains("| `s/a` | a | `a.toml` | pass |"), "{t}");
        assert!(
            t.contains("1 expected failure (#16 prefetch), 1 long run only"),
            "{t}"
        );
        assert!(t.contains("| `s/c` | a | — | n/a: hugetlbfs |"), "{t}");
        assert!(gaps(&cat, &insts).is_empty());
        // The table changes with a result: a stale file is caught.
        let outs2 = vec![
            outcome(&a, Verdict::Fail),
            outcome(&b1, Verdict::ExpectedFailure),
        ];
        assert_ne!(render(&cat, &insts, &outs2), t);
    }

    #[test]
    fn gaps_are_reported() {
        let cat = vec![entry("s/a", None), entry("s/b", None)];
        let g = gaps(&cat, &[inst("a", "s/a", false), inst("z", "s/zz", false)]);
        assert_eq!(g.len(), 2, "{g:?}");
        assert!(g.iter().any(|x| x.contains("s/zz")));
        assert!(g.iter().any(|x| x.starts_with("s/b")));
    }
}
