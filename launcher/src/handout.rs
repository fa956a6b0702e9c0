//! The endpoints a launcher hands a client it spawns: inherited
//! descriptors, named in one environment variable, [`ENV`], as
//! `label=fd;label=fd` (labels as the launch plan keeps them,
//! `<scheme>/<interface>.<badge>`, e.g. `xe-svm/gpu.100`). A client reads
//! it with [`parse`], which refuses anything malformed: the variable is
//! input like any other.

/// The variable's name.
pub const ENV: &str = "XE_SVM_ENDPOINTS";
/// At most this many endpoints in one hand-out.
pub const MAX_ENDPOINTS: usize = 64;
/// A label is at most this long.
pub const MAX_LABEL: usize = 128;

/// Why a hand-out does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandoutError {
    /// An entry without `=`, or with an empty label.
    BadEntry(String),
    /// A label longer than [`MAX_LABEL`] or with a character other than
    /// ASCII letters, digits, `.`, `-`, `_` and `/`.
    BadLabel(String),
    /// A descriptor that is not a number in `0..=i32::MAX`.
    BadFd(String),
    /// The same label twice.
    Duplicate(String),
    TooMany,
}

fn label_ok(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= MAX_LABEL
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"./-_".contains(&b))
}

/// The variable's value for `(label, fd)` pairs.
pub fn encode(endpoints: &[(String, i32)]) -> Result<String, HandoutError> {
    if endpoints.len() > MAX_ENDPOINTS {
        return Err(HandoutError::TooMany);
    }
    let mut parts = Vec::with_capacity(endpoints.len());
    for (label, fd) in endpoints {
        if !label_ok(label) {
            return Err(HandoutError::BadLabel(label.clone()));
        }
        if *fd < 0 {
            return Err(HandoutError::BadFd(fd.to_string()));
        }
        parts.push(format!("{label}={fd}"));
    }
    Ok(parts.join(";"))
}

/// The `(label, fd)` pairs of a value (empty value: none).
pub fn parse(value: &str) -> Result<Vec<(String, i32)>, HandoutError> {
    let mut out: Vec<(String, i32)> = Vec::new();
    for entry in value.split(';').filter(|e| !e.is_empty()) {
        if out.len() == MAX_ENDPOINTS {
            return Err(HandoutError::TooMany);
        }
        let (label, fd) = entry
            .split_once('=')
            .ok_or_else(|| HandoutError::BadEntry(entry.into()))?;
        if !label_ok(label) {
            return Err(HandoutError::BadLabel(label.into()));
        }
        let fd: i32 = fd
            .parse()
            .ok()
            .filter(|&n: &i32| n >= 0)
            .ok_or_else(|| HandoutError::BadFd(fd.into()))?;
        if out.iter().any(|(l, _)| l == label) {
            return Err(HandoutError::Duplicate(label.into()));
        }
        out.push((label.into(), fd));
    }
    Ok(out)
}

/// The descriptor of `label` in a parsed hand-out.
pub fn find(endpoints: &[(String, i32)], label: &str) -> Option<i32> {
    endpoints
        .iter()
        .find(|(l, _)| l == label)
        .map(|&(_, fd)| fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hand_out_round_trips() {
        let v = vec![
            ("xe-svm/gpu.100".to_string(), 5),
            ("pager/pager.100".to_string(), 6),
            ("mm-server/pressure.2".to_string(), 7),
        ];
        let text = encode(&v).unwrap();
        assert_eq!(
            text,
            "xe-svm/gpu.100=5;pager/pager.100=6;mm-server/pressure.2=7"
        );
        assert_eq!(parse(&text).unwrap(), v);
        assert_eq!(find(&v, "pager/pager.100"), Some(6));
        assert_eq!(parse("").unwrap(), vec![]);
    }

    #[test]
    fn a_malformed_hand_out_is_refused() {
        assert!(matches!(
            parse("xe-svm/gpu.100"),
            Err(HandoutError::BadEntry(_))
        ));
        assert!(matches!(parse("=5"), Err(HandoutError::BadLabel(_))));
        assert!(matches!(parse("a b=5"), Err(HandoutError::BadLabel(_))));
        assert!(matches!(parse("a=-1"), Err(HandoutError::BadFd(_))));
        assert!(matches!(
            parse("a=99999999999"),
            Err(HandoutError::BadFd(_))
        ));
        assert!(matches!(parse("a=x"), Err(HandoutError::BadFd(_))));
        assert!(matches!(parse("a=1;a=2"), Err(HandoutError::Duplicate(_))));
        let many: Vec<String> = (0..=MAX_ENDPOINTS).map(|i| format!("e{i}={i}")).collect();
        assert_eq!(parse(&many.join(";")), Err(HandoutError::TooMany));
        let long = "x".repeat(MAX_LABEL + 1);
        assert!(matches!(
            parse(&format!("{long}=1")),
            Err(HandoutError::BadLabel(_))
        ));
        assert!(
            encode(&[("a=b".into(), 1)]).is_err(),
            "no separator in a label"
        );
        assert!(encode(&[("a".into(), -3)]).is_err());
    }
}
