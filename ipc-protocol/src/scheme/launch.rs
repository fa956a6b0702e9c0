//! What the launcher does on Redox, as data: which endpoints it opens and
//! what it does with each (hand it to a server through that server's
//! `control` endpoint, or keep it for a client it spawns). `init` builds
//! the plan from its manifest (`launcher/src/redox_plan.rs`, host-tested);
//! `redox_launch.rs` carries it out on Redox.

use super::handoff::CONTROL_PATH;

/// An endpoint path: `/scheme/<scheme>/<path>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    pub scheme: String,
    pub path: String,
}

impl Path {
    pub fn new(scheme: &str, path: &str) -> Self {
        Self {
            scheme: scheme.into(),
            path: path.into(),
        }
    }

    /// The `control` endpoint of `scheme`.
    pub fn control(scheme: &str) -> Self {
        Self::new(scheme, CONTROL_PATH)
    }

    /// What `open` takes.
    pub fn full(&self) -> String {
        format!("/scheme/{}/{}", self.scheme, self.path)
    }
}

/// What the launcher does with an endpoint it opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Use {
    /// Hand it to the server owning scheme `to` as `role` (the endpoint's
    /// `Interface::ID`; `handoff.rs`).
    Handoff { to: String, role: u16 },
    /// Keep it for the client processes the launcher spawns (per-client
    /// endpoints, status), labelled for the launcher's own bookkeeping.
    Keep { label: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub open: Path,
    pub then: Use,
}

/// The whole plan: the schemes to wait for, then the steps in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchPlan {
    /// Every scheme the plan opens or hands to.
    pub schemes: Vec<String>,
    pub steps: Vec<Step>,
}

/// Why a plan is not one the servers can accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// One endpoint opened twice (an endpoint is opened once).
    OpenedTwice(String),
    /// Two handles for one role of one server.
    RoleTwice { to: String, role: u16 },
    /// A handoff to a scheme the plan does not wait for.
    UnknownScheme(String),
}

impl LaunchPlan {
    /// Checks what the servers would refuse, before anything is opened.
    pub fn check(&self) -> Result<(), PlanError> {
        let mut opened: Vec<String> = Vec::new();
        let mut roles: Vec<(&str, u16)> = Vec::new();
        for s in &self.steps {
            let full = s.open.full();
            if opened.contains(&full) {
                return Err(PlanError::OpenedTwice(full));
            }
            opened.push(full);
            if !self.schemes.contains(&s.open.scheme) {
                return Err(PlanError::UnknownScheme(s.open.scheme.clone()));
            }
            if let Use::Handoff { to, role } = &s.then {
                if !self.schemes.contains(to) {
                    return Err(PlanError::UnknownScheme(to.clone()));
                }
                if roles.contains(&(to.as_str(), *role)) {
                    return Err(PlanError::RoleTwice {
                        to: to.clone(),
                        role: *role,
                    });
                }
                roles.push((to, *role));
            }
        }
        Ok(())
    }

    /// The schemes that receive handoffs (their `control` is opened).
    pub fn receivers(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .steps
            .iter()
            .filter_map(|s| match &s.then {
                Use::Handoff { to, .. } => Some(to.as_str()),
                Use::Keep { .. } => None,
            })
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handoff(scheme: &str, path: &str, to: &str, role: u16) -> Step {
        Step {
            open: Path::new(scheme, path),
            then: Use::Handoff {
                to: to.into(),
                role,
            },
        }
    }

    fn plan(steps: Vec<Step>) -> LaunchPlan {
        LaunchPlan {
            schemes: vec!["a".into(), "b".into()],
            steps,
        }
    }

    #[test]
    fn a_plan_the_servers_would_refuse_is_refused_before_opening() {
        let ok = plan(vec![
            handoff("a", "x.1", "b", 7),
            handoff("b", "y.1", "a", 7),
            Step {
                open: Path::new("a", "z.100"),
                then: Use::Keep { label: "z".into() },
            },
        ]);
        assert_eq!(ok.check(), Ok(()));
        assert_eq!(ok.receivers(), ["a", "b"]);
        let twice = plan(vec![
            handoff("a", "x.1", "b", 7),
            handoff("a", "x.1", "b", 8),
        ]);
        assert_eq!(
            twice.check(),
            Err(PlanError::OpenedTwice("/scheme/a/x.1".into()))
        );
        let role = plan(vec![
            handoff("a", "x.1", "b", 7),
            handoff("a", "x.2", "b", 7),
        ]);
        assert_eq!(
            role.check(),
            Err(PlanError::RoleTwice {
                to: "b".into(),
                role: 7
            })
        );
        let unknown = plan(vec![handoff("a", "x.1", "c", 7)]);
        assert_eq!(unknown.check(), Err(PlanError::UnknownScheme("c".into())));
        assert_eq!(Path::control("a").full(), "/scheme/a/control");
    }
}
