//! A peer that a restart replaces (issue 14): the GPU server's core and
//! the endpoint that reaches it, as the pager, mm-server and the actors
//! see them now.
//!
//! Held in a std mutex, never across a scheduling point: shuttle runs one
//! thread at a time and only switches at its own primitives, so the lock
//! is never contended and adds no schedules. A reader takes a copy and
//! works with it; after a restart, calls through an old copy reach the
//! dead server's endpoints and answer nothing, as a dead process's socket
//! would.

pub struct Link<T>(std::sync::Mutex<Option<T>>);

impl<T> Default for Link<T> {
    fn default() -> Self {
        Self(std::sync::Mutex::new(None))
    }
}

impl<T: Clone> Link<T> {
    /// What it names now (`None`: not wired yet).
    pub fn get(&self) -> Option<T> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// From now on it names `v`.
    pub fn set(&self, v: T) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
    }
}
