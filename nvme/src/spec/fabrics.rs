//! NVMe over Fabrics commands (opcode 0x7F): Connect and its 1024-byte data,
//! Property Get and Property Set (NVMe over Fabrics 1.1, section 3).
//!
//! Fabrics commands reuse the SQE but put their own fields where NSID and
//! CDW10.. would be. Each struct here decodes them from a [`Command`] view
//! and builds them with [`CommandBuilder`].

use super::command::{Command, CommandBuilder, SglDescriptor, COMMAND_LEN};
use super::{fixed, nqn, LengthError};
use crate::bytes::{
    array_at, put_array, put_padded, put_u16, put_u32, put_u64, put_u8, u16_at, u32_at, u64_at,
    u8_at,
};

/// Fabrics command types (SQE byte 4).
pub mod fabrics_type {
    /// Property Set.
    pub const PROPERTY_SET: u8 = 0x00;
    /// Connect.
    pub const CONNECT: u8 = 0x01;
    /// Property Get.
    pub const PROPERTY_GET: u8 = 0x04;
    /// Authentication Send.
    pub const AUTHENTICATION_SEND: u8 = 0x05;
    /// Authentication Receive.
    pub const AUTHENTICATION_RECEIVE: u8 = 0x06;
    /// Disconnect.
    pub const DISCONNECT: u8 = 0x08;
}

/// Size of the Connect command's data.
pub const CONNECT_DATA_LEN: usize = 1024;
/// Size of each NQN field in the Connect data (and in Identify / Discovery).
pub const NQN_FIELD_LEN: usize = 256;

/// Byte offsets of Connect fields, for the IPO (Invalid Parameter Offset) a
/// Connect Invalid Parameters completion reports.
pub mod connect_offset {
    /// SQE: Record Format (CDW10 bits 15:0).
    pub const RECFMT: u16 = 40;
    /// SQE: Queue ID (CDW10 bits 31:16).
    pub const QID: u16 = 42;
    /// SQE: Submission Queue Size (CDW11 bits 15:0).
    pub const SQSIZE: u16 = 44;
    /// SQE: Connect Attributes (CDW11 bits 23:16).
    pub const CATTR: u16 = 46;
    /// SQE: Keep Alive Timeout (CDW12).
    pub const KATO: u16 = 48;
    /// Data: Host Identifier.
    pub const HOSTID: u16 = 0;
    /// Data: Controller ID.
    pub const CNTLID: u16 = 16;
    /// Data: Subsystem NQN.
    pub const SUBNQN: u16 = 256;
    /// Data: Host NQN.
    pub const HOSTNQN: u16 = 512;
}

/// Controller ID a host puts in the Connect data to ask for any controller
/// (dynamic controller model).
pub const CNTLID_DYNAMIC: u16 = 0xFFFF;

/// The fields of a Connect command's SQE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connect {
    /// Record Format; 0 is the only one defined.
    pub record_format: u16,
    /// Queue ID: 0 for the admin queue.
    pub queue_id: u16,
    /// Submission queue size, 0-based.
    pub sq_size: u16,
    /// Connect Attributes (bit 2: I/O queue deletion after Disconnect...).
    pub attributes: u8,
    /// Keep Alive Timeout in milliseconds (admin queue only).
    pub keep_alive_timeout_ms: u32,
}

impl Connect {
    /// Decodes a Connect command; `None` if `command` is not one.
    pub fn from_command(command: &Command<'_>) -> Option<Self> {
        if command.fabrics_type() != Some(fabrics_type::CONNECT) {
            return None;
        }
        let bytes = command.as_bytes();
        Some(Self {
            record_format: u16_at(bytes, connect_offset::RECFMT.into()),
            queue_id: u16_at(bytes, connect_offset::QID.into()),
            sq_size: u16_at(bytes, connect_offset::SQSIZE.into()),
            attributes: u8_at(bytes, connect_offset::CATTR.into()),
            keep_alive_timeout_ms: u32_at(bytes, connect_offset::KATO.into()),
        })
    }

    /// Builds the Connect SQE. The 1024-byte Connect data travels as
    /// in-capsule data, so the SGL says so.
    pub fn build(&self, cid: u16) -> [u8; COMMAND_LEN] {
        let mut builder = CommandBuilder::fabrics(fabrics_type::CONNECT)
            .cid(cid)
            .sgl(SglDescriptor::in_capsule(0, CONNECT_DATA_LEN as u32));
        let bytes = builder.bytes_mut();
        put_u16(bytes, connect_offset::RECFMT.into(), self.record_format);
        put_u16(bytes, connect_offset::QID.into(), self.queue_id);
        put_u16(bytes, connect_offset::SQSIZE.into(), self.sq_size);
        put_u8(bytes, connect_offset::CATTR.into(), self.attributes);
        put_u32(
            bytes,
            connect_offset::KATO.into(),
            self.keep_alive_timeout_ms,
        );
        builder.build()
    }

    /// Connect response DW0 on success: the controller ID in bits 15:0
    /// (AUTHREQ, bits 31:16, zero: no authentication).
    pub const fn success_dw0(cntlid: u16) -> u32 {
        cntlid as u32
    }

    /// Connect response DW0 for Connect Invalid Parameters: IPO in bits 15:0,
    /// IATTR in bits 23:16 (1 = the offset is into the Connect data, 0 = into
    /// the SQE). Use the offsets in [`connect_offset`].
    pub const fn invalid_parameter_dw0(in_connect_data: bool, offset: u16) -> u32 {
        (offset as u32) | ((in_connect_data as u32) << 16)
    }
}

/// A read-only view of the 1024-byte Connect data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectData<'a> {
    bytes: &'a [u8; CONNECT_DATA_LEN],
}

impl<'a> ConnectData<'a> {
    /// Views exactly one Connect data structure.
    pub const fn new(bytes: &'a [u8; CONNECT_DATA_LEN]) -> Self {
        Self { bytes }
    }

    /// Views the first 1024 bytes of `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, LengthError> {
        fixed(bytes).map(Self::new)
    }

    /// Host Identifier (a UUID).
    pub fn host_id(&self) -> [u8; 16] {
        array_at(self.bytes, connect_offset::HOSTID.into())
    }

    /// Controller ID: [`CNTLID_DYNAMIC`] for any controller on the admin
    /// queue; the ID the admin queue's Connect returned on I/O queues.
    pub fn cntlid(&self) -> u16 {
        u16_at(self.bytes, connect_offset::CNTLID.into())
    }

    /// The raw 256-byte Subsystem NQN field.
    pub fn subsystem_nqn_field(&self) -> &'a [u8] {
        field(self.bytes, connect_offset::SUBNQN.into(), NQN_FIELD_LEN)
    }

    /// The raw 256-byte Host NQN field.
    pub fn host_nqn_field(&self) -> &'a [u8] {
        field(self.bytes, connect_offset::HOSTNQN.into(), NQN_FIELD_LEN)
    }

    /// Subsystem NQN as text (up to the first NUL), not yet validated as an
    /// NQN: use [`nqn::validate_nqn`] for that.
    pub fn subsystem_nqn(&self) -> Result<&'a str, nqn::FieldError> {
        nqn::fixed_field_str(self.subsystem_nqn_field())
    }

    /// Host NQN as text (up to the first NUL), not yet validated.
    pub fn host_nqn(&self) -> Result<&'a str, nqn::FieldError> {
        nqn::fixed_field_str(self.host_nqn_field())
    }
}

fn field(bytes: &[u8], offset: usize, len: usize) -> &[u8] {
    offset
        .checked_add(len)
        .and_then(|end| bytes.get(offset..end))
        .unwrap_or_default()
}

/// What a host puts in the Connect data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectDataFields<'a> {
    /// Host Identifier.
    pub host_id: [u8; 16],
    /// Controller ID (see [`ConnectData::cntlid`]).
    pub cntlid: u16,
    /// Subsystem NQN.
    pub subsystem_nqn: &'a str,
    /// Host NQN.
    pub host_nqn: &'a str,
}

impl ConnectDataFields<'_> {
    /// The 1024 bytes of Connect data. Both NQNs must be valid NQNs.
    pub fn encode(&self) -> Result<[u8; CONNECT_DATA_LEN], nqn::NqnError> {
        nqn::validate_nqn(self.subsystem_nqn)?;
        nqn::validate_nqn(self.host_nqn)?;
        let mut bytes = [0; CONNECT_DATA_LEN];
        put_array(&mut bytes, connect_offset::HOSTID.into(), self.host_id);
        put_u16(&mut bytes, connect_offset::CNTLID.into(), self.cntlid);
        put_padded(
            &mut bytes,
            connect_offset::SUBNQN.into(),
            NQN_FIELD_LEN,
            self.subsystem_nqn.as_bytes(),
            0,
        );
        put_padded(
            &mut bytes,
            connect_offset::HOSTNQN.into(),
            NQN_FIELD_LEN,
            self.host_nqn.as_bytes(),
            0,
        );
        Ok(bytes)
    }
}

const PROPERTY_ATTRIB: usize = 40;
const PROPERTY_OFFSET: usize = 44;
const PROPERTY_VALUE: usize = 48;

/// The fields of a Property Get command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PropertyGet {
    /// ATTRIB bits 2:0: 0 = 4-byte property, 1 = 8-byte property.
    pub attributes: u8,
    /// Property offset (see [`super::registers`]).
    pub offset: u32,
}

impl PropertyGet {
    /// Decodes a Property Get; `None` if `command` is not one.
    pub fn from_command(command: &Command<'_>) -> Option<Self> {
        if command.fabrics_type() != Some(fabrics_type::PROPERTY_GET) {
            return None;
        }
        let bytes = command.as_bytes();
        Some(Self {
            attributes: u8_at(bytes, PROPERTY_ATTRIB),
            offset: u32_at(bytes, PROPERTY_OFFSET),
        })
    }

    /// Property size in bytes (4 or 8), or `None` for a reserved ATTRIB.
    pub const fn size(&self) -> Option<u8> {
        property_size(self.attributes)
    }

    /// Builds the SQE.
    pub fn build(&self, cid: u16) -> [u8; COMMAND_LEN] {
        let mut builder = CommandBuilder::fabrics(fabrics_type::PROPERTY_GET).cid(cid);
        let bytes = builder.bytes_mut();
        put_u8(bytes, PROPERTY_ATTRIB, self.attributes);
        put_u32(bytes, PROPERTY_OFFSET, self.offset);
        builder.build()
    }
}

/// The fields of a Property Set command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PropertySet {
    /// ATTRIB bits 2:0: 0 = 4-byte property, 1 = 8-byte property.
    pub attributes: u8,
    /// Property offset.
    pub offset: u32,
    /// Value; only the low 4 bytes count for a 4-byte property.
    pub value: u64,
}

impl PropertySet {
    /// Decodes a Property Set; `None` if `command` is not one.
    pub fn from_command(command: &Command<'_>) -> Option<Self> {
        if command.fabrics_type() != Some(fabrics_type::PROPERTY_SET) {
            return None;
        }
        let bytes = command.as_bytes();
        Some(Self {
            attributes: u8_at(bytes, PROPERTY_ATTRIB),
            offset: u32_at(bytes, PROPERTY_OFFSET),
            value: u64_at(bytes, PROPERTY_VALUE),
        })
    }

    /// Property size in bytes (4 or 8), or `None` for a reserved ATTRIB.
    pub const fn size(&self) -> Option<u8> {
        property_size(self.attributes)
    }

    /// Builds the SQE.
    pub fn build(&self, cid: u16) -> [u8; COMMAND_LEN] {
        let mut builder = CommandBuilder::fabrics(fabrics_type::PROPERTY_SET).cid(cid);
        let bytes = builder.bytes_mut();
        put_u8(bytes, PROPERTY_ATTRIB, self.attributes);
        put_u32(bytes, PROPERTY_OFFSET, self.offset);
        put_u64(bytes, PROPERTY_VALUE, self.value);
        builder.build()
    }
}

/// ATTRIB value for a 4-byte property.
pub const PROPERTY_SIZE_4: u8 = 0;
/// ATTRIB value for an 8-byte property.
pub const PROPERTY_SIZE_8: u8 = 1;

const fn property_size(attributes: u8) -> Option<u8> {
    match attributes & 0x7 {
        PROPERTY_SIZE_4 => Some(4),
        PROPERTY_SIZE_8 => Some(8),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::command::SglKind;

    const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:0f8a3c1e-5b2d-4e6f-9a7b-1c2d3e4f5a6b";
    const SUBNQN: &str = "nqn.2024-01.io.oxstor:disk0";

    #[test]
    fn connect_sqe_layout() {
        let connect = Connect {
            record_format: 0,
            queue_id: 3,
            sq_size: 127,
            attributes: 0,
            keep_alive_timeout_ms: 5000,
        };
        let bytes = connect.build(9);
        assert_eq!(bytes[0], 0x7F);
        assert_eq!(bytes[4], 0x01);
        assert_eq!(&bytes[42..44], &[3, 0]);
        assert_eq!(&bytes[44..46], &[127, 0]);
        assert_eq!(&bytes[48..52], &5000u32.to_le_bytes());
        let cmd = Command::new(&bytes);
        assert_eq!(
            cmd.sgl().kind(),
            SglKind::InCapsule {
                offset: 0,
                length: 1024
            }
        );
        assert_eq!(Connect::from_command(&cmd), Some(connect));
        assert_eq!(PropertyGet::from_command(&cmd), None);
    }

    #[test]
    fn connect_data_layout() {
        let fields = ConnectDataFields {
            host_id: [0xAB; 16],
            cntlid: CNTLID_DYNAMIC,
            subsystem_nqn: SUBNQN,
            host_nqn: HOSTNQN,
        };
        let bytes = fields.encode().unwrap();
        assert_eq!(&bytes[..16], &[0xAB; 16]);
        assert_eq!(&bytes[16..18], &[0xFF, 0xFF]);
        assert_eq!(&bytes[256..256 + SUBNQN.len()], SUBNQN.as_bytes());
        assert_eq!(bytes[256 + SUBNQN.len()], 0);
        assert_eq!(&bytes[512..512 + HOSTNQN.len()], HOSTNQN.as_bytes());
        let view = ConnectData::new(&bytes);
        assert_eq!(view.host_id(), [0xAB; 16]);
        assert_eq!(view.cntlid(), 0xFFFF);
        assert_eq!(view.subsystem_nqn(), Ok(SUBNQN));
        assert_eq!(view.host_nqn(), Ok(HOSTNQN));
        assert!(ConnectData::parse(&bytes[..1000]).is_err());
        let bad = ConnectDataFields {
            host_nqn: "bogus",
            ..fields
        };
        assert!(bad.encode().is_err());
    }

    #[test]
    fn connect_response_dw0() {
        assert_eq!(Connect::success_dw0(7), 7);
        assert_eq!(
            Connect::invalid_parameter_dw0(true, connect_offset::HOSTNQN),
            0x1_0200
        );
        assert_eq!(
            Connect::invalid_parameter_dw0(false, connect_offset::QID),
            42
        );
    }

    #[test]
    fn property_commands_layout() {
        let get = PropertyGet {
            attributes: PROPERTY_SIZE_8,
            offset: 0,
        };
        let bytes = get.build(1);
        assert_eq!((bytes[4], bytes[40]), (0x04, 1));
        assert_eq!(PropertyGet::from_command(&Command::new(&bytes)), Some(get));
        assert_eq!(get.size(), Some(8));

        let set = PropertySet {
            attributes: PROPERTY_SIZE_4,
            offset: 0x14,
            value: 0x0046_0001,
        };
        let bytes = set.build(2);
        assert_eq!(bytes[4], 0x00);
        assert_eq!(&bytes[44..48], &0x14u32.to_le_bytes());
        assert_eq!(&bytes[48..56], &0x0046_0001u64.to_le_bytes());
        assert_eq!(PropertySet::from_command(&Command::new(&bytes)), Some(set));
        assert_eq!(
            PropertySet {
                attributes: 2,
                ..set
            }
            .size(),
            None
        );
    }
}
