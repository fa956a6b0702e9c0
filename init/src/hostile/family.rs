//! The hostile client's kinds of attack, by name (`--families`).

use super::conn::Hostile;
use super::{fields, floods, frames, ids, memfd};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    PagerFrames,
    GpuFrames,
    PagerFields,
    GpuFields,
    PagerIds,
    GpuIds,
    PagerFloods,
    GpuFloods,
    Memfd,
    /// The last act: calls left in flight as the endpoints close.
    Disconnect,
}

impl Family {
    pub const ALL: [Family; 10] = [
        Self::PagerFrames,
        Self::GpuFrames,
        Self::PagerFields,
        Self::GpuFields,
        Self::PagerIds,
        Self::GpuIds,
        Self::PagerFloods,
        Self::GpuFloods,
        Self::Memfd,
        Self::Disconnect,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::PagerFrames => "pager-frames",
            Self::GpuFrames => "gpu-frames",
            Self::PagerFields => "pager-fields",
            Self::GpuFields => "gpu-fields",
            Self::PagerIds => "pager-ids",
            Self::GpuIds => "gpu-ids",
            Self::PagerFloods => "pager-floods",
            Self::GpuFloods => "gpu-floods",
            Self::Memfd => "memfd",
            Self::Disconnect => "disconnect",
        }
    }

    /// `all`, or names separated by commas.
    pub fn parse_list(s: &str) -> Result<Vec<Family>, String> {
        if s.trim() == "all" {
            return Ok(Self::ALL.to_vec());
        }
        let mut out = Vec::new();
        for name in s.split(',').map(str::trim) {
            let f = Self::ALL
                .into_iter()
                .find(|f| f.name() == name)
                .ok_or_else(|| {
                    let names: Vec<_> = Self::ALL.iter().map(|f| f.name()).collect();
                    format!(
                        "no attack family {name:?} (all, or of: {})",
                        names.join(", ")
                    )
                })?;
            if !out.contains(&f) {
                out.push(f);
            }
        }
        Ok(out)
    }

    /// One round of this family (the disconnect is not a round: see
    /// `super::disconnect`).
    pub fn round(self, h: &mut Hostile) {
        match self {
            Self::PagerFrames => frames::round(h, &[false]),
            Self::GpuFrames => frames::round(h, &[true]),
            Self::PagerFields => fields::pager_round(h),
            Self::GpuFields => fields::gpu_round(h),
            Self::PagerIds => ids::pager_round(h),
            Self::GpuIds => ids::gpu_round(h),
            Self::PagerFloods => floods::pager_round(h),
            Self::GpuFloods => floods::gpu_round(h),
            Self::Memfd => memfd::round(h),
            Self::Disconnect => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Family;

    #[test]
    fn names_parse_back() {
        assert_eq!(Family::parse_list("all").unwrap(), Family::ALL.to_vec());
        for f in Family::ALL {
            assert_eq!(Family::parse_list(f.name()).unwrap(), vec![f]);
        }
        assert_eq!(
            Family::parse_list("memfd, pager-ids,memfd").unwrap(),
            vec![Family::Memfd, Family::PagerIds]
        );
        assert!(Family::parse_list("gpu")
            .unwrap_err()
            .contains("pager-frames"));
    }
}
