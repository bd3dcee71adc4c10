//! Log pages (NVMe Base 2.0 section 5.16.1, NVMe over Fabrics 1.1 section
//! 5.3): SMART / Health, Error Information, Changed Namespace List, Commands
//! Supported and Effects, and the Discovery log.
//!
//! Builders produce a log page whole; hosts read logs in pieces (Get Log Page
//! carries an offset and a length), so [`copy_log_window`] cuts the piece a
//! command asks for out of the whole page.

use crate::bytes::{put_padded, put_u128, put_u16, put_u32, put_u64, put_u8};

/// Size of the SMART / Health Information log.
pub const SMART_LOG_LEN: usize = 512;
/// Size of one Error Information log entry.
pub const ERROR_LOG_ENTRY_LEN: usize = 64;
/// Size of the Changed Namespace List log.
pub const CHANGED_NAMESPACE_LIST_LEN: usize = 4096;
/// Most NSIDs the Changed Namespace List can name.
pub const CHANGED_NAMESPACE_LIST_MAX: usize = 1024;
/// Size of the Commands Supported and Effects log.
pub const COMMAND_EFFECTS_LOG_LEN: usize = 4096;
/// Size of the Discovery log header, and of each Discovery log entry.
pub const DISCOVERY_RECORD_LEN: usize = 1024;

/// A Get Log Page offset past the end of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("log page offset {offset} is past the {len}-byte log")]
pub struct LogOffsetError {
    /// Requested offset.
    pub offset: u64,
    /// Size of the log.
    pub len: usize,
}

/// Copies the part of `log` starting at byte `offset` into `dst`, zero
/// filling whatever lies past the end of the log. An offset beyond the end
/// of the log is an error (the command fails with Invalid Field); an offset
/// equal to the length yields all zeros.
pub fn copy_log_window(log: &[u8], offset: u64, dst: &mut [u8]) -> Result<(), LogOffsetError> {
    let error = LogOffsetError {
        offset,
        len: log.len(),
    };
    let start = usize::try_from(offset).map_err(|_| error)?;
    let available = log.get(start..).ok_or(error)?;
    let copied = available.len().min(dst.len());
    let (head, tail) = dst.split_at_mut(copied);
    head.copy_from_slice(available.get(..copied).unwrap_or_default());
    tail.fill(0);
    Ok(())
}

/// SMART / Health Information log (log page 02h). Counters are 128-bit on
/// the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SmartLog {
    /// Critical Warning bits.
    pub critical_warning: u8,
    /// Composite Temperature in kelvin.
    pub temperature_kelvin: u16,
    /// Available Spare, percent.
    pub available_spare: u8,
    /// Available Spare Threshold, percent.
    pub available_spare_threshold: u8,
    /// Percentage Used.
    pub percentage_used: u8,
    /// Data Units Read, in thousands of 512-byte units.
    pub data_units_read: u128,
    /// Data Units Written, in thousands of 512-byte units.
    pub data_units_written: u128,
    /// Host Read Commands.
    pub host_read_commands: u128,
    /// Host Write Commands.
    pub host_write_commands: u128,
    /// Controller Busy Time, minutes.
    pub controller_busy_minutes: u128,
    /// Power Cycles.
    pub power_cycles: u128,
    /// Power On Hours.
    pub power_on_hours: u128,
    /// Unsafe Shutdowns.
    pub unsafe_shutdowns: u128,
    /// Media and Data Integrity Errors.
    pub media_errors: u128,
    /// Number of Error Information Log Entries.
    pub error_log_entries: u128,
}

impl SmartLog {
    /// The 512-byte log page.
    pub fn encode(&self) -> [u8; SMART_LOG_LEN] {
        let mut buf = [0; SMART_LOG_LEN];
        put_u8(&mut buf, 0, self.critical_warning);
        put_u16(&mut buf, 1, self.temperature_kelvin);
        put_u8(&mut buf, 3, self.available_spare);
        put_u8(&mut buf, 4, self.available_spare_threshold);
        put_u8(&mut buf, 5, self.percentage_used);
        put_u128(&mut buf, 32, self.data_units_read);
        put_u128(&mut buf, 48, self.data_units_written);
        put_u128(&mut buf, 64, self.host_read_commands);
        put_u128(&mut buf, 80, self.host_write_commands);
        put_u128(&mut buf, 96, self.controller_busy_minutes);
        put_u128(&mut buf, 112, self.power_cycles);
        put_u128(&mut buf, 128, self.power_on_hours);
        put_u128(&mut buf, 144, self.unsafe_shutdowns);
        put_u128(&mut buf, 160, self.media_errors);
        put_u128(&mut buf, 176, self.error_log_entries);
        buf
    }
}

/// One Error Information log entry (log page 01h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ErrorLogEntry {
    /// Error Count: unique, incrementing; 0 marks an empty entry.
    pub error_count: u64,
    /// Submission Queue ID of the failed command.
    pub sq_id: u16,
    /// Command ID of the failed command.
    pub cid: u16,
    /// Status of the failed command.
    pub status: super::completion::Status,
    /// Parameter Error Location: byte (bits 7:0) and bit (bits 10:8) of the
    /// offending field; 0xFFFF if not applicable.
    pub parameter_error_location: u16,
    /// First LBA that saw the error.
    pub lba: u64,
    /// Namespace of the error.
    pub nsid: u32,
    /// Transport Type (see [`trtype`]).
    pub transport_type: u8,
    /// Command Specific Information.
    pub command_specific: u64,
}

impl ErrorLogEntry {
    /// The 64-byte entry.
    pub fn encode(&self) -> [u8; ERROR_LOG_ENTRY_LEN] {
        let mut buf = [0; ERROR_LOG_ENTRY_LEN];
        put_u64(&mut buf, 0, self.error_count);
        put_u16(&mut buf, 8, self.sq_id);
        put_u16(&mut buf, 10, self.cid);
        // Same layout as the CQE status halfword; the phase tag bit is 0.
        put_u16(&mut buf, 12, self.status.to_field());
        put_u16(&mut buf, 14, self.parameter_error_location);
        put_u64(&mut buf, 16, self.lba);
        put_u32(&mut buf, 24, self.nsid);
        put_u8(&mut buf, 29, self.transport_type);
        put_u64(&mut buf, 32, self.command_specific);
        buf
    }
}

/// The Changed Namespace List log (log page 04h): up to 1024 NSIDs, zero
/// terminated. More than 1024 changes are reported as a single FFFFFFFFh.
pub fn encode_changed_namespace_list(changed: &[u32]) -> Box<[u8; CHANGED_NAMESPACE_LIST_LEN]> {
    let mut buf = Box::new([0; CHANGED_NAMESPACE_LIST_LEN]);
    if changed.len() > CHANGED_NAMESPACE_LIST_MAX {
        put_u32(&mut buf[..], 0, u32::MAX);
        return buf;
    }
    for (slot, nsid) in buf.chunks_exact_mut(4).zip(changed) {
        slot.copy_from_slice(&nsid.to_le_bytes());
    }
    buf
}

/// Bits of a Commands Supported and Effects entry.
pub mod effects {
    /// Command Supported.
    pub const CSUPP: u32 = 1 << 0;
    /// Logical Block Content Change.
    pub const LBCC: u32 = 1 << 1;
    /// Namespace Capability Change.
    pub const NCC: u32 = 1 << 2;
    /// Namespace Inventory Change.
    pub const NIC: u32 = 1 << 3;
    /// Controller Capability Change.
    pub const CCC: u32 = 1 << 4;
}

/// Commands Supported and Effects log (log page 05h): one 32-bit entry per
/// admin opcode, then one per I/O opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandEffectsLog {
    /// Entries indexed by admin opcode.
    pub admin: [u32; 256],
    /// Entries indexed by I/O opcode.
    pub io: [u32; 256],
}

impl Default for CommandEffectsLog {
    fn default() -> Self {
        Self {
            admin: [0; 256],
            io: [0; 256],
        }
    }
}

impl CommandEffectsLog {
    /// The 4096-byte log page (the last 2048 bytes are reserved).
    pub fn encode(&self) -> Box<[u8; COMMAND_EFFECTS_LOG_LEN]> {
        let mut buf = Box::new([0; COMMAND_EFFECTS_LOG_LEN]);
        let entries = self.admin.iter().chain(self.io.iter());
        for (slot, entry) in buf.chunks_exact_mut(4).zip(entries) {
            slot.copy_from_slice(&entry.to_le_bytes());
        }
        buf
    }
}

/// Transport types (TRTYPE).
pub mod trtype {
    /// RDMA.
    pub const RDMA: u8 = 1;
    /// Fibre Channel.
    pub const FIBRE_CHANNEL: u8 = 2;
    /// TCP.
    pub const TCP: u8 = 3;
    /// Intra-host transport (loopback).
    pub const LOOP: u8 = 254;
}

/// Address families (ADRFAM).
pub mod adrfam {
    /// AF_INET.
    pub const IPV4: u8 = 1;
    /// AF_INET6.
    pub const IPV6: u8 = 2;
}

/// Subsystem types (SUBTYPE).
pub mod subtype {
    /// Referral to another discovery service.
    pub const REFERRAL: u8 = 1;
    /// NVM subsystem.
    pub const NVME: u8 = 2;
    /// The discovery controller answering.
    pub const CURRENT_DISCOVERY: u8 = 3;
}

/// Transport Requirements (TREQ).
pub mod treq {
    /// Secure channel: not specified.
    pub const SECURE_CHANNEL_NOT_SPECIFIED: u8 = 0;
    /// Secure channel required.
    pub const SECURE_CHANNEL_REQUIRED: u8 = 1;
    /// Secure channel not required.
    pub const SECURE_CHANNEL_NOT_REQUIRED: u8 = 2;
    /// SQ flow control disable supported.
    pub const SQ_FLOW_CONTROL_DISABLE: u8 = 1 << 2;
}

/// TCP security types (TSAS SECTYPE).
pub mod tcp_sectype {
    /// No security.
    pub const NONE: u8 = 0;
    /// TLS 1.2.
    pub const TLS_1_2: u8 = 1;
    /// TLS 1.3.
    pub const TLS_1_3: u8 = 2;
}

/// One Discovery log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryEntry {
    /// Transport Type ([`trtype`]).
    pub transport_type: u8,
    /// Address Family ([`adrfam`]).
    pub address_family: u8,
    /// Subsystem Type ([`subtype`]).
    pub subsystem_type: u8,
    /// Transport Requirements ([`treq`]).
    pub transport_requirements: u8,
    /// Port ID.
    pub port_id: u16,
    /// Controller ID: 0xFFFF for the dynamic controller model.
    pub controller_id: u16,
    /// Admin Max SQ Size.
    pub admin_max_sq_size: u16,
    /// Entry Flags.
    pub entry_flags: u16,
    /// Transport Service Identifier: the TCP port as decimal text.
    pub service_id: String,
    /// Subsystem NQN.
    pub subsystem_nqn: String,
    /// Transport Address: the IP address as text.
    pub address: String,
    /// TCP security type ([`tcp_sectype`]), first byte of TSAS.
    pub tcp_security_type: u8,
}

impl DiscoveryEntry {
    /// Writes the 1024-byte entry into `buf`, which must be that long.
    fn encode_into(&self, buf: &mut [u8]) {
        put_u8(buf, 0, self.transport_type);
        put_u8(buf, 1, self.address_family);
        put_u8(buf, 2, self.subsystem_type);
        put_u8(buf, 3, self.transport_requirements);
        put_u16(buf, 4, self.port_id);
        put_u16(buf, 6, self.controller_id);
        put_u16(buf, 8, self.admin_max_sq_size);
        put_u16(buf, 10, self.entry_flags);
        put_padded(buf, 32, 32, self.service_id.as_bytes(), 0);
        put_padded(buf, 256, 256, self.subsystem_nqn.as_bytes(), 0);
        put_padded(buf, 512, 256, self.address.as_bytes(), 0);
        put_u8(buf, 768, self.tcp_security_type);
    }
}

/// The whole Discovery log page: a 1024-byte header (GENCTR, NUMREC, RECFMT)
/// followed by one 1024-byte record per entry.
pub fn encode_discovery_log(generation: u64, entries: &[DiscoveryEntry]) -> Vec<u8> {
    let mut log = vec![0; DISCOVERY_RECORD_LEN * (1 + entries.len())];
    put_u64(&mut log, 0, generation);
    put_u64(&mut log, 8, entries.len() as u64);
    put_u16(&mut log, 16, 0);
    for (record, entry) in log
        .chunks_exact_mut(DISCOVERY_RECORD_LEN)
        .skip(1)
        .zip(entries)
    {
        entry.encode_into(record);
    }
    log
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::completion::Status;

    #[test]
    fn log_window_is_bounds_checked() {
        let log: Vec<u8> = (1..=10).collect();
        let mut dst = [0xEE; 4];
        copy_log_window(&log, 8, &mut dst).unwrap();
        assert_eq!(dst, [9, 10, 0, 0]);
        copy_log_window(&log, 10, &mut dst).unwrap();
        assert_eq!(dst, [0; 4]);
        assert_eq!(
            copy_log_window(&log, 11, &mut dst),
            Err(LogOffsetError {
                offset: 11,
                len: 10
            })
        );
        assert!(copy_log_window(&log, u64::MAX, &mut dst).is_err());
        let mut big = [0xEE; 16];
        copy_log_window(&log, 0, &mut big).unwrap();
        assert_eq!(&big[..10], &log[..]);
        assert_eq!(&big[10..], &[0; 6]);
    }

    #[test]
    fn smart_log_offsets() {
        let log = SmartLog {
            critical_warning: 1,
            temperature_kelvin: 300,
            available_spare: 100,
            available_spare_threshold: 10,
            percentage_used: 2,
            data_units_read: 0x0102,
            data_units_written: 3,
            host_read_commands: 4,
            host_write_commands: 5,
            controller_busy_minutes: 6,
            power_cycles: 7,
            power_on_hours: 8,
            unsafe_shutdowns: 9,
            media_errors: 10,
            error_log_entries: 1 << 64,
        }
        .encode();
        assert_eq!(log[0], 1);
        assert_eq!(&log[1..3], &300u16.to_le_bytes());
        assert_eq!((log[3], log[4], log[5]), (100, 10, 2));
        assert_eq!(&log[32..34], &[2, 1]);
        for (at, value) in [
            (48, 3),
            (64, 4),
            (80, 5),
            (96, 6),
            (112, 7),
            (128, 8),
            (144, 9),
            (160, 10),
        ] {
            assert_eq!(log[at], value, "offset {at}");
        }
        assert_eq!(log[176 + 8], 1, "128-bit counter, little endian");
        assert!(log[192..].iter().all(|&b| b == 0));
    }

    #[test]
    fn error_log_entry_offsets() {
        let entry = ErrorLogEntry {
            error_count: 5,
            sq_id: 1,
            cid: 0x1234,
            status: Status::LBA_OUT_OF_RANGE.with_dnr(),
            parameter_error_location: 0xFFFF,
            lba: 0x99,
            nsid: 2,
            transport_type: trtype::TCP,
            command_specific: 0,
        }
        .encode();
        assert_eq!(entry[0], 5);
        assert_eq!(&entry[8..10], &[1, 0]);
        assert_eq!(&entry[10..12], &[0x34, 0x12]);
        assert_eq!(&entry[12..14], &(0x8000u16 | (0x80 << 1)).to_le_bytes());
        assert_eq!(&entry[14..16], &[0xFF, 0xFF]);
        assert_eq!(entry[16], 0x99);
        assert_eq!(entry[24], 2);
        assert_eq!(entry[29], 3);
    }

    #[test]
    fn changed_namespace_list() {
        let log = encode_changed_namespace_list(&[4, 2]);
        assert_eq!(&log[..12], &[4, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
        let overflow: Vec<u32> = (1..=1025).collect();
        let log = encode_changed_namespace_list(&overflow);
        assert_eq!(&log[..8], &[0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0]);
        let full: Vec<u32> = (1..=1024).collect();
        let log = encode_changed_namespace_list(&full);
        assert_eq!(&log[4092..], &1024u32.to_le_bytes());
    }

    #[test]
    fn command_effects_layout() {
        let mut effects_log = CommandEffectsLog::default();
        effects_log.admin[0x06] = effects::CSUPP;
        effects_log.io[0x01] = effects::CSUPP | effects::LBCC;
        let log = effects_log.encode();
        assert_eq!(&log[0x06 * 4..0x06 * 4 + 4], &[1, 0, 0, 0]);
        assert_eq!(&log[1024 + 4..1024 + 8], &[3, 0, 0, 0]);
        assert!(log[2048..].iter().all(|&b| b == 0));
    }

    #[test]
    fn discovery_log_layout() {
        let entry = DiscoveryEntry {
            transport_type: trtype::TCP,
            address_family: adrfam::IPV4,
            subsystem_type: subtype::NVME,
            transport_requirements: treq::SECURE_CHANNEL_NOT_REQUIRED,
            port_id: 1,
            controller_id: 0xFFFF,
            admin_max_sq_size: 32,
            entry_flags: 0,
            service_id: "4420".into(),
            subsystem_nqn: "nqn.2024-01.io.oxstor:disk0".into(),
            address: "192.168.1.10".into(),
            tcp_security_type: tcp_sectype::NONE,
        };
        let log = encode_discovery_log(7, &[entry.clone(), entry]);
        assert_eq!(log.len(), 3 * 1024);
        assert_eq!(&log[0..8], &7u64.to_le_bytes(), "genctr");
        assert_eq!(&log[8..16], &2u64.to_le_bytes(), "numrec");
        assert_eq!(&log[16..18], &[0, 0], "recfmt");
        let e = &log[1024..2048];
        assert_eq!(&e[0..4], &[3, 1, 2, 2], "trtype adrfam subtype treq");
        assert_eq!(&e[4..6], &[1, 0], "portid");
        assert_eq!(&e[6..8], &[0xFF, 0xFF], "cntlid");
        assert_eq!(&e[8..10], &[32, 0], "asqsz");
        assert_eq!(&e[32..36], b"4420");
        assert_eq!(e[36], 0);
        assert_eq!(&e[256..256 + 27], b"nqn.2024-01.io.oxstor:disk0");
        assert_eq!(&e[512..524], b"192.168.1.10");
        assert_eq!(e[768], 0, "tsas sectype");
        assert_eq!(&log[2048..2052], &[3, 1, 2, 2]);
    }
}
