//! On-disk superblocks for RAID bdevs: writing them as the array changes, and assembling
//! arrays from them when their members appear (SPDK's `superblock: true`, md's v1.2 metadata).
//!
//! An array created with a superblock keeps array data at [`DEFAULT_DATA_OFFSET_BYTES`] on
//! every member; the first 4 KiB of each member hold its [`Superblock`]. The superblocks are
//! rewritten, with `events` bumped, whenever the array's state changes (assembled, member
//! faulty, removed, added, rebuilt) and once more, marked clean, when the array is deleted or
//! the target shuts down. Writes are blocking I/O on the first reactor, so they run on the
//! control thread, or on a short-lived helper thread when the change happens on a reactor.
//!
//! [`examine_all`] reads the first 4 KiB of every bdev it has not looked at yet, keeps the
//! superblocks that parse, and assembles each array whose members suffice
//! ([`crate::superblock::assemble`]). Members that missed updates are kicked; as md does,
//! one whose slot the array recorded as missing (it was away, or removed) or as rebuilding
//! rejoins its slot by itself and is rebuilt, only where it missed writes when the bitmap
//! knows them — at assembly or when it appears next to the running array. A member the array
//! recorded as faulty stays out (listed under `stale_base_bdevs` in `bdev_raid_get_bdevs`)
//! until `bdev_raid_add_base_bdev` brings it back. Refusals are logged with their reason and
//! can be queried with [`refusal`].
//!
//! While a rebuild runs, its target's superblock records how far it got (md's
//! `recovery_offset`, in member blocks past the data offset), rewritten every few seconds
//! and every 1/16 of the member at most ([`CheckpointPacer`]), after a flush of the target.
//! Every write reaches a rebuilding member wherever the rebuild is, so the blocks below
//! stay current. A member assembly finds rebuilding at the array's last events resumes
//! there; after an unclean shutdown it also gets the bitmap's dirty regions below the
//! checkpoint again, since the resync leaves a rebuilding member alone.
//!
//! Hot spares of a superblock array are entries of the member table too (after the slots,
//! role spare), and each spare gets a superblock of its own naming it so. At assembly a
//! spare of the array rejoins as a hot spare, never as an active member; one that appears
//! after the array started joins the running array the same way (md's incremental
//! assembly). A spare keeps its member uuid when it takes a slot; removing a spare drops it
//! from the table and zeroes its superblock.
//!
//! raid1/raid10/raid5/raid6 arrays keep a write-intent bitmap after the superblock
//! ([`crate::intent`]): after an unclean shutdown a raid1 or raid10 resyncs only its dirty
//! regions at assembly (raid5/raid6 rewrite those regions' stripes, recomputing parity), and
//! a raid1 or raid10 member that comes back is rebuilt only where it missed writes. Not done
//! yet: slots that are missing at assembly stay missing (add a member with
//! `bdev_raid_add_base_bdev`).

use crate::bdev::{self, ArraySpec, RaidLevel, RaidShared};
use crate::superblock::{
    assemble, group_by_array, MemberClass, MemberEntry, MemberState, Readiness, Superblock,
    DEFAULT_DATA_OFFSET_BYTES, NAME_LEN, OFFSET_DONE, SUPERBLOCK_LEN,
};
use oxstor_bdev::registry::{self, BdevEntry};
use oxstor_bdev::{BdevError, Geometry, IoType};
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use crate::bitmap::WriteIntent;
use crate::intent::{self, ArrayIntent, Copied};
use crate::superblock::{BitmapLocation, DEFAULT_BITMAP_OFFSET_BYTES};

/// Levels whose superblock arrays keep a write-intent bitmap.
const BITMAP_LEVELS: [RaidLevel; 4] = [
    RaidLevel::Raid1,
    RaidLevel::Raid10,
    RaidLevel::Raid5,
    RaidLevel::Raid6,
];

/// Test hook: teardown skips the clean superblock and final bitmap writes, as a crash would.
static UNCLEAN_TEARDOWN: AtomicBool = AtomicBool::new(false);

/// For tests: make array teardown leave the superblocks dirty (simulates a crash).
pub fn set_unclean_teardown(on: bool) {
    UNCLEAN_TEARDOWN.store(on, Ordering::SeqCst);
}

/// Most slots a superblock array may have (the member table and the layout's limit).
pub const MAX_SUPERBLOCK_MEMBERS: usize = crate::layout::MAX_MEMBERS;

/// How long a superblock read or write may take before we give up on it.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Superblock state of one array, shared by the array and the control path.
pub struct ArrayPersist {
    /// Start of array data on each member, in bytes.
    data_offset_bytes: u64,
    /// Data area per member from the superblocks (assembly); None: what the members hold.
    member_cap: Option<u64>,
    /// Assembled degraded: the size of the slots that have no member.
    missing_blocks: Option<u64>,
    meta: Mutex<Meta>,
    /// The write-intent bitmap, once the array runs ([`crate::intent`]).
    intent: OnceLock<Arc<ArrayIntent>>,
    /// Bitmap loaded (and resynced) at assembly, for the array to take when it goes online.
    loaded_bitmap: Mutex<Option<WriteIntent>>,
    /// What the resync after an unclean shutdown copied.
    last_resync: Mutex<Option<Copied>>,
    /// The running rebuild's last checkpoint: (slot, member blocks current below).
    checkpoint: Mutex<Option<(usize, u64)>>,
    /// Set at assembly for a member whose rebuild was interrupted, taken when it rejoins.
    resume: Mutex<Option<Resume>>,
}

/// Where an interrupted rebuild picks up again (md's `recovery_offset`).
pub(crate) struct Resume {
    slot: usize,
    base: String,
    /// Member blocks below this were current when the array went down.
    pub from: u64,
    /// Array blocks of the bitmap regions dirty after an unclean shutdown: writes in flight
    /// there may have missed the member below `from` too (resync never touches it).
    pub redo: Vec<std::ops::Range<u64>>,
}

struct Meta {
    array_uuid: [u8; 16],
    events: u64,
    /// Per slot: the member uuid written to the superblocks and the registry entry it
    /// belongs to (a new bdev in the slot gets a new uuid).
    member_uuids: Vec<Option<([u8; 16], u64)>>,
    /// Hot spares listed after the slots: member uuid and registry entry id. A spare keeps
    /// its uuid when it later takes a slot.
    spare_uuids: Vec<([u8; 16], u64)>,
    /// Members found at assembly but not trusted, with the reason.
    stale: Vec<(String, String)>,
    /// Clean superblocks written (or cleared): nothing more may be written.
    closed: bool,
}

impl ArrayPersist {
    fn new(array_uuid: [u8; 16], events: u64) -> ArrayPersist {
        ArrayPersist {
            data_offset_bytes: DEFAULT_DATA_OFFSET_BYTES,
            member_cap: None,
            missing_blocks: None,
            meta: Mutex::new(Meta {
                array_uuid,
                events,
                member_uuids: Vec::new(),
                spare_uuids: Vec::new(),
                stale: Vec::new(),
                closed: false,
            }),
            intent: OnceLock::new(),
            loaded_bitmap: Mutex::new(None),
            last_resync: Mutex::new(None),
            checkpoint: Mutex::new(None),
            resume: Mutex::new(None),
        }
    }

    /// The write-intent bitmap (raid1/raid10 superblock arrays, once online).
    pub fn intent(&self) -> Option<&Arc<ArrayIntent>> {
        self.intent.get()
    }

    /// What the resync after the last unclean shutdown copied.
    pub fn last_resync(&self) -> Option<Copied> {
        *self.last_resync.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The array goes online with `array_blocks`: sets up its bitmap (the one loaded at
    /// assembly, or a fresh clean one). Levels without bitmap support get none.
    pub(crate) fn attach_intent(
        &self,
        level: RaidLevel,
        array_id: u64,
        array_blocks: u64,
        block_size: u32,
        degraded: bool,
    ) {
        if !BITMAP_LEVELS.contains(&level) || self.intent.get().is_some() {
            return;
        }
        let loaded = self
            .loaded_bitmap
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let room = self
            .data_offset_bytes
            .saturating_sub(DEFAULT_BITMAP_OFFSET_BYTES);
        let wi = match loaded {
            Some(wi) => wi,
            None => {
                let chunk = intent::choose_chunk_blocks(array_blocks, block_size, room);
                match WriteIntent::new(array_blocks, chunk) {
                    Ok(wi) => wi,
                    Err(e) => {
                        tracing::warn!("raid array {array_id}: no bitmap: {e}");
                        return;
                    }
                }
            }
        };
        if wi.image_len() as u64 > room {
            tracing::warn!("raid array {array_id}: bitmap does not fit before the data; none kept");
            return;
        }
        let ai = ArrayIntent::new(
            wi,
            array_id,
            array_blocks,
            block_size,
            DEFAULT_BITMAP_OFFSET_BYTES,
        );
        ai.set_degraded(degraded);
        if self.intent.set(ai.clone()).is_ok() {
            ai.start();
        }
    }

    pub(crate) fn array_uuid(&self) -> [u8; 16] {
        self.meta().array_uuid
    }

    pub(crate) fn member_uuid(&self, slot: usize) -> Option<[u8; 16]> {
        self.meta()
            .member_uuids
            .get(slot)
            .copied()
            .flatten()
            .map(|(u, _)| u)
    }

    fn meta(&self) -> MutexGuard<'_, Meta> {
        self.meta.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Blocks of data area a member of geometry `g` offers.
    pub(crate) fn member_data_blocks(&self, g: Geometry) -> Result<u64, BdevError> {
        let offset = self.data_offset_blocks(g.block_size);
        let blocks = g
            .num_blocks
            .checked_sub(offset)
            .filter(|&b| b > 0)
            .ok_or_else(|| {
                BdevError::Invalid(format!(
                    "a member of {} blocks has no room after the {}-byte superblock area",
                    g.num_blocks, self.data_offset_bytes
                ))
            })?;
        Ok(self.member_cap.map_or(blocks, |cap| blocks.min(cap)))
    }

    pub(crate) fn data_offset_blocks(&self, block_size: u32) -> u64 {
        self.data_offset_bytes / u64::from(block_size.max(1))
    }

    pub(crate) fn missing_member_blocks(&self) -> Option<u64> {
        self.missing_blocks
    }

    /// The events count last written.
    pub fn events(&self) -> u64 {
        self.meta().events
    }

    /// Members left out at assembly: (bdev name, reason).
    pub fn stale_members(&self) -> Vec<(String, String)> {
        self.meta().stale.clone()
    }
}

/// What the array looks like now, for writing superblocks (see `RaidShared::snapshot`).
pub(crate) struct Snapshot {
    pub name: String,
    pub level: RaidLevel,
    pub strip_kb: u32,
    pub block_size: u32,
    pub data_offset: u64,
    pub data_blocks: Vec<u64>,
    pub array_blocks: u64,
    pub members: Vec<(Option<Arc<BdevEntry>>, MemberState)>,
    /// Hot spares, in the order they will be used.
    pub spares: Vec<Arc<BdevEntry>>,
    pub rebuild_target: Option<usize>,
}

/// For `bdev_raid_create` with `superblock: true`: checks what a superblock can describe and
/// returns the state to hand to the new array.
pub(crate) fn for_create(
    name: &str,
    uuid: &str,
    members: usize,
) -> Result<Arc<ArrayPersist>, BdevError> {
    if name.len() > NAME_LEN {
        return Err(BdevError::Invalid(format!(
            "a superblock array name is at most {NAME_LEN} bytes"
        )));
    }
    if members > MAX_SUPERBLOCK_MEMBERS {
        return Err(BdevError::Invalid(format!(
            "a superblock array has at most {MAX_SUPERBLOCK_MEMBERS} members"
        )));
    }
    let array_uuid = uuid_bytes(uuid)
        .ok_or_else(|| BdevError::Invalid(format!("uuid {uuid} is not a valid UUID")))?;
    Ok(Arc::new(ArrayPersist::new(array_uuid, 0)))
}

fn uuid_bytes(text: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = text.bytes().filter(|&b| b != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

fn uuid_string(b: &[u8; 16]) -> String {
    let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

fn new_member_uuid() -> [u8; 16] {
    uuid_bytes(&oxstor_bdev::new_uuid()).unwrap_or([0x5a; 16])
}

// ---------------------------------------------------------------------------------------
// Blocking member I/O (control path only).
// ---------------------------------------------------------------------------------------

type IoAnswer = Result<Vec<u8>, String>;

/// Reads (data None) or writes `blocks` blocks at `offset` of `entry` on the first reactor
/// and waits. Refuses on a reactor thread, where waiting would stall (or deadlock) it.
fn blocking_io(
    entry: &Arc<BdevEntry>,
    offset: u64,
    blocks: u64,
    data: Option<Vec<u8>>,
) -> IoAnswer {
    let io_type = if data.is_some() {
        IoType::Write
    } else {
        IoType::Read
    };
    // A short image is written as the start of a zeroed whole-block buffer.
    let data = data.map(|mut d| {
        let bs = entry.bdev.geometry().block_size as usize;
        d.resize(blocks as usize * bs, 0);
        d
    });
    match oxstor_bdev::blocking::io(
        0,
        entry,
        io_type,
        offset,
        blocks,
        data.as_deref(),
        IO_TIMEOUT,
    ) {
        Ok((status, bytes)) if status.is_success() => Ok(bytes),
        Ok((status, _)) => Err(format!("{status:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Blocking member I/O for the bitmap code (control path and helper threads only).
pub(crate) fn member_io(
    entry: &Arc<BdevEntry>,
    offset: u64,
    blocks: u64,
    data: Option<Vec<u8>>,
) -> IoAnswer {
    blocking_io(entry, offset, blocks, data)
}

/// Blocks covering the superblock on a bdev of `block_size`.
fn sb_blocks(block_size: u32) -> u64 {
    (SUPERBLOCK_LEN as u64).div_ceil(u64::from(block_size.max(1)))
}

fn write_sb(entry: &Arc<BdevEntry>, bytes: &[u8; SUPERBLOCK_LEN]) -> Result<(), String> {
    let blocks = sb_blocks(entry.bdev.geometry().block_size);
    blocking_io(entry, 0, blocks, Some(bytes.to_vec())).map(|_| ())
}

// ---------------------------------------------------------------------------------------
// Writing superblocks.
// ---------------------------------------------------------------------------------------

/// Rewrites every in-service member's superblock with `events` bumped (dirty: the array
/// runs). Call on the control thread after a state change; errors are per member and logged.
pub(crate) fn sync(shared: &RaidShared) -> Result<(), String> {
    write_all(shared, false)
}

fn write_all(shared: &RaidShared, clean: bool) -> Result<(), String> {
    let Some(p) = shared.persist() else {
        return Ok(());
    };
    // Holding the lock across the writes keeps concurrent updates in events order.
    let mut meta = p.meta();
    if meta.closed || shared.is_deleted() {
        return Ok(());
    }
    let Some(snap) = shared.snapshot() else {
        return Ok(()); // not assembled yet: no geometry to describe
    };
    meta.member_uuids.resize(snap.members.len(), None);
    for (slot, (entry, _)) in snap.members.iter().enumerate() {
        if let Some(e) = entry {
            let known = meta.member_uuids[slot].is_some_and(|(_, id)| id == e.id());
            if !known {
                // A spare that took the slot stays the device the table knew.
                let uuid = meta
                    .spare_uuids
                    .iter()
                    .find(|(_, id)| *id == e.id())
                    .map_or_else(new_member_uuid, |(u, _)| *u);
                meta.member_uuids[slot] = Some((uuid, e.id()));
            }
        }
        if meta.member_uuids[slot].is_none() {
            // A slot that never had a member still needs a distinct uuid in the table.
            meta.member_uuids[slot] = Some((new_member_uuid(), 0));
        }
    }
    let spare_uuids: Vec<([u8; 16], u64)> = snap
        .spares
        .iter()
        .map(|e| {
            let known = meta.spare_uuids.iter().find(|(_, id)| *id == e.id());
            (known.map_or_else(new_member_uuid, |(u, _)| *u), e.id())
        })
        .collect();
    meta.spare_uuids = spare_uuids;
    meta.events += 1;
    // By name, so every level the bdev gains maps without a table to keep in step here.
    let level: crate::layout::RaidLevel = snap
        .level
        .name()
        .parse()
        .map_err(|_| "level has no superblock encoding")?;
    let strip_blocks = match u64::from(snap.strip_kb) * 1024 / u64::from(snap.block_size) {
        0 => 1,
        s => s,
    };
    let base = Superblock {
        array_uuid: meta.array_uuid,
        name: snap.name.clone(),
        level,
        strip_blocks: u32::try_from(strip_blocks).map_err(|_| "strip too large")?,
        block_size: snap.block_size,
        member_count: snap.members.len() as u32,
        array_blocks: snap.array_blocks,
        events: meta.events,
        resync_offset: OFFSET_DONE,
        recovery_offset: OFFSET_DONE,
        members: snap
            .members
            .iter()
            .enumerate()
            .map(|(slot, (_, state))| MemberEntry {
                slot: Some(slot as u32),
                state: *state,
                uuid: meta.member_uuids[slot].map_or([0; 16], |(u, _)| u),
                data_offset_blocks: snap.data_offset,
                data_size_blocks: snap.data_blocks[slot],
            })
            .chain(
                snap.spares
                    .iter()
                    .zip(&meta.spare_uuids)
                    .map(|(entry, (uuid, _))| MemberEntry {
                        slot: None,
                        state: MemberState::Spare,
                        uuid: *uuid,
                        data_offset_blocks: snap.data_offset,
                        data_size_blocks: p
                            .member_data_blocks(entry.bdev.geometry())
                            .unwrap_or_else(|_| {
                                snap.data_blocks.iter().copied().max().unwrap_or(0)
                            }),
                    }),
            )
            .collect(),
        own_entry: 0,
        bitmap: p.intent().map(|i| BitmapLocation {
            offset_bytes: i.offset_bytes(),
            chunk_blocks: i.chunk_blocks(),
        }),
        clean,
        update_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    let mut first_error = None;
    // Spares follow the slots in the table, so a spare's own entry is its index there.
    let spares = snap
        .spares
        .iter()
        .enumerate()
        .map(|(i, e)| (snap.members.len() + i, Some(e), MemberState::Spare));
    let slots = snap
        .members
        .iter()
        .enumerate()
        .map(|(slot, (e, state))| (slot, e.as_ref(), *state));
    for (own_entry, entry, state) in slots.chain(spares) {
        let Some(entry) = entry else { continue };
        if !matches!(
            state,
            MemberState::Active | MemberState::Rebuilding | MemberState::Spare
        ) {
            continue; // a failed member is not written to (it may not even answer)
        }
        let mut sb = base.clone();
        sb.own_entry = own_entry as u32;
        if snap.rebuild_target == Some(own_entry) {
            let size = snap.data_blocks.get(own_entry).copied().unwrap_or(0);
            sb.recovery_offset = durable_checkpoint(p, entry, own_entry, size);
        }
        let mut bytes = [0u8; SUPERBLOCK_LEN];
        let result = sb
            .encode(&mut bytes)
            .map_err(|e| e.to_string())
            .and_then(|()| write_sb(entry, &bytes));
        if let Err(e) = result {
            tracing::error!(
                "raid {}: cannot write the superblock of {}: {e}",
                snap.name,
                entry.name()
            );
            first_error.get_or_insert(format!("{}: {e}", entry.name()));
        }
    }
    if clean {
        meta.closed = true;
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// What the superblock of rebuild target `slot` may claim is current on it: the rebuild's
/// last checkpoint once a flush made the copied blocks durable; 0 (rebuild it all) otherwise.
fn durable_checkpoint(p: &ArrayPersist, target: &Arc<BdevEntry>, slot: usize, size: u64) -> u64 {
    let claimed = match *lock(&p.checkpoint) {
        Some((s, done)) if s == slot => done.min(size),
        _ => return 0,
    };
    // Claimed before the flush: every block below it was written before the flush began.
    // Without the flush a volatile cache could lose copied blocks the checkpoint vouches for.
    if claimed > 0 && target.bdev.io_type_supported(IoType::Flush) {
        let flushed = oxstor_bdev::blocking::io(0, target, IoType::Flush, 0, 0, None, IO_TIMEOUT);
        if !matches!(flushed, Ok((status, _)) if status.is_success()) {
            tracing::warn!(
                "raid: flush of rebuild target {} failed: no checkpoint recorded",
                target.name()
            );
            return 0;
        }
    }
    claimed
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Test hook: the least time between two rebuild checkpoints (default 5 s).
static CHECKPOINT_MS: AtomicU64 = AtomicU64::new(5000);

/// For tests: how long a rebuild runs at least between two checkpoints.
pub fn set_checkpoint_period(period: Duration) {
    CHECKPOINT_MS.store(period.as_millis().max(1) as u64, Ordering::Relaxed);
}

/// Paces a running rebuild's checkpoints, as md does with `recovery_offset`: one each time
/// both [`set_checkpoint_period`] has passed and another 1/16 of the member is rebuilt, so
/// superblock writes stay rare on large members and on slow rebuilds alike. Lives on the
/// rebuild's reactor: no locks until a checkpoint is due.
pub(crate) struct CheckpointPacer {
    last_ns: Cell<u64>,
    last_done: Cell<u64>,
    step: u64,
}

impl CheckpointPacer {
    /// For a rebuild of a member of `total` blocks that starts with `from` current.
    pub(crate) fn new(from: u64, total: u64) -> CheckpointPacer {
        CheckpointPacer {
            last_ns: Cell::new(oxstor_reactor::clock::now_ns()),
            last_done: Cell::new(from),
            step: (total / 16).max(1),
        }
    }

    /// The rebuild of `slot` has member blocks `0..done` current (and kept current by every
    /// write): record that in the superblocks if a checkpoint is due. Called on a reactor.
    pub(crate) fn note(&self, shared: &RaidShared, slot: usize, done: u64) {
        let Some(p) = shared.persist() else { return };
        if done < self.last_done.get().saturating_add(self.step) {
            return;
        }
        let now = oxstor_reactor::clock::now_ns();
        let period_ns = CHECKPOINT_MS
            .load(Ordering::Relaxed)
            .saturating_mul(1_000_000);
        if now.saturating_sub(self.last_ns.get()) < period_ns {
            return;
        }
        self.last_ns.set(now);
        self.last_done.set(done);
        *lock(&p.checkpoint) = Some((slot, done));
        changed(shared);
    }
}

/// A rebuild of `slot` by `base` begins (control path): forgets the previous rebuild's
/// checkpoint and returns where this one resumes, if `base` is the member assembly found
/// with an interrupted rebuild of that slot.
pub(crate) fn rebuild_begins(shared: &RaidShared, slot: usize, base: &str) -> Option<Resume> {
    let p = shared.persist()?;
    let resume = lock(&p.resume)
        .take()
        .filter(|r| r.slot == slot && r.base == base);
    // Before the slot turns REBUILDING, so no superblock of this rebuild claims what the
    // previous one copied. A clean restart left nothing in flight: the old checkpoint
    // still holds until this rebuild records a newer one.
    *lock(&p.checkpoint) = resume
        .as_ref()
        .filter(|r| r.redo.is_empty())
        .map(|r| (slot, r.from));
    resume
}

/// The array's state changed (maybe on a reactor): rewrite its superblocks. On a reactor
/// the blocking writes move to a helper thread.
pub(crate) fn changed(shared: &RaidShared) {
    if shared.persist().is_none() {
        return;
    }
    let id = shared.id();
    let job = move || {
        if let Some(r) = bdev::list().into_iter().find(|r| r.id() == id) {
            let _ = sync(&r);
        }
    };
    // Always on a helper thread: on a reactor we must not wait for I/O, and elsewhere the
    // caller may hold array locks. A thread costs little for an event this rare.
    let _ = std::thread::Builder::new()
        .name("raid-superblock".into())
        .spawn(job);
}

/// The array is being destroyed (delete or shutdown): mark the superblocks clean.
pub(crate) fn on_teardown(shared: &RaidShared) {
    let unclean = UNCLEAN_TEARDOWN.load(Ordering::SeqCst);
    if let Some(i) = shared.persist().and_then(|p| p.intent()) {
        i.close(!unclean);
    }
    if unclean {
        if let Some(p) = shared.persist() {
            p.meta().closed = true;
        }
        tracing::warn!("raid {}: unclean teardown (test hook)", shared.name());
        return;
    }
    if let Err(e) = write_all(shared, true) {
        tracing::warn!(
            "raid {}: superblocks not all marked clean: {e}",
            shared.name()
        );
    }
}

/// `bdev_raid_delete` with `clear_sb`: zeroes the members' superblocks first, so the array
/// is never assembled again.
pub(crate) fn clear(shared: &RaidShared) {
    let Some(p) = shared.persist() else { return };
    let mut meta = p.meta();
    meta.closed = true;
    if let Some(snap) = shared.snapshot() {
        let members = snap.members.into_iter().filter_map(|(e, _)| e);
        for entry in members.chain(snap.spares) {
            if let Err(e) = write_sb(&entry, &[0u8; SUPERBLOCK_LEN]) {
                tracing::warn!("raid {}: cannot clear {}: {e}", snap.name, entry.name());
            }
        }
    }
}

/// `bdev_raid_remove_base_bdev` of a hot spare: drops it from the member table, then zeroes
/// its own superblock so that, released, it is no longer taken for a spare of the array.
pub(crate) fn remove_spare(shared: &RaidShared, base: &str) -> Result<(), BdevError> {
    let guard = shared
        .take_spare(base)
        .ok_or_else(|| BdevError::NotFound(format!("{base} (not a spare of {})", shared.name())))?;
    if shared.persist().is_some() {
        if let Err(e) = sync(shared) {
            tracing::warn!(
                "raid {}: superblock update without {base}: {e}",
                shared.name()
            );
        }
        if let Err(e) = write_sb(guard.entry(), &[0u8; SUPERBLOCK_LEN]) {
            tracing::warn!(
                "raid {}: cannot clear the superblock of {base}: {e}",
                shared.name()
            );
        }
    }
    drop(guard);
    Ok(())
}

/// A device whose superblock makes it a spare of `raid` joins it as a hot spare, keeping
/// the member uuid the table knows it by.
/// Whether the member of `slot` may rejoin by itself: the array last ran without it
/// (missing) or while rebuilding it. A member the array marked faulty stays out until
/// `bdev_raid_add_base_bdev` brings it back.
fn may_return(truth: &Superblock, slot: u32) -> bool {
    truth
        .members
        .get(slot as usize)
        .is_some_and(|m| matches!(m.state, MemberState::Missing | MemberState::Rebuilding))
}

/// md's re-add of a stale member: back into its slot and rebuilt, only where it missed
/// writes when the bitmap allows (an unfinished rebuild resumes from its checkpoint when
/// assembly left a [`Resume`] for it, and starts over otherwise).
fn readd_stale(raid: &Arc<RaidShared>, name: &str) -> Result<(), String> {
    note_returning(raid, name);
    raid.add_member(name, false)
        .map_err(|e| format!("stale member; rejoining raid {} failed: {e}", raid.name()))?;
    tracing::info!(
        "raid {}: stale member {name} rejoins and is rebuilt",
        raid.name()
    );
    let _ = sync(raid);
    Ok(())
}

fn adopt_spare(
    raid: &Arc<RaidShared>,
    name: &str,
    entry_id: u64,
    sb: &Superblock,
) -> Result<(), String> {
    let (Some(p), Some(own)) = (raid.persist(), sb.own()) else {
        return Err("not a spare of a superblock array".into());
    };
    p.meta().spare_uuids.push((own.uuid, entry_id));
    raid.add_member(name, true).map_err(|e| {
        p.meta().spare_uuids.retain(|(_, id)| *id != entry_id);
        format!("cannot rejoin raid {} as a spare: {e}", raid.name())
    })?;
    tracing::info!("raid {}: {name} rejoins as a spare", raid.name());
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Examine and assembly.
// ---------------------------------------------------------------------------------------

struct Examined {
    /// Registry entries already read (examine once per registration, as SPDK does).
    seen: HashMap<u64, ()>,
    /// Parsed superblocks of unclaimed bdevs: (entry id, name, superblock).
    candidates: Vec<(u64, String, Superblock)>,
    /// Why a bdev was not used, by name.
    refusals: HashMap<String, String>,
}

static EXAMINED: Mutex<Option<Examined>> = Mutex::new(None);

fn refuse(ex: &mut Examined, name: &str, reason: String, quiet: bool) {
    if quiet {
        tracing::debug!("examine {name}: {reason}");
    } else {
        tracing::warn!("examine {name}: not assembled: {reason}");
    }
    ex.refusals.insert(name.to_string(), reason);
}

/// Why examine did not use bdev `name` (no superblock, bad crc, stale member, ...).
pub fn refusal(name: &str) -> Option<String> {
    EXAMINED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .and_then(|ex| ex.refusals.get(name).cloned())
}

/// Reads one bdev's superblock. Err is the reason it has none we can use.
pub fn read_superblock(name: &str) -> Result<Superblock, String> {
    let entry = registry::lookup(name).map_err(|e| e.to_string())?;
    read_entry(&entry)
}

fn read_entry(entry: &Arc<BdevEntry>) -> Result<Superblock, String> {
    let g = entry.bdev.geometry();
    let blocks = sb_blocks(g.block_size);
    if g.num_blocks < blocks {
        return Err("smaller than a superblock".into());
    }
    let bytes = blocking_io(entry, 0, blocks, None)?;
    Superblock::parse(&bytes).map_err(|e| e.to_string())
}

/// SPDK's examine for superblocks: reads every bdev registered since the last call that no
/// module has claimed, and assembles the arrays whose members suffice. Call it on the
/// control thread after each bdev-creating RPC and after loading a config.
pub fn examine_all() {
    if oxstor_reactor::is_reactor_thread() {
        tracing::error!("raid examine_all called on a reactor thread; skipped");
        return;
    }
    let mut guard = EXAMINED.lock().unwrap_or_else(|p| p.into_inner());
    let ex = guard.get_or_insert_with(|| Examined {
        seen: HashMap::new(),
        candidates: Vec::new(),
        refusals: HashMap::new(),
    });
    let live = registry::list();
    for entry in &live {
        if ex.seen.insert(entry.id(), ()).is_some() {
            continue;
        }
        let name = entry.name().to_string();
        // Our own arrays, claimed bdevs and members a configuring array waits for are not
        // ours to examine.
        if entry.bdev.module() == "raid"
            || entry.claimed_by().is_some()
            || bdev::find_member(&name).is_ok()
        {
            continue;
        }
        match read_entry(entry) {
            Ok(sb) => {
                if sb.block_size != entry.bdev.geometry().block_size {
                    let reason = format!(
                        "superblock says {}-byte blocks, the bdev has {}",
                        sb.block_size,
                        entry.bdev.geometry().block_size
                    );
                    refuse(ex, &name, reason, false);
                    continue;
                }
                tracing::info!(
                    "examine {name}: member of raid {} (events {})",
                    sb.name,
                    sb.events
                );
                ex.candidates.push((entry.id(), name, sb));
            }
            Err(reason) => {
                let quiet = reason.starts_with("no oxstor RAID superblock");
                refuse(ex, &name, reason, quiet);
            }
        }
    }
    // Forget candidates that went away or were claimed by something else meanwhile.
    ex.candidates.retain(|(id, _, _)| {
        live.iter()
            .any(|e| e.id() == *id && e.claimed_by().is_none())
    });
    let sbs: Vec<Superblock> = ex.candidates.iter().map(|(_, _, sb)| sb.clone()).collect();
    let mut used = Vec::new();
    for (uuid, indices) in group_by_array(&sbs) {
        let group: Vec<(u64, String, Superblock)> =
            indices.iter().map(|&i| ex.candidates[i].clone()).collect();
        if let Some(done) = assemble_group(ex, uuid, &group) {
            used.extend(done);
        }
    }
    ex.candidates.retain(|(id, _, _)| !used.contains(id));
}

/// Tries to start the array `uuid` from `group`; returns the entry ids it consumed.
fn assemble_group(
    ex: &mut Examined,
    uuid: [u8; 16],
    group: &[(u64, String, Superblock)],
) -> Option<Vec<u64>> {
    let sbs: Vec<Superblock> = group.iter().map(|(_, _, sb)| sb.clone()).collect();
    let uuid_text = uuid_string(&uuid);
    if let Some(running) = bdev::list().into_iter().find(|r| r.uuid_str() == uuid_text) {
        for (id, name, sb) in group {
            // A spare that shows up after its array started (md's incremental assembly
            // adds those too): nothing it holds is array data, so it cannot be stale.
            let spare = sb.own().is_some_and(|m| m.state == MemberState::Spare);
            if spare && running.persist().is_some() {
                match adopt_spare(&running, name, *id, sb) {
                    Ok(()) => {
                        ex.refusals.remove(name);
                    }
                    Err(reason) => refuse(ex, name, reason, false),
                }
                let _ = sync(&running);
                continue;
            }
            let slot = sb.own_entry as usize;
            if running.slot_awaits_member(slot) {
                match readd_stale(&running, name) {
                    Ok(()) => {
                        ex.refusals.remove(name);
                        continue;
                    }
                    Err(reason) => refuse(ex, name, reason, false),
                }
                continue;
            }
            let reason = format!(
                "raid {} (uuid {uuid_text}) is already running without it: a stale member",
                running.name()
            );
            refuse(ex, name, reason, false);
        }
        return Some(group.iter().map(|(id, _, _)| *id).collect());
    }
    let assembly = match assemble(&sbs, Some(uuid)) {
        Ok(a) => a,
        Err(e) => {
            for (_, name, _) in group {
                refuse(ex, name, e.to_string(), false);
            }
            return None;
        }
    };
    let truth = &sbs[assembly.authoritative];
    if let Ok(other) = bdev::find(&truth.name) {
        for (_, name, _) in group {
            let reason = format!(
                "array name {} is taken by raid {} with uuid {} (superblock uuid {uuid_text}): mixed arrays",
                truth.name,
                other.name(),
                other.uuid_str()
            );
            refuse(ex, name, reason, false);
        }
        return None;
    }
    let forced = matches!(assembly.readiness, Readiness::DirtyDegraded { .. })
        && crate::rebuild::start_dirty_degraded();
    if forced {
        tracing::warn!(
            "raid {}: starting dirty and degraded (start_dirty_degraded): blocks of stripes \
             torn by the crash may reconstruct wrong",
            truth.name
        );
    } else if !assembly.readiness.can_run() {
        tracing::info!(
            "raid {}: found {} member(s), cannot start yet: {:?}",
            truth.name,
            group.len(),
            assembly.readiness
        );
        return None;
    }
    // As SPDK does, wait for every member the array last ran with: starting degraded as
    // soon as one mirror copy shows up would turn its partners, arriving a moment later,
    // stale. A slot may stay empty only if the array already knew it gone, or if its member
    // is here but stale.
    let awaited = (0..truth.member_count as usize).any(|slot| {
        let known_gone = truth
            .members
            .get(slot)
            .is_some_and(|m| matches!(m.state, MemberState::Faulty | MemberState::Missing));
        let stale_here = assembly.classes.iter().any(|c| match c {
            MemberClass::Stale { slot: s, .. } | MemberClass::Rebuilding { slot: s, .. } => {
                *s as usize == slot
            }
            _ => false,
        });
        assembly.slots[slot].is_none() && !known_gone && !stale_here
    });
    // Forcing a dirty degraded start means not waiting for the member that is missing.
    if awaited && !forced {
        tracing::info!(
            "raid {}: waiting for the rest of its members ({} found)",
            truth.name,
            group.len()
        );
        return None;
    }
    let level = match RaidLevel::parse(truth.level.name()) {
        Ok(l) => l,
        Err(e) => {
            for (_, name, _) in group {
                refuse(ex, name, e.to_string(), false);
            }
            return None;
        }
    };
    let mut base_bdevs = vec![String::new(); truth.member_count as usize];
    let mut stale = Vec::new();
    let mut spares = Vec::new();
    let mut returning = Vec::new();
    for (index, class) in assembly.classes.iter().enumerate() {
        let name = &group[index].1;
        match class {
            MemberClass::Current { slot } => base_bdevs[*slot as usize] = name.clone(),
            MemberClass::Spare => spares.push(index),
            MemberClass::Stale { slot, .. } | MemberClass::Rebuilding { slot, .. }
                if level.is_redundant() && may_return(truth, *slot) =>
            {
                returning.push(name.clone());
            }
            other => {
                let reason = match other {
                    MemberClass::Stale { events, .. } => format!(
                        "stale member: events {events}, the array is at {}",
                        assembly.events
                    ),
                    MemberClass::Rebuilding { .. } => "its rebuild did not finish".into(),
                    MemberClass::Foreign => "the array's member table no longer lists it".into(),
                    MemberClass::Duplicate => "same member seen twice".into(),
                    MemberClass::Current { .. } | MemberClass::Spare => continue,
                };
                refuse(ex, name, reason.clone(), false);
                stale.push((name.clone(), reason));
            }
        }
    }
    let bs = truth.block_size;
    let strip_bytes = u64::from(truth.strip_blocks) * u64::from(bs);
    let strip_kb = if level == RaidLevel::Raid1 || strip_bytes < 1024 {
        0
    } else {
        u32::try_from(strip_bytes / 1024).unwrap_or(0)
    };
    let slots = truth.slots();
    let data_offset = slots.first().map_or(0, |m| m.data_offset_blocks);
    let cap = slots.iter().map(|m| m.data_size_blocks).min().unwrap_or(0);
    let missing = base_bdevs.iter().any(String::is_empty);
    let (loaded_bitmap, last_resync) = assembly_bitmap(truth, level, &base_bdevs, data_offset);
    let resume =
        assembly
            .classes
            .iter()
            .zip(group)
            .find_map(|(class, (_, name, _))| match *class {
                MemberClass::Rebuilding {
                    slot,
                    recovery_offset,
                } if returning.contains(name) => {
                    resume_point(truth, loaded_bitmap.as_ref(), slot, name, recovery_offset)
                }
                _ => None,
            });
    let persist = Arc::new(ArrayPersist {
        data_offset_bytes: data_offset.saturating_mul(u64::from(bs)),
        member_cap: Some(cap),
        missing_blocks: missing.then_some(cap),
        meta: Mutex::new(Meta {
            array_uuid: uuid,
            events: truth.events,
            member_uuids: Vec::new(),
            spare_uuids: Vec::new(),
            stale,
            closed: false,
        }),
        intent: OnceLock::new(),
        loaded_bitmap: Mutex::new(loaded_bitmap),
        last_resync: Mutex::new(last_resync),
        checkpoint: Mutex::new(None),
        resume: Mutex::new(None),
    });
    let spec = ArraySpec {
        name: truth.name.clone(),
        uuid: uuid_text.clone(),
        level,
        strip_kb,
        base_bdevs: base_bdevs.clone(),
        persist: Some(persist.clone()),
    };
    if let Err(e) = bdev::create_array(spec) {
        for (_, name, _) in group {
            refuse(ex, name, format!("assembly failed: {e}"), false);
        }
        return None;
    }
    let Ok(raid) = bdev::find(&truth.name) else {
        return None;
    };
    // Keep the member uuids from the superblocks, so members stay recognisable.
    {
        let mut meta = persist.meta();
        let entries: Vec<Option<u64>> = base_bdevs
            .iter()
            .map(|n| registry::lookup(n).ok().map(|e| e.id()))
            .collect();
        meta.member_uuids = slots
            .iter()
            .zip(entries)
            .map(|(m, id)| Some((m.uuid, id.unwrap_or(0))))
            .collect();
    }
    let blocks = registry::lookup(&truth.name)
        .ok()
        .map(|e| e.bdev.geometry().num_blocks);
    if blocks != Some(truth.array_blocks) {
        let reason = format!(
            "assembled size {blocks:?} blocks differs from the superblock's {}",
            truth.array_blocks
        );
        persist.meta().closed = true; // leave the superblocks as they were
        let _ = bdev::delete_array(&truth.name);
        for (_, name, _) in group {
            refuse(ex, name, reason.clone(), false);
        }
        return None;
    }
    for (_, name, _) in group {
        if base_bdevs.contains(name) {
            ex.refusals.remove(name);
        }
    }
    tracing::info!(
        "raid {}: assembled from superblocks (uuid {uuid_text}, events {})",
        truth.name,
        truth.events
    );
    if !truth.clean && level.parity_members() > 0 {
        resync_parity(&raid, &persist);
    }
    // Members that missed updates come back first, into their own slots (only what they
    // missed is copied when the bitmap knows it); then spares, which may take a slot that
    // is still missing.
    *lock(&persist.resume) = resume;
    for name in &returning {
        if let Err(reason) = readd_stale(&raid, name) {
            refuse(ex, name, reason.clone(), false);
            persist.meta().stale.push((name.clone(), reason));
        }
    }
    // Its rebuild took it when the member rejoined; if it could not rejoin, a member added
    // later must not inherit a checkpoint that vouches for another device.
    lock(&persist.resume).take();
    for &index in &spares {
        let (id, name, sb) = &group[index];
        match adopt_spare(&raid, name, *id, sb) {
            Ok(()) => {
                ex.refusals.remove(name);
            }
            Err(reason) => refuse(ex, name, reason, false),
        }
    }
    if let Err(e) = sync(&raid) {
        tracing::warn!("raid {}: superblock update after assembly: {e}", truth.name);
    }
    Some(group.iter().map(|(id, _, _)| *id).collect())
}

/// Where the interrupted rebuild of `slot` by `name` may resume, from its superblock's
/// `recovery_offset`. After an unclean shutdown the regions the bitmap holds dirty are
/// copied again below it too; without a bitmap nothing tells which those are, so the
/// rebuild starts over.
fn resume_point(
    truth: &Superblock,
    bitmap: Option<&WriteIntent>,
    slot: u32,
    name: &str,
    recovery_offset: u64,
) -> Option<Resume> {
    if recovery_offset == 0 || recovery_offset == OFFSET_DONE {
        return None;
    }
    let redo = match bitmap {
        _ if truth.clean => Vec::new(),
        Some(wi) => wi.dirty_regions().map(|r| wi.region_blocks(r)).collect(),
        None => return None,
    };
    tracing::info!(
        "raid {}: {name} resumes its rebuild at member block {recovery_offset} ({} dirty region(s) to redo below)",
        truth.name,
        redo.len()
    );
    Some(Resume {
        slot: slot as usize,
        base: name.to_string(),
        from: recovery_offset,
        redo,
    })
}

/// Loads the bitmap of an array being assembled and, after an unclean shutdown of a raid1
/// or raid10, resyncs its dirty regions (from the first current member to the others; from
/// copy 0 to copy 1 of each raid10 chunk).
/// Returns the bitmap to run with (None: start a fresh one) and what the resync copied.
fn assembly_bitmap(
    truth: &Superblock,
    level: RaidLevel,
    base_bdevs: &[String],
    data_offset: u64,
) -> (Option<WriteIntent>, Option<Copied>) {
    if !BITMAP_LEVELS.contains(&level) {
        return (None, None);
    }
    let members: Vec<Arc<BdevEntry>> = base_bdevs
        .iter()
        .filter(|n| !n.is_empty())
        .filter_map(|n| registry::lookup(n).ok())
        .collect();
    let bs = truth.block_size;
    let bs64 = u64::from(bs.max(1));
    let mut wi = match (truth.bitmap, members.first()) {
        (Some(loc), Some(first)) => {
            let regions = truth.array_blocks.div_ceil(loc.chunk_blocks.max(1));
            let len = crate::bitmap::image_len(regions) as u64;
            let room = data_offset
                .saturating_mul(bs64)
                .saturating_sub(loc.offset_bytes);
            let read = if len > room || !loc.offset_bytes.is_multiple_of(bs64) {
                Err("bitmap does not fit before the data".to_string())
            } else {
                blocking_io(first, loc.offset_bytes / bs64, len.div_ceil(bs64), None)
                    .and_then(|bytes| intent::load(&bytes, truth.array_blocks, loc.chunk_blocks))
            };
            match read {
                Ok(wi) => Some(wi),
                Err(e) => {
                    tracing::warn!(
                        "raid {}: bitmap not usable ({e}): every region is dirty",
                        truth.name
                    );
                    intent::all_dirty(truth.array_blocks, loc.chunk_blocks)
                }
            }
        }
        _ => None,
    };
    if truth.clean || !level.is_mirror() {
        if !truth.clean && level.parity_members() == 0 {
            tracing::warn!(
                "raid {}: unclean shutdown; no bitmap resync for {} yet",
                truth.name,
                level.name()
            );
        }
        return (wi, None);
    }
    let Some(bitmap) = wi.as_mut() else {
        tracing::warn!(
            "raid {}: unclean shutdown without a bitmap: not resynced",
            truth.name
        );
        return (None, None);
    };
    if members.len() < 2 {
        return (wi, None);
    }
    let resynced = if level == RaidLevel::Raid10 {
        let in_slots: Vec<_> = base_bdevs
            .iter()
            .map(|n| registry::lookup(n).ok())
            .collect();
        truth
            .layout()
            .map_err(|e| e.to_string())
            .and_then(|l| intent::resync_raid10(bitmap, &l, &in_slots, data_offset, bs))
    } else {
        intent::resync_raid1(bitmap, &members, data_offset, bs)
    };
    match resynced {
        Ok(done) => {
            tracing::info!(
                "raid {}: unclean shutdown: resynced {} region(s), {} bytes",
                truth.name,
                done.regions,
                done.bytes
            );
            if members.len() == base_bdevs.len() {
                // Every copy is in sync again; a degraded array keeps its bits for the
                // member that is away.
                let regions = bitmap.regions();
                bitmap.clear_synced(0..regions);
            }
            (wi, Some(done))
        }
        Err(e) => {
            tracing::error!(
                "raid {}: resync after unclean shutdown failed: {e}",
                truth.name
            );
            (wi, None)
        }
    }
}

/// Before `bdev_raid_add_base_bdev` of `base`: if its superblock says it is the member that
/// left one of this array's slots, the rebuild may copy only the regions it missed.
pub(crate) fn note_returning(shared: &RaidShared, base: &str) {
    let (Some(p), Ok(entry)) = (shared.persist(), registry::lookup(base)) else {
        return;
    };
    let Some(intent) = p.intent() else { return };
    let Ok(sb) = read_entry(&entry) else { return };
    let slot = sb.own_entry as usize;
    let own_uuid = sb.members.get(slot).map(|m| m.uuid);
    // A member whose own rebuild never finished (a new copy of a growing raid1, a
    // replacement) holds less than its delta says: it gets a full rebuild.
    let rebuilt = sb.recovery_offset == OFFSET_DONE
        && sb
            .members
            .get(slot)
            .is_some_and(|m| m.state != MemberState::Rebuilding);
    if rebuilt
        && sb.array_uuid == p.array_uuid()
        && own_uuid.is_some()
        && own_uuid == p.member_uuid(slot)
    {
        intent.note_returning(base, slot);
    }
}

/// raid5/raid6 after an unclean shutdown: rewrites the whole stripes under each dirty region
/// through the array itself. The array splits I/O on stripes, so each write is a full-stripe
/// write, whose parity is computed from the data alone. Runs right after assembly on the
/// control thread, before any RPC could hand the new bdev to a user.
fn resync_parity(raid: &RaidShared, persist: &ArrayPersist) {
    let Some(intent) = persist.intent() else {
        tracing::warn!(
            "raid {}: unclean shutdown without a bitmap: parity not resynced",
            raid.name()
        );
        return;
    };
    let Ok(entry) = registry::lookup(raid.name()) else {
        return;
    };
    let g = entry.bdev.geometry();
    let stripe = u64::from(g.optimal_io_boundary).max(1);
    let bs = u64::from(g.block_size.max(1));
    let piece = ((1u64 << 20) / bs / stripe).max(1) * stripe;
    let regions = intent.dirty_region_ranges();
    let mut done = Copied::default();
    for (region, range) in &regions {
        let _ = region;
        let start = range.start / stripe * stripe;
        let end = range
            .end
            .div_ceil(stripe)
            .saturating_mul(stripe)
            .min(g.num_blocks);
        let mut pos = start;
        while pos < end {
            let len = piece.min(end - pos);
            let copied = blocking_io(&entry, pos, len, None)
                .and_then(|data| blocking_io(&entry, pos, len, Some(data)));
            if let Err(e) = copied {
                tracing::error!("raid {}: parity resync at block {pos}: {e}", raid.name());
                return;
            }
            pos += len;
            done.bytes += len * bs;
        }
        done.regions += 1;
    }
    if let Some(first) = regions.first() {
        let last = regions.last().map_or(first.0 + 1, |r| r.0 + 1);
        intent.clear_synced(first.0..last);
    }
    tracing::info!(
        "raid {}: unclean shutdown: parity of {} region(s) resynced ({} bytes)",
        raid.name(),
        done.regions,
        done.bytes
    );
    *persist
        .last_resync
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some(done);
}
