//! The core's configuration from the flags both runtimes take:
//! `--budget name=value,...`, the number of clients, `--arena-mib`; and
//! the periodic work both runtimes run over it.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::core::budget::PagerBudget;
use crate::core::runtime::Runtime;
use crate::core::{Config, Core, PEER_METADATA};

/// Undoes expired collects (`Core::expire_collects`) every quarter lease
/// (at most every second), until the core is dropped.
pub fn spawn_lease_reaper<R: Runtime>(core: &Arc<Core<R>>) -> std::io::Result<()> {
    let lease = Duration::from_micros(core.cfg.collect_lease_us);
    let period = (lease / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let core: Weak<Core<R>> = Arc::downgrade(core);
    std::thread::Builder::new()
        .name("pager-lease".into())
        .spawn(move || loop {
            std::thread::sleep(period);
            match core.upgrade() {
                Some(c) => {
                    c.expire_collects();
                }
                None => return,
            }
        })
        .map(|_| ())
}

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
