//! The replication wire protocol: packet headers and bodies, as pure encode/parse functions.
//!
//! After DRBD's, in our own format. Every packet is a 16-byte big-endian header
//! (magic `OXRP`, volume, command, payload length, reserved) followed by the payload. Bodies
//! have a fixed part; `Data` and `RsData` carry block data after it, which the receiver reads
//! straight into a DMA buffer (so this module never sees or copies it), and a few packets carry
//! a variable list (bitmap words, per-block digests, UUID history).
//!
//! Each peer has two TCP connections: the *data* stream (writes, barriers, resync data,
//! bitmaps, verify requests) and the *meta* stream (acks, pings), so an ack never waits behind
//! bulk data. The first packet on each says which one it is.
//!
//! Parsing never panics: every read is length-checked and any inconsistency is a
//! [`WireError`], which costs the peer its connection.
//!
//! # Layouts
//!
//! All integers are big-endian; offsets are in bytes from the start of the header or body.
//! `pad` bytes are sent as zero and rejected if not zero, so every packet has exactly one
//! encoding (parse then encode gives back the bytes received).
//!
//! Header (16 bytes): `0` magic u32 · `4` volume u16 · `6` cmd u16 · `8` len u32 (payload bytes
//! after the header) · `12` reserved u32 (0).
//!
//! | command | body (offset type field) | fixed | total payload |
//! |---|---|---|---|
//! | InitialData, InitialMeta | 0 u32 sender_node_id · 4 u32 receiver_node_id · 8 u16 name_len · 10 name (UTF-8, ≤ MAX_NAME) | 10 | 10 + name_len |
//! | Features | 0 u32 proto_min · 4 u32 proto_max · 8 u32 feature_flags · 12 u32 sender_node_id · 16 u32 receiver_node_id | 20 | 20 |
//! | Protocol | 0 u32 flags · 4 u8 protocol · 5 u8 after_sb_0pri · 6 u8 after_sb_1pri · 7 u8 after_sb_2pri · 8 u8 discard_node · 9 pad[3] | 12 | 12 |
//! | Uuids | 0 u64 current · 8 u64 flags · 16 u64 dirty_blocks · 24 u8 nb · nb × (u8 node_id, u64 uuid) · u8 nh · nh × u64 history | 26 | 26 + 9·nb + 8·nh (nb, nh ≤ MAX_UUIDS) |
//! | Sizes | 0 u64 data_blocks · 8 u32 block_size · 12 u32 max_transfer_blocks | 16 | 16 |
//! | State | 0 u8 role · 1 u8 disk · 2 u16 flags | 4 | 4 |
//! | Data | 0 u64 offset_blocks · 8 u32 num_blocks · 12 u32 flags · 16 u64 block_id · 24 u32 seq · 28 u32 epoch · 32 block data | 32 | 32 + data |
//! | Barrier, BarrierAck | 0 u32 epoch · 4 u32 set_size | 8 | 8 |
//! | RecvAck, WriteAck, NegAck, RsWriteAck | 0 u64 block_id · 8 u32 seq · 12 u32 status | 16 | 16 |
//! | Ping, PingAck | (empty) | 0 | 0 |
//! | Bitmap | 0 u64 total_bits · 8 u64 first_word · 16 u8 last (0/1) · 17 pad[3] · 20 u32 n · 24 n × u64 words | 24 | 24 + 8·n |
//! | RsData | 0 u64 offset_blocks · 8 u32 num_blocks · 12 pad u32 · 16 u64 block_id · 24 block data | 24 | 24 + data |
//! | SyncDone | 0 u64 current · 8 u64 resynced_blocks | 16 | 16 |
//! | OvRequest, OutOfSync (Range) | 0 u64 offset_blocks · 8 u32 num_blocks · 12 pad u32 · 16 u64 block_id | 24 | 24 |
//! | OvReply | 0 Range (24 bytes, as above) · 24 u32 n (= num_blocks) · 28 n × u32 crc32c | 28 | 28 + 4·n |
//!
//! Bitmap words must lie inside the map: `first_word + n ≤ ⌈total_bits / 64⌉`.
//!
//! [`Header::parse`] already bounds `len` per command: fixed-size bodies must match exactly,
//! `Initial*` and `Uuids` may not exceed their largest valid size, everything else
//! `MAX_PAYLOAD`. So a receiver can size its read buffer from a parsed header.

use thiserror::Error;

pub const MAGIC: u32 = 0x4f58_5250; // "OXRP"
pub const HEADER_LEN: usize = 16;
/// Protocol versions this build speaks; the agreed version is min(both maxima).
pub const PROTO_MIN: u32 = 1;
pub const PROTO_MAX: u32 = 1;
/// Largest payload we accept (block data up to 1 MiB plus its fixed body).
pub const MAX_PAYLOAD: u32 = (1 << 20) + 4096;
/// Largest resource name carried in `Initial`.
pub const MAX_NAME: usize = 64;
/// Most entries in a UUID list (bitmap UUIDs per peer, history).
pub const MAX_UUIDS: usize = 32;

/// Feature flags exchanged in `Features`.
pub mod feature {
    pub const WRITE_ZEROES: u32 = 1;
    pub const TRIM: u32 = 2;
    pub const ONLINE_VERIFY: u32 = 4;
}

/// `Data.flags`.
pub mod data_flag {
    pub const FUA: u32 = 1;
    pub const FLUSH: u32 = 2;
    pub const ZEROES: u32 = 4;
    pub const DISCARD: u32 = 8;
}

/// `Uuids.flags`: what the sender's metadata says about its history (one set of bits, shared
/// with the generation comparison that reads them).
pub use crate::meta::generation::gen_flag as uuid_flag;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("bad magic {0:#010x}")]
    BadMagic(u32),
    #[error("unknown command {0:#06x}")]
    UnknownCommand(u16),
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    TooLong { len: u32, max: u32 },
    #[error("{cmd:?}: payload of {len} bytes is shorter than its {need}-byte body")]
    TooShort { cmd: Cmd, len: u32, need: u32 },
    #[error("{cmd:?}: payload of {len} bytes does not match its contents ({expect} expected)")]
    BadLength { cmd: Cmd, len: u32, expect: u32 },
    #[error("reserved header field is {0:#x}, not 0")]
    Reserved(u32),
    #[error("{0}")]
    Invalid(&'static str),
}

/// Packet commands. Values are the wire encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Cmd {
    // first packet on a socket
    InitialData = 0x0001,
    InitialMeta = 0x0002,
    // handshake (data stream, both directions)
    Features = 0x0003,
    Protocol = 0x0004,
    Uuids = 0x0005,
    Sizes = 0x0006,
    State = 0x0007,
    // replication (data stream)
    Data = 0x0010,
    Barrier = 0x0011,
    // acks (meta stream)
    BarrierAck = 0x0012,
    RecvAck = 0x0013,
    WriteAck = 0x0014,
    NegAck = 0x0015,
    Ping = 0x0016,
    PingAck = 0x0017,
    // resync (source pushes; target acks on meta)
    Bitmap = 0x0018,
    RsData = 0x0019,
    RsWriteAck = 0x001a,
    SyncDone = 0x001b,
    // online verify
    OvRequest = 0x001c,
    OvReply = 0x001d,
    OutOfSync = 0x001e,
}

impl Cmd {
    pub fn from_u16(v: u16) -> Option<Cmd> {
        Some(match v {
            0x0001 => Cmd::InitialData,
            0x0002 => Cmd::InitialMeta,
            0x0003 => Cmd::Features,
            0x0004 => Cmd::Protocol,
            0x0005 => Cmd::Uuids,
            0x0006 => Cmd::Sizes,
            0x0007 => Cmd::State,
            0x0010 => Cmd::Data,
            0x0011 => Cmd::Barrier,
            0x0012 => Cmd::BarrierAck,
            0x0013 => Cmd::RecvAck,
            0x0014 => Cmd::WriteAck,
            0x0015 => Cmd::NegAck,
            0x0016 => Cmd::Ping,
            0x0017 => Cmd::PingAck,
            0x0018 => Cmd::Bitmap,
            0x0019 => Cmd::RsData,
            0x001a => Cmd::RsWriteAck,
            0x001b => Cmd::SyncDone,
            0x001c => Cmd::OvRequest,
            0x001d => Cmd::OvReply,
            0x001e => Cmd::OutOfSync,
            _ => return None,
        })
    }

    /// Whether block data follows the fixed body (received into a DMA buffer by the caller).
    pub fn carries_data(self) -> bool {
        matches!(self, Cmd::Data | Cmd::RsData)
    }

    /// Size of the fixed body; for `carries_data` commands the data follows it, for variable
    /// bodies (`Initial*`, `Uuids`, `Bitmap`, `OvReply`) this is the minimum.
    pub fn body_len(self) -> usize {
        match self {
            Cmd::InitialData | Cmd::InitialMeta => INITIAL_FIXED_LEN,
            Cmd::Features => 20,
            Cmd::Protocol => 12,
            Cmd::Uuids => UUIDS_FIXED_LEN,
            Cmd::Sizes => 16,
            Cmd::State => 4,
            Cmd::Data => 32,
            Cmd::Barrier | Cmd::BarrierAck => 8,
            Cmd::RecvAck | Cmd::WriteAck | Cmd::NegAck | Cmd::RsWriteAck => 16,
            Cmd::Ping | Cmd::PingAck => 0,
            Cmd::Bitmap => BITMAP_FIXED_LEN,
            Cmd::RsData => 24,
            Cmd::SyncDone => 16,
            Cmd::OvRequest | Cmd::OutOfSync => RANGE_LEN,
            Cmd::OvReply => OV_REPLY_FIXED_LEN,
        }
    }

    /// Whether the body is a variable list whose length its own count fields determine.
    fn is_variable(self) -> bool {
        matches!(
            self,
            Cmd::InitialData | Cmd::InitialMeta | Cmd::Uuids | Cmd::Bitmap | Cmd::OvReply
        )
    }

    /// Largest payload a valid packet of this command can have.
    fn max_len(self) -> u32 {
        match self {
            Cmd::InitialData | Cmd::InitialMeta => len_u32(INITIAL_FIXED_LEN + MAX_NAME),
            Cmd::Uuids => len_u32(UUIDS_FIXED_LEN + MAX_UUIDS * (UUID_ENTRY_LEN + 8)),
            Cmd::Data | Cmd::RsData | Cmd::Bitmap | Cmd::OvReply => MAX_PAYLOAD,
            fixed => len_u32(fixed.body_len()),
        }
    }
}

/// Fixed part of `Initial*`: two node ids and the name length.
const INITIAL_FIXED_LEN: usize = 10;
/// Fixed part of `Uuids` up to and including both list counts.
const UUIDS_FIXED_LEN: usize = 26;
/// One `(node id, bitmap UUID)` entry of `Uuids`.
const UUID_ENTRY_LEN: usize = 9;
/// Fixed part of `Bitmap` up to and including the word count.
const BITMAP_FIXED_LEN: usize = 24;
/// `Range` (OvRequest, OutOfSync, and the head of OvReply).
const RANGE_LEN: usize = 24;
/// `Range` plus the digest count.
const OV_REPLY_FIXED_LEN: usize = 28;

/// A length as the u32 the wire carries, saturating (only absurd in-memory lengths saturate,
/// and the result is then rejected as too long).
fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// Bounds-checked big-endian reader over one packet body. Running off the end is a
/// `TooShort` error naming how many bytes the contents read so far call for.
struct Reader<'a> {
    cmd: Cmd,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(cmd: Cmd, buf: &'a [u8]) -> Self {
        Reader { cmd, buf, pos: 0 }
    }

    fn short(&self, n: usize) -> WireError {
        WireError::TooShort {
            cmd: self.cmd,
            len: len_u32(self.buf.len()),
            need: len_u32(self.pos.saturating_add(n)),
        }
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let buf = self.buf;
        let end = self.pos.checked_add(n).ok_or_else(|| self.short(n))?;
        let out = buf.get(self.pos..end).ok_or_else(|| self.short(n))?;
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let bytes = self.bytes(N)?;
        bytes
            .first_chunk::<N>()
            .copied()
            .ok_or_else(|| self.short(N))
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        self.array::<1>().map(|[b]| b)
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        self.array().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        self.array().map(u64::from_be_bytes)
    }

    /// Padding: `n` bytes that must be zero.
    fn pad(&mut self, n: usize) -> Result<(), WireError> {
        if self.bytes(n)?.iter().all(|&b| b == 0) {
            Ok(())
        } else {
            Err(WireError::Invalid("padding bytes are not zero"))
        }
    }

    /// Checks that the body has exactly `expect` bytes in all (the length its counts call
    /// for), before anything is read or allocated from those counts. Callers compute
    /// `expect` in u64 from at most a u32 count times 9, which cannot overflow.
    fn expect_len(&self, expect: u64) -> Result<(), WireError> {
        if u64::try_from(self.buf.len()).ok() == Some(expect) {
            Ok(())
        } else {
            Err(WireError::BadLength {
                cmd: self.cmd,
                len: len_u32(self.buf.len()),
                expect: u32::try_from(expect).unwrap_or(u32::MAX),
            })
        }
    }

    /// Every byte must have been consumed.
    fn finish(self) -> Result<(), WireError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(WireError::BadLength {
                cmd: self.cmd,
                len: len_u32(self.buf.len()),
                expect: len_u32(self.pos),
            })
        }
    }

    fn range(&mut self) -> Result<Range, WireError> {
        let offset_blocks = self.u64()?;
        let num_blocks = self.u32()?;
        self.pad(4)?;
        let block_id = self.u64()?;
        Ok(Range {
            offset_blocks,
            num_blocks,
            block_id,
        })
    }

    fn initial(&mut self) -> Result<Initial, WireError> {
        let sender_node_id = self.u32()?;
        let receiver_node_id = self.u32()?;
        let name_len = usize::from(self.u16()?);
        if name_len > MAX_NAME {
            return Err(WireError::Invalid("resource name longer than MAX_NAME"));
        }
        self.expect_len(INITIAL_FIXED_LEN as u64 + name_len as u64)?;
        let name = std::str::from_utf8(self.bytes(name_len)?)
            .map_err(|_| WireError::Invalid("resource name is not UTF-8"))?;
        Ok(Initial {
            sender_node_id,
            receiver_node_id,
            resource: name.to_owned(),
        })
    }

    fn uuids(&mut self) -> Result<Uuids, WireError> {
        let current = self.u64()?;
        let flags = self.u64()?;
        let dirty_blocks = self.u64()?;
        let nb = usize::from(self.u8()?);
        if nb > MAX_UUIDS {
            return Err(WireError::Invalid("more than MAX_UUIDS bitmap UUIDs"));
        }
        let mut bitmap = Vec::with_capacity(nb);
        for _ in 0..nb {
            let node = self.u8()?;
            bitmap.push((node, self.u64()?));
        }
        let nh = usize::from(self.u8()?);
        if nh > MAX_UUIDS {
            return Err(WireError::Invalid("more than MAX_UUIDS history UUIDs"));
        }
        self.expect_len(UUIDS_FIXED_LEN as u64 + (nb * UUID_ENTRY_LEN) as u64 + (nh as u64) * 8)?;
        let mut history = Vec::with_capacity(nh);
        for _ in 0..nh {
            history.push(self.u64()?);
        }
        Ok(Uuids {
            current,
            bitmap,
            history,
            flags,
            dirty_blocks,
        })
    }

    fn bitmap(&mut self) -> Result<Bitmap, WireError> {
        let total_bits = self.u64()?;
        let first_word = self.u64()?;
        let last = match self.u8()? {
            0 => false,
            1 => true,
            _ => return Err(WireError::Invalid("bitmap last flag is neither 0 nor 1")),
        };
        self.pad(3)?;
        let n = self.u32()?;
        self.expect_len(BITMAP_FIXED_LEN as u64 + u64::from(n) * 8)?;
        let map_words = total_bits.div_ceil(64);
        if first_word
            .checked_add(u64::from(n))
            .is_none_or(|end| end > map_words)
        {
            return Err(WireError::Invalid("bitmap words beyond total_bits"));
        }
        // `n` is bounded by the payload length checked above.
        let mut words = Vec::with_capacity(n as usize);
        for _ in 0..n {
            words.push(self.u64()?);
        }
        Ok(Bitmap {
            total_bits,
            first_word,
            last,
            words,
        })
    }

    fn ov_reply(&mut self) -> Result<OvReply, WireError> {
        let range = self.range()?;
        let n = self.u32()?;
        if n != range.num_blocks {
            return Err(WireError::Invalid(
                "OvReply digest count differs from num_blocks",
            ));
        }
        self.expect_len(OV_REPLY_FIXED_LEN as u64 + u64::from(n) * 4)?;
        // `n` is bounded by the payload length checked above.
        let mut digests = Vec::with_capacity(n as usize);
        for _ in 0..n {
            digests.push(self.u32()?);
        }
        Ok(OvReply { range, digests })
    }
}

/// Big-endian writer for packet bodies.
struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn pad(&mut self, n: usize) {
        self.0.resize(self.0.len() + n, 0);
    }

    fn range(&mut self, r: &Range) {
        self.u64(r.offset_blocks);
        self.u32(r.num_blocks);
        self.pad(4);
        self.u64(r.block_id);
    }

    fn ack(&mut self, a: &Ack) {
        self.u64(a.block_id);
        self.u32(a.seq);
        self.u32(a.status);
    }

    fn barrier(&mut self, b: &Barrier) {
        self.u32(b.epoch);
        self.u32(b.set_size);
    }

    /// Counts are written as the field can hold them; a longer list is cut to match, so the
    /// bytes stay self-consistent (the peer then rejects what is over its limits).
    fn initial(&mut self, i: &Initial) {
        let name = i.resource.as_bytes();
        let n = u16::try_from(name.len()).unwrap_or(u16::MAX);
        self.u32(i.sender_node_id);
        self.u32(i.receiver_node_id);
        self.u16(n);
        self.0
            .extend_from_slice(name.get(..usize::from(n)).unwrap_or_default());
    }

    fn uuids(&mut self, u: &Uuids) {
        self.u64(u.current);
        self.u64(u.flags);
        self.u64(u.dirty_blocks);
        let nb = u8::try_from(u.bitmap.len()).unwrap_or(u8::MAX);
        self.u8(nb);
        for &(node, uuid) in u.bitmap.iter().take(usize::from(nb)) {
            self.u8(node);
            self.u64(uuid);
        }
        let nh = u8::try_from(u.history.len()).unwrap_or(u8::MAX);
        self.u8(nh);
        for &uuid in u.history.iter().take(usize::from(nh)) {
            self.u64(uuid);
        }
    }

    fn bitmap(&mut self, b: &Bitmap) {
        self.u64(b.total_bits);
        self.u64(b.first_word);
        self.u8(u8::from(b.last));
        self.pad(3);
        let n = len_u32(b.words.len());
        self.u32(n);
        for &w in b.words.iter().take(n as usize) {
            self.u64(w);
        }
    }

    fn ov_reply(&mut self, o: &OvReply) {
        self.range(&o.range);
        let n = len_u32(o.digests.len());
        self.u32(n);
        for &d in o.digests.iter().take(n as usize) {
            self.u32(d);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub volume: u16,
    pub cmd: Cmd,
    /// Payload bytes after the header (fixed body + data or list).
    pub len: u32,
}

impl Header {
    /// Checks magic, command, reserved field, `len ≤ MAX_PAYLOAD` and `len ≥ cmd.body_len()`.
    ///
    /// Also, per command: fixed-size bodies must be exactly `body_len` (`BadLength`), and
    /// `Initial*`/`Uuids` may not exceed their largest valid size (`TooLong`).
    pub fn parse(b: &[u8; HEADER_LEN]) -> Result<Header, WireError> {
        let [m0, m1, m2, m3, v0, v1, c0, c1, l0, l1, l2, l3, r0, r1, r2, r3] = *b;
        let magic = u32::from_be_bytes([m0, m1, m2, m3]);
        if magic != MAGIC {
            return Err(WireError::BadMagic(magic));
        }
        let raw = u16::from_be_bytes([c0, c1]);
        let cmd = Cmd::from_u16(raw).ok_or(WireError::UnknownCommand(raw))?;
        let reserved = u32::from_be_bytes([r0, r1, r2, r3]);
        if reserved != 0 {
            return Err(WireError::Reserved(reserved));
        }
        let len = u32::from_be_bytes([l0, l1, l2, l3]);
        if len > MAX_PAYLOAD {
            return Err(WireError::TooLong {
                len,
                max: MAX_PAYLOAD,
            });
        }
        let need = len_u32(cmd.body_len());
        if len < need {
            return Err(WireError::TooShort { cmd, len, need });
        }
        if !cmd.carries_data() && !cmd.is_variable() && len != need {
            return Err(WireError::BadLength {
                cmd,
                len,
                expect: need,
            });
        }
        let max = cmd.max_len();
        if len > max {
            return Err(WireError::TooLong { len, max });
        }
        Ok(Header {
            volume: u16::from_be_bytes([v0, v1]),
            cmd,
            len,
        })
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let [m0, m1, m2, m3] = MAGIC.to_be_bytes();
        let [v0, v1] = self.volume.to_be_bytes();
        let [c0, c1] = (self.cmd as u16).to_be_bytes();
        let [l0, l1, l2, l3] = self.len.to_be_bytes();
        [m0, m1, m2, m3, v0, v1, c0, c1, l0, l1, l2, l3, 0, 0, 0, 0]
    }
}

/// First packet on each socket: which stream it is and who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Initial {
    pub sender_node_id: u32,
    pub receiver_node_id: u32,
    /// Resource name (≤ MAX_NAME bytes, UTF-8).
    pub resource: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    pub proto_min: u32,
    pub proto_max: u32,
    pub feature_flags: u32,
    pub sender_node_id: u32,
    pub receiver_node_id: u32,
}

/// Replication protocol and split-brain policies; both sides must agree on `protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protocol {
    /// b'A', b'B' or b'C'.
    pub protocol: u8,
    pub after_sb_0pri: u8,
    pub after_sb_1pri: u8,
    pub after_sb_2pri: u8,
    /// Node id named by `discard-node-NAME`, or 0xff.
    pub discard_node: u8,
    pub flags: u32,
}

/// Generation identifiers and what the sender knows about its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uuids {
    pub current: u64,
    /// (peer node id, bitmap UUID) for every peer slot in the sender's metadata.
    pub bitmap: Vec<(u8, u64)>,
    /// Newest first.
    pub history: Vec<u64>,
    pub flags: u64,
    /// Bits set in the sender's bitmap for the receiver (blocks it believes out of sync).
    pub dirty_blocks: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// Usable blocks of the backing device (after metadata).
    pub data_blocks: u64,
    pub block_size: u32,
    pub max_transfer_blocks: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// 1 Primary, 2 Secondary.
    pub role: u8,
    /// A `DiskState` as u8 (defined by the runtime).
    pub disk: u8,
    pub flags: u16,
}

/// A replicated write. Block data of `num_blocks × block_size` bytes follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Data {
    pub offset_blocks: u64,
    pub num_blocks: u32,
    pub flags: u32,
    /// Echoed in the ack.
    pub block_id: u64,
    pub seq: u32,
    pub epoch: u32,
}

/// Ends epoch `epoch` of `set_size` writes; the receiver acks once they are all stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Barrier {
    pub epoch: u32,
    pub set_size: u32,
}

/// RecvAck, WriteAck, RsWriteAck, NegAck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub block_id: u64,
    pub seq: u32,
    /// 0, or the errno of a failed write (NegAck).
    pub status: u32,
}

/// A slice of the sender's bitmap for the receiver: 64-bit words starting at bit
/// `first_word × 64` of a `total_bits` map. `last` marks the final chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    pub total_bits: u64,
    pub first_word: u64,
    pub last: bool,
    pub words: Vec<u64>,
}

/// Resync data pushed by the source; block data follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RsData {
    pub offset_blocks: u64,
    pub num_blocks: u32,
    pub block_id: u64,
}

/// The source finished a resync; the target adopts `current` as its current UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncDone {
    pub current: u64,
    pub resynced_blocks: u64,
}

/// A range: OvRequest (please digest it) and OutOfSync (mark it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub offset_blocks: u64,
    pub num_blocks: u32,
    pub block_id: u64,
}

/// crc32c of each block of a verified range, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvReply {
    pub range: Range,
    pub digests: Vec<u32>,
}

/// A parsed packet body (without the block data of Data/RsData).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    InitialData(Initial),
    InitialMeta(Initial),
    Features(Features),
    Protocol(Protocol),
    Uuids(Uuids),
    Sizes(Sizes),
    State(State),
    Data(Data),
    Barrier(Barrier),
    BarrierAck(Barrier),
    RecvAck(Ack),
    WriteAck(Ack),
    NegAck(Ack),
    Ping,
    PingAck,
    Bitmap(Bitmap),
    RsData(RsData),
    RsWriteAck(Ack),
    SyncDone(SyncDone),
    OvRequest(Range),
    OvReply(OvReply),
    OutOfSync(Range),
}

impl Packet {
    pub fn cmd(&self) -> Cmd {
        match self {
            Packet::InitialData(_) => Cmd::InitialData,
            Packet::InitialMeta(_) => Cmd::InitialMeta,
            Packet::Features(_) => Cmd::Features,
            Packet::Protocol(_) => Cmd::Protocol,
            Packet::Uuids(_) => Cmd::Uuids,
            Packet::Sizes(_) => Cmd::Sizes,
            Packet::State(_) => Cmd::State,
            Packet::Data(_) => Cmd::Data,
            Packet::Barrier(_) => Cmd::Barrier,
            Packet::BarrierAck(_) => Cmd::BarrierAck,
            Packet::RecvAck(_) => Cmd::RecvAck,
            Packet::WriteAck(_) => Cmd::WriteAck,
            Packet::NegAck(_) => Cmd::NegAck,
            Packet::Ping => Cmd::Ping,
            Packet::PingAck => Cmd::PingAck,
            Packet::Bitmap(_) => Cmd::Bitmap,
            Packet::RsData(_) => Cmd::RsData,
            Packet::RsWriteAck(_) => Cmd::RsWriteAck,
            Packet::SyncDone(_) => Cmd::SyncDone,
            Packet::OvRequest(_) => Cmd::OvRequest,
            Packet::OvReply(_) => Cmd::OvReply,
            Packet::OutOfSync(_) => Cmd::OutOfSync,
        }
    }

    /// Parses the payload of a packet whose header was `hdr`. For `carries_data` commands,
    /// `payload` is only the fixed body (`cmd.body_len()` bytes) and the data length
    /// (`hdr.len - body_len`) is checked against `num_blocks × block_size` by the caller.
    /// Variable bodies must be exactly as long as their contents say.
    ///
    /// `hdr` is normally what [`Header::parse`] returned, but any `Header` is handled without
    /// panicking; `payload.len()` must be `hdr.len` (or the fixed body for data commands).
    pub fn parse(hdr: &Header, payload: &[u8]) -> Result<Packet, WireError> {
        let cmd = hdr.cmd;
        let need = len_u32(cmd.body_len());
        let len = len_u32(payload.len());
        if hdr.len < need {
            return Err(WireError::TooShort {
                cmd,
                len: hdr.len,
                need,
            });
        }
        let expect = if cmd.carries_data() { need } else { hdr.len };
        if len != expect {
            return Err(WireError::BadLength { cmd, len, expect });
        }
        if !cmd.carries_data() && !cmd.is_variable() && len != need {
            return Err(WireError::BadLength {
                cmd,
                len,
                expect: need,
            });
        }
        let mut r = Reader::new(cmd, payload);
        let packet = match cmd {
            Cmd::InitialData => Packet::InitialData(r.initial()?),
            Cmd::InitialMeta => Packet::InitialMeta(r.initial()?),
            Cmd::Features => Packet::Features(Features {
                proto_min: r.u32()?,
                proto_max: r.u32()?,
                feature_flags: r.u32()?,
                sender_node_id: r.u32()?,
                receiver_node_id: r.u32()?,
            }),
            Cmd::Protocol => {
                let flags = r.u32()?;
                let p = Protocol {
                    protocol: r.u8()?,
                    after_sb_0pri: r.u8()?,
                    after_sb_1pri: r.u8()?,
                    after_sb_2pri: r.u8()?,
                    discard_node: r.u8()?,
                    flags,
                };
                r.pad(3)?;
                Packet::Protocol(p)
            }
            Cmd::Uuids => Packet::Uuids(r.uuids()?),
            Cmd::Sizes => Packet::Sizes(Sizes {
                data_blocks: r.u64()?,
                block_size: r.u32()?,
                max_transfer_blocks: r.u32()?,
            }),
            Cmd::State => Packet::State(State {
                role: r.u8()?,
                disk: r.u8()?,
                flags: r.u16()?,
            }),
            Cmd::Data => Packet::Data(Data {
                offset_blocks: r.u64()?,
                num_blocks: r.u32()?,
                flags: r.u32()?,
                block_id: r.u64()?,
                seq: r.u32()?,
                epoch: r.u32()?,
            }),
            Cmd::Barrier | Cmd::BarrierAck => {
                let b = Barrier {
                    epoch: r.u32()?,
                    set_size: r.u32()?,
                };
                if cmd == Cmd::Barrier {
                    Packet::Barrier(b)
                } else {
                    Packet::BarrierAck(b)
                }
            }
            Cmd::RecvAck | Cmd::WriteAck | Cmd::NegAck | Cmd::RsWriteAck => {
                let a = Ack {
                    block_id: r.u64()?,
                    seq: r.u32()?,
                    status: r.u32()?,
                };
                match cmd {
                    Cmd::RecvAck => Packet::RecvAck(a),
                    Cmd::WriteAck => Packet::WriteAck(a),
                    Cmd::NegAck => Packet::NegAck(a),
                    _ => Packet::RsWriteAck(a),
                }
            }
            Cmd::Ping => Packet::Ping,
            Cmd::PingAck => Packet::PingAck,
            Cmd::Bitmap => Packet::Bitmap(r.bitmap()?),
            Cmd::RsData => {
                let range = r.range()?;
                Packet::RsData(RsData {
                    offset_blocks: range.offset_blocks,
                    num_blocks: range.num_blocks,
                    block_id: range.block_id,
                })
            }
            Cmd::SyncDone => Packet::SyncDone(SyncDone {
                current: r.u64()?,
                resynced_blocks: r.u64()?,
            }),
            Cmd::OvRequest => Packet::OvRequest(r.range()?),
            Cmd::OvReply => Packet::OvReply(r.ov_reply()?),
            Cmd::OutOfSync => Packet::OutOfSync(r.range()?),
        };
        r.finish()?;
        Ok(packet)
    }

    /// Header + body, ready to send. For `Data`/`RsData`, `data_len` is the number of block
    /// data bytes the caller sends right after these bytes (it is counted in the header's len);
    /// for every other packet it must be 0.
    ///
    /// Whatever the packet holds is encoded as is, even values the peer will reject (a name
    /// over `MAX_NAME`, a digest count that is not `num_blocks`…); only lists longer than
    /// their count field can express are cut to fit.
    pub fn encode(&self, volume: u16, data_len: u32) -> Vec<u8> {
        let cmd = self.cmd();
        let mut w = Writer(Vec::with_capacity(HEADER_LEN + cmd.body_len()));
        w.pad(HEADER_LEN);
        match self {
            Packet::InitialData(i) | Packet::InitialMeta(i) => w.initial(i),
            Packet::Features(f) => {
                w.u32(f.proto_min);
                w.u32(f.proto_max);
                w.u32(f.feature_flags);
                w.u32(f.sender_node_id);
                w.u32(f.receiver_node_id);
            }
            Packet::Protocol(p) => {
                w.u32(p.flags);
                w.u8(p.protocol);
                w.u8(p.after_sb_0pri);
                w.u8(p.after_sb_1pri);
                w.u8(p.after_sb_2pri);
                w.u8(p.discard_node);
                w.pad(3);
            }
            Packet::Uuids(u) => w.uuids(u),
            Packet::Sizes(s) => {
                w.u64(s.data_blocks);
                w.u32(s.block_size);
                w.u32(s.max_transfer_blocks);
            }
            Packet::State(s) => {
                w.u8(s.role);
                w.u8(s.disk);
                w.u16(s.flags);
            }
            Packet::Data(d) => {
                w.u64(d.offset_blocks);
                w.u32(d.num_blocks);
                w.u32(d.flags);
                w.u64(d.block_id);
                w.u32(d.seq);
                w.u32(d.epoch);
            }
            Packet::Barrier(b) | Packet::BarrierAck(b) => w.barrier(b),
            Packet::RecvAck(a)
            | Packet::WriteAck(a)
            | Packet::NegAck(a)
            | Packet::RsWriteAck(a) => w.ack(a),
            Packet::Ping | Packet::PingAck => {}
            Packet::Bitmap(b) => w.bitmap(b),
            Packet::RsData(d) => w.range(&Range {
                offset_blocks: d.offset_blocks,
                num_blocks: d.num_blocks,
                block_id: d.block_id,
            }),
            Packet::SyncDone(s) => {
                w.u64(s.current);
                w.u64(s.resynced_blocks);
            }
            Packet::OvRequest(r) | Packet::OutOfSync(r) => w.range(r),
            Packet::OvReply(o) => w.ov_reply(o),
        }
        let mut buf = w.0;
        let body = len_u32(buf.len().saturating_sub(HEADER_LEN));
        let len = if cmd.carries_data() {
            body.saturating_add(data_len)
        } else {
            debug_assert_eq!(data_len, 0, "{cmd:?} carries no block data");
            body
        };
        if let Some(h) = buf.first_chunk_mut::<HEADER_LEN>() {
            *h = Header { volume, cmd, len }.encode();
        }
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One packet of every variant, with the block data length sent after it.
    fn samples() -> Vec<(Packet, u32)> {
        let initial = Initial {
            sender_node_id: 1,
            receiver_node_id: 2,
            resource: "r0-ünïcode".to_owned(),
        };
        let ack = Ack {
            block_id: 0x0102_0304_0506_0708,
            seq: 77,
            status: 0,
        };
        let range = Range {
            offset_blocks: 1 << 40,
            num_blocks: 3,
            block_id: 0xdead_beef,
        };
        vec![
            (Packet::InitialData(initial.clone()), 0),
            (
                Packet::InitialMeta(Initial {
                    resource: "x".repeat(MAX_NAME),
                    ..initial.clone()
                }),
                0,
            ),
            (
                Packet::InitialMeta(Initial {
                    resource: String::new(),
                    ..initial
                }),
                0,
            ),
            (
                Packet::Features(Features {
                    proto_min: PROTO_MIN,
                    proto_max: PROTO_MAX,
                    feature_flags: feature::TRIM | feature::ONLINE_VERIFY,
                    sender_node_id: 3,
                    receiver_node_id: 4,
                }),
                0,
            ),
            (
                Packet::Protocol(Protocol {
                    protocol: b'C',
                    after_sb_0pri: 1,
                    after_sb_1pri: 2,
                    after_sb_2pri: 3,
                    discard_node: 0xff,
                    flags: 0x8000_0001,
                }),
                0,
            ),
            (
                Packet::Uuids(Uuids {
                    current: 0x1111_2222_3333_4444,
                    bitmap: vec![(0, 5), (2, u64::MAX)],
                    history: vec![9, 8, 7],
                    flags: uuid_flag::CONSISTENT | uuid_flag::PRIMARY,
                    dirty_blocks: 12345,
                }),
                0,
            ),
            (
                Packet::Uuids(Uuids {
                    current: 1,
                    bitmap: (0..MAX_UUIDS as u8)
                        .map(|i| (i, u64::from(i) << 8))
                        .collect(),
                    history: (0..MAX_UUIDS as u64).collect(),
                    flags: 0,
                    dirty_blocks: 0,
                }),
                0,
            ),
            (
                Packet::Uuids(Uuids {
                    current: 0,
                    bitmap: vec![],
                    history: vec![],
                    flags: uuid_flag::JUST_CREATED,
                    dirty_blocks: 0,
                }),
                0,
            ),
            (
                Packet::Sizes(Sizes {
                    data_blocks: 262_144,
                    block_size: 4096,
                    max_transfer_blocks: 256,
                }),
                0,
            ),
            (
                Packet::State(State {
                    role: 1,
                    disk: 4,
                    flags: 0xabcd,
                }),
                0,
            ),
            (
                Packet::Data(Data {
                    offset_blocks: 99,
                    num_blocks: 2,
                    flags: data_flag::FUA,
                    block_id: 42,
                    seq: 7,
                    epoch: 3,
                }),
                8192,
            ),
            (
                Packet::Data(Data {
                    offset_blocks: 0,
                    num_blocks: 0,
                    flags: data_flag::FLUSH,
                    block_id: 1,
                    seq: 1,
                    epoch: 1,
                }),
                0,
            ),
            (
                Packet::Barrier(Barrier {
                    epoch: 5,
                    set_size: 10,
                }),
                0,
            ),
            (
                Packet::BarrierAck(Barrier {
                    epoch: 5,
                    set_size: 10,
                }),
                0,
            ),
            (Packet::RecvAck(ack), 0),
            (Packet::WriteAck(ack), 0),
            (Packet::NegAck(Ack { status: 5, ..ack }), 0),
            (Packet::Ping, 0),
            (Packet::PingAck, 0),
            (
                Packet::Bitmap(Bitmap {
                    total_bits: 1000,
                    first_word: 10,
                    last: true,
                    words: vec![1, 2, u64::MAX, 0, 5, 6],
                }),
                0,
            ),
            (
                Packet::Bitmap(Bitmap {
                    total_bits: 0,
                    first_word: 0,
                    last: false,
                    words: vec![],
                }),
                0,
            ),
            (
                Packet::RsData(RsData {
                    offset_blocks: 12,
                    num_blocks: 256,
                    block_id: 3,
                }),
                1 << 20,
            ),
            (Packet::RsWriteAck(ack), 0),
            (
                Packet::SyncDone(SyncDone {
                    current: 0x5555,
                    resynced_blocks: 1 << 33,
                }),
                0,
            ),
            (Packet::OvRequest(range), 0),
            (
                Packet::OvReply(OvReply {
                    range,
                    digests: vec![0xaaaa_aaaa, 0, 0x1234_5678],
                }),
                0,
            ),
            (Packet::OutOfSync(range), 0),
        ]
    }

    const ALL_CMDS: [Cmd; 22] = [
        Cmd::InitialData,
        Cmd::InitialMeta,
        Cmd::Features,
        Cmd::Protocol,
        Cmd::Uuids,
        Cmd::Sizes,
        Cmd::State,
        Cmd::Data,
        Cmd::Barrier,
        Cmd::BarrierAck,
        Cmd::RecvAck,
        Cmd::WriteAck,
        Cmd::NegAck,
        Cmd::Ping,
        Cmd::PingAck,
        Cmd::Bitmap,
        Cmd::RsData,
        Cmd::RsWriteAck,
        Cmd::SyncDone,
        Cmd::OvRequest,
        Cmd::OvReply,
        Cmd::OutOfSync,
    ];

    fn header_of(bytes: &[u8]) -> Result<Header, WireError> {
        Header::parse(bytes.first_chunk::<HEADER_LEN>().expect("a whole header"))
    }

    /// Parses an encoded packet (header + body, without block data) like a receiver does.
    fn decode(bytes: &[u8]) -> Result<(Header, Packet), WireError> {
        let hdr = header_of(bytes)?;
        let packet = Packet::parse(&hdr, &bytes[HEADER_LEN..])?;
        Ok((hdr, packet))
    }

    fn set_len(bytes: &mut [u8], len: u32) {
        bytes[8..12].copy_from_slice(&len.to_be_bytes());
    }

    /// Makes the header's len claim exactly the bytes after it.
    fn fix_len(bytes: &mut [u8]) {
        let len = (bytes.len() - HEADER_LEN) as u32;
        set_len(bytes, len);
    }

    fn invalid(e: Result<impl std::fmt::Debug, WireError>) -> &'static str {
        match e {
            Err(WireError::Invalid(why)) => why,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn cmd_values_round_trip() {
        let known: Vec<Cmd> = (0..=u16::MAX).filter_map(Cmd::from_u16).collect();
        assert_eq!(known, ALL_CMDS);
        for cmd in ALL_CMDS {
            assert_eq!(Cmd::from_u16(cmd as u16), Some(cmd));
            assert!(cmd.body_len() as u32 <= cmd.max_len());
        }
        let cmds: Vec<Cmd> = samples().iter().map(|(p, _)| p.cmd()).collect();
        for cmd in ALL_CMDS {
            assert!(cmds.contains(&cmd), "no sample for {cmd:?}");
        }
    }

    #[test]
    fn header_known_bytes() {
        let hdr = Header {
            volume: 0x0102,
            cmd: Cmd::Data,
            len: 0x0000_2020,
        };
        let bytes = hdr.encode();
        assert_eq!(
            bytes,
            [b'O', b'X', b'R', b'P', 1, 2, 0, 0x10, 0, 0, 0x20, 0x20, 0, 0, 0, 0]
        );
        assert_eq!(Header::parse(&bytes), Ok(hdr));
    }

    #[test]
    fn body_known_bytes() {
        let data = Packet::Data(Data {
            offset_blocks: 0x0102_0304_0506_0708,
            num_blocks: 0x1112_1314,
            flags: 0x2122_2324,
            block_id: 0x3132_3334_3536_3738,
            seq: 0x4142_4344,
            epoch: 0x5152_5354,
        });
        let bytes = data.encode(7, 4096);
        assert_eq!(bytes.len(), HEADER_LEN + 32);
        assert_eq!(&bytes[8..12], &(32u32 + 4096).to_be_bytes());
        assert_eq!(
            &bytes[HEADER_LEN..],
            &[
                1, 2, 3, 4, 5, 6, 7, 8, 0x11, 0x12, 0x13, 0x14, 0x21, 0x22, 0x23, 0x24, 0x31, 0x32,
                0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x41, 0x42, 0x43, 0x44, 0x51, 0x52, 0x53, 0x54
            ]
        );
        let initial = Packet::InitialData(Initial {
            sender_node_id: 1,
            receiver_node_id: 2,
            resource: "r0".to_owned(),
        });
        assert_eq!(
            &initial.encode(0, 0)[HEADER_LEN..],
            &[0, 0, 0, 1, 0, 0, 0, 2, 0, 2, b'r', b'0']
        );
    }

    #[test]
    fn round_trip_every_variant() {
        for (packet, data_len) in samples() {
            let cmd = packet.cmd();
            let bytes = packet.encode(0xbeef, data_len);
            let (hdr, parsed) = decode(&bytes).unwrap_or_else(|e| panic!("{packet:?}: {e}"));
            assert_eq!(hdr.volume, 0xbeef);
            assert_eq!(hdr.cmd, cmd);
            assert_eq!(
                hdr.len as usize,
                bytes.len() - HEADER_LEN + data_len as usize
            );
            assert_eq!(parsed, packet);
            if !cmd.is_variable() {
                assert_eq!(bytes.len(), HEADER_LEN + cmd.body_len(), "{cmd:?}");
            }
            assert_eq!(parsed.encode(0xbeef, data_len), bytes);
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        for (packet, data_len) in samples() {
            let bytes = packet.encode(1, data_len);
            let hdr = header_of(&bytes).unwrap();
            for cut in HEADER_LEN..bytes.len() {
                // The header still claims the full length.
                assert!(
                    Packet::parse(&hdr, &bytes[HEADER_LEN..cut]).is_err(),
                    "{packet:?} cut at {cut}"
                );
                // The header was fixed up to claim the truncated length.
                let mut short = bytes[..cut].to_vec();
                set_len(&mut short, (cut - HEADER_LEN) as u32);
                assert!(
                    decode(&short).is_err(),
                    "{packet:?} cut at {cut}, len fixed"
                );
            }
            // One byte too many (in the stated length) is an error for everything that
            // does not carry block data.
            if !packet.cmd().carries_data() {
                let mut long = bytes.clone();
                long.push(0);
                fix_len(&mut long);
                assert!(decode(&long).is_err(), "{packet:?} plus a byte");
            }
        }
    }

    #[test]
    fn header_rejections() {
        let good = Header {
            volume: 0,
            cmd: Cmd::Barrier,
            len: 8,
        }
        .encode();
        assert!(Header::parse(&good).is_ok());

        let mut b = good;
        b[0] = b'X';
        assert_eq!(Header::parse(&b), Err(WireError::BadMagic(0x5858_5250)));

        for raw in [0u16, 0x0008, 0x001f, 0xffff] {
            let mut b = good;
            b[6..8].copy_from_slice(&raw.to_be_bytes());
            assert_eq!(Header::parse(&b), Err(WireError::UnknownCommand(raw)));
        }

        let mut b = good;
        b[15] = 1;
        assert_eq!(Header::parse(&b), Err(WireError::Reserved(1)));

        let with = |cmd: Cmd, len: u32| {
            Header::parse(
                &Header {
                    volume: 0,
                    cmd,
                    len,
                }
                .encode(),
            )
        };
        assert_eq!(
            with(Cmd::Data, MAX_PAYLOAD + 1),
            Err(WireError::TooLong {
                len: MAX_PAYLOAD + 1,
                max: MAX_PAYLOAD
            })
        );
        assert_eq!(
            with(Cmd::Bitmap, u32::MAX),
            Err(WireError::TooLong {
                len: u32::MAX,
                max: MAX_PAYLOAD
            })
        );
        assert!(with(Cmd::Data, MAX_PAYLOAD).is_ok());
        assert_eq!(
            with(Cmd::Data, 31),
            Err(WireError::TooShort {
                cmd: Cmd::Data,
                len: 31,
                need: 32
            })
        );
        assert_eq!(
            with(Cmd::OvReply, 27),
            Err(WireError::TooShort {
                cmd: Cmd::OvReply,
                len: 27,
                need: 28
            })
        );
        assert_eq!(
            with(Cmd::Barrier, 9),
            Err(WireError::BadLength {
                cmd: Cmd::Barrier,
                len: 9,
                expect: 8
            })
        );
        assert_eq!(
            with(Cmd::Ping, 1),
            Err(WireError::BadLength {
                cmd: Cmd::Ping,
                len: 1,
                expect: 0
            })
        );
        let initial_max = (INITIAL_FIXED_LEN + MAX_NAME) as u32;
        assert!(with(Cmd::InitialData, initial_max).is_ok());
        assert_eq!(
            with(Cmd::InitialData, initial_max + 1),
            Err(WireError::TooLong {
                len: initial_max + 1,
                max: initial_max
            })
        );
        let uuids_max = (UUIDS_FIXED_LEN + MAX_UUIDS * 17) as u32;
        assert!(with(Cmd::Uuids, uuids_max).is_ok());
        assert!(matches!(
            with(Cmd::Uuids, uuids_max + 1),
            Err(WireError::TooLong { .. })
        ));
    }

    #[test]
    fn long_name_rejected() {
        let packet = Packet::InitialData(Initial {
            sender_node_id: 0,
            receiver_node_id: 1,
            resource: "n".repeat(MAX_NAME + 1),
        });
        let bytes = packet.encode(0, 0);
        assert!(matches!(decode(&bytes), Err(WireError::TooLong { .. })));
        // Past the header's bound too (a hand-made header).
        let hdr = Header {
            volume: 0,
            cmd: Cmd::InitialData,
            len: (bytes.len() - HEADER_LEN) as u32,
        };
        invalid(Packet::parse(&hdr, &bytes[HEADER_LEN..]));
    }

    #[test]
    fn bad_utf8_name_rejected() {
        let mut bytes = Packet::InitialMeta(Initial {
            sender_node_id: 0,
            receiver_node_id: 1,
            resource: "abcd".to_owned(),
        })
        .encode(0, 0);
        let n = bytes.len();
        bytes[n - 2] = 0xff;
        assert_eq!(invalid(decode(&bytes)), "resource name is not UTF-8");
        // A multi-byte character cut by the stated length.
        let mut bytes = Packet::InitialData(Initial {
            sender_node_id: 0,
            receiver_node_id: 1,
            resource: "aé".to_owned(),
        })
        .encode(0, 0);
        bytes.pop();
        bytes[HEADER_LEN + 9] = 2;
        set_len(&mut bytes, 12);
        assert_eq!(invalid(decode(&bytes)), "resource name is not UTF-8");
    }

    #[test]
    fn too_many_uuids_rejected() {
        let base = Uuids {
            current: 1,
            bitmap: vec![],
            history: vec![],
            flags: 0,
            dirty_blocks: 0,
        };
        let bitmap = Packet::Uuids(Uuids {
            bitmap: (0..=MAX_UUIDS as u8).map(|i| (i, 1)).collect(),
            ..base.clone()
        });
        assert_eq!(
            invalid(decode(&bitmap.encode(0, 0))),
            "more than MAX_UUIDS bitmap UUIDs"
        );
        let history = Packet::Uuids(Uuids {
            history: vec![3; MAX_UUIDS + 1],
            ..base.clone()
        });
        assert_eq!(
            invalid(decode(&history.encode(0, 0))),
            "more than MAX_UUIDS history UUIDs"
        );
        // A count of 255 with nothing after it: rejected on the count, not read.
        let mut bytes = Packet::Uuids(base).encode(0, 0);
        bytes[HEADER_LEN + 24] = 0xff;
        assert_eq!(invalid(decode(&bytes)), "more than MAX_UUIDS bitmap UUIDs");
    }

    #[test]
    fn ov_reply_digest_count_must_match() {
        let range = Range {
            offset_blocks: 0,
            num_blocks: 4,
            block_id: 1,
        };
        let packet = Packet::OvReply(OvReply {
            range,
            digests: vec![1, 2, 3],
        });
        assert_eq!(
            invalid(decode(&packet.encode(0, 0))),
            "OvReply digest count differs from num_blocks"
        );
        // Count matches num_blocks but not the payload length.
        let mut bytes = Packet::OvReply(OvReply {
            range,
            digests: vec![1, 2, 3, 4],
        })
        .encode(0, 0);
        bytes.truncate(bytes.len() - 4);
        fix_len(&mut bytes);
        assert_eq!(
            decode(&bytes),
            Err(WireError::BadLength {
                cmd: Cmd::OvReply,
                len: 40,
                expect: 44
            })
        );
    }

    #[test]
    fn bitmap_rejections() {
        let good = Bitmap {
            total_bits: 130,
            first_word: 1,
            last: true,
            words: vec![7, 8],
        };
        assert!(decode(&Packet::Bitmap(good.clone()).encode(0, 0)).is_ok());
        let beyond = Packet::Bitmap(Bitmap {
            total_bits: 128,
            ..good.clone()
        });
        assert_eq!(
            invalid(decode(&beyond.encode(0, 0))),
            "bitmap words beyond total_bits"
        );
        let overflow = Packet::Bitmap(Bitmap {
            total_bits: u64::MAX,
            first_word: u64::MAX,
            ..good.clone()
        });
        assert_eq!(
            invalid(decode(&overflow.encode(0, 0))),
            "bitmap words beyond total_bits"
        );
        let bytes = Packet::Bitmap(good).encode(0, 0);
        let mut b = bytes.clone();
        b[HEADER_LEN + 16] = 2;
        invalid(decode(&b));
        let mut b = bytes.clone();
        b[HEADER_LEN + 18] = 1;
        assert_eq!(invalid(decode(&b)), "padding bytes are not zero");
        // A huge word count is checked against the payload before anything is allocated.
        let mut b = bytes;
        b[HEADER_LEN + 20..HEADER_LEN + 24].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(decode(&b), Err(WireError::BadLength { .. })));
    }

    #[test]
    fn padding_must_be_zero() {
        let range = Range {
            offset_blocks: 1,
            num_blocks: 1,
            block_id: 1,
        };
        for packet in [
            Packet::OvRequest(range),
            Packet::OutOfSync(range),
            Packet::RsData(RsData {
                offset_blocks: 1,
                num_blocks: 1,
                block_id: 1,
            }),
        ] {
            let mut b = packet.encode(0, 0);
            b[HEADER_LEN + 13] = 1;
            assert_eq!(invalid(decode(&b)), "padding bytes are not zero");
        }
        let mut b = Packet::Protocol(Protocol {
            protocol: b'A',
            after_sb_0pri: 0,
            after_sb_1pri: 0,
            after_sb_2pri: 0,
            discard_node: 0xff,
            flags: 0,
        })
        .encode(0, 0);
        b[HEADER_LEN + 11] = 1;
        assert_eq!(invalid(decode(&b)), "padding bytes are not zero");
    }

    #[test]
    fn data_payload_is_only_the_fixed_body() {
        let packet = Packet::RsData(RsData {
            offset_blocks: 0,
            num_blocks: 1,
            block_id: 9,
        });
        let mut bytes = packet.encode(0, 512);
        let hdr = header_of(&bytes).unwrap();
        assert_eq!(hdr.len, 24 + 512);
        bytes.extend_from_slice(&[0u8; 512]);
        assert_eq!(
            Packet::parse(&hdr, &bytes[HEADER_LEN..]),
            Err(WireError::BadLength {
                cmd: Cmd::RsData,
                len: 24 + 512,
                expect: 24
            })
        );
        assert_eq!(
            Packet::parse(&hdr, &bytes[HEADER_LEN..HEADER_LEN + 24]),
            Ok(packet)
        );
    }

    #[test]
    fn payload_must_match_header_len() {
        let bytes = Packet::Ping.encode(0, 0);
        let hdr = header_of(&bytes).unwrap();
        assert_eq!(
            Packet::parse(&hdr, &[0]),
            Err(WireError::BadLength {
                cmd: Cmd::Ping,
                len: 1,
                expect: 0
            })
        );
        // Hand-made headers that Header::parse would refuse are still handled.
        let hdr = Header {
            volume: 0,
            cmd: Cmd::Data,
            len: 3,
        };
        assert!(matches!(
            Packet::parse(&hdr, &[0; 3]),
            Err(WireError::TooShort { .. })
        ));
        let hdr = Header {
            volume: 0,
            cmd: Cmd::Sizes,
            len: 17,
        };
        assert!(matches!(
            Packet::parse(&hdr, &[0; 17]),
            Err(WireError::BadLength { .. })
        ));
    }

    /// xorshift64*: deterministic, no dependencies.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    /// Parses header + payload; anything accepted must re-encode to the same bytes.
    fn check_canonical(bytes: &[u8]) {
        let Some(head) = bytes.first_chunk::<HEADER_LEN>() else {
            return;
        };
        let Ok(hdr) = Header::parse(head) else {
            return;
        };
        assert!(hdr.len <= MAX_PAYLOAD && hdr.len as usize >= hdr.cmd.body_len());
        let rest = &bytes[HEADER_LEN..];
        let payload = if hdr.cmd.carries_data() {
            &rest[..rest.len().min(hdr.cmd.body_len())]
        } else {
            rest
        };
        if let Ok(packet) = Packet::parse(&hdr, payload) {
            assert_eq!(packet.cmd(), hdr.cmd);
            let data_len = if hdr.cmd.carries_data() {
                hdr.len - hdr.cmd.body_len() as u32
            } else {
                0
            };
            let again = packet.encode(hdr.volume, data_len);
            assert_eq!(&again[..HEADER_LEN], head);
            assert_eq!(&again[HEADER_LEN..], payload);
        }
    }

    #[test]
    fn fuzz_never_panics() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let seeds: Vec<Vec<u8>> = samples().iter().map(|(p, d)| p.encode(3, *d)).collect();
        let (mut headers_ok, mut packets_ok) = (0u32, 0u32);
        for _ in 0..200_000 {
            let bytes = if rng.below(2) == 0 {
                // Mutate a valid packet.
                let mut b = seeds[rng.below(seeds.len() as u64) as usize].clone();
                for _ in 0..=rng.below(4) {
                    match rng.below(5) {
                        0 if !b.is_empty() => {
                            let i = rng.below(b.len() as u64) as usize;
                            b[i] ^= 1 << rng.below(8);
                        }
                        1 if !b.is_empty() => {
                            let i = rng.below(b.len() as u64) as usize;
                            b[i] = rng.next() as u8;
                        }
                        2 => b.truncate(rng.below(b.len() as u64 + 1) as usize),
                        3 => {
                            let extra = rng.below(40) as usize;
                            b.extend(rng.bytes(extra));
                        }
                        _ => {}
                    }
                }
                if rng.below(2) == 0 && b.len() >= HEADER_LEN {
                    fix_len(&mut b);
                }
                b
            } else {
                // A plausible header and random payload.
                let magic = if rng.below(8) == 0 {
                    rng.next() as u32
                } else {
                    MAGIC
                };
                let raw = if rng.below(8) == 0 {
                    rng.next() as u16
                } else {
                    ALL_CMDS[rng.below(ALL_CMDS.len() as u64) as usize] as u16
                };
                let body = Cmd::from_u16(raw).map_or(0, Cmd::body_len);
                let payload_len = match rng.below(4) {
                    0 => body,
                    1 => body + rng.below(16) as usize,
                    2 => rng.below(600) as usize,
                    _ => body.saturating_sub(rng.below(4) as usize),
                };
                let len = match rng.below(8) {
                    0 => rng.next() as u32,
                    1 => payload_len as u32 + rng.below(9000) as u32,
                    _ => payload_len as u32,
                };
                let reserved = if rng.below(16) == 0 {
                    rng.next() as u32
                } else {
                    0
                };
                let mut b = Vec::with_capacity(HEADER_LEN + payload_len);
                b.extend(magic.to_be_bytes());
                b.extend((rng.next() as u16).to_be_bytes());
                b.extend(raw.to_be_bytes());
                b.extend(len.to_be_bytes());
                b.extend(reserved.to_be_bytes());
                b.extend(rng.bytes(payload_len));
                b
            };
            if let Some(head) = bytes.first_chunk::<HEADER_LEN>() {
                if Header::parse(head).is_ok() {
                    headers_ok += 1;
                    if decode(&bytes).is_ok() {
                        packets_ok += 1;
                    }
                }
            }
            check_canonical(&bytes);
            // Packet::parse with an unchecked header must not panic either.
            if let Some(cmd) = bytes
                .get(6..8)
                .and_then(|c| Cmd::from_u16(u16::from_be_bytes([c[0], c[1]])))
            {
                let hdr = Header {
                    volume: 0,
                    cmd,
                    len: rng.next() as u32 % 700,
                };
                let _ = Packet::parse(&hdr, bytes.get(HEADER_LEN..).unwrap_or_default());
            }
        }
        // The generator reaches past the header checks, and into successful parses.
        assert!(headers_ok > 20_000, "{headers_ok}");
        assert!(packets_ok > 5_000, "{packets_ok}");
    }
}
