//! The GPU server's metadata arena (DESIGN.md 1), sized at boot: every
//! client session at its `metadata_bytes` limit, the fault logs of their
//! VMs, and a fixed allowance for the pager peer. Object frame words and
//! fault logs come from it (`server.rs`, `fault_log.rs`), so no client can
//! make the server's own heap grow; a full arena is `OutOfMetadata` to the
//! client that asked. An arena too small for the budget, or one the host
//! will not give, is a [`ConfigError`] at boot, not a panic later.

use std::sync::Arc;

use session::arena::ArenaError;
use session::Arena;

use crate::budget::GpuBudget;

/// Client sessions a GPU server is sized for by default (the manifest's
/// client slots, `launcher/src/manifest.rs`, `MAX_CLIENTS`).
pub const MAX_CLIENT_SESSIONS: usize = 8;

/// Metadata outside the client sessions' budgets, for the pager peer:
/// objects it still holds pages of in VRAM after their client's session
/// ended (they go when the pager frees those pages), objects added for no
/// session (the simulation's), and the allocator's rounding.
pub const PEER_METADATA: u64 = 1 << 20;

/// How a GPU server's sessions and arena are sized.
#[derive(Debug, Clone)]
pub struct Config {
    /// What each client may make it hold.
    pub budget: GpuBudget,
    /// Client sessions it admits (its `Gpu` endpoints).
    pub clients: usize,
    /// The metadata arena.
    pub arena_bytes: u64,
    /// The GPU this server drives (`--gpu-id`; 0 with one GPU): the GPU
    /// its collects name and the pager routes its notes to.
    pub gpu: u8,
}

impl Config {
    /// `clients` sessions limited by `budget`, the arena just large enough.
    pub fn for_clients(budget: GpuBudget, clients: usize) -> Self {
        let mut cfg = Self {
            budget,
            clients,
            arena_bytes: 0,
            gpu: 0,
        };
        cfg.arena_bytes = cfg.arena_bytes_needed();
        cfg
    }

    /// What every session at its limits needs (`u64::MAX` past `u64`).
    pub fn arena_bytes_needed(&self) -> u64 {
        self.budget
            .arena_bytes_needed(self.clients, PEER_METADATA)
            .unwrap_or(u64::MAX)
    }

    /// The arena, taken from the process once, at boot.
    pub fn arena(&self) -> Result<Arc<Arena>, ConfigError> {
        let (need, have) = (self.arena_bytes_needed(), self.arena_bytes);
        if need > have {
            return Err(ConfigError::ArenaTooSmall { need, have });
        }
        let bytes = usize::try_from(have).map_err(|_| ConfigError::Arena(ArenaError::BadSize))?;
        let arena = Arena::new(bytes).map_err(ConfigError::Arena)?;
        log::info!(
            "xe-svm: metadata arena {} KiB for {} client sessions",
            have >> 10,
            self.clients
        );
        Ok(arena)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::for_clients(GpuBudget::default(), MAX_CLIENT_SESSIONS)
    }
}

/// Why a GPU server could not be sized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The arena cannot hold every client at its metadata limit.
    ArenaTooSmall { need: u64, have: u64 },
    /// The host would not give the arena (or its size is not representable).
    Arena(ArenaError),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ArenaTooSmall { need, have } => write!(
                f,
                "the metadata arena ({have} bytes) is smaller than every client at its \
                 metadata_bytes budget needs ({need} bytes)"
            ),
            Self::Arena(e) => write!(f, "metadata arena: {e:?}"),
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_arena_holds_every_client_at_its_limits() {
        let cfg = Config::default();
        let b = GpuBudget::default();
        assert!(cfg.arena_bytes >= b.metadata_bytes * MAX_CLIENT_SESSIONS as u64);
        assert_eq!(cfg.arena().unwrap().size() as u64, cfg.arena_bytes);
    }

    #[test]
    fn an_arena_smaller_than_the_budget_needs_is_a_typed_error() {
        let mut cfg = Config::default();
        let need = cfg.arena_bytes;
        cfg.arena_bytes = need - 1;
        assert_eq!(
            cfg.arena().err(),
            Some(ConfigError::ArenaTooSmall {
                need,
                have: need - 1
            })
        );
    }

    #[test]
    fn a_budget_past_u64_is_a_typed_error_not_an_overflow() {
        let budget = GpuBudget::unlimited();
        let cfg = Config::for_clients(budget, MAX_CLIENT_SESSIONS);
        assert_eq!(cfg.arena_bytes, u64::MAX);
        // Asked for all of it: refused, not a panic or an abort.
        assert!(matches!(cfg.arena(), Err(ConfigError::Arena(_))));
    }
}
