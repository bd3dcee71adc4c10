//! raid5 and raid6 I/O: stripe-at-a-time reads, writes and reconstruction.
//!
//! The generic channel splits every read and write on the stripe's data size (the RAID
//! bdev's `optimal_io_boundary`), so each I/O reaching [`StripeChan`] lies in one stripe.
//! That keeps the write path simple: one stripe, one lock, one parity computation.
//!
//! - **Healthy reads** go straight to the data members (one child per data strip touched),
//!   without locking; a member being rebuilt counts where it is current (below the rebuild's
//!   watermark, or a stripe a returning member did not miss). A read error marks the member
//!   faulty and retries the I/O degraded.
//! - **Degraded reads** (a data strip's member is out of service) lock the stripe, read
//!   every surviving strip over the affected range, [`parity::reconstruct`] the lost ones and
//!   copy the wanted blocks out.
//! - **Writes** lock the stripe. A healthy partial write picks read-modify-write (old data of
//!   the touched strips and old parity; [`parity::update_p`]/[`parity::update_pq`]) or
//!   reconstruct-write (the untouched data; parity from scratch), whichever reads fewer
//!   strips ([`StripeSpan::rmw_reads`] vs [`StripeSpan::rcw_reads`]). A full-stripe write is
//!   a reconstruct-write with nothing to read. A degraded write is always a
//!   reconstruct-write: members out of service are skipped, and when a strip that is needed
//!   for the new parity cannot be read, every surviving strip is read and the lost ones are
//!   reconstructed first, so the parity written always matches the data the array holds.
//!   A failing member write marks the member faulty; the I/O still succeeds while the array
//!   keeps its data. A member being rebuilt gets every write (see [`crate::rebuild`]).
//!
//! **Stripe locking.** Two writes to one stripe must not interleave: each reads what the
//! other is about to overwrite. On one core, a map of busy stripes queues later I/O behind
//! the one in flight (FIFO). Across cores, a small table of atomics shared by the array's
//! channels holds the stripes being written (hashed: stripe mod [`LOCK_BUCKETS`]); a core
//! that finds its bucket taken retries a few microseconds later. Each I/O holds at most one
//! bucket, so there is no deadlock; two stripes that share a bucket merely wait for each
//! other. Healthy reads take no lock: they see each block either before or after a
//! concurrent write, which is all a block device promises.
//!
//! Buffers for old data and parity are allocated per I/O from the DMA pool (the pool keeps
//! them per core, so this is cheap); an empty pool makes the I/O retry shortly.

use crate::bdev::RaidShared;
use crate::layout::{Layout, LayoutError, RaidLevel as PureLevel, StripeSpan};
use crate::parity::{self, Scheme};
use oxstor_bdev::{complete_later, BdevError, BdevIo, IoBuf, IoChannel, IoDone, IoStatus, IoType};
use oxstor_reactor::DmaBuf;
use std::any::Any;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Size of the cross-core stripe lock table (per array). Large next to the stripes a rebuild
/// holds (at most 8 windows of 32): with a small table, a quarter of all user writes and
/// degraded reads hashed onto a bucket the rebuild held and waited for its whole window.
pub const LOCK_BUCKETS: u64 = 4096;

/// Bits of the stale-stripe map (see [`StripeShared::is_stale`]); a bit covers
/// `stripe_count / STALE_BITS` stripes, rounded up.
const STALE_BITS: u64 = 1 << 16;

/// How long an I/O waits before trying a stripe lock another core holds, or a DMA buffer
/// again.
const RETRY: Duration = Duration::from_micros(20);

/// Child descriptors kept per channel for reuse.
const IO_POOL: usize = 256;

/// What every core's channel of one raid5/6 array shares.
#[derive(Debug)]
pub(crate) struct StripeShared {
    pub(crate) layout: Layout,
    /// Bucket `stripe % LOCK_BUCKETS` holds `stripe + 1` while some core writes the stripe.
    locks: Box<[AtomicU64]>,
    /// One bit per `stale_group` stripes: set where the member being rebuilt may not hold
    /// current strips yet. All set outside a rebuild, so a rebuild starts from "nothing is
    /// current" until it has worked out what its member missed.
    stale: Box<[AtomicU64]>,
    stale_group: u64,
}

impl StripeShared {
    /// The layout of a raid5 (`parity == 1`) or raid6 (`parity == 2`) array.
    pub(crate) fn new(
        parity: usize,
        strip_blocks: u64,
        member_blocks: &[u64],
    ) -> Result<StripeShared, BdevError> {
        let level = if parity == 2 {
            PureLevel::Raid6
        } else {
            PureLevel::Raid5
        };
        let layout = Layout::new(level, strip_blocks, member_blocks).map_err(|e| match e {
            LayoutError::MemberTooSmall { .. } => BdevError::Invalid(format!(
                "members are too small for a {level} array with this strip size"
            )),
            e => BdevError::Invalid(e.to_string()),
        })?;
        if layout.stripe_count() == 0 {
            return Err(BdevError::Invalid(format!(
                "members are too small for a {level} array with this strip size"
            )));
        }
        let stale_group = layout.stripe_count().div_ceil(STALE_BITS).max(1);
        let stale_words = layout.stripe_count().div_ceil(stale_group).div_ceil(64);
        Ok(StripeShared {
            layout,
            locks: (0..LOCK_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            stale: (0..stale_words).map(|_| AtomicU64::new(u64::MAX)).collect(),
            stale_group,
        })
    }

    /// Whether the strip of `stripe` on the member being rebuilt may be out of date (it
    /// must then be reconstructed, not read). Only meaningful while a rebuild runs.
    pub(crate) fn is_stale(&self, stripe: u64) -> bool {
        let bit = stripe / self.stale_group;
        self.stale
            .get((bit / 64) as usize)
            .is_none_or(|w| w.load(Ordering::Acquire) & (1 << (bit % 64)) != 0)
    }

    /// The rebuild found stripes `stripes` current on its member (it was away while no
    /// write touched them): reads may go to the member there. Groups of the map that
    /// `stripes` covers only partly stay stale.
    pub(crate) fn mark_current(&self, stripes: Range<u64>) {
        let g = self.stale_group;
        for bit in stripes.start.div_ceil(g)..stripes.end / g {
            if let Some(w) = self.stale.get((bit / 64) as usize) {
                w.fetch_and(!(1 << (bit % 64)), Ordering::Release);
            }
        }
    }

    /// The rebuild is over: back to "nothing is current" for the next one.
    pub(crate) fn mark_all_stale(&self) {
        for w in self.stale.iter() {
            w.store(u64::MAX, Ordering::Release);
        }
    }

    fn scheme(&self) -> Scheme {
        if self.layout.level() == PureLevel::Raid6 {
            Scheme::Raid6
        } else {
            Scheme::Raid5
        }
    }

    fn bucket(&self, stripe: u64) -> &AtomicU64 {
        &self.locks[(stripe % LOCK_BUCKETS) as usize]
    }

    /// Takes the cross-core lock of `stripe` for a background process (rebuild), as a
    /// writer would; false if someone holds its bucket (try again later).
    pub(crate) fn try_lock_stripe(&self, stripe: u64) -> bool {
        self.bucket(stripe)
            .compare_exchange(0, stripe + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Releases a lock taken with [`StripeShared::try_lock_stripe`].
    pub(crate) fn unlock_stripe(&self, stripe: u64) {
        self.bucket(stripe).store(0, Ordering::Release);
    }

    pub(crate) fn parity_scheme(&self) -> Scheme {
        self.scheme()
    }

    /// The member holding parity slot `slot` (data `0..k`, P, Q) of `stripe`.
    pub(crate) fn slot_member_of(&self, stripe: u64, slot: usize) -> usize {
        let l = &self.layout;
        let k = l.data_members();
        let parity = l.parity_members(stripe);
        match slot.checked_sub(k) {
            None => l.data_member(stripe, slot),
            Some(0) => parity.p,
            Some(_) => parity.q.unwrap_or(parity.p),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Children read straight into the parent's buffer.
    HealthyRead,
    /// Read the survivors into scratch, reconstruct, copy out.
    DegradedRead,
    /// Read old data and parity, fold the change into the parity.
    Rmw,
    /// Read (some of) the rest of the stripe, compute the parity from scratch; `recover`
    /// when lost strips must be reconstructed first.
    Rcw { recover: bool },
}

/// Where a child's buffer lies: blocks into the parent's buffer, or into a scratch slot.
#[derive(Clone, Copy)]
enum Src {
    Parent(u64),
    Slot(usize, u64),
}

/// One stripe I/O in progress.
struct Op {
    parent: Option<Box<BdevIo>>,
    mode: Mode,
    stripe: u64,
    /// Span within the stripe's data (blocks).
    start: u64,
    blocks: u64,
    /// Strip offsets the scratch slots cover.
    range: Range<u64>,
    /// Scratch per parity slot (data `0..k`, P, Q), `IoBuf::None` when unused.
    slots: Vec<IoBuf>,
    /// Slots whose member is out of service (to reconstruct).
    lost: Vec<usize>,
    /// Children in flight, plus one while the op is submitting them.
    pending: u32,
    writing: bool,
    err: Option<IoStatus>,
    /// A read failed on a member now marked faulty: plan the I/O again.
    replan: bool,
}

/// One core's raid5/6 engine for one array (owned by the RAID channel).
pub(crate) struct StripeChan {
    me: Weak<StripeChan>,
    raid: Arc<RaidShared>,
    sh: Arc<StripeShared>,
    block_size: usize,
    /// Member block where array data begins (after a superblock area, if any).
    data_offset: u64,
    members: RefCell<Vec<Option<Rc<IoChannel>>>>,
    ops: RefCell<Vec<Option<Op>>>,
    free_ops: RefCell<Vec<usize>>,
    #[allow(clippy::vec_box)]
    free_ios: RefCell<Vec<Box<BdevIo>>>,
    /// Stripes this core holds (or is acquiring), each with the I/Os queued behind it.
    busy: RefCell<HashMap<u64, VecDeque<Box<BdevIo>>>>,
    /// This core's write-intent bitmap counters (arrays that keep a bitmap).
    intent_core: Option<Arc<crate::intent::IntentCore>>,
}

/// The parent write's scratch word that carries how the bitmap counted it.
const SCRATCH_INTENT: usize = 1;

impl StripeChan {
    pub(crate) fn new(
        raid: Arc<RaidShared>,
        sh: Arc<StripeShared>,
        block_size: u32,
        data_offset: u64,
    ) -> Rc<StripeChan> {
        Rc::new_cyclic(|me| StripeChan {
            me: me.clone(),
            sh,
            block_size: block_size as usize,
            data_offset,
            members: RefCell::new(Vec::new()),
            ops: RefCell::new(Vec::new()),
            free_ops: RefCell::new(Vec::new()),
            free_ios: RefCell::new(Vec::new()),
            busy: RefCell::new(HashMap::new()),
            intent_core: raid.intent().map(|i| i.register_core()),
            raid,
        })
    }

    /// The member channels of this core, refreshed by the RAID channel.
    pub(crate) fn set_members(&self, members: Vec<Option<Rc<IoChannel>>>) {
        *self.members.borrow_mut() = members;
    }

    fn rc(&self) -> Rc<StripeChan> {
        self.me
            .upgrade()
            .expect("a channel is alive while it handles I/O")
    }

    fn member(&self, m: usize) -> Option<Rc<IoChannel>> {
        self.members.borrow().get(m).cloned().flatten()
    }

    /// Whether member `m` may be read and written.
    fn usable(&self, m: usize) -> bool {
        self.raid.member_online(m) && self.member(m).is_some()
    }

    /// Whether writes must reach member `m`: in service, or being rebuilt. A rebuilding
    /// member gets every write, wherever the rebuild is: a returning member's rebuild skips
    /// the stripes it did not miss, and those must stay current. Its strips the rebuild has
    /// yet to compute are merely written in part; the rebuild, under the stripe lock, later
    /// writes them whole.
    fn writable(&self, m: usize) -> bool {
        self.member(m).is_some() && (self.raid.member_online(m) || self.raid.is_rebuilding(m))
    }

    /// Whether a healthy read of `stripe` may use member `m`: in service, or being rebuilt
    /// and current there (below the rebuild's watermark, or a stripe its rebuild skips).
    /// Those reads take no stripe lock, which keeps them off the rebuild's windows.
    fn readable(&self, m: usize, stripe: u64) -> bool {
        if self.usable(m) {
            return true;
        }
        self.member(m).is_some()
            && self.raid.is_rebuilding(m)
            && (self
                .raid
                .rebuilt_stripe(m, stripe, self.sh.layout.strip_blocks())
                || !self.sh.is_stale(stripe))
    }

    fn survives(&self) -> bool {
        self.sh.layout.survives(|m| !self.usable(m))
    }

    /// The member holding parity slot `slot` (data `0..k`, P, Q) of `stripe`.
    fn slot_member(&self, stripe: u64, slot: usize) -> usize {
        let l = &self.sh.layout;
        let k = l.data_members();
        let parity = l.parity_members(stripe);
        match slot.checked_sub(k) {
            None => l.data_member(stripe, slot),
            Some(0) => parity.p,
            Some(_) => parity.q.unwrap_or(parity.p),
        }
    }

    fn span(&self, stripe: u64, start: u64, blocks: u64) -> Option<StripeSpan<'_>> {
        let first = stripe * self.sh.layout.stripe_data_blocks() + start;
        self.sh.layout.map_stripes(first, blocks).ok()?.next()
    }

    /// Entry point for reads and writes (the RAID channel handles the other types).
    pub(crate) fn submit(&self, io: Box<BdevIo>) {
        let l = &self.sh.layout;
        let spans = match l.map_stripes(io.offset_blocks, io.num_blocks) {
            Ok(s) => s,
            Err(_) => return complete_later(io, IoStatus::Failed(libc::EINVAL)),
        };
        // The generic channel splits on stripes (optimal_io_boundary); anything else is a
        // caller bypassing it.
        if spans.count() != 1 {
            return complete_later(io, IoStatus::Failed(libc::EINVAL));
        }
        match io.io_type {
            IoType::Read => self.read(io),
            IoType::Write => self.intent_then_lock(io),
            _ => complete_later(io, IoStatus::Failed(libc::ENOTSUP)),
        }
    }

    /// Marks a write in the write-intent bitmap ([`crate::intent`]) and holds it until its
    /// bits are on disk; `finish` unmarks it.
    fn intent_then_lock(&self, mut io: Box<BdevIo>) {
        use crate::intent::Begin;
        let how = match (self.raid.intent(), &self.intent_core) {
            (Some(i), Some(core)) => i.begin_write(core, io.offset_blocks, io.num_blocks),
            _ => Begin::Unmarked,
        };
        io.scratch[SCRATCH_INTENT] = how.code();
        match how {
            Begin::Hold => self.intent_wait(io),
            _ => self.lock_then_start(io),
        }
    }

    fn intent_wait(&self, io: Box<BdevIo>) {
        let me = self.rc();
        oxstor_reactor::schedule_after(RETRY, move || {
            let go = me
                .raid
                .intent()
                .is_none_or(|i| i.write_may_go(io.offset_blocks, io.num_blocks));
            if go {
                me.lock_then_start(io)
            } else {
                me.intent_wait(io)
            }
        });
    }

    fn stripe_of(&self, io: &BdevIo) -> (u64, u64) {
        let per = self.sh.layout.stripe_data_blocks();
        (io.offset_blocks / per, io.offset_blocks % per)
    }

    fn read(&self, io: Box<BdevIo>) {
        let (stripe, start) = self.stripe_of(&io);
        let Some(span) = self.span(stripe, start, io.num_blocks) else {
            return complete_later(io, IoStatus::Failed(libc::EINVAL));
        };
        if !span.data_extents().all(|e| self.readable(e.member, stripe)) {
            return self.lock_then_start(io);
        }
        let blocks = io.num_blocks;
        let op = self.open(io, Mode::HealthyRead, stripe, start, blocks, 0..0);
        for e in span.data_extents() {
            self.child(
                op,
                e.member,
                IoType::Read,
                e.member_offset,
                e.blocks,
                Src::Parent(e.buf_offset),
            );
        }
        self.dec(op, true);
    }

    // -- Locking --------------------------------------------------------------------------

    fn lock_then_start(&self, io: Box<BdevIo>) {
        let (stripe, _) = self.stripe_of(&io);
        {
            let mut busy = self.busy.borrow_mut();
            if let Some(queue) = busy.get_mut(&stripe) {
                queue.push_back(io);
                return;
            }
            busy.insert(stripe, VecDeque::new());
        }
        self.acquire(io, stripe, true);
    }

    /// Takes the cross-core lock of `stripe` (this core already owns it locally), then
    /// starts `io`.
    fn acquire(&self, io: Box<BdevIo>, stripe: u64, in_submit: bool) {
        let taken = self
            .sh
            .bucket(stripe)
            .compare_exchange(0, stripe + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if taken {
            self.start_locked(io, stripe, in_submit);
        } else {
            let me = self.rc();
            oxstor_reactor::schedule_after(RETRY, move || me.acquire(io, stripe, false));
        }
    }

    /// Releases `stripe` and starts the next I/O queued behind it on this core.
    fn unlock(&self, stripe: u64) {
        self.sh.bucket(stripe).store(0, Ordering::Release);
        let next = {
            let mut busy = self.busy.borrow_mut();
            match busy.get_mut(&stripe).and_then(VecDeque::pop_front) {
                Some(io) => Some(io),
                None => {
                    busy.remove(&stripe);
                    None
                }
            }
        };
        if let Some(io) = next {
            self.acquire(io, stripe, false);
        }
    }

    /// Fails a locked I/O before it started any child.
    fn fail_locked(&self, io: Box<BdevIo>, stripe: u64, status: IoStatus) {
        self.unlock(stripe);
        complete_later(io, status);
    }

    // -- Planning -------------------------------------------------------------------------

    /// Plans and starts a write or degraded read of `stripe`, whose lock this I/O holds.
    fn start_locked(&self, io: Box<BdevIo>, stripe: u64, in_submit: bool) {
        let (_, start) = self.stripe_of(&io);
        let blocks = io.num_blocks;
        let is_write = io.io_type == IoType::Write;
        if !self.survives() {
            return self.fail_locked(io, stripe, IoStatus::Failed(libc::EIO));
        }
        let Some(span) = self.span(stripe, start, blocks) else {
            return self.fail_locked(io, stripe, IoStatus::Failed(libc::EINVAL));
        };
        let l = &self.sh.layout;
        let k = l.data_members();
        let slots = k + l.level().parity_members();
        let strip = l.strip_blocks();
        let all_usable = (0..slots).all(|s| self.usable(self.slot_member(stripe, s)));
        // Strip range a data slot's new data covers, if it is touched.
        let covered = |slot: usize| {
            span.data_extents()
                .find(|e| e.data_index == slot)
                .map(|e| e.strip_offset..e.strip_offset + e.blocks)
        };
        let mode = if !is_write {
            // Even if the data members are all in service by now, reading the whole range
            // and "reconstructing" nothing is correct.
            Mode::DegradedRead
        } else if all_usable && !span.is_full_stripe() && span.rmw_reads() < span.rcw_reads() {
            Mode::Rmw
        } else {
            let range = span.parity_range();
            let recover = (0..k).any(|s| {
                let whole =
                    covered(s).is_some_and(|c| c.start <= range.start && c.end >= range.end);
                !whole && !self.usable(self.slot_member(stripe, s))
            });
            Mode::Rcw { recover }
        };
        let range = if matches!(mode, Mode::Rcw { .. }) && span.is_full_stripe() {
            0..strip
        } else {
            span.parity_range()
        };
        let len = ((range.end - range.start) as usize) * self.block_size;
        // Which slots need a scratch buffer and which get read.
        let mut want = vec![false; slots];
        let mut read = vec![false; slots];
        match mode {
            Mode::HealthyRead => {}
            Mode::DegradedRead | Mode::Rcw { recover: true } => {
                want.iter_mut().for_each(|w| *w = true);
                for (s, r) in read.iter_mut().enumerate() {
                    *r = self.usable(self.slot_member(stripe, s));
                }
            }
            Mode::Rmw => {
                for e in span.data_extents() {
                    want[e.data_index] = true;
                    read[e.data_index] = true;
                }
                for s in k..slots {
                    want[s] = true;
                    read[s] = true;
                }
            }
            Mode::Rcw { recover: false } => {
                let full = span.is_full_stripe();
                for (s, w) in want.iter_mut().enumerate() {
                    // A full stripe's data comes straight from the parent's buffer.
                    *w = s >= k || !full;
                }
                for (s, r) in read.iter_mut().enumerate().take(k) {
                    let whole =
                        covered(s).is_some_and(|c| c.start <= range.start && c.end >= range.end);
                    *r = !full && !whole && self.usable(self.slot_member(stripe, s));
                }
            }
        }
        let mut bufs = Vec::with_capacity(slots);
        for &w in &want {
            if !w {
                bufs.push(IoBuf::None);
                continue;
            }
            match DmaBuf::alloc(len) {
                Some(b) => bufs.push(IoBuf::Dma(b)),
                None => {
                    // The pool is empty: keep the lock and try again shortly.
                    let me = self.rc();
                    oxstor_reactor::schedule_after(RETRY, move || {
                        me.start_locked(io, stripe, false)
                    });
                    return;
                }
            }
        }
        let lost: Vec<usize> = (0..slots)
            .filter(|&s| want[s] && !self.usable(self.slot_member(stripe, s)))
            .collect();
        if matches!(mode, Mode::DegradedRead | Mode::Rcw { recover: true })
            && lost.len() > l.level().parity_members()
        {
            return self.fail_locked(io, stripe, IoStatus::Failed(libc::EIO));
        }
        let row = stripe * strip;
        let op = self.open(io, mode, stripe, start, blocks, range.clone());
        {
            let mut ops = self.ops.borrow_mut();
            if let Some(o) = ops[op].as_mut() {
                o.slots = bufs;
                o.lost = lost;
            }
        }
        for s in (0..slots).filter(|&s| read[s]) {
            let m = self.slot_member(stripe, s);
            let (from, to) = match mode {
                // Old data is needed only where it changes.
                Mode::Rmw if s < k => match covered(s) {
                    Some(c) => (c.start, c.end),
                    None => continue,
                },
                _ => (range.start, range.end),
            };
            self.child(
                op,
                m,
                IoType::Read,
                row + from,
                to - from,
                Src::Slot(s, from - range.start),
            );
        }
        self.dec(op, in_submit);
    }

    // -- Children and completion ----------------------------------------------------------

    fn open(
        &self,
        io: Box<BdevIo>,
        mode: Mode,
        stripe: u64,
        start: u64,
        blocks: u64,
        range: Range<u64>,
    ) -> usize {
        let op = Op {
            parent: Some(io),
            mode,
            stripe,
            start,
            blocks,
            range,
            slots: Vec::new(),
            lost: Vec::new(),
            pending: 1,
            writing: false,
            err: None,
            replan: false,
        };
        let mut ops = self.ops.borrow_mut();
        match self.free_ops.borrow_mut().pop() {
            Some(i) => {
                ops[i] = Some(op);
                i
            }
            None => {
                ops.push(Some(op));
                ops.len() - 1
            }
        }
    }

    fn child(&self, op: usize, m: usize, t: IoType, moff: u64, blocks: u64, src: Src) {
        let Some(ch) = self.member(m) else {
            // Checked by the planner; a member removed meanwhile counts as an error.
            if let Some(o) = self.ops.borrow_mut()[op].as_mut() {
                o.err.get_or_insert(IoStatus::Failed(libc::ENODEV));
            }
            return;
        };
        let moff = moff + self.data_offset;
        let recycled = self.free_ios.borrow_mut().pop();
        let mut child = match recycled {
            Some(mut c) => {
                c.reset(t, moff, blocks);
                c
            }
            None => BdevIo::new(t, moff, blocks, IoBuf::None),
        };
        {
            let mut ops = self.ops.borrow_mut();
            let Some(o) = ops[op].as_mut() else { return };
            o.pending += 1;
            let bs = self.block_size;
            let owner: Rc<dyn Any> = self.rc();
            let (buf, at) = match src {
                Src::Parent(at) => match o.parent.as_mut() {
                    Some(p) => (&mut p.buf, at),
                    None => return,
                },
                Src::Slot(s, at) => (&mut o.slots[s], at),
            };
            // Children of one op never overlap while written, as `IoBuf::window` requires.
            child.buf = IoBuf::window(buf, at as usize * bs, blocks as usize * bs, owner);
        }
        ch.submit(child, self.rc(), (op as u64) << 8 | m as u64);
    }

    fn child_done(&self, op: usize, m: usize, mut child: Box<BdevIo>) {
        let status = child.status;
        let t = child.io_type;
        child.buf = IoBuf::None;
        {
            let mut pool = self.free_ios.borrow_mut();
            if pool.len() < IO_POOL {
                pool.push(child);
            }
        }
        if !status.is_success() {
            let retryable = t == IoType::Read && status != IoStatus::Failed(libc::ENOMEM);
            // A failed write leaves the member stale: it must not be read again. A failed
            // read marks it too (md's policy) and the I/O is planned again without it.
            if t == IoType::Write || retryable {
                self.raid.mark_faulty(m, status);
            }
            if let Some(o) = self.ops.borrow_mut()[op].as_mut() {
                if retryable {
                    o.replan = true;
                } else if t == IoType::Read {
                    o.err.get_or_insert(status);
                } else if o.err.is_none() && !self.survives() {
                    o.err = Some(status);
                }
            }
        }
        self.dec(op, false);
    }

    /// Drops one reference to `op`; the last one moves it to its next phase.
    fn dec(&self, op: usize, in_submit: bool) {
        {
            let mut ops = self.ops.borrow_mut();
            let Some(o) = ops[op].as_mut() else { return };
            o.pending -= 1;
            if o.pending > 0 {
                return;
            }
        }
        let (mode, writing, replan, err) = {
            let ops = self.ops.borrow();
            let Some(o) = ops[op].as_ref() else { return };
            (o.mode, o.writing, o.replan, o.err)
        };
        if let Some(err) = err {
            return self.finish(op, err, in_submit);
        }
        if replan {
            return self.replan(op, in_submit);
        }
        match (mode, writing) {
            (Mode::HealthyRead, _) => self.finish(op, IoStatus::Success, in_submit),
            (Mode::DegradedRead, _) => {
                let status = self.copy_out(op);
                self.finish(op, status, in_submit)
            }
            (_, false) => match self.compute(op) {
                Ok(()) => self.write_phase(op, in_submit),
                Err(status) => self.finish(op, status, in_submit),
            },
            (_, true) => {
                let status = if self.survives() {
                    IoStatus::Success
                } else {
                    IoStatus::Failed(libc::EIO)
                };
                self.finish(op, status, in_submit)
            }
        }
    }

    /// Starts the I/O again after a member failed a read (it is now out of service).
    fn replan(&self, op: usize, in_submit: bool) {
        let Some(o) = self.ops.borrow_mut()[op].take() else {
            return;
        };
        self.free_ops.borrow_mut().push(op);
        let Some(io) = o.parent else { return };
        match o.mode {
            // Healthy reads hold no lock: queue like any degraded read.
            Mode::HealthyRead => self.lock_then_start(io),
            _ => self.start_locked(io, o.stripe, in_submit),
        }
    }

    fn finish(&self, op: usize, status: IoStatus, in_submit: bool) {
        let Some(o) = self.ops.borrow_mut()[op].take() else {
            return;
        };
        self.free_ops.borrow_mut().push(op);
        if o.mode != Mode::HealthyRead {
            self.unlock(o.stripe);
        }
        if let (Some(p), Some(i), Some(core)) = (&o.parent, self.raid.intent(), &self.intent_core) {
            if p.io_type == IoType::Write {
                let how = crate::intent::Begin::from_code(p.scratch[SCRATCH_INTENT]);
                i.end_write(core, p.offset_blocks, p.num_blocks, how);
            }
        }
        if let Some(parent) = o.parent {
            if in_submit {
                complete_later(parent, status);
            } else {
                parent.complete(status);
            }
        }
    }

    /// Degraded read: rebuild the lost strips and copy the wanted blocks to the parent.
    fn copy_out(&self, op: usize) -> IoStatus {
        let mut ops = self.ops.borrow_mut();
        let Some(o) = ops[op].as_mut() else {
            return IoStatus::Failed(libc::EIO);
        };
        let scheme = self.sh.scheme();
        {
            let mut strips: Vec<&mut [u8]> = o.slots.iter_mut().map(|b| b.as_mut_slice()).collect();
            if let Err(e) = parity::reconstruct(scheme, &mut strips, &o.lost) {
                tracing::error!("raid {}: reconstruct failed: {e}", self.raid.name());
                return IoStatus::Failed(libc::EIO);
            }
        }
        let Some(span) = self.span(o.stripe, o.start, o.blocks) else {
            return IoStatus::Failed(libc::EINVAL);
        };
        let bs = self.block_size;
        let Some(parent) = o.parent.as_mut() else {
            return IoStatus::Failed(libc::EIO);
        };
        let out = parent.buf.as_mut_slice();
        for e in span.data_extents() {
            let from = (e.strip_offset - o.range.start) as usize * bs;
            let len = e.blocks as usize * bs;
            let at = e.buf_offset as usize * bs;
            out[at..at + len].copy_from_slice(&o.slots[e.data_index].as_slice()[from..from + len]);
        }
        IoStatus::Success
    }

    /// Computes the new parity into the P/Q slots (and the new data into data slots).
    fn compute(&self, op: usize) -> Result<(), IoStatus> {
        let mut ops = self.ops.borrow_mut();
        let o = ops[op].as_mut().ok_or(IoStatus::Failed(libc::EIO))?;
        let span = self
            .span(o.stripe, o.start, o.blocks)
            .ok_or(IoStatus::Failed(libc::EINVAL))?;
        let l = &self.sh.layout;
        let k = l.data_members();
        let bs = self.block_size;
        let raid6 = self.sh.scheme() == Scheme::Raid6;
        let fail = |e: parity::ParityError| {
            tracing::error!("raid {}: parity computation failed: {e}", self.raid.name());
            IoStatus::Failed(libc::EIO)
        };
        let Op {
            parent,
            slots,
            lost,
            range,
            mode,
            ..
        } = o;
        let new = parent
            .as_ref()
            .ok_or(IoStatus::Failed(libc::EIO))?
            .buf
            .as_slice();
        let (data, par) = slots.split_at_mut(k);
        let (p, q) = par.split_at_mut(1);
        let p = p[0].as_mut_slice();
        let mut q = q.first_mut().map(|q| q.as_mut_slice());
        match *mode {
            Mode::Rmw => {
                for e in span.data_extents() {
                    let from = (e.strip_offset - range.start) as usize * bs;
                    let len = e.blocks as usize * bs;
                    let at = e.buf_offset as usize * bs;
                    let old = &data[e.data_index].as_slice()[from..from + len];
                    let new = &new[at..at + len];
                    let p = &mut p[from..from + len];
                    match q.as_deref_mut() {
                        Some(q) if raid6 => {
                            parity::update_pq(p, &mut q[from..from + len], e.data_index, old, new)
                                .map_err(fail)?
                        }
                        _ => parity::update_p(p, old, new).map_err(fail)?,
                    }
                }
            }
            Mode::Rcw { recover } => {
                if recover {
                    let mut strips: Vec<&mut [u8]> = data
                        .iter_mut()
                        .map(|b| b.as_mut_slice())
                        .chain(std::iter::once(&mut *p))
                        .chain(q.as_deref_mut().map(|q| q as &mut [u8]))
                        .collect();
                    parity::reconstruct(self.sh.scheme(), &mut strips, lost).map_err(fail)?;
                }
                let strips: Vec<&[u8]> = if span.is_full_stripe() {
                    new.chunks(l.strip_blocks() as usize * bs).collect()
                } else {
                    // Lay the new data over the old, then recompute.
                    for e in span.data_extents() {
                        let from = (e.strip_offset - range.start) as usize * bs;
                        let len = e.blocks as usize * bs;
                        let at = e.buf_offset as usize * bs;
                        data[e.data_index].as_mut_slice()[from..from + len]
                            .copy_from_slice(&new[at..at + len]);
                    }
                    data.iter().map(|b| b.as_slice()).collect()
                };
                match q {
                    Some(q) if raid6 => parity::compute_pq(&strips, p, q).map_err(fail)?,
                    _ => parity::compute_p(&strips, p).map_err(fail)?,
                }
            }
            Mode::HealthyRead | Mode::DegradedRead => {}
        }
        Ok(())
    }

    /// Writes the new data and parity to every member in service.
    fn write_phase(&self, op: usize, in_submit: bool) {
        let (stripe, start, blocks, range) = {
            let mut ops = self.ops.borrow_mut();
            let Some(o) = ops[op].as_mut() else { return };
            o.writing = true;
            o.pending = 1;
            (o.stripe, o.start, o.blocks, o.range.clone())
        };
        let Some(span) = self.span(stripe, start, blocks) else {
            return self.finish(op, IoStatus::Failed(libc::EINVAL), in_submit);
        };
        let l = &self.sh.layout;
        let k = l.data_members();
        let slots = k + l.level().parity_members();
        let row = stripe * l.strip_blocks();
        for e in span.data_extents() {
            if self.writable(e.member) {
                self.child(
                    op,
                    e.member,
                    IoType::Write,
                    e.member_offset,
                    e.blocks,
                    Src::Parent(e.buf_offset),
                );
            }
        }
        for s in k..slots {
            let m = self.slot_member(stripe, s);
            if self.writable(m) {
                let len = range.end - range.start;
                self.child(
                    op,
                    m,
                    IoType::Write,
                    row + range.start,
                    len,
                    Src::Slot(s, 0),
                );
            }
        }
        self.dec(op, in_submit);
    }
}

impl IoDone for StripeChan {
    fn io_done(&self, io: Box<BdevIo>, tag: u64) {
        self.child_done((tag >> 8) as usize, (tag & 0xff) as usize, io);
    }
}
