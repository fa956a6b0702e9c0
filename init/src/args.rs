//! Checks of `svm`'s command-line numbers, as clap value parsers: a bad
//! value is refused before anything boots, with one plain line naming the
//! limit (`svm` prints clap's first line only, see `bin/svm.rs`).

use crate::size::parse_size;

/// The largest buffer a workload may ask for: one client's bytes of pager
/// objects (`object_bytes` in `manifest::BUDGETS`).
pub const MAX_BUFFER: usize = 8 << 30;
/// CPU threads a workload may start.
pub const MAX_THREADS: usize = 1024;
/// The device model's VRAM, MiB (a multiple of 2 MiB, below its
/// system-memory window; more than a host can back is pointless).
pub const MAX_VRAM_MIB: u64 = 32 << 10;
/// The device model's hardware threads.
pub const MAX_HW_THREADS: u16 = 4096;
/// Most chunks a GPU server's fault workers move ahead of a stream of
/// faults (its `--fault-ahead`; `xe_svm::fault_ahead::MAX_AHEAD`).
pub const MAX_FAULT_AHEAD: u8 = 8;

/// A buffer size: `2M`, `512K`, `1G` or bytes; a multiple of 4 KiB from
/// 4 KiB to [`MAX_BUFFER`].
pub fn buffer_size(s: &str) -> Result<usize, String> {
    let limit = "a multiple of 4 KiB from 4K to 8G, like 2M or 64M";
    match parse_size(s) {
        Some(b) if b <= MAX_BUFFER => Ok(b),
        Some(_) => Err(format!(
            "{s} is larger than 8G (one client's bytes of objects)"
        )),
        None => Err(format!("{s:?} is not {limit}")),
    }
}

/// An integer in `min..=max`.
pub fn int<T>(min: T, max: T) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync
where
    T: std::str::FromStr + PartialOrd + Copy + std::fmt::Display + Send + Sync + 'static,
{
    move |s: &str| match s.trim().parse::<T>() {
        Ok(v) if v >= min && v <= max => Ok(v),
        _ => Err(format!("{s:?} is not a whole number from {min} to {max}")),
    }
}

/// A number in `(min, max]`.
pub fn above(min: f64, max: f64) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync {
    move |s: &str| match s.trim().parse::<f64>() {
        Ok(v) if v > min && v <= max => Ok(v),
        _ => Err(format!(
            "{s:?} is not a number above {min} and at most {max}"
        )),
    }
}

/// CPU threads: 1 to [`MAX_THREADS`].
pub fn threads(s: &str) -> Result<usize, String> {
    int(1, MAX_THREADS)(s)
}

/// VRAM of the device model in MiB: even, 2 to [`MAX_VRAM_MIB`].
pub fn vram_mib(s: &str) -> Result<u64, String> {
    let v = int(2, MAX_VRAM_MIB)(s)?;
    if v % 2 != 0 {
        return Err(format!("{v} MiB is not a multiple of 2 MiB"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_named_and_edges_pass() {
        assert_eq!(buffer_size("8G"), Ok(8 << 30));
        assert_eq!(buffer_size("4K"), Ok(4096));
        assert!(buffer_size("999G").unwrap_err().contains("8G"));
        assert!(buffer_size("0").unwrap_err().contains("4 KiB"));
        assert!(buffer_size("12x").unwrap_err().contains("4 KiB"));
        assert_eq!(threads("1024"), Ok(1024));
        assert!(threads("100000").unwrap_err().contains("1 to 1024"));
        assert!(threads("0").is_err() && threads("-1").is_err() && threads("two").is_err());
        assert_eq!(vram_mib("32"), Ok(32));
        assert!(vram_mib("33").unwrap_err().contains("2 MiB"));
        assert!(above(0.0, 1.0)("0").is_err());
        assert_eq!(above(0.0, 1.0)("1"), Ok(1.0));
        assert!(above(0.0, 64.0)("NaN").is_err());
    }
}
