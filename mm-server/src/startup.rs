//! What both runtimes (host and Redox) build the broker from: the VRAM
//! size and the watermarks as percentages, checked.

use crate::broker::Broker;

/// Why the flags do not make a broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupError {
    /// Watermarks must satisfy low <= high <= 100.
    Watermarks { low_pct: u64, high_pct: u64 },
    /// The VRAM size times a percentage does not fit 64 bits.
    TooLarge { vram_bytes: u64 },
}

impl std::fmt::Display for StartupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Watermarks { low_pct, high_pct } => write!(
                f,
                "watermarks must satisfy low <= high <= 100 (got {low_pct} and {high_pct})"
            ),
            Self::TooLarge { vram_bytes } => write!(f, "--vram-bytes {vram_bytes} is too large"),
        }
    }
}

fn percent(bytes: u64, pct: u64) -> Result<u64, StartupError> {
    bytes
        .checked_mul(pct)
        .map(|b| b / 100)
        .ok_or(StartupError::TooLarge { vram_bytes: bytes })
}

/// The broker for `vram_bytes` with the free-VRAM watermarks in percent.
pub fn broker(vram_bytes: u64, low_pct: u64, high_pct: u64) -> Result<Broker, StartupError> {
    if low_pct > high_pct || high_pct > 100 {
        return Err(StartupError::Watermarks { low_pct, high_pct });
    }
    Ok(Broker::with_watermarks(
        vram_bytes,
        percent(vram_bytes, low_pct)?,
        percent(vram_bytes, high_pct)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermarks_are_checked_and_computed_without_overflow() {
        let b = broker(1000, 10, 20).unwrap();
        assert_eq!(b.watermarks(), (100, 200));
        assert_eq!(
            broker(1000, 30, 20).err(),
            Some(StartupError::Watermarks {
                low_pct: 30,
                high_pct: 20
            })
        );
        assert!(matches!(
            broker(1000, 10, 101),
            Err(StartupError::Watermarks { .. })
        ));
        assert_eq!(
            broker(u64::MAX, 10, 20).err(),
            Some(StartupError::TooLarge {
                vram_bytes: u64::MAX
            })
        );
    }
}
