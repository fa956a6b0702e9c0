//! Sessions: what a server keeps per client, in one shape for every server.
//!
//! A server core keeps one session per client badge (STYLE: "a session is
//! the unit a server reasons about"). A session holds
//! - handle tables ([`HandleTable`]) whose ids carry a generation, so a
//!   stale or guessed id names nothing instead of someone else's entry;
//! - quotas ([`Quota`], grouped by the [`budgets!`] macro), one per
//!   resource the client can make the server hold, with limits from the
//!   manifest: exhausting one is a typed error to that client only;
//! - a metadata allocator ([`Meta`]) that draws from the server's arena
//!   ([`Arena`], sized at boot, DESIGN.md 1) and charges the session's
//!   metadata quota, so no client can exhaust the server's memory;
//! - per-range attributes ([`RangeMap`]) with a bounded number of ranges.
//!
//! The crate is `no_std` + `alloc`: the cores that use it run on the host,
//! under the schedule explorer and in the simulation unchanged.

#![no_std]

extern crate alloc;

pub mod arena;
pub mod budget;
pub mod handle;
pub mod journal;
pub mod ranges;
pub mod table;

pub use arena::{Arena, Meta};
pub use budget::{BudgetParseError, OverBudget, Quota};
pub use handle::Handle;
pub use ranges::{RangeMap, TooManyRanges};
pub use table::{HandleTable, TableError};

#[doc(hidden)]
pub extern crate alloc as __alloc;
