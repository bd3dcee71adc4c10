//! The admin queue: a blocking NVMe/TCP connection driven from a control thread.
//!
//! Admin traffic is rare (bring-up, keep-alive, shutdown), so it uses a plain std `TcpStream`
//! with a read timeout, one command at a time, and allocates freely. The reactors never wait
//! on it. The same [`Wire`] type speaks ICReq/ICResp and reads any PDU, so a timeout or a
//! C2HTermReq surfaces as an error naming what the target said.

use crate::pdu::{
    self, encode_capsule_cmd, CommonHeader, IcReq, Negotiated, Pdu, PduHeader, Role,
    COMMON_HEADER_LEN, MAX_HEADER_LEN,
};
use crate::spec::command::{CommandBuilder, SglDescriptor, COMMAND_LEN};
use crate::spec::completion::{Completion, Status};
use crate::spec::fabrics::{
    Connect, ConnectDataFields, PropertyGet, PropertySet, CNTLID_DYNAMIC, PROPERTY_SIZE_4,
    PROPERTY_SIZE_8,
};
use crate::spec::opcodes::admin as op;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Why a control-path exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The socket failed or timed out.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The target broke the protocol (or we could not parse what it sent).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The target terminated the connection with a C2HTermReq.
    #[error("target terminated the connection (FES {fes:#x}, FEI {fei})")]
    Terminated {
        /// Fatal Error Status.
        fes: u16,
        /// Fatal Error Information.
        fei: u32,
    },
    /// The command completed with an error status.
    #[error("{what} failed: {}", describe_status(.status))]
    Status {
        /// Which command.
        what: &'static str,
        /// The status the target returned.
        status: Status,
        /// Completion DW0 (Connect puts the invalid parameter offset there).
        dw0: u32,
    },
}

impl WireError {
    /// The errno an RPC reports for this error.
    pub fn errno(&self) -> i32 {
        match self {
            WireError::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
            WireError::Protocol(_) | WireError::Terminated { .. } => libc::EPROTO,
            WireError::Status { status, .. } if status.same_code(Status::CONNECT_INVALID_HOST) => {
                libc::EACCES
            }
            WireError::Status { .. } => libc::EIO,
        }
    }
}

/// A readable name for the statuses a host is likely to see.
pub fn describe_status(s: &Status) -> String {
    let known = [
        (Status::INVALID_OPCODE, "Invalid Command Opcode"),
        (Status::INVALID_FIELD, "Invalid Field in Command"),
        (Status::COMMAND_SEQUENCE_ERROR, "Command Sequence Error"),
        (
            Status::INVALID_NAMESPACE_OR_FORMAT,
            "Invalid Namespace or Format",
        ),
        (Status::LBA_OUT_OF_RANGE, "LBA Out of Range"),
        (
            Status::CONNECT_INCOMPATIBLE_FORMAT,
            "Connect Incompatible Format",
        ),
        (Status::CONNECT_CONTROLLER_BUSY, "Connect Controller Busy"),
        (
            Status::CONNECT_INVALID_PARAMETERS,
            "Connect Invalid Parameters",
        ),
        (
            Status::CONNECT_INVALID_HOST,
            "Connect Invalid Host (host NQN not allowed)",
        ),
        (Status::INTERNAL_ERROR, "Internal Error"),
    ];
    let name = known
        .iter()
        .find(|(k, _)| s.same_code(*k))
        .map_or("status", |(_, n)| n);
    format!("{name} (SCT {:#x}, SC {:#04x})", s.code_type.0, s.code)
}

/// One PDU as received on the control path: the header bytes and its data.
pub struct RawPdu {
    /// The header including its digest.
    pub header: Vec<u8>,
    /// The data (digest checked and stripped).
    pub data: Vec<u8>,
}

impl RawPdu {
    /// The typed header; it parsed once already, so this cannot fail in practice.
    pub fn parse(&self, neg: &Negotiated) -> Result<Pdu<'_>, WireError> {
        Pdu::parse(&self.header, neg).map_err(|e| WireError::Protocol(e.to_string()))
    }
}

/// A connected, initialised NVMe/TCP connection used synchronously.
pub struct Wire {
    stream: TcpStream,
    neg: Negotiated,
    next_cid: u16,
}

impl Wire {
    /// Connects and exchanges ICReq / ICResp.
    pub fn connect(
        addr: SocketAddr,
        timeout: Duration,
        hdgst: bool,
        ddgst: bool,
    ) -> Result<Wire, WireError> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut wire = Wire {
            stream,
            neg: Negotiated::initial(Role::Host),
            next_cid: 1,
        };
        let req = IcReq {
            pfv: 0,
            hpda: 0,
            header_digest: hdgst,
            data_digest: ddgst,
            max_r2t: 0,
        };
        let mut buf = [0u8; MAX_HEADER_LEN];
        let n = req
            .encode(&mut buf)
            .map_err(|e| WireError::Protocol(e.to_string()))?;
        wire.stream.write_all(&buf[..n])?;
        let pdu = wire.read_pdu()?;
        let resp = match pdu.parse(&wire.neg)?.header {
            PduHeader::IcResp(r) => r,
            PduHeader::C2hTermReq(t) => {
                return Err(WireError::Terminated {
                    fes: t.fes,
                    fei: t.fei,
                })
            }
            other => {
                return Err(WireError::Protocol(format!(
                    "expected ICResp, got {other:?}"
                )))
            }
        };
        // The admin queue always accepts 8 KiB in capsules (Connect data needs 1 KiB).
        wire.neg = Negotiated::from_exchange(Role::Host, &req, &resp, 8192);
        Ok(wire)
    }

    /// The parameters the ICResp settled.
    pub fn negotiated(&self) -> Negotiated {
        self.neg
    }

    /// Changes the read timeout (keep-alive uses a short one).
    pub fn set_timeout(&self, timeout: Duration) -> Result<(), WireError> {
        self.stream.set_read_timeout(Some(timeout))?;
        Ok(())
    }

    /// Gives the socket up (for I/O queues handed to a reactor).
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }

    fn cid(&mut self) -> u16 {
        let cid = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1).max(1);
        cid
    }

    /// Sends one CapsuleCmd with `data` in the capsule.
    pub fn send_capsule(&mut self, sqe: &[u8; COMMAND_LEN], data: &[u8]) -> Result<(), WireError> {
        let mut out = vec![0u8; MAX_HEADER_LEN];
        let n = encode_capsule_cmd(sqe, data.len(), &self.neg, &mut out)
            .map_err(|e| WireError::Protocol(e.to_string()))?;
        out.truncate(n);
        out.extend_from_slice(data);
        if self.neg.data_digest && !data.is_empty() {
            out.extend_from_slice(&pdu::data_digest(data).to_le_bytes());
        }
        self.stream.write_all(&out)?;
        Ok(())
    }

    /// Reads one whole PDU, checking its header and data digests.
    pub fn read_pdu(&mut self) -> Result<RawPdu, WireError> {
        let mut header = vec![0u8; COMMON_HEADER_LEN];
        self.stream.read_exact(&mut header)?;
        let layout = CommonHeader::parse(&header)
            .and_then(|ch| ch.layout(&self.neg))
            .map_err(|e| WireError::Protocol(e.to_string()))?;
        header.resize(layout.header_with_digest_len(), 0);
        self.stream.read_exact(&mut header[COMMON_HEADER_LEN..])?;
        // Validate the header (digest included) before trusting its lengths.
        Pdu::parse(&header, &self.neg).map_err(|e| WireError::Protocol(e.to_string()))?;
        let mut rest = vec![0u8; layout.bytes_after_header()];
        self.stream.read_exact(&mut rest)?;
        let start = layout.padding_len();
        let data = rest
            .get(start..start + layout.data_len)
            .ok_or_else(|| WireError::Protocol("PDU data outside PLEN".into()))?
            .to_vec();
        if layout.data_digest {
            let at = start + layout.data_len;
            let received: [u8; 4] = rest
                .get(at..at + 4)
                .and_then(|d| d.try_into().ok())
                .ok_or_else(|| WireError::Protocol("missing data digest".into()))?;
            pdu::verify_data_digest(&data, received)
                .map_err(|_| WireError::Protocol("data digest mismatch".into()))?;
        }
        Ok(RawPdu { header, data })
    }

    /// Runs one admin command: sends it with `data_out` in the capsule, collects up to
    /// `data_in_len` bytes of C2HData, and returns the completion and that data.
    pub fn command(
        &mut self,
        what: &'static str,
        builder: CommandBuilder,
        data_out: &[u8],
        data_in_len: usize,
    ) -> Result<(Completion, Vec<u8>), WireError> {
        let cid = self.cid();
        let sgl = if !data_out.is_empty() {
            SglDescriptor::in_capsule(0, data_out.len() as u32)
        } else {
            SglDescriptor::transport_data_block(data_in_len as u32)
        };
        let sqe = builder.cid(cid).sgl(sgl).build();
        self.send_capsule(&sqe, data_out)?;
        let mut data_in = vec![0u8; data_in_len];
        loop {
            let raw = self.read_pdu()?;
            match raw.parse(&self.neg)?.header {
                PduHeader::C2hData(d) => {
                    if d.cccid != cid {
                        return Err(WireError::Protocol(format!(
                            "C2HData for CID {} while waiting for {cid}",
                            d.cccid
                        )));
                    }
                    let at = d.data_offset as usize;
                    let dst = data_in
                        .get_mut(at..at + raw.data.len())
                        .ok_or_else(|| WireError::Protocol("C2HData past the buffer".into()))?;
                    dst.copy_from_slice(&raw.data);
                    if d.success {
                        return Ok((Completion::new(cid, Status::SUCCESS), data_in));
                    }
                }
                PduHeader::CapsuleResp(c) => {
                    if c.cid != cid {
                        return Err(WireError::Protocol(format!(
                            "response for CID {} while waiting for {cid}",
                            c.cid
                        )));
                    }
                    if !c.status.is_success() {
                        return Err(WireError::Status {
                            what,
                            status: c.status,
                            dw0: c.dw0,
                        });
                    }
                    return Ok((c, data_in));
                }
                PduHeader::C2hTermReq(t) => {
                    return Err(WireError::Terminated {
                        fes: t.fes,
                        fei: t.fei,
                    })
                }
                other => {
                    return Err(WireError::Protocol(format!(
                        "unexpected PDU during {what}: {other:?}"
                    )))
                }
            }
        }
    }

    /// Fabrics Connect for queue `qid`; returns the controller ID.
    #[allow(clippy::too_many_arguments)]
    pub fn fabrics_connect(
        &mut self,
        qid: u16,
        sqsize: u16,
        kato_ms: u32,
        cntlid: Option<u16>,
        hostid: [u8; 16],
        subnqn: &str,
        hostnqn: &str,
    ) -> Result<u16, WireError> {
        let data = connect_data(cntlid, hostid, subnqn, hostnqn)?;
        let cid = self.cid();
        let sqe = connect_sqe(qid, sqsize, kato_ms, cid);
        self.send_capsule(&sqe, &data)?;
        let raw = self.read_pdu()?;
        match raw.parse(&self.neg)?.header {
            PduHeader::CapsuleResp(c) if c.status.is_success() => Ok(c.dw0 as u16),
            PduHeader::CapsuleResp(c) => Err(WireError::Status {
                what: "Fabrics Connect",
                status: c.status,
                dw0: c.dw0,
            }),
            PduHeader::C2hTermReq(t) => Err(WireError::Terminated {
                fes: t.fes,
                fei: t.fei,
            }),
            other => Err(WireError::Protocol(format!(
                "unexpected PDU answering Connect: {other:?}"
            ))),
        }
    }

    /// Property Get of a 4- or 8-byte property.
    pub fn property_get(&mut self, offset: u32, eight: bool) -> Result<u64, WireError> {
        let get = PropertyGet {
            attributes: if eight {
                PROPERTY_SIZE_8
            } else {
                PROPERTY_SIZE_4
            },
            offset,
        };
        let cid = self.cid();
        let sqe = get.build(cid);
        self.simple(&sqe, cid, "Property Get")
            .map(|c| c.result_u64())
    }

    /// Property Set of a 4-byte property.
    pub fn property_set(&mut self, offset: u32, value: u32) -> Result<(), WireError> {
        let set = PropertySet {
            attributes: PROPERTY_SIZE_4,
            offset,
            value: value as u64,
        };
        let cid = self.cid();
        let sqe = set.build(cid);
        self.simple(&sqe, cid, "Property Set").map(|_| ())
    }

    /// Keep Alive.
    pub fn keep_alive(&mut self) -> Result<(), WireError> {
        self.command("Keep Alive", CommandBuilder::new(op::KEEP_ALIVE), &[], 0)
            .map(|_| ())
    }

    fn simple(
        &mut self,
        sqe: &[u8; COMMAND_LEN],
        cid: u16,
        what: &'static str,
    ) -> Result<Completion, WireError> {
        self.send_capsule(sqe, &[])?;
        let raw = self.read_pdu()?;
        match raw.parse(&self.neg)?.header {
            PduHeader::CapsuleResp(c) if c.cid == cid && c.status.is_success() => Ok(c),
            PduHeader::CapsuleResp(c) if c.cid == cid => Err(WireError::Status {
                what,
                status: c.status,
                dw0: c.dw0,
            }),
            PduHeader::C2hTermReq(t) => Err(WireError::Terminated {
                fes: t.fes,
                fei: t.fei,
            }),
            other => Err(WireError::Protocol(format!(
                "unexpected PDU answering {what}: {other:?}"
            ))),
        }
    }
}

/// The Connect SQE (the 1 KiB Connect data follows in the capsule).
pub fn connect_sqe(qid: u16, sqsize: u16, kato_ms: u32, cid: u16) -> [u8; COMMAND_LEN] {
    Connect {
        record_format: 0,
        queue_id: qid,
        sq_size: sqsize,
        attributes: 0,
        keep_alive_timeout_ms: if qid == 0 { kato_ms } else { 0 },
    }
    .build(cid)
}

/// The 1 KiB Connect data.
pub fn connect_data(
    cntlid: Option<u16>,
    hostid: [u8; 16],
    subnqn: &str,
    hostnqn: &str,
) -> Result<[u8; crate::spec::fabrics::CONNECT_DATA_LEN], WireError> {
    ConnectDataFields {
        host_id: hostid,
        cntlid: cntlid.unwrap_or(CNTLID_DYNAMIC),
        subsystem_nqn: subnqn,
        host_nqn: hostnqn,
    }
    .encode()
    .map_err(|e| WireError::Protocol(format!("invalid NQN: {e}")))
}
