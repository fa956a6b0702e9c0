//! Restarting the implementation under test on the same endpoint, for the
//! restart cases (`restart.rs`; ipc.md, "Control frames and restarts").
//! A `--spawn` implementation is killed with its process group and started
//! again by the suite on the server end it kept, with `XSVM_GENERATION`
//! one higher; a server of a booted system is killed through init's
//! supervisor, which starts it again when it is restartable
//! (`manifest::RESTARTABLE`). Before the kill the implementation is
//! stopped (`SIGSTOP`), so that calls sent then wait in the socket for the
//! next generation: calls caught by the restart, as a caller sees them.

use std::os::fd::OwnedFd;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process_group, Pid, Signal};

use super::target::{spawn_with, ENDPOINT_FD, GENERATION_VAR};
use crate::supervisor::System;

/// How long a server may take to come back, and to stop.
const RESTART_LIMIT: Duration = Duration::from_secs(20);
const STOP_LIMIT: Duration = Duration::from_secs(5);

/// An implementation the suite can restart on one endpoint.
pub trait Restartable {
    /// The generation it runs as now (1 at first start).
    fn generation(&self) -> u32;
    /// Stops every process of it; frames sent from now on wait in the
    /// socket until the next generation reads them.
    fn pause(&mut self) -> Result<(), String>;
    /// Kills it and has it started again on the same endpoint; returns the
    /// generation it now runs as.
    fn restart(&mut self) -> Result<u32, String>;
}

/// Why a target cannot restart an implementation.
#[derive(Debug, Clone)]
pub enum NoRestart {
    /// The suite does not start it (`--connect`): the cases are skipped.
    Unsupported(String),
    /// It is not restartable (yet): the cases fail, and a failure list says
    /// why.
    NotRestartable(String),
}

/// Stops process group `pgid` and waits until every thread in it stopped.
fn stop_group(pgid: u32) -> Result<(), String> {
    let pid = Pid::from_raw(pgid as i32).ok_or("no process group")?;
    kill_process_group(pid, Signal::STOP).map_err(|e| format!("SIGSTOP: {e}"))?;
    let deadline = Instant::now() + STOP_LIMIT;
    while !group_stopped(pgid) {
        if Instant::now() > deadline {
            return Err(format!("process group {pgid} did not stop"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn continue_group(pgid: u32) {
    if let Some(pid) = Pid::from_raw(pgid as i32) {
        let _ = kill_process_group(pid, Signal::CONT);
    }
}

/// Whether every thread of every process of group `pgid` is stopped (or
/// dead), read from `/proc`.
fn group_stopped(pgid: u32) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    let mut found = false;
    for p in procs.flatten() {
        let path = p.path();
        let Some(stat) = read_stat(&path.join("stat")) else {
            continue;
        };
        if stat.pgrp != pgid {
            continue;
        }
        found = true;
        let Ok(tasks) = std::fs::read_dir(path.join("task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let running = read_stat(&t.path().join("stat"))
                .is_some_and(|s| !matches!(s.state, 'T' | 't' | 'Z' | 'X'));
            if running {
                return false;
            }
        }
    }
    found
}

struct Stat {
    state: char,
    pgrp: u32,
}

/// The state and process group of `/proc/<pid>[/task/<tid>]/stat`: the
/// fields after the command name, which ends at the last `)`.
fn read_stat(path: &std::path::Path) -> Option<Stat> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut rest = text.get(text.rfind(')')? + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let _ppid = rest.next()?;
    let pgrp = rest.next()?.parse().ok()?;
    Some(Stat { state, pgrp })
}

/// A `--spawn` implementation: `sh -c CMD` in its own process group, on a
/// server end the suite keeps.
pub struct SpawnRestart<'a> {
    /// The target's children (it reaps them at the end).
    pub children: &'a mut Vec<Child>,
    pub cmd: String,
    /// The environment (`XSVM_GENERATION` is set per start).
    pub env: Vec<(String, String)>,
    pub server_end: OwnedFd,
    pub generation: u32,
    paused: bool,
}

impl<'a> SpawnRestart<'a> {
    /// Starts generation 1 on `server_end`.
    pub fn start(
        children: &'a mut Vec<Child>,
        cmd: &str,
        env: Vec<(String, String)>,
        server_end: OwnedFd,
    ) -> Result<Self, String> {
        let mut s = Self {
            children,
            cmd: cmd.into(),
            env,
            server_end,
            generation: 1,
            paused: false,
        };
        s.spawn()?;
        Ok(s)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut env = self.env.clone();
        env.retain(|(k, _)| k != GENERATION_VAR);
        env.push((GENERATION_VAR.into(), self.generation.to_string()));
        let stdout = Stdio::from(std::io::stderr());
        let fds = [(&self.server_end, ENDPOINT_FD)];
        let child = spawn_with(&self.cmd, &fds, &env, stdout)?;
        self.children.push(child);
        Ok(())
    }

    fn pgid(&self) -> Option<u32> {
        self.children.last().map(|c| c.id())
    }
}

impl Restartable for SpawnRestart<'_> {
    fn generation(&self) -> u32 {
        self.generation
    }

    fn pause(&mut self) -> Result<(), String> {
        stop_group(self.pgid().ok_or("nothing started")?)?;
        self.paused = true;
        Ok(())
    }

    fn restart(&mut self) -> Result<u32, String> {
        let child = self.children.last_mut().ok_or("nothing started")?;
        if let Some(pid) = Pid::from_raw(child.id() as i32) {
            let _ = kill_process_group(pid, Signal::KILL);
        }
        let _ = child.wait();
        self.paused = false;
        self.generation += 1;
        self.spawn()?;
        Ok(self.generation)
    }
}

impl Drop for SpawnRestart<'_> {
    /// A case that ended between pause and restart leaves nothing stopped.
    fn drop(&mut self) {
        if let (true, Some(pgid)) = (self.paused, self.pgid()) {
            continue_group(pgid);
        }
    }
}

/// A server of a booted system, restarted by init's supervisor.
pub struct SystemRestart<'a> {
    system: &'a mut System,
    process: &'static str,
    generation: u32,
    paused: Option<u32>,
}

impl<'a> SystemRestart<'a> {
    /// `process` as init runs it, or why it cannot be restarted.
    pub fn new(system: &'a mut System, process: &'static str) -> Result<Self, NoRestart> {
        match system.restartable(process) {
            Some(true) => {}
            Some(false) => {
                return Err(NoRestart::NotRestartable(format!(
                    "{process} is not restartable yet: init stops the system when it dies \
                     (init::manifest::RESTARTABLE; issue 14)"
                )))
            }
            None => return Err(NoRestart::Unsupported(format!("init runs no {process}"))),
        }
        let generation = system.generation(process).unwrap_or(1);
        Ok(Self {
            system,
            process,
            generation,
            paused: None,
        })
    }
}

impl Restartable for SystemRestart<'_> {
    fn generation(&self) -> u32 {
        self.generation
    }

    fn pause(&mut self) -> Result<(), String> {
        // init starts every server as the leader of its own process group.
        let pid = self.system.pid(self.process).ok_or("no process")?;
        stop_group(pid)?;
        self.paused = Some(pid);
        Ok(())
    }

    fn restart(&mut self) -> Result<u32, String> {
        self.system
            .kill(self.process)
            .map_err(|e| format!("killing {}: {e}", self.process))?;
        self.paused = None;
        let next = self.generation + 1;
        if !self
            .system
            .wait_generation(self.process, next, RESTART_LIMIT)
        {
            return Err(format!(
                "init did not start {} again within {RESTART_LIMIT:?}",
                self.process
            ));
        }
        self.generation = next;
        Ok(next)
    }
}

impl Drop for SystemRestart<'_> {
    fn drop(&mut self) {
        if let Some(pid) = self.paused {
            continue_group(pid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_process_group_is_seen_stopped_and_a_running_one_is_not() {
        let mut c = std::process::Command::new("sleep");
        c.arg("30");
        std::os::unix::process::CommandExt::process_group(&mut c, 0);
        let mut child = c.spawn().unwrap();
        let pgid = child.id();
        assert!(!group_stopped(pgid), "a sleeping process is not stopped");
        stop_group(pgid).unwrap();
        assert!(group_stopped(pgid));
        continue_group(pgid);
        let deadline = Instant::now() + STOP_LIMIT;
        while group_stopped(pgid) {
            assert!(Instant::now() < deadline, "SIGCONT did not wake it");
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
