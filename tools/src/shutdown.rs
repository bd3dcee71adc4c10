//! The one-shot "please stop" latch shared by signal handling and `spdk_kill_instance`.
//!
//! Whoever asks first wins and records why; the daemon's main thread sleeps on it and then runs
//! the orderly teardown itself, so no teardown ever happens on a signal or RPC thread.

use std::sync::{Condvar, Mutex};

#[derive(Default)]
pub struct Shutdown {
    reason: Mutex<Option<String>>,
    cv: Condvar,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Asks for shutdown; later requests keep the first reason.
    pub fn request(&self, reason: impl Into<String>) {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some(reason.into());
        }
        self.cv.notify_all();
    }

    /// Blocks until shutdown is requested; returns the reason.
    pub fn wait(&self) -> String {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(reason) = r.as_ref() {
                return reason.clone();
            }
            r = self.cv.wait(r).unwrap_or_else(|p| p.into_inner());
        }
    }
}
