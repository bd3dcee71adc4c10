//! Generation UUIDs: who syncs from whom when two nodes meet (DRBD's `drbd_uuid_compare()`,
//! `drbd_md.md` A5, and the after-sb-0pri split-brain policies, A6), plus the UUID updates
//! around it.
//!
//! [`decide`] is a pure function of both nodes' [`GenView`]s. UUIDs are compared with bit 0
//! (the primary bit) ignored; 0 and [`UUID_JUST_CREATED`] never count as a common ancestor.
//! Rules, first match wins:
//!
//! 0. `DISCARD_MY_DATA` on exactly one side: that side is the target, bitmap-based if the two
//!    are related through a bitmap (equal currents, rules 3 and 5), else full. Ignored when the
//!    other side was just created (it has nothing to give), and when neither data differs
//!    (equal currents, no dirty bits, no crashed primary: [`SyncDecision::NoSync`]).
//! 1. Both just created: no sync. One just created: it is the target, full.
//! 2. Equal currents: no sync if neither side has dirty bits or `CRASHED_PRIMARY`; otherwise
//!    bitmap-based, source = the crashed primary; if both or neither crashed, the side with
//!    `PRIMARY`; if that does not decide either, the lower node id.
//! 3. The peer's bitmap UUID for me is my current: I am the target, bitmap. Mirror: source,
//!    bitmap. (Both at once is contradictory: split brain, unresolved.)
//! 4. My current is in the peer's history or among its bitmap UUIDs: target, full. Mirror:
//!    source, full. (Both at once: split brain, unresolved.)
//! 5. My bitmap UUID for the peer equals the peer's for me: split brain, both changed since
//!    that common generation; auto-resolved by the after-sb-0pri policy ([`AfterSb`]), and a
//!    resolved split brain resyncs bitmap-based (union of both bitmaps).
//! 6. Any other common UUID (currents, bitmaps, histories): split brain, unresolved.
//! 7. Otherwise: unrelated data.
//!
//! Flags such as `CONSISTENT` / `OUTDATED` do not enter the decision; the runtime refuses a
//! source that is not consistent. The result is symmetric: `decide(a, b)` and `decide(b, a)`
//! are mirror images (for distinct node ids).

use std::str::FromStr;

use super::superblock::{meta_flag, Superblock, UUID_JUST_CREATED};
use super::MetaError;

/// `GenView::flags` bits, sent as `Uuids.flags` on the wire.
pub mod gen_flag {
    /// Metadata was just created; never synced.
    pub const JUST_CREATED: u64 = 1;
    /// The node was Primary when it crashed.
    pub const CRASHED_PRIMARY: u64 = 2;
    /// The node is Primary now.
    pub const PRIMARY: u64 = 4;
    /// The local disk is consistent.
    pub const CONSISTENT: u64 = 8;
    /// The local disk is Outdated.
    pub const OUTDATED: u64 = 16;
    /// `discard-my-data` was given on connect.
    pub const DISCARD_MY_DATA: u64 = 32;
    /// The node was Primary when it lost the peer (discard-younger/older-primary).
    pub const PRIMARY_AT_SPLIT: u64 = 64;
}

/// One node's generation state as compared at the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GenView {
    pub node_id: u8,
    pub current: u64,
    /// `(peer node id, bitmap uuid)` for each peer slot in use.
    pub bitmap: Vec<(u8, u64)>,
    /// Newest first.
    pub history: Vec<u64>,
    /// [`gen_flag`] bits.
    pub flags: u64,
    /// Set bits in this node's bitmap for the other side of the comparison.
    pub dirty_blocks: u64,
}

impl GenView {
    /// The local view from the superblock: flags mapped from [`meta_flag`] (`PRIMARY` as
    /// stored: set while Primary), `JUST_CREATED` from the current UUID. The runtime adds
    /// [`gen_flag::DISCARD_MY_DATA`] itself. `dirty_blocks` = the bitmap count for the peer.
    pub fn from_superblock(sb: &Superblock, dirty_blocks: u64) -> GenView {
        let mut flags = 0;
        for (meta, wire) in [
            (meta_flag::CONSISTENT, gen_flag::CONSISTENT),
            (meta_flag::PRIMARY, gen_flag::PRIMARY),
            (meta_flag::OUTDATED, gen_flag::OUTDATED),
            (meta_flag::PRIMARY_AT_SPLIT, gen_flag::PRIMARY_AT_SPLIT),
            (meta_flag::CRASHED_PRIMARY, gen_flag::CRASHED_PRIMARY),
        ] {
            if sb.flags & meta != 0 {
                flags |= wire;
            }
        }
        if sb.is_just_created() {
            flags |= gen_flag::JUST_CREATED;
        }
        GenView {
            node_id: sb.node_id,
            current: sb.current_uuid,
            bitmap: sb
                .peers
                .iter()
                .filter_map(|p| p.node_id.map(|n| (n, p.bitmap_uuid)))
                .collect(),
            history: sb.history.clone(),
            flags,
            dirty_blocks,
        }
    }

    fn has(&self, flag: u64) -> bool {
        self.flags & flag != 0
    }

    fn just_created(&self) -> bool {
        norm(self.current) == UUID_JUST_CREATED || self.has(gen_flag::JUST_CREATED)
    }

    /// This node's bitmap UUID for `node` (0 if none), bit 0 cleared.
    fn bitmap_for(&self, node: u8) -> u64 {
        self.bitmap
            .iter()
            .find(|(n, _)| *n == node)
            .map_or(0, |(_, u)| norm(*u))
    }

    /// Whether `uuid` (normalized, real) is among the history or the bitmap UUIDs.
    fn knows(&self, uuid: u64) -> bool {
        real(uuid)
            && (self.history.iter().any(|h| norm(*h) == uuid)
                || self.bitmap.iter().any(|(_, b)| norm(*b) == uuid))
    }

    /// Every real UUID of this view, current included, normalized.
    fn all_uuids(&self) -> impl Iterator<Item = u64> + '_ {
        std::iter::once(self.current)
            .chain(self.bitmap.iter().map(|(_, u)| *u))
            .chain(self.history.iter().copied())
            .map(norm)
            .filter(|u| real(*u))
    }
}

/// after-sb-0pri: what to do with a split brain when neither node is Primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterSb {
    /// Do not resolve; drop the connection.
    Disconnect,
    /// The node without changes since the split is the target.
    DiscardZeroChanges,
    /// The node that became Primary after the split is the target.
    DiscardYoungerPrimary,
    /// The node that was Primary at the split is the target.
    DiscardOlderPrimary,
    /// The node with fewer changes is the target.
    DiscardLeastChanges,
    /// This node (by id) is the target.
    DiscardNode(u8),
}

impl FromStr for AfterSb {
    type Err = MetaError;

    /// drbd.conf's names; `discard-node-NAME` must be resolved by the caller (see
    /// [`AfterSb::parse_with`]).
    fn from_str(s: &str) -> Result<AfterSb, MetaError> {
        match s.trim() {
            "disconnect" => Ok(AfterSb::Disconnect),
            "discard-zero-changes" => Ok(AfterSb::DiscardZeroChanges),
            "discard-younger-primary" => Ok(AfterSb::DiscardYoungerPrimary),
            "discard-older-primary" => Ok(AfterSb::DiscardOlderPrimary),
            "discard-least-changes" => Ok(AfterSb::DiscardLeastChanges),
            other => match other.strip_prefix("discard-node-") {
                Some(name) => Err(MetaError::UnresolvedNode(name.to_string())),
                None => Err(MetaError::UnknownPolicy(other.to_string())),
            },
        }
    }
}

impl AfterSb {
    /// Like `str::parse`, resolving `discard-node-NAME` with `node_id_of(NAME)`.
    pub fn parse_with(
        s: &str,
        node_id_of: impl FnOnce(&str) -> Option<u8>,
    ) -> Result<AfterSb, MetaError> {
        match s.trim().strip_prefix("discard-node-") {
            Some(name) if !name.is_empty() => node_id_of(name)
                .map(AfterSb::DiscardNode)
                .ok_or_else(|| MetaError::UnknownNode(name.to_string())),
            _ => s.parse(),
        }
    }
}

/// Which side a resolved split brain keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// My data is kept: I am the (bitmap-based) sync source.
    IAmSource,
    /// My data is discarded: I am the (bitmap-based) sync target.
    IAmTarget,
}

/// The outcome of the handshake comparison, from "my" point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncDecision {
    /// Same data: nothing to sync.
    NoSync,
    /// I sync to the peer; `full` = every block, else the union of both bitmaps.
    Source { full: bool },
    /// The peer syncs to me.
    Target { full: bool },
    /// Both changed since they parted. `Some` = auto-resolved by the policy, bitmap-based.
    SplitBrain { resolved: Option<Resolution> },
    /// No common generation: refuse to connect.
    Unrelated,
}

impl SyncDecision {
    /// The same decision seen from the peer.
    pub fn mirror(self) -> SyncDecision {
        match self {
            SyncDecision::Source { full } => SyncDecision::Target { full },
            SyncDecision::Target { full } => SyncDecision::Source { full },
            SyncDecision::SplitBrain { resolved } => SyncDecision::SplitBrain {
                resolved: resolved.map(|r| match r {
                    Resolution::IAmSource => Resolution::IAmTarget,
                    Resolution::IAmTarget => Resolution::IAmSource,
                }),
            },
            other => other,
        }
    }
}

/// A UUID with the primary bit cleared.
fn norm(uuid: u64) -> u64 {
    uuid & !1
}

/// A UUID that names a real generation (normalized input).
fn real(uuid: u64) -> bool {
    uuid != 0 && uuid != UUID_JUST_CREATED
}

/// How the two data sets relate, before split-brain policies and discard-my-data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relation {
    BothCreated,
    /// `me` = I am the just-created one.
    Created {
        me: bool,
    },
    /// Equal currents; `None` = nothing to sync, `Some(me_source)`.
    Equal(Option<bool>),
    Bitmap {
        me_target: bool,
    },
    Full {
        me_target: bool,
    },
    /// Rule 5: equal bitmap UUIDs.
    SplitBrainBitmap,
    /// Rule 6 (or contradictory rules 3/4).
    SplitBrainOther,
    Unrelated,
}

fn relation(me: &GenView, peer: &GenView) -> Relation {
    let (mc, pc) = (norm(me.current), norm(peer.current));
    match (me.just_created(), peer.just_created()) {
        (true, true) => return Relation::BothCreated,
        (true, false) => return Relation::Created { me: true },
        (false, true) => return Relation::Created { me: false },
        (false, false) => {}
    }
    if mc == pc {
        let (mcr, pcr) = (
            me.has(gen_flag::CRASHED_PRIMARY),
            peer.has(gen_flag::CRASHED_PRIMARY),
        );
        if me.dirty_blocks == 0 && peer.dirty_blocks == 0 && !mcr && !pcr {
            return Relation::Equal(None);
        }
        let (mp, pp) = (me.has(gen_flag::PRIMARY), peer.has(gen_flag::PRIMARY));
        let me_source = if mcr != pcr {
            mcr
        } else if mp != pp {
            mp
        } else {
            me.node_id < peer.node_id
        };
        return Relation::Equal(Some(me_source));
    }
    let peer_has_my_bitmap = real(mc) && peer.bitmap_for(me.node_id) == mc;
    let i_have_peer_bitmap = real(pc) && me.bitmap_for(peer.node_id) == pc;
    match (peer_has_my_bitmap, i_have_peer_bitmap) {
        (true, false) => return Relation::Bitmap { me_target: true },
        (false, true) => return Relation::Bitmap { me_target: false },
        (true, true) => return Relation::SplitBrainOther,
        (false, false) => {}
    }
    match (peer.knows(mc), me.knows(pc)) {
        (true, false) => return Relation::Full { me_target: true },
        (false, true) => return Relation::Full { me_target: false },
        (true, true) => return Relation::SplitBrainOther,
        (false, false) => {}
    }
    let my_bm = me.bitmap_for(peer.node_id);
    if real(my_bm) && my_bm == peer.bitmap_for(me.node_id) {
        return Relation::SplitBrainBitmap;
    }
    let mine: Vec<u64> = me.all_uuids().collect();
    if peer.all_uuids().any(|u| mine.contains(&u)) {
        return Relation::SplitBrainOther;
    }
    Relation::Unrelated
}

/// The after-sb-0pri policy applied to a rule-5 split brain.
fn resolve(me: &GenView, peer: &GenView, policy: &AfterSb) -> Option<Resolution> {
    use Resolution::{IAmSource, IAmTarget};
    let by = |me_target: bool, peer_target: bool| match (me_target, peer_target) {
        (true, false) => Some(IAmTarget),
        (false, true) => Some(IAmSource),
        _ => None,
    };
    let (mpas, ppas) = (
        me.has(gen_flag::PRIMARY_AT_SPLIT),
        peer.has(gen_flag::PRIMARY_AT_SPLIT),
    );
    match *policy {
        AfterSb::Disconnect => None,
        // Both without changes: nothing diverged, either way is a no-op resync; as DRBD
        // (RESOLVE_CONFLICTS), the higher node id is the target.
        AfterSb::DiscardZeroChanges => match (me.dirty_blocks == 0, peer.dirty_blocks == 0) {
            (true, true) if me.node_id != peer.node_id => {
                by(me.node_id > peer.node_id, peer.node_id > me.node_id)
            }
            (me_zero, peer_zero) => by(me_zero, peer_zero),
        },
        AfterSb::DiscardYoungerPrimary => by(!mpas, !ppas),
        AfterSb::DiscardOlderPrimary => by(mpas, ppas),
        AfterSb::DiscardLeastChanges => by(
            me.dirty_blocks < peer.dirty_blocks,
            peer.dirty_blocks < me.dirty_blocks,
        ),
        AfterSb::DiscardNode(n) => by(n == me.node_id, n == peer.node_id),
    }
}

/// Compares the generation state of this node (`me`) with the peer's and decides the resync
/// (see the module documentation for the rules). `after_sb_0pri` resolves a split brain whose
/// bitmaps are usable; pass [`AfterSb::Disconnect`] when the configured policy for the current
/// number of primaries does not apply.
pub fn decide(me: &GenView, peer: &GenView, after_sb_0pri: &AfterSb) -> SyncDecision {
    let rel = relation(me, peer);
    let (me_discards, peer_discards) = (
        me.has(gen_flag::DISCARD_MY_DATA),
        peer.has(gen_flag::DISCARD_MY_DATA),
    );
    if me_discards != peer_discards {
        let other_created = if me_discards {
            peer.just_created()
        } else {
            me.just_created()
        };
        if !other_created {
            let full = match rel {
                Relation::BothCreated | Relation::Equal(None) => return SyncDecision::NoSync,
                Relation::Equal(Some(_)) | Relation::Bitmap { .. } | Relation::SplitBrainBitmap => {
                    false
                }
                Relation::Created { .. }
                | Relation::Full { .. }
                | Relation::SplitBrainOther
                | Relation::Unrelated => true,
            };
            return if me_discards {
                SyncDecision::Target { full }
            } else {
                SyncDecision::Source { full }
            };
        }
    }
    match rel {
        Relation::BothCreated | Relation::Equal(None) => SyncDecision::NoSync,
        Relation::Created { me: true } => SyncDecision::Target { full: true },
        Relation::Created { me: false } => SyncDecision::Source { full: true },
        Relation::Equal(Some(true)) => SyncDecision::Source { full: false },
        Relation::Equal(Some(false)) => SyncDecision::Target { full: false },
        Relation::Bitmap { me_target: true } => SyncDecision::Target { full: false },
        Relation::Bitmap { me_target: false } => SyncDecision::Source { full: false },
        Relation::Full { me_target: true } => SyncDecision::Target { full: true },
        Relation::Full { me_target: false } => SyncDecision::Source { full: true },
        Relation::SplitBrainBitmap => SyncDecision::SplitBrain {
            resolved: resolve(me, peer, after_sb_0pri),
        },
        Relation::SplitBrainOther => SyncDecision::SplitBrain { resolved: None },
        Relation::Unrelated => SyncDecision::Unrelated,
    }
}

/// Starts a new data generation (first write after a Primary lost a peer, or promotion with
/// unreachable peers): each absent peer's slot (assigned if it has none and one is free) whose
/// bitmap UUID is 0 gets the current UUID, so its bitmap records the changes since; then the
/// current UUID becomes `new_uuid`. A just-created current UUID is not recorded (there is no
/// generation to be relative to).
pub fn new_generation(sb: &mut Superblock, absent_peers: &[u8], new_uuid: u64) {
    let current = sb.current_uuid;
    if real(norm(current)) {
        for &node in absent_peers {
            if let Ok(slot) = sb.peer_slot_or_assign(node) {
                if sb.peers[slot].bitmap_uuid == 0 {
                    sb.peers[slot].bitmap_uuid = current;
                }
            }
        }
    }
    sb.current_uuid = new_uuid;
}

/// A resync to `peer_node` finished with this node as source: the peer's bitmap UUID moves to
/// the front of the history and the slot's bitmap UUID becomes 0. Also clears
/// `CRASHED_PRIMARY`, and `PRIMARY_AT_SPLIT` once no peer slot has a bitmap UUID left.
pub fn finish_resync_as_source(sb: &mut Superblock, peer_node: u8) {
    if let Some(slot) = sb.peer_slot(peer_node) {
        let bm = sb.peers[slot].bitmap_uuid;
        sb.push_history(bm);
        sb.peers[slot].bitmap_uuid = 0;
    }
    sb.flags &= !meta_flag::CRASHED_PRIMARY;
    if sb.peers.iter().all(|p| p.bitmap_uuid == 0) {
        sb.flags &= !meta_flag::PRIMARY_AT_SPLIT;
    }
}

/// A resync finished with this node as target: the old current UUID moves to the front of the
/// history, the current UUID becomes the source's (bit 0 cleared), the data is `CONSISTENT`
/// (and no longer `OUTDATED`, `CRASHED_PRIMARY` or `PRIMARY_AT_SPLIT`).
pub fn finish_resync_as_target(sb: &mut Superblock, source_current: u64) {
    let new = norm(source_current);
    if norm(sb.current_uuid) != new {
        sb.push_history(sb.current_uuid);
    }
    sb.current_uuid = new;
    sb.flags |= meta_flag::CONSISTENT;
    sb.flags &= !(meta_flag::OUTDATED | meta_flag::CRASHED_PRIMARY | meta_flag::PRIMARY_AT_SPLIT);
}

/// [`finish_resync_as_target`], and also retires this node's bitmap UUID for the source (into
/// the history, before the old current), whose bitmap is now empty.
pub fn finish_resync_as_target_from(sb: &mut Superblock, source_node: u8, source_current: u64) {
    if let Some(slot) = sb.peer_slot(source_node) {
        let bm = sb.peers[slot].bitmap_uuid;
        if norm(bm) != norm(source_current) {
            sb.push_history(bm);
        }
        sb.peers[slot].bitmap_uuid = 0;
    }
    finish_resync_as_target(sb, source_current);
}

/// A fresh generation UUID from `/dev/urandom` (falling back to the clock, the process id
/// and a counter): never 0 or [`UUID_JUST_CREATED`], bit 0 clear.
pub fn random_uuid() -> u64 {
    use std::io::Read;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);

    fn splitmix(mut x: u64) -> u64 {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }
    let fallback = || {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        splitmix(nanos ^ (u64::from(std::process::id()) << 32) ^ splitmix(n))
    };
    let mut buf = [0u8; 8];
    let mut v = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_or_else(|_| fallback(), |()| u64::from_le_bytes(buf));
    loop {
        v = norm(v);
        if real(v) {
            return v;
        }
        v = fallback();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gen_flag::*;
    use SyncDecision::*;

    const A: u8 = 0;
    const B: u8 = 1;
    const C: u8 = 2;

    fn view(node_id: u8, current: u64) -> GenView {
        GenView {
            node_id,
            current,
            flags: CONSISTENT,
            ..GenView::default()
        }
    }

    fn with(mut v: GenView, f: impl FnOnce(&mut GenView)) -> GenView {
        f(&mut v);
        v
    }

    /// Checks `decide` both ways: `b`'s view is the mirror of `a`'s.
    fn check(name: &str, a: &GenView, b: &GenView, policy: AfterSb, expect: SyncDecision) {
        assert_eq!(decide(a, b, &policy), expect, "{name}");
        assert_eq!(decide(b, a, &policy), expect.mirror(), "{name} (mirrored)");
    }

    /// Split brain after a common generation 0x100: each side has a new current and a bitmap
    /// UUID 0x100 for the other.
    fn split(a_dirty: u64, b_dirty: u64) -> (GenView, GenView) {
        let a = with(view(A, 0x200), |v| {
            v.bitmap = vec![(B, 0x100)];
            v.history = vec![0x80];
            v.dirty_blocks = a_dirty;
        });
        let b = with(view(B, 0x301), |v| {
            v.bitmap = vec![(A, 0x101)];
            v.history = vec![0x80];
            v.dirty_blocks = b_dirty;
        });
        (a, b)
    }

    #[test]
    fn decision_table() {
        use Resolution::*;
        let d = AfterSb::Disconnect;
        let jc = UUID_JUST_CREATED;
        let created = |n| with(view(n, jc), |v| v.flags = JUST_CREATED);

        // Rule 1.
        check("both created", &created(A), &created(B), d, NoSync);
        check(
            "I am created",
            &created(A),
            &view(B, 0x100),
            d,
            Target { full: true },
        );
        check(
            "created via flag only",
            &with(view(A, 0x500), |v| v.flags |= JUST_CREATED),
            &view(B, 0x100),
            d,
            Target { full: true },
        );

        // Rule 2.
        check("equal, clean", &view(A, 0x100), &view(B, 0x101), d, NoSync);
        let dirty = |v: GenView| with(v, |v| v.dirty_blocks = 3);
        check(
            "equal, dirty, lower id is source",
            &dirty(view(A, 0x100)),
            &view(B, 0x100),
            d,
            Source { full: false },
        );
        check(
            "equal, crashed primary is source",
            &view(A, 0x100),
            &with(view(B, 0x100), |v| v.flags |= CRASHED_PRIMARY),
            d,
            Target { full: false },
        );
        check(
            "equal, both crashed, primary is source",
            &with(view(A, 0x100), |v| v.flags |= CRASHED_PRIMARY),
            &with(view(B, 0x100), |v| v.flags |= CRASHED_PRIMARY | PRIMARY),
            d,
            Target { full: false },
        );
        check(
            "equal, dirty, primary is source",
            &dirty(view(A, 0x100)),
            &with(view(B, 0x100), |v| v.flags |= PRIMARY),
            d,
            Target { full: false },
        );

        // Rule 3.
        let ahead = with(view(B, 0x200), |v| v.bitmap = vec![(A, 0x101), (C, 0)]);
        check(
            "peer has my bitmap",
            &view(A, 0x100),
            &ahead,
            d,
            Target { full: false },
        );
        check(
            "contradictory bitmaps",
            &with(view(A, 0x100), |v| v.bitmap = vec![(B, 0x200)]),
            &ahead,
            d,
            SplitBrain { resolved: None },
        );

        // Rule 4.
        let moved_on = with(view(B, 0x300), |v| v.history = vec![0x200, 0x100]);
        check(
            "my current in peer history",
            &view(A, 0x100),
            &moved_on,
            d,
            Target { full: true },
        );
        let other_slot = with(view(B, 0x300), |v| v.bitmap = vec![(C, 0x100)]);
        check(
            "my current in peer's bitmap for another node",
            &view(A, 0x100),
            &other_slot,
            d,
            Target { full: true },
        );
        check(
            "histories cross",
            &with(view(A, 0x100), |v| v.history = vec![0x300]),
            &moved_on,
            d,
            SplitBrain { resolved: None },
        );

        // Rule 5 with every policy.
        let (a, b) = split(5, 0);
        check(
            "split brain, disconnect",
            &a,
            &b,
            d,
            SplitBrain { resolved: None },
        );
        check(
            "zero changes: B wrote nothing",
            &a,
            &b,
            AfterSb::DiscardZeroChanges,
            SplitBrain {
                resolved: Some(IAmSource),
            },
        );
        let (a2, b2) = split(5, 7);
        check(
            "zero changes: both wrote",
            &a2,
            &b2,
            AfterSb::DiscardZeroChanges,
            SplitBrain { resolved: None },
        );
        let (a0, b0) = split(0, 0);
        check(
            "zero changes: neither wrote, higher id is target",
            &a0,
            &b0,
            AfterSb::DiscardZeroChanges,
            SplitBrain {
                resolved: Some(IAmSource),
            },
        );
        let pas = |v: &GenView| with(v.clone(), |v| v.flags |= PRIMARY_AT_SPLIT);
        check(
            "younger primary: A was primary at split, B is younger",
            &pas(&a2),
            &b2,
            AfterSb::DiscardYoungerPrimary,
            SplitBrain {
                resolved: Some(IAmSource),
            },
        );
        check(
            "younger primary: B was primary at split",
            &a2,
            &pas(&b2),
            AfterSb::DiscardYoungerPrimary,
            SplitBrain {
                resolved: Some(IAmTarget),
            },
        );
        check(
            "younger primary: undecided",
            &pas(&a2),
            &pas(&b2),
            AfterSb::DiscardYoungerPrimary,
            SplitBrain { resolved: None },
        );
        check(
            "younger primary: neither",
            &a2,
            &b2,
            AfterSb::DiscardYoungerPrimary,
            SplitBrain { resolved: None },
        );
        check(
            "older primary",
            &pas(&a2),
            &b2,
            AfterSb::DiscardOlderPrimary,
            SplitBrain {
                resolved: Some(IAmTarget),
            },
        );
        check(
            "least changes",
            &a2,
            &b2,
            AfterSb::DiscardLeastChanges,
            SplitBrain {
                resolved: Some(IAmTarget),
            },
        );
        let (a3, b3) = split(7, 7);
        check(
            "least changes tie",
            &a3,
            &b3,
            AfterSb::DiscardLeastChanges,
            SplitBrain { resolved: None },
        );
        check(
            "discard node A",
            &a2,
            &b2,
            AfterSb::DiscardNode(A),
            SplitBrain {
                resolved: Some(IAmTarget),
            },
        );
        check(
            "discard node B",
            &a2,
            &b2,
            AfterSb::DiscardNode(B),
            SplitBrain {
                resolved: Some(IAmSource),
            },
        );
        check(
            "discard a third node",
            &a2,
            &b2,
            AfterSb::DiscardNode(C),
            SplitBrain { resolved: None },
        );

        // Rule 6: only the history in common.
        let (mut a6, mut b6) = split(1, 1);
        b6.bitmap = vec![(A, 0x999)];
        check(
            "common history only",
            &a6,
            &b6,
            AfterSb::DiscardNode(B),
            SplitBrain { resolved: None },
        );
        a6.history.clear();
        b6.history.clear();
        // Rule 7.
        check("unrelated", &a6, &b6, d, Unrelated);
        check(
            "just-created values are no ancestor",
            &with(view(A, 0x200), |v| v.history = vec![jc, 0]),
            &with(view(B, 0x300), |v| v.history = vec![jc, 0]),
            d,
            Unrelated,
        );

        // Rule 0: discard-my-data.
        let dmd = |v: &GenView| with(v.clone(), |v| v.flags |= DISCARD_MY_DATA);
        check(
            "discard-my-data resolves a split brain, bitmap",
            &dmd(&a2),
            &b2,
            d,
            Target { full: false },
        );
        check(
            "discard-my-data on the peer",
            &a2,
            &dmd(&b2),
            d,
            Source { full: false },
        );
        check(
            "discard-my-data beats the policy",
            &a2,
            &dmd(&b2),
            AfterSb::DiscardNode(A),
            Source { full: false },
        );
        check(
            "discard-my-data, history only: full",
            &dmd(&with(a2.clone(), |v| v.bitmap.clear())),
            &b2,
            d,
            Target { full: true },
        );
        check(
            "discard-my-data, unrelated: full",
            &dmd(&a6),
            &b6,
            d,
            Target { full: true },
        );
        check(
            "discard-my-data overrides a bitmap source",
            &dmd(&ahead),
            &view(A, 0x100),
            d,
            Target { full: false },
        );
        check(
            "discard-my-data, same data",
            &dmd(&view(A, 0x100)),
            &view(B, 0x100),
            d,
            NoSync,
        );
        check(
            "discard-my-data with a just-created peer is ignored",
            &dmd(&view(A, 0x100)),
            &created(B),
            d,
            Source { full: true },
        );
        check(
            "discard-my-data on both sides is ignored",
            &dmd(&a2),
            &dmd(&b2),
            AfterSb::DiscardLeastChanges,
            SplitBrain {
                resolved: Some(IAmTarget),
            },
        );
    }

    #[test]
    fn decide_is_symmetric_on_random_views() {
        struct Rng(u64);
        impl Rng {
            fn next(&mut self) -> u64 {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                self.0
            }
            /// From a small alphabet so that matches happen often.
            fn uuid(&mut self) -> u64 {
                [0u64, 4, 0x10, 0x11, 0x20, 0x30, 0x40][(self.next() % 7) as usize]
            }
            fn view(&mut self, node: u8, other: u8) -> GenView {
                GenView {
                    node_id: node,
                    current: self.uuid(),
                    bitmap: vec![(other, self.uuid()), (C, self.uuid())],
                    history: (0..self.next() % 3).map(|_| self.uuid()).collect(),
                    flags: self.next() & 0x7f,
                    dirty_blocks: self.next() % 3,
                }
            }
        }
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        let policies = [
            AfterSb::Disconnect,
            AfterSb::DiscardZeroChanges,
            AfterSb::DiscardYoungerPrimary,
            AfterSb::DiscardOlderPrimary,
            AfterSb::DiscardLeastChanges,
            AfterSb::DiscardNode(A),
            AfterSb::DiscardNode(B),
        ];
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50_000 {
            let a = rng.view(A, B);
            let b = rng.view(B, A);
            let policy = policies[(rng.next() % policies.len() as u64) as usize];
            let d = decide(&a, &b, &policy);
            seen.insert(format!("{d:?}"));
            assert_eq!(
                d,
                decide(&b, &a, &policy).mirror(),
                "{a:?} {b:?} {policy:?}"
            );
        }
        // Every kind of outcome was exercised.
        assert_eq!(seen.len(), 9, "{seen:?}");
    }

    #[test]
    fn policy_names() {
        for (s, p) in [
            ("disconnect", AfterSb::Disconnect),
            ("discard-zero-changes", AfterSb::DiscardZeroChanges),
            ("discard-younger-primary", AfterSb::DiscardYoungerPrimary),
            ("discard-older-primary", AfterSb::DiscardOlderPrimary),
            (" discard-least-changes ", AfterSb::DiscardLeastChanges),
        ] {
            assert_eq!(s.parse::<AfterSb>(), Ok(p));
        }
        assert_eq!(
            "consensus".parse::<AfterSb>(),
            Err(MetaError::UnknownPolicy("consensus".into()))
        );
        assert_eq!(
            "discard-node-alpha".parse::<AfterSb>(),
            Err(MetaError::UnresolvedNode("alpha".into()))
        );
        let lookup = |name: &str| (name == "alpha").then_some(3);
        assert_eq!(
            AfterSb::parse_with("discard-node-alpha", lookup),
            Ok(AfterSb::DiscardNode(3))
        );
        assert_eq!(
            AfterSb::parse_with("discard-node-beta", lookup),
            Err(MetaError::UnknownNode("beta".into()))
        );
        assert_eq!(
            AfterSb::parse_with("discard-zero-changes", lookup),
            Ok(AfterSb::DiscardZeroChanges)
        );
        assert!("bogus"
            .parse::<AfterSb>()
            .unwrap_err()
            .to_string()
            .contains("disconnect"));
    }

    /// The whole life cycle through the superblock helpers: connected, A loses B and writes,
    /// B comes back (bitmap resync), then a split brain resolved by discard-zero-changes.
    #[test]
    fn life_cycle_through_superblocks() {
        let mut a = Superblock::new_created(A, 1, 1 << 30, 64);
        let mut b = Superblock::new_created(B, 2, 1 << 30, 64);
        a.peer_slot_or_assign(B).unwrap();
        b.peer_slot_or_assign(A).unwrap();
        let v = |sb: &Superblock, dirty| GenView::from_superblock(sb, dirty);
        assert_eq!(decide(&v(&a, 0), &v(&b, 0), &AfterSb::Disconnect), NoSync);

        // Initial sync: A is forced primary with B absent, B is just created.
        new_generation(&mut a, &[B], 0x1000);
        assert_eq!(
            a.bitmap_uuid(B),
            0,
            "no bitmap relative to a just-created generation"
        );
        a.flags |= meta_flag::CONSISTENT;
        assert_eq!(
            decide(&v(&a, 0), &v(&b, 0), &AfterSb::Disconnect),
            Source { full: true }
        );
        finish_resync_as_source(&mut a, B);
        finish_resync_as_target(&mut b, a.current_uuid | 1);
        assert_eq!(b.current_uuid, 0x1000);
        assert!(b.flags & meta_flag::CONSISTENT != 0);
        assert!(b.history.is_empty(), "the just-created uuid is not history");
        assert_eq!(decide(&v(&a, 0), &v(&b, 0), &AfterSb::Disconnect), NoSync);

        // A (primary) loses B and writes; C was never seen.
        a.flags |= meta_flag::PRIMARY | meta_flag::PRIMARY_AT_SPLIT;
        new_generation(&mut a, &[B, C], 0x2000);
        assert_eq!(a.bitmap_uuid(B), 0x1000);
        assert_eq!(a.bitmap_uuid(C), 0x1000);
        // A second new generation keeps the older bitmap UUID.
        new_generation(&mut a, &[B], 0x3000);
        assert_eq!(a.bitmap_uuid(B), 0x1000);
        assert_eq!(
            decide(&v(&a, 10), &v(&b, 0), &AfterSb::Disconnect),
            Source { full: false }
        );
        finish_resync_as_source(&mut a, B);
        finish_resync_as_target_from(&mut b, A, a.current_uuid);
        assert_eq!(a.history, vec![0x1000]);
        assert_eq!(a.bitmap_uuid(B), 0);
        assert_eq!(
            a.flags & meta_flag::PRIMARY_AT_SPLIT,
            meta_flag::PRIMARY_AT_SPLIT,
            "C still split"
        );
        assert_eq!(b.history, vec![0x1000]);
        assert_eq!(b.current_uuid, 0x3000);

        // Split brain: both write while apart; B has no changes.
        a.flags &= !meta_flag::PRIMARY;
        new_generation(&mut a, &[B], 0x4000);
        new_generation(&mut b, &[A], 0x5000);
        assert_eq!(
            decide(&v(&a, 8), &v(&b, 0), &AfterSb::Disconnect),
            SplitBrain { resolved: None }
        );
        assert_eq!(
            decide(&v(&a, 8), &v(&b, 0), &AfterSb::DiscardZeroChanges),
            SplitBrain {
                resolved: Some(Resolution::IAmSource)
            }
        );
        finish_resync_as_source(&mut a, B);
        finish_resync_as_target_from(&mut b, A, a.current_uuid);
        assert_eq!(b.current_uuid, 0x4000);
        assert_eq!(b.history, vec![0x5000, 0x3000, 0x1000]);
        assert_eq!(b.bitmap_uuid(A), 0);
        assert_eq!(decide(&v(&a, 0), &v(&b, 0), &AfterSb::Disconnect), NoSync);
        assert_eq!(Superblock::parse(&b.encode()), Ok(b));
    }

    #[test]
    fn random_uuids() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let u = random_uuid();
            assert!(u & 1 == 0 && u != 0 && u != UUID_JUST_CREATED);
            assert!(seen.insert(u));
        }
    }
}
