//! The launcher's side on Redox: carries out a [`LaunchPlan`]. Waits
//! (bounded) for every scheme, opens each server's `control` endpoint and
//! every planned endpoint once, hands over what servers call (`sendfd`
//! tagged with the role, then the handoff call), and returns what it keeps
//! for the clients it spawns. Built only for `target_os = "redox"`.

use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::time::{Duration, Instant};

use syscall::flag::CallFlags;

use super::handoff::CALL_HANDOFF_V1;
use super::launch::{LaunchPlan, Path, PlanError, Use};

/// Why the launch stopped.
#[derive(Debug)]
pub enum LaunchError {
    Plan(PlanError),
    /// A scheme did not appear within the wait.
    NoScheme(String),
    /// Opening an endpoint failed.
    Open(String, std::io::Error),
    /// A server refused a handoff (errno).
    Handoff {
        to: String,
        role: u16,
        errno: i32,
    },
}

/// Waits until `/scheme/<name>` exists, up to `deadline`.
fn wait_for(name: &str, deadline: Instant) -> Result<(), LaunchError> {
    let dir = format!("/scheme/{name}");
    loop {
        if std::fs::metadata(&dir).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(LaunchError::NoScheme(name.into()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn open(p: &Path) -> Result<OwnedFd, LaunchError> {
    let full = p.full();
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&full)
        .map(OwnedFd::from)
        .map_err(|e| LaunchError::Open(full, e))
}

/// `sendfd` of `fd` on `control`, tagged `role`, then the handoff call.
fn hand_over(control: &OwnedFd, fd: OwnedFd, to: &str, role: u16) -> Result<(), LaunchError> {
    let fail = |e: syscall::error::Error| LaunchError::Handoff {
        to: to.into(),
        role,
        errno: e.errno,
    };
    let raw = control.as_raw_fd() as usize;
    let bytes = (fd.as_raw_fd() as usize).to_ne_bytes();
    syscall::call_wo(raw, &bytes, CallFlags::FD, &[u64::from(role)]).map_err(fail)?;
    // The kernel moved it out of our table: not ours to close.
    let _moved = fd.into_raw_fd();
    let meta = [CALL_HANDOFF_V1, u64::from(role)];
    syscall::call_rw(raw, &mut [], CallFlags::empty(), &meta).map_err(fail)?;
    Ok(())
}

/// Carries out `plan`; returns the kept endpoints with their labels.
pub fn launch(plan: &LaunchPlan, wait: Duration) -> Result<Vec<(String, OwnedFd)>, LaunchError> {
    plan.check().map_err(LaunchError::Plan)?;
    let deadline = Instant::now() + wait;
    for s in &plan.schemes {
        wait_for(s, deadline)?;
    }
    let controls: Vec<(&str, OwnedFd)> = plan
        .receivers()
        .into_iter()
        .map(|s| open(&Path::control(s)).map(|fd| (s, fd)))
        .collect::<Result<_, _>>()?;
    let mut kept = Vec::new();
    for step in &plan.steps {
        let fd = open(&step.open)?;
        match &step.then {
            Use::Keep { label } => kept.push((label.clone(), fd)),
            Use::Handoff { to, role } => {
                let Some((_, control)) = controls.iter().find(|(s, _)| s == to) else {
                    return Err(LaunchError::Plan(PlanError::UnknownScheme(to.clone())));
                };
                hand_over(control, fd, to, *role)?;
                log::info!("launcher: {} handed to {to}", step.open.full());
            }
        }
    }
    Ok(kept)
}
