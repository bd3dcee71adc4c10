//! `bdev_raid_scrub`: md's `check` / `repair` sync actions.
//!
//! On the first reactor the array is walked one window at a time. Mirrors (raid1/raid10)
//! lock the window the way the mirror rebuild does (user writes to it wait, see
//! [`crate::bdev`]), read every copy and compare them block by block with the first copy;
//! parity levels (raid5/raid6) take the window's stripe locks (as the parity rebuild and user
//! writes do, see [`crate::stripe`]), read every member's rows, recompute P (and Q) from the
//! data and compare them block by block with what is stored. `mismatch_cnt` counts
//! inconsistent blocks: mirror blocks where some copy differs from the first, parity block
//! rows whose P or Q differs from the recomputed value. `repair` then rewrites the window:
//! mirrors from the first copy, parity from the data.
//!
//! A scrub needs every member in service and no rebuild running; it stops if a member
//! fails or the array goes away. Progress and the result are reported under `scrub` in
//! `bdev_raid_get_bdevs`.

use crate::bdev::{self, RaidShared};
use crate::parity::{self, Scheme};
use crate::stripe::StripeShared;
use oxstor_bdev::{registry, BdevError, BdevIo, IoBuf, IoChannel, IoDone, IoStatus, IoType};
use oxstor_reactor::DmaBuf;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Mirror window, bytes at most (the rebuild's window is capped the same way).
const MIRROR_WINDOW_BYTES: u64 = 128 * 1024;
/// Stripes per parity window at most.
const MAX_WINDOW_STRIPES: u64 = 32;
const RETRY: Duration = Duration::from_micros(20);

/// `bdev_raid_scrub` parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BdevRaidScrubParams {
    pub name: String,
    /// "check" (count mismatches) or "repair" (count and fix them).
    pub action: String,
}

#[derive(Debug, Clone)]
struct Status {
    id: u64,
    action: &'static str,
    done_blocks: u64,
    total_blocks: u64,
    mismatch_cnt: u64,
    done: bool,
    error: Option<String>,
}

static STATUS: Mutex<Vec<Status>> = Mutex::new(Vec::new());

fn with_status<R>(id: u64, f: impl FnOnce(&mut Status) -> R) -> Option<R> {
    let mut all = STATUS.lock().unwrap_or_else(|p| p.into_inner());
    all.iter_mut().find(|s| s.id == id).map(f)
}

/// The `scrub` entry of `bdev_raid_get_bdevs` for array `id` (None if never scrubbed).
pub(crate) fn info(id: u64) -> Option<Value> {
    with_status(id, |s| {
        let mut v = json!({
            "action": s.action,
            "progress_percent": if s.done && s.error.is_none() {
                100
            } else {
                s.done_blocks * 100 / s.total_blocks.max(1)
            },
            "mismatch_cnt": s.mismatch_cnt,
            "done": s.done,
        });
        if let Some(e) = &s.error {
            v["error"] = json!(e);
        }
        v
    })
}

/// Whether array `id` is scrubbing now.
pub(crate) fn running(id: u64) -> bool {
    with_status(id, |s| !s.done).unwrap_or(false)
}

/// `bdev_raid_scrub`: starts a check or repair in the background; returns at once.
pub fn scrub(p: BdevRaidScrubParams) -> Result<Value, BdevError> {
    let repair = match p.action.as_str() {
        "check" => false,
        "repair" => true,
        other => {
            return Err(BdevError::Invalid(format!(
                "action '{other}' is not one of check, repair"
            )))
        }
    };
    let raid = bdev::find(&p.name)?;
    if !raid.level().is_redundant() {
        return Err(BdevError::Invalid(format!(
            "{} raid {} has no redundancy to scrub",
            raid.level().name(),
            p.name
        )));
    }
    if !raid.scrub_ready() {
        return Err(BdevError::Invalid(format!(
            "raid {} must be online with every member in service and no rebuild running",
            p.name
        )));
    }
    let rt = registry::runtime().ok_or(BdevError::NoRuntime)?;
    {
        let mut all = STATUS.lock().unwrap_or_else(|p| p.into_inner());
        if all.iter().any(|s| s.id == raid.id() && !s.done) {
            return Err(BdevError::Invalid(format!(
                "raid {} is already scrubbing",
                p.name
            )));
        }
        all.retain(|s| s.id != raid.id());
        all.push(Status {
            id: raid.id(),
            action: if repair { "repair" } else { "check" },
            done_blocks: 0,
            total_blocks: 0,
            mismatch_cnt: 0,
            done: false,
            error: None,
        });
    }
    let id = raid.id();
    rt.send(0, move || Scrub::start(raid, repair));
    Ok(json!({"name": p.name, "action": p.action, "started": true, "id": id}))
}

enum Mode {
    Mirror {
        block_size: u64,
        total: u64,
        /// Copies of the current window: (member, member block).
        copies: Vec<(usize, u64)>,
        len: u64,
    },
    Parity {
        sh: Arc<StripeShared>,
        block_size: u64,
        data_offset: u64,
        s1: u64,
        locked: u64,
    },
}

struct Scrub {
    me: Weak<Scrub>,
    shared: Arc<RaidShared>,
    repair: bool,
    chans: Vec<Option<Rc<IoChannel>>>,
    mode: RefCell<Mode>,
    /// Next array block (mirrors) or stripe (parity) to scrub.
    pos: Cell<u64>,
    bufs: RefCell<Vec<Option<DmaBuf>>>,
    pending: Cell<u32>,
    failed: Cell<bool>,
    stopped: Cell<bool>,
}

const TAG_WRITE: u64 = 1 << 16;

impl Scrub {
    fn start(shared: Arc<RaidShared>, repair: bool) {
        let id = shared.id();
        let mode = match shared.parity_geometry() {
            Some((sh, bs, data_offset)) => {
                let total = sh.layout.stripe_count() * sh.layout.strip_blocks();
                with_status(id, |s| s.total_blocks = total);
                Mode::Parity {
                    sh,
                    block_size: bs as u64,
                    data_offset,
                    s1: 0,
                    locked: 0,
                }
            }
            None => match shared.scrub_mirror_window(0, 0) {
                Some((total, bs, _, _)) => {
                    with_status(id, |s| s.total_blocks = total);
                    Mode::Mirror {
                        block_size: bs as u64,
                        total,
                        copies: Vec::new(),
                        len: 0,
                    }
                }
                None => {
                    with_status(id, |s| {
                        s.done = true;
                        s.error = Some("the array is not online".into());
                    });
                    return;
                }
            },
        };
        let chans = shared.member_channels();
        let sc = Rc::new_cyclic(|me| Scrub {
            me: me.clone(),
            shared,
            repair,
            chans,
            mode: RefCell::new(mode),
            pos: Cell::new(0),
            bufs: RefCell::new(Vec::new()),
            pending: Cell::new(0),
            failed: Cell::new(false),
            stopped: Cell::new(false),
        });
        sc.step();
    }

    fn rc(&self) -> Rc<Scrub> {
        self.me.upgrade().expect("the scrub is alive while it runs")
    }

    fn later(&self, f: impl FnOnce(&Scrub) + 'static) {
        let me = self.rc();
        oxstor_reactor::schedule_after(RETRY, move || f(&me));
    }

    fn healthy(&self) -> bool {
        !self.shared.is_deleted()
            && self.shared.scrub_ready()
            && self.chans.iter().all(|c| c.is_some())
    }

    /// Opens the next window (or finishes).
    fn step(&self) {
        if self.stopped.get() {
            return;
        }
        if !self.healthy() {
            return self.stop(Some("a member left service or the array went away"));
        }
        let pos = self.pos.get();
        let mut mode = self.mode.borrow_mut();
        match &mut *mode {
            Mode::Mirror {
                block_size,
                total,
                copies,
                len,
            } => {
                if pos >= *total {
                    drop(mode);
                    return self.stop(None);
                }
                let max = (MIRROR_WINDOW_BYTES / *block_size).max(1);
                let Some((_, _, _, l)) = self.shared.scrub_mirror_window(pos, max) else {
                    drop(mode);
                    return self.stop(Some("the array went away"));
                };
                *len = l;
                *copies = self.shared.scrub_mirror_copies(pos, l);
                let parity = self.shared.scrub_lock(pos, l);
                drop(mode);
                self.drain(parity);
            }
            Mode::Parity {
                sh,
                s1,
                locked,
                block_size,
                ..
            } => {
                let stripes = sh.layout.stripe_count();
                if pos >= stripes {
                    drop(mode);
                    return self.stop(None);
                }
                let strip_bytes = sh.layout.strip_blocks() * *block_size;
                let per =
                    (crate::rebuild::window_bytes() / strip_bytes).clamp(1, MAX_WINDOW_STRIPES);
                *s1 = (pos + per).min(stripes);
                *locked = pos;
                drop(mode);
                self.lock_stripes();
            }
        }
    }

    fn drain(&self, parity: usize) {
        if self.stopped.get() {
            return;
        }
        if !self.shared.scrub_drained(parity) {
            return self.later(move |me| me.drain(parity));
        }
        self.read();
    }

    fn lock_stripes(&self) {
        if self.stopped.get() {
            return;
        }
        let all = {
            let mut mode = self.mode.borrow_mut();
            let Mode::Parity { sh, s1, locked, .. } = &mut *mode else {
                return;
            };
            while *locked < *s1 {
                if !sh.try_lock_stripe(*locked) {
                    break;
                }
                *locked += 1;
            }
            *locked == *s1
        };
        if all {
            self.read();
        } else {
            self.later(|me| me.lock_stripes());
        }
    }

    /// Member reads of the current window: (member, member block, blocks, block size).
    fn extents(&self) -> Vec<(usize, u64, u64, u64)> {
        let pos = self.pos.get();
        match &*self.mode.borrow() {
            Mode::Mirror {
                block_size,
                copies,
                len,
                ..
            } => copies
                .iter()
                .map(|&(m, off)| (m, off, *len, *block_size))
                .collect(),
            Mode::Parity {
                sh,
                block_size,
                data_offset,
                s1,
                ..
            } => {
                let strip = sh.layout.strip_blocks();
                (0..self.chans.len())
                    .map(|m| {
                        (
                            m,
                            data_offset + pos * strip,
                            (s1 - pos) * strip,
                            *block_size,
                        )
                    })
                    .collect()
            }
        }
    }

    fn read(&self) {
        if self.stopped.get() {
            return;
        }
        if !self.healthy() {
            return self.stop(Some("a member left service or the array went away"));
        }
        let ext = self.extents();
        let mut bufs = Vec::with_capacity(ext.len());
        for &(_, _, len, bs) in &ext {
            match DmaBuf::alloc((len * bs) as usize) {
                Some(b) => bufs.push(b),
                None => return self.later(|me| me.read()),
            }
        }
        *self.bufs.borrow_mut() = (0..ext.len()).map(|_| None).collect();
        self.failed.set(false);
        self.pending.set(ext.len() as u32 + 1);
        for (i, (&(m, off, len, _), b)) in ext.iter().zip(bufs).enumerate() {
            let io = BdevIo::new(IoType::Read, off, len, IoBuf::Dma(b));
            match self.chans[m].clone() {
                Some(ch) => ch.submit(io, self.rc(), i as u64),
                None => return self.stop(Some("member channel missing")),
            }
        }
        self.dec();
    }

    fn dec(&self) {
        let left = self.pending.get() - 1;
        self.pending.set(left);
        if left > 0 || self.stopped.get() {
            return;
        }
        if self.failed.get() {
            return self.stop(Some("a member I/O failed"));
        }
        let writing = self.bufs.borrow().iter().all(|b| b.is_none());
        if writing {
            self.window_done();
        } else {
            self.compare();
        }
    }

    /// Compares (and for repair fixes) the window's buffers, then writes what changed.
    fn compare(&self) {
        if !self.healthy() {
            return self.stop(Some("a member left service or the array went away"));
        }
        let ext = self.extents();
        let mut bufs: Vec<DmaBuf> = match self.bufs.borrow_mut().drain(..).collect() {
            Some(v) => v,
            None => return self.stop(Some("internal: missing read buffer")),
        };
        let mut dirty = vec![false; bufs.len()];
        let mut mismatches = 0u64;
        let mut failed = false;
        {
            let mode = self.mode.borrow();
            match &*mode {
                Mode::Mirror {
                    block_size, len, ..
                } => {
                    let bs = *block_size as usize;
                    let (first, rest) = bufs.split_at_mut(1);
                    let first = first[0].as_slice();
                    for b in 0..*len as usize {
                        let r = b * bs..(b + 1) * bs;
                        let mut differs = false;
                        for (i, other) in rest.iter_mut().enumerate() {
                            if other.as_slice()[r.clone()] != first[r.clone()] {
                                differs = true;
                                if self.repair {
                                    other.as_mut_slice()[r.clone()]
                                        .copy_from_slice(&first[r.clone()]);
                                    dirty[i + 1] = true;
                                }
                            }
                        }
                        mismatches += differs as u64;
                    }
                }
                Mode::Parity {
                    sh, block_size, s1, ..
                } => {
                    let bs = *block_size as usize;
                    let strip = sh.layout.strip_blocks() as usize;
                    let strip_bytes = strip * bs;
                    let k = sh.layout.data_members();
                    let scheme = sh.parity_scheme();
                    let mut p = vec![0u8; strip_bytes];
                    let mut q = vec![0u8; strip_bytes];
                    let s0 = self.pos.get();
                    for stripe in s0..*s1 {
                        let at = (stripe - s0) as usize * strip_bytes;
                        let r = at..at + strip_bytes;
                        let pm = sh.slot_member_of(stripe, k);
                        let qm =
                            (scheme == Scheme::Raid6).then(|| sh.slot_member_of(stripe, k + 1));
                        let res = {
                            let data: Vec<&[u8]> = (0..k)
                                .map(|s| &bufs[sh.slot_member_of(stripe, s)].as_slice()[r.clone()])
                                .collect();
                            match scheme {
                                Scheme::Raid5 => parity::compute_p(&data, &mut p),
                                Scheme::Raid6 => parity::compute_pq(&data, &mut p, &mut q),
                            }
                        };
                        if res.is_err() {
                            failed = true;
                            break;
                        }
                        for b in 0..strip {
                            let br = b * bs..(b + 1) * bs;
                            let mut differs = false;
                            let fix =
                                |m: usize,
                                 want: &[u8],
                                 bufs: &mut Vec<DmaBuf>,
                                 dirty: &mut Vec<bool>| {
                                    let stored =
                                        &mut bufs[m].as_mut_slice()[at + br.start..at + br.end];
                                    if stored != want {
                                        if self.repair {
                                            stored.copy_from_slice(want);
                                            dirty[m] = true;
                                        }
                                        return true;
                                    }
                                    false
                                };
                            differs |= fix(pm, &p[br.clone()], &mut bufs, &mut dirty);
                            if let Some(qm) = qm {
                                differs |= fix(qm, &q[br.clone()], &mut bufs, &mut dirty);
                            }
                            mismatches += differs as u64;
                        }
                    }
                }
            }
        }
        if failed {
            return self.stop(Some("parity computation failed"));
        }
        let id = self.shared.id();
        with_status(id, |s| s.mismatch_cnt += mismatches);
        let writes: Vec<_> = ext
            .into_iter()
            .zip(bufs)
            .zip(dirty)
            .filter(|(_, d)| *d)
            .map(|(x, _)| x)
            .collect();
        if writes.is_empty() {
            return self.window_done();
        }
        self.failed.set(false);
        self.pending.set(writes.len() as u32 + 1);
        for ((m, off, len, _), b) in writes {
            let io = BdevIo::new(IoType::Write, off, len, IoBuf::Dma(b));
            match self.chans[m].clone() {
                Some(ch) => ch.submit(io, self.rc(), TAG_WRITE | m as u64),
                None => return self.stop(Some("member channel missing")),
            }
        }
        self.dec();
    }

    fn unlock(&self) {
        match &mut *self.mode.borrow_mut() {
            Mode::Mirror { .. } => self.shared.scrub_unlock(),
            Mode::Parity { sh, locked, .. } => {
                let s0 = self.pos.get();
                for s in s0..*locked {
                    sh.unlock_stripe(s);
                }
                *locked = s0;
            }
        }
    }

    fn window_done(&self) {
        self.unlock();
        let (next, done_blocks) = match &*self.mode.borrow() {
            Mode::Mirror { len, .. } => (self.pos.get() + len, self.pos.get() + len),
            Mode::Parity { sh, s1, .. } => (*s1, *s1 * sh.layout.strip_blocks()),
        };
        self.pos.set(next);
        with_status(self.shared.id(), |s| s.done_blocks = done_blocks);
        self.step();
    }

    fn stop(&self, error: Option<&str>) {
        if self.stopped.replace(true) {
            return;
        }
        self.unlock();
        if let Some(e) = error {
            tracing::warn!("raid {}: scrub stopped: {e}", self.shared.name());
        }
        with_status(self.shared.id(), |s| {
            s.done = true;
            s.error = error.map(str::to_string);
            if error.is_none() {
                s.done_blocks = s.total_blocks;
            }
        });
        tracing::info!("raid {}: scrub finished", self.shared.name());
    }
}

impl IoDone for Scrub {
    fn io_done(&self, mut io: Box<BdevIo>, tag: u64) {
        if self.stopped.get() {
            return;
        }
        let ok = io.status == IoStatus::Success;
        if !ok {
            self.failed.set(true);
        }
        if tag & TAG_WRITE == 0 {
            if let IoBuf::Dma(b) = std::mem::replace(&mut io.buf, IoBuf::None) {
                if let Some(slot) = self.bufs.borrow_mut().get_mut(tag as usize) {
                    *slot = Some(b);
                }
            }
        }
        self.dec();
    }
}
