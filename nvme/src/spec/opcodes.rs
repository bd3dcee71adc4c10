//! Command opcodes, Feature Identifiers and Log Page Identifiers.
//!
//! Plain `u8` constants rather than enums: a target must be able to hold,
//! log and reject any value a host sends, and a `match` on constants is as
//! readable as one on variants.

/// Admin command set opcodes.
pub mod admin {
    /// Delete I/O Submission Queue.
    pub const DELETE_IO_SQ: u8 = 0x00;
    /// Create I/O Submission Queue.
    pub const CREATE_IO_SQ: u8 = 0x01;
    /// Get Log Page.
    pub const GET_LOG_PAGE: u8 = 0x02;
    /// Delete I/O Completion Queue.
    pub const DELETE_IO_CQ: u8 = 0x04;
    /// Create I/O Completion Queue.
    pub const CREATE_IO_CQ: u8 = 0x05;
    /// Identify.
    pub const IDENTIFY: u8 = 0x06;
    /// Abort.
    pub const ABORT: u8 = 0x08;
    /// Set Features.
    pub const SET_FEATURES: u8 = 0x09;
    /// Get Features.
    pub const GET_FEATURES: u8 = 0x0A;
    /// Asynchronous Event Request.
    pub const ASYNC_EVENT_REQUEST: u8 = 0x0C;
    /// Namespace Management.
    pub const NAMESPACE_MANAGEMENT: u8 = 0x0D;
    /// Keep Alive.
    pub const KEEP_ALIVE: u8 = 0x18;
    /// Fabrics command (the command type is in byte 4).
    pub const FABRICS: u8 = 0x7F;

    /// A name for logs, or `None` for an opcode this crate does not name.
    pub const fn name(opcode: u8) -> Option<&'static str> {
        Some(match opcode {
            DELETE_IO_SQ => "Delete I/O SQ",
            CREATE_IO_SQ => "Create I/O SQ",
            GET_LOG_PAGE => "Get Log Page",
            DELETE_IO_CQ => "Delete I/O CQ",
            CREATE_IO_CQ => "Create I/O CQ",
            IDENTIFY => "Identify",
            ABORT => "Abort",
            SET_FEATURES => "Set Features",
            GET_FEATURES => "Get Features",
            ASYNC_EVENT_REQUEST => "Asynchronous Event Request",
            NAMESPACE_MANAGEMENT => "Namespace Management",
            KEEP_ALIVE => "Keep Alive",
            FABRICS => "Fabrics",
            _ => return None,
        })
    }
}

/// NVM command set (I/O queue) opcodes.
pub mod io {
    /// Flush.
    pub const FLUSH: u8 = 0x00;
    /// Write.
    pub const WRITE: u8 = 0x01;
    /// Read.
    pub const READ: u8 = 0x02;
    /// Write Uncorrectable.
    pub const WRITE_UNCORRECTABLE: u8 = 0x04;
    /// Compare.
    pub const COMPARE: u8 = 0x05;
    /// Write Zeroes.
    pub const WRITE_ZEROES: u8 = 0x08;
    /// Dataset Management.
    pub const DATASET_MANAGEMENT: u8 = 0x09;
    /// Verify.
    pub const VERIFY: u8 = 0x0C;

    /// A name for logs, or `None` for an opcode this crate does not name.
    pub const fn name(opcode: u8) -> Option<&'static str> {
        Some(match opcode {
            FLUSH => "Flush",
            WRITE => "Write",
            READ => "Read",
            WRITE_UNCORRECTABLE => "Write Uncorrectable",
            COMPARE => "Compare",
            WRITE_ZEROES => "Write Zeroes",
            DATASET_MANAGEMENT => "Dataset Management",
            VERIFY => "Verify",
            _ => return None,
        })
    }

    /// Whether the opcode moves data from host to controller. NVMe encodes
    /// the direction in the opcode's two low bits: 01b host-to-controller,
    /// 10b controller-to-host (Compare, 0x05, is host-to-controller).
    pub const fn transfers_to_controller(opcode: u8) -> bool {
        opcode & 0x3 == 0x1
    }

    /// Whether the opcode moves data from controller to host.
    pub const fn transfers_to_host(opcode: u8) -> bool {
        opcode & 0x3 == 0x2
    }
}

/// Feature Identifiers for Get/Set Features.
pub mod feature {
    /// Arbitration.
    pub const ARBITRATION: u8 = 0x01;
    /// Power Management.
    pub const POWER_MANAGEMENT: u8 = 0x02;
    /// Temperature Threshold.
    pub const TEMPERATURE_THRESHOLD: u8 = 0x04;
    /// Error Recovery.
    pub const ERROR_RECOVERY: u8 = 0x05;
    /// Volatile Write Cache.
    pub const VOLATILE_WRITE_CACHE: u8 = 0x06;
    /// Number of Queues.
    pub const NUMBER_OF_QUEUES: u8 = 0x07;
    /// Interrupt Coalescing.
    pub const INTERRUPT_COALESCING: u8 = 0x08;
    /// Interrupt Vector Configuration.
    pub const INTERRUPT_VECTOR_CONFIG: u8 = 0x09;
    /// Write Atomicity Normal.
    pub const WRITE_ATOMICITY: u8 = 0x0A;
    /// Asynchronous Event Configuration.
    pub const ASYNC_EVENT_CONFIG: u8 = 0x0B;
    /// Timestamp.
    pub const TIMESTAMP: u8 = 0x0E;
    /// Keep Alive Timer.
    pub const KEEP_ALIVE_TIMER: u8 = 0x0F;
    /// Host Identifier.
    pub const HOST_IDENTIFIER: u8 = 0x81;
}

/// Log Page Identifiers for Get Log Page.
pub mod log_page {
    /// Supported Log Pages.
    pub const SUPPORTED_LOG_PAGES: u8 = 0x00;
    /// Error Information.
    pub const ERROR_INFORMATION: u8 = 0x01;
    /// SMART / Health Information.
    pub const SMART_HEALTH: u8 = 0x02;
    /// Firmware Slot Information.
    pub const FIRMWARE_SLOT: u8 = 0x03;
    /// Changed Namespace List.
    pub const CHANGED_NAMESPACE_LIST: u8 = 0x04;
    /// Commands Supported and Effects.
    pub const COMMANDS_SUPPORTED_AND_EFFECTS: u8 = 0x05;
    /// Asymmetric Namespace Access.
    pub const ASYMMETRIC_NAMESPACE_ACCESS: u8 = 0x0C;
    /// Discovery (Fabrics discovery controllers only).
    pub const DISCOVERY: u8 = 0x70;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_direction_from_opcode() {
        assert!(io::transfers_to_controller(io::WRITE));
        assert!(io::transfers_to_controller(io::COMPARE));
        assert!(io::transfers_to_host(io::READ));
        assert!(!io::transfers_to_host(io::FLUSH));
        assert!(!io::transfers_to_controller(io::WRITE_ZEROES));
        assert!(io::transfers_to_controller(io::DATASET_MANAGEMENT));
        assert!(io::transfers_to_host(admin::IDENTIFY));
        assert!(io::transfers_to_host(admin::GET_LOG_PAGE));
    }

    #[test]
    fn names() {
        assert_eq!(admin::name(admin::KEEP_ALIVE), Some("Keep Alive"));
        assert_eq!(io::name(io::WRITE_ZEROES), Some("Write Zeroes"));
        assert_eq!(io::name(0x7E), None);
    }
}
