//! Completing an I/O "later on this core": the way a module answers without recursing into
//! its caller from inside `submit`.
//!
//! Each core keeps one queue and one poller that drains it. The poller completes only what was
//! queued before it started, so an I/O resubmitted from a completion waits for the next pass.

use crate::io::{BdevIo, IoStatus};
use oxstor_reactor::PollStatus;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

thread_local! {
    static QUEUE: RefCell<VecDeque<(Box<BdevIo>, IoStatus)>> =
        RefCell::new(VecDeque::with_capacity(1024));
    static POLLER: Cell<bool> = const { Cell::new(false) };
}

/// Completes `io` with `status` on this core's next loop iteration.
pub fn complete_later(io: Box<BdevIo>, status: IoStatus) {
    if !POLLER.with(|p| p.replace(true)) {
        if oxstor_reactor::is_reactor_thread() {
            oxstor_reactor::register_poller("bdev_deferred_completions", drain);
        } else {
            POLLER.with(|p| p.set(false));
            io.complete(status);
            return;
        }
    }
    QUEUE.with(|q| q.borrow_mut().push_back((io, status)));
}

fn drain() -> PollStatus {
    let mut n = QUEUE.with(|q| q.borrow().len());
    if n == 0 {
        return PollStatus::Idle;
    }
    while n > 0 {
        let next = QUEUE.with(|q| q.borrow_mut().pop_front());
        match next {
            Some((io, status)) => io.complete(status),
            None => break,
        }
        n -= 1;
    }
    PollStatus::Busy
}
