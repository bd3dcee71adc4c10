//! The per-member superblock (after md's v1.2) and array assembly from superblocks.
//!
//! Every member starts with a 4 KiB superblock at byte 0 describing the whole array (so any
//! one member tells what the array is) plus which entry of the member table is this member.
//! The optional write-intent bitmap follows it, and array data starts at each member's
//! `data_offset` (default 1 MiB). All integers are little-endian. A crc32c covers the
//! `used_len` bytes actually in use (header and member table), computed with the crc field
//! zeroed.
//!
//! ```text
//!   0  magic "OXRAID01"        8  version u32        12  used_len u32      16  crc32c u32
//!  20  flags u32 (bit0 clean) 24  array uuid [16]    40  name [64] (UTF-8, NUL padded)
//! 104  level i32 (md's)      108  layout u32 (md's) 112  strip blocks u32 116  block size u32
//! 120  member count u32      124  table entries u32 128  own entry u32     132  reserved
//! 136  array blocks u64      144  events u64        152  resync offset u64 (u64::MAX = done)
//! 160  recovery offset u64 (this member's; u64::MAX = done)
//! 168  bitmap offset bytes u64 (0 = no bitmap)      176  bitmap chunk blocks u64
//! 184  update time u64 (seconds since the epoch, informative)   192..256 reserved (zero)
//! 256  member table, 64 bytes per entry: slot u32 (u32::MAX for spares), state u8, 3 reserved,
//!      member uuid [16], data offset blocks u64, data size blocks u64, 24 reserved.
//! ```
//!
//! Table entries `0..member_count` are the array's slots in order; spares follow. The
//! **events** counter goes up on every change of array state (member failure, clean/dirty
//! transition, ...). At assembly the member with the highest count is authoritative and
//! members that missed updates are stale ([`assemble`]).
//!
//! [`SuperblockView`] is the zero-copy view over bytes (reads never panic, whatever the
//! input); [`Superblock`] is the checked, owned form with [`Superblock::parse`] and
//! [`Superblock::encode`].

use crate::layout::{Layout, LayoutError, RaidLevel};

/// Bytes the superblock occupies at the start of each member.
pub const SUPERBLOCK_LEN: usize = 4096;
/// The magic at byte 0.
pub const MAGIC: [u8; 8] = *b"OXRAID01";
/// The only format version we write and read.
pub const VERSION: u32 = 1;
/// Default start of array data on each member, in bytes (md v1.2 uses 1 MiB too).
pub const DEFAULT_DATA_OFFSET_BYTES: u64 = 1 << 20;
/// Default byte offset of the bitmap: right after the superblock.
pub const DEFAULT_BITMAP_OFFSET_BYTES: u64 = SUPERBLOCK_LEN as u64;
/// Longest array name, in bytes.
pub const NAME_LEN: usize = 64;
/// `resync_offset` / `recovery_offset` value meaning "nothing left to do".
pub const OFFSET_DONE: u64 = u64::MAX;
/// Size of the fixed header before the member table.
pub const HEADER_LEN: usize = 256;
/// Size of one member-table entry.
pub const ENTRY_LEN: usize = 64;
/// Most member-table entries (slots plus spares) that fit in the superblock.
pub const MAX_ENTRIES: usize = (SUPERBLOCK_LEN - HEADER_LEN) / ENTRY_LEN;
/// Slot value stored for spares.
const NO_SLOT: u32 = u32::MAX;
/// Flag bit: the array was shut down cleanly (parity/mirrors known consistent).
const FLAG_CLEAN: u32 = 1;

/// Byte offsets of the header fields.
mod field {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 8;
    pub const USED_LEN: usize = 12;
    pub const CRC: usize = 16;
    pub const FLAGS: usize = 20;
    pub const ARRAY_UUID: usize = 24;
    pub const NAME: usize = 40;
    pub const LEVEL: usize = 104;
    pub const LAYOUT: usize = 108;
    pub const STRIP_BLOCKS: usize = 112;
    pub const BLOCK_SIZE: usize = 116;
    pub const MEMBER_COUNT: usize = 120;
    pub const ENTRY_COUNT: usize = 124;
    pub const OWN_ENTRY: usize = 128;
    pub const ARRAY_BLOCKS: usize = 136;
    pub const EVENTS: usize = 144;
    pub const RESYNC_OFFSET: usize = 152;
    pub const RECOVERY_OFFSET: usize = 160;
    pub const BITMAP_OFFSET: usize = 168;
    pub const BITMAP_CHUNK: usize = 176;
    pub const UPDATE_TIME: usize = 184;

    /// Offsets within a member-table entry.
    pub mod entry {
        pub const SLOT: usize = 0;
        pub const STATE: usize = 4;
        pub const UUID: usize = 8;
        pub const DATA_OFFSET: usize = 24;
        pub const DATA_SIZE: usize = 32;
    }
}

// Little-endian access that cannot panic: out-of-range reads give zero, and writes are
// always within the fixed 4 KiB buffer.
fn array_at<const N: usize>(buf: &[u8], offset: usize) -> [u8; N] {
    buf.get(offset..)
        .and_then(|rest| rest.first_chunk::<N>())
        .copied()
        .unwrap_or([0; N])
}

fn u32_at(buf: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(array_at(buf, offset))
}

fn u64_at(buf: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(array_at(buf, offset))
}

fn put(buf: &mut [u8], offset: usize, bytes: &[u8]) {
    if let Some(dst) = buf.get_mut(offset..offset + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

/// What a member is doing in the array, as the writer of a superblock saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberState {
    /// In service with current data.
    Active,
    /// Failed: no longer written, to be replaced.
    Faulty,
    /// Not in a slot; waits to replace a failed member.
    Spare,
    /// In a slot and written, but its data is current only below its recovery offset.
    Rebuilding,
    /// The slot's member was not present when the array last ran.
    Missing,
}

impl MemberState {
    const fn code(self) -> u8 {
        match self {
            MemberState::Active => 1,
            MemberState::Faulty => 2,
            MemberState::Spare => 3,
            MemberState::Rebuilding => 4,
            MemberState::Missing => 5,
        }
    }

    const fn from_code(code: u8) -> Option<MemberState> {
        match code {
            1 => Some(MemberState::Active),
            2 => Some(MemberState::Faulty),
            3 => Some(MemberState::Spare),
            4 => Some(MemberState::Rebuilding),
            5 => Some(MemberState::Missing),
            _ => None,
        }
    }

    /// The name shown by RPCs.
    pub const fn name(self) -> &'static str {
        match self {
            MemberState::Active => "active",
            MemberState::Faulty => "faulty",
            MemberState::Spare => "spare",
            MemberState::Rebuilding => "rebuilding",
            MemberState::Missing => "missing",
        }
    }
}

/// Why a superblock was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SuperblockError {
    #[error("superblock buffer is {len} bytes, need {need}")]
    TooShort { len: usize, need: usize },
    #[error("no oxstor RAID superblock (magic {found:02x?})")]
    BadMagic { found: [u8; 8] },
    #[error("superblock version {0} is not supported (this build reads version {VERSION})")]
    UnsupportedVersion(u32),
    #[error(
        "superblock claims {used_len} bytes in use, which does not match {entries} table entries"
    )]
    BadUsedLength { used_len: u32, entries: u32 },
    #[error("superblock checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc { stored: u32, computed: u32 },
    #[error("unknown RAID level number {0}")]
    UnknownLevel(i32),
    #[error("{level} layout {found:#x} is not supported (only md layout {expected:#x})")]
    UnsupportedLayout {
        level: RaidLevel,
        found: u32,
        expected: u32,
    },
    #[error("member table entry {entry} has unknown state {code}")]
    UnknownMemberState { entry: usize, code: u8 },
    #[error("array name is not UTF-8")]
    NameNotUtf8,
    #[error("array name is {0} bytes; at most {NAME_LEN}, without NUL bytes")]
    BadName(usize),
    #[error("array has no members")]
    NoMembers,
    #[error("{level} cannot have {count} members (allowed {min}..={max})")]
    MemberCount {
        level: RaidLevel,
        count: u32,
        min: usize,
        max: usize,
    },
    #[error("{entries} member table entries for {member_count} slots (at most {MAX_ENTRIES}, at least one per slot)")]
    EntryCount { entries: u32, member_count: u32 },
    #[error("strip size {0} blocks is not a power of two")]
    StripNotPowerOfTwo(u32),
    #[error("block size {0} is not a power of two between 512 and 65536")]
    BadBlockSize(u32),
    #[error("member table entry {entry} holds slot {slot:?} but should hold {expected:?}")]
    SlotOutOfRange {
        entry: usize,
        slot: Option<u32>,
        expected: Option<u32>,
    },
    #[error("member table entry {entry} is a {state:?} in a slot / a non-spare outside the slots")]
    StateDoesNotFitSlot { entry: usize, state: MemberState },
    #[error("own entry {own} is outside the {entries}-entry member table")]
    OwnEntryOutOfRange { own: u32, entries: u32 },
    #[error("member table lists member uuid {0:02x?} twice")]
    DuplicateMember([u8; 16]),
    #[error("impossible geometry: {0}")]
    Geometry(#[from] LayoutError),
    #[error("array size {stated} blocks exceeds the {possible} blocks its members can hold")]
    ArraySizeInconsistent { stated: u64, possible: u64 },
    #[error("{what} {offset} lies beyond {limit}")]
    OffsetBeyondEnd {
        what: &'static str,
        offset: u64,
        limit: u64,
    },
    #[error("member table entry {entry}: {reason}")]
    BadMemberArea { entry: usize, reason: &'static str },
    #[error("bitmap {0}")]
    BadBitmap(&'static str),
}

/// Read-only view over superblock bytes. [`SuperblockView::new_checked`] verifies what a
/// view needs (length, magic, version, used length, crc); field semantics are checked by
/// [`Superblock::parse`]. Accessors never panic, even on an unchecked view.
#[derive(Debug, Clone, Copy)]
pub struct SuperblockView<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> SuperblockView<T> {
    /// Wraps `buffer` without checking anything.
    pub fn new_unchecked(buffer: T) -> Self {
        SuperblockView { buffer }
    }

    /// Wraps `buffer` after checking length, magic, version, used length and crc.
    pub fn new_checked(buffer: T) -> Result<Self, SuperblockError> {
        let view = SuperblockView { buffer };
        view.check()?;
        Ok(view)
    }

    fn check(&self) -> Result<(), SuperblockError> {
        let bytes = self.buffer.as_ref();
        if bytes.len() < HEADER_LEN {
            return Err(SuperblockError::TooShort {
                len: bytes.len(),
                need: HEADER_LEN,
            });
        }
        if self.magic() != MAGIC {
            return Err(SuperblockError::BadMagic {
                found: self.magic(),
            });
        }
        if self.version() != VERSION {
            return Err(SuperblockError::UnsupportedVersion(self.version()));
        }
        let used_len = self.used_len();
        let entries = self.entry_count();
        if entries as usize > MAX_ENTRIES || used_len as usize != used_len_for(entries as usize) {
            return Err(SuperblockError::BadUsedLength { used_len, entries });
        }
        if bytes.len() < used_len as usize {
            return Err(SuperblockError::TooShort {
                len: bytes.len(),
                need: used_len as usize,
            });
        }
        let computed = checksum(&bytes[..used_len as usize]);
        if computed != self.crc() {
            return Err(SuperblockError::BadCrc {
                stored: self.crc(),
                computed,
            });
        }
        Ok(())
    }

    fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn magic(&self) -> [u8; 8] {
        array_at(self.bytes(), field::MAGIC)
    }
    pub fn version(&self) -> u32 {
        u32_at(self.bytes(), field::VERSION)
    }
    pub fn used_len(&self) -> u32 {
        u32_at(self.bytes(), field::USED_LEN)
    }
    pub fn crc(&self) -> u32 {
        u32_at(self.bytes(), field::CRC)
    }
    pub fn flags(&self) -> u32 {
        u32_at(self.bytes(), field::FLAGS)
    }
    pub fn array_uuid(&self) -> [u8; 16] {
        array_at(self.bytes(), field::ARRAY_UUID)
    }
    /// The name field up to its first NUL (raw bytes).
    pub fn name_bytes(&self) -> &[u8] {
        let field = self
            .bytes()
            .get(field::NAME..field::NAME + NAME_LEN)
            .unwrap_or_default();
        let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
        &field[..end]
    }
    pub fn md_level(&self) -> i32 {
        i32::from_le_bytes(array_at(self.bytes(), field::LEVEL))
    }
    pub fn md_layout(&self) -> u32 {
        u32_at(self.bytes(), field::LAYOUT)
    }
    pub fn strip_blocks(&self) -> u32 {
        u32_at(self.bytes(), field::STRIP_BLOCKS)
    }
    pub fn block_size(&self) -> u32 {
        u32_at(self.bytes(), field::BLOCK_SIZE)
    }
    pub fn member_count(&self) -> u32 {
        u32_at(self.bytes(), field::MEMBER_COUNT)
    }
    pub fn entry_count(&self) -> u32 {
        u32_at(self.bytes(), field::ENTRY_COUNT)
    }
    pub fn own_entry(&self) -> u32 {
        u32_at(self.bytes(), field::OWN_ENTRY)
    }
    pub fn array_blocks(&self) -> u64 {
        u64_at(self.bytes(), field::ARRAY_BLOCKS)
    }
    pub fn events(&self) -> u64 {
        u64_at(self.bytes(), field::EVENTS)
    }
    pub fn resync_offset(&self) -> u64 {
        u64_at(self.bytes(), field::RESYNC_OFFSET)
    }
    pub fn recovery_offset(&self) -> u64 {
        u64_at(self.bytes(), field::RECOVERY_OFFSET)
    }
    pub fn bitmap_offset_bytes(&self) -> u64 {
        u64_at(self.bytes(), field::BITMAP_OFFSET)
    }
    pub fn bitmap_chunk_blocks(&self) -> u64 {
        u64_at(self.bytes(), field::BITMAP_CHUNK)
    }
    pub fn update_time(&self) -> u64 {
        u64_at(self.bytes(), field::UPDATE_TIME)
    }

    fn entry_base(index: usize) -> usize {
        HEADER_LEN + index * ENTRY_LEN
    }
    /// Raw slot of table entry `index` (`u32::MAX` for spares).
    pub fn entry_slot(&self, index: usize) -> u32 {
        u32_at(self.bytes(), Self::entry_base(index) + field::entry::SLOT)
    }
    /// Raw state code of table entry `index`.
    pub fn entry_state_code(&self, index: usize) -> u8 {
        array_at::<1>(self.bytes(), Self::entry_base(index) + field::entry::STATE)[0]
    }
    pub fn entry_uuid(&self, index: usize) -> [u8; 16] {
        array_at(self.bytes(), Self::entry_base(index) + field::entry::UUID)
    }
    pub fn entry_data_offset(&self, index: usize) -> u64 {
        u64_at(
            self.bytes(),
            Self::entry_base(index) + field::entry::DATA_OFFSET,
        )
    }
    pub fn entry_data_size(&self, index: usize) -> u64 {
        u64_at(
            self.bytes(),
            Self::entry_base(index) + field::entry::DATA_SIZE,
        )
    }
}

fn used_len_for(entries: usize) -> usize {
    HEADER_LEN + entries * ENTRY_LEN
}

/// crc32c of `used` with the crc field taken as zero.
fn checksum(used: &[u8]) -> u32 {
    let before = used.get(..field::CRC).unwrap_or_default();
    let after = used.get(field::CRC + 4..).unwrap_or_default();
    let crc = crc32c::crc32c_append(crc32c::crc32c(before), &[0; 4]);
    crc32c::crc32c_append(crc, after)
}

/// One entry of the member table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberEntry {
    /// The slot (role) this member fills; `None` for spares.
    pub slot: Option<u32>,
    pub state: MemberState,
    /// Identifies the member device across restarts (written at creation or when added).
    pub uuid: [u8; 16],
    /// Where array data starts on the member, in blocks.
    pub data_offset_blocks: u64,
    /// Blocks of data area on the member.
    pub data_size_blocks: u64,
}

/// Where the write-intent bitmap lives on each member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitmapLocation {
    /// Byte offset from the start of the member (after the superblock, before the data).
    pub offset_bytes: u64,
    /// Array blocks per bitmap bit.
    pub chunk_blocks: u64,
}

/// A checked superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub array_uuid: [u8; 16],
    pub name: String,
    pub level: RaidLevel,
    pub strip_blocks: u32,
    pub block_size: u32,
    /// Slots in the array (md's raid_disks).
    pub member_count: u32,
    pub array_blocks: u64,
    pub events: u64,
    /// Array block up to which a resync has made redundancy consistent;
    /// [`OFFSET_DONE`] when none is needed.
    pub resync_offset: u64,
    /// This member's rebuild checkpoint (member blocks); [`OFFSET_DONE`] when current.
    pub recovery_offset: u64,
    /// Slots `0..member_count` in order, then spares.
    pub members: Vec<MemberEntry>,
    /// Which table entry is the member this superblock was read from.
    pub own_entry: u32,
    pub bitmap: Option<BitmapLocation>,
    /// Clean shutdown: no resync needed.
    pub clean: bool,
    /// Seconds since the epoch when written (informative only).
    pub update_time: u64,
}

impl Superblock {
    /// Parses and validates a superblock; every refusal says why.
    pub fn parse(bytes: &[u8]) -> Result<Superblock, SuperblockError> {
        let view = SuperblockView::new_checked(bytes)?;
        let md_level = view.md_level();
        let level =
            RaidLevel::from_md_level(md_level).ok_or(SuperblockError::UnknownLevel(md_level))?;
        if view.md_layout() != level.md_layout() {
            return Err(SuperblockError::UnsupportedLayout {
                level,
                found: view.md_layout(),
                expected: level.md_layout(),
            });
        }
        let name = std::str::from_utf8(view.name_bytes())
            .map_err(|_| SuperblockError::NameNotUtf8)?
            .to_owned();
        let members = (0..view.entry_count() as usize)
            .map(|entry| {
                let code = view.entry_state_code(entry);
                let state = MemberState::from_code(code)
                    .ok_or(SuperblockError::UnknownMemberState { entry, code })?;
                let slot = view.entry_slot(entry);
                Ok(MemberEntry {
                    slot: (slot != NO_SLOT).then_some(slot),
                    state,
                    uuid: view.entry_uuid(entry),
                    data_offset_blocks: view.entry_data_offset(entry),
                    data_size_blocks: view.entry_data_size(entry),
                })
            })
            .collect::<Result<Vec<_>, SuperblockError>>()?;
        let bitmap = (view.bitmap_offset_bytes() != 0).then(|| BitmapLocation {
            offset_bytes: view.bitmap_offset_bytes(),
            chunk_blocks: view.bitmap_chunk_blocks(),
        });
        let superblock = Superblock {
            array_uuid: view.array_uuid(),
            name,
            level,
            strip_blocks: view.strip_blocks(),
            block_size: view.block_size(),
            member_count: view.member_count(),
            array_blocks: view.array_blocks(),
            events: view.events(),
            resync_offset: view.resync_offset(),
            recovery_offset: view.recovery_offset(),
            members,
            own_entry: view.own_entry(),
            bitmap,
            clean: view.flags() & FLAG_CLEAN != 0,
            update_time: view.update_time(),
        };
        superblock.validate()?;
        Ok(superblock)
    }

    /// Validates, then writes the superblock into `out` (the whole 4 KiB: unused bytes are
    /// zeroed so stale table entries never survive).
    pub fn encode(&self, out: &mut [u8; SUPERBLOCK_LEN]) -> Result<(), SuperblockError> {
        self.validate()?;
        out.fill(0);
        let used_len = used_len_for(self.members.len());
        put(out, field::MAGIC, &MAGIC);
        put(out, field::VERSION, &VERSION.to_le_bytes());
        put(out, field::USED_LEN, &(used_len as u32).to_le_bytes());
        let flags = if self.clean { FLAG_CLEAN } else { 0 };
        put(out, field::FLAGS, &flags.to_le_bytes());
        put(out, field::ARRAY_UUID, &self.array_uuid);
        put(out, field::NAME, self.name.as_bytes());
        put(out, field::LEVEL, &self.level.md_level().to_le_bytes());
        put(out, field::LAYOUT, &self.level.md_layout().to_le_bytes());
        put(out, field::STRIP_BLOCKS, &self.strip_blocks.to_le_bytes());
        put(out, field::BLOCK_SIZE, &self.block_size.to_le_bytes());
        put(out, field::MEMBER_COUNT, &self.member_count.to_le_bytes());
        put(
            out,
            field::ENTRY_COUNT,
            &(self.members.len() as u32).to_le_bytes(),
        );
        put(out, field::OWN_ENTRY, &self.own_entry.to_le_bytes());
        put(out, field::ARRAY_BLOCKS, &self.array_blocks.to_le_bytes());
        put(out, field::EVENTS, &self.events.to_le_bytes());
        put(out, field::RESYNC_OFFSET, &self.resync_offset.to_le_bytes());
        put(
            out,
            field::RECOVERY_OFFSET,
            &self.recovery_offset.to_le_bytes(),
        );
        let (bitmap_offset, bitmap_chunk) = self
            .bitmap
            .map_or((0, 0), |b| (b.offset_bytes, b.chunk_blocks));
        put(out, field::BITMAP_OFFSET, &bitmap_offset.to_le_bytes());
        put(out, field::BITMAP_CHUNK, &bitmap_chunk.to_le_bytes());
        put(out, field::UPDATE_TIME, &self.update_time.to_le_bytes());
        for (index, member) in self.members.iter().enumerate() {
            let base = HEADER_LEN + index * ENTRY_LEN;
            let slot = member.slot.unwrap_or(NO_SLOT);
            put(out, base + field::entry::SLOT, &slot.to_le_bytes());
            put(out, base + field::entry::STATE, &[member.state.code()]);
            put(out, base + field::entry::UUID, &member.uuid);
            put(
                out,
                base + field::entry::DATA_OFFSET,
                &member.data_offset_blocks.to_le_bytes(),
            );
            put(
                out,
                base + field::entry::DATA_SIZE,
                &member.data_size_blocks.to_le_bytes(),
            );
        }
        let crc = checksum(&out[..used_len]);
        put(out, field::CRC, &crc.to_le_bytes());
        Ok(())
    }

    /// The entry of the member this superblock was read from.
    pub fn own(&self) -> Option<&MemberEntry> {
        self.members.get(self.own_entry as usize)
    }

    /// The entries that hold slots, in slot order.
    pub fn slots(&self) -> &[MemberEntry] {
        self.members
            .get(..self.member_count as usize)
            .unwrap_or_default()
    }

    /// The address arithmetic for this array, from the slots' data sizes.
    pub fn layout(&self) -> Result<Layout, LayoutError> {
        let sizes: Vec<u64> = self.slots().iter().map(|m| m.data_size_blocks).collect();
        Layout::new(self.level, u64::from(self.strip_blocks), &sizes)
    }

    /// Checks every field for consistency (used by both `parse` and `encode`).
    pub fn validate(&self) -> Result<(), SuperblockError> {
        if self.name.len() > NAME_LEN || self.name.as_bytes().contains(&0) {
            return Err(SuperblockError::BadName(self.name.len()));
        }
        if self.member_count == 0 {
            return Err(SuperblockError::NoMembers);
        }
        let (min, max) = (self.level.min_members(), self.level.max_members());
        if (self.member_count as usize) < min || self.member_count as usize > max {
            return Err(SuperblockError::MemberCount {
                level: self.level,
                count: self.member_count,
                min,
                max,
            });
        }
        if self.members.len() > MAX_ENTRIES || self.members.len() < self.member_count as usize {
            return Err(SuperblockError::EntryCount {
                entries: self.members.len() as u32,
                member_count: self.member_count,
            });
        }
        if !self.strip_blocks.is_power_of_two() {
            return Err(SuperblockError::StripNotPowerOfTwo(self.strip_blocks));
        }
        if !self.block_size.is_power_of_two() || !(512..=65536).contains(&self.block_size) {
            return Err(SuperblockError::BadBlockSize(self.block_size));
        }
        for (entry, member) in self.members.iter().enumerate() {
            let expected = (entry < self.member_count as usize).then_some(entry as u32);
            if member.slot != expected {
                return Err(SuperblockError::SlotOutOfRange {
                    entry,
                    slot: member.slot,
                    expected,
                });
            }
            // Slots never hold spares; outside the slots only spares (and failed former
            // spares) may be listed.
            let fits = match member.slot {
                Some(_) => member.state != MemberState::Spare,
                None => matches!(member.state, MemberState::Spare | MemberState::Faulty),
            };
            if !fits {
                return Err(SuperblockError::StateDoesNotFitSlot {
                    entry,
                    state: member.state,
                });
            }
            if self.members[..entry]
                .iter()
                .any(|earlier| earlier.uuid == member.uuid)
            {
                return Err(SuperblockError::DuplicateMember(member.uuid));
            }
            self.check_member_area(entry, member)?;
        }
        if self.own_entry as usize >= self.members.len() {
            return Err(SuperblockError::OwnEntryOutOfRange {
                own: self.own_entry,
                entries: self.members.len() as u32,
            });
        }
        let layout = self.layout()?;
        if self.array_blocks > layout.array_blocks() {
            return Err(SuperblockError::ArraySizeInconsistent {
                stated: self.array_blocks,
                possible: layout.array_blocks(),
            });
        }
        if self.resync_offset != OFFSET_DONE && self.resync_offset > self.array_blocks {
            return Err(SuperblockError::OffsetBeyondEnd {
                what: "resync offset",
                offset: self.resync_offset,
                limit: self.array_blocks,
            });
        }
        let own_size = self.own().map_or(0, |own| own.data_size_blocks);
        if self.recovery_offset != OFFSET_DONE && self.recovery_offset > own_size {
            return Err(SuperblockError::OffsetBeyondEnd {
                what: "recovery offset",
                offset: self.recovery_offset,
                limit: own_size,
            });
        }
        if let Some(bitmap) = self.bitmap {
            if bitmap.chunk_blocks == 0 || !bitmap.chunk_blocks.is_power_of_two() {
                return Err(SuperblockError::BadBitmap(
                    "chunk size is not a power of two",
                ));
            }
            if bitmap.offset_bytes < SUPERBLOCK_LEN as u64 {
                return Err(SuperblockError::BadBitmap("overlaps the superblock"));
            }
            let block = u64::from(self.block_size);
            let first_data = self
                .members
                .iter()
                .map(|m| m.data_offset_blocks.saturating_mul(block))
                .min()
                .unwrap_or(0);
            if bitmap.offset_bytes >= first_data {
                return Err(SuperblockError::BadBitmap("starts inside the data area"));
            }
        }
        Ok(())
    }

    fn check_member_area(&self, entry: usize, member: &MemberEntry) -> Result<(), SuperblockError> {
        let data_offset_bytes = member
            .data_offset_blocks
            .checked_mul(u64::from(self.block_size));
        match data_offset_bytes {
            Some(bytes) if bytes >= SUPERBLOCK_LEN as u64 => {}
            Some(_) => {
                return Err(SuperblockError::BadMemberArea {
                    entry,
                    reason: "data area overlaps the superblock",
                })
            }
            None => {
                return Err(SuperblockError::BadMemberArea {
                    entry,
                    reason: "data offset overflows",
                })
            }
        }
        if member
            .data_offset_blocks
            .checked_add(member.data_size_blocks)
            .and_then(|end| end.checked_mul(u64::from(self.block_size)))
            .is_none()
        {
            return Err(SuperblockError::BadMemberArea {
                entry,
                reason: "data area end overflows",
            });
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Assembly: deciding, from the superblocks found on candidate devices, which array they form
// and whether it can run.
// ---------------------------------------------------------------------------------------

/// What one candidate device is to the array being assembled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberClass {
    /// Up to date and in `slot`.
    Current { slot: u32 },
    /// Holds `slot` but missed updates (lower events, or the authoritative superblock marks
    /// it faulty/missing): to be rebuilt, fully or from the bitmap.
    Stale { slot: u32, events: u64 },
    /// Up to date, in `slot`, but only rebuilt below `recovery_offset`: rebuilding resumes.
    Rebuilding { slot: u32, recovery_offset: u64 },
    /// A spare of this array.
    Spare,
    /// Another array (different uuid), or a device this array no longer lists.
    Foreign,
    /// The same member device seen twice (e.g. by two paths); ignored.
    Duplicate,
}

/// Whether the assembled array may start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Every slot has a current member.
    Ready,
    /// Some slots lack a current member but every block is still readable.
    Degraded { missing_slots: Vec<u32> },
    /// Degraded *and* not shut down cleanly: a parity array's parity may be stale
    /// (the write hole), so, as in md, it must not start without an explicit force.
    DirtyDegraded { missing_slots: Vec<u32> },
    /// Too few members to serve all blocks: wait for more ("configuring").
    Configuring { missing_slots: Vec<u32> },
}

impl Readiness {
    /// Whether the array can start now (without force).
    pub fn can_run(&self) -> bool {
        matches!(self, Readiness::Ready | Readiness::Degraded { .. })
    }
}

/// The result of [`assemble`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assembly {
    pub array_uuid: [u8; 16],
    /// Index (into the candidates) of the superblock taken as the truth.
    pub authoritative: usize,
    /// Events count of the authoritative superblock.
    pub events: u64,
    /// One class per candidate, in the candidates' order.
    pub classes: Vec<MemberClass>,
    /// Per slot, the candidate serving it (current or rebuilding), if any.
    pub slots: Vec<Option<usize>>,
    pub readiness: Readiness,
}

/// Why nothing could be assembled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssemblyError {
    #[error("no candidate superblocks")]
    NoCandidates,
    #[error("no candidate belongs to array {0:02x?}")]
    ArrayNotFound([u8; 16]),
}

/// Groups candidates by array uuid: each uuid with the candidate indices carrying it, in
/// order of first appearance.
pub fn group_by_array(candidates: &[Superblock]) -> Vec<([u8; 16], Vec<usize>)> {
    let mut groups: Vec<([u8; 16], Vec<usize>)> = Vec::new();
    for (index, candidate) in candidates.iter().enumerate() {
        match groups
            .iter_mut()
            .find(|(uuid, _)| *uuid == candidate.array_uuid)
        {
            Some((_, members)) => members.push(index),
            None => groups.push((candidate.array_uuid, vec![index])),
        }
    }
    groups
}

/// Assembles array `array_uuid` (or, if `None`, the array with the most candidates, ties
/// going to the higher events count) from parsed superblocks. The highest events count is
/// authoritative; the others are classified against its member table.
pub fn assemble(
    candidates: &[Superblock],
    array_uuid: Option<[u8; 16]>,
) -> Result<Assembly, AssemblyError> {
    let groups = group_by_array(candidates);
    let max_events = |members: &[usize]| {
        members
            .iter()
            .map(|&i| candidates[i].events)
            .max()
            .unwrap_or(0)
    };
    let (uuid, members) = match array_uuid {
        Some(uuid) => groups
            .into_iter()
            .find(|(group_uuid, _)| *group_uuid == uuid)
            .ok_or(AssemblyError::ArrayNotFound(uuid))?,
        None => groups
            .into_iter()
            .max_by_key(|(_, members)| (members.len(), max_events(members)))
            .ok_or(AssemblyError::NoCandidates)?,
    };
    // Highest events wins; among equals the first found, so results are deterministic.
    let authoritative = members
        .iter()
        .copied()
        .max_by_key(|&i| (candidates[i].events, std::cmp::Reverse(i)))
        .ok_or(AssemblyError::NoCandidates)?;
    let truth = &candidates[authoritative];

    let mut classes = vec![MemberClass::Foreign; candidates.len()];
    let mut slots: Vec<Option<usize>> = vec![None; truth.member_count as usize];
    let mut seen_members: Vec<[u8; 16]> = Vec::new();
    // Visit the authoritative candidate first so a duplicate never displaces it.
    let order = std::iter::once(authoritative)
        .chain(members.iter().copied().filter(|&i| i != authoritative));
    for index in order {
        let candidate = &candidates[index];
        let Some(own) = candidate.own() else {
            continue;
        };
        if seen_members.contains(&own.uuid) {
            classes[index] = MemberClass::Duplicate;
            continue;
        }
        seen_members.push(own.uuid);
        let Some(entry) = truth.members.iter().find(|m| m.uuid == own.uuid) else {
            continue; // removed from the array since: foreign
        };
        classes[index] = match (entry.slot, entry.state) {
            (None, _) => MemberClass::Spare,
            (Some(slot), MemberState::Faulty | MemberState::Missing) => MemberClass::Stale {
                slot,
                events: candidate.events,
            },
            (Some(slot), _) if candidate.events < truth.events => MemberClass::Stale {
                slot,
                events: candidate.events,
            },
            (Some(slot), MemberState::Rebuilding) => MemberClass::Rebuilding {
                slot,
                recovery_offset: candidate.recovery_offset,
            },
            (Some(slot), _) => MemberClass::Current { slot },
        };
        if let MemberClass::Current { slot } | MemberClass::Rebuilding { slot, .. } = classes[index]
        {
            if let Some(serving) = slots.get_mut(slot as usize) {
                *serving = Some(index);
            }
        }
    }

    // A rebuilding member is written but cannot yet serve every read, so for deciding
    // whether the data is complete it counts as missing.
    let is_missing = |slot: usize| {
        !matches!(
            slots[slot].map(|i| &classes[i]),
            Some(MemberClass::Current { .. })
        )
    };
    let missing_slots: Vec<u32> = (0..slots.len())
        .filter(|&s| is_missing(s))
        .map(|s| s as u32)
        .collect();
    let readiness = if missing_slots.is_empty() {
        Readiness::Ready
    } else {
        let survives = truth
            .layout()
            .map(|layout| layout.survives(is_missing))
            .unwrap_or(false);
        let dirty = !truth.clean || truth.resync_offset != OFFSET_DONE;
        if !survives {
            Readiness::Configuring { missing_slots }
        } else if dirty && truth.level.has_parity() {
            Readiness::DirtyDegraded { missing_slots }
        } else {
            Readiness::Degraded { missing_slots }
        }
    };
    Ok(Assembly {
        array_uuid: uuid,
        authoritative,
        events: truth.events,
        classes,
        slots,
        readiness,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::MAX_MEMBERS;

    fn uuid(n: u8) -> [u8; 16] {
        [n; 16]
    }

    /// A clean 4-member raid5 as member `own` would store it.
    fn sample(own: u32) -> Superblock {
        Superblock {
            array_uuid: uuid(0xaa),
            name: "md0".to_owned(),
            level: RaidLevel::Raid5,
            strip_blocks: 128,
            block_size: 4096,
            member_count: 4,
            array_blocks: 3 * 1024,
            events: 10,
            resync_offset: OFFSET_DONE,
            recovery_offset: OFFSET_DONE,
            members: (0..4)
                .map(|slot| MemberEntry {
                    slot: Some(slot),
                    state: MemberState::Active,
                    uuid: uuid(slot as u8 + 1),
                    data_offset_blocks: 256,
                    data_size_blocks: 1024,
                })
                .chain(std::iter::once(MemberEntry {
                    slot: None,
                    state: MemberState::Spare,
                    uuid: uuid(9),
                    data_offset_blocks: 256,
                    data_size_blocks: 2048,
                }))
                .collect(),
            own_entry: own,
            bitmap: Some(BitmapLocation {
                offset_bytes: DEFAULT_BITMAP_OFFSET_BYTES,
                chunk_blocks: 16384,
            }),
            clean: true,
            update_time: 1_700_000_000,
        }
    }

    fn encoded(sb: &Superblock) -> [u8; SUPERBLOCK_LEN] {
        let mut out = [0u8; SUPERBLOCK_LEN];
        sb.encode(&mut out).unwrap();
        out
    }

    /// Encodes without validation by patching bytes and fixing the crc, to test `parse`.
    fn patched(
        sb: &Superblock,
        patch: impl FnOnce(&mut [u8; SUPERBLOCK_LEN]),
    ) -> [u8; SUPERBLOCK_LEN] {
        let mut out = encoded(sb);
        patch(&mut out);
        let used = u32_at(&out, field::USED_LEN) as usize;
        let crc = checksum(&out[..used.min(SUPERBLOCK_LEN)]);
        put(&mut out, field::CRC, &crc.to_le_bytes());
        out
    }

    #[test]
    fn round_trip() {
        let sb = sample(2);
        let bytes = encoded(&sb);
        assert_eq!(Superblock::parse(&bytes), Ok(sb.clone()));
        let view = SuperblockView::new_checked(&bytes[..]).unwrap();
        assert_eq!(view.used_len() as usize, HEADER_LEN + 5 * ENTRY_LEN);
        assert_eq!(view.name_bytes(), b"md0");
        assert_eq!(view.md_level(), 5);
        assert_eq!(view.md_layout(), 2);
        assert_eq!(sb.own().unwrap().uuid, uuid(3));
        assert_eq!(sb.layout().unwrap().array_blocks(), 3 * 1024);
        // Bytes past the used length do not matter (and are not covered by the crc).
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(&[0xff; 100]);
        assert_eq!(Superblock::parse(&longer), Ok(sb));
    }

    #[test]
    fn parse_never_panics_on_garbage() {
        let mut state = 0x1234_5678_9abc_def0u64;
        let good = encoded(&sample(0));
        for round in 0..2000 {
            let mut bytes = good;
            for _ in 0..(round % 8 + 1) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = (state % SUPERBLOCK_LEN as u64) as usize;
                bytes[at] = (state >> 32) as u8;
            }
            let len = (state >> 40) as usize % (SUPERBLOCK_LEN + 1);
            let _ = Superblock::parse(&bytes[..len]);
            let _ = Superblock::parse(&bytes);
        }
        for len in 0..300 {
            let _ = Superblock::parse(&good[..len]);
        }
    }

    #[test]
    fn refuses_structural_damage() {
        let sb = sample(0);
        let bytes = encoded(&sb);
        assert_eq!(
            Superblock::parse(&bytes[..100]),
            Err(SuperblockError::TooShort {
                len: 100,
                need: 256
            })
        );
        assert_eq!(
            Superblock::parse(&bytes[..300]),
            Err(SuperblockError::TooShort {
                len: 300,
                need: 576
            })
        );
        assert!(matches!(
            Superblock::parse(&[0u8; SUPERBLOCK_LEN]),
            Err(SuperblockError::BadMagic { .. })
        ));
        let v2 = patched(&sb, |b| put(b, field::VERSION, &2u32.to_le_bytes()));
        assert_eq!(
            Superblock::parse(&v2),
            Err(SuperblockError::UnsupportedVersion(2))
        );
        let mut flipped = bytes;
        flipped[field::EVENTS] ^= 1;
        assert!(matches!(
            Superblock::parse(&flipped),
            Err(SuperblockError::BadCrc { .. })
        ));
        let used = patched(&sb, |b| put(b, field::USED_LEN, &999u32.to_le_bytes()));
        assert_eq!(
            Superblock::parse(&used),
            Err(SuperblockError::BadUsedLength {
                used_len: 999,
                entries: 5
            })
        );
        let level = patched(&sb, |b| put(b, field::LEVEL, &4i32.to_le_bytes()));
        assert_eq!(
            Superblock::parse(&level),
            Err(SuperblockError::UnknownLevel(4))
        );
        let layout = patched(&sb, |b| put(b, field::LAYOUT, &0u32.to_le_bytes()));
        assert!(matches!(
            Superblock::parse(&layout),
            Err(SuperblockError::UnsupportedLayout {
                found: 0,
                expected: 2,
                ..
            })
        ));
        let state = patched(&sb, |b| {
            b[HEADER_LEN + ENTRY_LEN + field::entry::STATE] = 77
        });
        assert_eq!(
            Superblock::parse(&state),
            Err(SuperblockError::UnknownMemberState { entry: 1, code: 77 })
        );
        let name = patched(&sb, |b| b[field::NAME] = 0xff);
        assert_eq!(Superblock::parse(&name), Err(SuperblockError::NameNotUtf8));
    }

    /// Each inconsistent field is refused by both `encode` and `parse`, with its reason.
    #[test]
    fn refuses_impossible_geometry() {
        type Case = (Box<dyn Fn(&mut Superblock)>, SuperblockError);
        let cases: Vec<Case> = vec![
            (
                Box::new(|sb| {
                    sb.member_count = 0;
                }),
                SuperblockError::NoMembers,
            ),
            (
                Box::new(|sb| sb.member_count = 2),
                SuperblockError::MemberCount {
                    level: RaidLevel::Raid5,
                    count: 2,
                    min: 3,
                    max: MAX_MEMBERS,
                },
            ),
            (
                Box::new(|sb| sb.member_count = 6),
                SuperblockError::EntryCount {
                    entries: 5,
                    member_count: 6,
                },
            ),
            (
                Box::new(|sb| sb.strip_blocks = 96),
                SuperblockError::StripNotPowerOfTwo(96),
            ),
            (
                Box::new(|sb| sb.block_size = 4000),
                SuperblockError::BadBlockSize(4000),
            ),
            (
                Box::new(|sb| sb.members[2].slot = Some(7)),
                SuperblockError::SlotOutOfRange {
                    entry: 2,
                    slot: Some(7),
                    expected: Some(2),
                },
            ),
            (
                Box::new(|sb| sb.members[4].slot = Some(4)),
                SuperblockError::SlotOutOfRange {
                    entry: 4,
                    slot: Some(4),
                    expected: None,
                },
            ),
            (
                Box::new(|sb| sb.members[1].state = MemberState::Spare),
                SuperblockError::StateDoesNotFitSlot {
                    entry: 1,
                    state: MemberState::Spare,
                },
            ),
            (
                Box::new(|sb| sb.members[3].uuid = uuid(1)),
                SuperblockError::DuplicateMember(uuid(1)),
            ),
            (
                Box::new(|sb| sb.own_entry = 5),
                SuperblockError::OwnEntryOutOfRange { own: 5, entries: 5 },
            ),
            (
                Box::new(|sb| sb.array_blocks = 3 * 1024 + 1),
                SuperblockError::ArraySizeInconsistent {
                    stated: 3 * 1024 + 1,
                    possible: 3 * 1024,
                },
            ),
            (
                Box::new(|sb| sb.members[0].data_size_blocks = 64),
                SuperblockError::Geometry(LayoutError::MemberTooSmall {
                    member: 0,
                    blocks: 64,
                    strip_blocks: 128,
                }),
            ),
            (
                Box::new(|sb| sb.resync_offset = 5000),
                SuperblockError::OffsetBeyondEnd {
                    what: "resync offset",
                    offset: 5000,
                    limit: 3072,
                },
            ),
            (
                Box::new(|sb| sb.recovery_offset = 1025),
                SuperblockError::OffsetBeyondEnd {
                    what: "recovery offset",
                    offset: 1025,
                    limit: 1024,
                },
            ),
            (
                Box::new(|sb| sb.members[1].data_offset_blocks = 0),
                SuperblockError::BadMemberArea {
                    entry: 1,
                    reason: "data area overlaps the superblock",
                },
            ),
            (
                Box::new(|sb| sb.members[1].data_size_blocks = u64::MAX / 2),
                SuperblockError::BadMemberArea {
                    entry: 1,
                    reason: "data area end overflows",
                },
            ),
            (
                Box::new(|sb| sb.bitmap.as_mut().unwrap().offset_bytes = 512),
                SuperblockError::BadBitmap("overlaps the superblock"),
            ),
            (
                Box::new(|sb| sb.bitmap.as_mut().unwrap().offset_bytes = 1 << 20),
                SuperblockError::BadBitmap("starts inside the data area"),
            ),
            (
                Box::new(|sb| sb.bitmap.as_mut().unwrap().chunk_blocks = 3),
                SuperblockError::BadBitmap("chunk size is not a power of two"),
            ),
            (
                Box::new(|sb| sb.name = "x".repeat(65)),
                SuperblockError::BadName(65),
            ),
        ];
        for (mutate, expected) in cases {
            let mut sb = sample(0);
            mutate(&mut sb);
            let mut out = [0u8; SUPERBLOCK_LEN];
            assert_eq!(sb.encode(&mut out), Err(expected.clone()));
            // The same refusal from parse, for fields the byte format can carry.
            if !matches!(
                expected,
                SuperblockError::BadName(_) | SuperblockError::EntryCount { .. }
            ) {
                let bytes = patched(&sample(0), |b| write_unchecked(&sb, b));
                assert_eq!(Superblock::parse(&bytes), Err(expected));
            }
        }
    }

    /// Writes `sb` without validating, to feed `parse` inconsistent superblocks.
    fn write_unchecked(sb: &Superblock, out: &mut [u8; SUPERBLOCK_LEN]) {
        let valid = sample(0);
        let mut valid_bytes = [0u8; SUPERBLOCK_LEN];
        valid.encode(&mut valid_bytes).unwrap();
        *out = valid_bytes;
        put(out, field::STRIP_BLOCKS, &sb.strip_blocks.to_le_bytes());
        put(out, field::BLOCK_SIZE, &sb.block_size.to_le_bytes());
        put(out, field::MEMBER_COUNT, &sb.member_count.to_le_bytes());
        put(out, field::OWN_ENTRY, &sb.own_entry.to_le_bytes());
        put(out, field::ARRAY_BLOCKS, &sb.array_blocks.to_le_bytes());
        put(out, field::RESYNC_OFFSET, &sb.resync_offset.to_le_bytes());
        put(
            out,
            field::RECOVERY_OFFSET,
            &sb.recovery_offset.to_le_bytes(),
        );
        let bitmap = sb.bitmap.unwrap();
        put(
            out,
            field::BITMAP_OFFSET,
            &bitmap.offset_bytes.to_le_bytes(),
        );
        put(out, field::BITMAP_CHUNK, &bitmap.chunk_blocks.to_le_bytes());
        for (index, member) in sb.members.iter().enumerate() {
            let base = HEADER_LEN + index * ENTRY_LEN;
            put(out, base, &member.slot.unwrap_or(NO_SLOT).to_le_bytes());
            put(out, base + field::entry::STATE, &[member.state.code()]);
            put(out, base + field::entry::UUID, &member.uuid);
            put(
                out,
                base + field::entry::DATA_OFFSET,
                &member.data_offset_blocks.to_le_bytes(),
            );
            put(
                out,
                base + field::entry::DATA_SIZE,
                &member.data_size_blocks.to_le_bytes(),
            );
        }
    }

    /// Member `own` of the sample array, at `events`, optionally edited.
    fn member(own: u32, events: u64) -> Superblock {
        let mut sb = sample(own);
        sb.events = events;
        sb
    }

    #[test]
    fn assembly_all_current() {
        let candidates: Vec<_> = (0..5).map(|own| member(own, 10)).collect();
        let assembly = assemble(&candidates, None).unwrap();
        assert_eq!(assembly.readiness, Readiness::Ready);
        assert_eq!(assembly.authoritative, 0);
        assert_eq!(assembly.slots, vec![Some(0), Some(1), Some(2), Some(3)]);
        assert_eq!(assembly.classes[4], MemberClass::Spare);
        assert!(assembly.readiness.can_run());
    }

    #[test]
    fn assembly_stale_member_and_degraded_start() {
        // Member 1 fell behind (events 7): the others say it is faulty at events 12.
        let mut candidates: Vec<_> = (0..4).map(|own| member(own, 12)).collect();
        for sb in &mut candidates {
            sb.members[1].state = MemberState::Faulty;
        }
        candidates[1] = member(1, 7);
        let assembly = assemble(&candidates, Some(uuid(0xaa))).unwrap();
        assert_eq!(assembly.events, 12);
        assert_eq!(
            assembly.classes[1],
            MemberClass::Stale { slot: 1, events: 7 }
        );
        assert_eq!(
            assembly.readiness,
            Readiness::Degraded {
                missing_slots: vec![1]
            }
        );
        assert!(assembly.readiness.can_run());
        // Lower events alone also make a member stale.
        let mut candidates: Vec<_> = (0..4).map(|own| member(own, 12)).collect();
        candidates[3].events = 11;
        let assembly = assemble(&candidates, None).unwrap();
        assert_eq!(
            assembly.classes[3],
            MemberClass::Stale {
                slot: 3,
                events: 11
            }
        );
        assert_eq!(assembly.slots[3], None);
    }

    #[test]
    fn assembly_waits_when_too_few() {
        let candidates = vec![member(0, 10), member(2, 10)];
        let assembly = assemble(&candidates, None).unwrap();
        assert_eq!(
            assembly.readiness,
            Readiness::Configuring {
                missing_slots: vec![1, 3]
            }
        );
        assert!(!assembly.readiness.can_run());
    }

    #[test]
    fn assembly_refuses_dirty_degraded_parity() {
        let mut candidates: Vec<_> = (0..3).map(|own| member(own, 10)).collect();
        for sb in &mut candidates {
            sb.clean = false;
        }
        let assembly = assemble(&candidates, None).unwrap();
        assert_eq!(
            assembly.readiness,
            Readiness::DirtyDegraded {
                missing_slots: vec![3]
            }
        );
        assert!(!assembly.readiness.can_run());
        // A dirty degraded mirror has no write hole and may run.
        let mut mirror = member(0, 10);
        mirror.level = RaidLevel::Raid1;
        mirror.array_blocks = 1024;
        mirror.clean = false;
        let mut other = mirror.clone();
        other.own_entry = 1;
        let assembly = assemble(&[mirror, other], None).unwrap();
        assert_eq!(
            assembly.readiness,
            Readiness::Degraded {
                missing_slots: vec![2, 3]
            }
        );
    }

    #[test]
    fn assembly_foreign_duplicate_and_rebuilding() {
        let mut stranger = member(0, 99);
        stranger.array_uuid = uuid(0xbb);
        let mut rebuilding: Vec<_> = (0..4).map(|own| member(own, 10)).collect();
        for sb in &mut rebuilding {
            sb.members[2].state = MemberState::Rebuilding;
        }
        rebuilding[2].recovery_offset = 512;
        let mut candidates = rebuilding.clone();
        candidates.push(stranger);
        candidates.push(rebuilding[0].clone()); // member 0 seen twice
        let assembly = assemble(&candidates, Some(uuid(0xaa))).unwrap();
        assert_eq!(assembly.classes[4], MemberClass::Foreign);
        assert_eq!(assembly.classes[5], MemberClass::Duplicate);
        assert_eq!(
            assembly.classes[2],
            MemberClass::Rebuilding {
                slot: 2,
                recovery_offset: 512
            }
        );
        assert_eq!(assembly.slots[2], Some(2));
        assert_eq!(
            assembly.readiness,
            Readiness::Degraded {
                missing_slots: vec![2]
            }
        );
        // Without a uuid, the larger group wins even though the stranger has more events.
        assert_eq!(assemble(&candidates, None).unwrap().array_uuid, uuid(0xaa));
        assert_eq!(
            assemble(&candidates, Some(uuid(0xcc))),
            Err(AssemblyError::ArrayNotFound(uuid(0xcc)))
        );
        assert_eq!(assemble(&[], None), Err(AssemblyError::NoCandidates));
        let groups = group_by_array(&candidates);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[1], (uuid(0xbb), vec![4]));
    }

    #[test]
    fn assembly_member_removed_from_table_is_foreign() {
        let mut candidates: Vec<_> = (0..4).map(|own| member(own, 10)).collect();
        // Slot 3 was replaced by a new device (uuid 7); the old device still says slot 3.
        for sb in candidates.iter_mut().take(3) {
            sb.members[3].uuid = uuid(7);
            sb.events = 11;
        }
        let assembly = assemble(&candidates, None).unwrap();
        assert_eq!(assembly.classes[3], MemberClass::Foreign);
        assert_eq!(
            assembly.readiness,
            Readiness::Degraded {
                missing_slots: vec![3]
            }
        );
    }
}
