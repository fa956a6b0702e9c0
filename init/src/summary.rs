//! The closing line of every runner: `N passed, N failed`, alone on a line
//! (a runner may add `, N expected failures` or `, N skipped` after it, and
//! one word with a colon may stand before it). The guest prints it on the
//! serial console; `svm qemu` finds it there and takes its exit status from
//! it.

use std::fmt;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub passed: u32,
    pub failed: u32,
}

impl Summary {
    /// Green: something ran and nothing failed.
    pub fn is_green(&self) -> bool {
        self.failed == 0 && self.passed > 0
    }

    /// Adds another runner's counts (saturating: counts come from a child's
    /// output, which may say anything).
    pub fn add(&mut self, other: Summary) {
        self.passed = self.passed.saturating_add(other.passed);
        self.failed = self.failed.saturating_add(other.failed);
    }

    /// Reads one line; `None` unless it is a summary line. Trailing `\r`
    /// (serial consoles) and surrounding blanks are ignored.
    pub fn parse_line(line: &str) -> Option<Summary> {
        let line = line.trim();
        // One optional leading word with a colon (`result: 3 passed, ...`).
        let body = match line.split_once(": ") {
            Some((word, rest)) if !word.is_empty() && !word.contains(' ') => rest,
            _ => line,
        };
        let (passed, rest) = body.split_once(" passed, ")?;
        let (failed, tail) = rest.split_once(" failed").unwrap_or((rest, ""));
        if !(tail.is_empty() || tail.starts_with(", ")) {
            return None;
        }
        Some(Summary {
            passed: count(passed)?,
            failed: count(failed)?,
        })
    }

    /// The last summary line of a log.
    pub fn last_in(log: &str) -> Option<Summary> {
        log.lines().rev().find_map(Summary::parse_line)
    }
}

/// A count: decimal digits only (no sign, no blanks), within `u32`.
fn count(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} passed, {} failed", self.passed, self.failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_forms_runners_print() {
        let s = |p, f| {
            Some(Summary {
                passed: p,
                failed: f,
            })
        };
        assert_eq!(Summary::parse_line("3 passed, 0 failed"), s(3, 0));
        assert_eq!(Summary::parse_line("  12 passed, 1 failed\r"), s(12, 1));
        assert_eq!(Summary::parse_line("result: 4 passed, 2 failed"), s(4, 2));
        assert_eq!(
            Summary::parse_line("7 passed, 0 failed, 3 expected failures"),
            s(7, 0)
        );
        assert_eq!(
            Summary::parse_line("1 passed, 0 failed, 2 skipped"),
            s(1, 0)
        );
    }

    #[test]
    fn refuses_lines_that_only_look_alike() {
        for line in [
            "",
            "passed, failed",
            "x passed, 0 failed",
            "-1 passed, 0 failed",
            "3 passed, 0 failedX",
            "3 passed,0 failed",
            "ok herd: 3 passed, 0 failed",
            "99999999999 passed, 0 failed",
            "3 passed, +0 failed",
        ] {
            assert_eq!(Summary::parse_line(line), None, "{line:?}");
        }
    }

    #[test]
    fn the_last_line_counts() {
        let log = "1 passed, 1 failed\nsome output\n2 passed, 0 failed\r\nsvm-guest: bye\n";
        assert_eq!(
            Summary::last_in(log),
            Some(Summary {
                passed: 2,
                failed: 0
            })
        );
        assert_eq!(Summary::last_in("no summary here\n"), None);
    }

    #[test]
    fn green_needs_a_pass_and_no_failure() {
        assert!(Summary {
            passed: 1,
            failed: 0
        }
        .is_green());
        assert!(!Summary {
            passed: 0,
            failed: 0
        }
        .is_green());
        assert!(!Summary {
            passed: 5,
            failed: 1
        }
        .is_green());
    }
}
