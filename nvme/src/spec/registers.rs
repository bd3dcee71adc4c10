//! Controller properties: the registers a Fabrics host reads and writes with
//! Property Get / Property Set (CAP, VS, CC, CSTS, NSSR).
//!
//! Each register is a plain struct with `from_bits` / `to_bits`, so a target
//! keeps decoded state and a host decodes what it reads. [`Property`] maps a
//! Property Get/Set offset and size onto a register, rejecting the
//! combinations NVMe over Fabrics does not define.

/// Property offsets.
pub mod offset {
    /// Controller Capabilities (8 bytes).
    pub const CAP: u32 = 0x00;
    /// Version (4 bytes).
    pub const VS: u32 = 0x08;
    /// Controller Configuration (4 bytes).
    pub const CC: u32 = 0x14;
    /// Controller Status (4 bytes).
    pub const CSTS: u32 = 0x1C;
    /// NVM Subsystem Reset (4 bytes).
    pub const NSSR: u32 = 0x20;
}

/// VS value for NVMe 1.3.
pub const VERSION_1_3: u32 = 0x0001_0300;
/// VS value for NVMe 1.4.
pub const VERSION_1_4: u32 = 0x0001_0400;
/// VS value for NVMe 2.0.
pub const VERSION_2_0: u32 = 0x0002_0000;

/// The value a host writes to NSSR to reset the subsystem ("NVMe").
pub const NSSR_RESET_VALUE: u32 = 0x4E56_4D65;

/// A property a Fabrics controller exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Property {
    /// Controller Capabilities (read only).
    Cap,
    /// Version (read only).
    Vs,
    /// Controller Configuration.
    Cc,
    /// Controller Status (read only).
    Csts,
    /// NVM Subsystem Reset (write only).
    Nssr,
}

/// Why a Property Get/Set cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PropertyError {
    /// No property lives at the offset.
    #[error("no property at offset {0:#x}")]
    UnknownOffset(u32),
    /// The property exists but not with the requested size.
    #[error("property at offset {offset:#x} is not {size} bytes wide")]
    WrongSize {
        /// Requested offset.
        offset: u32,
        /// Requested size in bytes.
        size: u8,
    },
    /// ATTRIB holds a reserved size encoding.
    #[error("reserved property size encoding")]
    ReservedSize,
    /// The property cannot be written.
    #[error("property at offset {0:#x} is read only")]
    ReadOnly(u32),
}

impl Property {
    /// The property at `offset` accessed with `size` bytes (4 or 8; `None`
    /// for a reserved ATTRIB, see [`super::fabrics::PropertyGet::size`]).
    pub fn resolve(offset: u32, size: Option<u8>) -> Result<Self, PropertyError> {
        let size = size.ok_or(PropertyError::ReservedSize)?;
        let (property, width) = match offset {
            offset::CAP => (Self::Cap, 8),
            offset::VS => (Self::Vs, 4),
            offset::CC => (Self::Cc, 4),
            offset::CSTS => (Self::Csts, 4),
            offset::NSSR => (Self::Nssr, 4),
            _ => return Err(PropertyError::UnknownOffset(offset)),
        };
        if size == width {
            Ok(property)
        } else {
            Err(PropertyError::WrongSize { offset, size })
        }
    }

    /// Like [`Property::resolve`], for a Property Set: also rejects read-only
    /// properties.
    pub fn resolve_writable(offset: u32, size: Option<u8>) -> Result<Self, PropertyError> {
        match Self::resolve(offset, size)? {
            Self::Cap | Self::Vs | Self::Csts => Err(PropertyError::ReadOnly(offset)),
            writable => Ok(writable),
        }
    }

    /// The property's offset.
    pub const fn offset(self) -> u32 {
        match self {
            Self::Cap => offset::CAP,
            Self::Vs => offset::VS,
            Self::Cc => offset::CC,
            Self::Csts => offset::CSTS,
            Self::Nssr => offset::NSSR,
        }
    }
}

/// Controller Capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cap {
    /// Maximum Queue Entries Supported, 0-based (bits 15:0).
    pub max_queue_entries: u16,
    /// Contiguous Queues Required (bit 16); Fabrics controllers set it.
    pub contiguous_queues_required: bool,
    /// Arbitration Mechanism Supported (bits 18:17).
    pub arbitration_mechanisms: u8,
    /// Timeout (bits 31:24): worst-case time to become ready, 500 ms units.
    pub timeout_500ms: u8,
    /// Doorbell Stride (bits 35:32).
    pub doorbell_stride: u8,
    /// NVM Subsystem Reset Supported (bit 36).
    pub subsystem_reset: bool,
    /// Command Sets Supported (bits 44:37); bit 0 of this field (CAP bit 37)
    /// is the NVM command set.
    pub command_sets: u8,
    /// Memory Page Size Minimum (bits 51:48): 2^(12 + value) bytes.
    pub mps_min: u8,
    /// Memory Page Size Maximum (bits 55:52).
    pub mps_max: u8,
}

/// [`Cap::command_sets`] bit for the NVM command set.
pub const CAP_CSS_NVM: u8 = 1 << 0;
/// [`Cap::command_sets`] bit for "I/O command sets" (CC.CSS = 110b allowed).
pub const CAP_CSS_IO_COMMAND_SETS: u8 = 1 << 6;

impl Cap {
    /// Decodes CAP.
    pub const fn from_bits(bits: u64) -> Self {
        Self {
            max_queue_entries: bits as u16,
            contiguous_queues_required: bits & (1 << 16) != 0,
            arbitration_mechanisms: ((bits >> 17) & 0x3) as u8,
            timeout_500ms: (bits >> 24) as u8,
            doorbell_stride: ((bits >> 32) & 0xF) as u8,
            subsystem_reset: bits & (1 << 36) != 0,
            command_sets: (bits >> 37) as u8,
            mps_min: ((bits >> 48) & 0xF) as u8,
            mps_max: ((bits >> 52) & 0xF) as u8,
        }
    }

    /// Encodes CAP.
    pub const fn to_bits(&self) -> u64 {
        (self.max_queue_entries as u64)
            | ((self.contiguous_queues_required as u64) << 16)
            | (((self.arbitration_mechanisms & 0x3) as u64) << 17)
            | ((self.timeout_500ms as u64) << 24)
            | (((self.doorbell_stride & 0xF) as u64) << 32)
            | ((self.subsystem_reset as u64) << 36)
            | ((self.command_sets as u64) << 37)
            | (((self.mps_min & 0xF) as u64) << 48)
            | (((self.mps_max & 0xF) as u64) << 52)
    }
}

/// Shutdown Notification (CC.SHN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShutdownNotification {
    /// No notification.
    #[default]
    None,
    /// Normal shutdown.
    Normal,
    /// Abrupt shutdown.
    Abrupt,
    /// Reserved encoding 11b.
    Reserved,
}

/// Controller Configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cc {
    /// Enable (bit 0).
    pub enable: bool,
    /// I/O Command Set Selected (bits 6:4): 0 = NVM.
    pub command_set: u8,
    /// Memory Page Size (bits 10:7): 2^(12 + value) bytes.
    pub memory_page_size: u8,
    /// Arbitration Mechanism Selected (bits 13:11).
    pub arbitration_mechanism: u8,
    /// Shutdown Notification (bits 15:14).
    pub shutdown: ShutdownNotification,
    /// I/O Submission Queue Entry Size (bits 19:16), log2: 6 = 64 bytes.
    pub io_sq_entry_size: u8,
    /// I/O Completion Queue Entry Size (bits 23:20), log2: 4 = 16 bytes.
    pub io_cq_entry_size: u8,
}

impl Cc {
    /// Decodes CC.
    pub const fn from_bits(bits: u32) -> Self {
        Self {
            enable: bits & 1 != 0,
            command_set: ((bits >> 4) & 0x7) as u8,
            memory_page_size: ((bits >> 7) & 0xF) as u8,
            arbitration_mechanism: ((bits >> 11) & 0x7) as u8,
            shutdown: match (bits >> 14) & 0x3 {
                0 => ShutdownNotification::None,
                1 => ShutdownNotification::Normal,
                2 => ShutdownNotification::Abrupt,
                _ => ShutdownNotification::Reserved,
            },
            io_sq_entry_size: ((bits >> 16) & 0xF) as u8,
            io_cq_entry_size: ((bits >> 20) & 0xF) as u8,
        }
    }

    /// Encodes CC.
    pub const fn to_bits(&self) -> u32 {
        let shutdown = match self.shutdown {
            ShutdownNotification::None => 0,
            ShutdownNotification::Normal => 1,
            ShutdownNotification::Abrupt => 2,
            ShutdownNotification::Reserved => 3,
        };
        (self.enable as u32)
            | (((self.command_set & 0x7) as u32) << 4)
            | (((self.memory_page_size & 0xF) as u32) << 7)
            | (((self.arbitration_mechanism & 0x7) as u32) << 11)
            | (shutdown << 14)
            | (((self.io_sq_entry_size & 0xF) as u32) << 16)
            | (((self.io_cq_entry_size & 0xF) as u32) << 20)
    }
}

/// Shutdown Status (CSTS.SHST).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShutdownStatus {
    /// Normal operation.
    #[default]
    Normal,
    /// Shutdown processing occurring.
    Occurring,
    /// Shutdown processing complete.
    Complete,
    /// Reserved encoding 11b.
    Reserved,
}

/// Controller Status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Csts {
    /// Ready (bit 0).
    pub ready: bool,
    /// Controller Fatal Status (bit 1).
    pub fatal: bool,
    /// Shutdown Status (bits 3:2).
    pub shutdown: ShutdownStatus,
    /// NVM Subsystem Reset Occurred (bit 4).
    pub subsystem_reset_occurred: bool,
    /// Processing Paused (bit 5).
    pub processing_paused: bool,
}

impl Csts {
    /// Decodes CSTS.
    pub const fn from_bits(bits: u32) -> Self {
        Self {
            ready: bits & 1 != 0,
            fatal: bits & (1 << 1) != 0,
            shutdown: match (bits >> 2) & 0x3 {
                0 => ShutdownStatus::Normal,
                1 => ShutdownStatus::Occurring,
                2 => ShutdownStatus::Complete,
                _ => ShutdownStatus::Reserved,
            },
            subsystem_reset_occurred: bits & (1 << 4) != 0,
            processing_paused: bits & (1 << 5) != 0,
        }
    }

    /// Encodes CSTS.
    pub const fn to_bits(&self) -> u32 {
        let shutdown = match self.shutdown {
            ShutdownStatus::Normal => 0,
            ShutdownStatus::Occurring => 1,
            ShutdownStatus::Complete => 2,
            ShutdownStatus::Reserved => 3,
        };
        (self.ready as u32)
            | ((self.fatal as u32) << 1)
            | (shutdown << 2)
            | ((self.subsystem_reset_occurred as u32) << 4)
            | ((self.processing_paused as u32) << 5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_bit_positions() {
        let cap = Cap {
            max_queue_entries: 127,
            contiguous_queues_required: true,
            timeout_500ms: 15,
            command_sets: CAP_CSS_NVM,
            ..Cap::default()
        };
        let bits = cap.to_bits();
        assert_eq!(bits & 0xFFFF, 127);
        assert_eq!(bits >> 16 & 1, 1);
        assert_eq!(bits >> 24 & 0xFF, 15);
        assert_eq!(bits >> 37 & 1, 1, "CSS NVM is CAP bit 37");
        assert_eq!(bits, 0x0000_0020_0F01_007F);
        assert_eq!(Cap::from_bits(bits), cap);
        let pages = Cap {
            mps_min: 0,
            mps_max: 4,
            ..cap
        };
        assert_eq!(pages.to_bits() >> 48, 0x40);
        assert_eq!(Cap::from_bits(u64::MAX).to_bits(), 0x00FF_1FFF_FF07_FFFF);
    }

    #[test]
    fn cc_as_linux_enables_a_controller() {
        // Linux writes IOCQES=4, IOSQES=6, SHN=0, AMS=0, MPS=0, CSS=0, EN=1.
        let cc = Cc::from_bits(0x0046_0001);
        assert!(cc.enable);
        assert_eq!((cc.io_sq_entry_size, cc.io_cq_entry_size), (6, 4));
        assert_eq!(cc.shutdown, ShutdownNotification::None);
        assert_eq!(cc.to_bits(), 0x0046_0001);
        let shutdown = Cc::from_bits(0x0046_4001);
        assert_eq!(shutdown.shutdown, ShutdownNotification::Normal);
        assert_eq!(
            Cc::from_bits(0x0046_8000).shutdown,
            ShutdownNotification::Abrupt
        );
    }

    #[test]
    fn csts_bit_positions() {
        let csts = Csts {
            ready: true,
            shutdown: ShutdownStatus::Complete,
            ..Csts::default()
        };
        assert_eq!(csts.to_bits(), 0b1001);
        assert_eq!(Csts::from_bits(0b1001), csts);
        assert_eq!(Csts::from_bits(0b0110).shutdown, ShutdownStatus::Occurring);
        assert!(Csts::from_bits(0b0110).fatal);
    }

    #[test]
    fn property_resolution() {
        assert_eq!(Property::resolve(0x00, Some(8)), Ok(Property::Cap));
        assert_eq!(Property::resolve(0x08, Some(4)), Ok(Property::Vs));
        assert_eq!(Property::resolve(0x14, Some(4)), Ok(Property::Cc));
        assert_eq!(Property::resolve(0x1C, Some(4)), Ok(Property::Csts));
        assert_eq!(
            Property::resolve(0x00, Some(4)),
            Err(PropertyError::WrongSize { offset: 0, size: 4 })
        );
        assert_eq!(
            Property::resolve(0x24, Some(4)),
            Err(PropertyError::UnknownOffset(0x24))
        );
        assert_eq!(
            Property::resolve(0x14, None),
            Err(PropertyError::ReservedSize)
        );
        assert_eq!(Property::resolve_writable(0x14, Some(4)), Ok(Property::Cc));
        assert_eq!(
            Property::resolve_writable(0x1C, Some(4)),
            Err(PropertyError::ReadOnly(0x1C))
        );
        assert_eq!(Property::Cc.offset(), 0x14);
    }
}
