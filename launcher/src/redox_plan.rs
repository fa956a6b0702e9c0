//! The launcher's plan on Redox, from the manifest: every endpoint of
//! [`MANIFEST`] (but the device model's, which the GPU server opens itself,
//! `--device /scheme/xe-model/device`) is
//! a path of its server's scheme, `/scheme/<scheme>/<interface>.<badge>`;
//! one a server calls is handed to that server through its `control`
//! endpoint, the others are kept for the clients the launcher spawns
//! (docs/redox.md section 3). `ipc_protocol::scheme::redox_launch` carries
//! the plan out on Redox.

use ipc_protocol::interfaces::{
    gpu::Gpu, gpu_notify::GpuNotify, gpu_shrink::GpuShrink, pager::Pager,
    pager_migrate::PagerMigrate, pager_reclaim::PagerReclaim, pressure::Pressure,
};
use ipc_protocol::scheme::handoff::endpoint_path;
use ipc_protocol::scheme::launch::{LaunchPlan, Path, Step, Use};
use ipc_protocol::Interface;

use crate::manifest::{client_badge, Endpoint, MANIFEST};

/// The manifest's interface label -> (interface name, id).
fn interface(label: &str) -> Option<(&'static str, u16)> {
    Some(match label {
        "Pressure" | "Pressure status" => (Pressure::NAME, Pressure::ID),
        "Gpu" => (Gpu::NAME, Gpu::ID),
        "GpuNotify" => (GpuNotify::NAME, GpuNotify::ID),
        "GpuShrink" => (GpuShrink::NAME, GpuShrink::ID),
        "PagerMigrate" => (PagerMigrate::NAME, PagerMigrate::ID),
        "PagerReclaim" => (PagerReclaim::NAME, PagerReclaim::ID),
        "Pager" => (Pager::NAME, Pager::ID),
        _ => return None,
    })
}

/// The badge each server gives a shared (not per-client) endpoint: the
/// same numbers its host main mints (`mm-server/src/host.rs`,
/// `pager/src/bin/pager.rs`, `drivers/xe-svm/src/schemes.rs`) and its
/// Redox main declares.
const SHARED_BADGES: &[(&str, &str, u64)] = &[
    ("mm-server", "Pressure", 1),
    ("mm-server", "Pressure status", 2),
    ("xe-svm", "GpuNotify", 2),
    ("xe-svm", "GpuShrink", 3),
    ("pager", "PagerMigrate", 1),
    ("pager", "PagerReclaim", 3),
];

/// A server process's scheme for one of its endpoints (rule 9: the GPU
/// server's notifier is a scheme of its own).
pub fn scheme_of(process: &str, label: &str) -> String {
    match (process, label) {
        ("xe-svm", "GpuNotify") => "xe-svm.notify".into(),
        (p, _) => p.into(),
    }
}

/// Why the manifest does not make a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedoxPlanError {
    UnknownInterface(&'static str),
    NoBadge(&'static str, &'static str),
}

fn steps_of(e: &Endpoint, clients: usize) -> Result<Vec<Step>, RedoxPlanError> {
    let (name, id) = interface(e.interface).ok_or(RedoxPlanError::UnknownInterface(e.interface))?;
    let scheme = scheme_of(e.server.process, e.interface);
    let badges: Vec<u64> = if e.per_client {
        (0..clients).map(client_badge).collect()
    } else {
        let b = SHARED_BADGES
            .iter()
            .find(|(p, l, _)| *p == e.server.process && *l == e.interface)
            .map(|(_, _, b)| *b)
            .ok_or(RedoxPlanError::NoBadge(e.server.process, e.interface))?;
        vec![b]
    };
    Ok(badges
        .into_iter()
        .map(|badge| {
            let path = endpoint_path(name, badge);
            let then = match &e.client {
                Some(c) => Use::Handoff {
                    to: c.process.into(),
                    role: id,
                },
                None => Use::Keep {
                    label: format!("{scheme}/{path}"),
                },
            };
            Step {
                open: Path::new(&scheme, &path),
                then,
            }
        })
        .collect())
}

/// The plan for a system with `clients` client slots.
pub fn plan(clients: usize) -> Result<LaunchPlan, RedoxPlanError> {
    let mut p = LaunchPlan::default();
    for e in MANIFEST.iter().filter(|e| e.server.process != "xe-model") {
        for step in steps_of(e, clients)? {
            for s in std::iter::once(&step.open.scheme).chain(match &step.then {
                Use::Handoff { to, .. } => Some(to),
                Use::Keep { .. } => None,
            }) {
                if !p.schemes.contains(s) {
                    p.schemes.push(s.clone());
                }
            }
            p.steps.push(step);
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handed_to(plan: &LaunchPlan, scheme: &str) -> Vec<(String, u16)> {
        let mut v: Vec<(String, u16)> = plan
            .steps
            .iter()
            .filter_map(|s| match &s.then {
                Use::Handoff { to, role } if to == scheme => Some((s.open.full(), *role)),
                _ => None,
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn every_server_gets_the_endpoints_it_calls_once() {
        let plan = plan(2).unwrap();
        plan.check().unwrap();
        assert_eq!(
            handed_to(&plan, "mm-server"),
            [
                ("/scheme/pager/pagerreclaim.3".to_string(), PagerReclaim::ID),
                ("/scheme/xe-svm/gpushrink.3".to_string(), GpuShrink::ID),
            ]
        );
        assert_eq!(
            handed_to(&plan, "pager"),
            [(
                "/scheme/xe-svm.notify/gpunotify.2".to_string(),
                GpuNotify::ID
            )]
        );
        assert_eq!(
            handed_to(&plan, "xe-svm"),
            [
                ("/scheme/mm-server/pressure.1".to_string(), Pressure::ID),
                ("/scheme/pager/pagermigrate.1".to_string(), PagerMigrate::ID),
            ]
        );
        assert_eq!(plan.receivers(), ["mm-server", "pager", "xe-svm"]);
    }

    #[test]
    fn client_endpoints_and_status_are_kept_and_the_model_is_gone() {
        let plan = plan(2).unwrap();
        let mut kept: Vec<String> = plan
            .steps
            .iter()
            .filter_map(|s| match &s.then {
                Use::Keep { label } => Some(label.clone()),
                Use::Handoff { .. } => None,
            })
            .collect();
        kept.sort();
        assert_eq!(
            kept,
            [
                "mm-server/pressure.2",
                "pager/pager.100",
                "pager/pager.101",
                "xe-svm/gpu.100",
                "xe-svm/gpu.101"
            ]
        );
        assert!(plan.schemes.iter().all(|s| s != "xe-model"));
        let served = MANIFEST.iter().filter(|e| e.server.process != "xe-model");
        let expected: usize = served.map(|e| if e.per_client { 2 } else { 1 }).sum();
        assert_eq!(plan.steps.len(), expected, "one step per endpoint");
    }
}
