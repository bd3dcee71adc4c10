//! Where array blocks live: the address arithmetic of every RAID level.
//!
//! A [`Layout`] is built once from the level, the strip size and the member sizes; after that
//! it answers, without allocating, "which member blocks hold array blocks `offset..offset+len`?".
//! All quantities are in blocks (the array's block size); `buf_offset` fields are block
//! offsets into the caller's buffer, so the caller multiplies by its block size.
//!
//! The placements follow Linux md so that a reader who knows md finds the data where md
//! would put it:
//!
//! - **concat** (md "linear"): members one after another; members may differ in size.
//! - **raid0**: strip `c` on member `c mod N`, row `c / N`.
//! - **raid1**: every member holds every block at the same offset.
//! - **raid10**, near layout with two copies (md "n2", layout `0x102`): the two copies of strip
//!   `c` occupy the consecutive slots `2c` and `2c+1` of a grid `N` members wide, so with an
//!   odd `N` the copies of a strip may sit on different rows.
//! - **raid5**, left-symmetric (md algorithm 2, its default): in stripe `s` parity is on
//!   member `pd = (N-1) - s mod N` and data strip `k` on member `(pd + 1 + k) mod N`.
//! - **raid6**, md's default left-symmetric: P as in raid5, Q on the member after P
//!   (`(pd + 1) mod N`) and data strip `k` on `(pd + 2 + k) mod N`. Data strip `k` is
//!   multiplied by `g^k` in Q, which is what [`crate::parity`] assumes.
//!
//! Two mappings are offered. [`Layout::map`] splits a range into [`Piece`]s that each live on
//! one strip, with every copy of it listed: reads pick one copy, mirrored writes go to all.
//! For raid5/6 it gives the data member only (a healthy read). [`Layout::map_stripes`] splits a
//! raid5/6 range into one [`StripeSpan`] per stripe, which tells a writer whether the stripe is
//! covered fully (reconstruct-write, no reads) or partly (read-modify-write candidate), and
//! lists the data extents and the parity members.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

/// Most members an array may have. It bounds the superblock's member table and lets member
/// sets be one `u64`-sized mask.
pub const MAX_MEMBERS: usize = 32;

/// md's layout number for left-symmetric parity (raid5 and raid6).
pub const MD_LAYOUT_LEFT_SYMMETRIC: u32 = 2;
/// md's layout number for raid10 "n2": near copies in the low byte, far copies (1) above it.
pub const MD_LAYOUT_RAID10_NEAR2: u32 = 0x102;

/// A RAID level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RaidLevel {
    /// Linear concatenation (md "linear", SPDK "concat").
    Concat,
    /// Striping without redundancy.
    Raid0,
    /// N-way mirror.
    Raid1,
    /// Rotating single parity, left-symmetric.
    Raid5,
    /// Rotating P+Q parity, left-symmetric with Q after P.
    Raid6,
    /// Striped mirror, near layout with two copies.
    Raid10,
}

impl RaidLevel {
    /// Every level, in md's numeric order.
    pub const ALL: [RaidLevel; 6] = [
        RaidLevel::Concat,
        RaidLevel::Raid0,
        RaidLevel::Raid1,
        RaidLevel::Raid5,
        RaidLevel::Raid6,
        RaidLevel::Raid10,
    ];

    /// The name used in RPCs and configuration (`"raid5"`, `"concat"`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            RaidLevel::Concat => "concat",
            RaidLevel::Raid0 => "raid0",
            RaidLevel::Raid1 => "raid1",
            RaidLevel::Raid5 => "raid5",
            RaidLevel::Raid6 => "raid6",
            RaidLevel::Raid10 => "raid10",
        }
    }

    /// md's level number (`-1` for linear).
    pub const fn md_level(self) -> i32 {
        match self {
            RaidLevel::Concat => -1,
            RaidLevel::Raid0 => 0,
            RaidLevel::Raid1 => 1,
            RaidLevel::Raid5 => 5,
            RaidLevel::Raid6 => 6,
            RaidLevel::Raid10 => 10,
        }
    }

    /// The level with md's number `level`, if we implement it.
    pub const fn from_md_level(level: i32) -> Option<RaidLevel> {
        match level {
            -1 => Some(RaidLevel::Concat),
            0 => Some(RaidLevel::Raid0),
            1 => Some(RaidLevel::Raid1),
            5 => Some(RaidLevel::Raid5),
            6 => Some(RaidLevel::Raid6),
            10 => Some(RaidLevel::Raid10),
            _ => None,
        }
    }

    /// The md layout number of the only layout we implement for this level.
    pub const fn md_layout(self) -> u32 {
        match self {
            RaidLevel::Raid5 | RaidLevel::Raid6 => MD_LAYOUT_LEFT_SYMMETRIC,
            RaidLevel::Raid10 => MD_LAYOUT_RAID10_NEAR2,
            RaidLevel::Concat | RaidLevel::Raid0 | RaidLevel::Raid1 => 0,
        }
    }

    /// Fewest members the level makes sense with.
    pub const fn min_members(self) -> usize {
        match self {
            RaidLevel::Concat => 1,
            RaidLevel::Raid0 | RaidLevel::Raid1 | RaidLevel::Raid10 => 2,
            RaidLevel::Raid5 => 3,
            RaidLevel::Raid6 => 4,
        }
    }

    /// Most members the level accepts.
    pub const fn max_members(self) -> usize {
        MAX_MEMBERS
    }

    /// Members per stripe that hold parity (1 for raid5, 2 for raid6, else 0).
    pub const fn parity_members(self) -> usize {
        match self {
            RaidLevel::Raid5 => 1,
            RaidLevel::Raid6 => 2,
            _ => 0,
        }
    }

    /// Whether this level uses parity stripes (and so [`Layout::map_stripes`]).
    pub const fn has_parity(self) -> bool {
        self.parity_members() > 0
    }

    /// Member failures the level survives whichever members fail (raid10 may survive more,
    /// see [`Layout::survives`]).
    pub const fn guaranteed_failures(self, members: usize) -> usize {
        match self {
            RaidLevel::Concat | RaidLevel::Raid0 => 0,
            RaidLevel::Raid1 => members.saturating_sub(1),
            RaidLevel::Raid5 => 1,
            RaidLevel::Raid6 => 2,
            RaidLevel::Raid10 => 1,
        }
    }
}

impl fmt::Display for RaidLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The text was not a level we know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown RAID level {0:?} (expected concat, raid0, raid1, raid5, raid6 or raid10)")]
pub struct UnknownLevel(pub String);

impl FromStr for RaidLevel {
    type Err = UnknownLevel;

    /// Accepts our names, SPDK's spellings (`"0"`, `"raid5f"`) and md's (`"linear"`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "concat" | "linear" => Ok(RaidLevel::Concat),
            "raid0" | "0" => Ok(RaidLevel::Raid0),
            "raid1" | "1" | "mirror" => Ok(RaidLevel::Raid1),
            "raid5" | "5" | "raid5f" => Ok(RaidLevel::Raid5),
            "raid6" | "6" => Ok(RaidLevel::Raid6),
            "raid10" | "10" => Ok(RaidLevel::Raid10),
            _ => Err(UnknownLevel(text.to_owned())),
        }
    }
}

/// Why a layout cannot be built or a range cannot be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("{level} needs at least {min} members, got {count}")]
    TooFewMembers {
        level: RaidLevel,
        count: usize,
        min: usize,
    },
    #[error("{level} accepts at most {max} members, got {count}")]
    TooManyMembers {
        level: RaidLevel,
        count: usize,
        max: usize,
    },
    #[error("strip size {0} blocks is not a power of two")]
    StripNotPowerOfTwo(u64),
    #[error("member {member} has {blocks} blocks, less than one {strip_blocks}-block strip")]
    MemberTooSmall {
        member: usize,
        blocks: u64,
        strip_blocks: u64,
    },
    #[error("blocks {offset}+{blocks} lie beyond the array's {array_blocks} blocks")]
    OutOfRange {
        offset: u64,
        blocks: u64,
        array_blocks: u64,
    },
    #[error("{0} has no parity stripes")]
    NoParity(RaidLevel),
}

/// One place a block range lives: a member and the block offset on it (relative to the
/// member's data area, i.e. after the superblock's data offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub member: usize,
    pub member_offset: u64,
}

/// The copies of one [`Piece`]; a small value so that mapping never allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Copies {
    One(Location),
    Two([Location; 2]),
    /// raid1: members `0..members`, all at the same offset.
    Every {
        members: usize,
        member_offset: u64,
    },
}

/// A part of an array range that lives within one strip (for raid1 the whole range), with
/// every copy of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// First array block of the piece.
    pub array_offset: u64,
    /// Offset of the piece in the caller's buffer, in blocks.
    pub buf_offset: u64,
    /// Length in blocks.
    pub blocks: u64,
    copies: Copies,
}

impl Piece {
    /// How many members hold this piece.
    pub fn copy_count(&self) -> usize {
        match self.copies {
            Copies::One(_) => 1,
            Copies::Two(_) => 2,
            Copies::Every { members, .. } => members,
        }
    }

    /// Copy number `index`, if there is one.
    pub fn copy(&self, index: usize) -> Option<Location> {
        match self.copies {
            Copies::One(location) => (index == 0).then_some(location),
            Copies::Two(locations) => locations.get(index).copied(),
            Copies::Every {
                members,
                member_offset,
            } => (index < members).then_some(Location {
                member: index,
                member_offset,
            }),
        }
    }

    /// Every copy: a read picks one, a write goes to all.
    pub fn copies(&self) -> impl Iterator<Item = Location> + '_ {
        (0..self.copy_count()).filter_map(move |index| self.copy(index))
    }
}

/// Which members hold the parity of one stripe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParityMembers {
    pub p: usize,
    /// raid6 only.
    pub q: Option<usize>,
}

/// What a member holds in one parity stripe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripRole {
    /// Data strip with this index (its coefficient in Q is `g^index`).
    Data(usize),
    P,
    Q,
}

/// How a stripe write can compute its new parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripeWrite {
    /// Every data block of the stripe is written: parity comes from the new data alone.
    Full,
    /// Only part is written: read-modify-write (read old data and parity) or
    /// reconstruct-write (read the untouched data), whichever reads less.
    Partial,
}

/// Address arithmetic for one array. Immutable after [`Layout::new`]; cheap to share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    level: RaidLevel,
    members: usize,
    strip_blocks: u64,
    strip_shift: u32,
    /// Blocks used on each member by the striped levels (a whole number of strips).
    member_blocks: u64,
    /// concat: where each member's part of the array ends (cumulative, strip-rounded sizes).
    concat_ends: Box<[u64]>,
    array_blocks: u64,
}

impl Layout {
    /// Builds the layout for `member_blocks.len()` members of the given sizes (blocks of data
    /// area each). Striped levels use the smallest member's size, rounded down to whole
    /// strips, on every member; concat uses each member's own size rounded down to strips.
    pub fn new(
        level: RaidLevel,
        strip_blocks: u64,
        member_blocks: &[u64],
    ) -> Result<Layout, LayoutError> {
        let count = member_blocks.len();
        if count < level.min_members() {
            return Err(LayoutError::TooFewMembers {
                level,
                count,
                min: level.min_members(),
            });
        }
        if count > level.max_members() {
            return Err(LayoutError::TooManyMembers {
                level,
                count,
                max: level.max_members(),
            });
        }
        if !strip_blocks.is_power_of_two() {
            return Err(LayoutError::StripNotPowerOfTwo(strip_blocks));
        }
        let strip_shift = strip_blocks.trailing_zeros();
        let round = |blocks: u64| blocks & !(strip_blocks - 1);
        // A member smaller than a strip would silently make the array empty (or, for concat,
        // contribute nothing); refusing says which member is at fault.
        if level != RaidLevel::Raid1 {
            if let Some((member, &blocks)) = member_blocks
                .iter()
                .enumerate()
                .find(|(_, &blocks)| blocks < strip_blocks)
            {
                return Err(LayoutError::MemberTooSmall {
                    member,
                    blocks,
                    strip_blocks,
                });
            }
        }
        let smallest = member_blocks.iter().copied().min().unwrap_or(0);
        let n = count as u64;
        let mut concat_ends = Vec::new();
        let (member_used, array_blocks) = match level {
            RaidLevel::Concat => {
                let mut end = 0u64;
                for &blocks in member_blocks {
                    end = end.saturating_add(round(blocks));
                    concat_ends.push(end);
                }
                (0, end)
            }
            // A mirror needs no strip alignment: every member holds the whole array.
            RaidLevel::Raid1 => (smallest, smallest),
            RaidLevel::Raid0 | RaidLevel::Raid5 | RaidLevel::Raid6 => {
                let used = round(smallest);
                let data = n - level.parity_members() as u64;
                (used, used.saturating_mul(data))
            }
            RaidLevel::Raid10 => {
                // 2 copies of each strip fill `N * strips_per_member` slots; an odd leftover
                // slot stays unused, as in md.
                let used = round(smallest);
                let slots = (used >> strip_shift).saturating_mul(n);
                (used, (slots / 2) << strip_shift)
            }
        };
        Ok(Layout {
            level,
            members: count,
            strip_blocks,
            strip_shift,
            member_blocks: member_used,
            concat_ends: concat_ends.into_boxed_slice(),
            array_blocks,
        })
    }

    pub fn level(&self) -> RaidLevel {
        self.level
    }

    pub fn member_count(&self) -> usize {
        self.members
    }

    pub fn strip_blocks(&self) -> u64 {
        self.strip_blocks
    }

    /// Usable size of the array in blocks.
    pub fn array_blocks(&self) -> u64 {
        self.array_blocks
    }

    /// Blocks used on member `member` (from the start of its data area).
    pub fn member_used_blocks(&self, member: usize) -> u64 {
        match self.level {
            RaidLevel::Concat => {
                let end = self.concat_ends.get(member).copied().unwrap_or(0);
                let start = member
                    .checked_sub(1)
                    .and_then(|previous| self.concat_ends.get(previous))
                    .copied()
                    .unwrap_or(0);
                end - start
            }
            _ if member < self.members => self.member_blocks,
            _ => 0,
        }
    }

    /// Data strips per stripe: raid5 `N-1`, raid6 `N-2`, raid0 `N`; 1 for the others.
    pub fn data_members(&self) -> usize {
        match self.level {
            RaidLevel::Raid0 | RaidLevel::Raid5 | RaidLevel::Raid6 => {
                self.members - self.level.parity_members()
            }
            _ => 1,
        }
    }

    /// Data blocks in one full stripe (raid0/5/6): the natural "optimal I/O" size.
    pub fn stripe_data_blocks(&self) -> u64 {
        self.strip_blocks * self.data_members() as u64
    }

    /// Number of parity stripes (rows) in the array.
    pub fn stripe_count(&self) -> u64 {
        self.member_blocks >> self.strip_shift
    }

    /// Whether the array still has every block with members `is_missing` gone.
    pub fn survives(&self, is_missing: impl Fn(usize) -> bool) -> bool {
        let missing = (0..self.members).filter(|&m| is_missing(m)).count();
        match self.level {
            RaidLevel::Concat | RaidLevel::Raid0 => missing == 0,
            RaidLevel::Raid1 => missing < self.members,
            RaidLevel::Raid5 => missing <= 1,
            RaidLevel::Raid6 => missing <= 2,
            RaidLevel::Raid10 => {
                // Strip c's copies sit on members 2c mod N and 2c+1 mod N; the pattern repeats
                // every N strips, so checking strips 0..N covers every pair that occurs.
                let n = self.members;
                (0..n).all(|c| !is_missing((2 * c) % n) || !is_missing((2 * c + 1) % n))
            }
        }
    }

    fn check_range(&self, offset: u64, blocks: u64) -> Result<(), LayoutError> {
        match offset.checked_add(blocks) {
            Some(end) if end <= self.array_blocks => Ok(()),
            _ => Err(LayoutError::OutOfRange {
                offset,
                blocks,
                array_blocks: self.array_blocks,
            }),
        }
    }

    /// Splits array blocks `offset..offset+blocks` into pieces that each live in one strip,
    /// with every copy of each. For raid5/6 each piece has one copy: its data member (parity
    /// and degraded reads are the caller's business, see [`Layout::map_stripes`] and
    /// [`Layout::role_in_stripe`]).
    pub fn map(&self, offset: u64, blocks: u64) -> Result<Pieces<'_>, LayoutError> {
        self.check_range(offset, blocks)?;
        Ok(Pieces {
            layout: self,
            next: offset,
            end: offset + blocks,
            start: offset,
        })
    }

    fn piece_at(&self, offset: u64, end: u64, start: u64) -> Piece {
        let strip = self.strip_blocks;
        let in_strip = offset & (strip - 1);
        let strip_end = |offset: u64| end.min((offset | (strip - 1)) + 1);
        let chunk = offset >> self.strip_shift;
        let (blocks, copies) = match self.level {
            RaidLevel::Raid1 => (
                end - offset,
                Copies::Every {
                    members: self.members,
                    member_offset: offset,
                },
            ),
            RaidLevel::Concat => {
                let member = self.concat_ends.partition_point(|&e| e <= offset);
                let member_start = member
                    .checked_sub(1)
                    .and_then(|previous| self.concat_ends.get(previous))
                    .copied()
                    .unwrap_or(0);
                let member_end = self.concat_ends.get(member).copied().unwrap_or(end);
                (
                    end.min(member_end) - offset,
                    Copies::One(Location {
                        member,
                        member_offset: offset - member_start,
                    }),
                )
            }
            RaidLevel::Raid0 => {
                let n = self.members as u64;
                (
                    strip_end(offset) - offset,
                    Copies::One(Location {
                        member: (chunk % n) as usize,
                        member_offset: ((chunk / n) << self.strip_shift) + in_strip,
                    }),
                )
            }
            RaidLevel::Raid5 | RaidLevel::Raid6 => {
                let data = self.data_members() as u64;
                let stripe = chunk / data;
                let member = self.data_member(stripe, (chunk % data) as usize);
                (
                    strip_end(offset) - offset,
                    Copies::One(Location {
                        member,
                        member_offset: (stripe << self.strip_shift) + in_strip,
                    }),
                )
            }
            RaidLevel::Raid10 => {
                let n = self.members as u64;
                let copy = |slot: u64| Location {
                    member: (slot % n) as usize,
                    member_offset: ((slot / n) << self.strip_shift) + in_strip,
                };
                (
                    strip_end(offset) - offset,
                    Copies::Two([copy(2 * chunk), copy(2 * chunk + 1)]),
                )
            }
        };
        Piece {
            array_offset: offset,
            buf_offset: offset - start,
            blocks,
            copies,
        }
    }

    /// The members holding P (and Q) in `stripe`. For levels without parity, member 0 is
    /// returned as P so the function stays total; callers check [`RaidLevel::has_parity`].
    pub fn parity_members(&self, stripe: u64) -> ParityMembers {
        let n = self.members as u64;
        let p = (n - 1 - stripe % n) as usize;
        let q = (self.level == RaidLevel::Raid6).then(|| (p + 1) % self.members);
        ParityMembers { p, q }
    }

    /// The member holding data strip `data_index` of `stripe` (left-symmetric: data follows
    /// the parity, wrapping round).
    pub fn data_member(&self, stripe: u64, data_index: usize) -> usize {
        let first = self.parity_members(stripe).p + self.level.parity_members().max(1);
        (first + data_index) % self.members
    }

    /// What `member` holds in `stripe`, the inverse of [`Layout::data_member`].
    pub fn role_in_stripe(&self, stripe: u64, member: usize) -> StripRole {
        let parity = self.parity_members(stripe);
        if member == parity.p {
            return StripRole::P;
        }
        if Some(member) == parity.q {
            return StripRole::Q;
        }
        let first = parity.p + self.level.parity_members().max(1);
        StripRole::Data((member + 2 * self.members - first) % self.members)
    }

    /// Splits a raid5/6 range into one span per stripe it touches.
    pub fn map_stripes(&self, offset: u64, blocks: u64) -> Result<StripeSpans<'_>, LayoutError> {
        if !self.level.has_parity() {
            return Err(LayoutError::NoParity(self.level));
        }
        self.check_range(offset, blocks)?;
        Ok(StripeSpans {
            layout: self,
            next: offset,
            end: offset + blocks,
            start: offset,
        })
    }
}

/// Iterator over the [`Piece`]s of a range; see [`Layout::map`].
#[derive(Debug, Clone)]
pub struct Pieces<'a> {
    layout: &'a Layout,
    next: u64,
    end: u64,
    start: u64,
}

impl Iterator for Pieces<'_> {
    type Item = Piece;

    fn next(&mut self) -> Option<Piece> {
        if self.next >= self.end {
            return None;
        }
        let piece = self.layout.piece_at(self.next, self.end, self.start);
        self.next += piece.blocks;
        Some(piece)
    }
}

/// Iterator over the [`StripeSpan`]s of a range; see [`Layout::map_stripes`].
#[derive(Debug, Clone)]
pub struct StripeSpans<'a> {
    layout: &'a Layout,
    next: u64,
    end: u64,
    start: u64,
}

impl<'a> Iterator for StripeSpans<'a> {
    type Item = StripeSpan<'a>;

    fn next(&mut self) -> Option<StripeSpan<'a>> {
        if self.next >= self.end {
            return None;
        }
        let stripe_blocks = self.layout.stripe_data_blocks();
        let stripe = self.next / stripe_blocks;
        let stripe_start = stripe * stripe_blocks;
        let span_end = self.end.min(stripe_start + stripe_blocks);
        let span = StripeSpan {
            layout: self.layout,
            stripe,
            start: self.next - stripe_start,
            blocks: span_end - self.next,
            buf_offset: self.next - self.start,
        };
        self.next = span_end;
        Some(span)
    }
}

/// The part of an I/O that falls in one raid5/6 stripe.
#[derive(Debug, Clone, Copy)]
pub struct StripeSpan<'a> {
    layout: &'a Layout,
    /// Stripe (row) number.
    pub stripe: u64,
    /// Offset of the span within the stripe's data, in blocks.
    pub start: u64,
    /// Length in blocks.
    pub blocks: u64,
    /// Offset of the span in the caller's buffer, in blocks.
    pub buf_offset: u64,
}

/// One data strip's share of a [`StripeSpan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataExtent {
    /// Index of the strip among the stripe's data strips (its Q coefficient is `g^index`).
    pub data_index: usize,
    pub member: usize,
    /// Block offset on the member.
    pub member_offset: u64,
    /// Offset within the strip, in blocks (the same on the parity members).
    pub strip_offset: u64,
    pub blocks: u64,
    /// Offset in the caller's buffer, in blocks.
    pub buf_offset: u64,
}

impl<'a> StripeSpan<'a> {
    /// Full-stripe (reconstruct) write or partial write.
    pub fn write_kind(&self) -> StripeWrite {
        if self.is_full_stripe() {
            StripeWrite::Full
        } else {
            StripeWrite::Partial
        }
    }

    pub fn is_full_stripe(&self) -> bool {
        self.start == 0 && self.blocks == self.layout.stripe_data_blocks()
    }

    /// Where the stripe's parity lives.
    pub fn parity(&self) -> ParityMembers {
        self.layout.parity_members(self.stripe)
    }

    /// Block offset of this stripe's row on every member.
    pub fn row_offset(&self) -> u64 {
        self.stripe << self.layout.strip_shift
    }

    /// The data extents, in data-index order (which is also buffer order).
    pub fn data_extents(&self) -> impl Iterator<Item = DataExtent> + 'a {
        let layout = self.layout;
        let strip = layout.strip_blocks;
        let (stripe, start, end, buf_offset) = (
            self.stripe,
            self.start,
            self.start + self.blocks,
            self.buf_offset,
        );
        let first = (start / strip) as usize;
        let last = ((end - 1) / strip) as usize;
        (first..=last).map(move |data_index| {
            let strip_start = data_index as u64 * strip;
            let from = start.max(strip_start);
            let to = end.min(strip_start + strip);
            DataExtent {
                data_index,
                member: layout.data_member(stripe, data_index),
                member_offset: (stripe << layout.strip_shift) + (from - strip_start),
                strip_offset: from - strip_start,
                blocks: to - from,
                buf_offset: buf_offset + (from - start),
            }
        })
    }

    /// Number of data strips the span touches.
    pub fn data_strips_touched(&self) -> usize {
        let strip = self.layout.strip_blocks;
        ((self.start + self.blocks - 1) / strip - self.start / strip + 1) as usize
    }

    /// The range within the strip (`strip_offset..`) whose parity changes: exact when one
    /// strip is touched, the whole strip when more are (their ranges then meet at the strip
    /// edges and cover it, or leave a gap small enough not to matter).
    pub fn parity_range(&self) -> Range<u64> {
        let strip = self.layout.strip_blocks;
        if self.data_strips_touched() == 1 {
            let from = self.start % strip;
            from..from + self.blocks
        } else {
            0..strip
        }
    }

    /// Member strips a read-modify-write must read: the old data it overwrites and the
    /// parity.
    pub fn rmw_reads(&self) -> usize {
        self.data_strips_touched() + self.layout.level.parity_members()
    }

    /// Member strips a reconstruct-write must read: the data strips it does not touch.
    pub fn rcw_reads(&self) -> usize {
        self.layout.data_members() - self.data_strips_touched()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(level: RaidLevel, strip: u64, members: &[u64]) -> Layout {
        Layout::new(level, strip, members).unwrap()
    }

    /// Writes, for every stripe row, the role of each member: `P`, `Q` or the array strip
    /// number it holds (the way md's documentation draws layouts).
    fn table(layout: &Layout, rows: u64) -> Vec<Vec<String>> {
        (0..rows)
            .map(|stripe| {
                (0..layout.member_count())
                    .map(|member| match layout.role_in_stripe(stripe, member) {
                        StripRole::P => "P".to_owned(),
                        StripRole::Q => "Q".to_owned(),
                        StripRole::Data(k) => {
                            (stripe * layout.data_members() as u64 + k as u64).to_string()
                        }
                    })
                    .collect()
            })
            .collect()
    }

    fn rows(text: &[&str]) -> Vec<Vec<String>> {
        text.iter()
            .map(|row| row.split_whitespace().map(str::to_owned).collect())
            .collect()
    }

    #[test]
    fn raid5_left_symmetric_matches_md_on_4_members() {
        let l = layout(RaidLevel::Raid5, 8, &[64; 4]);
        // md's left-symmetric picture (Documentation, mdadm's restripe.c geo_map).
        let expected = rows(&[
            "0 1 2 P", //
            "4 5 P 3",
            "8 P 6 7",
            "P 9 10 11",
            "12 13 14 P",
        ]);
        assert_eq!(table(&l, 5), expected);
    }

    #[test]
    fn raid5_left_symmetric_matches_md_on_5_members() {
        let l = layout(RaidLevel::Raid5, 8, &[64; 5]);
        let expected = rows(&[
            "0 1 2 3 P",
            "5 6 7 P 4",
            "10 11 P 8 9",
            "15 P 12 13 14",
            "P 16 17 18 19",
        ]);
        assert_eq!(table(&l, 5), expected);
    }

    #[test]
    fn raid6_left_symmetric_puts_q_after_p() {
        let l = layout(RaidLevel::Raid6, 8, &[64; 4]);
        let expected = rows(&[
            "Q 0 1 P", //
            "2 3 P Q", "5 P Q 4", "P Q 6 7", "Q 8 9 P",
        ]);
        assert_eq!(table(&l, 5), expected);
        let l = layout(RaidLevel::Raid6, 8, &[64; 5]);
        let expected = rows(&[
            "Q 0 1 2 P",
            "3 4 5 P Q",
            "7 8 P Q 6",
            "11 P Q 9 10",
            "P Q 12 13 14",
        ]);
        assert_eq!(table(&l, 5), expected);
    }

    #[test]
    fn role_and_data_member_are_inverse() {
        for level in [RaidLevel::Raid5, RaidLevel::Raid6] {
            for n in level.min_members()..=10 {
                let l = layout(level, 4, &vec![400; n]);
                for stripe in 0..(3 * n as u64) {
                    let parity = l.parity_members(stripe);
                    let mut seen = vec![false; n];
                    seen[parity.p] = true;
                    if let Some(q) = parity.q {
                        assert!(!seen[q]);
                        seen[q] = true;
                    }
                    for k in 0..l.data_members() {
                        let m = l.data_member(stripe, k);
                        assert!(!seen[m], "member {m} used twice in stripe {stripe}");
                        seen[m] = true;
                        assert_eq!(l.role_in_stripe(stripe, m), StripRole::Data(k));
                    }
                    assert!(seen.iter().all(|&s| s));
                }
            }
        }
    }

    #[test]
    fn array_sizes() {
        let m = [100u64, 90, 120, 95];
        assert_eq!(layout(RaidLevel::Raid0, 8, &m).array_blocks(), 88 * 4);
        assert_eq!(layout(RaidLevel::Raid5, 8, &m).array_blocks(), 88 * 3);
        assert_eq!(layout(RaidLevel::Raid6, 8, &m).array_blocks(), 88 * 2);
        assert_eq!(layout(RaidLevel::Raid1, 8, &m).array_blocks(), 90);
        assert_eq!(layout(RaidLevel::Raid10, 8, &m).array_blocks(), 88 * 2);
        // 3 members of 11 strips: 33 slots hold 16 strips twice; one slot stays unused.
        assert_eq!(
            layout(RaidLevel::Raid10, 8, &[88, 88, 95]).array_blocks(),
            16 * 8
        );
        assert_eq!(
            layout(RaidLevel::Concat, 8, &m).array_blocks(),
            96 + 88 + 120 + 88
        );
        assert_eq!(layout(RaidLevel::Concat, 8, &m).member_used_blocks(2), 120);
        assert_eq!(layout(RaidLevel::Raid5, 8, &m).member_used_blocks(3), 88);
        assert_eq!(layout(RaidLevel::Raid5, 8, &m).stripe_count(), 11);
    }

    #[test]
    fn refusals() {
        assert_eq!(
            Layout::new(RaidLevel::Raid5, 8, &[64; 2]),
            Err(LayoutError::TooFewMembers {
                level: RaidLevel::Raid5,
                count: 2,
                min: 3
            })
        );
        assert_eq!(
            Layout::new(RaidLevel::Raid6, 8, &[64; 3]).unwrap_err(),
            LayoutError::TooFewMembers {
                level: RaidLevel::Raid6,
                count: 3,
                min: 4
            }
        );
        assert!(matches!(
            Layout::new(RaidLevel::Raid0, 8, &[64; MAX_MEMBERS + 1]),
            Err(LayoutError::TooManyMembers { .. })
        ));
        assert_eq!(
            Layout::new(RaidLevel::Raid0, 12, &[64; 2]),
            Err(LayoutError::StripNotPowerOfTwo(12))
        );
        assert_eq!(
            Layout::new(RaidLevel::Raid0, 0, &[64; 2]),
            Err(LayoutError::StripNotPowerOfTwo(0))
        );
        assert_eq!(
            Layout::new(RaidLevel::Concat, 16, &[64, 8]),
            Err(LayoutError::MemberTooSmall {
                member: 1,
                blocks: 8,
                strip_blocks: 16
            })
        );
        let l = layout(RaidLevel::Raid0, 8, &[64; 2]);
        assert!(matches!(l.map(120, 9), Err(LayoutError::OutOfRange { .. })));
        assert!(matches!(
            l.map(u64::MAX, 2),
            Err(LayoutError::OutOfRange { .. })
        ));
        assert_eq!(
            l.map_stripes(0, 1).unwrap_err(),
            LayoutError::NoParity(RaidLevel::Raid0)
        );
        assert_eq!(l.map(128, 0).unwrap().count(), 0);
    }

    /// (buffer offset, blocks, [(member, member offset)]) per piece.
    type Placed = (u64, u64, Vec<(usize, u64)>);

    fn locations(l: &Layout, offset: u64, blocks: u64) -> Vec<Placed> {
        l.map(offset, blocks)
            .unwrap()
            .map(|p| {
                (
                    p.buf_offset,
                    p.blocks,
                    p.copies().map(|c| (c.member, c.member_offset)).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn raid0_striping() {
        let l = layout(RaidLevel::Raid0, 4, &[40; 3]);
        assert_eq!(
            locations(&l, 2, 12),
            vec![
                (0, 2, vec![(0, 2)]),
                (2, 4, vec![(1, 0)]),
                (6, 4, vec![(2, 0)]),
                (10, 2, vec![(0, 4)]),
            ]
        );
    }

    #[test]
    fn concat_crosses_members_of_different_sizes() {
        let l = layout(RaidLevel::Concat, 4, &[8, 16, 4]);
        assert_eq!(l.array_blocks(), 28);
        assert_eq!(
            locations(&l, 6, 22),
            vec![
                (0, 2, vec![(0, 6)]),
                (2, 16, vec![(1, 0)]),
                (18, 4, vec![(2, 0)]),
            ]
        );
        assert_eq!(locations(&l, 24, 1), vec![(0, 1, vec![(2, 0)])]);
    }

    #[test]
    fn raid1_every_member_same_offset() {
        let l = layout(RaidLevel::Raid1, 4, &[40, 50, 60]);
        assert_eq!(
            locations(&l, 5, 30),
            vec![(0, 30, vec![(0, 5), (1, 5), (2, 5)])]
        );
        let piece = l.map(5, 30).unwrap().next().unwrap();
        assert_eq!(piece.copy_count(), 3);
        assert_eq!(piece.copy(3), None);
    }

    #[test]
    fn raid10_near2_on_4_members() {
        let l = layout(RaidLevel::Raid10, 4, &[16; 4]);
        // md n2 on 4 devices:  A A B B / C C D D / ...
        assert_eq!(
            locations(&l, 0, 16),
            vec![
                (0, 4, vec![(0, 0), (1, 0)]),
                (4, 4, vec![(2, 0), (3, 0)]),
                (8, 4, vec![(0, 4), (1, 4)]),
                (12, 4, vec![(2, 4), (3, 4)]),
            ]
        );
    }

    #[test]
    fn raid10_near2_on_3_members() {
        let l = layout(RaidLevel::Raid10, 4, &[16; 3]);
        // md n2 on 3 devices:  A A B / B C C / D D E / E F F
        assert_eq!(l.array_blocks(), 24);
        assert_eq!(
            locations(&l, 2, 20),
            vec![
                (0, 2, vec![(0, 2), (1, 2)]),
                (2, 4, vec![(2, 0), (0, 4)]),
                (6, 4, vec![(1, 4), (2, 4)]),
                (10, 4, vec![(0, 8), (1, 8)]),
                (14, 4, vec![(2, 8), (0, 12)]),
                (18, 2, vec![(1, 12), (2, 12)]),
            ]
        );
    }

    #[test]
    fn raid10_survival() {
        let l4 = layout(RaidLevel::Raid10, 4, &[16; 4]);
        assert!(l4.survives(|m| m == 0 || m == 2));
        assert!(l4.survives(|m| m == 1 || m == 3));
        assert!(!l4.survives(|m| m == 0 || m == 1));
        assert!(!l4.survives(|m| m == 2 || m == 3));
        let l3 = layout(RaidLevel::Raid10, 4, &[16; 3]);
        for m in 0..3 {
            assert!(l3.survives(|x| x == m));
        }
        assert!(!l3.survives(|x| x == 0 || x == 2));
        assert!(!l3.survives(|x| x != 1));
    }

    #[test]
    fn survival_by_level() {
        let l = layout(RaidLevel::Raid6, 4, &[16; 5]);
        assert!(l.survives(|m| m == 1 || m == 4));
        assert!(!l.survives(|m| m < 3));
        let l = layout(RaidLevel::Raid5, 4, &[16; 5]);
        assert!(l.survives(|m| m == 4));
        assert!(!l.survives(|m| m == 1 || m == 4));
        let l = layout(RaidLevel::Raid1, 4, &[16; 3]);
        assert!(l.survives(|m| m != 2));
        assert!(!l.survives(|_| true));
        let l = layout(RaidLevel::Raid0, 4, &[16; 3]);
        assert!(l.survives(|_| false));
        assert!(!l.survives(|m| m == 2));
    }

    #[test]
    fn raid5_reads_map_to_data_members() {
        let l = layout(RaidLevel::Raid5, 4, &[16; 4]);
        // Array strips 3, 4, 5 are stripe 1's data on members 3, 0, 1 (row at block 4).
        assert_eq!(
            locations(&l, 13, 10),
            vec![
                (0, 3, vec![(3, 5)]),
                (3, 4, vec![(0, 4)]),
                (7, 3, vec![(1, 4)]),
            ]
        );
    }

    #[test]
    fn stripe_spans_full_and_partial() {
        let l = layout(RaidLevel::Raid5, 4, &[16; 4]);
        // Stripe = 12 data blocks. 10..40 touches stripes 0 (partial), 1, 2 (full) and 3.
        let spans: Vec<_> = l.map_stripes(10, 30).unwrap().collect();
        assert_eq!(spans.len(), 4);
        assert_eq!(
            spans
                .iter()
                .map(|s| (s.stripe, s.start, s.blocks, s.buf_offset, s.write_kind()))
                .collect::<Vec<_>>(),
            vec![
                (0, 10, 2, 0, StripeWrite::Partial),
                (1, 0, 12, 2, StripeWrite::Full),
                (2, 0, 12, 14, StripeWrite::Full),
                (3, 0, 4, 26, StripeWrite::Partial),
            ]
        );
        let full = &spans[1];
        assert_eq!(full.parity(), ParityMembers { p: 2, q: None });
        assert_eq!(full.row_offset(), 4);
        assert_eq!(
            full.data_extents().collect::<Vec<_>>(),
            vec![
                DataExtent {
                    data_index: 0,
                    member: 3,
                    member_offset: 4,
                    strip_offset: 0,
                    blocks: 4,
                    buf_offset: 2
                },
                DataExtent {
                    data_index: 1,
                    member: 0,
                    member_offset: 4,
                    strip_offset: 0,
                    blocks: 4,
                    buf_offset: 6
                },
                DataExtent {
                    data_index: 2,
                    member: 1,
                    member_offset: 4,
                    strip_offset: 0,
                    blocks: 4,
                    buf_offset: 10
                },
            ]
        );
        assert_eq!(full.rcw_reads(), 0);
        let partial = &spans[0];
        assert_eq!(partial.data_strips_touched(), 1);
        assert_eq!(partial.parity_range(), 2..4);
        assert_eq!(partial.rmw_reads(), 2);
        assert_eq!(partial.rcw_reads(), 2);
        assert_eq!(
            partial.data_extents().collect::<Vec<_>>(),
            vec![DataExtent {
                data_index: 2,
                member: 2,
                member_offset: 2,
                strip_offset: 2,
                blocks: 2,
                buf_offset: 0
            }]
        );
        // Two strips touched partly: parity range is the whole strip.
        let span = l.map_stripes(3, 3).unwrap().next().unwrap();
        assert_eq!(span.data_strips_touched(), 2);
        assert_eq!(span.parity_range(), 0..4);
    }

    #[test]
    fn raid6_stripe_spans_name_q() {
        let l = layout(RaidLevel::Raid6, 4, &[16; 5]);
        let span = l.map_stripes(9, 9).unwrap().next().unwrap();
        assert_eq!(span.stripe, 0);
        assert_eq!(span.parity(), ParityMembers { p: 4, q: Some(0) });
        assert_eq!(span.write_kind(), StripeWrite::Partial);
        assert_eq!(span.rmw_reads(), 3);
        let span = l.map_stripes(12, 12).unwrap().next().unwrap();
        assert_eq!(span.write_kind(), StripeWrite::Full);
        assert_eq!(span.parity(), ParityMembers { p: 3, q: Some(4) });
        assert_eq!(
            span.data_extents().map(|e| e.member).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
    }

    /// Every array block maps to a distinct member block (per copy) and the pieces tile the
    /// request and the buffer exactly, for every level and a spread of shapes.
    #[test]
    fn mapping_is_a_bijection() {
        for level in RaidLevel::ALL {
            for n in level.min_members()..=7 {
                let sizes: Vec<u64> = (0..n as u64).map(|i| 32 + 4 * (i % 3)).collect();
                let l = layout(level, 4, &sizes);
                let copies = match level {
                    RaidLevel::Raid1 => n,
                    RaidLevel::Raid10 => 2,
                    _ => 1,
                };
                let mut owner = vec![vec![None; 64]; n];
                let mut next = 0;
                for piece in l.map(0, l.array_blocks()).unwrap() {
                    assert_eq!(piece.array_offset, next);
                    assert_eq!(piece.buf_offset, next);
                    assert_eq!(piece.copy_count(), copies);
                    for loc in piece.copies() {
                        for b in 0..piece.blocks {
                            let slot = &mut owner[loc.member][(loc.member_offset + b) as usize];
                            assert!(
                                copies == n || slot.is_none(),
                                "{level} n={n}: member block reused"
                            );
                            *slot = Some(piece.array_offset + b);
                        }
                        assert!(
                            loc.member_offset + piece.blocks
                                <= l.member_used_blocks(loc.member).max(sizes[loc.member])
                        );
                    }
                    next += piece.blocks;
                }
                assert_eq!(next, l.array_blocks(), "{level} n={n}");
                // Small I/Os agree with the big one.
                for offset in (0..l.array_blocks()).step_by(3) {
                    let piece = l.map(offset, 1).unwrap().next().unwrap();
                    let loc = piece.copy(0).unwrap();
                    assert_eq!(owner[loc.member][loc.member_offset as usize], Some(offset));
                }
                if level.has_parity() {
                    // Stripe spans list the same data locations as the read mapping.
                    for (offset, blocks) in [(0, l.array_blocks()), (5, 17), (3, 1)] {
                        let mut total = 0;
                        for span in l.map_stripes(offset, blocks).unwrap() {
                            for extent in span.data_extents() {
                                let array_block = offset + extent.buf_offset;
                                assert_eq!(
                                    owner[extent.member][extent.member_offset as usize],
                                    Some(array_block)
                                );
                                let parity = span.parity();
                                assert_ne!(extent.member, parity.p);
                                assert_ne!(Some(extent.member), parity.q);
                                total += extent.blocks;
                            }
                        }
                        assert_eq!(total, blocks);
                    }
                }
            }
        }
    }

    #[test]
    fn level_names_round_trip() {
        for level in RaidLevel::ALL {
            assert_eq!(level.name().parse::<RaidLevel>(), Ok(level));
            assert_eq!(RaidLevel::from_md_level(level.md_level()), Some(level));
        }
        assert_eq!("linear".parse::<RaidLevel>(), Ok(RaidLevel::Concat));
        assert!("raid7".parse::<RaidLevel>().is_err());
        assert_eq!(RaidLevel::Raid10.md_layout(), 0x102);
    }
}
