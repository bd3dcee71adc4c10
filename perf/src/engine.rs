//! The load engine: per-core, completion-driven jobs.
//!
//! A job is one bdev on one core. It owns `-q` slots, each a boxed [`BdevIo`] with its own DMA
//! buffer, allocated once. The completion handler does all the work: record the latency,
//! pick the next type and offset, `reset` the same descriptor and submit it again. Nothing is
//! allocated and no lock is taken per I/O; all job state is core-local (`Cell`/`RefCell`).
//!
//! Time comes from the reactor's per-iteration tick cache ([`oxstor_reactor::now_ticks`]), so a
//! latency costs a cached read and a subtraction; equal tick deltas (a whole batch submitted in
//! one loop iteration and reaped in another) are run-length coalesced before they reach the
//! histogram, and converted to nanoseconds once per run. The cache makes a latency exact to one
//! loop iteration; a reactor preempted mid-iteration (a loaded machine) skews single samples. Timers start the measurement window
//! (after `--warmup`) and end it; after the end, completions are parked instead of resubmitted,
//! and the job reports once every slot is home.
//!
//! The engine only knows bdev names, so anything that is a bdev (the NVMe/TCP host included)
//! can be driven by it.

use crate::stats::{new_histogram, JobResult};
use crate::verify;
use crate::workload::{Offsets, Rng, Workload};
use crate::PerfError;
use hdrhistogram::Histogram;
use oxstor_bdev::{registry, BdevEntry, BdevIo, IoBuf, IoChannel, IoDone, IoStatus, IoType};
use oxstor_reactor::runtime::Reply;
use oxstor_reactor::{clock, DmaBuf, Handle};
use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::Duration;

/// Error messages kept per job (the counters keep counting past this).
const MAX_MESSAGES: usize = 16;
/// How long to wait, past the planned end, for in-flight I/O to come home.
const DRAIN_GRACE: Duration = Duration::from_secs(30);

/// What to run, identical for every job.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub queue_depth: u32,
    /// Bytes per I/O (a multiple of each bdev's block size).
    pub io_size: u64,
    pub workload: Workload,
    /// Percentage of reads for rw / randrw.
    pub rwmixread: u8,
    pub duration: Duration,
    pub warmup: Duration,
    /// Seed of the per-job offset generators (mixed with the job number).
    pub seed: u64,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            queue_depth: 1,
            io_size: 4096,
            workload: Workload::RandRead,
            rwmixread: 50,
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            seed: 0x0a5f_0e11,
        }
    }
}

/// One job: a bdev driven from one reactor (by index in the core mask).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    pub bdev: String,
    pub core_index: usize,
}

/// A job, checked against its bdev and ready to start.
struct Plan {
    bdev: String,
    entry: Arc<BdevEntry>,
    core_index: usize,
    cpu: usize,
    block_size: u32,
    offsets: Offsets,
    verify_range: Option<(u64, u64)>,
    seed: u64,
}

/// Checks every job against its bdev (sizes, ranges) before any I/O is issued.
fn plan(handle: &Handle, specs: &[JobSpec], opts: &RunOptions) -> Result<Vec<Plan>, PerfError> {
    if specs.is_empty() {
        return Err(PerfError::usage("no bdev to run on"));
    }
    if opts.queue_depth == 0 {
        return Err(PerfError::usage("queue depth must be at least 1"));
    }
    if opts.io_size == 0 {
        return Err(PerfError::usage("I/O size must be greater than 0"));
    }
    let cpus = handle.cpus();
    let mut plans = Vec::with_capacity(specs.len());
    for (n, spec) in specs.iter().enumerate() {
        let cpu = *cpus.get(spec.core_index).ok_or_else(|| {
            PerfError::usage(format!(
                "job for {} asks for reactor {}, but only {} run",
                spec.bdev,
                spec.core_index,
                cpus.len()
            ))
        })?;
        let entry = registry::open(&spec.bdev, opts.workload.writes())
            .map_err(|e| PerfError::usage(format!("cannot open bdev {}: {e}", spec.bdev)))?;
        let g = entry.bdev.geometry();
        let bs = g.block_size as u64;
        let io_blocks = opts.io_size / bs;
        if io_blocks * bs != opts.io_size {
            return Err(PerfError::usage(format!(
                "I/O size {} is not a multiple of bdev {}'s block size {}",
                opts.io_size, spec.bdev, bs
            )));
        }
        if io_blocks > g.num_blocks {
            return Err(PerfError::usage(format!(
                "I/O size {} is larger than bdev {} ({} bytes)",
                opts.io_size,
                spec.bdev,
                g.size_bytes()
            )));
        }
        let chunks = g.num_blocks / io_blocks;
        let (offsets, verify_range) = if opts.workload == Workload::Verify {
            // Jobs verifying the same bdev split it, so they never write each other's blocks.
            let peers: Vec<&JobSpec> = specs.iter().filter(|s| s.bdev == spec.bdev).collect();
            let index = peers.iter().position(|s| *s == spec).unwrap_or(0) as u64;
            let per_job = chunks / peers.len() as u64;
            if per_job < opts.queue_depth as u64 {
                return Err(PerfError::usage(format!(
                    "bdev {} is too small to verify at queue depth {} with {}-byte I/O on {} job(s): \
                     each job needs at least queue depth × I/O size = {} bytes",
                    spec.bdev,
                    opts.queue_depth,
                    opts.io_size,
                    peers.len(),
                    opts.queue_depth as u64 * opts.io_size
                )));
            }
            let start = index * per_job * io_blocks;
            (
                Offsets::new(start, per_job, io_blocks, false),
                Some((start, per_job * io_blocks)),
            )
        } else {
            (
                Offsets::new(0, chunks, io_blocks, opts.workload.is_random()),
                None,
            )
        };
        plans.push(Plan {
            bdev: spec.bdev.clone(),
            entry,
            core_index: spec.core_index,
            cpu,
            block_size: g.block_size,
            offsets,
            verify_range,
            seed: opts.seed ^ (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        });
    }
    Ok(plans)
}

/// Runs every job at once and returns their results in the order of `specs`.
pub fn run(
    handle: &Handle,
    specs: &[JobSpec],
    opts: &RunOptions,
) -> Result<Vec<JobResult>, PerfError> {
    run_with(handle, specs, opts, &mut || {})
}

/// Like [`run`], calling `on_start` once every job has been checked, just before I/O starts.
pub fn run_with(
    handle: &Handle,
    specs: &[JobSpec],
    opts: &RunOptions,
    on_start: &mut dyn FnMut(),
) -> Result<Vec<JobResult>, PerfError> {
    let plans = plan(handle, specs, opts)?;
    on_start();
    let receivers: Vec<_> = plans
        .into_iter()
        .map(|p| {
            let label = (p.bdev.clone(), p.core_index);
            let opts = opts.clone();
            (
                label,
                handle.call_on(p.core_index, move |reply| start(p, opts, reply)),
            )
        })
        .collect();
    let deadline = std::time::Instant::now() + opts.warmup + opts.duration + DRAIN_GRACE;
    let mut results = Vec::with_capacity(receivers.len());
    let mut first_error = None;
    for ((bdev, core), rx) in receivers {
        let wait = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Ok(r)) => results.push(r),
            Ok(Err(msg)) => {
                first_error.get_or_insert(PerfError::run(format!(
                    "job {bdev} on reactor {core}: {msg}"
                )));
            }
            Err(RecvTimeoutError::Timeout) => {
                first_error.get_or_insert(PerfError::run(format!(
                    "job {bdev} on reactor {core}: I/O still outstanding {}s after the end of the run",
                    DRAIN_GRACE.as_secs()
                )));
            }
            Err(RecvTimeoutError::Disconnected) => {
                first_error.get_or_insert(PerfError::run(format!(
                    "job {bdev} on reactor {core}: the reactor stopped before the job finished"
                )));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(results),
    }
}

/// Per-slot verify state: which chunk the slot is working on and what it wrote there.
#[derive(Clone, Copy, Default)]
struct VerifySlot {
    chunk: u64,
    generation: u64,
}

struct VerifyState {
    slots: Vec<VerifySlot>,
    /// One bit per chunk of the job's range: a slot is writing or reading it.
    busy: Vec<u64>,
    cursor: u64,
    generation: u64,
}

impl VerifyState {
    fn is_busy(&self, c: u64) -> bool {
        self.busy[(c / 64) as usize] & (1 << (c % 64)) != 0
    }
    fn set_busy(&mut self, c: u64, on: bool) {
        let w = &mut self.busy[(c / 64) as usize];
        if on {
            *w |= 1 << (c % 64);
        } else {
            *w &= !(1 << (c % 64));
        }
    }
    /// The next chunk after the cursor that no slot holds (there is always one: the range
    /// has at least queue-depth chunks and the caller released its own).
    fn claim_next(&mut self, chunks: u64) -> u64 {
        for _ in 0..chunks {
            let c = self.cursor;
            self.cursor = if c + 1 == chunks { 0 } else { c + 1 };
            if !self.is_busy(c) {
                self.set_busy(c, true);
                return c;
            }
        }
        self.cursor
    }
}

/// Everything the completion path mutates, behind one borrow.
struct Hot {
    rng: Rng,
    offsets: Offsets,
    histogram: Histogram<u64>,
    /// Submit tick of each slot's current I/O.
    submitted: Vec<u64>,
    measuring: bool,
    /// Run-length coalescing of latencies: at depth, a whole batch submitted in one loop
    /// iteration completes in another, so consecutive I/Os share the same tick delta.
    last_delta: u64,
    run: u64,
    ios: u64,
    reads: u64,
    failed: u64,
    mismatches: u64,
    verify: Option<VerifyState>,
    messages: Vec<String>,
}

impl Hot {
    #[inline(always)]
    fn record(&mut self, slot: usize, now: u64, io_type: IoType) {
        if self.measuring {
            self.reads += u64::from(io_type == IoType::Read);
            let delta = now.saturating_sub(self.submitted[slot]);
            if delta == self.last_delta {
                self.run += 1;
            } else {
                self.flush();
                self.last_delta = delta;
                self.run = 1;
            }
            self.ios += 1;
        }
    }

    /// Moves the pending run of equal latencies into the histogram (in nanoseconds).
    #[inline(never)]
    fn flush(&mut self) {
        if self.run > 0 {
            let ns = clock::ticks_to_ns(0, self.last_delta);
            self.histogram.saturating_record_n(ns, self.run);
            self.run = 0;
        }
    }

    fn message(&mut self, msg: String) {
        if self.messages.len() < MAX_MESSAGES {
            self.messages.push(msg);
        }
    }

    #[cold]
    fn io_failed(&mut self, io: &BdevIo) {
        self.failed += 1;
        let errno = match io.status {
            IoStatus::Failed(e) => format!("errno {e}"),
            other => format!("{other:?}"),
        };
        let lba = io.offset_blocks;
        self.message(format!(
            "{} of LBA {lba} (0x{lba:x}), {} block(s), failed: {errno}",
            io.io_type.name(),
            io.num_blocks
        ));
    }
}

struct Job {
    me: Weak<Job>,
    bdev: String,
    core_index: usize,
    cpu: usize,
    channel: Rc<IoChannel>,
    block_size: u32,
    io_size: u64,
    read_percent: u64,
    verify_range: Option<(u64, u64)>,
    hot: RefCell<Hot>,
    stopping: Cell<bool>,
    window: Cell<(u64, u64)>,
    inflight: Cell<u32>,
    reply: RefCell<Option<Reply<Result<JobResult, String>>>>,
}

/// Starts a job on the calling reactor; `reply` gets its result after the run.
fn start(plan: Plan, opts: RunOptions, reply: Reply<Result<JobResult, String>>) {
    let channel = match plan.entry.channel() {
        Ok(c) => c,
        Err(e) => return reply.send(Err(format!("cannot get an I/O channel: {e}"))),
    };
    let qd = opts.queue_depth as usize;
    let io_blocks = plan.offsets.io_blocks;
    let mut ios = Vec::with_capacity(qd);
    for _ in 0..qd {
        let Some(buf) = DmaBuf::alloc(opts.io_size as usize) else {
            return reply.send(Err(format!(
                "cannot allocate {qd} DMA buffers of {} bytes (pool exhausted; lower -q or -o)",
                opts.io_size
            )));
        };
        ios.push(BdevIo::new(
            IoType::Read,
            plan.offsets.start_block,
            io_blocks,
            IoBuf::Dma(buf),
        ));
    }
    let verify = plan.verify_range.map(|_| VerifyState {
        slots: vec![VerifySlot::default(); qd],
        busy: vec![0; plan.offsets.chunks.div_ceil(64) as usize],
        cursor: 0,
        generation: 0,
    });
    let now = oxstor_reactor::now_ticks();
    let measuring = opts.warmup.is_zero();
    let job = Rc::new_cyclic(|me| Job {
        me: me.clone(),
        bdev: plan.bdev,
        core_index: plan.core_index,
        cpu: plan.cpu,
        channel,
        block_size: plan.block_size,
        io_size: opts.io_size,
        read_percent: opts.workload.read_percent(opts.rwmixread) as u64,
        verify_range: plan.verify_range,
        hot: RefCell::new(Hot {
            rng: Rng::new(plan.seed),
            offsets: plan.offsets,
            histogram: new_histogram(),
            submitted: vec![now; qd],
            measuring,
            last_delta: 0,
            run: 0,
            ios: 0,
            reads: 0,
            failed: 0,
            mismatches: 0,
            verify,
            messages: Vec::new(),
        }),
        stopping: Cell::new(false),
        window: Cell::new((now, now)),
        inflight: Cell::new(qd as u32),
        reply: RefCell::new(Some(reply)),
    });
    // Kick off from the timer phase of the loop: a completion can then never be reaped in
    // the same loop iteration (same cached tick) as its submission.
    oxstor_reactor::schedule_after(Duration::ZERO, move || {
        let now = oxstor_reactor::now_ticks();
        job.window.set((now, now));
        if !measuring {
            let weak = job.me.clone();
            oxstor_reactor::schedule_after(opts.warmup, move || {
                if let Some(job) = weak.upgrade() {
                    job.begin_window();
                }
            });
        }
        let weak = job.me.clone();
        oxstor_reactor::schedule_after(opts.warmup + opts.duration, move || {
            if let Some(job) = weak.upgrade() {
                job.stop();
            }
        });
        for (slot, io) in ios.into_iter().enumerate() {
            job.next(io, slot, now);
        }
    });
}

impl Job {
    fn begin_window(&self) {
        let now = oxstor_reactor::now_ticks();
        let mut h = self.hot.borrow_mut();
        h.histogram.reset();
        h.run = 0;
        h.ios = 0;
        h.reads = 0;
        h.measuring = true;
        self.window.set((now, now));
    }

    fn stop(&self) {
        let now = oxstor_reactor::now_ticks();
        self.hot.borrow_mut().measuring = false;
        self.stopping.set(true);
        self.window.set((self.window.get().0, now));
    }

    /// Retires a slot after the end of the run (its descriptor and buffer are freed here, on
    /// the core that owns them).
    fn park(&self, io: Box<BdevIo>) {
        drop(io);
        let left = self.inflight.get() - 1;
        self.inflight.set(left);
        if left == 0 {
            self.finish();
        }
    }

    fn finish(&self) {
        let Some(reply) = self.reply.borrow_mut().take() else {
            return;
        };
        let (start, end) = self.window.get();
        let mut h = self.hot.borrow_mut();
        h.flush();
        let histogram = std::mem::replace(&mut h.histogram, new_histogram());
        reply.send(Ok(JobResult {
            bdev: self.bdev.clone(),
            core_index: self.core_index,
            cpu: self.cpu,
            histogram,
            ios: h.ios,
            reads: h.reads,
            bytes: h.ios * self.io_size,
            failed: h.failed,
            mismatches: h.mismatches,
            runtime_ns: clock::ticks_to_ns(start, end),
            verify_range: self.verify_range,
            errors: std::mem::take(&mut h.messages),
        }));
    }

    #[inline(always)]
    fn submit(&self, io: Box<BdevIo>, slot: usize) {
        match self.me.upgrade() {
            Some(me) => self.channel.submit(io, me, slot as u64),
            None => self.park(io),
        }
    }

    /// Starts the next I/O of `slot` with the descriptor `io`.
    fn next(&self, mut io: Box<BdevIo>, slot: usize, now: u64) {
        if self.verify_range.is_some() {
            return self.next_verify_write(io, slot, now);
        }
        self.prepare(&mut self.hot.borrow_mut(), &mut io, slot, now);
        self.submit(io, slot);
    }

    /// Picks the next type and offset for a non-verify I/O and resets `io` for it.
    #[inline(always)]
    fn prepare(&self, h: &mut Hot, io: &mut BdevIo, slot: usize, now: u64) {
        let chunk = h.offsets.next_chunk(&mut h.rng);
        let io_type = match self.read_percent {
            100 => IoType::Read,
            0 => IoType::Write,
            p if h.rng.below(100) < p => IoType::Read,
            _ => IoType::Write,
        };
        io.reset(io_type, h.offsets.block_of(chunk), h.offsets.io_blocks);
        h.submitted[slot] = now;
    }

    fn next_verify_write(&self, mut io: Box<BdevIo>, slot: usize, now: u64) {
        let mut h = self.hot.borrow_mut();
        let Hot {
            offsets,
            verify,
            submitted,
            ..
        } = &mut *h;
        let Some(v) = verify.as_mut() else {
            drop(h);
            return self.park(io);
        };
        let chunk = v.claim_next(offsets.chunks);
        v.generation += 1;
        v.slots[slot] = VerifySlot {
            chunk,
            generation: v.generation,
        };
        let lba = offsets.block_of(chunk);
        verify::fill(
            io.buf.as_mut_slice(),
            self.block_size as usize,
            lba,
            v.generation,
        );
        io.reset(IoType::Write, lba, offsets.io_blocks);
        submitted[slot] = now;
        drop(h);
        self.submit(io, slot);
    }

    fn verify_done(&self, mut io: Box<BdevIo>, slot: usize, now: u64) {
        let ok = io.status.is_success();
        let mut h = self.hot.borrow_mut();
        let (chunk, generation) = match &h.verify {
            Some(v) => (v.slots[slot].chunk, v.slots[slot].generation),
            None => {
                drop(h);
                return self.park(io);
            }
        };
        let bs = self.block_size as usize;
        if ok {
            h.record(slot, now, io.io_type);
        } else {
            h.io_failed(&io);
        }
        if io.io_type == IoType::Write && ok {
            // Read the block back into the same buffer, poisoned so a read that moves no
            // data cannot pass. The pair completes even after the end of the window.
            verify::poison(io.buf.as_mut_slice(), bs);
            let (lba, n) = (io.offset_blocks, io.num_blocks);
            io.reset(IoType::Read, lba, n);
            h.submitted[slot] = now;
            drop(h);
            return self.submit(io, slot);
        }
        if io.io_type == IoType::Read && ok {
            if let Err(m) = verify::check(io.buf.as_slice(), bs, io.offset_blocks, generation) {
                h.mismatches += 1;
                h.message(format!("verify mismatch on {}: {m}", self.bdev));
            }
        }
        if let Some(v) = h.verify.as_mut() {
            v.set_busy(chunk, false);
        }
        drop(h);
        if self.stopping.get() {
            self.park(io);
        } else {
            self.next_verify_write(io, slot, now);
        }
    }
}

impl IoDone for Job {
    /// The hot path: record, pick the next offset, reset the same descriptor, resubmit.
    #[inline]
    fn io_done(&self, mut io: Box<BdevIo>, tag: u64) {
        let now = oxstor_reactor::now_ticks();
        let slot = tag as usize;
        if self.verify_range.is_some() {
            return self.verify_done(io, slot, now);
        }
        let mut h = self.hot.borrow_mut();
        if io.status.is_success() {
            h.record(slot, now, io.io_type);
        } else {
            h.io_failed(&io);
        }
        if self.stopping.get() {
            drop(h);
            return self.park(io);
        }
        self.prepare(&mut h, &mut io, slot, now);
        drop(h);
        self.submit(io, slot);
    }
}
