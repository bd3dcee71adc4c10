//! The RAID bdev: raid0, concat, raid1 (N-way mirror), raid10 (md's "near 2" layout), and
//! raid5/raid6, whose reads and writes are served per stripe by [`crate::stripe`].
//!
//! Three layers live here, from the outside in:
//!
//! - **Arrays** ([`RaidShared`]): the control-path state of one array, behind a mutex: its
//!   member slots (name, exclusive claim), whether it is assembled, the rebuild in progress.
//!   An array exists from `bdev_raid_create` on, even while members are missing
//!   ("configuring", as SPDK allows members to be named before they exist); it is registered
//!   as a bdev only once every member is present. [`examine`] (called by the RPCs and by a
//!   100 ms poller on the first reactor) claims members that have appeared since.
//! - **The bdev** ([`RaidBdev`]): immutable geometry and [`Layout`] fixed at assembly. The
//!   generic channel splits reads and writes on `optimal_io_boundary` = the strip for raid0
//!   and raid10, so each data I/O that reaches us touches one strip.
//! - **Per-core channels** (`ChanState`): each member's `IoChannel` on this core, read
//!   balancing counters and a recycled pool of child descriptors, all in `Cell`/`RefCell`
//!   (one core owns a channel; no locks on the I/O path). Member health is an array of atomics
//!   in [`RaidShared`], read once per I/O.
//!
//! I/O paths:
//!
//! - raid0/concat reads and writes inside one member are *forwarded*: the same descriptor,
//!   offset remapped, goes to the member with our channel as its completion frame; the tag
//!   carries the original offset, which we put back before completing upward. Nothing is
//!   allocated. Flush/reset/unmap/write-zeroes, and the rare concat I/O that straddles two
//!   members, fan out into child descriptors with windows over the parent's buffer.
//! - raid1/raid10 writes (and unmap/write-zeroes/flush) fan out to every copy. A failing copy
//!   marks its member faulty (skipped from then on); the parent fails only if no copy
//!   succeeded or the array has lost data. Reads forward the descriptor to the copy with the
//!   fewest outstanding blocks on this channel (SPDK's raid1 policy); a failed read marks the
//!   member faulty and retries on another copy.
//! - Rebuild (after `bdev_raid_add_base_bdev` fills a missing raid1/raid10 slot) copies the
//!   target's data on the first reactor, a span of up to `process_queue_depth` windows in
//!   flight at a time while the array is otherwise idle, one window while users do I/O
//!   (md's resync speed rule). Each span is locked against writers with a small epoch scheme (see
//!   [`WriteGate`]) so a user write can never be overwritten by stale rebuild data; reads
//!   never go to the member being rebuilt.
//!   raid5/raid6 members are recomputed from parity by [`crate::rebuild`] under the stripe
//!   locks. A member added with no missing slot waits as a hot spare and takes the slot of
//!   the next member to fail (`use_spare`), except on a raid1 whose members are all in
//!   service: that one *grows* (2 -> 3 copies). The new slot is appended, a layout with one
//!   more copy replaces the old one (each core's channel picks it up in `reload_members`
//!   before the slot turns REBUILDING), and the slot is rebuilt as a replacement would be.

use oxstor_bdev::registry::{self, BdevEntry};
use oxstor_bdev::{
    complete_later, Bdev, BdevChannel, BdevError, BdevIo, ClaimGuard, ConfigCall, Geometry, IoBuf,
    IoChannel, IoDone, IoStatus, IoType,
};
use oxstor_reactor::{DmaBuf, PollStatus};
use serde_json::{json, Value};
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak as ArcWeak};
use std::time::Duration;

/// SPDK's limit on members per array (and what fits the tag's member field).
pub const MAX_MEMBERS: usize = 255;

/// Array offsets travel in the upper bits of a completion tag; this bounds the array size
/// (2^52 blocks: exabytes, so never a real limit).
const MAX_ARRAY_BLOCKS: u64 = 1 << 52;

/// Rebuild copies at most this many bytes per window (one pooled DMA buffer).
const REBUILD_WINDOW_BYTES: u64 = 128 * 1024;

/// A write that hits the window being rebuilt waits this long before trying again.
const LOCKED_RETRY: Duration = Duration::from_micros(50);

/// How often the first reactor looks for members of configuring arrays.
const EXAMINE_PERIOD: Duration = Duration::from_millis(100);

/// A core publishes that a mirror being rebuilt has user I/O at most this often (ns), so a
/// busy core does not keep pulling the shared cache line to itself.
const USER_IO_NOTE_NS: u64 = 100_000;

/// A mirror rebuild keeps its full queue depth only after this long (ns) without user I/O;
/// well above [`USER_IO_NOTE_NS`], so a steady load never looks idle between two notes.
const REBUILD_IDLE_NS: u64 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaidLevel {
    Raid0,
    Raid1,
    Raid10,
    Concat,
    /// Rotating single parity (md left-symmetric), see [`crate::stripe`].
    Raid5,
    /// Rotating P+Q parity (md left-symmetric), see [`crate::stripe`].
    Raid6,
}

impl RaidLevel {
    /// Parses SPDK's spellings ("raid0" or "0", ...), case-insensitively.
    pub fn parse(s: &str) -> Result<RaidLevel, BdevError> {
        match s.to_ascii_lowercase().as_str() {
            "raid0" | "0" => Ok(RaidLevel::Raid0),
            "raid1" | "1" => Ok(RaidLevel::Raid1),
            "raid10" | "10" => Ok(RaidLevel::Raid10),
            "concat" => Ok(RaidLevel::Concat),
            // raid5f is SPDK's full-stripe-only raid5; ours also takes partial stripes.
            "raid5" | "5" | "raid5f" => Ok(RaidLevel::Raid5),
            "raid6" | "6" => Ok(RaidLevel::Raid6),
            _ => Err(BdevError::Invalid(format!(
                "unknown raid_level '{s}' (raid0, raid1, raid10, raid5, raid6, concat)"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RaidLevel::Raid0 => "raid0",
            RaidLevel::Raid1 => "raid1",
            RaidLevel::Raid10 => "raid10",
            RaidLevel::Concat => "concat",
            RaidLevel::Raid5 => "raid5",
            RaidLevel::Raid6 => "raid6",
        }
    }

    /// Parity strips per stripe: 1 for raid5, 2 for raid6, 0 otherwise.
    pub fn parity_members(self) -> usize {
        match self {
            RaidLevel::Raid5 => 1,
            RaidLevel::Raid6 => 2,
            _ => 0,
        }
    }

    /// Whether the array survives losing a member (mirrors and parity levels).
    pub fn is_redundant(self) -> bool {
        self.is_mirror() || self.parity_members() > 0
    }

    /// Whether every block lives on more than one member.
    pub fn is_mirror(self) -> bool {
        matches!(self, RaidLevel::Raid1 | RaidLevel::Raid10)
    }

    pub fn min_members(self) -> usize {
        match self {
            RaidLevel::Raid0 | RaidLevel::Concat => 1,
            RaidLevel::Raid1 | RaidLevel::Raid10 => 2,
            RaidLevel::Raid5 => 3,
            RaidLevel::Raid6 => 4,
        }
    }

    /// Whether a member that returns is rebuilt only where the write-intent bitmap says it
    /// missed writes (the others get a full rebuild).
    pub fn delta_rebuild(self) -> bool {
        matches!(
            self,
            RaidLevel::Raid1 | RaidLevel::Raid10 | RaidLevel::Raid5 | RaidLevel::Raid6
        )
    }

    /// Whether `strip_size_kb` is required.
    pub fn needs_strip(self) -> bool {
        matches!(
            self,
            RaidLevel::Raid0 | RaidLevel::Raid10 | RaidLevel::Raid5 | RaidLevel::Raid6
        )
    }
}

/// SPDK's array states. "Degraded" is online with fewer operational members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaidState {
    Online,
    Configuring,
    Offline,
}

impl RaidState {
    pub fn name(self) -> &'static str {
        match self {
            RaidState::Online => "online",
            RaidState::Configuring => "configuring",
            RaidState::Offline => "offline",
        }
    }
}

// Member slot states, one atomic per slot (meaningful once the array is assembled).
/// No bdev in the slot (never found, or removed).
const MISSING: u8 = 0;
/// In service: reads and writes.
const ONLINE: u8 = 1;
/// Failed an I/O: skipped for reads and writes until removed.
const FAILED: u8 = 2;
/// Being rebuilt: receives writes, never serves reads.
const REBUILDING: u8 = 3;

const NO_REBUILD: usize = usize::MAX;

// ---------------------------------------------------------------------------------------------
// Layout: pure block mapping for the levels in this file.
// ---------------------------------------------------------------------------------------------

/// Where array blocks live on the members. Fixed when the array is assembled.
#[derive(Debug)]
pub(crate) struct Layout {
    level: RaidLevel,
    n: usize,
    /// Strip in blocks (0 for raid1, and for concat created without one).
    strip: u64,
    block_size: u32,
    num_blocks: u64,
    /// Blocks of each member the array uses (SPDK's `data_size`).
    data_blocks: Vec<u64>,
    /// concat: the array offset where each member begins, plus the end.
    starts: Vec<u64>,
    /// raid10: number of chunks (strips of array data), each stored twice.
    chunks: u64,
    /// raid10: member pairs that hold both copies of some chunk.
    pairs: Vec<(usize, usize)>,
    /// raid5/raid6: the parity layout and the stripe locks every core shares.
    pub(crate) stripes: Option<Arc<crate::stripe::StripeShared>>,
    /// Member block where array data starts (a superblock area precedes it; 0 without).
    pub(crate) data_offset: u64,
}

impl Layout {
    pub(crate) fn new(
        level: RaidLevel,
        strip: u64,
        sizes: &[u64],
        block_size: u32,
    ) -> Result<Layout, BdevError> {
        let n = sizes.len();
        let min = sizes.iter().copied().min().unwrap_or(0);
        let mut layout = Layout {
            level,
            n,
            strip,
            block_size,
            num_blocks: 0,
            data_blocks: Vec::new(),
            starts: Vec::new(),
            chunks: 0,
            pairs: Vec::new(),
            stripes: None,
            data_offset: 0,
        };
        let too_small = || {
            BdevError::Invalid(format!(
                "members are too small for a {} array with this strip size",
                level.name()
            ))
        };
        match level {
            RaidLevel::Raid0 => {
                let rows = min / strip.max(1);
                if rows == 0 {
                    return Err(too_small());
                }
                layout.data_blocks = vec![rows * strip; n];
                layout.num_blocks = rows * strip * n as u64;
            }
            RaidLevel::Concat => {
                // Like SPDK, each member is used up to a whole number of strips (if any).
                layout.data_blocks = sizes
                    .iter()
                    .map(|&b| b.checked_div(strip).map_or(b, |rows| rows * strip))
                    .collect();
                if layout.data_blocks.contains(&0) {
                    return Err(too_small());
                }
                let mut at = 0;
                for &b in &layout.data_blocks {
                    layout.starts.push(at);
                    at += b;
                }
                layout.starts.push(at);
                layout.num_blocks = at;
            }
            RaidLevel::Raid1 => {
                if min == 0 {
                    return Err(too_small());
                }
                layout.data_blocks = vec![min; n];
                layout.num_blocks = min;
            }
            RaidLevel::Raid5 | RaidLevel::Raid6 => {
                let shared =
                    crate::stripe::StripeShared::new(level.parity_members(), strip, sizes)?;
                layout.data_blocks = vec![shared.layout.member_used_blocks(0); n];
                layout.num_blocks = shared.layout.array_blocks();
                layout.stripes = Some(Arc::new(shared));
            }
            RaidLevel::Raid10 => {
                let rows = min / strip.max(1);
                layout.chunks = rows * n as u64 / 2;
                if layout.chunks == 0 {
                    return Err(too_small());
                }
                layout.data_blocks = vec![rows * strip; n];
                layout.num_blocks = layout.chunks * strip;
                // Chunk c's copies sit on members 2c mod n and 2c+1 mod n; the pattern
                // repeats every n chunks.
                for c in 0..layout.chunks.min(n as u64) {
                    let pair = ((2 * c) as usize % n, (2 * c + 1) as usize % n);
                    if !layout.pairs.contains(&pair) {
                        layout.pairs.push(pair);
                    }
                }
            }
        }
        if layout.num_blocks >= MAX_ARRAY_BLOCKS {
            return Err(BdevError::Invalid("array is too large".into()));
        }
        Ok(layout)
    }

    /// raid10: member and member offset of copy `copy` (0 or 1) of chunk `c`.
    fn chunk_copy(&self, c: u64, copy: u64, within: u64) -> (usize, u64) {
        let idx = 2 * c + copy;
        let n = self.n as u64;
        ((idx % n) as usize, (idx / n) * self.strip + within)
    }

    /// Calls `f(member, member_offset, blocks, offset_in_io)` for every member extent holding
    /// array blocks `[off, off+len)`. Mirrors report every copy of every piece.
    fn pieces(&self, off: u64, len: u64, mut f: impl FnMut(usize, u64, u64, u64)) {
        let end = off + len;
        let mut cur = off;
        match self.level {
            RaidLevel::Raid0 => {
                let (s, n) = (self.strip, self.n as u64);
                while cur < end {
                    let (k, within) = (cur / s, cur % s);
                    let plen = (s - within).min(end - cur);
                    f((k % n) as usize, (k / n) * s + within, plen, cur - off);
                    cur += plen;
                }
            }
            RaidLevel::Concat => {
                while cur < end {
                    let m = self.starts.partition_point(|&s| s <= cur) - 1;
                    let plen = (self.starts[m + 1] - cur).min(end - cur);
                    f(m, cur - self.starts[m], plen, cur - off);
                    cur += plen;
                }
            }
            RaidLevel::Raid1 => (0..self.n).for_each(|m| f(m, off, len, 0)),
            // Parity levels map their I/O in crate::stripe.
            RaidLevel::Raid5 | RaidLevel::Raid6 => {}
            RaidLevel::Raid10 => {
                let s = self.strip;
                while cur < end {
                    let (c, within) = (cur / s, cur % s);
                    let plen = (s - within).min(end - cur);
                    for copy in 0..2 {
                        let (m, moff) = self.chunk_copy(c, copy, within);
                        f(m, moff, plen, cur - off);
                    }
                    cur += plen;
                }
            }
        }
    }

    /// raid0/concat: the one member extent holding `[off, off+len)`, if there is just one.
    fn map_one(&self, off: u64, len: u64) -> Option<(usize, u64)> {
        match self.level {
            RaidLevel::Raid0 => {
                let (s, n) = (self.strip, self.n as u64);
                let (k, within) = (off / s, off % s);
                (within + len <= s).then(|| ((k % n) as usize, (k / n) * s + within))
            }
            RaidLevel::Concat => {
                let m = self.starts.partition_point(|&s| s <= off) - 1;
                (off + len <= self.starts[m + 1]).then(|| (m, off - self.starts[m]))
            }
            _ => None,
        }
    }

    /// Calls `f(member, member_offset, blocks)` once per member touched by `[off, off+len)`:
    /// the member's part of a striped range is contiguous, so unmap and write-zeroes need one
    /// child per member however long the range is.
    fn extents(&self, off: u64, len: u64, mut f: impl FnMut(usize, u64, u64)) {
        let end = off + len;
        match self.level {
            RaidLevel::Raid1 => (0..self.n).for_each(|m| f(m, off, len)),
            // Unmap and write-zeroes are not offered on parity levels.
            RaidLevel::Raid5 | RaidLevel::Raid6 => {}
            RaidLevel::Concat => {
                for m in 0..self.n {
                    let (lo, hi) = (off.max(self.starts[m]), end.min(self.starts[m + 1]));
                    if lo < hi {
                        f(m, lo - self.starts[m], hi - lo);
                    }
                }
            }
            RaidLevel::Raid0 | RaidLevel::Raid10 => {
                let s = self.strip;
                let (first, last) = (off / s, (end - 1) / s);
                let (head, tail) = (off % s, (end - 1) % s + 1);
                // Units are strips laid out row-major over the members; raid10 stores chunk c
                // as units 2c and 2c+1.
                let (i0, i1, per) = match self.level {
                    RaidLevel::Raid0 => (first, last, 1),
                    _ => (2 * first, 2 * last + 1, 2),
                };
                let n = self.n as u64;
                for d in 0..n {
                    let k0 = i0 + (d + n - i0 % n) % n;
                    if k0 > i1 {
                        continue;
                    }
                    let k1 = i1 - (i1 % n + n - d) % n;
                    let lo = (k0 / n) * s + if k0 / per == first { head } else { 0 };
                    let hi = (k1 / n) * s + if k1 / per == last { tail } else { s };
                    f(d as usize, lo, hi - lo);
                }
            }
        }
    }

    /// Whether some data has no readable copy when members are in the given states.
    fn lost_data(&self, state: impl Fn(usize) -> u8) -> bool {
        match self.level {
            RaidLevel::Raid1 => !(0..self.n).any(|m| state(m) == ONLINE),
            RaidLevel::Raid10 => self
                .pairs
                .iter()
                .any(|&(a, b)| state(a) != ONLINE && state(b) != ONLINE),
            // Striped levels never mark members faulty: errors just pass up.
            RaidLevel::Raid0 | RaidLevel::Concat => false,
            RaidLevel::Raid5 | RaidLevel::Raid6 => {
                (0..self.n).filter(|&m| state(m) != ONLINE).count() > self.level.parity_members()
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Arrays: control-path state.
// ---------------------------------------------------------------------------------------------

struct Slot {
    /// The member's name: set from creation even before it exists; None once removed.
    name: Option<String>,
    /// The last name this slot had, for `save_config`.
    config_name: String,
    claim: Option<ClaimGuard>,
}

struct Ctl {
    slots: Vec<Slot>,
    online: bool,
    /// Last assembly error, so the examine poller logs it once rather than every pass.
    last_error: Option<String>,
    /// Hot spares (claimed, not in a slot): one takes a slot whose member fails.
    spares: Vec<(String, ClaimGuard)>,
}

/// Counts one core's mirror writes in flight, per epoch parity (see [`RaidShared::epoch`]).
///
/// The rebuild moves its locked window, bumps the epoch, and waits until every core's
/// counter for the previous parity is zero: from then on, every write in flight has read the
/// new window and either stayed clear of it or is waiting. Each core touches only its own
/// counter (its own cache line), so this costs two uncontended atomics per write.
#[derive(Default)]
struct WriteGate {
    inflight: [AtomicU64; 2],
}

/// One array: everything every core and the control path share.
pub struct RaidShared {
    id: u64,
    name: String,
    uuid: String,
    level: RaidLevel,
    strip_kb: u32,
    /// Member slots; grows when a raid1 gains a copy (see `add_member`).
    n: AtomicUsize,
    /// Per-slot health (MISSING/ONLINE/FAILED/REBUILDING), read on every mirror I/O.
    /// [`MAX_MEMBERS`] entries, so that a raid1 can grow without reallocating them.
    states: Box<[AtomicU8]>,
    /// The layout once assembled; replaced (never removed) when a raid1 grows.
    layout: RwLock<Option<Arc<Layout>>>,
    online: AtomicBool,
    deleted: AtomicBool,
    ctl: Mutex<Ctl>,
    gates: Mutex<Vec<ArcWeak<WriteGate>>>,
    /// The rebuild's locked window, in array blocks, and the epoch that publishes it.
    epoch: AtomicU64,
    lock_start: AtomicU64,
    lock_end: AtomicU64,
    rebuild_target: AtomicUsize,
    rebuild_done: AtomicU64,
    /// When a core last noted user I/O on this mirror during a rebuild (reactor clock, ns; 0:
    /// never): the rebuild backs off to one window while this is recent.
    user_io_ns: AtomicU64,
    /// On-disk superblock state ([`crate::persist`]); None for arrays without one.
    persist: Option<Arc<crate::persist::ArrayPersist>>,
}

static RAIDS: Mutex<Vec<Arc<RaidShared>>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static EXAMINE_POLLER: AtomicBool = AtomicBool::new(false);

fn raids() -> MutexGuard<'static, Vec<Arc<RaidShared>>> {
    RAIDS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Every array (online or not), in creation order.
pub(crate) fn list() -> Vec<Arc<RaidShared>> {
    raids().clone()
}

pub(crate) fn find(name: &str) -> Result<Arc<RaidShared>, BdevError> {
    raids()
        .iter()
        .find(|r| r.name == name)
        .cloned()
        .ok_or_else(|| BdevError::NotFound(name.to_string()))
}

/// What `bdev_raid_create` asks for, validated by the RPC layer.
pub(crate) struct ArraySpec {
    pub name: String,
    pub uuid: String,
    pub level: RaidLevel,
    pub strip_kb: u32,
    /// An empty name leaves the slot missing (only assembly from superblocks does that).
    pub base_bdevs: Vec<String>,
    pub persist: Option<Arc<crate::persist::ArrayPersist>>,
}

/// Creates an array. Members that exist are claimed now; missing ones leave it configuring.
pub(crate) fn create_array(spec: ArraySpec) -> Result<String, BdevError> {
    let mut all = raids();
    if all.iter().any(|r| r.name == spec.name) || registry::lookup(&spec.name).is_ok() {
        return Err(BdevError::Exists(spec.name));
    }
    for b in &spec.base_bdevs {
        if let Some(owner) = all.iter().find(|r| r.names_member(b)) {
            return Err(BdevError::Claimed(
                b.clone(),
                format!("raid {}", owner.name),
            ));
        }
    }
    let mut slots = Vec::with_capacity(spec.base_bdevs.len());
    for b in &spec.base_bdevs {
        let claim = match registry::claim(b, "raid") {
            Ok(g) => Some(g),
            Err(BdevError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        slots.push(Slot {
            name: (!b.is_empty()).then(|| b.clone()),
            config_name: b.clone(),
            claim,
        });
    }
    let n = slots.len();
    let shared = Arc::new(RaidShared {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        name: spec.name.clone(),
        uuid: spec.uuid,
        level: spec.level,
        strip_kb: spec.strip_kb,
        n: AtomicUsize::new(n),
        states: (0..MAX_MEMBERS).map(|_| AtomicU8::new(MISSING)).collect(),
        layout: RwLock::new(None),
        online: AtomicBool::new(false),
        deleted: AtomicBool::new(false),
        ctl: Mutex::new(Ctl {
            slots,
            online: false,
            last_error: None,
            spares: Vec::new(),
        }),
        gates: Mutex::new(Vec::new()),
        epoch: AtomicU64::new(0),
        lock_start: AtomicU64::new(0),
        lock_end: AtomicU64::new(0),
        rebuild_target: AtomicUsize::new(NO_REBUILD),
        rebuild_done: AtomicU64::new(0),
        user_io_ns: AtomicU64::new(0),
        persist: spec.persist,
    });
    {
        let mut ctl = shared.ctl();
        shared.check_block_sizes(&ctl)?;
        if ctl
            .slots
            .iter()
            .all(|s| s.claim.is_some() || s.name.is_none())
        {
            shared.go_online(&mut ctl)?;
        }
    }
    let online = shared.online.load(Ordering::Acquire);
    all.push(shared);
    drop(all);
    if !online {
        tracing::info!("raid {}: configuring, waiting for members", spec.name);
        ensure_examine_poller();
    }
    Ok(spec.name)
}

/// Deletes an array: unregisters its bdev (which releases the claims) or, while it is still
/// configuring, just drops it.
pub(crate) fn delete_array(name: &str) -> Result<(), BdevError> {
    let shared = find(name)?;
    {
        let mut ctl = shared.ctl();
        if !ctl.online {
            shared.deleted.store(true, Ordering::Release);
            ctl.slots.iter_mut().for_each(|s| drop(s.claim.take()));
            drop(ctl);
            shared.forget();
            return Ok(());
        }
    }
    registry::unregister(name, Some("raid"))
}

/// Claims members of configuring arrays that have appeared, and assembles arrays that are
/// complete. SPDK does this from its examine callback; we run it from the RPCs and from a
/// poller on the first reactor.
pub fn examine() {
    let pending: Vec<_> = raids()
        .iter()
        .filter(|r| !r.online.load(Ordering::Acquire))
        .cloned()
        .collect();
    for r in pending {
        r.try_assemble();
        if r.online.load(Ordering::Acquire) {
            // Newly assembled: its superblocks must say so.
            crate::persist::changed(&r);
        }
    }
}

fn ensure_examine_poller() {
    if EXAMINE_POLLER.load(Ordering::Acquire) {
        return;
    }
    let Some(rt) = registry::runtime() else {
        return;
    };
    if EXAMINE_POLLER.swap(true, Ordering::AcqRel) {
        return;
    }
    rt.send(0, || {
        oxstor_reactor::reactor::register_timed_poller("raid_examine", EXAMINE_PERIOD, || {
            examine();
            PollStatus::Idle
        });
    });
}

impl RaidShared {
    /// Whether `slot` is empty because its member went missing (not because it failed):
    /// the member may come back and be rebuilt there.
    pub(crate) fn slot_awaits_member(&self, slot: usize) -> bool {
        let empty = self.ctl().slots.get(slot).is_some_and(|s| s.name.is_none());
        empty && self.state(slot) == MISSING
    }
}

/// Finds the array and slot holding a member named `base`.
pub(crate) fn find_member(base: &str) -> Result<(Arc<RaidShared>, usize), BdevError> {
    for r in list() {
        let slot = r
            .ctl()
            .slots
            .iter()
            .position(|s| s.name.as_deref() == Some(base));
        if let Some(slot) = slot {
            return Ok((r, slot));
        }
    }
    Err(BdevError::NotFound(format!(
        "{base} (not a member of any raid)"
    )))
}

/// Finds the array holding `base` as a hot spare.
pub(crate) fn find_spare(base: &str) -> Option<Arc<RaidShared>> {
    list()
        .into_iter()
        .find(|r| r.ctl().spares.iter().any(|(n, _)| n == base))
}

impl RaidShared {
    fn ctl(&self) -> MutexGuard<'_, Ctl> {
        self.ctl.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn state(&self, m: usize) -> u8 {
        self.states[m].load(Ordering::Acquire)
    }

    /// Member slots (a raid1 may gain some while it runs).
    pub(crate) fn n(&self) -> usize {
        self.n.load(Ordering::Acquire)
    }

    /// The current layout; None until assembled.
    fn layout(&self) -> Option<Arc<Layout>> {
        self.layout
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether member `m` serves reads and writes (for [`crate::stripe`]).
    pub(crate) fn member_online(&self, m: usize) -> bool {
        self.state(m) == ONLINE
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn level(&self) -> RaidLevel {
        self.level
    }

    fn names_member(&self, base: &str) -> bool {
        self.ctl()
            .slots
            .iter()
            .any(|s| s.name.as_deref() == Some(base))
    }

    /// SPDK's view: configuring until assembled; offline once a mirror has lost data.
    pub fn raid_state(&self) -> RaidState {
        match self.layout() {
            None => RaidState::Configuring,
            Some(l) if l.lost_data(|m| self.state(m)) => RaidState::Offline,
            Some(_) => RaidState::Online,
        }
    }

    fn check_block_sizes(&self, ctl: &Ctl) -> Result<u32, BdevError> {
        let mut size = None;
        for s in &ctl.slots {
            if let Some(g) = &s.claim {
                let bs = g.entry().bdev.geometry().block_size;
                match size {
                    None => size = Some(bs),
                    Some(x) if x != bs => {
                        return Err(BdevError::Invalid(format!(
                            "base bdevs of raid {} have different block sizes ({x} and {bs})",
                            self.name
                        )))
                    }
                    _ => {}
                }
            }
        }
        Ok(size.unwrap_or(0))
    }

    /// Computes the layout from the (all present) members and registers the bdev.
    fn go_online(self: &Arc<Self>, ctl: &mut Ctl) -> Result<(), BdevError> {
        if self.deleted.load(Ordering::Acquire) {
            return Err(BdevError::NotFound(self.name.clone()));
        }
        let bs = self.check_block_sizes(ctl)?;
        let mut sizes = Vec::with_capacity(self.n());
        let mut supported = [true; 7];
        for s in &ctl.slots {
            let Some(g) = &s.claim else {
                // Assembled from superblocks: a missing or stale member's slot runs degraded,
                // sized as the superblock says.
                if let Some(blocks) = self
                    .persist
                    .as_ref()
                    .and_then(|p| p.missing_member_blocks())
                {
                    sizes.push(blocks);
                    continue;
                }
                // Created degraded ("" in base_bdevs): sized like the smallest member present.
                if self.persist.is_none() && s.name.is_none() && self.level.is_redundant() {
                    sizes.push(u64::MAX);
                    continue;
                }
                return Err(BdevError::Invalid(format!(
                    "raid {} is incomplete",
                    self.name
                )));
            };
            let b = &g.entry().bdev;
            sizes.push(match &self.persist {
                Some(p) => p.member_data_blocks(b.geometry())?,
                None => b.geometry().num_blocks,
            });
            for t in IoType::ALL {
                supported[t as usize] &= b.io_type_supported(t);
            }
        }
        supported[IoType::Read as usize] = true;
        supported[IoType::Write as usize] = true;
        if self.level.parity_members() > 0 {
            // These would have to keep parity consistent; not offered (yet) on raid5/6.
            for t in [IoType::Unmap, IoType::WriteZeroes, IoType::Compare] {
                supported[t as usize] = false;
            }
        }
        let strip_bytes = self.strip_kb as u64 * 1024;
        // raid1 has no strips; concat uses one (if given) only to round members down.
        let strip = if strip_bytes == 0 || self.level == RaidLevel::Raid1 {
            0
        } else {
            if strip_bytes < bs as u64 || !strip_bytes.is_multiple_of(bs as u64) {
                return Err(BdevError::Invalid(format!(
                    "strip size {} KiB is not a multiple of the block size {bs}",
                    self.strip_kb
                )));
            }
            strip_bytes / bs as u64
        };
        if self.level.needs_strip() && strip == 0 {
            return Err(BdevError::Invalid(format!(
                "strip_size_kb is required for {}",
                self.level.name()
            )));
        }
        if sizes.contains(&u64::MAX) {
            let min = sizes
                .iter()
                .copied()
                .filter(|&b| b != u64::MAX)
                .min()
                .unwrap_or(0);
            sizes
                .iter_mut()
                .filter(|b| **b == u64::MAX)
                .for_each(|b| *b = min);
        }
        let mut layout = Layout::new(self.level, strip, &sizes, bs)?;
        let present = |m: usize| {
            if ctl.slots[m].claim.is_some() {
                ONLINE
            } else {
                MISSING
            }
        };
        if self.persist.is_none() && layout.lost_data(present) {
            return Err(BdevError::Invalid(format!(
                "raid {} would start without a complete copy of the data",
                self.name
            )));
        }
        layout.data_offset = self
            .persist
            .as_ref()
            .map_or(0, |p| p.data_offset_blocks(bs));
        let layout = Arc::new(layout);
        let mut geometry = Geometry::new(bs, layout.num_blocks);
        if self.level.needs_strip() {
            // The generic channel then splits every read/write on strip boundaries for us.
            geometry.optimal_io_boundary = u32::try_from(strip)
                .map_err(|_| BdevError::Invalid("strip size is too large".into()))?;
        }
        if let Some(st) = &layout.stripes {
            // Parity levels split on whole stripes instead (SPDK's raid5f does too): each
            // I/O then lies in one stripe, and a full-stripe write arrives whole, so it can
            // compute parity without reading anything.
            let stripe = u32::try_from(st.layout.stripe_data_blocks())
                .map_err(|_| BdevError::Invalid("stripe size is too large".into()))?;
            geometry.optimal_io_boundary = stripe;
            geometry.max_transfer_blocks = stripe;
        }
        for (s, slot) in self.states.iter().zip(&ctl.slots) {
            let state = if slot.claim.is_some() {
                ONLINE
            } else {
                MISSING
            };
            s.store(state, Ordering::Release);
        }
        if let Some(p) = &self.persist {
            let degraded = ctl.slots.iter().any(|s| s.claim.is_none());
            p.attach_intent(self.level, self.id, layout.num_blocks, bs, degraded);
        }
        *self.layout.write().unwrap_or_else(|p| p.into_inner()) = Some(layout.clone());
        let bdev = Arc::new(RaidBdev {
            shared: self.clone(),
            geometry,
            supported,
        });
        if let Err(e) = registry::register(bdev) {
            for s in self.states.iter() {
                s.store(MISSING, Ordering::Release);
            }
            *self.layout.write().unwrap_or_else(|p| p.into_inner()) = None;
            return Err(e);
        }
        ctl.online = true;
        ctl.last_error = None;
        self.online.store(true, Ordering::Release);
        tracing::info!(
            "raid {}: online, {} with {} members, {} blocks of {bs} bytes",
            self.name,
            self.level.name(),
            self.n(),
            geometry.num_blocks
        );
        Ok(())
    }

    fn try_assemble(self: &Arc<Self>) {
        let mut ctl = self.ctl();
        if ctl.online || self.deleted.load(Ordering::Acquire) {
            return;
        }
        for s in ctl.slots.iter_mut() {
            if let (Some(name), None) = (&s.name, &s.claim) {
                if registry::lookup(name).is_ok() {
                    // A bdev another module holds stays unclaimed; we try again later.
                    s.claim = registry::claim(name, "raid").ok();
                }
            }
        }
        if !ctl
            .slots
            .iter()
            .all(|s| s.claim.is_some() || s.name.is_none())
        {
            return;
        }
        if let Err(e) = self.go_online(&mut ctl) {
            let msg = e.to_string();
            if ctl.last_error.as_deref() != Some(msg.as_str()) {
                tracing::error!("raid {}: cannot assemble: {msg}", self.name);
                ctl.last_error = Some(msg);
            }
        }
    }

    /// Drops the array from the list (its bdev is already gone or never existed).
    fn forget(&self) {
        raids().retain(|r| r.id != self.id);
    }

    /// The registered bdev is being destroyed: release the members.
    fn teardown(&self) {
        // Members are still claimed: record the clean shutdown in their superblocks.
        crate::persist::on_teardown(self);
        self.deleted.store(true, Ordering::Release);
        let (claims, spares) = {
            let mut ctl = self.ctl();
            let claims: Vec<_> = ctl
                .slots
                .iter_mut()
                .filter_map(|s| s.claim.take())
                .collect();
            (claims, std::mem::take(&mut ctl.spares))
        };
        drop(claims);
        drop(spares);
        self.forget();
        tracing::info!("raid {}: deleted, members released", self.name);
    }

    fn member_entries(&self) -> Vec<Option<Arc<BdevEntry>>> {
        self.ctl()
            .slots
            .iter()
            .map(|s| s.claim.as_ref().map(|g| g.entry().clone()))
            .collect()
    }

    /// Makes every core's channel pick up the current members (SPDK's for_each_channel).
    /// Must not be called with `ctl` held: each core locks it.
    fn refresh_channels(&self) {
        let Some(rt) = registry::runtime() else {
            return;
        };
        let id = self.id;
        rt.run_on_all(move || {
            let chans: Vec<Rc<ChanState>> = CHANNELS.with(|c| {
                let mut c = c.borrow_mut();
                c.retain(|(_, w)| w.strong_count() > 0);
                c.iter()
                    .filter(|(i, _)| *i == id)
                    .filter_map(|(_, w)| w.upgrade())
                    .collect()
            });
            for ch in chans {
                if let Err(e) = ch.reload_members() {
                    tracing::error!("raid {}: cannot refresh members: {e}", ch.shared.name);
                }
            }
        });
    }

    /// Sum of in-flight mirror writes of the given epoch parity, over all cores.
    fn inflight_writes(&self, parity: usize) -> u64 {
        let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        gates.retain(|g| g.strong_count() > 0);
        gates
            .iter()
            .filter_map(|g| g.upgrade())
            .map(|g| g.inflight[parity].load(Ordering::SeqCst))
            .sum()
    }

    /// Marks member `m` faulty after an I/O error; the array carries on without it.
    pub(crate) fn mark_faulty(&self, m: usize, status: IoStatus) {
        let swapped = [ONLINE, REBUILDING].iter().any(|&from| {
            self.states[m]
                .compare_exchange(from, FAILED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        });
        if swapped {
            if let Some(i) = self.intent() {
                i.set_degraded(true);
                i.member_removed(m);
            }
            tracing::warn!(
                "raid {}: member slot {m} failed ({status:?}); running degraded",
                self.name
            );
            crate::persist::changed(self);
            self.spare_later();
        }
    }

    /// Lets a spare take a failed slot, from a control thread (this may run on a reactor).
    fn spare_later(&self) {
        if self.ctl().spares.is_empty() {
            return;
        }
        let Ok(me) = find(&self.name) else { return };
        if me.id != self.id {
            return;
        }
        std::thread::spawn(move || me.use_spare());
    }

    /// `bdev_raid_remove_base_bdev`: takes the member out; refuses if that loses data.
    pub(crate) fn remove_member(&self, slot: usize) -> Result<(), BdevError> {
        let guard = {
            let mut ctl = self.ctl();
            let base = ctl.slots[slot].name.clone().unwrap_or_default();
            if let Some(layout) = self.layout() {
                if !self.level.is_redundant() {
                    return Err(BdevError::Invalid(format!(
                        "{} has no redundancy: removing {base} from raid {} would lose data",
                        self.level.name(),
                        self.name
                    )));
                }
                let state = |m: usize| if m == slot { MISSING } else { self.state(m) };
                if !layout.lost_data(|m| self.state(m)) && layout.lost_data(state) {
                    return Err(BdevError::Invalid(format!(
                        "removing {base} would leave raid {} without a complete copy of the data",
                        self.name
                    )));
                }
                if let Some(i) = self.intent() {
                    // Writes from here on are remembered for this member's return.
                    i.set_degraded(true);
                    i.member_removed(slot);
                }
                // New I/O skips the slot from here on; in-flight I/O completes normally.
                self.states[slot].store(MISSING, Ordering::SeqCst);
            }
            ctl.slots[slot].name = None;
            tracing::info!("raid {}: member {base} removed", self.name);
            ctl.slots[slot].claim.take()
        };
        self.refresh_channels();
        drop(guard);
        Ok(())
    }

    /// `bdev_raid_add_base_bdev`: fills a free slot; on an online mirror, starts a rebuild.
    /// A raid1 whose slots are all in service (and that runs no rebuild) grows instead: the
    /// new member gets a new slot (2 -> 3 copies) and is rebuilt like a replacement; with
    /// `spare` it waits as a hot spare as on the other levels.
    pub(crate) fn add_member(self: &Arc<Self>, base: &str, spare: bool) -> Result<(), BdevError> {
        let (slot, rt) = {
            let mut ctl = self.ctl();
            if !ctl.online {
                let slot = ctl
                    .slots
                    .iter()
                    .position(|s| s.name.as_deref() == Some(base) && s.claim.is_none())
                    .or_else(|| ctl.slots.iter().position(|s| s.name.is_none()))
                    .ok_or_else(|| {
                        BdevError::Invalid(format!("raid {} has no free member slot", self.name))
                    })?;
                let old = ctl.slots[slot].name.replace(base.to_string());
                ctl.slots[slot].claim = Some(registry::claim(base, "raid")?);
                if let Err(e) = self.check_block_sizes(&ctl) {
                    ctl.slots[slot].claim = None;
                    ctl.slots[slot].name = old;
                    return Err(e);
                }
                ctl.slots[slot].config_name = base.to_string();
                if ctl.slots.iter().all(|s| s.claim.is_some()) {
                    self.go_online(&mut ctl)?;
                }
                return Ok(());
            }
            let layout = self
                .layout()
                .ok_or_else(|| BdevError::Invalid(format!("raid {} is not online", self.name)))?;
            if !self.level.is_redundant() {
                return Err(BdevError::Invalid(format!(
                    "{} raid {} has no missing member to replace",
                    self.level.name(),
                    self.name
                )));
            }
            let n = self.n();
            // A missing slot is filled and rebuilt; without one (or while another rebuild
            // runs) the new member becomes a hot spare, except that a healthy raid1 grows.
            let missing =
                (0..n).find(|&m| self.state(m) == MISSING && ctl.slots[m].claim.is_none());
            let grow = !spare
                && missing.is_none()
                && self.level == RaidLevel::Raid1
                && (0..n).all(|m| self.state(m) == ONLINE)
                && self.rebuild_target.load(Ordering::Acquire) == NO_REBUILD;
            let most = if self.persist.is_some() {
                crate::persist::MAX_SUPERBLOCK_MEMBERS
            } else {
                MAX_MEMBERS
            };
            if grow && n >= most {
                return Err(BdevError::Invalid(format!(
                    "raid {} already has {most} members",
                    self.name
                )));
            }
            if grow && crate::scrub::running(self.id) {
                return Err(BdevError::Invalid(format!(
                    "raid {} is scrubbing: add {base} when the scrub is done",
                    self.name
                )));
            }
            let rt = registry::runtime().ok_or(BdevError::NoRuntime)?;
            let guard = registry::claim(base, "raid")?;
            let b = guard.entry().bdev.clone();
            let g = b.geometry();
            let need = layout.data_offset
                + missing.map_or_else(
                    || layout.data_blocks.iter().copied().max().unwrap_or(0),
                    |slot| layout.data_blocks[slot],
                );
            if g.block_size != layout.block_size || g.num_blocks < need {
                return Err(BdevError::Invalid(format!(
                    "{base} must have {}-byte blocks and at least {need} of them",
                    layout.block_size,
                )));
            }
            let raid = registry::lookup(&self.name)?;
            if let Some(t) = IoType::ALL
                .into_iter()
                .find(|&t| raid.bdev.io_type_supported(t) && !b.io_type_supported(t))
            {
                return Err(BdevError::Invalid(format!(
                    "{base} does not support {} I/O, which raid {} offers",
                    t.name(),
                    self.name
                )));
            }
            let target = if grow { Some(n) } else { missing };
            let slot = match target {
                Some(slot)
                    if self
                        .rebuild_target
                        .compare_exchange(NO_REBUILD, slot, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok() =>
                {
                    slot
                }
                _ => {
                    if ctl.slots.iter().any(|s| s.name.as_deref() == Some(base))
                        || ctl.spares.iter().any(|(n, _)| n == base)
                    {
                        return Err(BdevError::Exists(base.to_string()));
                    }
                    // Every spare of a superblock array is an entry of its member table.
                    let table = crate::superblock::MAX_ENTRIES;
                    if self.persist.is_some() && n + ctl.spares.len() >= table {
                        return Err(BdevError::Invalid(format!(
                            "raid {}: the superblock lists at most {table} members and spares",
                            self.name
                        )));
                    }
                    ctl.spares.push((base.to_string(), guard));
                    tracing::info!("raid {}: {base} added as a spare", self.name);
                    drop(ctl);
                    crate::persist::changed(self);
                    self.use_spare();
                    return Ok(());
                }
            };
            if slot == n {
                // Grow: a new slot, MISSING until the channels know its member (then the
                // rebuild turns it REBUILDING), and a layout with one more copy.
                let mut sizes = layout.data_blocks.clone();
                sizes.push(layout.data_blocks[0]);
                let mut grown = match Layout::new(self.level, 0, &sizes, layout.block_size) {
                    Ok(l) if l.num_blocks == layout.num_blocks => l,
                    Ok(_) | Err(_) => {
                        self.rebuild_target.store(NO_REBUILD, Ordering::Release);
                        return Err(BdevError::Invalid(format!(
                            "raid {}: cannot lay out {} copies",
                            self.name,
                            n + 1
                        )));
                    }
                };
                grown.data_offset = layout.data_offset;
                self.states[slot].store(MISSING, Ordering::SeqCst);
                ctl.slots.push(Slot {
                    name: Some(base.to_string()),
                    config_name: base.to_string(),
                    claim: Some(guard),
                });
                *self.layout.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(grown));
                self.n.store(n + 1, Ordering::Release);
                if let Some(i) = self.intent() {
                    // The new member gets the whole bitmap image, not just later changes.
                    i.member_added();
                }
                tracing::info!(
                    "raid {}: growing to {} copies with {base} (slot {slot})",
                    self.name,
                    n + 1
                );
            } else {
                ctl.slots[slot].name = Some(base.to_string());
                ctl.slots[slot].config_name = base.to_string();
                ctl.slots[slot].claim = Some(guard);
            }
            (slot, rt)
        };
        self.begin_rebuild(slot, base, rt);
        Ok(())
    }

    /// Starts the rebuild of `slot`, just filled with `base` (`rebuild_target` is set).
    fn begin_rebuild(self: &Arc<Self>, slot: usize, base: &str, rt: oxstor_reactor::Handle) {
        // Channels first learn the new member while it is still MISSING (unused), then it
        // turns REBUILDING: from that moment every mirror write reaches it (raid5/6 writes
        // reach it once the rebuild has passed their stripe).
        self.refresh_channels();
        self.rebuild_done.store(0, Ordering::Relaxed);
        let resume = crate::persist::rebuild_begins(self, slot, base);
        if let Some(i) = self.intent() {
            let delta = i.prepare_rebuild(slot, base, self.level.delta_rebuild());
            if let Some(regions) = delta {
                tracing::info!(
                    "raid {}: {base} returns: copying {regions} region(s)",
                    self.name
                );
            }
        }
        self.states[slot].store(REBUILDING, Ordering::SeqCst);
        tracing::info!("raid {}: rebuilding member {base} (slot {slot})", self.name);
        let me = self.clone();
        if self.level.parity_members() > 0 {
            rt.send(0, move || {
                crate::rebuild::ParityRebuild::start(me, slot, resume)
            });
        } else {
            rt.send(0, move || Rebuild::start(me, slot, resume));
        }
    }

    /// If a member has failed (or a slot is missing), no rebuild runs and a spare waits:
    /// the spare takes the slot and its rebuild starts. Blocks (refreshes every core's
    /// channels): call it from a control thread, never from a reactor.
    pub(crate) fn use_spare(self: &Arc<Self>) {
        let Some(rt) = registry::runtime() else {
            return;
        };
        let (slot, base, old) = {
            let mut ctl = self.ctl();
            if !ctl.online || self.deleted.load(Ordering::Acquire) || ctl.spares.is_empty() {
                return;
            }
            let Some(slot) = (0..self.n()).find(|&m| matches!(self.state(m), FAILED | MISSING))
            else {
                return;
            };
            if self
                .rebuild_target
                .compare_exchange(NO_REBUILD, slot, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                return;
            }
            // New I/O skips the slot while the channels learn its new member.
            self.states[slot].store(MISSING, Ordering::SeqCst);
            let (base, guard) = ctl.spares.remove(0);
            let old = ctl.slots[slot].claim.replace(guard);
            ctl.slots[slot].name = Some(base.clone());
            ctl.slots[slot].config_name = base.clone();
            tracing::info!("raid {}: spare {base} replaces slot {slot}", self.name);
            (slot, base, old)
        };
        self.begin_rebuild(slot, &base, rt);
        drop(old);
        // The superblocks now name the spare as the slot's member, being rebuilt.
        crate::persist::changed(self);
    }

    /// `bdev_raid_remove_base_bdev` of a hot spare: it leaves the array; the caller gets
    /// its claim to release once the superblocks no longer list it.
    pub(crate) fn take_spare(&self, base: &str) -> Option<ClaimGuard> {
        let mut ctl = self.ctl();
        let index = ctl.spares.iter().position(|(n, _)| n == base)?;
        let (_, guard) = ctl.spares.remove(index);
        tracing::info!("raid {}: spare {base} removed", self.name);
        Some(guard)
    }

    /// The `bdev_raid_get_bdevs` entry (also `driver_specific.raid` in bdev_get_bdevs).
    pub fn info(&self) -> Value {
        let ctl = self.ctl();
        let layout = self.layout();
        let layout = layout.as_deref();
        let strip_kb = if self.level == RaidLevel::Raid1 {
            0
        } else {
            self.strip_kb
        };
        let present = |s: &Slot| s.claim.is_some();
        let discovered = ctl.slots.iter().filter(|s| present(s)).count();
        let operational = match layout {
            // Before assembly SPDK reports the members it expects to run with.
            None => self.n(),
            Some(_) => (0..self.n())
                .filter(|&m| matches!(self.state(m), ONLINE | REBUILDING))
                .count(),
        };
        let mut base: Vec<Value> = ctl
            .slots
            .iter()
            .enumerate()
            .map(|(m, s)| {
                let configured = present(s) && (layout.is_none() || self.state(m) != FAILED);
                let data_size = match (layout, &s.claim) {
                    (Some(l), _) if present(s) => l.data_blocks[m],
                    (None, Some(g)) => g.entry().bdev.geometry().num_blocks,
                    _ => 0,
                };
                json!({
                    "name": s.name,
                    "uuid": s.claim.as_ref().map(|g| g.entry().bdev.uuid().to_string()),
                    "is_configured": configured,
                    "data_offset": layout.map_or(0, |l| l.data_offset),
                    "data_size": data_size,
                })
            })
            .collect();
        for (m, v) in base.iter_mut().enumerate() {
            if layout.is_some() {
                v["state"] = json!(match self.state(m) {
                    ONLINE => "online",
                    FAILED => "faulty",
                    REBUILDING => "rebuilding",
                    _ => "missing",
                });
            }
        }
        for (name, g) in &ctl.spares {
            base.push(json!({
                "name": name,
                "uuid": g.entry().bdev.uuid().to_string(),
                "is_configured": false,
                "state": "spare",
                "data_offset": layout.map_or(0, |l| l.data_offset),
                "data_size": 0,
            }));
        }
        let mut v = json!({
            "name": self.name,
            "uuid": self.uuid,
            "strip_size_kb": strip_kb,
            "state": self.raid_state().name(),
            "raid_level": self.level.name(),
            "superblock": self.persist.is_some(),
            "num_base_bdevs": self.n(),
            "num_base_bdevs_discovered": discovered,
            "num_base_bdevs_operational": operational,
            "base_bdevs_list": base,
        });
        let target = self.rebuild_target.load(Ordering::Acquire);
        if let (Some(l), Some(slot)) = (layout, ctl.slots.get(target)) {
            let done = self.rebuild_done.load(Ordering::Relaxed);
            let total = l.data_blocks[target].max(1);
            let (speed, eta) = crate::rebuild::speed_eta(self.id, done, total);
            v["process"] = json!({
                "type": "rebuild",
                "target": slot.name,
                "target_slot": target,
                "progress": { "blocks": done, "percent": done * 100 / total },
                "speed_mb_s": speed,
                "eta_sec": eta,
            });
        }
        if let Some(p) = &self.persist {
            if let Some(i) = p.intent() {
                let b = i.info(p.last_resync());
                for key in ["last_resync", "last_rebuild"] {
                    if let Some(x) = b.get(key) {
                        v[key] = x.clone();
                    }
                }
                v["bitmap"] = b;
            }
        }
        v
    }

    fn config_params(&self) -> Value {
        let ctl = self.ctl();
        let strip_kb = if self.level == RaidLevel::Raid1 {
            0
        } else {
            self.strip_kb
        };
        json!({
            "name": self.name,
            "raid_level": self.level.name(),
            "strip_size_kb": strip_kb,
            "base_bdevs": ctl.slots.iter().map(|s| s.config_name.clone()).collect::<Vec<_>>(),
            "uuid": self.uuid,
            "superblock": self.persist.is_some(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The bdev.
// ---------------------------------------------------------------------------------------------

/// An assembled array as the registry sees it.
pub struct RaidBdev {
    shared: Arc<RaidShared>,
    geometry: Geometry,
    supported: [bool; 7],
}

impl RaidBdev {
    pub fn level(&self) -> RaidLevel {
        self.shared.level
    }

    pub fn raid_state(&self) -> RaidState {
        self.shared.raid_state()
    }
}

impl Bdev for RaidBdev {
    fn name(&self) -> &str {
        &self.shared.name
    }
    fn uuid(&self) -> &str {
        &self.shared.uuid
    }
    fn module(&self) -> &'static str {
        "raid"
    }
    fn product_name(&self) -> &'static str {
        "Raid Volume"
    }
    fn geometry(&self) -> Geometry {
        self.geometry
    }
    fn io_type_supported(&self, t: IoType) -> bool {
        self.supported[t as usize]
    }
    fn create_channel(&self) -> Result<Box<dyn BdevChannel>, BdevError> {
        let n = self.shared.n();
        let layout = self.shared.layout().ok_or_else(|| {
            BdevError::Invalid(format!("raid {} is not online", self.shared.name))
        })?;
        // A raid1 may gain members later: room for every slot it could have.
        let counters = if self.shared.level == RaidLevel::Raid1 {
            MAX_MEMBERS
        } else {
            n
        };
        let gate = Arc::new(WriteGate::default());
        let st = Rc::new_cyclic(|me| ChanState {
            me: me.clone(),
            shared: self.shared.clone(),
            layout: RefCell::new(layout.clone()),
            members: RefCell::new(vec![None; n]),
            outstanding: (0..counters).map(|_| Cell::new(0)).collect(),
            fanouts: RefCell::new(Vec::new()),
            free_fanouts: RefCell::new(Vec::new()),
            free_ios: RefCell::new(Vec::new()),
            gate: gate.clone(),
            next_marked: Cell::new(crate::intent::Begin::Unmarked),
            user_io_noted: Cell::new(0),
            intent_core: self.shared.intent().map(|i| i.register_core()),
            raid0: StripeMap::new(&layout),
            stripes: layout.stripes.as_ref().map(|sh| {
                crate::stripe::StripeChan::new(
                    self.shared.clone(),
                    sh.clone(),
                    layout.block_size,
                    layout.data_offset,
                )
            }),
        });
        st.reload_members()?;
        self.shared
            .gates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::downgrade(&gate));
        CHANNELS.with(|c| {
            let mut c = c.borrow_mut();
            c.retain(|(_, w)| w.strong_count() > 0);
            c.push((self.shared.id, Rc::downgrade(&st)));
        });
        Ok(Box::new(RaidChannel(st)))
    }
    fn config_call(&self) -> Option<ConfigCall> {
        if self.shared.persist.is_some() {
            // As in SPDK, the superblocks describe the array and examine reassembles it;
            // replaying a create would write fresh superblocks over them.
            return None;
        }
        Some(ConfigCall {
            method: "bdev_raid_create",
            params: self.shared.config_params(),
        })
    }
    fn driver_info(&self) -> Value {
        self.shared.info()
    }
    fn destroy(&self) {
        self.shared.teardown();
    }
}

// ---------------------------------------------------------------------------------------------
// Per-core channel.
// ---------------------------------------------------------------------------------------------

thread_local! {
    /// This core's raid channels, so control operations can refresh their member lists.
    static CHANNELS: RefCell<Vec<(u64, Weak<ChanState>)>> = const { RefCell::new(Vec::new()) };
}

// Completion tags: array offset (or fan-out slot) << 12 | kind << 8 | member.
const KIND_FORWARD: u64 = 0;
const KIND_MIRROR_READ: u64 = 1;
const KIND_CHILD: u64 = 2;

fn tag(kind: u64, member: usize, payload: u64) -> u64 {
    payload << 12 | kind << 8 | member as u64
}

fn untag(t: u64) -> (u64, usize, u64) {
    ((t >> 8) & 0xf, (t & 0xff) as usize, t >> 12)
}

/// A parent I/O waiting for its children.
#[derive(Default)]
struct Fanout {
    parent: Option<Box<BdevIo>>,
    /// Children in flight, plus one while the parent is still submitting them.
    outstanding: u32,
    ok: u32,
    err: Option<IoStatus>,
    /// A copy was skipped because its member is out of service.
    degraded: bool,
    /// Copies of the same data (any success will do) rather than parts of it (all needed).
    mirror: bool,
    /// The write-gate epoch this write is counted under.
    epoch: Option<u64>,
    /// How the write-intent bitmap counted it: hand back when done.
    intent: crate::intent::Begin,
}

#[derive(Clone, Copy)]
enum Plan {
    /// Every member extent (and every copy) of the data range.
    Pieces,
    /// One extent per member (unmap, write-zeroes).
    Extents,
    /// Every member, whole (flush, reset).
    All,
}

struct ChanState {
    me: Weak<ChanState>,
    shared: Arc<RaidShared>,
    /// The array's layout as this core last learned it (`reload_members`): a raid1 that
    /// gains a member gets a new one.
    layout: RefCell<Arc<Layout>>,
    members: RefCell<Vec<Option<Rc<IoChannel>>>>,
    /// Read blocks in flight per member, for least-outstanding read balancing.
    outstanding: Vec<Cell<u64>>,
    fanouts: RefCell<Vec<Fanout>>,
    free_fanouts: RefCell<Vec<usize>>,
    /// Recycled child descriptors (their frame vectors keep their capacity). Boxed because
    /// descriptors travel as `Box<BdevIo>` through every layer.
    #[allow(clippy::vec_box)]
    free_ios: RefCell<Vec<Box<BdevIo>>>,
    gate: Arc<WriteGate>,
    /// raid5/raid6: the stripe engine that serves reads and writes.
    stripes: Option<Rc<crate::stripe::StripeChan>>,
    /// raid0 with a power-of-two strip: the division-free map of the hot path.
    raid0: Option<StripeMap>,
    /// How the bitmap counted the next fan-out's write (see `mirror_gated`).
    next_marked: Cell<crate::intent::Begin>,
    /// When this core last published user I/O to `RaidShared::user_io_ns` (ns).
    user_io_noted: Cell<u64>,
    /// This core's write-intent bitmap counters (arrays that keep a bitmap).
    intent_core: Option<Arc<crate::intent::IntentCore>>,
}

/// Child descriptors kept per channel for reuse.
const IO_POOL: usize = 256;

/// raid0 array-to-member mapping without divisions, fixed at assembly: the strip is a power
/// of two (shift and mask) and the member count is divided by a multiplicative inverse.
#[derive(Debug, Clone, Copy)]
struct StripeMap {
    shift: u32,
    mask: u64,
    n: u64,
    /// ceil(2^64 / n), 0 for one member. For every k < 2^52 (array offsets are below
    /// [`MAX_ARRAY_BLOCKS`]) and n < 2^12, k / n == (k * inv) >> 64: the product overshoots
    /// k / n by less than k / 2^64 < 1 / n, which cannot carry it past the next integer.
    inv: u64,
    data_offset: u64,
}

impl StripeMap {
    fn new(l: &Layout) -> Option<StripeMap> {
        if l.level != RaidLevel::Raid0 || !l.strip.is_power_of_two() || l.n == 0 {
            return None;
        }
        let n = l.n as u64;
        Some(StripeMap {
            shift: l.strip.trailing_zeros(),
            mask: l.strip - 1,
            n,
            inv: if n == 1 { 0 } else { u64::MAX / n + 1 },
            data_offset: l.data_offset,
        })
    }

    /// The member and member block (data offset included) of `[off, off+len)` if it lies in
    /// one strip; what [`Layout::map_one`] computes for raid0.
    #[inline]
    fn map(&self, off: u64, len: u64) -> Option<(usize, u64)> {
        let (k, within) = (off >> self.shift, off & self.mask);
        if within + len > self.mask + 1 {
            return None;
        }
        let row = if self.inv == 0 {
            k
        } else {
            ((u128::from(k) * u128::from(self.inv)) >> 64) as u64
        };
        let m = k - row * self.n;
        Some((m as usize, (row << self.shift) + within + self.data_offset))
    }
}

struct RaidChannel(Rc<ChanState>);

impl BdevChannel for RaidChannel {
    fn submit(&self, io: Box<BdevIo>) {
        self.0.submit_io(io);
    }
}

impl ChanState {
    fn rc(&self) -> Rc<ChanState> {
        self.me
            .upgrade()
            .expect("a channel is alive while it handles I/O")
    }

    fn reload_members(&self) -> Result<(), BdevError> {
        let mut chans = Vec::with_capacity(self.shared.n());
        for e in self.shared.member_entries() {
            chans.push(match e {
                Some(e) => Some(e.channel()?),
                None => None,
            });
        }
        if let Some(st) = &self.stripes {
            st.set_members(chans.clone());
        }
        *self.members.borrow_mut() = chans;
        if let Some(l) = self.shared.layout() {
            *self.layout.borrow_mut() = l;
        }
        Ok(())
    }

    fn has_member(&self, m: usize) -> bool {
        self.members.borrow().get(m).is_some_and(Option::is_some)
    }

    /// Submits `io` to member `m` with this channel as its completion frame (no Rc clone of
    /// the member's channel); false (and `io` back) if there is no member in the slot.
    fn submit_to(&self, m: usize, io: Box<BdevIo>, tag: u64) -> Result<(), Box<BdevIo>> {
        let members = self.members.borrow();
        match members.get(m).and_then(Option::as_ref) {
            Some(ch) => {
                ch.submit(io, self.rc(), tag);
                Ok(())
            }
            None => Err(io),
        }
    }

    fn submit_io(&self, io: Box<BdevIo>) {
        if let Some(map) = &self.raid0 {
            // The hot path: a read or write inside one strip (the generic channel split on
            // strips) goes to its member as is, offset remapped, nothing allocated or cloned.
            if io.io_type.has_data() {
                if let Some((m, moff)) = map.map(io.offset_blocks, io.num_blocks) {
                    return self.forward(m, moff, io);
                }
            }
        }
        if let Some(st) = &self.stripes {
            return match io.io_type {
                IoType::Read | IoType::Write => st.submit(io),
                // Every member, tolerating those out of service as a mirror does.
                IoType::Flush | IoType::Reset => self.fan_out(io, true, None, Plan::All),
                _ => complete_later(io, IoStatus::Failed(libc::ENOTSUP)),
            };
        }
        if self.layout.borrow().level.is_mirror() {
            self.note_user_io();
            self.mirrored(io)
        } else {
            self.striped(io)
        }
    }

    /// Sends `io`, which lies on member `m` at `moff`, there as it is: without a completion
    /// frame of ours where the generic layer allows it (nothing to do on completion but
    /// restore the offset).
    #[inline]
    fn forward(&self, m: usize, moff: u64, io: Box<BdevIo>) {
        let members = self.members.borrow();
        let Some(ch) = members.get(m).and_then(Option::as_ref) else {
            return complete_later(io, IoStatus::Failed(libc::ENODEV));
        };
        if let Err(mut io) = ch.forward(io, moff) {
            let orig = io.offset_blocks;
            io.offset_blocks = moff;
            ch.submit(io, self.rc(), tag(KIND_FORWARD, m, orig));
        }
    }

    fn striped(&self, io: Box<BdevIo>) {
        match io.io_type {
            IoType::Read | IoType::Write | IoType::Compare => {
                let l = self.layout.borrow();
                let Some((m, moff)) = l.map_one(io.offset_blocks, io.num_blocks) else {
                    drop(l);
                    return self.fan_out(io, false, None, Plan::Pieces);
                };
                let moff = moff + l.data_offset;
                drop(l);
                self.forward(m, moff, io);
            }
            IoType::Unmap | IoType::WriteZeroes => self.fan_out(io, false, None, Plan::Extents),
            IoType::Flush | IoType::Reset => self.fan_out(io, false, None, Plan::All),
        }
    }

    /// Lets a running rebuild see that users are active (see `Rebuild::windows_allowed`):
    /// without a rebuild, one relaxed load; with one, a clock read and, per core, at most one
    /// relaxed store every [`USER_IO_NOTE_NS`].
    #[inline]
    fn note_user_io(&self) {
        if self.shared.rebuild_target.load(Ordering::Relaxed) == NO_REBUILD {
            return;
        }
        let now = oxstor_reactor::clock::now_ns();
        if now.saturating_sub(self.user_io_noted.get()) >= USER_IO_NOTE_NS {
            self.user_io_noted.set(now);
            self.shared.user_io_ns.store(now.max(1), Ordering::Relaxed);
        }
    }

    fn mirrored(&self, io: Box<BdevIo>) {
        match io.io_type {
            IoType::Read | IoType::Compare => self.mirror_read(io),
            IoType::Write => self.mirror_modify(io, Plan::Pieces),
            IoType::Unmap | IoType::WriteZeroes => self.mirror_modify(io, Plan::Extents),
            IoType::Flush | IoType::Reset => self.fan_out(io, true, None, Plan::All),
        }
    }

    /// The in-service copy with the fewest blocks in flight on this channel.
    fn pick(&self, copies: impl Iterator<Item = (usize, u64)>) -> Option<(usize, u64)> {
        copies
            .filter(|&(m, _)| self.shared.state(m) == ONLINE && self.has_member(m))
            .min_by_key(|&(m, _)| self.outstanding[m].get())
    }

    fn mirror_read(&self, mut io: Box<BdevIo>) {
        let (off, len) = (io.offset_blocks, io.num_blocks);
        let l = self.layout.borrow();
        let choice = if l.level == RaidLevel::Raid1 {
            self.pick((0..l.n).map(|m| (m, off)))
        } else {
            let (c, within) = (off / l.strip, off % l.strip);
            if within + len > l.strip {
                // The generic layer splits data I/O on strips, so this is only a safety net.
                return self.raid10_read_split(io);
            }
            self.pick((0..2).map(|copy| l.chunk_copy(c, copy, within)))
        };
        let Some((m, moff)) = choice else {
            return complete_later(io, IoStatus::Failed(libc::EIO));
        };
        io.offset_blocks = moff + l.data_offset;
        io.status = IoStatus::Pending;
        drop(l);
        self.outstanding[m].set(self.outstanding[m].get() + len);
        if let Err(mut io) = self.submit_to(m, io, tag(KIND_MIRROR_READ, m, off)) {
            self.outstanding[m].set(self.outstanding[m].get() - len);
            io.offset_blocks = off;
            complete_later(io, IoStatus::Failed(libc::EIO));
        }
    }

    /// A raid10 read spanning chunks: one child per chunk, each from its best copy.
    fn raid10_read_split(&self, io: Box<BdevIo>) {
        let (off, len, t) = (io.offset_blocks, io.num_blocks, io.io_type);
        let slot = self.fanout_open(io, false, None);
        let s = self.layout.borrow().strip;
        let mut cur = off;
        while cur < off + len {
            let (c, within) = (cur / s, cur % s);
            let plen = (s - within).min(off + len - cur);
            match self.pick((0..2).map(|copy| self.layout.borrow().chunk_copy(c, copy, within))) {
                Some((m, moff)) => self.send_child(slot, m, t, moff, plen, cur - off),
                None => self.fanouts.borrow_mut()[slot].err = Some(IoStatus::Failed(libc::EIO)),
            }
            cur += plen;
        }
        self.fanout_dec(slot, true);
    }

    /// Writes (and unmap/write-zeroes) to a mirror: counted by the write gate, held back
    /// while they overlap the window a rebuild is copying.
    fn mirror_modify(&self, io: Box<BdevIo>, plan: Plan) {
        use crate::intent::Begin;
        let how = match (self.shared.intent(), &self.intent_core) {
            (Some(i), Some(core)) => i.begin_write(core, io.offset_blocks, io.num_blocks),
            // Out of range is not marked: it fails below as it would anyway.
            _ => Begin::Unmarked,
        };
        match how {
            Begin::Hold => self.intent_wait(io, plan),
            how => self.mirror_gated(io, plan, how),
        }
    }

    /// A write held until its bitmap regions are on disk (marked: `Begin::Hold`).
    fn intent_wait(&self, io: Box<BdevIo>, plan: Plan) {
        let me = self.rc();
        oxstor_reactor::schedule_after(LOCKED_RETRY, move || {
            let go = me
                .shared
                .intent()
                .is_none_or(|i| i.write_may_go(io.offset_blocks, io.num_blocks));
            if go {
                me.mirror_gated(io, plan, crate::intent::Begin::Hold)
            } else {
                me.intent_wait(io, plan)
            }
        });
    }

    fn mirror_gated(&self, io: Box<BdevIo>, plan: Plan, marked: crate::intent::Begin) {
        match self.gate_enter(io.offset_blocks, io.num_blocks) {
            Some(epoch) => {
                self.next_marked.set(marked);
                self.fan_out(io, true, Some(epoch), plan)
            }
            None => {
                let me = self.rc();
                oxstor_reactor::schedule_after(LOCKED_RETRY, move || {
                    me.mirror_gated(io, plan, marked)
                });
            }
        }
    }

    fn gate_enter(&self, off: u64, len: u64) -> Option<u64> {
        let sh = &self.shared;
        loop {
            let e = sh.epoch.load(Ordering::SeqCst);
            let counter = &self.gate.inflight[(e & 1) as usize];
            counter.fetch_add(1, Ordering::SeqCst);
            if sh.epoch.load(Ordering::SeqCst) != e {
                counter.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            let (lo, hi) = (
                sh.lock_start.load(Ordering::SeqCst),
                sh.lock_end.load(Ordering::SeqCst),
            );
            if off < hi && lo < off + len {
                counter.fetch_sub(1, Ordering::SeqCst);
                return None;
            }
            return Some(e);
        }
    }

    fn gate_exit(&self, epoch: u64) {
        self.gate.inflight[(epoch & 1) as usize].fetch_sub(1, Ordering::SeqCst);
    }

    fn fan_out(&self, io: Box<BdevIo>, mirror: bool, epoch: Option<u64>, plan: Plan) {
        let (off, len, t) = (io.offset_blocks, io.num_blocks, io.io_type);
        let slot = self.fanout_open(io, mirror, epoch);
        let layout = self.layout.borrow();
        let emit = |m: usize, moff: u64, mlen: u64, boff: u64| {
            let in_service = !mirror || matches!(self.shared.state(m), ONLINE | REBUILDING);
            if in_service && self.has_member(m) {
                self.send_child(slot, m, t, moff, mlen, boff);
            } else {
                let mut f = self.fanouts.borrow_mut();
                f[slot].degraded = true;
                if !mirror {
                    f[slot].err = Some(IoStatus::Failed(libc::ENODEV));
                }
            }
        };
        match plan {
            Plan::Pieces => layout.pieces(off, len, emit),
            Plan::Extents => layout.extents(off, len, |m, moff, mlen| emit(m, moff, mlen, 0)),
            Plan::All => (0..layout.n).for_each(|m| emit(m, 0, layout.data_blocks[m], 0)),
        }
        self.fanout_dec(slot, true);
    }

    fn fanout_open(&self, io: Box<BdevIo>, mirror: bool, epoch: Option<u64>) -> usize {
        let mut f = self.fanouts.borrow_mut();
        let slot = match self.free_fanouts.borrow_mut().pop() {
            Some(s) => s,
            None => {
                f.push(Fanout::default());
                f.len() - 1
            }
        };
        f[slot] = Fanout {
            parent: Some(io),
            outstanding: 1,
            mirror,
            epoch,
            intent: self.next_marked.replace(crate::intent::Begin::Unmarked),
            ..Fanout::default()
        };
        slot
    }

    /// Sends one child of fan-out `slot` to member `m`; data children get a window of the
    /// parent's buffer starting `boff` blocks in.
    fn send_child(&self, slot: usize, m: usize, t: IoType, moff: u64, mlen: u64, boff: u64) {
        if !self.has_member(m) {
            return;
        }
        let moff = moff + self.layout.borrow().data_offset;
        let recycled = self.free_ios.borrow_mut().pop();
        let mut child = match recycled {
            Some(mut c) => {
                c.reset(t, moff, mlen);
                c
            }
            None => BdevIo::new(t, moff, mlen, IoBuf::None),
        };
        {
            let mut f = self.fanouts.borrow_mut();
            let e = &mut f[slot];
            e.outstanding += 1;
            if t.has_data() {
                if let Some(p) = e.parent.as_mut() {
                    let bs = self.layout.borrow().block_size as usize;
                    // The window keeps this channel (and so the parent's buffer) alive.
                    let owner: Rc<dyn Any> = self.rc();
                    child.buf =
                        IoBuf::window(&mut p.buf, boff as usize * bs, mlen as usize * bs, owner);
                }
            }
        }
        if let Err(child) = self.submit_to(m, child, tag(KIND_CHILD, m, slot as u64)) {
            // Checked above; members change only between I/Os.
            complete_later(child, IoStatus::Failed(libc::ENODEV));
        }
    }

    fn child_done(&self, slot: usize, m: usize, mut child: Box<BdevIo>) {
        let status = child.status;
        child.buf = IoBuf::None;
        {
            let mut pool = self.free_ios.borrow_mut();
            if pool.len() < IO_POOL {
                pool.push(child);
            }
        }
        let mirror = {
            let mut f = self.fanouts.borrow_mut();
            let e = &mut f[slot];
            if status.is_success() {
                e.ok += 1;
            } else if e.err.is_none() {
                e.err = Some(status);
            }
            e.mirror
        };
        if mirror && !status.is_success() {
            self.shared.mark_faulty(m, status);
        }
        self.fanout_dec(slot, false);
    }

    /// Drops one reference to fan-out `slot`; the last completes the parent. From inside
    /// `submit` the completion is deferred, as the bdev contract requires.
    fn fanout_dec(&self, slot: usize, in_submit: bool) {
        let done = {
            let mut f = self.fanouts.borrow_mut();
            let e = &mut f[slot];
            e.outstanding -= 1;
            if e.outstanding > 0 {
                return;
            }
            std::mem::take(e)
        };
        self.free_fanouts.borrow_mut().push(slot);
        if let Some(epoch) = done.epoch {
            self.gate_exit(epoch);
        }
        if done.intent != crate::intent::Begin::Unmarked {
            if let (Some(i), Some(core), Some(p)) =
                (self.shared.intent(), &self.intent_core, &done.parent)
            {
                i.end_write(core, p.offset_blocks, p.num_blocks, done.intent);
            }
        }
        let status = match (done.mirror, done.err) {
            (false, err) => err.unwrap_or(IoStatus::Success),
            (true, None) if !done.degraded && done.ok > 0 => IoStatus::Success,
            (true, err) => {
                let lost = self.layout.borrow().lost_data(|m| self.shared.state(m));
                if done.ok > 0 && !lost {
                    IoStatus::Success
                } else {
                    err.unwrap_or(IoStatus::Failed(libc::EIO))
                }
            }
        };
        if let Some(parent) = done.parent {
            if in_submit {
                complete_later(parent, status);
            } else {
                parent.complete(status);
            }
        }
    }
}

impl IoDone for ChanState {
    fn io_done(&self, mut io: Box<BdevIo>, t: u64) {
        let (kind, m, payload) = untag(t);
        match kind {
            KIND_FORWARD => {
                io.offset_blocks = payload;
                let status = io.status;
                io.complete(status);
            }
            KIND_MIRROR_READ => {
                let out = &self.outstanding[m];
                out.set(out.get().saturating_sub(io.num_blocks));
                io.offset_blocks = payload;
                match io.status {
                    IoStatus::Failed(e) if e != libc::ENOMEM && io.io_type == IoType::Read => {
                        // md's policy, simplified: the copy is faulty, read another one.
                        self.shared.mark_faulty(m, io.status);
                        self.mirror_read(io);
                    }
                    status => io.complete(status),
                }
            }
            _ => self.child_done(payload as usize, m, io),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rebuild.
// ---------------------------------------------------------------------------------------------

/// A stretch of blocks (member or array addresses, as the context says).
type BlockRange = std::ops::Range<u64>;

/// Copies a mirror's data onto a new member on the first reactor, a span of up to
/// `process_queue_depth` windows at a time while the array is otherwise idle, one window at
/// a time while users do I/O (see [`Rebuild::windows_allowed`]).
///
/// For each span: publish the array blocks its windows cover as locked and bump the epoch,
/// wait until no write counted under the old epoch is in flight (those may not have seen the
/// lock), then copy every window of the span at once (each with its own descriptor and DMA
/// buffer: read from an in-service copy, write to the target), and move on once the last one
/// is written. Writes that overlap the locked span wait and retry; writes elsewhere go to the
/// target as well as the other copies. Windows join a span only while its array blocks stay
/// within a few windows' worth, so a held user write waits for about one span's copy time.
struct Rebuild {
    me: Weak<Rebuild>,
    shared: Arc<RaidShared>,
    layout: Arc<Layout>,
    target: usize,
    chans: Vec<Option<Rc<IoChannel>>>,
    /// Target stretches a returning member missed (sorted, disjoint); None: all of it.
    delta: Option<Vec<BlockRange>>,
    /// Target blocks below this are copied (or need no copy).
    pos: Cell<u64>,
    /// The span in flight, one window per descriptor of `ios` (same index).
    windows: RefCell<Vec<RebuildWindow>>,
    /// Where `pos` moves once the whole span is written.
    span_end: Cell<u64>,
    /// Windows of the span not yet written or given up.
    pending: Cell<usize>,
    /// Set when a window fails: the span's other windows stop where they are, and the
    /// rebuild stops once they are all back (none of its writes may land after the lock
    /// is gone).
    failure: Cell<Option<&'static str>>,
    /// One descriptor with its own DMA buffer per window; None while in flight.
    ios: RefCell<Vec<Option<Box<BdevIo>>>>,
    window_blocks: u64,
    throttle: crate::rebuild::Throttle,
    checkpoints: crate::persist::CheckpointPacer,
}

/// One window of a rebuild span: `len` blocks from `src` at `src_off` to the target at
/// `tgt_off`.
#[derive(Clone, Copy)]
struct RebuildWindow {
    src: usize,
    src_off: u64,
    tgt_off: u64,
    len: u64,
}

enum Step {
    Done,
    NoSource,
    Window {
        src: usize,
        src_off: u64,
        len: u64,
        array_off: u64,
    },
}

/// Completion tags of rebuild I/O: window index and phase.
const REBUILD_READ: u64 = 0;
const REBUILD_WRITE: u64 = 1;

fn rebuild_tag(window: usize, phase: u64) -> u64 {
    (window as u64) << 1 | phase
}

/// Sorts `ranges` and joins those that overlap or touch (empty ones dropped).
pub(crate) fn merge_ranges(mut ranges: Vec<BlockRange>) -> Vec<BlockRange> {
    ranges.retain(|r| r.start < r.end);
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<BlockRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

impl Layout {
    /// raid10: the stretches of member `m` holding array blocks in `ranges` (sorted,
    /// merged). A dirty array region is a run of chunk pieces, each stored on two members.
    fn raid10_member_ranges(&self, m: usize, ranges: &[BlockRange]) -> Vec<BlockRange> {
        let s = self.strip;
        let mut out = Vec::new();
        for r in ranges {
            let end = r.end.min(self.num_blocks);
            let mut cur = r.start;
            while cur < end {
                let (c, within) = (cur / s, cur % s);
                let plen = (s - within).min(end - cur);
                for copy in 0..2 {
                    let (member, moff) = self.chunk_copy(c, copy, within);
                    if member == m {
                        out.push(moff..moff + plen);
                    }
                }
                cur += plen;
            }
        }
        merge_ranges(out)
    }
}

impl Rebuild {
    fn start(shared: Arc<RaidShared>, target: usize, resume: Option<crate::persist::Resume>) {
        let Some(layout) = shared.layout() else {
            return;
        };
        if shared.deleted.load(Ordering::Acquire) {
            // Its members may be gone too: opening channels now would revive their state.
            return finish(&shared, target, false);
        }
        let mut chans = Vec::with_capacity(shared.n());
        for e in shared.member_entries() {
            chans.push(e.and_then(|e| e.channel().ok()));
        }
        let window_blocks = (crate::rebuild::window_bytes().min(REBUILD_WINDOW_BYTES)
            / layout.block_size as u64)
            .max(1);
        let total = layout.data_blocks[target];
        // The bitmap's regions are array blocks; raid1 members hold them at the same offsets.
        let member_ranges = |array_ranges: Vec<BlockRange>| match layout.level {
            RaidLevel::Raid10 => layout.raid10_member_ranges(target, &array_ranges),
            _ => merge_ranges(array_ranges),
        };
        let delta = match resume {
            // Below the checkpoint only what was in flight at an unclean shutdown.
            Some(r) => {
                let from = r.from.min(total);
                let mut ranges = member_ranges(r.redo);
                ranges.retain(|m| m.start < from);
                ranges.iter_mut().for_each(|m| m.end = m.end.min(from));
                ranges.push(from..total);
                Some(merge_ranges(ranges))
            }
            None => shared
                .intent()
                .and_then(|i| i.rebuild_ranges(target))
                .map(member_ranges),
        };
        // Below the first stretch to copy the target is current already.
        let first = delta
            .as_ref()
            .map_or(0, |d| d.first().map_or(total, |r| r.start));
        shared.rebuild_done.store(first, Ordering::Relaxed);
        crate::rebuild::stats_begin(shared.id, layout.block_size, first);
        let Some(buf) = DmaBuf::alloc((window_blocks * layout.block_size as u64) as usize) else {
            tracing::error!("raid {}: no DMA buffer for the rebuild", shared.name);
            return finish(&shared, target, false);
        };
        let rb = Rc::new_cyclic(|me| Rebuild {
            me: me.clone(),
            shared,
            layout,
            target,
            chans,
            delta,
            pos: Cell::new(first),
            windows: RefCell::new(Vec::new()),
            span_end: Cell::new(0),
            pending: Cell::new(0),
            failure: Cell::new(None),
            ios: RefCell::new(vec![Some(BdevIo::new(IoType::Read, 0, 0, IoBuf::Dma(buf)))]),
            window_blocks,
            throttle: Default::default(),
            checkpoints: crate::persist::CheckpointPacer::new(first, total),
        });
        rb.step();
    }

    fn rc(&self) -> Rc<Rebuild> {
        self.me
            .upgrade()
            .expect("the rebuild is alive while it runs")
    }

    fn plan(&self, pos: u64) -> Step {
        let l = &self.layout;
        let total = l.data_blocks[self.target];
        if pos >= total {
            return Step::Done;
        }
        let in_service = |m: usize| self.shared.state(m) == ONLINE && self.chans[m].is_some();
        match l.level {
            RaidLevel::Raid10 => {
                let n = l.n as u64;
                let (row, within) = (pos / l.strip, pos % l.strip);
                let idx = row * n + self.target as u64;
                let c = idx / 2;
                if c >= l.chunks {
                    // Past the last chunk: the rest of this member is unused.
                    return Step::Done;
                }
                let (src, src_off) = l.chunk_copy(c, (idx & 1) ^ 1, within);
                if !in_service(src) {
                    return Step::NoSource;
                }
                let len = (l.strip - within).min(self.window_blocks).min(total - pos);
                Step::Window {
                    src,
                    src_off,
                    len,
                    array_off: c * l.strip + within,
                }
            }
            _ => match (0..l.n).find(|&m| m != self.target && in_service(m)) {
                None => Step::NoSource,
                Some(src) => Step::Window {
                    src,
                    src_off: pos,
                    len: self.window_blocks.min(total - pos),
                    array_off: pos,
                },
            },
        }
    }

    /// The next stretch of the target to copy at or after `pos`: (first block, end).
    fn next_stretch(&self, pos: u64) -> Option<(u64, u64)> {
        let total = self.layout.data_blocks[self.target];
        match &self.delta {
            None => (pos < total).then_some((pos, total)),
            Some(ranges) => {
                let i = ranges.partition_point(|r| r.end <= pos);
                let r = ranges.get(i)?;
                let (start, end) = (r.start.max(pos), r.end.min(total));
                (start < end).then_some((start, end))
            }
        }
    }

    /// How many windows the next span may have. md's rule: resync at full speed only while
    /// the array is otherwise idle, at the minimum while users do I/O. Measured on one core
    /// (raid1 over malloc, 128 KiB windows, 4 KiB QD16 user load, `cargo bench --bench raid`):
    /// 4 windows throughout left the users 205 K randread / 235 K randwrite IOPS (rebuild
    /// 3.1 / 1.8 GiB/s); one window under load leaves them 521 K / 350 K (rebuild 2.0 /
    /// 0.7 GiB/s), and an idle array still rebuilds at full depth.
    fn windows_allowed(&self) -> usize {
        let last = self.shared.user_io_ns.load(Ordering::Relaxed);
        // Another core's clock may be a little ahead of ours: saturate to "just now".
        let quiet = oxstor_reactor::clock::now_ns().saturating_sub(last);
        if last != 0 && quiet < REBUILD_IDLE_NS {
            1
        } else {
            crate::rebuild::queue_depth()
        }
    }

    /// How many array blocks a span of `windows` windows may lock. raid10 target rows are
    /// `n/2` chunks apart in the array, so its spans cover the chunks in between as well.
    fn span_cap_blocks(&self, windows: usize) -> u64 {
        let l = &self.layout;
        let windows_blocks = windows as u64 * self.window_blocks;
        match l.level {
            RaidLevel::Raid10 => (windows_blocks + 2 * l.strip) * (l.n as u64).div_ceil(2),
            _ => windows_blocks,
        }
    }

    /// Makes sure descriptor `i` exists; false if no DMA buffer is left for it.
    fn have_io(&self, i: usize) -> bool {
        let mut ios = self.ios.borrow_mut();
        if i < ios.len() {
            return true;
        }
        let bytes = self.window_blocks * self.layout.block_size as u64;
        match DmaBuf::alloc(bytes as usize) {
            Some(buf) => {
                ios.push(Some(BdevIo::new(IoType::Read, 0, 0, IoBuf::Dma(buf))));
                true
            }
            None => false,
        }
    }

    /// Plans the next span, locks it, and copies it once the writes that may not have
    /// seen the lock are done.
    fn step(&self) {
        let sh = &self.shared;
        if sh.deleted.load(Ordering::Acquire) || sh.state(self.target) != REBUILDING {
            return self.stop(false, "the target left the array");
        }
        let most = self.windows_allowed();
        let cap = self.span_cap_blocks(most);
        let bs = u64::from(self.layout.block_size);
        let mut windows = self.windows.borrow_mut();
        windows.clear();
        let mut pos = self.pos.get();
        let (mut lo, mut hi) = (u64::MAX, 0);
        while windows.len() < most {
            let Some((start, end)) = self.next_stretch(pos) else {
                break;
            };
            let (src, src_off, len, array_off) = match self.plan(start) {
                Step::Done => break,
                Step::NoSource if windows.is_empty() => {
                    drop(windows);
                    return self.stop(false, "no in-service copy to rebuild from");
                }
                // The windows planned so far still go; the next span finds no source.
                Step::NoSource => break,
                Step::Window {
                    src,
                    src_off,
                    len,
                    array_off,
                } => (src, src_off, len.min(end - start), array_off),
            };
            let (span_lo, span_hi) = (lo.min(array_off), hi.max(array_off + len));
            if !windows.is_empty() && (span_hi - span_lo > cap || !self.have_io(windows.len())) {
                break;
            }
            if let Some(wait) = self.throttle.reserve(len * bs) {
                if windows.is_empty() {
                    drop(windows);
                    let me = self.rc();
                    oxstor_reactor::schedule_after(wait, move || me.step());
                    return;
                }
                break;
            }
            windows.push(RebuildWindow {
                src,
                src_off,
                tgt_off: start,
                len,
            });
            (lo, hi) = (span_lo, span_hi);
            pos = start + len;
        }
        if windows.is_empty() {
            drop(windows);
            return self.stop(true, "");
        }
        self.span_end.set(pos);
        self.pending.set(windows.len());
        drop(windows);
        sh.lock_start.store(lo, Ordering::SeqCst);
        sh.lock_end.store(hi, Ordering::SeqCst);
        let old = sh.epoch.fetch_add(1, Ordering::SeqCst);
        self.drain((old & 1) as usize);
    }

    fn drain(&self, parity: usize) {
        if self.shared.inflight_writes(parity) > 0 {
            let me = self.rc();
            oxstor_reactor::schedule_after(Duration::from_micros(20), move || me.drain(parity));
            return;
        }
        // `pending` counts every window until its write is done, so no completion below can
        // start the next span while this loop still runs.
        let count = self.windows.borrow().len();
        for i in 0..count {
            self.read(i);
        }
    }

    fn read(&self, i: usize) {
        let Some(w) = self.windows.borrow().get(i).copied() else {
            return self.window_failed("internal: rebuild window missing");
        };
        self.submit(
            i,
            w.src,
            IoType::Read,
            w.src_off,
            w.len,
            rebuild_tag(i, REBUILD_READ),
        );
    }

    fn write(&self, i: usize) {
        let Some(w) = self.windows.borrow().get(i).copied() else {
            return self.window_failed("internal: rebuild window missing");
        };
        self.submit(
            i,
            self.target,
            IoType::Write,
            w.tgt_off,
            w.len,
            rebuild_tag(i, REBUILD_WRITE),
        );
    }

    fn submit(&self, i: usize, m: usize, t: IoType, off: u64, len: u64, tag: u64) {
        if self.failure.get().is_some() {
            return self.window_retired();
        }
        let Some(ch) = self.chans.get(m).and_then(Option::clone) else {
            return self.window_failed("member channel missing");
        };
        let Some(mut io) = self.ios.borrow_mut().get_mut(i).and_then(Option::take) else {
            return self.window_failed("internal: rebuild descriptor in use");
        };
        io.reset(t, off + self.layout.data_offset, len);
        if let IoBuf::Dma(d) = &mut io.buf {
            d.set_len((len * self.layout.block_size as u64) as usize);
        }
        ch.submit(io, self.rc(), tag);
    }

    /// A window's source failed: read it again from another in-service copy, if any.
    fn read_elsewhere(&self, i: usize) {
        let Some(w) = self.windows.borrow().get(i).copied() else {
            return self.window_failed("internal: rebuild window missing");
        };
        match self.plan(w.tgt_off) {
            Step::Window { src, src_off, .. } => {
                if let Some(slot) = self.windows.borrow_mut().get_mut(i) {
                    slot.src = src;
                    slot.src_off = src_off;
                }
                self.read(i);
            }
            Step::Done | Step::NoSource => self.window_failed("no in-service copy to rebuild from"),
        }
    }

    fn window_failed(&self, why: &'static str) {
        if self.failure.get().is_none() {
            self.failure.set(Some(why));
        }
        self.window_retired();
    }

    fn window_retired(&self) {
        let left = self.pending.get().saturating_sub(1);
        self.pending.set(left);
        if left > 0 {
            return;
        }
        if let Some(why) = self.failure.take() {
            return self.stop(false, why);
        }
        let end = self.span_end.get();
        self.pos.set(end);
        self.shared.rebuild_done.store(end, Ordering::Relaxed);
        crate::rebuild::stats_note(self.shared.id, end);
        self.checkpoints.note(&self.shared, self.target, end);
        self.step();
    }

    fn stop(&self, ok: bool, why: &str) {
        let sh = &self.shared;
        sh.lock_end.store(0, Ordering::SeqCst);
        sh.lock_start.store(0, Ordering::SeqCst);
        if !ok {
            tracing::warn!(
                "raid {}: rebuild of slot {} stopped: {why}",
                sh.name,
                self.target
            );
        }
        finish(sh, self.target, ok);
    }
}

fn finish(sh: &RaidShared, target: usize, ok: bool) {
    let to = if ok { ONLINE } else { FAILED };
    if sh.states[target]
        .compare_exchange(REBUILDING, to, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
        && ok
    {
        tracing::info!("raid {}: rebuild of slot {target} complete", sh.name);
    }
    sh.rebuild_target.store(NO_REBUILD, Ordering::Release);
    crate::rebuild::stats_end(sh.id);
    if let Some(i) = sh.intent() {
        i.rebuild_finished(target, ok);
        i.set_degraded((0..sh.n()).any(|m| sh.state(m) != ONLINE));
    }
    crate::persist::changed(sh);
    // A spare may be waiting for another failed or missing slot.
    sh.spare_later();
}

impl IoDone for Rebuild {
    fn io_done(&self, io: Box<BdevIo>, tag: u64) {
        let status = io.status;
        let (i, phase) = ((tag >> 1) as usize, tag & 1);
        if let Some(slot) = self.ios.borrow_mut().get_mut(i) {
            *slot = Some(io);
        }
        let Some(w) = self.windows.borrow().get(i).copied() else {
            return self.window_failed("internal: completion of an unknown window");
        };
        match (phase, status) {
            (_, IoStatus::Failed(e)) if e == libc::ENOMEM => {
                // Out of descriptors somewhere below: the same I/O again shortly (the span
                // stays locked meanwhile).
                let me = self.rc();
                oxstor_reactor::schedule_after(Duration::from_millis(1), move || {
                    if phase == REBUILD_READ {
                        me.read(i)
                    } else {
                        me.write(i)
                    }
                });
            }
            (REBUILD_READ, IoStatus::Success) => self.write(i),
            (REBUILD_READ, s) => {
                // The source failed: mark it and read the window from another copy.
                self.shared.mark_faulty(w.src, s);
                self.read_elsewhere(i);
            }
            (_, IoStatus::Success) => {
                if let Some(intent) = self.shared.intent() {
                    intent.add_copied(w.len * u64::from(self.layout.block_size));
                }
                self.window_retired();
            }
            (_, s) => {
                self.shared.mark_faulty(self.target, s);
                self.window_failed("write to the target failed");
            }
        }
    }
}

#[cfg(test)]
mod rebuild_tests {
    use super::*;

    /// Member blocks of `m` that `pieces` reports for array blocks in `ranges`, one by one.
    fn blocks_by_pieces(l: &Layout, m: usize, ranges: &[BlockRange]) -> Vec<u64> {
        let mut out = Vec::new();
        for r in ranges {
            l.pieces(r.start, r.end - r.start, |member, moff, len, _| {
                if member == m {
                    out.extend(moff..moff + len);
                }
            });
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    // Lists of one range are lists all the same here.
    #[allow(clippy::single_range_in_vec_init)]
    #[test]
    fn raid10_member_ranges_are_the_pieces_of_the_array_ranges() {
        for n in [2usize, 3, 4, 5] {
            let l = Layout::new(RaidLevel::Raid10, 8, &vec![200; n], 512).unwrap();
            let sets: [&[BlockRange]; 4] = [
                &[0..l.num_blocks],
                &[3..5],
                &[5..37, 60..61, 100..140],
                &[l.num_blocks - 9..l.num_blocks],
            ];
            for ranges in sets {
                for m in 0..n {
                    let got = l.raid10_member_ranges(m, ranges);
                    assert!(got.windows(2).all(|w| w[0].end < w[1].start), "{got:?}");
                    let flat: Vec<u64> = got.iter().flat_map(|r| r.clone()).collect();
                    assert_eq!(
                        flat,
                        blocks_by_pieces(&l, m, ranges),
                        "n={n} m={m} {ranges:?}"
                    );
                }
            }
            // The whole array is every used block of every member, in one stretch.
            for m in 0..n {
                let all = l.raid10_member_ranges(m, &[0..l.num_blocks]);
                let used: u64 = all.iter().map(|r| r.end - r.start).sum();
                assert_eq!(all.first().map(|r| r.start), Some(0));
                assert_eq!(used, all.last().map_or(0, |r| r.end));
            }
        }
    }

    #[test]
    fn merge_ranges_joins_touching_and_overlapping() {
        assert_eq!(
            merge_ranges(vec![10..20, 0..5, 5..7, 15..30, 40..40, 31..32]),
            vec![0..7, 10..30, 31..32]
        );
        assert!(merge_ranges(Vec::new()).is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// Superblock hooks: what `crate::persist` may see of an array.
// ---------------------------------------------------------------------------------------------

impl RaidShared {
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn uuid_str(&self) -> &str {
        &self.uuid
    }

    pub(crate) fn persist(&self) -> Option<&Arc<crate::persist::ArrayPersist>> {
        self.persist.as_ref()
    }

    /// The write-intent bitmap, if the array keeps one.
    pub(crate) fn intent(&self) -> Option<&Arc<crate::intent::ArrayIntent>> {
        self.persist.as_ref().and_then(|p| p.intent())
    }

    pub(crate) fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// The array as its superblocks describe it; None until assembled.
    pub(crate) fn snapshot(&self) -> Option<crate::persist::Snapshot> {
        use crate::superblock::MemberState;
        let layout = self.layout()?;
        let rebuild = self.rebuild_target.load(Ordering::Acquire);
        // Under one lock, so a spare that takes a slot meanwhile is listed only once.
        let (entries, spares) = {
            let ctl = self.ctl();
            let entries: Vec<_> = ctl
                .slots
                .iter()
                .map(|s| s.claim.as_ref().map(|g| g.entry().clone()))
                .collect();
            let spares: Vec<_> = ctl.spares.iter().map(|(_, g)| g.entry().clone()).collect();
            (entries, spares)
        };
        let members = entries
            .into_iter()
            .enumerate()
            .map(|(m, entry)| {
                let state = match self.state(m) {
                    ONLINE => MemberState::Active,
                    FAILED => MemberState::Faulty,
                    REBUILDING => MemberState::Rebuilding,
                    _ => MemberState::Missing,
                };
                (entry, state)
            })
            .collect();
        Some(crate::persist::Snapshot {
            name: self.name.clone(),
            level: self.level,
            strip_kb: self.strip_kb,
            block_size: layout.block_size,
            data_offset: layout.data_offset,
            data_blocks: layout.data_blocks.clone(),
            array_blocks: layout.num_blocks,
            members,
            spares,
            rebuild_target: (rebuild != NO_REBUILD).then_some(rebuild),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Rebuild hooks: what `crate::rebuild` (the raid5/raid6 rebuild) may see of an array.
// ---------------------------------------------------------------------------------------------

impl RaidShared {
    /// raid5/raid6: the stripe layout and locks, block size and data offset.
    pub(crate) fn parity_geometry(&self) -> Option<(Arc<crate::stripe::StripeShared>, u32, u64)> {
        let l = self.layout()?;
        Some((l.stripes.clone()?, l.block_size, l.data_offset))
    }

    /// This core's channel to each member (None where there is no member).
    pub(crate) fn member_channels(&self) -> Vec<Option<Rc<IoChannel>>> {
        self.member_entries()
            .into_iter()
            .map(|e| e.and_then(|e| e.channel().ok()))
            .collect()
    }

    pub(crate) fn is_rebuilding(&self, m: usize) -> bool {
        self.state(m) == REBUILDING
    }

    /// The raid5/raid6 rebuild watermark: target blocks `0..done` are rebuilt.
    pub(crate) fn set_rebuild_done(&self, done: u64) {
        self.rebuild_done.store(done, Ordering::SeqCst);
    }

    /// Whether member `m` is being rebuilt and the rebuild has passed `stripe`.
    pub(crate) fn rebuilt_stripe(&self, m: usize, stripe: u64, strip: u64) -> bool {
        self.state(m) == REBUILDING
            && self.rebuild_target.load(Ordering::Acquire) == m
            && (stripe + 1) * strip <= self.rebuild_done.load(Ordering::SeqCst)
    }

    pub(crate) fn finish_rebuild(&self, target: usize, ok: bool) {
        finish(self, target, ok);
    }
}

// ---------------------------------------------------------------------------------------------
// Scrub hooks: what `crate::scrub` may see of an array.
// ---------------------------------------------------------------------------------------------

impl RaidShared {
    /// Whether every slot is in service and no rebuild runs (a scrub needs both).
    pub(crate) fn scrub_ready(&self) -> bool {
        self.layout().is_some()
            && (0..self.n()).all(|m| self.state(m) == ONLINE)
            && self.rebuild_target.load(Ordering::Acquire) == NO_REBUILD
    }

    /// Mirrors: array blocks, block size, data offset and the largest window starting at
    /// array block `off` whose copies are contiguous on each member (raid10: one chunk).
    pub(crate) fn scrub_mirror_window(&self, off: u64, max: u64) -> Option<(u64, u32, u64, u64)> {
        let l = self.layout()?;
        let mut len = max.min(l.num_blocks.saturating_sub(off));
        if l.level == RaidLevel::Raid10 {
            len = len.min(l.strip - off % l.strip);
        }
        Some((l.num_blocks, l.block_size, l.data_offset, len))
    }

    /// Mirrors: (member, member block incl. data offset) of every copy of `[off, off+len)`,
    /// which must lie in one window of [`Self::scrub_mirror_window`].
    pub(crate) fn scrub_mirror_copies(&self, off: u64, len: u64) -> Vec<(usize, u64)> {
        let Some(l) = self.layout() else {
            return Vec::new();
        };
        let mut v = Vec::new();
        l.pieces(off, len, |m, moff, _, _| v.push((m, moff + l.data_offset)));
        v
    }

    /// Mirrors: locks array blocks `[off, off+len)` against user writes the way the rebuild
    /// does; returns the epoch parity whose writes must drain before the window is stable.
    pub(crate) fn scrub_lock(&self, off: u64, len: u64) -> usize {
        self.lock_start.store(off, Ordering::SeqCst);
        self.lock_end.store(off + len, Ordering::SeqCst);
        (self.epoch.fetch_add(1, Ordering::SeqCst) & 1) as usize
    }

    pub(crate) fn scrub_drained(&self, parity: usize) -> bool {
        self.inflight_writes(parity) == 0
    }

    pub(crate) fn scrub_unlock(&self) {
        if self.rebuild_target.load(Ordering::Acquire) != NO_REBUILD {
            // A rebuild started meanwhile (a member failed): the window is the rebuild's now.
            return;
        }
        self.lock_end.store(0, Ordering::SeqCst);
        self.lock_start.store(0, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layouts() -> Vec<Layout> {
        let mut v = Vec::new();
        for n in 1..=5usize {
            v.push(Layout::new(RaidLevel::Raid0, 8, &vec![100; n], 512).unwrap());
            let sizes: Vec<u64> = (0..n as u64).map(|i| 30 + 17 * i).collect();
            v.push(Layout::new(RaidLevel::Concat, 0, &sizes, 512).unwrap());
            if n >= 2 {
                v.push(Layout::new(RaidLevel::Raid1, 0, &vec![90; n], 512).unwrap());
                v.push(Layout::new(RaidLevel::Raid10, 4, &vec![90; n], 512).unwrap());
            }
        }
        v
    }

    /// Every range: the per-member extents are exactly the hull of the per-piece mapping,
    /// and pieces cover the range once per copy.
    #[test]
    fn extents_match_pieces_for_every_range() {
        for l in layouts() {
            let copies = match l.level {
                RaidLevel::Raid1 => l.n as u64,
                RaidLevel::Raid10 => 2,
                _ => 1,
            };
            for off in 0..l.num_blocks {
                for len in 1..=(l.num_blocks - off).min(40) {
                    let mut hull: Vec<Option<(u64, u64)>> = vec![None; l.n];
                    let mut covered = 0;
                    l.pieces(off, len, |m, moff, plen, boff| {
                        assert!(boff + plen <= len);
                        assert!(moff + plen <= l.data_blocks[m], "{l:?} {off}+{len}");
                        covered += plen;
                        let h = hull[m].get_or_insert((moff, moff + plen));
                        *h = (h.0.min(moff), h.1.max(moff + plen));
                    });
                    assert_eq!(covered, len * copies, "{:?} {off}+{len}", l.level);
                    let mut got: Vec<Option<(u64, u64)>> = vec![None; l.n];
                    l.extents(off, len, |m, moff, mlen| {
                        assert!(got[m].replace((moff, moff + mlen)).is_none());
                    });
                    assert_eq!(got, hull, "{:?} n={} {off}+{len}", l.level, l.n);
                    if let Some((m, moff)) = l.map_one(off, len) {
                        let mut one = None;
                        l.pieces(off, len, |pm, pmoff, _, _| {
                            assert!(one.replace((pm, pmoff)).is_none());
                        });
                        assert_eq!(one, Some((m, moff)));
                    }
                }
            }
        }
    }

    #[test]
    fn raid0_fast_map_matches_the_layout() {
        for n in [1usize, 2, 3, 4, 5, 7, 12, 255] {
            for strip in [1u64, 8, 128] {
                let mut l = Layout::new(RaidLevel::Raid0, strip, &vec![1 << 20; n], 512).unwrap();
                l.data_offset = 77;
                let map = StripeMap::new(&l).unwrap();
                for off in (0..l.num_blocks).step_by(97).chain([l.num_blocks - 1]) {
                    for len in [1, strip, 2 * strip] {
                        let want = l
                            .map_one(off, len.min(l.num_blocks - off))
                            .map(|(m, moff)| (m, moff + 77));
                        assert_eq!(map.map(off, len.min(l.num_blocks - off)), want);
                    }
                }
            }
        }
        // The inverse stays exact up to the largest array offset.
        for n in 2..=255u64 {
            let inv = u64::MAX / n + 1;
            for k in [
                MAX_ARRAY_BLOCKS - 1,
                MAX_ARRAY_BLOCKS - n,
                (MAX_ARRAY_BLOCKS / n) * n - 1,
            ] {
                assert_eq!(
                    ((u128::from(k) * u128::from(inv)) >> 64) as u64,
                    k / n,
                    "{k}/{n}"
                );
            }
        }
        assert!(
            StripeMap::new(&Layout::new(RaidLevel::Raid0, 6, &[60, 60], 512).unwrap()).is_none()
        );
    }

    #[test]
    fn raid10_is_mirror_pairs_and_sizes_follow_spdk() {
        let l = Layout::new(RaidLevel::Raid10, 8, &[100, 120, 100, 110], 512).unwrap();
        assert_eq!(l.num_blocks, 12 * 4 / 2 * 8);
        assert_eq!(l.pairs, vec![(0, 1), (2, 3)]);
        assert!(l.lost_data(|m| if m < 2 { FAILED } else { ONLINE }));
        assert!(!l.lost_data(|m| if m == 0 || m == 3 { FAILED } else { ONLINE }));
        let odd = Layout::new(RaidLevel::Raid10, 8, &[80; 3], 512).unwrap();
        assert_eq!(odd.pairs, vec![(0, 1), (2, 0), (1, 2)]);
        let r0 = Layout::new(RaidLevel::Raid0, 8, &[100, 70], 512).unwrap();
        assert_eq!(r0.num_blocks, 8 * 8 * 2);
        assert!(Layout::new(RaidLevel::Raid0, 128, &[100], 512).is_err());
        assert_eq!(RaidLevel::parse("RAID10").unwrap(), RaidLevel::Raid10);
        assert_eq!(RaidLevel::parse("raid6").unwrap(), RaidLevel::Raid6);
        assert_eq!(RaidLevel::parse("raid5f").unwrap(), RaidLevel::Raid5);
        assert!(RaidLevel::parse("raid7").is_err());
    }
}
