//! Background processes of RAID arrays: the global options of `bdev_raid_set_options`
//! (window size, bandwidth cap), the rate limiter and progress accounting every rebuild
//! uses, and the raid5/raid6 rebuild.
//!
//! **raid5/raid6 rebuild.** On the first reactor, the target member is rebuilt a window of
//! consecutive stripes at a time, up to `process_queue_depth` windows in flight. A window
//! takes every stripe's cross-core lock (the same lock user writes take, see
//! [`crate::stripe`]); then each chunk of it (at most [`CHUNK_BYTES`] per member) reads its
//! rows from every member in service, recomputes the target's strip of each stripe (data,
//! P or Q) with [`parity::reconstruct`] and writes it to the target. A window's locks are
//! held until every window before it is written too; then the array's rebuild watermark
//! moves past it and its locks are released.
//!
//! The rebuild shares its reactor with user I/O: its steps (a chunk's reads, its
//! reconstruction, its write) run from a poller, a slice of [`SLICE_NS`] per pass of the
//! loop, so user I/O on that core is served between slices instead of waiting for whole
//! windows.
//!
//! Every user write reaches the target from the moment it is REBUILDING; healthy reads use
//! it where it is current: below the watermark, and in the stripes a returning member did
//! not miss. A member that comes back (same member uuid, see [`crate::intent`]) is rebuilt
//! only in the stripes under the bitmap regions written while it was away:
//! `last_rebuild.bytes_copied` counts what was written to it.
//!
//! **Rate limit.** A virtual-clock token bucket: a window of `B` bytes may start at
//! `max(now, next)` and pushes `next` by `B / rate`; a window that may not start yet is
//! retried on a reactor timer. The rate is read for every window, so `bdev_raid_set_options`
//! applies to running rebuilds.

use crate::bdev::RaidShared;
use crate::parity;
use crate::stripe::StripeShared;
use oxstor_bdev::{BdevError, BdevIo, IoBuf, IoChannel, IoDone, IoStatus, IoType};
use oxstor_reactor::{DmaBuf, PollStatus, PollerId};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::ops::Range;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
static START_DIRTY_DEGRADED: AtomicBool = AtomicBool::new(false);
static QUEUE_DEPTH: AtomicU64 = AtomicU64::new(MAX_WINDOWS_IN_FLIGHT as u64);
/// Upper bound of `process_queue_depth`.
pub const MAX_QUEUE_DEPTH: u64 = 8;
// raid5/raid6 windows in flight must hash to distinct stripe-lock buckets.
const _: () = assert!(MAX_QUEUE_DEPTH * MAX_WINDOW_STRIPES <= crate::stripe::LOCK_BUCKETS);

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
    /// md's `start_dirty_degraded`: assemble a raid5/raid6 that shut down uncleanly *and* lacks
    /// a member. Its parity may not match its data where writes were torn (the write hole), so
    /// a reconstructed block there can be wrong; off by default, as in md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_dirty_degraded: Option<bool>,
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
    if let Some(b) = p.start_dirty_degraded {
        START_DIRTY_DEGRADED.store(b, Ordering::Relaxed);
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
        "start_dirty_degraded": START_DIRTY_DEGRADED.load(Ordering::Relaxed),
    })
}

/// Whether a dirty, degraded parity array may be assembled (see the option).
pub(crate) fn start_dirty_degraded() -> bool {
    START_DIRTY_DEGRADED.load(Ordering::Relaxed)
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

/// Bytes per member that one rebuild step reads, reconstructs or writes (at least a strip).
/// A step runs in one go on the rebuild's reactor (with a malloc member, its reads and writes
/// are memory copies done at submission), so this bounds how long user I/O waits behind
/// one. It is also the DMA pool's largest class: steps need no new mappings.
const CHUNK_BYTES: u64 = 128 * 1024;

/// Rebuild work one pass of the reactor loop may start, ns (at least one step). Between
/// passes the reactor serves everything else; with the whole window's work done at once
/// (milliseconds), a QD16 user load on the same core got a few thousand IOPS.
const SLICE_NS: u64 = 30_000;

/// A run of consecutive stripes of a window that is read, reconstructed and written as one.
struct Chunk {
    s0: u64,
    s1: u64,
    /// One buffer per member (target and lost members too: reconstruct writes there).
    bufs: Vec<Option<DmaBuf>>,
    pending: u32,
    read_failed: bool,
    written: bool,
}

/// Consecutive stripes locked together, at most [`MAX_WINDOW_STRIPES`].
struct Window {
    s0: u64,
    s1: u64,
    /// Stripes `s0..locked` are locked.
    locked: u64,
    chunks: Vec<Chunk>,
}

impl Window {
    fn written(&self) -> bool {
        self.chunks.iter().all(|c| c.written)
    }
}

#[derive(Clone, Copy, Debug)]
enum Step {
    Read,
    Compute,
    Write,
}

pub(crate) struct ParityRebuild {
    me: Weak<ParityRebuild>,
    shared: Arc<RaidShared>,
    sh: Arc<StripeShared>,
    block_size: u64,
    data_offset: u64,
    target: usize,
    chans: Vec<Option<Rc<IoChannel>>>,
    /// Stripes the target needs, ascending and disjoint: all of them, or those a returning
    /// member missed.
    todo: Vec<Range<u64>>,
    /// Where the next window opens (inside `todo`, or the stripe count when all are open).
    next_stripe: Cell<u64>,
    windows: RefCell<VecDeque<Window>>,
    /// Steps that may run, by chunk (its first stripe); the poller runs them a slice at a time.
    ready: RefCell<VecDeque<(Step, u64)>>,
    poller: Cell<Option<PollerId>>,
    throttle: Throttle,
    timer: Cell<bool>,
    stopped: Cell<bool>,
    /// Chunk buffers too large for the DMA pool's classes (strips over [`CHUNK_BYTES`]),
    /// reused by later chunks: a fresh one would be a new mapping, and page faults, each
    /// time.
    spare: RefCell<Vec<DmaBuf>>,
    checkpoints: crate::persist::CheckpointPacer,
}

const TAG_WRITE: u64 = 1 << 8;

/// The stripes member `target` needs, as ascending disjoint ranges. A returning member (see
/// [`crate::intent`]) needs only the stripes a write touched while it was away; a write to
/// any data strip changes the stripe's parity, which may live on the returning member, so
/// the whole stripe is rebuilt.
fn stripes_to_rebuild(shared: &RaidShared, sh: &StripeShared, target: usize) -> Vec<Range<u64>> {
    let total = sh.layout.stripe_count();
    let per = sh.layout.stripe_data_blocks();
    let Some(intent) = shared.intent() else {
        return std::iter::once(0..total).collect();
    };
    let Some(mut blocks) = intent.rebuild_ranges(target) else {
        return std::iter::once(0..total).collect();
    };
    let array_blocks = total * per;
    // Writes that were planned before the member turned REBUILDING skipped it, and those
    // that began after the delta was taken are not in it; their regions are dirty, and
    // nothing is cleared while the array is degraded.
    blocks.extend(intent.dirty_region_ranges().into_iter().map(|(_, r)| r));
    crate::bdev::merge_ranges(
        blocks
            .into_iter()
            .filter(|r| r.start < r.end && r.start < array_blocks)
            .map(|r| r.start / per..r.end.div_ceil(per).min(total))
            .collect(),
    )
}

/// The stripes an interrupted rebuild still needs: from its checkpoint (member blocks; a
/// stripe holds one strip of each member) to the end, and below it the stripes under the
/// array ranges `redo` (see [`crate::persist::Resume`]).
fn resumed_stripes(sh: &StripeShared, resume: crate::persist::Resume) -> Vec<Range<u64>> {
    let total = sh.layout.stripe_count();
    let per = sh.layout.stripe_data_blocks().max(1);
    // A checkpoint inside a stripe leaves that stripe to do.
    let from = (resume.from / sh.layout.strip_blocks().max(1)).min(total);
    crate::bdev::merge_ranges(
        resume
            .redo
            .into_iter()
            .filter(|r| r.start < r.end)
            .map(|r| r.start / per..r.end.div_ceil(per).min(from))
            .chain(std::iter::once(from..total))
            .collect(),
    )
}

impl ParityRebuild {
    /// Starts rebuilding member `target` of a raid5/raid6 array (on the first reactor).
    pub(crate) fn start(
        shared: Arc<RaidShared>,
        target: usize,
        resume: Option<crate::persist::Resume>,
    ) {
        let Some((sh, block_size, data_offset)) = shared.parity_geometry() else {
            return shared.finish_rebuild(target, false);
        };
        if shared.is_deleted() {
            return shared.finish_rebuild(target, false);
        }
        let total = sh.layout.stripe_count();
        let todo = match resume {
            Some(r) => resumed_stripes(&sh, r),
            None => stripes_to_rebuild(&shared, &sh, target),
        };
        // Every write reaches the target from the moment it turned REBUILDING (before this
        // runs), and the writes before that are in `todo`: elsewhere the target is current.
        let mut current_from = 0;
        for r in todo.iter().chain(std::iter::once(&(total..total))) {
            if r.start > current_from {
                sh.mark_current(current_from..r.start);
            }
            current_from = r.end;
        }
        let chans = shared.member_channels();
        let first = todo.first().map_or(total, |r| r.start);
        let strip = sh.layout.strip_blocks();
        stats_begin(shared.id(), block_size, first * strip);
        let checkpoints = crate::persist::CheckpointPacer::new(first * strip, total * strip);
        let rb = Rc::new_cyclic(|me| ParityRebuild {
            me: me.clone(),
            shared,
            sh,
            block_size: block_size as u64,
            data_offset,
            target,
            chans,
            todo,
            next_stripe: Cell::new(first),
            windows: RefCell::new(VecDeque::new()),
            ready: RefCell::new(VecDeque::new()),
            poller: Cell::new(None),
            throttle: Throttle::default(),
            timer: Cell::new(false),
            stopped: Cell::new(false),
            spare: RefCell::new(Vec::new()),
            checkpoints,
        });
        let me = rb.clone();
        rb.poller.set(Some(oxstor_reactor::register_poller(
            "raid_rebuild",
            move || me.poll(),
        )));
        rb.publish_watermark();
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

    fn strip_bytes(&self) -> u64 {
        self.strip() * self.block_size
    }

    /// A chunk buffer of `len` bytes: a spare one if it is large enough, else a new one.
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

    /// Keeps a buffer the pool would not take back for later chunks; pool buffers go back
    /// to the pool, where user I/O needs them too.
    fn give_buf(&self, b: DmaBuf) {
        if b.capacity() as u64 <= CHUNK_BYTES {
            return;
        }
        let mut spare = self.spare.borrow_mut();
        if spare.len() < 2 * queue_depth() * self.chans.len() {
            spare.push(b);
        }
    }

    fn usable(&self, m: usize) -> bool {
        m != self.target && self.shared.member_online(m) && self.chans[m].is_some()
    }

    /// The first stripe at or after `s` that the target needs (the stripe count if none).
    fn next_needed(&self, s: u64) -> u64 {
        self.todo
            .iter()
            .find(|r| r.end > s)
            .map_or(self.sh.layout.stripe_count(), |r| r.start.max(s))
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
        let strip_bytes = self.strip_bytes();
        let chunk_stripes = (CHUNK_BYTES / strip_bytes).max(1);
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
            let per = (window_bytes() / strip_bytes).clamp(1, MAX_WINDOW_STRIPES);
            let s0 = self.next_stripe.get();
            // A window stays inside one needed range: stripes between ranges are current.
            let range_end = self
                .todo
                .iter()
                .find(|r| r.end > s0)
                .map_or(total, |r| r.end);
            let s1 = (s0 + per).min(range_end);
            if let Some(wait) = self.throttle.reserve((s1 - s0) * strip_bytes) {
                self.timer.set(true);
                let me = self.rc();
                oxstor_reactor::schedule_after(wait, move || {
                    me.timer.set(false);
                    me.pump();
                });
                return;
            }
            self.next_stripe.set(self.next_needed(s1));
            let chunks = (s0..s1)
                .step_by(chunk_stripes as usize)
                .map(|c0| Chunk {
                    s0: c0,
                    s1: (c0 + chunk_stripes).min(s1),
                    bufs: Vec::new(),
                    pending: 0,
                    read_failed: false,
                    written: false,
                })
                .collect();
            self.windows.borrow_mut().push_back(Window {
                s0,
                s1,
                locked: s0,
                chunks,
            });
            self.lock(s0);
        }
    }

    /// Runs ready steps until this pass's slice is used (always at least one step).
    fn poll(&self) -> PollStatus {
        let began = now_ns();
        let mut did = false;
        while !self.stopped.get() {
            let Some((step, c0)) = self.ready.borrow_mut().pop_front() else {
                break;
            };
            did = true;
            let done = match step {
                Step::Read => self.read(c0),
                Step::Compute => self.compute(c0),
                Step::Write => self.write(c0),
            };
            if !done {
                // Out of DMA buffers: user I/O holds them; try again next pass.
                self.ready.borrow_mut().push_front((step, c0));
                break;
            }
            if now_ns() - began >= SLICE_NS {
                break;
            }
        }
        if did {
            PollStatus::Busy
        } else {
            PollStatus::Idle
        }
    }

    fn with_chunk<R>(&self, c0: u64, f: impl FnOnce(&mut Chunk) -> R) -> Option<R> {
        let mut ws = self.windows.borrow_mut();
        let w = ws.iter_mut().find(|w| w.s0 <= c0 && c0 < w.s1)?;
        w.chunks.iter_mut().find(|c| c.s0 == c0).map(f)
    }

    /// Takes the window's stripe locks, one by one, retrying on a timer when one is busy.
    fn lock(&self, s0: u64) {
        if self.stopped.get() {
            return;
        }
        let locked = {
            let mut ws = self.windows.borrow_mut();
            ws.iter_mut().find(|w| w.s0 == s0).map(|w| {
                while w.locked < w.s1 {
                    if !self.sh.try_lock_stripe(w.locked) {
                        return None;
                    }
                    w.locked += 1;
                }
                Some(w.chunks.iter().map(|c| c.s0).collect::<Vec<u64>>())
            })
        };
        match locked {
            None => {}
            Some(Some(chunks)) => {
                let mut ready = self.ready.borrow_mut();
                ready.extend(chunks.into_iter().map(|c0| (Step::Read, c0)));
            }
            Some(None) => {
                let me = self.rc();
                oxstor_reactor::schedule_after(RETRY, move || me.lock(s0));
            }
        }
    }

    /// Reads the chunk's rows from every member in service. False: no buffers now.
    fn read(&self, c0: u64) -> bool {
        if self.shared.is_deleted() || !self.shared.is_rebuilding(self.target) {
            self.stop(false, "the target left the array");
            return true;
        }
        let n = self.chans.len();
        let lost = (0..n).filter(|&m| !self.usable(m)).count();
        if lost > self.sh.layout.level().parity_members() {
            self.stop(false, "too many members out of service to rebuild from");
            return true;
        }
        let Some(c1) = self.with_chunk(c0, |c| c.s1) else {
            return true;
        };
        let blocks = (c1 - c0) * self.strip();
        let len = (blocks * self.block_size) as usize;
        let mut bufs = Vec::with_capacity(n);
        for _ in 0..n {
            match self.take_buf(len) {
                Some(b) => bufs.push(Some(b)),
                None => {
                    bufs.into_iter().flatten().for_each(|b| self.give_buf(b));
                    return false;
                }
            }
        }
        let mut reads = Vec::new();
        let old = self.with_chunk(c0, |c| {
            let old = std::mem::take(&mut c.bufs);
            c.read_failed = false;
            c.pending = 1;
            for (m, b) in bufs.iter_mut().enumerate() {
                if self.usable(m) {
                    if let Some(b) = b.take() {
                        reads.push((m, b));
                        c.pending += 1;
                    }
                }
            }
            c.bufs = bufs;
            old
        });
        old.into_iter()
            .flatten()
            .flatten()
            .for_each(|b| self.give_buf(b));
        for (m, b) in reads {
            let io = BdevIo::new(
                IoType::Read,
                self.data_offset + c0 * self.strip(),
                blocks,
                IoBuf::Dma(b),
            );
            match self.chans[m].clone() {
                Some(ch) => ch.submit(io, self.rc(), (c0 << 9) | m as u64),
                None => {
                    self.stop(false, "member channel missing");
                    return true;
                }
            }
        }
        self.read_dec(c0);
        true
    }

    fn read_dec(&self, c0: u64) {
        let state = self.with_chunk(c0, |c| {
            c.pending -= 1;
            (c.pending, c.read_failed)
        });
        let next = match state {
            Some((0, true)) => Step::Read,
            Some((0, false)) => Step::Compute,
            _ => return,
        };
        // Finish what is started before starting more: its buffers and locks go sooner.
        self.ready.borrow_mut().push_front((next, c0));
    }

    /// Recomputes the target's strip of each stripe of the chunk.
    fn compute(&self, c0: u64) -> bool {
        let strip_bytes = self.strip_bytes() as usize;
        let k = self.sh.layout.data_members();
        let slots = k + self.sh.layout.level().parity_members();
        let scheme = self.sh.parity_scheme();
        let n = self.chans.len();
        let lost_members: Vec<usize> = (0..n).filter(|&m| !self.usable(m)).collect();
        let res = self.with_chunk(c0, |c| {
            for stripe in c.s0..c.s1 {
                let at = (stripe - c.s0) as usize * strip_bytes;
                let mut per: Vec<Option<&mut [u8]>> = c
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
            Ok(())
        });
        match res {
            Some(Ok(())) => self.ready.borrow_mut().push_front((Step::Write, c0)),
            Some(Err(why)) => self.stop(false, why),
            None => {}
        }
        true
    }

    /// Writes the chunk's target strips.
    fn write(&self, c0: u64) -> bool {
        let Some((c1, mut bufs)) = self.with_chunk(c0, |c| (c.s1, std::mem::take(&mut c.bufs)))
        else {
            return true;
        };
        let Some(buf) = bufs.get_mut(self.target).and_then(Option::take) else {
            self.stop(false, "internal: no target buffer");
            return true;
        };
        bufs.into_iter().flatten().for_each(|b| self.give_buf(b));
        let strip = self.strip();
        let io = BdevIo::new(
            IoType::Write,
            self.data_offset + c0 * strip,
            (c1 - c0) * strip,
            IoBuf::Dma(buf),
        );
        match self.chans[self.target].clone() {
            Some(ch) => ch.submit(io, self.rc(), (c0 << 9) | TAG_WRITE | self.target as u64),
            None => self.stop(false, "target channel missing"),
        }
        true
    }

    /// The target is current below the first window still in flight (stripes the rebuild
    /// skips were current all along).
    fn publish_watermark(&self) {
        let first_open = self
            .windows
            .borrow()
            .front()
            .map_or(self.next_stripe.get(), |w| w.s0);
        let done = first_open * self.strip();
        // Publish before unlocking: a read that takes a lock after this may use the target.
        self.shared.set_rebuild_done(done);
        stats_note(self.shared.id(), done);
        self.checkpoints.note(&self.shared, self.target, done);
    }

    /// A chunk is written: retire every finished window at the front.
    fn written(&self, c0: u64) {
        let bytes = self.with_chunk(c0, |c| {
            c.written = true;
            (c.s1 - c.s0) * self.strip_bytes()
        });
        if let (Some(bytes), Some(i)) = (bytes, self.shared.intent()) {
            i.add_copied(bytes);
        }
        let mut retired = Vec::new();
        {
            let mut ws = self.windows.borrow_mut();
            while ws.front().is_some_and(Window::written) {
                retired.extend(ws.pop_front());
            }
        }
        if retired.is_empty() {
            return;
        }
        self.publish_watermark();
        for w in retired {
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
        if let Some(id) = self.poller.take() {
            oxstor_reactor::unregister_poller(id);
        }
        self.ready.borrow_mut().clear();
        // Before the target leaves REBUILDING: the next rebuild starts from "nothing current".
        self.sh.mark_all_stale();
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
        let c0 = tag >> 9;
        let m = (tag & 0xff) as usize;
        let status = io.status;
        let buf = match std::mem::replace(&mut io.buf, IoBuf::None) {
            IoBuf::Dma(b) => Some(b),
            _ => None,
        };
        if self.stopped.get() {
            return;
        }
        if tag & TAG_WRITE != 0 {
            if let Some(b) = buf {
                self.give_buf(b);
            }
            return match status {
                IoStatus::Success => self.written(c0),
                s => {
                    self.shared.mark_faulty(self.target, s);
                    self.stop(false, "write to the target failed")
                }
            };
        }
        let unused = self.with_chunk(c0, |c| {
            if status.is_success() {
                if let Some(slot) = c.bufs.get_mut(m) {
                    return std::mem::replace(slot, buf);
                }
            } else {
                c.read_failed = true;
            }
            buf
        });
        if let Some(b) = unused.flatten() {
            self.give_buf(b);
        }
        if !status.is_success() && status != IoStatus::Failed(libc::ENOMEM) {
            // The chunk is read again without this member.
            self.shared.mark_faulty(m, status);
        }
        self.read_dec(c0);
    }
}
