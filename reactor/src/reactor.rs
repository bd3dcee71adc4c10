//! The per-core event loop and the thread-local state it owns.
//!
//! Everything here is reached through free functions (`register_poller`, `with_ring`, ...) that
//! act on the calling thread's reactor: code that runs on a core talks to that core's reactor
//! only, which is what keeps the I/O path lock-free.

use crate::clock;
use crate::dma;
use crate::mailbox::Mailbox;
use crate::poller::{PollStatus, PollerId, Pollers};
use crate::ring::{CompletionHandler, HandlerId, Ring};
use crate::runtime::Handle;
use crate::timer::Timers;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// How long a reactor must find no work before it blocks. Long enough that a loaded reactor
/// (even at QD1 over TCP, ~20 µs between events) never sleeps, short enough that an idle one
/// costs nearly nothing.
const IDLE_BEFORE_SLEEP_NS: u64 = 200_000;
/// Messages handled per iteration, so a flood of messages cannot starve I/O completions.
const MESSAGE_BUDGET: usize = 256;
/// Busy/idle counters are published to other threads every this many iterations.
const STATS_EVERY: u32 = 1024;

pub(crate) struct Local {
    pub index: usize,
    pub mailbox: Arc<Mailbox>,
    pub ring: Ring,
    pub pollers: Pollers,
    pub timers: Timers,
    pub handle: Handle,
    wake: Rc<WakeReader>,
    wake_id: HandlerId,
}

thread_local! {
    static LOCAL: RefCell<Option<Rc<Local>>> = const { RefCell::new(None) };
    // Apart from LOCAL so the I/O path reads it without a RefCell borrow: every I/O
    // timestamps itself with it.
    static NOW_TICKS: Cell<u64> = const { Cell::new(0) };
    static AWAKE_HOLDS: Cell<usize> = const { Cell::new(0) };
}

/// Keeps this reactor polling (no idle sleep) until the matching [`release_awake`]: for work
/// that is in progress elsewhere, such as commands outstanding at a remote target.
pub fn hold_awake() {
    AWAKE_HOLDS.with(|h| h.set(h.get() + 1));
}

pub fn release_awake() {
    AWAKE_HOLDS.with(|h| h.set(h.get().saturating_sub(1)));
}

fn local() -> Option<Rc<Local>> {
    LOCAL.with(|l| l.borrow().clone())
}

fn expect_local() -> Rc<Local> {
    local().expect("called off a reactor thread")
}

/// Whether the calling thread is a reactor.
pub fn is_reactor_thread() -> bool {
    LOCAL.with(|l| l.borrow().is_some())
}

/// The index (0-based position in the core mask) of the calling reactor.
pub fn core_index() -> Option<usize> {
    LOCAL.with(|l| l.borrow().as_ref().map(|l| l.index))
}

/// The runtime handle, from a reactor thread.
pub fn handle() -> Option<Handle> {
    LOCAL.with(|l| l.borrow().as_ref().map(|l| l.handle.clone()))
}

/// Tick count read at the start of this loop iteration: a free timestamp for the I/O path.
#[inline]
pub fn now_ticks() -> u64 {
    match NOW_TICKS.with(Cell::get) {
        0 => clock::ticks(),
        t => t,
    }
}

/// Runs `poll` on every iteration of this core's loop. Must be called on a reactor thread.
pub fn register_poller(name: &'static str, poll: impl FnMut() -> PollStatus + 'static) -> PollerId {
    expect_local().pollers.register(name, 0, Box::new(poll))
}

/// Runs `poll` at most once per `period` on this core.
pub fn register_timed_poller(
    name: &'static str,
    period: Duration,
    poll: impl FnMut() -> PollStatus + 'static,
) -> PollerId {
    let ns = (period.as_nanos() as u64).max(1);
    expect_local().pollers.register(name, ns, Box::new(poll))
}

pub fn unregister_poller(id: PollerId) {
    if let Some(l) = local() {
        l.pollers.unregister(id);
    }
}

/// Runs `f` once on this core after `delay`.
pub fn schedule_after(delay: Duration, f: impl FnOnce() + 'static) {
    let deadline = clock::now_ns() + delay.as_nanos() as u64;
    expect_local().timers.schedule(deadline, Box::new(f));
}

/// Access to this core's io_uring. Must be called on a reactor thread.
pub fn with_ring<R>(f: impl FnOnce(&Ring) -> R) -> R {
    let l = expect_local();
    f(&l.ring)
}

/// Names and periods of this core's pollers (for framework_get_reactors).
pub fn poller_names() -> Vec<(u64, &'static str, u64)> {
    local().map(|l| l.pollers.names()).unwrap_or_default()
}

/// Keeps one read outstanding on the mailbox eventfd, so a message wakes a sleeping ring.
struct WakeReader {
    buf: *mut u64,
    armed: Cell<bool>,
}

impl CompletionHandler for WakeReader {
    fn complete(&self, _tag: u64, _result: i32, _flags: u32) {
        self.armed.set(false);
    }
}

impl Drop for WakeReader {
    fn drop(&mut self) {
        // SAFETY: `buf` came from Box::into_raw in `Local::new` and is freed only here, after
        // the ring (which owns the last in-flight read) has been torn down.
        drop(unsafe { Box::from_raw(self.buf) });
    }
}

impl Local {
    pub(crate) fn new(
        index: usize,
        mailbox: Arc<Mailbox>,
        ring_entries: u32,
        handle: Handle,
    ) -> std::io::Result<Rc<Local>> {
        let ring = Ring::new(ring_entries)?;
        if let Err(e) = ring.register_buffers(&dma::class_regions()) {
            tracing::warn!(
                "reactor {index}: cannot register DMA buffers with io_uring ({e}); \
                 fixed-buffer I/O disabled"
            );
        }
        let wake = Rc::new(WakeReader {
            buf: Box::into_raw(Box::new(0u64)),
            armed: Cell::new(false),
        });
        let wake_id = ring.register_handler(wake.clone());
        Ok(Rc::new(Local {
            index,
            mailbox,
            ring,
            pollers: Pollers::default(),
            timers: Timers::default(),
            handle,
            wake,
            wake_id,
        }))
    }

    fn arm_wakeup(&self) {
        if self.wake.armed.get() {
            return;
        }
        let entry = io_uring::opcode::Read::new(
            io_uring::types::Fd(self.mailbox.eventfd()),
            self.wake.buf.cast(),
            8,
        )
        .build();
        // SAFETY: the 8-byte target lives until WakeReader is dropped, after the ring.
        unsafe { self.ring.push_passive(entry, self.wake_id, 0) };
        self.wake.armed.set(true);
    }
}

pub(crate) struct LoopOptions {
    pub backoff: bool,
}

/// Runs the loop until the runtime asks this reactor to stop and its work has drained.
pub(crate) fn run(local: Rc<Local>, opts: LoopOptions) {
    LOCAL.with(|l| *l.borrow_mut() = Some(local.clone()));
    let shared = local.handle.reactor_shared(local.index);
    let mut last_work_ns = clock::now_ns();
    // Each iteration is charged, at the start of the next one, to busy or idle: one TSC read
    // per iteration serves timestamps, timers and accounting alike.
    let mut prev_start = clock::ticks();
    let mut prev_busy = false;
    let mut busy_ns_acc = 0u64;
    let mut idle_ns_acc = 0u64;
    let mut iterations = 0u32;
    let mut stop_seen_ns: Option<u64> = None;
    loop {
        let start = clock::ticks();
        NOW_TICKS.with(|n| n.set(start));
        let now_ns = clock::ticks_as_ns(start);
        let spent = clock::ticks_to_ns(prev_start, start);
        if prev_busy {
            busy_ns_acc += spent;
        } else {
            idle_ns_acc += spent;
        }
        prev_start = start;
        let mut work = 0usize;

        while work < MESSAGE_BUDGET {
            match local.mailbox.pop() {
                Some(msg) => {
                    msg();
                    work += 1;
                }
                None => break,
            }
        }
        work += local.ring.reap();
        if dma::has_waiters() {
            work += dma::serve_waiters();
        }
        let (pollers_busy, poller_deadline) = local.pollers.run(now_ns);
        work += local.timers.fire(now_ns);
        local.ring.submit();

        let busy = work > 0 || pollers_busy;
        prev_busy = busy;
        if busy {
            last_work_ns = now_ns;
        }
        iterations = iterations.wrapping_add(1);
        if iterations.is_multiple_of(STATS_EVERY) {
            shared.publish(busy_ns_acc, idle_ns_acc, iterations);
        }

        if shared.stop_requested() {
            let since = *stop_seen_ns.get_or_insert(now_ns);
            let drained = local.ring.inflight() <= usize::from(local.wake.armed.get())
                && local.mailbox.is_empty()
                && !pollers_busy;
            if drained || now_ns - since > 10_000_000_000 {
                if !drained {
                    tracing::warn!(
                        "reactor {}: stopping with {} operations still in flight",
                        local.index,
                        local.ring.inflight()
                    );
                }
                break;
            }
        }

        if opts.backoff
            && !busy
            && now_ns.saturating_sub(last_work_ns) > IDLE_BEFORE_SLEEP_NS
            && local.ring.active() == 0
            && AWAKE_HOLDS.with(Cell::get) == 0
        {
            let deadline = [local.timers.next_deadline(), poller_deadline]
                .into_iter()
                .flatten()
                .min();
            local.arm_wakeup();
            if local.mailbox.set_sleeping(true) && !shared.stop_requested() {
                let timeout = deadline.map(|d| d.saturating_sub(clock::now_ns()).max(1_000));
                shared.publish(busy_ns_acc, idle_ns_acc, iterations);
                local.ring.wait(timeout);
            }
            local.mailbox.set_sleeping(false);
        }
    }
    shared.publish(busy_ns_acc, idle_ns_acc, iterations);
    local.pollers.clear();
    local.timers.clear();
    LOCAL.with(|l| *l.borrow_mut() = None);
    NOW_TICKS.with(|n| n.set(0));
    local.ring.release_handlers();
}
