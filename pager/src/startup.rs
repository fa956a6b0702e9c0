//! The core's configuration from the flags both runtimes take:
//! `--budget name=value,...`, the number of clients, `--arena-mib`.

use crate::core::budget::PagerBudget;
use crate::core::{Config, PEER_METADATA};

/// The core's configuration; a bad flag is a one-line error.
pub fn core_config(budget: &str, clients: usize, arena_mib: Option<u64>) -> Result<Config, String> {
    let mut b = PagerBudget::default();
    b.apply(budget)
        .map_err(|e| format!("--budget {budget:?}: {e:?}"))?;
    let clients = clients.max(1);
    let arena_bytes = match arena_mib {
        Some(mib) => mib
            .checked_mul(1 << 20)
            .ok_or_else(|| format!("--arena-mib {mib}: too large"))?,
        None => b
            .arena_bytes_needed(clients, PEER_METADATA)
            .ok_or("--budget: metadata_bytes times the clients overflows")?,
    };
    Ok(Config {
        budget: b,
        max_clients: clients,
        arena_bytes,
        ..Config::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_make_the_core_config_or_a_one_line_error() {
        let c = core_config("", 3, None).unwrap();
        assert_eq!(c.max_clients, 3);
        let needed = c.budget.arena_bytes_needed(3, PEER_METADATA).unwrap();
        assert_eq!(c.arena_bytes, needed);
        assert_eq!(core_config("", 0, Some(2)).unwrap().arena_bytes, 2 << 20);
        assert_eq!(core_config("", 0, Some(2)).unwrap().max_clients, 1);
        assert!(core_config("", 1, Some(u64::MAX))
            .unwrap_err()
            .contains("too large"));
        assert!(core_config("no_such=1", 1, None).is_err());
    }
}
