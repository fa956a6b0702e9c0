//! Lines of `/proc/<pid>/maps`: `start-end perms offset major:minor inode
//! path`, all numbers hex but the inode (decimal). Only file mappings
//! (inode not 0) are of use to the pager (`core/growth.rs`).

use crate::core::runtime::{FileId, FileMapping};

/// One line, if it is a well-formed file mapping.
pub fn parse_line(line: &str) -> Option<FileMapping> {
    let mut w = line.split_ascii_whitespace();
    let (start, end) = w.next()?.split_once('-')?;
    let _perms = w.next()?;
    let offset = w.next()?;
    let (major, minor) = w.next()?.split_once(':')?;
    let ino: u64 = w.next()?.parse().ok()?;
    let hex = |s: &str| u64::from_str_radix(s, 16).ok();
    let (start, end) = (hex(start)?, hex(end)?);
    if ino == 0 || start >= end {
        return None;
    }
    Some(FileMapping {
        start,
        end,
        offset: hex(offset)?,
        file: FileId {
            major: u32::try_from(hex(major)?).ok()?,
            minor: u32::try_from(hex(minor)?).ok()?,
            ino,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_mappings_parse_and_the_rest_do_not() {
        let line = "7f10a0200000-7f10a0400000 rw-s 00200000 00:01 4123 /memfd:svm (deleted)";
        assert_eq!(
            parse_line(line),
            Some(FileMapping {
                start: 0x7f10_a020_0000,
                end: 0x7f10_a040_0000,
                offset: 0x20_0000,
                file: FileId {
                    major: 0,
                    minor: 1,
                    ino: 4123
                },
            })
        );
        for bad in [
            "7f10a0200000-7f10a0400000 rw-p 00000000 00:00 0",
            "7f10a0400000-7f10a0200000 rw-s 0 00:01 5 /x",
            "garbage",
            "",
            "1-2 r 3 zz:1 5",
        ] {
            assert_eq!(parse_line(bad), None, "{bad:?}");
        }
    }
}
