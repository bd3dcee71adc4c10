//! Completing an I/O "later on this core": the way a module answers without recursing into
//! its caller from inside `submit`.
//!
//! Each core keeps one queue and one poller that drains it. The poller completes only what was
//! queued before it started, so an I/O resubmitted from a completion waits for the next pass.

use crate::io::{BdevIo, IoStatus};
use oxstor_reactor::PollStatus;
use std::cell::RefCell;
use std::collections::VecDeque;

struct Deferred {
    queue: VecDeque<(Box<BdevIo>, IoStatus)>,
    spare: VecDeque<(Box<BdevIo>, IoStatus)>,
    poller: bool,
}

thread_local! {
    static DEFERRED: RefCell<Deferred> = const {
        RefCell::new(Deferred { queue: VecDeque::new(), spare: VecDeque::new(), poller: false })
    };
}

/// Completes `io` with `status` on this core's next loop iteration.
pub fn complete_later(io: Box<BdevIo>, status: IoStatus) {
    let rejected = DEFERRED.with(|d| {
        let mut d = d.borrow_mut();
        if !d.poller {
            if !oxstor_reactor::is_reactor_thread() {
                return Some((io, status));
            }
            d.poller = true;
            oxstor_reactor::register_poller("bdev_deferred_completions", drain);
        }
        d.queue.push_back((io, status));
        None
    });
    // Off a reactor there is no later: complete now.
    if let Some((io, status)) = rejected {
        io.complete(status);
    }
}

fn drain() -> PollStatus {
    // Swap in the spare queue, so completions queued while we run wait for the next pass
    // and neither queue is reallocated in steady state.
    let batch = DEFERRED.with(|d| {
        let mut d = d.borrow_mut();
        if d.queue.is_empty() {
            return None;
        }
        let spare = std::mem::take(&mut d.spare);
        Some(std::mem::replace(&mut d.queue, spare))
    });
    let Some(mut batch) = batch else {
        return PollStatus::Idle;
    };
    for (io, status) in batch.drain(..) {
        io.complete(status);
    }
    DEFERRED.with(|d| d.borrow_mut().spare = batch);
    PollStatus::Busy
}
