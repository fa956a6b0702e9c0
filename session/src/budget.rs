//! Budgets: a limit per resource a client can make a server hold, set in
//! the manifest, and the quota that counts what the client holds now.
//!
//! A server declares its budget once with [`budgets!`]: the limits struct
//! (defaults, parsed from the manifest's `name=value,...` flag, listed for
//! the README) and the quotas struct a session keeps (one [`Quota`] per
//! resource). Charging past a limit is [`OverBudget`], a typed error to
//! that client; the others never notice.

use core::sync::atomic::{AtomicU64, Ordering};

/// A charge would pass its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget;

/// What one client holds of one resource, and its limit.
#[derive(Debug)]
pub struct Quota {
    limit: u64,
    used: AtomicU64,
}

impl Quota {
    pub const fn new(limit: u64) -> Self {
        Self {
            limit,
            used: AtomicU64::new(0),
        }
    }

    /// Takes `n` more, or nothing at all if that would pass the limit.
    pub fn try_charge(&self, n: u64) -> Result<(), OverBudget> {
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            let next = cur
                .checked_add(n)
                .filter(|v| *v <= self.limit)
                .ok_or(OverBudget)?;
            match self
                .used
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(now) => cur = now,
            }
        }
    }

    /// Gives back `n` (never below zero: a double release is a server bug
    /// that must not turn into a huge allowance).
    pub fn release(&self, n: u64) {
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            debug_assert!(cur >= n, "quota released more than it held ({cur} < {n})");
            let next = cur.saturating_sub(n);
            match self
                .used
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(now) => cur = now,
            }
        }
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }
}

/// Why a budget flag could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BudgetParseError {
    /// `name=value` expected.
    Malformed,
    /// No resource of that name.
    UnknownResource,
    /// Not a number (suffixes K, M, G are allowed: powers of 1024).
    BadValue,
}

/// Reads `1234`, `64K`, `8M`, `2G` (powers of 1024) without overflow.
pub fn parse_amount(s: &str) -> Result<u64, BudgetParseError> {
    let (digits, scale) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 1 << 20),
        Some(b'G' | b'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = digits.parse().map_err(|_| BudgetParseError::BadValue)?;
    n.checked_mul(scale).ok_or(BudgetParseError::BadValue)
}

/// Declares a server's budget: a limits struct with defaults and a quotas
/// struct with one [`Quota`] per resource.
///
/// ```
/// session::budgets! {
///     /// What one client may make the example server hold.
///     pub struct ExampleBudget, ExampleQuotas {
///         /// Things.
///         things: 16,
///         /// Bytes of stuff.
///         stuff_bytes: 1 << 20,
///     }
/// }
/// let mut b = ExampleBudget::default();
/// b.apply("things=4,stuff_bytes=64K").unwrap();
/// let q = ExampleQuotas::new(&b);
/// assert!(q.things.try_charge(4).is_ok());
/// assert!(q.things.try_charge(1).is_err());
/// ```
#[macro_export]
macro_rules! budgets {
    (
        $(#[$meta:meta])*
        pub struct $limits:ident, $quotas:ident {
            $( $(#[doc = $doc:literal])* $name:ident : $default:expr ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $limits {
            $( $(#[doc = $doc])* pub $name: u64, )*
        }

        impl Default for $limits {
            fn default() -> Self {
                Self { $( $name: $default, )* }
            }
        }

        impl $limits {
            /// Every resource: (name, limit, what it counts).
            pub fn entries(&self) -> impl Iterator<Item = (&'static str, u64, &'static str)> {
                [$( (stringify!($name), self.$name, concat!($($doc),*).trim_ascii()) ),*]
                    .into_iter()
            }

            /// Sets limits from `name=value,name=value` (the manifest's flag).
            pub fn apply(&mut self, spec: &str) -> Result<(), $crate::BudgetParseError> {
                for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let (name, value) =
                        item.split_once('=').ok_or($crate::BudgetParseError::Malformed)?;
                    let value = $crate::budget::parse_amount(value.trim())?;
                    match name.trim() {
                        $( stringify!($name) => self.$name = value, )*
                        _ => return Err($crate::BudgetParseError::UnknownResource),
                    }
                }
                Ok(())
            }

            /// The same limits as a `name=value,...` flag.
            pub fn to_spec(&self) -> $crate::__alloc::string::String {
                let mut s = $crate::__alloc::string::String::new();
                $(
                    if !s.is_empty() { s.push(','); }
                    s.push_str(stringify!($name));
                    s.push('=');
                    s.push_str(&$crate::__alloc::format!("{}", self.$name));
                )*
                s
            }
        }

        /// What one session holds now, against its limits.
        #[derive(Debug)]
        pub struct $quotas {
            $( $(#[doc = $doc])* pub $name: $crate::Quota, )*
        }

        impl $quotas {
            pub fn new(limits: &$limits) -> Self {
                Self { $( $name: $crate::Quota::new(limits.$name), )* }
            }

            /// Every resource: (name, used, limit).
            pub fn usage(&self) -> impl Iterator<Item = (&'static str, u64, u64)> + '_ {
                [$( (stringify!($name), self.$name.used(), self.$name.limit()) ),*].into_iter()
            }

            /// Whether the session holds nothing at all.
            pub fn is_empty(&self) -> bool {
                true $( && self.$name.used() == 0 )*
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::budgets! {
        /// Test budget.
        pub struct TestBudget, TestQuotas {
            /// Objects.
            objects: 4,
            /// Bytes.
            bytes: 1 << 20,
        }
    }

    #[test]
    fn charges_stop_at_the_limit_and_overflow_is_refused() {
        let q = Quota::new(10);
        assert_eq!(q.try_charge(7), Ok(()));
        assert_eq!(q.try_charge(4), Err(OverBudget));
        assert_eq!(q.used(), 7, "a refused charge takes nothing");
        assert_eq!(
            q.try_charge(u64::MAX),
            Err(OverBudget),
            "a wrapping charge is refused"
        );
        q.release(7);
        assert_eq!(q.used(), 0);
    }

    #[test]
    fn budgets_parse_from_the_manifest_flag() {
        let mut b = TestBudget::default();
        assert_eq!(b.objects, 4);
        b.apply("objects=9, bytes=2M").unwrap();
        assert_eq!((b.objects, b.bytes), (9, 2 << 20));
        assert_eq!(b.apply("nope=1"), Err(BudgetParseError::UnknownResource));
        assert_eq!(b.apply("objects"), Err(BudgetParseError::Malformed));
        assert_eq!(
            b.apply("objects=99999999999999999999"),
            Err(BudgetParseError::BadValue)
        );
        assert_eq!(
            b.apply("objects=17179869184G"),
            Err(BudgetParseError::BadValue)
        );
        let mut c = TestBudget::default();
        c.apply(&b.to_spec()).unwrap();
        assert_eq!(b, c);
        let names: alloc::vec::Vec<_> = b.entries().map(|(n, _, d)| (n, d)).collect();
        assert_eq!(names, [("objects", "Objects."), ("bytes", "Bytes.")]);
    }

    #[test]
    fn quotas_report_usage_and_emptiness() {
        let q = TestQuotas::new(&TestBudget::default());
        assert!(q.is_empty());
        q.objects.try_charge(2).unwrap();
        assert!(!q.is_empty());
        assert_eq!(q.usage().next(), Some(("objects", 2, 4)));
    }
}
