//! Endpoints a server serves beyond the ones its own flags name: `init`
//! makes them only for the black-box conformance suite (`svm conformance
//! ipc --system`), one with every right of the interface and one with none,
//! so the suite can talk to each real server without taking an endpoint
//! the system needs. Written `INTERFACE:FD:BADGE:RIGHTS` on the command
//! line (`--extra-endpoint Pager:160:900:15`).

use std::fmt;
use std::str::FromStr;

use crate::Rights;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraEndpoint {
    /// The interface's name (`Pager`, `GpuNotify`, ...).
    pub interface: String,
    /// The inherited descriptor.
    pub fd: i32,
    pub badge: u64,
    pub rights: Rights,
}

impl FromStr for ExtraEndpoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let [interface, fd, badge, rights] = parts[..] else {
            return Err(format!("{s:?}: expected INTERFACE:FD:BADGE:RIGHTS"));
        };
        let number = |what: &str, v: &str| format!("{s:?}: {what} {v:?} is not a number");
        let fd: i32 = fd.parse().map_err(|_| number("descriptor", fd))?;
        if fd < 3 {
            return Err(format!("{s:?}: descriptors 0-2 are stdio"));
        }
        let badge = badge.parse().map_err(|_| number("badge", badge))?;
        let bits: u32 = rights.parse().map_err(|_| number("rights", rights))?;
        let rights = Rights::from_bits(bits)
            .ok_or_else(|| format!("{s:?}: unknown rights bits {bits:#x}"))?;
        Ok(Self {
            interface: interface.to_string(),
            fd,
            badge,
            rights,
        })
    }
}

impl fmt::Display for ExtraEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}",
            self.interface,
            self.fd,
            self.badge,
            self.rights.bits()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_prints_and_refuses_the_rest() {
        let e: ExtraEndpoint = "Pager:160:900:15".parse().unwrap();
        assert_eq!(
            e.rights,
            Rights::OBJECT | Rights::VIEW | Rights::ADVISE | Rights::SNAPSHOT
        );
        assert_eq!(e.to_string().parse::<ExtraEndpoint>(), Ok(e));
        for bad in [
            "Pager:160:900",
            "Pager:1:900:0",
            "Pager:x:900:0",
            "Pager:160:900:4294967295",
        ] {
            assert!(bad.parse::<ExtraEndpoint>().is_err(), "{bad} parsed");
        }
    }
}
