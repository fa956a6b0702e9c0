//! Message delivery between simulated servers, on shuttle's seeded
//! scheduler.
//!
//! Each server endpoint is a queue served by a few server threads (as
//! `ipc_protocol::server::spawn` serves an endpoint on the host). A server
//! thread takes a *random* waiting message, not the oldest, so messages from
//! different callers are delivered in every order the seed picks; it may
//! also yield a random number of times before handling one (a slow
//! delivery). A caller blocks until its reply arrives. A dead endpoint
//! answers nothing: its callers get `None`, as a host client gets a
//! transport error from a peer that went away.
//!
//! A FIFO endpoint ([`Endpoint::read_in_order`]) takes the oldest message
//! instead, as the host's serving threads read one ordered socket, and
//! counts each from that read until it is handled, as the host's read
//! fence does (`ipc_protocol::read_fence`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use shuttle::rand::{thread_rng, Rng};
use shuttle::sync::{Arc, Condvar, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// How much a delivery may be delayed: up to this many yields.
pub const MAX_DELAY_YIELDS: u32 = 3;

pub struct Endpoint {
    pub name: &'static str,
    jobs: Mutex<Vec<Job>>,
    ready: Condvar,
    stopped: AtomicBool,
    dead: AtomicBool,
    fifo: AtomicBool,
    in_flight: AtomicUsize,
}

/// A reply slot one caller waits on.
struct Reply<R> {
    value: Mutex<Option<Option<R>>>,
    arrived: Condvar,
}

/// The server's half of a call: answers `None` if dropped unanswered (the
/// server died with the message still queued).
struct Answer<R> {
    reply: Arc<Reply<R>>,
    answered: bool,
}

impl<R> Answer<R> {
    fn send(mut self, v: Option<R>) {
        self.answered = true;
        *self.reply.value.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
        self.reply.arrived.notify_all();
    }
}

impl<R> Drop for Answer<R> {
    fn drop(&mut self) {
        if !self.answered {
            *self.reply.value.lock().unwrap_or_else(|e| e.into_inner()) = Some(None);
            self.reply.arrived.notify_all();
        }
    }
}

/// Yields a random number (up to `max`) of times: a delay the seed picks.
pub fn delay(max: u32) {
    let n = thread_rng().gen_range(0..=max);
    for _ in 0..n {
        shuttle::thread::yield_now();
    }
}

impl Endpoint {
    /// An endpoint served by `threads` server threads.
    pub fn start(
        name: &'static str,
        threads: usize,
    ) -> (Arc<Self>, Vec<shuttle::thread::JoinHandle<()>>) {
        let ep = Arc::new(Self {
            name,
            jobs: Mutex::new(Vec::new()),
            ready: Condvar::new(),
            stopped: AtomicBool::new(false),
            dead: AtomicBool::new(false),
            fifo: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
        });
        let handles = (0..threads.max(1))
            .map(|_| {
                let ep = ep.clone();
                shuttle::thread::spawn(move || ep.serve())
            })
            .collect();
        (ep, handles)
    }

    fn serve(&self) {
        loop {
            let job = {
                let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if !jobs.is_empty() {
                        // Counted as it is taken, with no scheduling point
                        // between: nothing is read and not yet counted.
                        self.in_flight.fetch_add(1, Ordering::AcqRel);
                        if self.fifo.load(Ordering::Acquire) {
                            break jobs.remove(0);
                        }
                        let i = thread_rng().gen_range(0..jobs.len());
                        break jobs.swap_remove(i);
                    }
                    if self.stopped.load(Ordering::Acquire) {
                        return;
                    }
                    jobs = self.ready.wait(jobs).unwrap_or_else(|e| e.into_inner());
                }
            };
            delay(MAX_DELAY_YIELDS);
            job();
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// From now on the oldest message is taken first.
    pub fn read_in_order(&self) {
        self.fifo.store(true, Ordering::Release);
    }

    /// Messages taken and not yet handled.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Sends `f` to the server and waits for its result; `None` when the
    /// server is dead.
    pub fn call<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> Option<R> {
        self.call_from(|| true, f)
    }

    /// [`Self::call`] from a sender that may be killed: sent only if
    /// `sender_alive()` holds when the message is queued (checked with no
    /// scheduling point before the queueing), else `None` and never sent,
    /// as a dead process sends nothing.
    pub fn call_from<R: Send + 'static>(
        &self,
        sender_alive: impl Fn() -> bool,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Option<R> {
        if self.dead.load(Ordering::Acquire) {
            return None;
        }
        let reply = Arc::new(Reply {
            value: Mutex::new(None),
            arrived: Condvar::new(),
        });
        let answer = Answer {
            reply: reply.clone(),
            answered: false,
        };
        let job: Job = Box::new(move || answer.send(Some(f())));
        {
            // Checked again under the queue's lock, which `kill` takes
            // after marking the endpoint dead: a message is either dropped
            // by `kill` (answering `None`) or never queued.
            let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            if self.dead.load(Ordering::Acquire) || !sender_alive() {
                return None;
            }
            jobs.push(job);
        }
        self.ready.notify_one();
        let mut v = reply.value.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(v) = v.take() {
                return v;
            }
            v = reply.arrived.wait(v).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Sends `f` without waiting (a one-way notification).
    pub fn notify(&self, f: impl FnOnce() + Send + 'static) {
        if self.dead.load(Ordering::Acquire) {
            return;
        }
        {
            let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            if self.dead.load(Ordering::Acquire) {
                return;
            }
            jobs.push(Box::new(f));
        }
        self.ready.notify_one();
    }

    /// The server dies: what is queued is dropped, and every caller
    /// (waiting or later) gets `None`.
    pub fn kill(&self) {
        self.dead.store(true, Ordering::Release);
        // Dropping the queued messages answers their callers with `None`.
        let queued = std::mem::take(&mut *self.jobs.lock().unwrap_or_else(|e| e.into_inner()));
        drop(queued);
        self.stop();
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// No more messages: server threads exit once the queue is empty.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        let _j = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        self.ready.notify_all();
    }
}
