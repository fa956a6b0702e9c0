//! Server processes under supervision, in the style of Hubris's supervisor:
//! a server that dies is started again at once with the same endpoints
//! and a higher generation, which it announces on every endpoint
//! (`Control::Restarted`), so its peers and clients notice and drop or
//! retry what the old process was doing.
//!
//! **Endpoints survive their server.** For a restartable server, `init`
//! keeps a duplicate of every endpoint end the server holds (the ends it
//! serves and the ends it calls on). While the server is down its peers'
//! requests wait in the sockets, and the new process inherits the same
//! sockets, so nobody has to be rewired. A server that is not restartable
//! gets its ends without `init` keeping them: when it dies its peers see
//! the endpoints close, as before.
//!
//! **A device outlives its driver.** The device control socket is the one
//! endpoint that does not survive: a restarted GPU server gets a fresh one
//! ([`DeviceAttach`]), since the device model learns that its driver died
//! only when the old socket closes, and then resets what that driver set
//! up (VRAM kept) and takes the next driver's socket from `init`.
//!
//! **Restart policy.** At most [`MAX_RESTARTS`] restarts of one server
//! within [`RESTART_WINDOW`]; past that the server is reported dead and the
//! system stops (a crash loop must not spin forever).
//!
//! **Readiness.** A server that speaks it ([`Recipe::ready_deadline`]) gets
//! the write end of a pipe (`--ready-fd`) and writes one byte on it once it
//! serves. One that has not within its deadline is killed, and so is
//! restarted (within the policy) or reported dead: a generation that hangs
//! before it serves (a take-over that never ends) is not waited on for
//! good, while its peers' calls to it time out meanwhile.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ipc_protocol::transport::{SeqPacket, Transport, TransportError};

use crate::spawn::Spawned;

use crate::supervisor::BootError;

/// Restarts of one server allowed within [`RESTART_WINDOW`].
pub const MAX_RESTARTS: usize = 20;
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);
/// How often the watcher looks at its children.
const POLL: Duration = Duration::from_millis(5);
/// How long a started server has to say it serves (a restarted pager
/// rebuilds its state first; this is far past what that takes).
pub const READY_DEADLINE: Duration = Duration::from_secs(30);

/// How to start a server (again).
pub struct Recipe {
    pub exe: PathBuf,
    pub args: Vec<String>,
    /// Each endpoint end and the descriptor number it gets in the child.
    pub fds: Vec<(OwnedFd, i32)>,
    /// Give it a lifeline on stdin (it stops when `init` goes).
    pub lifeline: bool,
    /// Start it again when it dies.
    pub restartable: bool,
    /// Its standard output goes to our standard error (`svm exec`: the
    /// program's output is the only thing on ours).
    pub stdout_to_stderr: bool,
    /// The device it drives, when the device outlives it: each restart
    /// hands the device a fresh control socket (generation 1 uses the one
    /// in `fds` from boot).
    pub device: Option<DeviceAttach>,
    /// The descriptors it keeps across its restarts (the pager's): each
    /// new generation gets them back ([`crate::keeper`]).
    pub keeper: Option<crate::keeper::Keeper>,
    /// It says it serves on `--ready-fd`, and is killed if it has not
    /// within this long of its start (see the module's "Readiness").
    pub ready_deadline: Option<Duration>,
}

/// A started server's readiness pipe, until it has said it serves.
struct Readiness {
    /// The read end (non-blocking).
    pipe: OwnedFd,
    since: Instant,
    deadline: Duration,
}

/// How a restarted driver reaches a device that outlived its predecessor
/// (`xe-model --attach-fd`): `init` keeps its end of the device's attach
/// channel here. The device stops when this is dropped (at shutdown, once
/// the driver is reaped).
pub struct DeviceAttach {
    /// `init`'s end of the device's attach channel.
    pub attach: SeqPacket,
    /// The descriptor the driver gets its control socket as (its
    /// `--device-fd`).
    pub fd: i32,
}

impl DeviceAttach {
    /// Makes a control socket pair, sends the device its end (it takes it
    /// once the old driver's socket closes) and returns the driver's end.
    fn next_control(&self) -> Result<OwnedFd, TransportError> {
        let (driver, device) = SeqPacket::pair()?;
        let dup = |s: &SeqPacket| -> Result<OwnedFd, TransportError> {
            Ok(rustix::io::fcntl_dupfd_cloexec(s.fd(), 0)?)
        };
        self.attach.send(&[0], vec![dup(&device)?])?;
        dup(&driver)
    }
}

impl Recipe {
    /// Drops our copy of the device control socket once the driver has
    /// it: the device must see the socket close when the driver dies, and
    /// a process forked from `init` (the fork workloads) would otherwise
    /// keep it open, so the device would wait for that process before it
    /// resets, while that process waits on a fault the next driver must
    /// serve. The next generation gets a fresh socket ([`DeviceAttach`]).
    fn forget_device_end(&mut self) {
        if let Some(d) = &self.device {
            let fd = d.fd;
            self.fds.retain(|(_, target)| *target != fd);
        }
    }
}

struct Server {
    name: &'static str,
    child: Child,
    /// The write end of its lifeline (its stdin): dropped, it stops.
    lifeline: Option<OwnedFd>,
    generation: u32,
    recipe: Recipe,
    restarts: VecDeque<Instant>,
    /// Died and was not restarted (reported once).
    dead: bool,
    /// Started and not yet said it serves.
    ready: Option<Readiness>,
}

#[derive(Default)]
struct State {
    servers: Vec<Server>,
    /// A server that died and was not (or could no more be) restarted.
    died: Option<BootError>,
    /// Restarts so far, all servers.
    restarts: u64,
    /// Servers killed for not saying they serve in time, all servers.
    not_ready: u64,
    stopping: bool,
}

/// The running servers and the thread that watches them.
pub struct Supervised {
    state: Arc<(Mutex<State>, Condvar)>,
    stop: Arc<AtomicBool>,
    watcher: Option<JoinHandle<()>>,
}

/// Starts generation `generation` of `name` through the spawn helper
/// beside its executable (`spawn.rs` says why `init` never forks); with
/// its readiness pipe when it speaks readiness.
fn start(
    name: &'static str,
    r: &Recipe,
    generation: u32,
) -> Result<(Spawned, Option<Readiness>), BootError> {
    let mut args = r.args.clone();
    args.push(format!("--generation={generation}"));
    let mut fds: Vec<(&OwnedFd, i32)> = r.fds.iter().map(|(fd, target)| (fd, *target)).collect();
    let spawn_err = |error| BootError::Spawn {
        server: name,
        error,
    };
    let pipe = match r.ready_deadline {
        Some(_) => Some(ready_pipe().map_err(spawn_err)?),
        None => None,
    };
    if let Some((_, write)) = &pipe {
        let target = fds.iter().map(|(_, t)| *t).max().unwrap_or(2).max(2) + 1;
        args.push(format!("--ready-fd={target}"));
        fds.push((write, target));
    }
    let helper = r.exe.with_file_name(crate::spawn::HELPER);
    let s = crate::spawn::spawn(
        &helper,
        r.exe.clone(),
        args,
        &fds,
        r.lifeline,
        r.stdout_to_stderr,
    )
    .map_err(|error| BootError::Spawn {
        server: name,
        error,
    })?;
    log::info!(
        "init: started {name} (pid {}, generation {generation})",
        s.child.id()
    );
    let ready = pipe
        .zip(r.ready_deadline)
        .map(|((pipe, _), deadline)| Readiness {
            pipe,
            since: Instant::now(),
            deadline,
        });
    Ok((s, ready))
}

/// A readiness pipe: (read end, non-blocking; write end, for the child).
fn ready_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    use rustix::pipe::{pipe_with, PipeFlags};
    Ok(pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?)
}

/// Whether `s` has said it serves; kills it when it has not within its
/// deadline (the watcher then restarts it or reports it). Returns whether
/// it was killed.
fn check_ready(s: &mut Server) -> bool {
    let Some(r) = &s.ready else {
        return false;
    };
    let mut byte = [0u8; 1];
    match rustix::io::read(&r.pipe, &mut byte) {
        Ok(1) => {
            log::info!(
                "init: {} generation {} serves ({} ms after its start)",
                s.name,
                s.generation,
                r.since.elapsed().as_millis()
            );
            s.ready = None;
        }
        Err(rustix::io::Errno::AGAIN) if r.since.elapsed() > r.deadline => {
            log::error!(
                "init: {} generation {} did not say it serves within {:?}; killing it",
                s.name,
                s.generation,
                r.deadline
            );
            let _ = s.child.kill();
            s.ready = None;
            return true;
        }
        Err(rustix::io::Errno::AGAIN) => {}
        // Closed without a word: it exited (the watcher sees that) or
        // closed the pipe; either way there is nothing more to hear.
        _ => s.ready = None,
    }
    false
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl Supervised {
    pub fn new() -> Self {
        let state = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        let watcher = std::thread::Builder::new()
            .name("init-supervisor".into())
            .spawn(move || watch(&s, &st))
            .ok();
        Self {
            state,
            stop,
            watcher,
        }
    }

    /// Starts `name` (generation 1) and supervises it from now on. A
    /// restartable server's recipe keeps its endpoint ends, so that
    /// `init` holds them while it is down.
    pub fn start(&self, name: &'static str, recipe: Recipe) -> Result<(), BootError> {
        let (Spawned { child, lifeline }, ready) = start(name, &recipe, 1)?;
        let recipe = if recipe.restartable {
            let mut recipe = recipe;
            recipe.forget_device_end();
            recipe
        } else {
            Recipe {
                fds: Vec::new(),
                device: None,
                ..recipe
            }
        };
        let server = Server {
            name,
            child,
            lifeline,
            generation: 1,
            recipe,
            restarts: VecDeque::new(),
            dead: false,
            ready,
        };
        lock(&self.state.0).servers.push(server);
        Ok(())
    }

    /// Waits for `name` to exit on its own (a probe-only server).
    pub fn wait_for(&self, name: &str, timeout: Duration) -> Result<ExitStatus, BootError> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut st = lock(&self.state.0);
                let s = st.servers.iter_mut().find(|s| s.name == name);
                let s = s.ok_or_else(|| BootError::Endpoint(format!("no server {name}")))?;
                if let Ok(Some(status)) = s.child.try_wait() {
                    return Ok(status);
                }
                if Instant::now() >= deadline {
                    return Err(BootError::KilledOnShutdown(s.name));
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILLs `name` (a crash, for tests and chaos runs); a restartable
    /// server is started again by the watcher.
    pub fn kill(&self, name: &str) -> Result<(), BootError> {
        let mut st = lock(&self.state.0);
        let s = st.servers.iter_mut().find(|s| s.name == name);
        let s = s.ok_or_else(|| BootError::Endpoint(format!("no server {name}")))?;
        let _ = s.child.kill();
        Ok(())
    }

    /// The process id of `name`'s current process (its process group has
    /// the same id: every server is started as a group leader).
    pub fn pid(&self, name: &str) -> Option<u32> {
        lock(&self.state.0)
            .servers
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.child.id())
    }

    /// Whether `name` is started again when it dies.
    pub fn restartable(&self, name: &str) -> Option<bool> {
        lock(&self.state.0)
            .servers
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.recipe.restartable)
    }

    /// The generation `name` runs as now.
    pub fn generation(&self, name: &str) -> Option<u32> {
        lock(&self.state.0)
            .servers
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.generation)
    }

    /// Waits until `name` runs as generation `at_least` or later.
    pub fn wait_generation(&self, name: &str, at_least: u32, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.state;
        let mut st = lock(m);
        loop {
            if st
                .servers
                .iter()
                .any(|s| s.name == name && s.generation >= at_least)
            {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || st.died.is_some() {
                return false;
            }
            st = cv
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Restarts so far (all servers).
    pub fn restarts(&self) -> u64 {
        lock(&self.state.0).restarts
    }

    /// Servers killed so far for not saying they serve in time.
    pub fn not_ready_kills(&self) -> u64 {
        lock(&self.state.0).not_ready
    }

    /// A server that died and was not restarted, if any.
    pub fn check(&self) -> Result<(), BootError> {
        match lock(&self.state.0).died.as_ref() {
            None => Ok(()),
            Some(BootError::ServerDied { server, status }) => Err(BootError::ServerDied {
                server,
                status: *status,
            }),
            Some(e) => Err(BootError::Endpoint(e.to_string())),
        }
    }

    /// Stops every server: no more restarts; lifelines close in reverse
    /// start order (GPU server before the device model), then stragglers
    /// are killed.
    pub fn shutdown(mut self) -> Vec<BootError> {
        lock(&self.state.0).stopping = true;
        self.stop.store(true, Ordering::Release);
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
        let mut errors = Vec::new();
        let mut st = lock(&self.state.0);
        for s in st.servers.iter_mut().rev() {
            drop(s.lifeline.take());
            if let Some(e) = reap(s.name, &mut s.child, Duration::from_secs(5)) {
                errors.push(e);
            }
            // The ends we kept for a restart: a device model (started
            // before, so reaped after) stops when its driver's control
            // socket and its attach channel close.
            s.recipe.fds.clear();
            s.recipe.device = None;
        }
        errors
    }
}

impl Default for Supervised {
    fn default() -> Self {
        Self::new()
    }
}

/// Waits up to `grace` for `child` to exit, then kills it.
fn reap(name: &'static str, child: &mut Child, grace: Duration) -> Option<BootError> {
    let deadline = Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                log::info!("init: {name} stopped ({status})");
                return None;
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Some(BootError::KilledOnShutdown(name));
            }
        }
    }
}

/// The watcher: restarts a restartable server that died (within the
/// policy), records any other death.
fn watch(state: &(Mutex<State>, Condvar), stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        {
            let mut st = lock(&state.0);
            if !st.stopping {
                let st = &mut *st;
                for s in st.servers.iter_mut().filter(|s| !s.dead) {
                    if check_ready(s) {
                        st.not_ready += 1;
                    }
                    if let Ok(Some(status)) = s.child.try_wait() {
                        match restart(s, status) {
                            Ok(()) => st.restarts += 1,
                            Err(e) => {
                                s.dead = true;
                                st.died.get_or_insert(e);
                            }
                        }
                    }
                }
                state.1.notify_all();
            }
        }
        std::thread::sleep(POLL);
    }
}

/// Gives a restarted driver a fresh device control socket in place of its
/// predecessor's, whose last end closes here: the device resets and then
/// serves the new one. A server without [`Recipe::device`] keeps its ends.
fn reattach(s: &mut Server) -> Result<(), BootError> {
    let Some(d) = &s.recipe.device else {
        return Ok(());
    };
    let fd = d.fd;
    let driver = d.next_control().map_err(|error| BootError::Reattach {
        server: s.name,
        error,
    })?;
    match s.recipe.fds.iter_mut().find(|(_, target)| *target == fd) {
        Some(slot) => slot.0 = driver,
        None => s.recipe.fds.push((driver, fd)),
    }
    Ok(())
}

/// Starts a dead server again, or says why not.
fn restart(s: &mut Server, status: ExitStatus) -> Result<(), BootError> {
    let died = BootError::ServerDied {
        server: s.name,
        status,
    };
    if !s.recipe.restartable {
        log::error!("init: {} died ({status}) and is not restartable", s.name);
        return Err(died);
    }
    let now = Instant::now();
    while s
        .restarts
        .front()
        .is_some_and(|t| now.duration_since(*t) > RESTART_WINDOW)
    {
        s.restarts.pop_front();
    }
    if s.restarts.len() >= MAX_RESTARTS {
        log::error!(
            "init: {} died {} times within {RESTART_WINDOW:?}; giving up",
            s.name,
            MAX_RESTARTS
        );
        return Err(died);
    }
    log::warn!("init: {} died ({status}); restarting it", s.name);
    reattach(s)?;
    let (next, ready) = start(s.name, &s.recipe, s.generation + 1)?;
    (s.child, s.lifeline, s.ready) = (next.child, next.lifeline, ready);
    if let Some(k) = &s.recipe.keeper {
        k.hand_over(s.generation + 1);
    }
    s.recipe.forget_device_end();
    s.generation += 1;
    s.restarts.push_back(now);
    Ok(())
}
