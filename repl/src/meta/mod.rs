//! On-disk replication metadata, after DRBD 9's internal meta data: pure modules, no I/O.
//!
//! The runtime reads and writes whole 4 KiB blocks at the offsets given by [`MetaLayout`];
//! everything here turns those blocks into state and back, and never panics on what it reads
//! (every parser is fuzzed by its tests with truncated and random input).
//!
//! # Layout (internal metadata, at the end of the backing device)
//!
//! ```text
//!  0                      data_bytes   bm_offset           al_offset        sb_offset   end
//!  | replicated data ...  | (slack)    | bitmap peer slot 0 | ... slot 3 | AL ring (8×4 KiB) | SB 4 KiB |
//! ```
//!
//! - [`superblock`]: the last 4 KiB block (of the device size rounded down to 4 KiB). Node id,
//!   device uuid, data size, the **generation UUIDs** (current, 16 history, one bitmap UUID per
//!   peer slot) and the flags (consistent, primary, clean AL, outdated, primary-at-split).
//! - [`activity_log`]: a ring of [`layout::AL_SLOTS`] transaction blocks just before the
//!   superblock. Each transaction is a snapshot of the "hot" 4 MiB extents, where writes may be
//!   in flight. After an unclean shutdown only those extents (plus the bitmaps) need resync.
//! - [`bitmap`]: [`layout::MAX_PEERS`] per-peer dirty bitmaps before the AL, one bit per 4 KiB
//!   of data ("this block may differ on that peer"). Each peer's area is a whole number of
//!   4 KiB pages, so any page can be rewritten alone.
//! - Data from byte 0 up to `data_bytes`, a multiple of both 4 KiB and the bdev block size.
//!
//! # Model (DRBD 9, `drbd_md.md` A5–A7)
//!
//! - **Generation UUIDs.** The *current* UUID names the data generation. A Primary that loses
//!   a peer starts a new generation on its first write ([`generation::new_generation`]): the
//!   old current is kept as the *bitmap UUID* of each absent peer's slot (the generation that
//!   peer still has), and that slot's bitmap records every block written since. When a resync
//!   finishes the source moves the bitmap UUID into the *history* and the target adopts the
//!   source's current UUID ([`generation::finish_resync_as_source`],
//!   [`generation::finish_resync_as_target`]).
//! - **Handshake.** [`generation::decide`] compares both nodes' UUIDs (and flags) and says who
//!   syncs from whom, bitmap-based or full, or detects split brain (auto-resolved only by the
//!   configured after-sb policy) or unrelated data.
//! - **Activity log.** Before a write to a cold extent may start, a transaction naming that
//!   extent must be on disk ([`activity_log::ActivityLog::begin`] / `prepare_commit` /
//!   `commit_done`). Before a transaction drops an extent, the bitmap pages covering it must
//!   be on disk, so a crash loses neither.
//! - **Bitmaps** are kept in memory ([`bitmap::Bitmap`]); the runtime writes back only the
//!   pages changed since their last write ([`bitmap::Bitmap::dirty_pages`]).

pub mod activity_log;
pub mod bitmap;
pub mod generation;
pub mod layout;
pub mod superblock;

pub use activity_log::{ActivityLog, Begin};
pub use bitmap::Bitmap;
pub use generation::{decide, AfterSb, GenView, Resolution, SyncDecision};
pub use layout::MetaLayout;
pub use superblock::{PeerSlot, Superblock};

/// Why metadata (or a request about it) was refused. Shared by every module of [`meta`](self).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    #[error("block size {0} is not a power of two between 512 and 65536")]
    BadBlockSize(u32),
    #[error(
        "device of {device_bytes} bytes is too small: {data_bytes} data bytes would remain \
         after the metadata, need at least {min_data}"
    )]
    DeviceTooSmall {
        device_bytes: u64,
        data_bytes: u64,
        min_data: u64,
    },
    #[error("{what} buffer is {len} bytes, need {need}")]
    TooShort {
        what: &'static str,
        len: usize,
        need: usize,
    },
    #[error("not a {what} (magic {found:#x})")]
    BadMagic { what: &'static str, found: u64 },
    #[error("{what} version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion {
        what: &'static str,
        found: u32,
        supported: u32,
    },
    #[error("{what} checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc {
        what: &'static str,
        stored: u32,
        computed: u32,
    },
    #[error("superblock {field} is {found}, this build uses {expected}")]
    Geometry {
        field: &'static str,
        found: u64,
        expected: u64,
    },
    #[error("activity log capacity {found} extents is outside 1..={max}")]
    BadAlCapacity { found: u64, max: u64 },
    #[error("superblock holds {len} history UUIDs, at most {max}")]
    HistoryTooLong { len: usize, max: usize },
    #[error("node id {0} is above the maximum 31")]
    BadNodeId(u8),
    #[error("peer slot {slot} holds node id {node_id}, above the maximum 31")]
    BadPeerNodeId { slot: usize, node_id: u8 },
    #[error("peer slot {slot} holds node id {node_id}, which is this node's own id")]
    PeerIsSelf { slot: usize, node_id: u8 },
    #[error("node id {node_id} holds two peer slots ({first} and {second})")]
    DuplicatePeer {
        node_id: u8,
        first: usize,
        second: usize,
    },
    #[error("no free peer slot for node id {node_id}: all {max} slots are taken")]
    PeerSlotsFull { node_id: u8, max: usize },
    #[error("bitmap page {page} is outside the bitmap's {pages} pages")]
    PageOutOfRange { page: u64, pages: u64 },
    #[error("activity log recovery needs {expected} slot blocks, got {found}")]
    WrongSlotCount { found: usize, expected: usize },
    #[error("activity log transaction lists {count} extents, at most {max} fit")]
    BadAlCount { count: u32, max: u32 },
    #[error(
        "metadata describes {stored} data bytes, the device layout has {layout} (resize is \
         not supported)"
    )]
    DataSizeMismatch { stored: u64, layout: u64 },
    #[error(
        "unknown after-sb-0pri policy '{0}' (disconnect, discard-zero-changes, \
         discard-younger-primary, discard-older-primary, discard-least-changes, discard-node-NAME)"
    )]
    UnknownPolicy(String),
    #[error("after-sb-0pri discard-node-{0}: no such node in the resource")]
    UnknownNode(String),
    #[error("after-sb-0pri discard-node-{0}: the node name must be resolved to a node id")]
    UnresolvedNode(String),
}
