//! Identify data structures (NVMe Base 2.0 section 5.17.2): the 4096-byte
//! answers to Identify Controller, Identify Namespace, the Active Namespace
//! ID list and the Namespace Identification Descriptor list.
//!
//! Each builder fills a whole 4096-byte buffer, zeroing every field it does
//! not model, so stale bytes can never leak to a host. Offsets are those of
//! `struct nvme_id_ctrl` / `struct nvme_id_ns` in Linux's
//! `include/linux/nvme.h`, which the tests pin.

use crate::bytes::{put_array, put_padded, put_u16, put_u32, put_u64, put_u8};

/// Size of every Identify data structure.
pub const IDENTIFY_DATA_LEN: usize = 4096;

/// Controller or Namespace Structure (CNS) values.
pub mod cns {
    /// Identify Namespace for the NSID.
    pub const NAMESPACE: u8 = 0x00;
    /// Identify Controller.
    pub const CONTROLLER: u8 = 0x01;
    /// Active Namespace ID list.
    pub const ACTIVE_NAMESPACE_LIST: u8 = 0x02;
    /// Namespace Identification Descriptor list.
    pub const NAMESPACE_ID_DESCRIPTORS: u8 = 0x03;
    /// I/O Command Set specific Identify Namespace.
    pub const CSI_NAMESPACE: u8 = 0x05;
    /// I/O Command Set specific Identify Controller.
    pub const CSI_CONTROLLER: u8 = 0x06;
    /// I/O Command Set specific Active Namespace ID list.
    pub const CSI_ACTIVE_NAMESPACE_LIST: u8 = 0x07;
}

/// Controller type (CNTRLTYPE).
pub mod controller_type {
    /// I/O controller.
    pub const IO: u8 = 1;
    /// Discovery controller.
    pub const DISCOVERY: u8 = 2;
    /// Administrative controller.
    pub const ADMINISTRATIVE: u8 = 3;
}

/// Optional NVM Command Support (ONCS) bits.
pub mod oncs {
    /// Compare.
    pub const COMPARE: u16 = 1 << 0;
    /// Write Uncorrectable.
    pub const WRITE_UNCORRECTABLE: u16 = 1 << 1;
    /// Dataset Management.
    pub const DATASET_MANAGEMENT: u16 = 1 << 2;
    /// Write Zeroes.
    pub const WRITE_ZEROES: u16 = 1 << 3;
    /// Save field in Set Features / Select field in Get Features.
    pub const SAVE_SELECT_FEATURES: u16 = 1 << 4;
    /// Reservations.
    pub const RESERVATIONS: u16 = 1 << 5;
    /// Timestamp feature.
    pub const TIMESTAMP: u16 = 1 << 6;
    /// Verify.
    pub const VERIFY: u16 = 1 << 7;
}

/// Log Page Attributes (LPA) bits.
pub mod lpa {
    /// SMART / Health log per namespace.
    pub const SMART_PER_NAMESPACE: u8 = 1 << 0;
    /// Commands Supported and Effects log.
    pub const COMMANDS_EFFECTS: u8 = 1 << 1;
    /// Extended data for Get Log Page (NUMDU, LPOL/LPOU).
    pub const EXTENDED_DATA: u8 = 1 << 2;
}

/// Optional Asynchronous Events Supported (OAES) bits.
pub mod oaes {
    /// Namespace Attribute Notices.
    pub const NAMESPACE_ATTRIBUTE: u32 = 1 << 8;
    /// Firmware Activation Notices.
    pub const FIRMWARE_ACTIVATION: u32 = 1 << 9;
    /// Asymmetric Namespace Access Change Notices.
    pub const ANA_CHANGE: u32 = 1 << 11;
    /// Discovery Log Page Change Notification.
    pub const DISCOVERY_LOG_CHANGE: u32 = 1 << 31;
}

/// SGL Support (SGLS) bits.
pub mod sgls {
    /// SGLs supported, no alignment or granularity requirement (bits 1:0 = 01b).
    pub const SUPPORTED: u32 = 1 << 0;
    /// Keyed SGL Data Block descriptor (RDMA).
    pub const KEYED_DATA_BLOCK: u32 = 1 << 2;
    /// Address field of a Data Block descriptor may be an offset: needed for
    /// in-capsule data.
    pub const OFFSET: u32 = 1 << 20;
}

/// Byte offsets in Identify Controller.
pub mod controller_offset {
    #![allow(missing_docs)]
    pub const VID: usize = 0;
    pub const SSVID: usize = 2;
    pub const SN: usize = 4;
    pub const MN: usize = 24;
    pub const FR: usize = 64;
    pub const RAB: usize = 72;
    pub const IEEE: usize = 73;
    pub const CMIC: usize = 76;
    pub const MDTS: usize = 77;
    pub const CNTLID: usize = 78;
    pub const VER: usize = 80;
    pub const RTD3R: usize = 84;
    pub const RTD3E: usize = 88;
    pub const OAES: usize = 92;
    pub const CTRATT: usize = 96;
    pub const CNTRLTYPE: usize = 111;
    pub const OACS: usize = 256;
    pub const ACL: usize = 258;
    pub const AERL: usize = 259;
    pub const FRMW: usize = 260;
    pub const LPA: usize = 261;
    pub const ELPE: usize = 262;
    pub const NPSS: usize = 263;
    pub const KAS: usize = 320;
    pub const SQES: usize = 512;
    pub const CQES: usize = 513;
    pub const MAXCMD: usize = 514;
    pub const NN: usize = 516;
    pub const ONCS: usize = 520;
    pub const FUSES: usize = 522;
    pub const FNA: usize = 524;
    pub const VWC: usize = 525;
    pub const AWUN: usize = 526;
    pub const AWUPF: usize = 528;
    pub const ACWU: usize = 532;
    pub const SGLS: usize = 536;
    pub const MNAN: usize = 540;
    pub const SUBNQN: usize = 768;
    pub const IOCCSZ: usize = 1792;
    pub const IORCSZ: usize = 1796;
    pub const ICDOFF: usize = 1800;
    pub const FCATT: usize = 1802;
    pub const MSDBD: usize = 1803;
    pub const OFCS: usize = 1804;
    pub const PSD0: usize = 2048;
}

/// Identify Controller data (CNS 01h).
///
/// Text fields longer than their wire width are truncated; they should be
/// printable ASCII.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifyController {
    /// PCI Vendor ID.
    pub vendor_id: u16,
    /// PCI Subsystem Vendor ID.
    pub subsystem_vendor_id: u16,
    /// Serial Number (20 bytes, space padded).
    pub serial_number: String,
    /// Model Number (40 bytes, space padded).
    pub model_number: String,
    /// Firmware Revision (8 bytes, space padded).
    pub firmware_revision: String,
    /// Recommended Arbitration Burst.
    pub arbitration_burst: u8,
    /// IEEE OUI, least significant byte first as on the wire.
    pub ieee_oui: [u8; 3],
    /// Controller Multi-Path I/O and Namespace Sharing Capabilities.
    pub cmic: u8,
    /// Maximum Data Transfer Size: 2^MDTS units of CAP.MPSMIN; 0 = no limit.
    pub mdts: u8,
    /// Controller ID.
    pub controller_id: u16,
    /// Version (same encoding as the VS property).
    pub version: u32,
    /// Optional Asynchronous Events Supported ([`oaes`]).
    pub oaes: u32,
    /// Controller Attributes (bit 0: 128-bit host identifier).
    pub ctratt: u32,
    /// Controller type ([`controller_type`]).
    pub controller_type: u8,
    /// Optional Admin Command Support.
    pub oacs: u16,
    /// Abort Command Limit, 0-based.
    pub abort_command_limit: u8,
    /// Asynchronous Event Request Limit, 0-based.
    pub async_event_request_limit: u8,
    /// Firmware Updates.
    pub frmw: u8,
    /// Log Page Attributes ([`lpa`]).
    pub lpa: u8,
    /// Error Log Page Entries, 0-based.
    pub error_log_entries: u8,
    /// Keep Alive Support: granularity in 100 ms units; 0 = unsupported.
    pub keep_alive_granularity_100ms: u16,
    /// SQ entry sizes: max in bits 7:4, required in bits 3:0 (log2).
    pub sqes: u8,
    /// CQ entry sizes: max in bits 7:4, required in bits 3:0 (log2).
    pub cqes: u8,
    /// Maximum Outstanding Commands.
    pub max_commands: u16,
    /// Number of Namespaces: the highest valid NSID.
    pub namespace_count: u32,
    /// Optional NVM Command Support ([`oncs`]).
    pub oncs: u16,
    /// Fused Operation Support (bit 0: Compare and Write).
    pub fuses: u16,
    /// Format NVM Attributes.
    pub fna: u8,
    /// Volatile Write Cache (bit 0: present; bits 2:1 = 11b: Flush with
    /// NSID FFFFFFFFh supported).
    pub vwc: u8,
    /// Atomic Write Unit Normal, 0-based blocks.
    pub awun: u16,
    /// Atomic Write Unit Power Fail, 0-based blocks.
    pub awupf: u16,
    /// Atomic Compare & Write Unit, 0-based blocks.
    pub acwu: u16,
    /// SGL Support ([`sgls`]).
    pub sgls: u32,
    /// Maximum Number of Allowed Namespaces.
    pub mnan: u32,
    /// NVM Subsystem NQN (256 bytes, NUL padded).
    pub subsystem_nqn: String,
    /// Fabrics: I/O Queue Command Capsule Supported Size in 16-byte units
    /// (64-byte SQE plus in-capsule data).
    pub ioccsz: u32,
    /// Fabrics: I/O Queue Response Capsule Supported Size in 16-byte units.
    pub iorcsz: u32,
    /// Fabrics: In Capsule Data Offset in 16-byte units.
    pub icdoff: u16,
    /// Fabrics: Controller Attributes (bit 0: static controller model).
    pub fcatt: u8,
    /// Fabrics: Maximum SGL Data Block Descriptors.
    pub msdbd: u8,
    /// Fabrics: Optional Fabrics Commands Support (bit 0: Disconnect).
    pub ofcs: u16,
}

impl Default for IdentifyController {
    /// An NVMe 2.0 I/O controller with 64-byte SQEs and 16-byte CQEs, one
    /// SGL descriptor with offset support, and zeros elsewhere.
    fn default() -> Self {
        Self {
            vendor_id: 0,
            subsystem_vendor_id: 0,
            serial_number: String::new(),
            model_number: String::new(),
            firmware_revision: String::new(),
            arbitration_burst: 6,
            ieee_oui: [0; 3],
            cmic: 0,
            mdts: 0,
            controller_id: 0,
            version: super::registers::VERSION_2_0,
            oaes: 0,
            ctratt: 0,
            controller_type: controller_type::IO,
            oacs: 0,
            abort_command_limit: 3,
            async_event_request_limit: 3,
            frmw: 0,
            lpa: 0,
            error_log_entries: 0,
            keep_alive_granularity_100ms: 0,
            sqes: 0x66,
            cqes: 0x44,
            max_commands: 0,
            namespace_count: 0,
            oncs: 0,
            fuses: 0,
            fna: 0,
            vwc: 0,
            awun: 0,
            awupf: 0,
            acwu: 0,
            sgls: sgls::SUPPORTED | sgls::OFFSET,
            mnan: 0,
            subsystem_nqn: String::new(),
            ioccsz: 4,
            iorcsz: 1,
            icdoff: 0,
            fcatt: 0,
            msdbd: 1,
            ofcs: 0,
        }
    }
}

impl IdentifyController {
    /// Fills `buf` with the structure.
    pub fn encode_into(&self, buf: &mut [u8; IDENTIFY_DATA_LEN]) {
        use controller_offset as at;
        buf.fill(0);
        put_u16(buf, at::VID, self.vendor_id);
        put_u16(buf, at::SSVID, self.subsystem_vendor_id);
        put_padded(buf, at::SN, 20, self.serial_number.as_bytes(), b' ');
        put_padded(buf, at::MN, 40, self.model_number.as_bytes(), b' ');
        put_padded(buf, at::FR, 8, self.firmware_revision.as_bytes(), b' ');
        put_u8(buf, at::RAB, self.arbitration_burst);
        put_array(buf, at::IEEE, self.ieee_oui);
        put_u8(buf, at::CMIC, self.cmic);
        put_u8(buf, at::MDTS, self.mdts);
        put_u16(buf, at::CNTLID, self.controller_id);
        put_u32(buf, at::VER, self.version);
        put_u32(buf, at::OAES, self.oaes);
        put_u32(buf, at::CTRATT, self.ctratt);
        put_u8(buf, at::CNTRLTYPE, self.controller_type);
        put_u16(buf, at::OACS, self.oacs);
        put_u8(buf, at::ACL, self.abort_command_limit);
        put_u8(buf, at::AERL, self.async_event_request_limit);
        put_u8(buf, at::FRMW, self.frmw);
        put_u8(buf, at::LPA, self.lpa);
        put_u8(buf, at::ELPE, self.error_log_entries);
        put_u16(buf, at::KAS, self.keep_alive_granularity_100ms);
        put_u8(buf, at::SQES, self.sqes);
        put_u8(buf, at::CQES, self.cqes);
        put_u16(buf, at::MAXCMD, self.max_commands);
        put_u32(buf, at::NN, self.namespace_count);
        put_u16(buf, at::ONCS, self.oncs);
        put_u16(buf, at::FUSES, self.fuses);
        put_u8(buf, at::FNA, self.fna);
        put_u8(buf, at::VWC, self.vwc);
        put_u16(buf, at::AWUN, self.awun);
        put_u16(buf, at::AWUPF, self.awupf);
        put_u16(buf, at::ACWU, self.acwu);
        put_u32(buf, at::SGLS, self.sgls);
        put_u32(buf, at::MNAN, self.mnan);
        put_padded(buf, at::SUBNQN, 256, self.subsystem_nqn.as_bytes(), 0);
        put_u32(buf, at::IOCCSZ, self.ioccsz);
        put_u32(buf, at::IORCSZ, self.iorcsz);
        put_u16(buf, at::ICDOFF, self.icdoff);
        put_u8(buf, at::FCATT, self.fcatt);
        put_u8(buf, at::MSDBD, self.msdbd);
        put_u16(buf, at::OFCS, self.ofcs);
    }

    /// The structure as a fresh buffer.
    pub fn encode(&self) -> Box<[u8; IDENTIFY_DATA_LEN]> {
        let mut buf = Box::new([0; IDENTIFY_DATA_LEN]);
        self.encode_into(&mut buf);
        buf
    }
}

/// Namespace Features (NSFEAT) bits.
pub mod nsfeat {
    /// Thin provisioning.
    pub const THIN_PROVISIONING: u8 = 1 << 0;
    /// NAWUN, NAWUPF, NACWU are defined.
    pub const ATOMICS: u8 = 1 << 1;
    /// Deallocated or Unwritten Logical Block error supported.
    pub const DEALLOCATED_ERROR: u8 = 1 << 2;
    /// NGUID/EUI64 are never reused.
    pub const IDS_NOT_REUSED: u8 = 1 << 3;
    /// NPWG, NPWA, NPDG, NPDA, NOWS are defined.
    pub const OPTIMAL_IO: u8 = 1 << 4;
}

/// Byte offsets in Identify Namespace.
pub mod namespace_offset {
    #![allow(missing_docs)]
    pub const NSZE: usize = 0;
    pub const NCAP: usize = 8;
    pub const NUSE: usize = 16;
    pub const NSFEAT: usize = 24;
    pub const NLBAF: usize = 25;
    pub const FLBAS: usize = 26;
    pub const MC: usize = 27;
    pub const DPC: usize = 28;
    pub const DPS: usize = 29;
    pub const NMIC: usize = 30;
    pub const RESCAP: usize = 31;
    pub const FPI: usize = 32;
    pub const DLFEAT: usize = 33;
    pub const NAWUN: usize = 34;
    pub const NAWUPF: usize = 36;
    pub const NACWU: usize = 38;
    pub const NOIOB: usize = 46;
    pub const NPWG: usize = 64;
    pub const NPWA: usize = 66;
    pub const NPDG: usize = 68;
    pub const NPDA: usize = 70;
    pub const NOWS: usize = 72;
    pub const ANAGRPID: usize = 92;
    pub const NSATTR: usize = 99;
    pub const NVMSETID: usize = 100;
    pub const ENDGID: usize = 102;
    pub const NGUID: usize = 104;
    pub const EUI64: usize = 120;
    /// LBA Format 0: MS (u16), LBADS (u8), RP (u8).
    pub const LBAF0: usize = 128;
}

/// Identify Namespace data (CNS 00h) for a namespace with one LBA format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IdentifyNamespace {
    /// Namespace Size in logical blocks.
    pub size_blocks: u64,
    /// Namespace Capacity in logical blocks.
    pub capacity_blocks: u64,
    /// Namespace Utilization in logical blocks.
    pub utilization_blocks: u64,
    /// Namespace Features ([`nsfeat`]).
    pub features: u8,
    /// Deallocate Logical Block Features (bits 2:0 = 001b: deallocated
    /// blocks read as zeroes; bit 3: Write Zeroes may deallocate).
    pub dlfeat: u8,
    /// Namespace Multi-path I/O and Namespace Sharing Capabilities.
    pub nmic: u8,
    /// Namespace Atomic Write Unit Normal, 0-based blocks.
    pub nawun: u16,
    /// Namespace Atomic Write Unit Power Fail, 0-based blocks.
    pub nawupf: u16,
    /// Namespace Optimal I/O Boundary in blocks; 0 = none.
    pub optimal_io_boundary: u16,
    /// Namespace Preferred Write Granularity, 0-based blocks.
    pub npwg: u16,
    /// Namespace Preferred Write Alignment, 0-based blocks.
    pub npwa: u16,
    /// Namespace Preferred Deallocate Granularity, 0-based blocks.
    pub npdg: u16,
    /// Namespace Preferred Deallocate Alignment, 0-based blocks.
    pub npda: u16,
    /// Namespace Optimal Write Size, 0-based blocks.
    pub nows: u16,
    /// ANA Group Identifier.
    pub ana_group_id: u32,
    /// Write protected (NSATTR bit 0): set for a read-only namespace.
    pub write_protected: bool,
    /// Namespace Globally Unique Identifier; all zero = none.
    pub nguid: [u8; 16],
    /// IEEE Extended Unique Identifier; all zero = none.
    pub eui64: [u8; 8],
    /// log2 of the logical block size (9 = 512 bytes, 12 = 4096 bytes).
    pub block_size_shift: u8,
    /// Relative Performance of LBA format 0 (0 = best).
    pub relative_performance: u8,
}

impl IdentifyNamespace {
    /// Fills `buf` with the structure.
    pub fn encode_into(&self, buf: &mut [u8; IDENTIFY_DATA_LEN]) {
        use namespace_offset as at;
        buf.fill(0);
        put_u64(buf, at::NSZE, self.size_blocks);
        put_u64(buf, at::NCAP, self.capacity_blocks);
        put_u64(buf, at::NUSE, self.utilization_blocks);
        put_u8(buf, at::NSFEAT, self.features);
        // NLBAF is 0-based: one format. FLBAS 0 selects it, no metadata.
        put_u8(buf, at::NLBAF, 0);
        put_u8(buf, at::FLBAS, 0);
        put_u8(buf, at::NMIC, self.nmic);
        put_u8(buf, at::DLFEAT, self.dlfeat);
        put_u16(buf, at::NAWUN, self.nawun);
        put_u16(buf, at::NAWUPF, self.nawupf);
        put_u16(buf, at::NOIOB, self.optimal_io_boundary);
        put_u16(buf, at::NPWG, self.npwg);
        put_u16(buf, at::NPWA, self.npwa);
        put_u16(buf, at::NPDG, self.npdg);
        put_u16(buf, at::NPDA, self.npda);
        put_u16(buf, at::NOWS, self.nows);
        put_u32(buf, at::ANAGRPID, self.ana_group_id);
        put_u8(buf, at::NSATTR, u8::from(self.write_protected));
        put_array(buf, at::NGUID, self.nguid);
        put_array(buf, at::EUI64, self.eui64);
        put_u16(buf, at::LBAF0, 0);
        put_u8(buf, at::LBAF0 + 2, self.block_size_shift);
        put_u8(buf, at::LBAF0 + 3, self.relative_performance & 0x3);
    }

    /// The structure as a fresh buffer.
    pub fn encode(&self) -> Box<[u8; IDENTIFY_DATA_LEN]> {
        let mut buf = Box::new([0; IDENTIFY_DATA_LEN]);
        self.encode_into(&mut buf);
        buf
    }
}

/// Fills `buf` with the Active Namespace ID list (CNS 02h): the active NSIDs
/// greater than `after_nsid`, ascending, at most 1024, zero terminated.
/// `active` need not be sorted; duplicates are listed once.
pub fn encode_active_namespace_list(
    active: &[u32],
    after_nsid: u32,
    buf: &mut [u8; IDENTIFY_DATA_LEN],
) {
    buf.fill(0);
    let mut previous = after_nsid;
    for slot in buf.chunks_exact_mut(4) {
        // Selection instead of a sort: no allocation, and the list is short.
        let Some(next) = active.iter().copied().filter(|&nsid| nsid > previous).min() else {
            break;
        };
        slot.copy_from_slice(&next.to_le_bytes());
        previous = next;
    }
}

/// Namespace Identifier Type (NIDT) in a Namespace Identification Descriptor.
pub mod nidt {
    /// IEEE EUI-64, 8 bytes.
    pub const EUI64: u8 = 1;
    /// NGUID, 16 bytes.
    pub const NGUID: u8 = 2;
    /// UUID, 16 bytes.
    pub const UUID: u8 = 3;
    /// Command Set Identifier, 1 byte.
    pub const CSI: u8 = 4;
}

/// One Namespace Identification Descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamespaceIdDescriptor {
    /// IEEE EUI-64.
    Eui64([u8; 8]),
    /// Namespace Globally Unique Identifier.
    Nguid([u8; 16]),
    /// UUID.
    Uuid([u8; 16]),
    /// Command Set Identifier (0 = NVM).
    CommandSet(u8),
}

impl NamespaceIdDescriptor {
    fn type_and_value(&self) -> (u8, &[u8]) {
        match self {
            Self::Eui64(id) => (nidt::EUI64, id),
            Self::Nguid(id) => (nidt::NGUID, id),
            Self::Uuid(id) => (nidt::UUID, id),
            Self::CommandSet(csi) => (nidt::CSI, std::slice::from_ref(csi)),
        }
    }
}

/// Fills `buf` with a Namespace Identification Descriptor list (CNS 03h):
/// each descriptor is a 4-byte header (NIDT, NIDL, 2 reserved) followed by
/// the identifier; a zero header ends the list. Descriptors that do not fit
/// are left out.
pub fn encode_namespace_id_descriptors(
    descriptors: &[NamespaceIdDescriptor],
    buf: &mut [u8; IDENTIFY_DATA_LEN],
) {
    buf.fill(0);
    let mut at = 0usize;
    for descriptor in descriptors {
        let (nidt, value) = descriptor.type_and_value();
        let end = at + 4 + value.len();
        // Keep room for the terminating zero header.
        if end + 4 > IDENTIFY_DATA_LEN {
            break;
        }
        put_u8(buf, at, nidt);
        put_u8(buf, at + 1, value.len() as u8);
        put_padded(buf, at + 4, value.len(), value, 0);
        at = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller() -> IdentifyController {
        IdentifyController {
            vendor_id: 0x1B36,
            subsystem_vendor_id: 0x1AF4,
            serial_number: "OXS0001".into(),
            model_number: "oxstor".into(),
            firmware_revision: "0.1.0".into(),
            ieee_oui: [0x01, 0x02, 0x03],
            cmic: 0x0B,
            mdts: 5,
            controller_id: 0x0102,
            oaes: oaes::NAMESPACE_ATTRIBUTE,
            ctratt: 1,
            oacs: 0,
            lpa: lpa::EXTENDED_DATA | lpa::COMMANDS_EFFECTS,
            error_log_entries: 127,
            keep_alive_granularity_100ms: 100,
            max_commands: 128,
            namespace_count: 32,
            oncs: oncs::COMPARE | oncs::DATASET_MANAGEMENT | oncs::WRITE_ZEROES,
            fuses: 1,
            vwc: 0x07,
            subsystem_nqn: "nqn.2024-01.io.oxstor:disk0".into(),
            ioccsz: (64 + 8192) / 16,
            iorcsz: 1,
            ..IdentifyController::default()
        }
    }

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }
    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn controller_offsets_match_linux_nvme_id_ctrl() {
        let mut buf = [0xEE; IDENTIFY_DATA_LEN];
        controller().encode_into(&mut buf);
        let b = &buf[..];
        assert_eq!(u16_at(b, 0), 0x1B36, "vid");
        assert_eq!(u16_at(b, 2), 0x1AF4, "ssvid");
        assert_eq!(&b[4..24], b"OXS0001             ", "sn");
        assert_eq!(&b[24..30], b"oxstor", "mn");
        assert!(b[30..64].iter().all(|&c| c == b' '), "mn padding");
        assert_eq!(&b[64..72], b"0.1.0   ", "fr");
        assert_eq!(b[72], 6, "rab");
        assert_eq!(&b[73..76], &[1, 2, 3], "ieee");
        assert_eq!(b[76], 0x0B, "cmic");
        assert_eq!(b[77], 5, "mdts");
        assert_eq!(u16_at(b, 78), 0x0102, "cntlid");
        assert_eq!(u32_at(b, 80), 0x0002_0000, "ver");
        assert_eq!(u32_at(b, 92), 1 << 8, "oaes");
        assert_eq!(u32_at(b, 96), 1, "ctratt");
        assert_eq!(b[111], 1, "cntrltype");
        assert_eq!(b[258], 3, "acl");
        assert_eq!(b[259], 3, "aerl");
        assert_eq!(b[261], 0b110, "lpa");
        assert_eq!(b[262], 127, "elpe");
        assert_eq!(u16_at(b, 320), 100, "kas");
        assert_eq!(b[512], 0x66, "sqes");
        assert_eq!(b[513], 0x44, "cqes");
        assert_eq!(u16_at(b, 514), 128, "maxcmd");
        assert_eq!(u32_at(b, 516), 32, "nn");
        assert_eq!(u16_at(b, 520), 0b1101, "oncs");
        assert_eq!(u16_at(b, 522), 1, "fuses");
        assert_eq!(b[525], 0x07, "vwc");
        assert_eq!(u32_at(b, 536), (1 << 20) | 1, "sgls");
        assert_eq!(&b[768..768 + 27], b"nqn.2024-01.io.oxstor:disk0", "subnqn");
        assert!(b[768 + 27..1024].iter().all(|&c| c == 0), "subnqn padding");
        assert_eq!(u32_at(b, 1792), 516, "ioccsz");
        assert_eq!(u32_at(b, 1796), 1, "iorcsz");
        assert_eq!(u16_at(b, 1800), 0, "icdoff");
        assert_eq!(b[1802], 0, "fcatt: dynamic model");
        assert_eq!(b[1803], 1, "msdbd");
        assert!(b[2048..].iter().all(|&c| c == 0), "reserved bytes zeroed");
    }

    #[test]
    fn long_text_fields_are_truncated() {
        let id = IdentifyController {
            serial_number: "X".repeat(40),
            ..IdentifyController::default()
        };
        let buf = id.encode();
        assert_eq!(&buf[4..24], "X".repeat(20).as_bytes());
        assert_eq!(buf[24], b' ');
    }

    #[test]
    fn namespace_offsets_match_linux_nvme_id_ns() {
        let ns = IdentifyNamespace {
            size_blocks: 0x1_0000_0000,
            capacity_blocks: 0x2000,
            utilization_blocks: 0x1000,
            features: nsfeat::THIN_PROVISIONING,
            dlfeat: 0x09,
            nmic: 1,
            optimal_io_boundary: 256,
            ana_group_id: 1,
            write_protected: true,
            nguid: [0x11; 16],
            eui64: [0x22; 8],
            block_size_shift: 12,
            ..IdentifyNamespace::default()
        };
        let mut buf = [0xEE; IDENTIFY_DATA_LEN];
        ns.encode_into(&mut buf);
        let b = &buf[..];
        assert_eq!(u64_at(b, 0), 0x1_0000_0000, "nsze");
        assert_eq!(u64_at(b, 8), 0x2000, "ncap");
        assert_eq!(u64_at(b, 16), 0x1000, "nuse");
        assert_eq!(b[24], 1, "nsfeat");
        assert_eq!(b[25], 0, "nlbaf");
        assert_eq!(b[26], 0, "flbas");
        assert_eq!(b[30], 1, "nmic");
        assert_eq!(b[33], 0x09, "dlfeat");
        assert_eq!(u16_at(b, 46), 256, "noiob");
        assert_eq!(u32_at(b, 92), 1, "anagrpid");
        assert_eq!(b[99], 1, "nsattr write protected");
        assert_eq!(&b[104..120], &[0x11; 16], "nguid");
        assert_eq!(&b[120..128], &[0x22; 8], "eui64");
        assert_eq!(u16_at(b, 128), 0, "lbaf0.ms");
        assert_eq!(b[130], 12, "lbaf0.ds");
        assert_eq!(b[131], 0, "lbaf0.rp");
        assert!(b[132..].iter().all(|&c| c == 0));
    }

    #[test]
    fn active_namespace_list_is_sorted_and_filtered() {
        let mut buf = [0xEE; IDENTIFY_DATA_LEN];
        encode_active_namespace_list(&[7, 3, 9, 1, 3], 2, &mut buf);
        assert_eq!(u32_at(&buf, 0), 3);
        assert_eq!(u32_at(&buf, 4), 7);
        assert_eq!(u32_at(&buf, 8), 9);
        assert_eq!(u32_at(&buf, 12), 0);
        encode_active_namespace_list(&[1, 2], u32::MAX, &mut buf);
        assert!(buf.iter().all(|&c| c == 0));
        let many: Vec<u32> = (1..=2000).collect();
        encode_active_namespace_list(&many, 0, &mut buf);
        assert_eq!(u32_at(&buf, 4092), 1024, "at most 1024 entries");
    }

    #[test]
    fn namespace_id_descriptor_list_layout() {
        let mut buf = [0xEE; IDENTIFY_DATA_LEN];
        encode_namespace_id_descriptors(
            &[
                NamespaceIdDescriptor::Eui64([0x22; 8]),
                NamespaceIdDescriptor::Nguid([0x11; 16]),
                NamespaceIdDescriptor::Uuid([0x33; 16]),
                NamespaceIdDescriptor::CommandSet(0),
            ],
            &mut buf,
        );
        assert_eq!(&buf[0..4], &[1, 8, 0, 0]);
        assert_eq!(&buf[4..12], &[0x22; 8]);
        assert_eq!(&buf[12..16], &[2, 16, 0, 0]);
        assert_eq!(&buf[16..32], &[0x11; 16]);
        assert_eq!(&buf[32..36], &[3, 16, 0, 0]);
        assert_eq!(&buf[36..52], &[0x33; 16]);
        assert_eq!(&buf[52..57], &[4, 1, 0, 0, 0]);
        assert!(buf[57..].iter().all(|&c| c == 0));
    }
}
