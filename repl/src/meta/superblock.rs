//! The metadata superblock: the last 4 KiB block of the backing device (after DRBD's
//! `meta_data_on_disk_9`).
//!
//! It names the node and the device, and holds the **generation UUIDs** (current, history,
//! one bitmap UUID per peer slot; see [`generation`](super::generation)) and the flags. All
//! integers are little-endian; a crc32c covers the whole 4096-byte block, computed with the
//! crc field zeroed. The layout constants are stored too and must match this build.
//!
//! ```text
//!   0 magic "OXREPLMD"       8 version u32 (1)       12 crc32c u32
//!  16 node id u8            17 history count u8      18 reserved u16
//!  20 flags u32 (meta_flag)  24 device uuid u64       32 data bytes u64
//!  40 current uuid u64       48 al capacity u32 (extents)
//!  52 max peers u32 (4)      56 bitmap bytes per bit u32 (4096)
//!  60 al extent bytes u32 (4 MiB)                    64 al slots u32 (8)     68..128 reserved
//! 128 peer slots, 4 × 32 bytes: node id u8 (0xff = free), 7 reserved, bitmap uuid u64,
//!     flags u32, 12 reserved
//! 256 history uuids, 16 × u64, newest first (entries past the count are zero)
//! 384..4096 zero
//! ```

use super::activity_log::MAX_CAPACITY;
use super::layout::{AL_EXTENT_BYTES, AL_SLOTS, BM_BLOCK_BYTES, MAX_PEERS, META_BLOCK};
use super::MetaError;

/// Bytes of the superblock.
pub const SB_LEN: usize = META_BLOCK as usize;
/// The magic at byte 0.
pub const SB_MAGIC: [u8; 8] = *b"OXREPLMD";
/// The only format version written and read.
pub const SB_VERSION: u32 = 1;
/// History UUIDs kept (DRBD keeps 32; 16 suffice for our peer count).
pub const HISTORY_LEN: usize = 16;
/// Current UUID of metadata that never had data (DRBD's `UUID_JUST_CREATED`).
pub const UUID_JUST_CREATED: u64 = 4;
/// Highest node id (DRBD: 0..31).
pub const MAX_NODE_ID: u8 = 31;
/// On-disk node id of a free peer slot.
const NO_NODE: u8 = 0xff;
const PEER_LEN: usize = 32;

/// `Superblock::flags` bits.
pub mod meta_flag {
    /// The data is consistent: not a half-done resync target.
    pub const CONSISTENT: u32 = 1;
    /// Set while Primary; still set at attach after a crash = crashed primary.
    pub const PRIMARY: u32 = 2;
    /// Detached cleanly: no writes were in flight, the activity log needs no replay.
    pub const AL_CLEAN: u32 = 4;
    /// The data is known to be older than a peer's (fencing / outdate).
    pub const OUTDATED: u32 = 8;
    /// Was Primary when it lost a peer (for after-sb discard-younger/older-primary).
    pub const PRIMARY_AT_SPLIT: u32 = 16;
    /// Set by [`Superblock::on_attach`] when [`PRIMARY`] was found set, so the crash is still
    /// known after a later restart; cleared when a resync finishes
    /// ([`generation`](crate::meta::generation)).
    pub const CRASHED_PRIMARY: u32 = 32;
}

mod field {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 8;
    pub const CRC: usize = 12;
    pub const NODE_ID: usize = 16;
    pub const HISTORY_COUNT: usize = 17;
    pub const FLAGS: usize = 20;
    pub const DEVICE_UUID: usize = 24;
    pub const DATA_BYTES: usize = 32;
    pub const CURRENT: usize = 40;
    pub const AL_CAPACITY: usize = 48;
    pub const MAX_PEERS: usize = 52;
    pub const BM_BLOCK: usize = 56;
    pub const AL_EXTENT: usize = 60;
    pub const AL_SLOTS: usize = 64;
    pub const PEERS: usize = 128;
    pub const HISTORY: usize = 256;

    /// Offsets within a peer slot.
    pub mod peer {
        pub const NODE_ID: usize = 0;
        pub const BITMAP_UUID: usize = 8;
        pub const FLAGS: usize = 16;
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..)
        .and_then(|rest| rest.first_chunk::<4>())
        .map_or(0, |x| u32::from_le_bytes(*x))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..)
        .and_then(|rest| rest.first_chunk::<8>())
        .map_or(0, |x| u64::from_le_bytes(*x))
}

fn u8_at(b: &[u8], at: usize) -> u8 {
    b.get(at).copied().unwrap_or(0)
}

fn put(b: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = b.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

/// crc32c of a 4 KiB block with its 4-byte crc field (at `crc_at`) taken as zero.
pub(crate) fn block_crc(block: &[u8], crc_at: usize) -> u32 {
    let before = block.get(..crc_at).unwrap_or_default();
    let after = block.get(crc_at + 4..).unwrap_or_default();
    let crc = crc32c::crc32c_append(crc32c::crc32c(before), &[0; 4]);
    crc32c::crc32c_append(crc, after)
}

/// One peer slot: which node it tracks, the generation that node's bitmap starts from, and
/// flags for the runtime's use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerSlot {
    /// The peer's node id; `None` = free slot.
    pub node_id: Option<u8>,
    /// The generation this peer was last known to have, from which the slot's bitmap records
    /// changes; 0 = the bitmap is not in use (in sync at the current generation).
    pub bitmap_uuid: u64,
    /// Free for the runtime (stored and returned unchanged).
    pub flags: u32,
}

/// What [`Superblock::on_attach`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachState {
    /// The node was Primary when it went down (now or at an earlier, unresolved crash).
    pub crashed_primary: bool,
    /// The activity log was not closed cleanly: its extents must be marked out of sync.
    pub al_dirty: bool,
}

/// The decoded superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub node_id: u8,
    /// Identifies this metadata instance (random at creation).
    pub device_uuid: u64,
    /// Size of the replicated data area.
    pub data_bytes: u64,
    /// The current generation UUID (bit 0 = primary bit, ignored in comparisons).
    pub current_uuid: u64,
    /// Older generations, newest first, at most [`HISTORY_LEN`].
    pub history: Vec<u64>,
    /// [`meta_flag`] bits.
    pub flags: u32,
    pub peers: [PeerSlot; MAX_PEERS],
    /// Activity-log capacity in extents (1..=[`MAX_CAPACITY`]).
    pub al_capacity: u32,
}

impl Superblock {
    /// Fresh metadata: current UUID [`UUID_JUST_CREATED`], no history, no peers, flags only
    /// [`meta_flag::AL_CLEAN`] (not consistent). `al_capacity` is clamped to
    /// 1..=[`MAX_CAPACITY`].
    pub fn new_created(
        node_id: u8,
        device_uuid: u64,
        data_bytes: u64,
        al_capacity: u32,
    ) -> Superblock {
        Superblock {
            node_id,
            device_uuid,
            data_bytes,
            current_uuid: UUID_JUST_CREATED,
            history: Vec::new(),
            flags: meta_flag::AL_CLEAN,
            peers: [PeerSlot::default(); MAX_PEERS],
            al_capacity: al_capacity.clamp(1, MAX_CAPACITY as u32),
        }
    }

    /// The 4096-byte on-disk image. Does not validate (see [`Superblock::validate`]); history
    /// beyond [`HISTORY_LEN`] entries (the oldest) is not written.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; SB_LEN];
        put(&mut b, field::MAGIC, &SB_MAGIC);
        put(&mut b, field::VERSION, &SB_VERSION.to_le_bytes());
        b[field::NODE_ID] = self.node_id;
        let history = &self.history[..self.history.len().min(HISTORY_LEN)];
        b[field::HISTORY_COUNT] = history.len() as u8;
        put(&mut b, field::FLAGS, &self.flags.to_le_bytes());
        put(&mut b, field::DEVICE_UUID, &self.device_uuid.to_le_bytes());
        put(&mut b, field::DATA_BYTES, &self.data_bytes.to_le_bytes());
        put(&mut b, field::CURRENT, &self.current_uuid.to_le_bytes());
        put(&mut b, field::AL_CAPACITY, &self.al_capacity.to_le_bytes());
        put(&mut b, field::MAX_PEERS, &(MAX_PEERS as u32).to_le_bytes());
        put(
            &mut b,
            field::BM_BLOCK,
            &(BM_BLOCK_BYTES as u32).to_le_bytes(),
        );
        put(
            &mut b,
            field::AL_EXTENT,
            &(AL_EXTENT_BYTES as u32).to_le_bytes(),
        );
        put(&mut b, field::AL_SLOTS, &(AL_SLOTS as u32).to_le_bytes());
        for (i, peer) in self.peers.iter().enumerate() {
            let base = field::PEERS + i * PEER_LEN;
            b[base + field::peer::NODE_ID] = peer.node_id.unwrap_or(NO_NODE);
            put(
                &mut b,
                base + field::peer::BITMAP_UUID,
                &peer.bitmap_uuid.to_le_bytes(),
            );
            put(&mut b, base + field::peer::FLAGS, &peer.flags.to_le_bytes());
        }
        for (i, uuid) in history.iter().enumerate() {
            put(&mut b, field::HISTORY + 8 * i, &uuid.to_le_bytes());
        }
        let crc = block_crc(&b, field::CRC);
        put(&mut b, field::CRC, &crc.to_le_bytes());
        b
    }

    /// Decodes and validates a superblock (the first 4096 bytes of `b`); every refusal says
    /// why. Never panics.
    pub fn parse(b: &[u8]) -> Result<Superblock, MetaError> {
        const WHAT: &str = "replication superblock";
        let Some(b) = b.get(..SB_LEN) else {
            return Err(MetaError::TooShort {
                what: WHAT,
                len: b.len(),
                need: SB_LEN,
            });
        };
        if b[..8] != SB_MAGIC {
            return Err(MetaError::BadMagic {
                what: WHAT,
                found: u64::from_be_bytes(b[..8].try_into().unwrap_or_default()),
            });
        }
        let version = u32_at(b, field::VERSION);
        if version != SB_VERSION {
            return Err(MetaError::UnsupportedVersion {
                what: WHAT,
                found: version,
                supported: SB_VERSION,
            });
        }
        let stored = u32_at(b, field::CRC);
        let computed = block_crc(b, field::CRC);
        if stored != computed {
            return Err(MetaError::BadCrc {
                what: WHAT,
                stored,
                computed,
            });
        }
        for (name, at, expected) in [
            ("max peers", field::MAX_PEERS, MAX_PEERS as u64),
            ("bitmap bytes per bit", field::BM_BLOCK, BM_BLOCK_BYTES),
            (
                "activity log extent bytes",
                field::AL_EXTENT,
                AL_EXTENT_BYTES,
            ),
            ("activity log slots", field::AL_SLOTS, AL_SLOTS),
        ] {
            let found = u64::from(u32_at(b, at));
            if found != expected {
                return Err(MetaError::Geometry {
                    field: name,
                    found,
                    expected,
                });
            }
        }
        let history_len = usize::from(u8_at(b, field::HISTORY_COUNT));
        if history_len > HISTORY_LEN {
            return Err(MetaError::HistoryTooLong {
                len: history_len,
                max: HISTORY_LEN,
            });
        }
        let mut peers = [PeerSlot::default(); MAX_PEERS];
        for (i, peer) in peers.iter_mut().enumerate() {
            let base = field::PEERS + i * PEER_LEN;
            let node = u8_at(b, base + field::peer::NODE_ID);
            *peer = PeerSlot {
                node_id: (node != NO_NODE).then_some(node),
                bitmap_uuid: u64_at(b, base + field::peer::BITMAP_UUID),
                flags: u32_at(b, base + field::peer::FLAGS),
            };
        }
        let sb = Superblock {
            node_id: u8_at(b, field::NODE_ID),
            device_uuid: u64_at(b, field::DEVICE_UUID),
            data_bytes: u64_at(b, field::DATA_BYTES),
            current_uuid: u64_at(b, field::CURRENT),
            history: (0..history_len)
                .map(|i| u64_at(b, field::HISTORY + 8 * i))
                .collect(),
            flags: u32_at(b, field::FLAGS),
            peers,
            al_capacity: u32_at(b, field::AL_CAPACITY),
        };
        sb.validate()?;
        Ok(sb)
    }

    /// Checks the field semantics [`Superblock::parse`] enforces: history length, node ids
    /// (own and peers' ≤ 31, no peer slot naming this node, no node in two slots) and the AL
    /// capacity.
    pub fn validate(&self) -> Result<(), MetaError> {
        if self.history.len() > HISTORY_LEN {
            return Err(MetaError::HistoryTooLong {
                len: self.history.len(),
                max: HISTORY_LEN,
            });
        }
        if self.node_id > MAX_NODE_ID {
            return Err(MetaError::BadNodeId(self.node_id));
        }
        if self.al_capacity == 0 || self.al_capacity as usize > MAX_CAPACITY {
            return Err(MetaError::BadAlCapacity {
                found: u64::from(self.al_capacity),
                max: MAX_CAPACITY as u64,
            });
        }
        for (slot, peer) in self.peers.iter().enumerate() {
            let Some(node_id) = peer.node_id else {
                continue;
            };
            if node_id > MAX_NODE_ID {
                return Err(MetaError::BadPeerNodeId { slot, node_id });
            }
            if node_id == self.node_id {
                return Err(MetaError::PeerIsSelf { slot, node_id });
            }
            if let Some(first) = self.peers[..slot]
                .iter()
                .position(|p| p.node_id == Some(node_id))
            {
                return Err(MetaError::DuplicatePeer {
                    node_id,
                    first,
                    second: slot,
                });
            }
        }
        Ok(())
    }

    /// The slot tracking `node_id`, if any.
    pub fn peer_slot(&self, node_id: u8) -> Option<usize> {
        self.peers.iter().position(|p| p.node_id == Some(node_id))
    }

    /// The slot tracking `node_id`, assigning the first free one (with a zero bitmap UUID and
    /// flags) if there is none yet. Refuses node ids above 31, this node's own id, and a full
    /// table.
    pub fn peer_slot_or_assign(&mut self, node_id: u8) -> Result<usize, MetaError> {
        if let Some(slot) = self.peer_slot(node_id) {
            return Ok(slot);
        }
        let free = self.peers.iter().position(|p| p.node_id.is_none());
        if node_id > MAX_NODE_ID {
            return Err(MetaError::BadPeerNodeId {
                slot: free.unwrap_or(MAX_PEERS),
                node_id,
            });
        }
        if node_id == self.node_id {
            return Err(MetaError::PeerIsSelf {
                slot: free.unwrap_or(MAX_PEERS),
                node_id,
            });
        }
        let slot = free.ok_or(MetaError::PeerSlotsFull {
            node_id,
            max: MAX_PEERS,
        })?;
        self.peers[slot] = PeerSlot {
            node_id: Some(node_id),
            bitmap_uuid: 0,
            flags: 0,
        };
        Ok(slot)
    }

    /// The bitmap UUID kept for `node_id` (0 when it has no slot or the bitmap is unused).
    pub fn bitmap_uuid(&self, node_id: u8) -> u64 {
        self.peer_slot(node_id)
            .map_or(0, |slot| self.peers[slot].bitmap_uuid)
    }

    /// Puts `uuid` at the front of the history (newest first), dropping the oldest beyond
    /// [`HISTORY_LEN`]. Zero, [`UUID_JUST_CREATED`] and UUIDs already in the history (bit 0
    /// ignored) are not added.
    pub fn push_history(&mut self, uuid: u64) {
        let u = uuid & !1;
        if u == 0 || u == UUID_JUST_CREATED || self.history.iter().any(|h| h & !1 == u) {
            return;
        }
        self.history.insert(0, uuid);
        self.history.truncate(HISTORY_LEN);
    }

    /// Whether the metadata never held data (current UUID is [`UUID_JUST_CREATED`]).
    pub fn is_just_created(&self) -> bool {
        self.current_uuid & !1 == UUID_JUST_CREATED
    }

    /// Call once when the metadata is read at attach, before the node can be promoted:
    /// [`meta_flag::PRIMARY`] still set means the node crashed while Primary, which is kept as
    /// [`meta_flag::CRASHED_PRIMARY`] (and `PRIMARY` cleared); [`meta_flag::AL_CLEAN`] unset
    /// means the activity log must be replayed, and is cleared for the new session (writes may
    /// be in flight from now on). Persist the superblock before the first write.
    pub fn on_attach(&mut self) -> AttachState {
        if self.flags & meta_flag::PRIMARY != 0 {
            self.flags = (self.flags & !meta_flag::PRIMARY) | meta_flag::CRASHED_PRIMARY;
        }
        let al_dirty = self.flags & meta_flag::AL_CLEAN == 0;
        self.flags &= !meta_flag::AL_CLEAN;
        AttachState {
            crashed_primary: self.flags & meta_flag::CRASHED_PRIMARY != 0,
            al_dirty,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Superblock {
        let mut sb = Superblock::new_created(2, 0x1234_5678_9abc_def0, 1 << 30, 257);
        sb.current_uuid = 0xdead_beef_0000_1110;
        sb.history = (1..=HISTORY_LEN as u64).map(|i| i * 0x1000_0002).collect();
        sb.flags = meta_flag::CONSISTENT | meta_flag::PRIMARY_AT_SPLIT;
        sb.peers[0] = PeerSlot {
            node_id: Some(0),
            bitmap_uuid: 0x5555_6666_7777_8888,
            flags: 7,
        };
        sb.peers[2] = PeerSlot {
            node_id: Some(31),
            bitmap_uuid: 0,
            flags: 0,
        };
        sb
    }

    /// Encodes `sb` with `patch` applied to the bytes, then fixes the crc.
    fn patched(sb: &Superblock, patch: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut b = sb.encode();
        patch(&mut b);
        let crc = block_crc(&b, field::CRC);
        put(&mut b, field::CRC, &crc.to_le_bytes());
        b
    }

    #[test]
    fn round_trip() {
        for sb in [sample(), Superblock::new_created(0, 1, 1 << 20, 1)] {
            let b = sb.encode();
            assert_eq!(b.len(), 4096);
            assert_eq!(&b[..8], b"OXREPLMD");
            assert_eq!(Superblock::parse(&b), Ok(sb.clone()));
            // Trailing bytes are ignored.
            let mut longer = b.clone();
            longer.extend_from_slice(&[0xaa; 100]);
            assert_eq!(Superblock::parse(&longer), Ok(sb));
        }
        let created = Superblock::new_created(3, 9, 1 << 20, 100_000);
        assert_eq!(created.current_uuid, UUID_JUST_CREATED);
        assert!(created.is_just_created());
        assert_eq!(created.flags & meta_flag::CONSISTENT, 0);
        assert_eq!(created.al_capacity as usize, MAX_CAPACITY);
        assert_eq!(Superblock::new_created(3, 9, 1 << 20, 0).al_capacity, 1);
    }

    #[test]
    fn every_refusal() {
        let sb = sample();
        let good = sb.encode();
        let too_short = Superblock::parse(&good[..4095]);
        assert_eq!(
            too_short,
            Err(MetaError::TooShort {
                what: "replication superblock",
                len: 4095,
                need: 4096
            })
        );
        let bad_magic = patched(&sb, |b| b[0] = b'X');
        assert!(matches!(
            Superblock::parse(&bad_magic),
            Err(MetaError::BadMagic { found, .. }) if found == u64::from_be_bytes(*b"XXREPLMD")
        ));
        let bad_version = patched(&sb, |b| put(b, field::VERSION, &2u32.to_le_bytes()));
        assert!(matches!(
            Superblock::parse(&bad_version),
            Err(MetaError::UnsupportedVersion {
                found: 2,
                supported: 1,
                ..
            })
        ));
        let mut bad_crc = good.clone();
        bad_crc[3000] ^= 1;
        assert!(matches!(
            Superblock::parse(&bad_crc),
            Err(MetaError::BadCrc { .. })
        ));
        let geometry = patched(&sb, |b| put(b, field::MAX_PEERS, &32u32.to_le_bytes()));
        assert_eq!(
            Superblock::parse(&geometry),
            Err(MetaError::Geometry {
                field: "max peers",
                found: 32,
                expected: MAX_PEERS as u64
            })
        );
        let geometry = patched(&sb, |b| {
            put(b, field::BM_BLOCK, &(1u32 << 20).to_le_bytes())
        });
        assert!(matches!(
            Superblock::parse(&geometry),
            Err(MetaError::Geometry {
                field: "bitmap bytes per bit",
                ..
            })
        ));
        let history = patched(&sb, |b| b[field::HISTORY_COUNT] = 17);
        assert_eq!(
            Superblock::parse(&history),
            Err(MetaError::HistoryTooLong { len: 17, max: 16 })
        );
        let node = patched(&sb, |b| b[field::NODE_ID] = 32);
        assert_eq!(Superblock::parse(&node), Err(MetaError::BadNodeId(32)));
        let peer_node = patched(&sb, |b| b[field::PEERS + PEER_LEN] = 40);
        assert_eq!(
            Superblock::parse(&peer_node),
            Err(MetaError::BadPeerNodeId {
                slot: 1,
                node_id: 40
            })
        );
        let dup = patched(&sb, |b| b[field::PEERS + 3 * PEER_LEN] = 31);
        assert_eq!(
            Superblock::parse(&dup),
            Err(MetaError::DuplicatePeer {
                node_id: 31,
                first: 2,
                second: 3
            })
        );
        let selfish = patched(&sb, |b| b[field::PEERS + PEER_LEN] = 2);
        assert_eq!(
            Superblock::parse(&selfish),
            Err(MetaError::PeerIsSelf {
                slot: 1,
                node_id: 2
            })
        );
        for cap in [0u32, MAX_CAPACITY as u32 + 1] {
            let al = patched(&sb, |b| put(b, field::AL_CAPACITY, &cap.to_le_bytes()));
            assert!(matches!(
                Superblock::parse(&al),
                Err(MetaError::BadAlCapacity { .. })
            ));
        }
        // Every reason reads as a sentence.
        for b in [
            &good[..10],
            &bad_magic,
            &bad_version,
            &bad_crc,
            &history,
            &dup,
        ] {
            let e = Superblock::parse(b).unwrap_err().to_string();
            assert!(e.len() > 20, "{e}");
        }
    }

    #[test]
    fn peer_slots() {
        let mut sb = Superblock::new_created(1, 5, 1 << 20, 10);
        assert_eq!(sb.peer_slot(0), None);
        assert_eq!(sb.peer_slot_or_assign(0), Ok(0));
        assert_eq!(sb.peer_slot_or_assign(7), Ok(1));
        assert_eq!(sb.peer_slot_or_assign(0), Ok(0));
        assert_eq!(sb.peer_slot(7), Some(1));
        assert!(matches!(
            sb.peer_slot_or_assign(1),
            Err(MetaError::PeerIsSelf { node_id: 1, .. })
        ));
        assert!(matches!(
            sb.peer_slot_or_assign(32),
            Err(MetaError::BadPeerNodeId { node_id: 32, .. })
        ));
        assert_eq!(sb.peer_slot_or_assign(8), Ok(2));
        sb.peers[1] = PeerSlot::default();
        assert_eq!(sb.peer_slot_or_assign(9), Ok(1));
        assert_eq!(sb.peer_slot_or_assign(10), Ok(3));
        assert_eq!(
            sb.peer_slot_or_assign(11),
            Err(MetaError::PeerSlotsFull {
                node_id: 11,
                max: MAX_PEERS
            })
        );
        sb.peers[3].bitmap_uuid = 0x40;
        assert_eq!(sb.bitmap_uuid(10), 0x40);
        assert_eq!(sb.bitmap_uuid(11), 0);
        assert_eq!(Superblock::parse(&sb.encode()), Ok(sb));
    }

    #[test]
    fn history_and_attach() {
        let mut sb = Superblock::new_created(0, 5, 1 << 20, 10);
        sb.push_history(0);
        sb.push_history(UUID_JUST_CREATED);
        assert!(sb.history.is_empty());
        for i in 1..=20u64 {
            sb.push_history(i << 8);
        }
        sb.push_history(20 << 8 | 1); // already there (bit 0 ignored)
        assert_eq!(sb.history.len(), HISTORY_LEN);
        assert_eq!(sb.history[0], 20 << 8);
        assert_eq!(sb.history[15], 5 << 8);
        // Too long a history is cut (oldest dropped) when encoding.
        sb.history.push(1 << 40);
        assert_eq!(
            sb.validate(),
            Err(MetaError::HistoryTooLong { len: 17, max: 16 })
        );
        assert_eq!(Superblock::parse(&sb.encode()).unwrap().history.len(), 16);

        let mut sb = Superblock::new_created(0, 5, 1 << 20, 10);
        assert_eq!(
            sb.on_attach(),
            AttachState {
                crashed_primary: false,
                al_dirty: false
            }
        );
        assert_eq!(
            sb.on_attach(),
            AttachState {
                crashed_primary: false,
                al_dirty: true
            }
        );
        sb.flags |= meta_flag::PRIMARY | meta_flag::AL_CLEAN;
        let st = sb.on_attach();
        assert!(st.crashed_primary && !st.al_dirty);
        assert_eq!(sb.flags & meta_flag::PRIMARY, 0);
        // Still known after another restart.
        assert!(sb.on_attach().crashed_primary);
    }

    #[test]
    fn parse_never_panics() {
        let good = sample().encode();
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut accepted = 0;
        for round in 0..100_000u32 {
            let mut b = good.clone();
            for _ in 0..(round % 6 + 1) {
                let r = next();
                // Mostly hit the header, peers and history, where the fields are.
                let at = if r & 1 == 0 {
                    (r >> 8) % 400
                } else {
                    (r >> 8) % 4096
                } as usize;
                b[at] = (r >> 32) as u8;
            }
            if round % 2 == 0 {
                // Fix the crc so the field checks are reached.
                let crc = block_crc(&b, field::CRC);
                put(&mut b, field::CRC, &crc.to_le_bytes());
            }
            let len = if round % 16 == 0 {
                (next() % 4097) as usize
            } else {
                4096
            };
            if let Ok(sb) = Superblock::parse(&b[..len]) {
                accepted += 1;
                assert_eq!(sb.validate(), Ok(()));
                assert_eq!(Superblock::parse(&sb.encode()), Ok(sb));
            }
        }
        assert!(accepted > 1000, "{accepted}");
        for len in 0..=4096 {
            let _ = Superblock::parse(&good[..len]);
        }
        let random: Vec<u8> = (0..4096).map(|_| next() as u8).collect();
        assert!(Superblock::parse(&random).is_err());
    }
}
