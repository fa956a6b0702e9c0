//! Sizes on the command line: `2M`, `64M`, `512K`, `1G` or bytes.

/// A positive multiple of 4 KiB, or `None`.
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (num, mul) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1 << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: usize = num.parse().ok()?;
    let bytes = n.checked_mul(mul)?;
    (bytes > 0 && bytes % 4096 == 0).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("512k"), Some(512 << 10));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("0"), None);
        assert_eq!(parse_size("1000"), None);
        assert_eq!(parse_size("99999999999999999G"), None);
        assert_eq!(parse_size("M"), None);
    }
}
