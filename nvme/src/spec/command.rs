//! The 64-byte submission queue entry (SQE), its SGL data pointer, and the
//! command-specific fields a target decodes from CDW10..CDW15.
//!
//! [`Command`] is a read-only view over received bytes; [`CommandBuilder`]
//! produces the bytes a host sends. Over Fabrics the data pointer is always a
//! single SGL descriptor: NVMe/TCP uses a Data Block descriptor with the
//! Offset subtype for in-capsule data, and a Transport Data Block descriptor
//! for data moved by R2T / H2CData / C2HData PDUs.

use super::{fixed, LengthError};
use crate::bytes::{
    array_at, put_array, put_u16, put_u32, put_u64, put_u8, u16_at, u32_at, u64_at, u8_at,
};

/// Size of a submission queue entry.
pub const COMMAND_LEN: usize = 64;
/// Size of one SGL descriptor.
pub const SGL_DESCRIPTOR_LEN: usize = 16;

/// Byte offsets of the common SQE fields (NVMe Base 2.0, Figure 88).
pub mod offset {
    /// CDW0 bits 7:0.
    pub const OPCODE: usize = 0;
    /// CDW0 bits 15:8: FUSE (1:0) and PSDT (7:6).
    pub const FLAGS: usize = 1;
    /// CDW0 bits 31:16.
    pub const CID: usize = 2;
    /// Fabrics commands put their command type where NSID would be.
    pub const FABRICS_TYPE: usize = 4;
    /// Namespace identifier.
    pub const NSID: usize = 4;
    /// Command dword 2.
    pub const CDW2: usize = 8;
    /// Command dword 3.
    pub const CDW3: usize = 12;
    /// Metadata pointer.
    pub const MPTR: usize = 16;
    /// Data pointer (one SGL descriptor over Fabrics).
    pub const DPTR: usize = 24;
    /// Command dword 10; CDW11..CDW15 follow at 4-byte steps.
    pub const CDW10: usize = 40;
}

/// The FUSE field: whether this command is half of a fused operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fuse {
    /// Not fused.
    Normal,
    /// First command (Compare) of a Compare and Write.
    First,
    /// Second command (Write) of a Compare and Write.
    Second,
    /// The reserved encoding 11b.
    Reserved,
}

/// The PSDT field: how the data pointer is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataPointerKind {
    /// PRP list (PCIe only).
    Prp,
    /// SGL, with MPTR the address of a contiguous metadata buffer. The only
    /// encoding NVMe over Fabrics allows.
    SglContiguousMetadata,
    /// SGL, with MPTR the address of a metadata SGL segment.
    SglMetadataSegment,
    /// The reserved encoding 11b.
    Reserved,
}

impl DataPointerKind {
    fn from_flags(flags: u8) -> Self {
        match flags >> 6 {
            0 => Self::Prp,
            1 => Self::SglContiguousMetadata,
            2 => Self::SglMetadataSegment,
            _ => Self::Reserved,
        }
    }

    fn to_flags(self) -> u8 {
        match self {
            Self::Prp => 0,
            Self::SglContiguousMetadata => 1 << 6,
            Self::SglMetadataSegment => 2 << 6,
            Self::Reserved => 3 << 6,
        }
    }
}

/// One 16-byte SGL descriptor: address, length and the type/subtype byte.
///
/// Only the unkeyed layout is modelled; the keyed layout (type 4) is used by
/// RDMA, not by NVMe/TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SglDescriptor {
    /// Address, or for the Offset subtype the offset into the in-capsule data.
    pub address: u64,
    /// Length in bytes.
    pub length: u32,
    /// Byte 15: descriptor type in bits 7:4, subtype in bits 3:0.
    pub identifier: u8,
}

/// What an SGL descriptor asks the NVMe/TCP transport to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SglKind {
    /// The data travels inside the command capsule, `offset` bytes into it.
    InCapsule {
        /// Offset into the in-capsule data.
        offset: u64,
        /// Length in bytes.
        length: u32,
    },
    /// The data travels in H2CData (solicited by R2T) or C2HData PDUs.
    TransportDataBlock {
        /// Length in bytes.
        length: u32,
    },
    /// Any other type/subtype: NVMe/TCP supports neither.
    Unsupported {
        /// Descriptor type (bits 7:4 of byte 15).
        sgl_type: u8,
        /// Descriptor subtype (bits 3:0 of byte 15).
        subtype: u8,
    },
}

impl SglDescriptor {
    /// SGL Data Block descriptor type.
    pub const TYPE_DATA_BLOCK: u8 = 0x0;
    /// Keyed SGL Data Block descriptor type (RDMA).
    pub const TYPE_KEYED_DATA_BLOCK: u8 = 0x4;
    /// Transport SGL Data Block descriptor type.
    pub const TYPE_TRANSPORT_DATA_BLOCK: u8 = 0x5;
    /// Subtype: the address field is an address.
    pub const SUBTYPE_ADDRESS: u8 = 0x0;
    /// Subtype: the address field is an offset (into in-capsule data).
    pub const SUBTYPE_OFFSET: u8 = 0x1;
    /// Subtype: transport specific.
    pub const SUBTYPE_TRANSPORT_SPECIFIC: u8 = 0xA;

    /// Descriptor for `length` bytes of in-capsule data at `offset`.
    pub const fn in_capsule(offset: u64, length: u32) -> Self {
        Self {
            address: offset,
            length,
            identifier: (Self::TYPE_DATA_BLOCK << 4) | Self::SUBTYPE_OFFSET,
        }
    }

    /// Descriptor for `length` bytes moved by data PDUs.
    pub const fn transport_data_block(length: u32) -> Self {
        Self {
            address: 0,
            length,
            identifier: (Self::TYPE_TRANSPORT_DATA_BLOCK << 4) | Self::SUBTYPE_TRANSPORT_SPECIFIC,
        }
    }

    /// Reads a descriptor from its 16 wire bytes.
    pub fn parse(bytes: &[u8; SGL_DESCRIPTOR_LEN]) -> Self {
        Self {
            address: u64_at(bytes, 0),
            length: u32_at(bytes, 8),
            identifier: u8_at(bytes, 15),
        }
    }

    /// The 16 wire bytes, reserved bytes 12..15 zeroed.
    pub fn encode(&self) -> [u8; SGL_DESCRIPTOR_LEN] {
        let mut bytes = [0; SGL_DESCRIPTOR_LEN];
        put_u64(&mut bytes, 0, self.address);
        put_u32(&mut bytes, 8, self.length);
        put_u8(&mut bytes, 15, self.identifier);
        bytes
    }

    /// Descriptor type, bits 7:4 of the identifier.
    pub const fn sgl_type(&self) -> u8 {
        self.identifier >> 4
    }

    /// Descriptor subtype, bits 3:0 of the identifier.
    pub const fn subtype(&self) -> u8 {
        self.identifier & 0x0F
    }

    /// Classifies the descriptor for the NVMe/TCP transport.
    pub const fn kind(&self) -> SglKind {
        match (self.sgl_type(), self.subtype()) {
            (Self::TYPE_DATA_BLOCK, Self::SUBTYPE_OFFSET) => SglKind::InCapsule {
                offset: self.address,
                length: self.length,
            },
            (Self::TYPE_TRANSPORT_DATA_BLOCK, Self::SUBTYPE_TRANSPORT_SPECIFIC) => {
                SglKind::TransportDataBlock {
                    length: self.length,
                }
            }
            (sgl_type, subtype) => SglKind::Unsupported { sgl_type, subtype },
        }
    }
}

/// A read-only view of a received 64-byte submission queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command<'a> {
    bytes: &'a [u8; COMMAND_LEN],
}

impl<'a> Command<'a> {
    /// Views exactly one SQE.
    pub const fn new(bytes: &'a [u8; COMMAND_LEN]) -> Self {
        Self { bytes }
    }

    /// Views the first 64 bytes of `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, LengthError> {
        fixed(bytes).map(Self::new)
    }

    /// The underlying bytes.
    pub const fn as_bytes(&self) -> &'a [u8; COMMAND_LEN] {
        self.bytes
    }

    /// Opcode (CDW0 bits 7:0).
    pub fn opcode(&self) -> u8 {
        u8_at(self.bytes, offset::OPCODE)
    }

    /// Raw flags byte (FUSE, PSDT).
    pub fn flags(&self) -> u8 {
        u8_at(self.bytes, offset::FLAGS)
    }

    /// Fused operation field.
    pub fn fuse(&self) -> Fuse {
        match self.flags() & 0x3 {
            0 => Fuse::Normal,
            1 => Fuse::First,
            2 => Fuse::Second,
            _ => Fuse::Reserved,
        }
    }

    /// PRP or SGL Data Transfer field.
    pub fn data_pointer_kind(&self) -> DataPointerKind {
        DataPointerKind::from_flags(self.flags())
    }

    /// Command identifier.
    pub fn cid(&self) -> u16 {
        u16_at(self.bytes, offset::CID)
    }

    /// Namespace identifier (meaningless for Fabrics commands).
    pub fn nsid(&self) -> u32 {
        u32_at(self.bytes, offset::NSID)
    }

    /// Fabrics command type (byte 4), if this is a Fabrics command.
    pub fn fabrics_type(&self) -> Option<u8> {
        (self.opcode() == super::opcodes::admin::FABRICS)
            .then(|| u8_at(self.bytes, offset::FABRICS_TYPE))
    }

    /// Command dword 2.
    pub fn cdw2(&self) -> u32 {
        u32_at(self.bytes, offset::CDW2)
    }

    /// Command dword 3.
    pub fn cdw3(&self) -> u32 {
        u32_at(self.bytes, offset::CDW3)
    }

    /// Metadata pointer.
    pub fn metadata_pointer(&self) -> u64 {
        u64_at(self.bytes, offset::MPTR)
    }

    /// The data pointer as an SGL descriptor.
    pub fn sgl(&self) -> SglDescriptor {
        SglDescriptor::parse(&array_at(self.bytes, offset::DPTR))
    }

    /// Command dword `index` (0..=15), or `None` past the SQE.
    pub fn dword(&self, index: usize) -> Option<u32> {
        (index < COMMAND_LEN / 4).then(|| u32_at(self.bytes, index * 4))
    }

    /// Command dword 10.
    pub fn cdw10(&self) -> u32 {
        u32_at(self.bytes, offset::CDW10)
    }

    /// Command dword 11.
    pub fn cdw11(&self) -> u32 {
        u32_at(self.bytes, offset::CDW10 + 4)
    }

    /// Command dword 12.
    pub fn cdw12(&self) -> u32 {
        u32_at(self.bytes, offset::CDW10 + 8)
    }

    /// Command dword 13.
    pub fn cdw13(&self) -> u32 {
        u32_at(self.bytes, offset::CDW10 + 12)
    }

    /// Command dword 14.
    pub fn cdw14(&self) -> u32 {
        u32_at(self.bytes, offset::CDW10 + 16)
    }

    /// Command dword 15.
    pub fn cdw15(&self) -> u32 {
        u32_at(self.bytes, offset::CDW10 + 20)
    }

    // --- NVM command set: Read, Write, Compare, Write Zeroes, Verify ---

    /// Starting LBA (CDW11:CDW10).
    pub fn starting_lba(&self) -> u64 {
        u64::from(self.cdw10()) | (u64::from(self.cdw11()) << 32)
    }

    /// Number of Logical Blocks as on the wire: 0-based (CDW12 bits 15:0).
    pub fn nlb_zero_based(&self) -> u16 {
        (self.cdw12() & 0xFFFF) as u16
    }

    /// Number of logical blocks the command covers: 1..=65536.
    pub fn block_count(&self) -> u32 {
        u32::from(self.nlb_zero_based()) + 1
    }

    /// Force Unit Access (CDW12 bit 30).
    pub fn force_unit_access(&self) -> bool {
        self.cdw12() & (1 << 30) != 0
    }

    /// Limited Retry (CDW12 bit 31).
    pub fn limited_retry(&self) -> bool {
        self.cdw12() & (1 << 31) != 0
    }

    /// Write Zeroes: Deallocate (CDW12 bit 25).
    pub fn write_zeroes_deallocate(&self) -> bool {
        self.cdw12() & (1 << 25) != 0
    }

    /// Dataset Management: number of 16-byte ranges (CDW10 bits 7:0 plus one).
    pub fn dsm_range_count(&self) -> u16 {
        (self.cdw10() & 0xFF) as u16 + 1
    }

    /// Dataset Management: Attribute - Deallocate (CDW11 bit 2).
    pub fn dsm_deallocate(&self) -> bool {
        self.cdw11() & (1 << 2) != 0
    }

    // --- Admin commands ---

    /// Identify: Controller or Namespace Structure (CDW10 bits 7:0).
    pub fn identify_cns(&self) -> u8 {
        (self.cdw10() & 0xFF) as u8
    }

    /// Identify: Controller Identifier (CDW10 bits 31:16).
    pub fn identify_cntid(&self) -> u16 {
        (self.cdw10() >> 16) as u16
    }

    /// Identify: Command Set Identifier (CDW11 bits 31:24).
    pub fn identify_csi(&self) -> u8 {
        (self.cdw11() >> 24) as u8
    }

    /// Get Log Page fields.
    pub fn get_log_page(&self) -> GetLogPage {
        let cdw10 = self.cdw10();
        let cdw11 = self.cdw11();
        let numd = (cdw10 >> 16) | ((cdw11 & 0xFFFF) << 16);
        GetLogPage {
            log_id: (cdw10 & 0xFF) as u8,
            log_specific: ((cdw10 >> 8) & 0x7F) as u8,
            retain_async_event: cdw10 & (1 << 15) != 0,
            dword_count: u64::from(numd) + 1,
            offset: u64::from(self.cdw12()) | (u64::from(self.cdw13()) << 32),
            log_specific_id: (cdw11 >> 16) as u16,
        }
    }

    /// Get/Set Features: Feature Identifier (CDW10 bits 7:0).
    pub fn feature_id(&self) -> u8 {
        (self.cdw10() & 0xFF) as u8
    }

    /// Set Features: Save (CDW10 bit 31).
    pub fn feature_save(&self) -> bool {
        self.cdw10() & (1 << 31) != 0
    }

    /// Get Features: Select (CDW10 bits 10:8): 0 current, 1 default, 2 saved,
    /// 3 supported capabilities.
    pub fn feature_select(&self) -> u8 {
        ((self.cdw10() >> 8) & 0x7) as u8
    }

    /// Abort: Submission Queue Identifier (CDW10 bits 15:0).
    pub fn abort_sqid(&self) -> u16 {
        (self.cdw10() & 0xFFFF) as u16
    }

    /// Abort: Command Identifier (CDW10 bits 31:16).
    pub fn abort_cid(&self) -> u16 {
        (self.cdw10() >> 16) as u16
    }
}

/// Decoded Get Log Page fields (CDW10..CDW13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetLogPage {
    /// Log Page Identifier.
    pub log_id: u8,
    /// Log Specific Field (LSP).
    pub log_specific: u8,
    /// Retain Asynchronous Event (RAE).
    pub retain_async_event: bool,
    /// Number of dwords to return: NUMDU:NUMDL plus one.
    pub dword_count: u64,
    /// Log Page Offset in bytes (LPOU:LPOL).
    pub offset: u64,
    /// Log Specific Identifier (LSI).
    pub log_specific_id: u16,
}

impl GetLogPage {
    /// Bytes the host asked for.
    pub const fn byte_len(&self) -> u64 {
        self.dword_count * 4
    }
}

/// Builds the 64 bytes of a submission queue entry.
///
/// Starts with PSDT = SGL (flags 0x40), which NVMe over Fabrics requires; all
/// other fields zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandBuilder {
    bytes: [u8; COMMAND_LEN],
}

impl CommandBuilder {
    /// A command with `opcode`, PSDT = SGL, everything else zero.
    pub fn new(opcode: u8) -> Self {
        let mut bytes = [0; COMMAND_LEN];
        put_u8(&mut bytes, offset::OPCODE, opcode);
        put_u8(
            &mut bytes,
            offset::FLAGS,
            DataPointerKind::SglContiguousMetadata.to_flags(),
        );
        Self { bytes }
    }

    /// A Fabrics command (opcode 0x7F) of type `fabrics_type`.
    pub fn fabrics(fabrics_type: u8) -> Self {
        let mut builder = Self::new(super::opcodes::admin::FABRICS);
        put_u8(&mut builder.bytes, offset::FABRICS_TYPE, fabrics_type);
        builder
    }

    /// An NVM Read/Write/Compare-style command over `block_count` blocks
    /// (1..=65536; other values are clamped) from `starting_lba`.
    pub fn nvm_io(opcode: u8, nsid: u32, starting_lba: u64, block_count: u32) -> Self {
        let nlb = block_count.clamp(1, 1 << 16) - 1;
        Self::new(opcode)
            .nsid(nsid)
            .cdw10(starting_lba as u32)
            .cdw11((starting_lba >> 32) as u32)
            .cdw12(nlb)
    }

    /// Sets the command identifier.
    pub fn cid(mut self, cid: u16) -> Self {
        put_u16(&mut self.bytes, offset::CID, cid);
        self
    }

    /// Sets the namespace identifier.
    pub fn nsid(mut self, nsid: u32) -> Self {
        put_u32(&mut self.bytes, offset::NSID, nsid);
        self
    }

    /// Sets the FUSE bits.
    pub fn fuse(mut self, fuse: Fuse) -> Self {
        let bits = match fuse {
            Fuse::Normal => 0,
            Fuse::First => 1,
            Fuse::Second => 2,
            Fuse::Reserved => 3,
        };
        let flags = (u8_at(&self.bytes, offset::FLAGS) & !0x3) | bits;
        put_u8(&mut self.bytes, offset::FLAGS, flags);
        self
    }

    /// Sets the PSDT bits.
    pub fn data_pointer_kind(mut self, kind: DataPointerKind) -> Self {
        let flags = (u8_at(&self.bytes, offset::FLAGS) & 0x3F) | kind.to_flags();
        put_u8(&mut self.bytes, offset::FLAGS, flags);
        self
    }

    /// Sets the metadata pointer.
    pub fn metadata_pointer(mut self, mptr: u64) -> Self {
        put_u64(&mut self.bytes, offset::MPTR, mptr);
        self
    }

    /// Sets the data pointer.
    pub fn sgl(mut self, sgl: SglDescriptor) -> Self {
        put_array(&mut self.bytes, offset::DPTR, sgl.encode());
        self
    }

    /// Sets command dword `index`; indexes past 15 are ignored.
    pub fn dword(mut self, index: usize, value: u32) -> Self {
        if index < COMMAND_LEN / 4 {
            put_u32(&mut self.bytes, index * 4, value);
        }
        self
    }

    /// Sets CDW10.
    pub fn cdw10(self, value: u32) -> Self {
        self.dword(10, value)
    }

    /// Sets CDW11.
    pub fn cdw11(self, value: u32) -> Self {
        self.dword(11, value)
    }

    /// Sets CDW12.
    pub fn cdw12(self, value: u32) -> Self {
        self.dword(12, value)
    }

    /// Sets CDW13.
    pub fn cdw13(self, value: u32) -> Self {
        self.dword(13, value)
    }

    /// Sets CDW14.
    pub fn cdw14(self, value: u32) -> Self {
        self.dword(14, value)
    }

    /// Sets CDW15.
    pub fn cdw15(self, value: u32) -> Self {
        self.dword(15, value)
    }

    /// Sets or clears Force Unit Access (CDW12 bit 30).
    pub fn force_unit_access(self, fua: bool) -> Self {
        let cdw12 = u32_at(&self.bytes, offset::CDW10 + 8);
        let cdw12 = if fua {
            cdw12 | (1 << 30)
        } else {
            cdw12 & !(1 << 30)
        };
        self.cdw12(cdw12)
    }

    /// Sets a byte in the command directly, for fields without a setter
    /// (e.g. Fabrics command fields). Out-of-range offsets are ignored.
    pub fn byte(mut self, at: usize, value: u8) -> Self {
        if let Some(slot) = self.bytes.get_mut(at) {
            *slot = value;
        }
        self
    }

    /// The finished 64 bytes.
    pub const fn build(self) -> [u8; COMMAND_LEN] {
        self.bytes
    }

    /// A view of the command as built so far.
    pub fn as_command(&self) -> Command<'_> {
        Command::new(&self.bytes)
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8; COMMAND_LEN] {
        &mut self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::opcodes::{admin, io};

    #[test]
    fn read_command_round_trips() {
        let bytes = CommandBuilder::nvm_io(io::READ, 1, 0x1_2345_6789, 8)
            .cid(0xBEEF)
            .sgl(SglDescriptor::transport_data_block(4096))
            .force_unit_access(true)
            .build();
        assert_eq!(bytes[0], 0x02);
        assert_eq!(bytes[1], 0x40, "PSDT must be SGL over Fabrics");
        assert_eq!(&bytes[2..4], &[0xEF, 0xBE]);
        assert_eq!(&bytes[4..8], &[1, 0, 0, 0]);
        assert_eq!(&bytes[40..44], &0x2345_6789u32.to_le_bytes());
        assert_eq!(&bytes[44..48], &1u32.to_le_bytes());
        assert_eq!(bytes[48], 7);
        assert_eq!(bytes[24 + 15], 0x5A);
        assert_eq!(&bytes[24 + 8..24 + 12], &4096u32.to_le_bytes());

        let cmd = Command::new(&bytes);
        assert_eq!(cmd.opcode(), io::READ);
        assert_eq!(cmd.cid(), 0xBEEF);
        assert_eq!(cmd.nsid(), 1);
        assert_eq!(cmd.starting_lba(), 0x1_2345_6789);
        assert_eq!(cmd.nlb_zero_based(), 7);
        assert_eq!(cmd.block_count(), 8);
        assert!(cmd.force_unit_access());
        assert!(!cmd.limited_retry());
        assert_eq!(cmd.fuse(), Fuse::Normal);
        assert_eq!(
            cmd.data_pointer_kind(),
            DataPointerKind::SglContiguousMetadata
        );
        assert_eq!(
            cmd.sgl().kind(),
            SglKind::TransportDataBlock { length: 4096 }
        );
        assert_eq!(cmd.fabrics_type(), None);
    }

    #[test]
    fn in_capsule_sgl_identifier_is_0x01() {
        let sgl = SglDescriptor::in_capsule(0, 512);
        let bytes = sgl.encode();
        assert_eq!(bytes[15], 0x01);
        assert_eq!(SglDescriptor::parse(&bytes), sgl);
        assert_eq!(
            sgl.kind(),
            SglKind::InCapsule {
                offset: 0,
                length: 512
            }
        );
        let keyed = SglDescriptor {
            identifier: 0x40,
            ..sgl
        };
        assert_eq!(
            keyed.kind(),
            SglKind::Unsupported {
                sgl_type: 4,
                subtype: 0
            }
        );
    }

    #[test]
    fn get_log_page_fields() {
        // NUMDL = 0x3FF, NUMDU = 1, LID = 2, RAE, LPO = 0x1_0000_0200.
        let bytes = CommandBuilder::new(admin::GET_LOG_PAGE)
            .cdw10(0x03FF_8002)
            .cdw11(0x0007_0001)
            .cdw12(0x200)
            .cdw13(1)
            .build();
        let glp = Command::new(&bytes).get_log_page();
        assert_eq!(glp.log_id, 2);
        assert!(glp.retain_async_event);
        assert_eq!(glp.dword_count, 0x1_03FF + 1);
        assert_eq!(glp.byte_len(), (0x1_03FF + 1) * 4);
        assert_eq!(glp.offset, 0x1_0000_0200);
        assert_eq!(glp.log_specific_id, 7);
    }

    #[test]
    fn admin_field_helpers() {
        let bytes = CommandBuilder::new(admin::IDENTIFY)
            .cdw10(0x0005_0001)
            .build();
        let cmd = Command::new(&bytes);
        assert_eq!(cmd.identify_cns(), 1);
        assert_eq!(cmd.identify_cntid(), 5);
        let bytes = CommandBuilder::new(admin::ABORT).cdw10(0x0010_0002).build();
        let cmd = Command::new(&bytes);
        assert_eq!((cmd.abort_sqid(), cmd.abort_cid()), (2, 0x10));
        let bytes = CommandBuilder::new(admin::SET_FEATURES)
            .cdw10(0x8000_0007)
            .build();
        let cmd = Command::new(&bytes);
        assert_eq!((cmd.feature_id(), cmd.feature_save()), (7, true));
    }

    #[test]
    fn short_buffer_is_an_error() {
        assert_eq!(
            Command::parse(&[0; 63]),
            Err(LengthError {
                needed: 64,
                actual: 63
            })
        );
        assert!(Command::parse(&[0; 80]).is_ok());
    }

    #[test]
    fn dword_index_is_bounded() {
        let bytes = [0xAA; 64];
        assert_eq!(Command::new(&bytes).dword(15), Some(0xAAAA_AAAA));
        assert_eq!(Command::new(&bytes).dword(16), None);
    }
}
