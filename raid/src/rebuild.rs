//! Background processes of RAID arrays: the global options of `bdev_raid_set_options`
//! (window size, bandwidth cap), the rate limiter and progress accounting every rebuild
//! uses, and the raid5/raid6 rebuild.
//!
//! **raid5/raid6 rebuild.** On the first reactor, the target member is rebuilt a window of
//! consecutive stripes at a time, at most [`MAX_WINDOWS_IN_FLIGHT`] windows in flight. For
//! each window: take every stripe's cross-core lock (the same lock user writes take, see
//! [`crate::stripe`]), read the window's rows from every member in service, recompute the
//! target's strip of each stripe (data, P or Q) with [`parity::reconstruct`], write it to the
//! target. A window's locks are held until every window before it is written too; then the
//! array's rebuild watermark moves past it and its locks are released. User writes to
//! stripes below the watermark also write the target; stripes above it skip the target (the
//! rebuild will compute their strips from the members later). Reads treat the target as
//! lost until the rebuild is done.
//!
//! **Rate limit.** A virtual-clock token bucket: a window of `B` bytes may start at
//! `max(now, next)` and pushes `next` by `B / rate`; a window that may not start yet is
//! retried on a reactor timer. The rate is read for every window, so `bdev_raid_set_options`
//! applies to running rebuilds.

use crate::bdev::RaidShared;
use crate::parity;
use crate::stripe::StripeShared;
use oxstor_bdev::{BdevError, BdevIo, IoBuf, IoChannel, IoDone, IoStatus, IoType};
use oxstor_reactor::DmaBuf;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// SPDK's default `process_window_size_kb`.
pub const DEFAULT_WINDOW_KB: u64 = 1024;
/// Rebuild windows in flight at once (raid5/raid6).
pub const MAX_WINDOWS_IN_FLIGHT: usize = 4;
/// Stripes per raid5/raid6 window at most (all windows in flight must hash to distinct
/// stripe-lock buckets).
const MAX_WINDOW_STRIPES: u64 = 32;
/// Retry delay for a stripe lock held by a user write, or an empty DMA pool.
const RETRY: Duration = Duration::from_micros(20);

static WINDOW_KB: AtomicU64 = AtomicU64::new(DEFAULT_WINDOW_KB);
static MAX_BW_MB: AtomicU64 = AtomicU64::new(0);
static QUEUE_DEPTH: AtomicU64 = AtomicU64::new(MAX_WINDOWS_IN_FLIGHT as u64);
/// Upper bound of `process_queue_depth`: raid5/raid6 windows in flight must hash to
/// distinct stripe-lock buckets.
pub const MAX_QUEUE_DEPTH: u64 = crate::stripe::LOCK_BUCKETS / MAX_WINDOW_STRIPES;

/// `bdev_raid_set_options` parameters (SPDK's names).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BdevRaidSetOptionsParams {
    /// Background process window, KiB (default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_window_size_kb: Option<u64>,
    /// Bandwidth cap of each background process, MiB/s; 0 = unlimited (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_max_bandwidth_mb_sec: Option<u64>,
    /// Rebuild windows in flight at once (ours; default 4): the bound on the member I/O a
    /// background process keeps queued next to user I/O.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_queue_depth: Option<u64>,
}

/// `bdev_raid_set_options`: global, applies to running and future rebuilds.
pub fn set_options(p: BdevRaidSetOptionsParams) -> Result<(), BdevError> {
    if p.process_window_size_kb == Some(0) {
        return Err(BdevError::Invalid(
            "process_window_size_kb must be at least 1".to_string(),
        ));
    }
    if let Some(q) = p.process_queue_depth {
        if !(1..=MAX_QUEUE_DEPTH).contains(&q) {
            return Err(BdevError::Invalid(format!(
                "process_queue_depth must be between 1 and {MAX_QUEUE_DEPTH}"
            )));
        }
        QUEUE_DEPTH.store(q, Ordering::Relaxed);
    }
    if let Some(w) = p.process_window_size_kb {
        WINDOW_KB.store(w, Ordering::Relaxed);
    }
    if let Some(b) = p.process_max_bandwidth_mb_sec {
        MAX_BW_MB.store(b, Ordering::Relaxed);
    }
    Ok(())
}

/// The current options, as `bdev_raid_set_options` takes them (for save_config).
pub fn options() -> Value {
    json!({
        "process_window_size_kb": WINDOW_KB.load(Ordering::Relaxed),
        "process_max_bandwidth_mb_sec": MAX_BW_MB.load(Ordering::Relaxed),
        "process_queue_depth": QUEUE_DEPTH.load(Ordering::Relaxed),
    })
}

/// The configured number of rebuild windows in flight.
pub(crate) fn queue_depth() -> usize {
    QUEUE_DEPTH.load(Ordering::Relaxed).max(1) as usize
}

/// The configured window, bytes.
pub(crate) fn window_bytes() -> u64 {
    WINDOW_KB.load(Ordering::Relaxed).max(1) * 1024
}

fn now_ns() -> u64 {
    oxstor_reactor::clock::now_ns()
}

/// Per-rebuild rate limiter (see the module docs).
#[derive(Default)]
pub(crate) struct Throttle {
    next_ns: Cell<u64>,
}

impl Throttle {
    /// Reserves `bytes` if they may be issued now (None); else how long to wait.
    pub(crate) fn reserve(&self, bytes: u64) -> Option<Duration> {
        let mb = MAX_BW_MB.load(Ordering::Relaxed);
        let now = now_ns();
        if mb == 0 {
            self.next_ns.set(now);
            return None;
        }
        let cost = (bytes as u128 * 1_000_000_000 / (mb as u128 * 1024 * 1024)) as u64;
        let mut next = self.next_ns.get();
        if next > now + cost {
            // The rate went up since `next` was computed: do not wait for the old rate.
            next = now;
        }
        if next > now {
            return Some(Duration::from_nanos(next - now));
        }
        self.next_ns.set(next.max(now.saturating_sub(cost)) + cost);
        None
    }
}

// -- Progress accounting (speed and ETA, as /proc/mdstat shows them) ----------------------

struct Stats {
    id: u64,
    block_size: u64,
    /// (time, blocks done) samples of the last few seconds.
    samples: VecDeque<(u64, u64)>,
}

static STATS: Mutex<Vec<Stats>> = Mutex::new(Vec::new());
const SPEED_SPAN_NS: u64 = 3_000_000_000;

fn stats() -> std::sync::MutexGuard<'static, Vec<Stats>> {
    STATS.lock().unwrap_or_else(|p| p.into_inner())
}

/// A rebuild of array `id` begins.
pub(crate) fn stats_begin(id: u64, block_size: u32, done: u64) {
    let mut all = stats();
    all.retain(|s| s.id != id);
    all.push(Stats {
        id,
        block_size: block_size as u64,
        samples: VecDeque::from([(now_ns(), done)]),
    });
}

/// The rebuild of array `id` has `done` blocks of its target done.
pub(crate) fn stats_note(id: u64, done: u64) {
    let now = now_ns();
    let mut all = stats();
    if let Some(s) = all.iter_mut().find(|s| s.id == id) {
        s.samples.push_back((now, done));
        while s.samples.len() > 2 && now - s.samples[1].0 > SPEED_SPAN_NS {
            s.samples.pop_front();
        }
    }
}

pub(crate) fn stats_end(id: u64) {
    stats().retain(|s| s.id != id);
}

/// `speed_mb_s` (MiB/s written to the target, over the last seconds) and `eta_sec`.
pub(crate) fn speed_eta(id: u64, done: u64, total: u64) -> (f64, Option<u64>) {
    let all = stats();
    let Some(s) = all.iter().find(|s| s.id == id) else {
        return (0.0, None);
    };
    let Some(&(t0, b0)) = s.samples.front() else {
        return (0.0, None);
    };
    let dt = now_ns().saturating_sub(t0);
    if dt == 0 || done <= b0 {
        return (0.0, None);
    }
    let bytes_per_s = (done - b0) as f64 * s.block_size as f64 * 1e9 / dt as f64;
    let speed = bytes_per_s / (1024.0 * 1024.0);
    let eta = (total.saturating_sub(done) as f64 * s.block_size as f64 / bytes_per_s).ceil();
    ((speed * 100.0).round() / 100.0, Some(eta as u64))
}

// -- raid5/raid6 rebuild --------------------------------------------------------------------

struct Window {
    s0: u64,
    s1: u64,
    /// Stripes `s0..locked` are locked.
    locked: u64,
    /// One buffer per member (target and lost members too: reconstruct writes there).
    bufs: Vec<Option<DmaBuf>>,
    pending: u32,
    read_failed: bool,
    written: bool,
}

pub(crate) struct ParityRebuild {
    me: Weak<ParityRebuild>,
    shared: Arc<RaidShared>,
    sh: Arc<StripeShared>,
    block_size: u64,
    data_offset: u64,
    target: usize,
    chans: Vec<Option<Rc<IoChannel>>>,
    next_stripe: Cell<u64>,
    windows: RefCell<VecDeque<Window>>,
    throttle: Throttle,
    timer: Cell<bool>,
    stopped: Cell<bool>,
    /// Buffers of finished windows, reused by the next ones. A window (1 MiB by default) is
    /// larger than the DMA pool's classes, so a fresh buffer would be a new mapping (and
    /// page faults) for every member of every window.
    spare: RefCell<Vec<DmaBuf>>,
}

const TAG_WRITE: u64 = 1 << 8;

impl ParityRebuild {
    /// Starts rebuilding member `target` of a raid5/raid6 array (on the first reactor).
    pub(crate) fn start(shared: Arc<RaidShared>, target: usize) {
        let Some((sh, block_size, data_offset)) = shared.parity_geometry() else {
            return shared.finish_rebuild(target, false);
        };
        if shared.is_deleted() {
            return shared.finish_rebuild(target, false);
        }
        let chans = shared.member_channels();
        stats_begin(shared.id(), block_size, 0);
        let rb = Rc::new_cyclic(|me| ParityRebuild {
            me: me.clone(),
            shared,
            sh,
            block_size: block_size as u64,
            data_offset,
            target,
            chans,
            next_stripe: Cell::new(0),
            windows: RefCell::new(VecDeque::new()),
            throttle: Throttle::default(),
            timer: Cell::new(false),
            stopped: Cell::new(false),
            spare: RefCell::new(Vec::new()),
        });
        rb.pump();
    }

    fn rc(&self) -> Rc<ParityRebuild> {
        self.me
            .upgrade()
            .expect("the rebuild is alive while it runs")
    }

    fn strip(&self) -> u64 {
        self.sh.layout.strip_blocks()
    }

    /// A window buffer of `len` bytes: a spare one if it is large enough, else a new one.
    fn take_buf(&self, len: usize) -> Option<DmaBuf> {
        let mut spare = self.spare.borrow_mut();
        if let Some(i) = spare.iter().position(|b| b.capacity() >= len) {
            let mut b = spare.swap_remove(i);
            b.set_len(len);
            return Some(b);
        }
        drop(spare);
        DmaBuf::alloc(len)
    }

    /// Keeps a buffer for the next windows (as many as the windows in flight can use).
    fn give_buf(&self, b: DmaBuf) {
        let mut spare = self.spare.borrow_mut();
        if spare.len() < (queue_depth() + 1) * self.chans.len() {
            spare.push(b);
        }
    }

    fn usable(&self, m: usize) -> bool {
        m != self.target && self.shared.member_online(m) && self.chans[m].is_some()
    }

    /// Opens windows while fewer than the maximum are in flight and the rate allows.
    fn pump(&self) {
        if self.stopped.get() {
            return;
        }
        if self.shared.is_deleted() || !self.shared.is_rebuilding(self.target) {
            return self.stop(false, "the target left the array");
        }
        let total = self.sh.layout.stripe_count();
        loop {
            if self.windows.borrow().is_empty() && self.next_stripe.get() >= total {
                return self.stop(true, "");
            }
            if self.windows.borrow().len() >= queue_depth()
                || self.next_stripe.get() >= total
                || self.timer.get()
            {
                return;
            }
            let strip_bytes = self.strip() * self.block_size;
            let per = (window_bytes() / strip_bytes).clamp(1, MAX_WINDOW_STRIPES);
            let s0 = self.next_stripe.get();
            let s1 = (s0 + per).min(total);
            if let Some(wait) = self.throttle.reserve((s1 - s0) * strip_bytes) {
                self.timer.set(true);
                let me = self.rc();
                oxstor_reactor::schedule_after(wait, move || {
                    me.timer.set(false);
                    me.pump();
                });
                return;
            }
            self.next_stripe.set(s1);
            self.windows.borrow_mut().push_back(Window {
                s0,
                s1,
                locked: s0,
                bufs: Vec::new(),
                pending: 0,
                read_failed: false,
                written: false,
            });
            self.lock(s0);
        }
    }

    fn with_window<R>(&self, s0: u64, f: impl FnOnce(&mut Window) -> R) -> Option<R> {
        let mut ws = self.windows.borrow_mut();
        ws.iter_mut().find(|w| w.s0 == s0).map(f)
    }

    /// Takes the window's stripe locks, one by one, retrying on a timer when one is busy.
    fn lock(&self, s0: u64) {
        if self.stopped.get() {
            return;
        }
        let all = self.with_window(s0, |w| {
            while w.locked < w.s1 {
                if !self.sh.try_lock_stripe(w.locked) {
                    return false;
                }
                w.locked += 1;
            }
            true
        });
        match all {
            None => {}
            Some(true) => self.read(s0),
            Some(false) => {
                let me = self.rc();
                oxstor_reactor::schedule_after(RETRY, move || me.lock(s0));
            }
        }
    }

    /// Reads the window's rows from every member in service.
    fn read(&self, s0: u64) {
        if self.stopped.get() {
            return;
        }
        if self.shared.is_deleted() || !self.shared.is_rebuilding(self.target) {
            return self.stop(false, "the target left the array");
        }
        let n = self.chans.len();
        let lost = (0..n).filter(|&m| !self.usable(m)).count();
        if lost > self.sh.layout.level().parity_members() {
            return self.stop(false, "too many members out of service to rebuild from");
        }
        let Some((s1, off)) = self.with_window(s0, |w| (w.s1, w.s0)) else {
            return;
        };
        let blocks = (s1 - off) * self.strip();
        let len = (blocks * self.block_size) as usize;
        let mut bufs = Vec::with_capacity(n);
        for _ in 0..n {
            match self.take_buf(len) {
                Some(b) => bufs.push(Some(b)),
                None => {
                    bufs.into_iter().flatten().for_each(|b| self.give_buf(b));
                    let me = self.rc();
                    oxstor_reactor::schedule_after(RETRY, move || me.read(s0));
                    return;
                }
            }
        }
        let mut reads = Vec::new();
        let mut old = Vec::new();
        self.with_window(s0, |w| {
            old = std::mem::take(&mut w.bufs);
            w.read_failed = false;
            w.pending = 1;
            for (m, b) in bufs.iter_mut().enumerate() {
                if self.usable(m) {
                    if let Some(b) = b.take() {
                        reads.push((m, b));
                        w.pending += 1;
                    }
                }
            }
            w.bufs = bufs;
        });
        old.into_iter().flatten().for_each(|b| self.give_buf(b));
        for (m, b) in reads {
            let io = BdevIo::new(
                IoType::Read,
                self.data_offset + off * self.strip(),
                blocks,
                IoBuf::Dma(b),
            );
            match self.chans[m].clone() {
                Some(ch) => ch.submit(io, self.rc(), (s0 << 9) | m as u64),
                None => return self.stop(false, "member channel missing"),
            }
        }
        self.read_dec(s0);
    }

    fn read_dec(&self, s0: u64) {
        let state = self.with_window(s0, |w| {
            w.pending -= 1;
            (w.pending, w.read_failed)
        });
        match state {
            Some((0, true)) => self.read(s0),
            Some((0, false)) => self.compute_and_write(s0),
            _ => {}
        }
    }

    fn compute_and_write(&self, s0: u64) {
        let strip = self.strip();
        let bs = self.block_size as usize;
        let strip_bytes = strip as usize * bs;
        let k = self.sh.layout.data_members();
        let slots = k + self.sh.layout.level().parity_members();
        let scheme = self.sh.parity_scheme();
        let n = self.chans.len();
        let lost_members: Vec<usize> = (0..n).filter(|&m| !self.usable(m)).collect();
        let res = self.with_window(s0, |w| {
            for stripe in w.s0..w.s1 {
                let at = (stripe - w.s0) as usize * strip_bytes;
                let mut per: Vec<Option<&mut [u8]>> = w
                    .bufs
                    .iter_mut()
                    .map(|b| {
                        b.as_mut()
                            .map(|b| &mut b.as_mut_slice()[at..at + strip_bytes])
                    })
                    .collect();
                let mut strips: Vec<&mut [u8]> = Vec::with_capacity(slots);
                let mut lost = Vec::new();
                for s in 0..slots {
                    let m = self.sh.slot_member_of(stripe, s);
                    if lost_members.contains(&m) {
                        lost.push(s);
                    }
                    match per[m].take() {
                        Some(b) => strips.push(b),
                        None => return Err("internal: stripe slot without a buffer"),
                    }
                }
                if parity::reconstruct(scheme, &mut strips, &lost).is_err() {
                    return Err("parity reconstruction failed");
                }
            }
            w.bufs[self.target]
                .take()
                .ok_or("internal: no target buffer")
        });
        let buf = match res {
            None => return,
            Some(Ok(b)) => b,
            Some(Err(why)) => return self.stop(false, why),
        };
        let Some((s1, rest)) = self.with_window(s0, |w| (w.s1, std::mem::take(&mut w.bufs))) else {
            return;
        };
        rest.into_iter().flatten().for_each(|b| self.give_buf(b));
        let io = BdevIo::new(
            IoType::Write,
            self.data_offset + s0 * strip,
            (s1 - s0) * strip,
            IoBuf::Dma(buf),
        );
        match self.chans[self.target].clone() {
            Some(ch) => ch.submit(io, self.rc(), (s0 << 9) | TAG_WRITE | self.target as u64),
            None => self.stop(false, "target channel missing"),
        }
    }

    /// A window is written: move the watermark over every finished window at the front.
    fn written(&self, s0: u64) {
        self.with_window(s0, |w| w.written = true);
        loop {
            let front = {
                let mut ws = self.windows.borrow_mut();
                match ws.front() {
                    Some(w) if w.written => ws.pop_front(),
                    _ => None,
                }
            };
            let Some(w) = front else { break };
            let done = w.s1 * self.strip();
            // Publish first: a write that takes a lock after this must update the target.
            self.shared.set_rebuild_done(done);
            stats_note(self.shared.id(), done);
            for s in w.s0..w.locked {
                self.sh.unlock_stripe(s);
            }
        }
        self.pump();
    }

    fn stop(&self, ok: bool, why: &str) {
        if self.stopped.replace(true) {
            return;
        }
        for w in self.windows.borrow_mut().drain(..) {
            for s in w.s0..w.locked {
                self.sh.unlock_stripe(s);
            }
        }
        if !ok {
            tracing::warn!(
                "raid {}: rebuild of slot {} stopped: {why}",
                self.shared.name(),
                self.target
            );
        }
        stats_end(self.shared.id());
        self.shared.finish_rebuild(self.target, ok);
    }
}

impl IoDone for ParityRebuild {
    fn io_done(&self, mut io: Box<BdevIo>, tag: u64) {
        let s0 = tag >> 9;
        let m = (tag & 0xff) as usize;
        let status = io.status;
        if self.stopped.get() {
            return;
        }
        if tag & TAG_WRITE != 0 {
            if let IoBuf::Dma(b) = std::mem::replace(&mut io.buf, IoBuf::None) {
                self.give_buf(b);
            }
            return match status {
                IoStatus::Success => self.written(s0),
                s => {
                    self.shared.mark_faulty(self.target, s);
                    self.stop(false, "write to the target failed")
                }
            };
        }
        let buf = match std::mem::replace(&mut io.buf, IoBuf::None) {
            IoBuf::Dma(b) => Some(b),
            _ => None,
        };
        let unused = self.with_window(s0, |w| {
            if status.is_success() {
                if let Some(slot) = w.bufs.get_mut(m) {
                    return std::mem::replace(slot, buf);
                }
            } else {
                w.read_failed = true;
            }
            buf
        });
        if let Some(b) = unused.flatten() {
            self.give_buf(b);
        }
        if !status.is_success() && status != IoStatus::Failed(libc::ENOMEM) {
            // The window is read again without this member.
            self.shared.mark_faulty(m, status);
        }
        self.read_dec(s0);
    }
}
