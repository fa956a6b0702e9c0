//! What the guest runs: a plan, one check per line.
//!
//! ```text
//! # comment
//! NAME TIMEOUT_S SVM_ARGS...
//! herd 240 run herd --size 2M --threads 2 --reps 1
//! ```
//! Each check runs `svm SVM_ARGS...` as a child process and passes when it
//! exits 0 within its timeout. A check whose output ends with a summary line
//! (`N passed, N failed`, the scenario runner's `svm run DIR`) counts as that
//! many checks. Arguments are split on blanks; there is no quoting.
//!
//! Plans come from outside (`svm qemu --scenarios FILE.plan`), so every
//! field is checked and bounded.

use std::fmt;
use std::time::Duration;

/// The set `svm qemu` runs by default: the brief's built-in set, sized for
/// an emulated CPU.
pub const BUILTIN: &str = include_str!("../../plans/builtin.plan");
/// The CI subset: a boot check and one run of each fault path.
pub const QUICK: &str = include_str!("../../plans/quick.plan");

pub const MAX_CHECKS: usize = 64;
pub const MAX_ARGS: usize = 32;
pub const MAX_NAME: usize = 64;
pub const MAX_TIMEOUT_S: u64 = 3600;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub timeout: Duration,
    /// Arguments of `svm`.
    pub args: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub checks: Vec<Check>,
}

/// Why a plan was refused; `line` counts from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PlanError {
    /// A name outside `[A-Za-z0-9._-]{1,64}`.
    BadName {
        line: usize,
    } = 1,
    /// No timeout, or one outside 1..=3600 seconds.
    BadTimeout {
        line: usize,
    } = 2,
    /// No `svm` arguments, or more than 32.
    BadArgs {
        line: usize,
    } = 3,
    /// Two checks of one name (results are reported by name).
    DuplicateName {
        line: usize,
    } = 4,
    TooManyChecks = 5,
    Empty = 6,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadName { line } => {
                write!(
                    f,
                    "line {line}: a check name is 1-{MAX_NAME} of [A-Za-z0-9._-]"
                )
            }
            Self::BadTimeout { line } => {
                write!(f, "line {line}: the timeout is 1-{MAX_TIMEOUT_S} seconds")
            }
            Self::BadArgs { line } => write!(f, "line {line}: 1-{MAX_ARGS} svm arguments"),
            Self::DuplicateName { line } => write!(f, "line {line}: a check of that name exists"),
            Self::TooManyChecks => write!(f, "more than {MAX_CHECKS} checks"),
            Self::Empty => write!(f, "no checks"),
        }
    }
}
impl std::error::Error for PlanError {}

fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl Plan {
    pub fn parse(text: &str) -> Result<Plan, PlanError> {
        let mut checks: Vec<Check> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let body = raw.split('#').next().unwrap_or("").trim();
            if body.is_empty() {
                continue;
            }
            let mut words = body.split_whitespace();
            let name = words.next().unwrap_or("");
            if !valid_name(name) {
                return Err(PlanError::BadName { line });
            }
            let timeout = words
                .next()
                .and_then(|t| t.parse::<u64>().ok())
                .filter(|t| (1..=MAX_TIMEOUT_S).contains(t))
                .ok_or(PlanError::BadTimeout { line })?;
            let args: Vec<String> = words.map(str::to_owned).collect();
            if args.is_empty() || args.len() > MAX_ARGS {
                return Err(PlanError::BadArgs { line });
            }
            if checks.iter().any(|c| c.name == name) {
                return Err(PlanError::DuplicateName { line });
            }
            if checks.len() == MAX_CHECKS {
                return Err(PlanError::TooManyChecks);
            }
            checks.push(Check {
                name: name.to_owned(),
                timeout: Duration::from_secs(timeout),
                args,
            });
        }
        if checks.is_empty() {
            return Err(PlanError::Empty);
        }
        Ok(Plan { checks })
    }

    /// The plan in its file format (what `parse` reads back).
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for c in &self.checks {
            s += &format!("{} {} {}\n", c.name, c.timeout.as_secs(), c.args.join(" "));
        }
        s
    }

    /// The sum of the checks' timeouts: what a whole run may take.
    pub fn time_bound(&self) -> Duration {
        self.checks.iter().map(|c| c.timeout).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_sets_parse() {
        for (name, text) in [("builtin", BUILTIN), ("quick", QUICK)] {
            let plan = Plan::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(plan.checks.len() >= 3, "{name}");
            assert_eq!(Plan::parse(&plan.to_text()), Ok(plan));
        }
        let builtin = Plan::parse(BUILTIN).unwrap();
        for want in ["boot-check", "herd", "oversub", "mremap", "fork"] {
            assert!(
                builtin.checks.iter().any(|c| c.name == want),
                "the built-in set lacks {want}"
            );
        }
    }

    #[test]
    fn reads_names_timeouts_and_args() {
        let text = "# c\n\nherd 240 run herd --size 2M # why\nx.y-1 1 boot\n";
        let plan = Plan::parse(text).unwrap();
        assert_eq!(plan.checks.len(), 2);
        assert_eq!(plan.checks[0].name, "herd");
        assert_eq!(plan.checks[0].timeout, Duration::from_secs(240));
        assert_eq!(plan.checks[0].args, ["run", "herd", "--size", "2M"]);
        assert_eq!(plan.time_bound(), Duration::from_secs(241));
    }

    #[test]
    fn refuses_bad_plans() {
        let long_name = format!("{} 10 boot", "n".repeat(MAX_NAME + 1));
        let many_args = format!("a 10 {}", "x ".repeat(MAX_ARGS + 1));
        let many_checks: String = (0..=MAX_CHECKS).map(|i| format!("c{i} 1 boot\n")).collect();
        let cases: &[(&str, PlanError)] = &[
            ("", PlanError::Empty),
            ("# only a comment\n", PlanError::Empty),
            ("bad/name 10 boot", PlanError::BadName { line: 1 }),
            (&long_name, PlanError::BadName { line: 1 }),
            ("a", PlanError::BadTimeout { line: 1 }),
            ("a 0 boot", PlanError::BadTimeout { line: 1 }),
            ("a 3601 boot", PlanError::BadTimeout { line: 1 }),
            ("a -5 boot", PlanError::BadTimeout { line: 1 }),
            (
                "a 99999999999999999999999 boot",
                PlanError::BadTimeout { line: 1 },
            ),
            ("a 10", PlanError::BadArgs { line: 1 }),
            (&many_args, PlanError::BadArgs { line: 1 }),
            ("a 1 boot\n\na 2 boot", PlanError::DuplicateName { line: 3 }),
            (&many_checks, PlanError::TooManyChecks),
        ];
        for (text, want) in cases {
            assert_eq!(Plan::parse(text), Err(*want), "{text:?}");
        }
    }
}
