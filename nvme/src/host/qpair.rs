//! One NVMe/TCP I/O queue pair on one reactor: the host's data path.
//!
//! The queue pair is the mirror image of the target's connection (`target/conn.rs`):
//!
//! - **Commands**: a fixed slot table; the CID of a command is its slot index, so a response
//!   or data PDU finds its I/O with one bounds-checked index. Submissions that find no free
//!   slot (or arrive while the queue is still connecting) wait in a FIFO.
//! - **Sending**: every PDU produced during a reactor iteration is queued and a per-core
//!   poller flushes each dirty queue pair once per iteration, so a batch of submissions costs
//!   one `sendmsg`. Write data is never copied: the `Box<BdevIo>` itself travels in the send
//!   batch (in-capsule data or one H2CData PDU's worth) and goes back into its slot when the
//!   socket hands the batch back.
//! - **Receiving**: a staging buffer is filled by the socket and PDUs are parsed in place.
//!   C2HData bytes already staged are copied to the I/O's buffer; the rest of a large read is
//!   received straight into the I/O's `DmaBuf` (taken out of `io.buf` for the receive and put
//!   back after). Buffers that are windows into a parent's buffer are filled from staging.
//! - **Connecting**: ICReq and Fabrics Connect run asynchronously on the socket like any other
//!   PDU, so creating a channel never blocks the reactor on the target (which may well be
//!   served by this same reactor in a single-process setup).
//! - **Errors**: a protocol error from the target gets an H2CTermReq; a C2HTermReq, a closed
//!   socket or a protocol error fails every outstanding I/O with EIO from the socket event (never
//!   inside `submit`), and later submissions with ENXIO.

use super::admin::{connect_data, connect_sqe};
use crate::pdu::{
    self, encode_capsule_cmd, CommonHeader, DataPdu, FatalErrorStatus, IcReq, Negotiated, Pdu,
    PduError, PduHeader, Role, TermReq,
};
use crate::spec::command::{CommandBuilder, SglDescriptor, COMMAND_LEN};
use crate::spec::completion::{Completion, Status};
use crate::spec::opcodes::io as op;
use crate::staging::Staging;
use oxstor_bdev::{complete_later, BdevError, BdevIo, IoBuf, IoStatus, IoType};
use oxstor_reactor::net::{RecvBuf, RecvMem, Segment, Socket, SocketEvents, TcpSocket};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::rc::{Rc, Weak};
use std::time::Duration;

const STAGING_LEN: usize = 64 * 1024;
/// Room for the largest header we send (CapsuleCmd + digest, padded to CPDA ≤ 128 bytes) plus
/// 16 bytes of inline Dataset Management range and its data digest.
const HDR_MAX: usize = 160;
/// Most blocks one Read/Write/Write Zeroes command covers (NLB is 16 bits, 0-based).
const MAX_NLB: u64 = 1 << 16;
/// How long ICReq + Connect may take before the queue is declared dead.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The CID of the Fabrics Connect command (no I/O slot is busy before it completes).
const CONNECT_CID: u16 = 0;

/// Everything needed to connect one I/O queue.
#[derive(Debug, Clone)]
pub(crate) struct QpairConfig {
    pub ctrl_name: String,
    pub addr: SocketAddr,
    pub hdgst: bool,
    pub ddgst: bool,
    pub qid: u16,
    /// SQSIZE as sent in Connect (0-based); also the number of slots.
    pub sqsize: u16,
    pub cntlid: u16,
    pub hostid: [u8; 16],
    pub subnqn: String,
    pub hostnqn: String,
    /// In-capsule data the controller accepts on I/O queues (IOCCSZ * 16 - 64).
    pub in_capsule: u32,
}

/// One piece of an outgoing batch.
pub(crate) enum TxSeg {
    /// A PDU header (with any inline data and digest), stored inline: no allocation.
    Hdr(Hdr),
    /// `len` bytes at `off` of an I/O's own buffer; the I/O rides along until sent.
    Io {
        io: Box<BdevIo>,
        slot: u16,
        off: usize,
        len: usize,
    },
    /// Control-path data (the Connect data, once per queue).
    Heap(Vec<u8>),
}

pub(crate) struct Hdr {
    bytes: [u8; HDR_MAX],
    len: usize,
}

impl Hdr {
    fn new() -> Hdr {
        Hdr {
            bytes: [0; HDR_MAX],
            len: 0,
        }
    }

    fn append(&mut self, data: &[u8]) -> bool {
        match self.bytes.get_mut(self.len..self.len + data.len()) {
            Some(dst) => {
                dst.copy_from_slice(data);
                self.len += data.len();
                true
            }
            None => false,
        }
    }
}

impl Segment for TxSeg {
    fn bytes(&self) -> &[u8] {
        match self {
            TxSeg::Hdr(h) => &h.bytes[..h.len],
            TxSeg::Heap(v) => v,
            TxSeg::Io { io, off, len, .. } => io.buf.as_slice().get(*off..off + len).unwrap_or(&[]),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitIcResp,
    AwaitConnect,
    Ready,
    Failed,
}

/// One outstanding command.
#[derive(Default)]
struct Slot {
    busy: bool,
    /// The I/O, unless it is riding in a send batch (`in_tx`) or free.
    io: Option<Box<BdevIo>>,
    in_tx: bool,
    /// The response arrived while the I/O was still in a send batch.
    resp: Option<IoStatus>,
    /// A data digest mismatch on C2HData: the read fails with EIO.
    data_error: bool,
    opcode: u8,
    nsid: u32,
    /// Bytes the command transfers.
    len: u32,
    /// The command's data goes out in answer to R2Ts.
    r2t: bool,
    /// R2T being answered: transfer tag and the data range still to send.
    ttag: u16,
    h2c_next: u32,
    h2c_end: u32,
    /// Write Zeroes / Unmap larger than one command: the LBA range still to issue.
    next_lba: u64,
    end_lba: u64,
}

/// A C2HData PDU's data being received.
struct DataRecv {
    slot: u16,
    base: usize,
    len: usize,
    done: usize,
    digest: bool,
    success: bool,
    /// The I/O's DmaBuf is out in a socket receive.
    direct: bool,
}

struct State {
    phase: Phase,
    neg: Negotiated,
    staging: Staging,
    data: Option<DataRecv>,
    slots: Vec<Slot>,
    free: Vec<u16>,
    pending: VecDeque<Box<BdevIo>>,
    completing: VecDeque<(Box<BdevIo>, IoStatus)>,
    tx: Vec<TxSeg>,
    tx_spare: Vec<TxSeg>,
    tx_busy: bool,
    close_after_send: bool,
}

/// An I/O queue pair. Lives on one reactor; shared by the channels of every namespace of its
/// controller on that reactor.
pub(crate) struct Qpair {
    cfg: QpairConfig,
    sock: Rc<dyn Socket<TxSeg>>,
    me: Weak<Qpair>,
    st: RefCell<State>,
    dirty: Cell<bool>,
}

enum Step {
    Again,
    NeedStaging,
    RecvDirect(RecvBuf),
    Fatal(String, Option<PduError>, Vec<u8>),
    Stop,
}

/// Where the header just parsed lies in the staging buffer.
#[derive(Clone, Copy)]
struct Offending {
    /// How far back from the staging buffer's read position the header starts.
    back: usize,
    len: usize,
}

impl Offending {
    fn copy(self, st: &State) -> Vec<u8> {
        st.staging.before(self.back, self.len).to_vec()
    }
}

/// A received PDU header, copied out of the staging buffer.
enum Received {
    IcResp(pdu::IcResp),
    CapsuleResp(Completion),
    C2hData(DataPdu, bool),
    R2t(pdu::R2t),
    TermReq(TermReq),
    Other(String),
}

thread_local! {
    /// This core's queue pair of each controller (by controller id).
    static QPAIRS: RefCell<HashMap<u64, Weak<Qpair>>> = RefCell::new(HashMap::new());
}

/// This core's queue pair for controller `ctrl_id`, connecting it on first use.
pub(crate) fn get_or_connect(
    ctrl_id: u64,
    cfg: impl FnOnce(usize) -> Result<QpairConfig, BdevError>,
) -> Result<Rc<Qpair>, BdevError> {
    if let Some(q) = QPAIRS.with(|m| m.borrow().get(&ctrl_id).and_then(Weak::upgrade)) {
        return Ok(q);
    }
    let core = oxstor_reactor::core_index().ok_or(BdevError::NoRuntime)?;
    let q = Qpair::connect(cfg(core)?)?;
    QPAIRS.with(|m| {
        let mut m = m.borrow_mut();
        m.retain(|_, w| w.strong_count() > 0);
        m.insert(ctrl_id, Rc::downgrade(&q));
    });
    Ok(q)
}

/// NVMe status → bdev status.
pub(crate) fn io_status(s: Status) -> IoStatus {
    if s.is_success() {
        return IoStatus::Success;
    }
    let errno = if s.same_code(Status::COMPARE_FAILURE) {
        return IoStatus::Miscompare;
    } else if s.same_code(Status::LBA_OUT_OF_RANGE) || s.same_code(Status::INVALID_FIELD) {
        libc::EINVAL
    } else if s.same_code(Status::NAMESPACE_WRITE_PROTECTED)
        || s.same_code(Status::WRITE_TO_READ_ONLY_RANGE)
    {
        libc::EROFS
    } else if s.same_code(Status::INVALID_OPCODE) {
        libc::EOPNOTSUPP
    } else if s.same_code(Status::CAPACITY_EXCEEDED) {
        libc::ENOSPC
    } else {
        libc::EIO
    };
    IoStatus::Failed(errno)
}

impl Qpair {
    /// Connects the socket (a kernel-level TCP handshake; the NVMe/TCP handshake that follows
    /// runs asynchronously on this reactor). Must run on a reactor thread.
    fn connect(cfg: QpairConfig) -> Result<Rc<Qpair>, BdevError> {
        let stream = TcpStream::connect_timeout(&cfg.addr, CONNECT_TIMEOUT).map_err(|e| {
            BdevError::Io(
                format!(
                    "{}: I/O queue {} connect to {}",
                    cfg.ctrl_name, cfg.qid, cfg.addr
                ),
                e,
            )
        })?;
        let sock = TcpSocket::<TxSeg>::new(OwnedFd::from(stream), Some(cfg.addr));
        let slots = (0..cfg.sqsize.max(1)).map(|_| Slot::default()).collect();
        let free = (0..cfg.sqsize.max(1)).rev().collect();
        let depth = cfg.sqsize.max(1) as usize;
        let q = Rc::new_cyclic(|me| Qpair {
            sock: sock.clone(),
            me: me.clone(),
            st: RefCell::new(State {
                phase: Phase::AwaitIcResp,
                neg: Negotiated::initial(Role::Host),
                staging: Staging::new(STAGING_LEN),
                data: None,
                slots,
                free,
                pending: VecDeque::with_capacity(depth),
                completing: VecDeque::with_capacity(depth),
                // Per command at most header + data + digest.
                tx: Vec::with_capacity(depth * 3 + 4),
                tx_spare: Vec::with_capacity(depth * 3 + 4),
                tx_busy: false,
                close_after_send: false,
            }),
            dirty: Cell::new(false),
            cfg,
        });
        let events: Rc<dyn SocketEvents<TxSeg>> = q.clone();
        sock.set_events(Rc::downgrade(&events));
        {
            let mut st = q.st.borrow_mut();
            let mut hdr = Hdr::new();
            match q.ic_req().encode(&mut hdr.bytes) {
                Ok(n) => hdr.len = n,
                Err(e) => return Err(BdevError::Invalid(format!("cannot encode ICReq: {e}"))),
            }
            st.tx.push(TxSeg::Hdr(hdr));
        }
        q.send_queued();
        q.recv_staging();
        let weak = Rc::downgrade(&q);
        oxstor_reactor::schedule_after(CONNECT_TIMEOUT, move || {
            if let Some(q) = weak.upgrade() {
                let phase = q.st.borrow().phase;
                if matches!(phase, Phase::AwaitIcResp | Phase::AwaitConnect) {
                    q.fail(
                        "timed out waiting for the target to accept the I/O queue",
                        None,
                    );
                }
            }
        });
        tracing::debug!(
            "{}: I/O queue {} connecting to {} from reactor {:?}",
            q.cfg.ctrl_name,
            q.cfg.qid,
            q.cfg.addr,
            oxstor_reactor::core_index()
        );
        Ok(q)
    }

    fn ic_req(&self) -> IcReq {
        IcReq {
            pfv: 0,
            hpda: 0,
            header_digest: self.cfg.hdgst,
            data_digest: self.cfg.ddgst,
            max_r2t: 0,
        }
    }

    fn rc(&self) -> Rc<Qpair> {
        self.me
            .upgrade()
            .unwrap_or_else(|| unreachable!("a live queue pair has an Rc"))
    }

    /// Starts `io` on namespace `nsid`. Never completes it before returning.
    pub(crate) fn submit(&self, mut io: Box<BdevIo>, nsid: u32) {
        io.scratch[0] = nsid as u64;
        let mut st = self.st.borrow_mut();
        match st.phase {
            Phase::Failed => {
                drop(st);
                complete_later(io, IoStatus::Failed(libc::ENXIO));
            }
            Phase::Ready if st.pending.is_empty() => match st.free.pop() {
                Some(slot) => self.start(&mut st, slot, io),
                None => st.pending.push_back(io),
            },
            _ => st.pending.push_back(io),
        }
    }

    /// Issues `io` as command `slot`.
    fn start(&self, st: &mut State, slot: u16, io: Box<BdevIo>) {
        let idx = slot as usize;
        let nsid = io.scratch[0] as u32;
        let (lba, blocks, len) = (io.offset_blocks, io.num_blocks, io.buf.len());
        let icd = self.cfg.in_capsule as usize;
        let reject = |st: &mut State, io: Box<BdevIo>| {
            st.free.push(slot);
            complete_later(io, IoStatus::Failed(libc::EINVAL));
        };
        let Some(s) = st.slots.get_mut(idx) else {
            return reject(st, io);
        };
        *s = Slot {
            busy: true,
            nsid,
            ..Slot::default()
        };
        // While a command is out at the target, this reactor polls for the answer rather
        // than sleeping (waking a halted vCPU costs far more than the wait).
        oxstor_reactor::hold_awake();
        match io.io_type {
            IoType::Read | IoType::Write | IoType::Compare => {
                if blocks == 0 || blocks > MAX_NLB || u32::try_from(len).is_err() {
                    s.busy = false;
                    oxstor_reactor::release_awake();
                    return reject(st, io);
                }
                let opcode = match io.io_type {
                    IoType::Read => op::READ,
                    IoType::Write => op::WRITE,
                    _ => op::COMPARE,
                };
                s.opcode = opcode;
                s.len = len as u32;
                let cmd = CommandBuilder::nvm_io(opcode, nsid, lba, blocks as u32).cid(slot);
                if opcode != op::READ && len <= icd {
                    // In-capsule: the data follows the header straight from the I/O's buffer.
                    let sqe = cmd.sgl(SglDescriptor::in_capsule(0, len as u32)).build();
                    s.in_tx = true;
                    let digest = st
                        .neg
                        .data_digest
                        .then(|| pdu::data_digest(io.buf.as_slice()));
                    self.push_capsule(st, &sqe, len, &[]);
                    st.tx.push(TxSeg::Io {
                        io,
                        slot,
                        off: 0,
                        len,
                    });
                    if let Some(d) = digest {
                        let mut h = Hdr::new();
                        h.append(&d.to_le_bytes());
                        st.tx.push(TxSeg::Hdr(h));
                    }
                } else {
                    // Read data comes in C2HData; large writes wait for the R2T.
                    let sqe = cmd
                        .sgl(SglDescriptor::transport_data_block(len as u32))
                        .build();
                    s.r2t = opcode != op::READ;
                    s.io = Some(io);
                    self.push_capsule(st, &sqe, 0, &[]);
                }
            }
            IoType::Flush => {
                s.opcode = op::FLUSH;
                s.io = Some(io);
                let sqe = CommandBuilder::new(op::FLUSH).nsid(nsid).cid(slot).build();
                self.push_capsule(st, &sqe, 0, &[]);
            }
            IoType::WriteZeroes | IoType::Unmap => {
                s.opcode = if io.io_type == IoType::Unmap {
                    op::DATASET_MANAGEMENT
                } else {
                    op::WRITE_ZEROES
                };
                s.next_lba = lba;
                s.end_lba = lba.saturating_add(blocks);
                s.io = Some(io);
                self.issue_chunk(st, slot);
            }
            IoType::Reset => {
                s.busy = false;
                oxstor_reactor::release_awake();
                st.free.push(slot);
                complete_later(io, IoStatus::Failed(libc::ENOTSUP));
                return;
            }
        }
        self.mark_dirty();
    }

    /// Issues the next Write Zeroes / Dataset Management command of slot `slot`'s range.
    fn issue_chunk(&self, st: &mut State, slot: u16) {
        let Some(s) = st.slots.get_mut(slot as usize) else {
            return;
        };
        let (opcode, nsid, next) = (s.opcode, s.nsid, s.next_lba);
        let remaining = s.end_lba - s.next_lba;
        if opcode == op::WRITE_ZEROES {
            let n = remaining.min(MAX_NLB);
            s.next_lba += n;
            let sqe = CommandBuilder::nvm_io(op::WRITE_ZEROES, nsid, next, n as u32)
                .cid(slot)
                .build();
            self.push_capsule(st, &sqe, 0, &[]);
        } else {
            // One Deallocate range of at most 2^32 - 1 blocks, in the capsule.
            let n = remaining.min(u32::MAX as u64);
            s.next_lba += n;
            let mut range = [0u8; 16];
            range[4..8].copy_from_slice(&(n as u32).to_le_bytes());
            range[8..16].copy_from_slice(&next.to_le_bytes());
            let sqe = CommandBuilder::new(op::DATASET_MANAGEMENT)
                .nsid(nsid)
                .cid(slot)
                .cdw10(0) // one range (0-based)
                .cdw11(1 << 2) // Attribute - Deallocate
                .sgl(SglDescriptor::in_capsule(0, 16))
                .build();
            self.push_capsule(st, &sqe, 16, &range);
        }
        self.mark_dirty();
    }

    /// Queues a CapsuleCmd header for `sqe` announcing `data_len` bytes of in-capsule data,
    /// of which `inline` (with its digest) is stored in the header segment itself.
    fn push_capsule(
        &self,
        st: &mut State,
        sqe: &[u8; COMMAND_LEN],
        data_len: usize,
        inline: &[u8],
    ) {
        let mut h = Hdr::new();
        match encode_capsule_cmd(sqe, data_len, &st.neg, &mut h.bytes) {
            Ok(n) => h.len = n,
            Err(e) => {
                tracing::error!("{}: cannot encode a command: {e}", self.cfg.ctrl_name);
                return;
            }
        }
        if !inline.is_empty() {
            h.append(inline);
            if st.neg.data_digest {
                h.append(&pdu::data_digest(inline).to_le_bytes());
            }
        }
        st.tx.push(TxSeg::Hdr(h));
    }

    /// Sends the next H2CData PDU answering slot `slot`'s R2T, with the I/O in the batch.
    fn push_h2c(&self, st: &mut State, slot: u16) {
        let neg = st.neg;
        let Some(s) = st.slots.get_mut(slot as usize) else {
            return;
        };
        let Some(io) = s.io.take() else { return };
        let chunk = (s.h2c_end - s.h2c_next).min(neg.max_h2c_data);
        let off = s.h2c_next;
        s.h2c_next += chunk;
        s.in_tx = true;
        let pdu = DataPdu {
            cccid: slot,
            ttag: s.ttag,
            data_offset: off,
            data_len: chunk,
            last: s.h2c_next == s.h2c_end,
            success: false,
        };
        let mut h = Hdr::new();
        match pdu.encode_h2c(&neg, &mut h.bytes) {
            Ok(n) => h.len = n,
            Err(e) => tracing::error!("{}: cannot encode H2CData: {e}", self.cfg.ctrl_name),
        }
        st.tx.push(TxSeg::Hdr(h));
        let (off, len) = (off as usize, chunk as usize);
        let digest = neg
            .data_digest
            .then(|| pdu::data_digest(io.buf.as_slice().get(off..off + len).unwrap_or(&[])));
        st.tx.push(TxSeg::Io { io, slot, off, len });
        if let Some(d) = digest {
            let mut h = Hdr::new();
            h.append(&d.to_le_bytes());
            st.tx.push(TxSeg::Hdr(h));
        }
        self.mark_dirty();
    }

    /// Frees `slot` and completes its I/O (after the current borrow ends), then lets a
    /// waiting submission have the slot.
    fn finish(&self, st: &mut State, slot: u16, io: Box<BdevIo>, status: IoStatus) {
        if let Some(s) = st.slots.get_mut(slot as usize) {
            if s.busy {
                oxstor_reactor::release_awake();
            }
            *s = Slot::default();
        }
        st.free.push(slot);
        st.completing.push_back((io, status));
        if st.phase == Phase::Ready {
            while !st.pending.is_empty() {
                let Some(free) = st.free.pop() else { break };
                if let Some(next) = st.pending.pop_front() {
                    self.start(st, free, next);
                }
            }
        }
    }

    /// Completes queued I/Os with no borrow held: a completion may submit again right away.
    fn drain_completions(&self) {
        loop {
            let next = self.st.borrow_mut().completing.pop_front();
            match next {
                Some((io, status)) => io.complete(status),
                None => break,
            }
        }
    }

    fn mark_dirty(&self) {
        if !self.dirty.replace(true) {
            oxstor_reactor::net::flush_later(self.rc());
        }
    }

    fn send_queued(&self) {
        let batch = {
            let mut st = self.st.borrow_mut();
            if st.tx_busy || st.tx.is_empty() {
                return;
            }
            st.tx_busy = true;
            let spare = std::mem::take(&mut st.tx_spare);
            std::mem::replace(&mut st.tx, spare)
        };
        self.sock.send(batch);
    }

    fn recv_staging(&self) {
        let buf = {
            let mut st = self.st.borrow_mut();
            if st.phase == Phase::Failed {
                return;
            }
            // None: a receive is already in flight.
            let Some(buf) = st.staging.lend() else { return };
            buf
        };
        self.sock.recv(buf, false);
    }

    /// Parses and acts on everything staged, then completes what finished.
    fn pump(&self) {
        loop {
            let step = {
                let mut st = self.st.borrow_mut();
                self.step(&mut st)
            };
            match step {
                Step::Again => {}
                Step::NeedStaging => {
                    self.recv_staging();
                    break;
                }
                Step::RecvDirect(buf) => {
                    self.sock.recv(buf, true);
                    break;
                }
                Step::Fatal(why, err, offending) => {
                    let term = err.as_ref().and_then(TermReq::for_error).and_then(|t| {
                        let mut h = Hdr::new();
                        let n = t.encode(Role::Host, &offending, &mut h.bytes).ok()?;
                        h.len = n;
                        Some(h)
                    });
                    self.fail(&why, term);
                    break;
                }
                Step::Stop => break,
            }
        }
        self.drain_completions();
    }

    fn step(&self, st: &mut State) -> Step {
        if st.phase == Phase::Failed {
            return Step::Stop;
        }
        if st.data.is_some() {
            return self.step_data(st);
        }
        let neg = st.neg;
        let (received, need, header_len) = {
            if !st.staging.is_home() {
                return Step::Stop;
            }
            let avail = st.staging.pending();
            if avail.len() < pdu::COMMON_HEADER_LEN {
                return Step::NeedStaging;
            }
            let head = &avail[..avail.len().min(pdu::TERM_REQ_MAX_DATA_LEN)];
            let layout = match CommonHeader::parse(avail).and_then(|ch| ch.layout(&neg)) {
                Ok(l) => l,
                Err(e) => return Step::Fatal(format!("bad PDU: {e}"), Some(e), head.to_vec()),
            };
            let header_len = layout.header_with_digest_len();
            let need = header_len + layout.padding_len();
            if avail.len() < need {
                if need > STAGING_LEN / 2 {
                    let e = PduError::invalid_field(3);
                    return Step::Fatal(format!("bad PDU: {e}"), Some(e), head.to_vec());
                }
                return Step::NeedStaging;
            }
            let pdu = match Pdu::parse(&avail[..header_len], &neg) {
                Ok(p) => p,
                Err(e) => return Step::Fatal(format!("bad PDU: {e}"), Some(e), head.to_vec()),
            };
            let received = match pdu.header {
                PduHeader::IcResp(r) => Received::IcResp(r),
                PduHeader::CapsuleResp(c) => Received::CapsuleResp(c),
                PduHeader::C2hData(d) => Received::C2hData(d, layout.data_digest),
                PduHeader::R2t(r) => Received::R2t(r),
                PduHeader::C2hTermReq(t) => Received::TermReq(t),
                other => Received::Other(format!("{other:?}")),
            };
            (received, need, header_len)
        };
        st.staging.consume(need);
        // The header stays in the staging buffer until the next receive: copy it out only
        // for the termination request of an error, never per PDU.
        let offending = Offending {
            back: need,
            len: header_len.min(pdu::TERM_REQ_MAX_DATA_LEN),
        };
        let phase = st.phase;
        let sequence = |what: &str, offending: Vec<u8>| {
            Step::Fatal(
                format!("unexpected {what} in phase {phase:?}"),
                Some(PduError::sequence_error()),
                offending,
            )
        };
        match received {
            Received::TermReq(t) => Step::Fatal(
                format!(
                    "target terminated the connection: {} (FES {:#x}, FEI {})",
                    FatalErrorStatus::from_u16(t.fes)
                        .map_or_else(|| "unknown error".to_string(), |f| f.to_string()),
                    t.fes,
                    t.fei
                ),
                None,
                Vec::new(),
            ),
            Received::IcResp(resp) if st.phase == Phase::AwaitIcResp => {
                st.neg = Negotiated::from_exchange(
                    Role::Host,
                    &self.ic_req(),
                    &resp,
                    self.cfg.in_capsule,
                );
                let c = &self.cfg;
                let data = match connect_data(Some(c.cntlid), c.hostid, &c.subnqn, &c.hostnqn) {
                    Ok(d) => d,
                    Err(e) => return Step::Fatal(e.to_string(), None, Vec::new()),
                };
                let sqe = connect_sqe(c.qid, c.sqsize, 0, CONNECT_CID);
                self.push_capsule(st, &sqe, data.len(), &[]);
                let digest = st.neg.data_digest.then(|| pdu::data_digest(&data));
                st.tx.push(TxSeg::Heap(data.to_vec()));
                if let Some(d) = digest {
                    let mut h = Hdr::new();
                    h.append(&d.to_le_bytes());
                    st.tx.push(TxSeg::Hdr(h));
                }
                st.phase = Phase::AwaitConnect;
                self.mark_dirty();
                Step::Again
            }
            Received::CapsuleResp(c) if st.phase == Phase::AwaitConnect => {
                if c.cid != CONNECT_CID {
                    return sequence("response", offending.copy(st));
                }
                if !c.status.is_success() {
                    return Step::Fatal(
                        format!(
                            "I/O queue {} Connect refused: {}",
                            self.cfg.qid,
                            super::admin::describe_status(&c.status)
                        ),
                        None,
                        Vec::new(),
                    );
                }
                st.phase = Phase::Ready;
                tracing::debug!("{}: I/O queue {} ready", self.cfg.ctrl_name, self.cfg.qid);
                while !st.pending.is_empty() {
                    let Some(free) = st.free.pop() else { break };
                    if let Some(next) = st.pending.pop_front() {
                        self.start(st, free, next);
                    }
                }
                Step::Again
            }
            Received::CapsuleResp(c) if st.phase == Phase::Ready => self.response(st, c, offending),
            Received::C2hData(d, digest) if st.phase == Phase::Ready => {
                let ok = st.slots.get(d.cccid as usize).is_some_and(|s| {
                    s.busy
                        && s.opcode == op::READ
                        && s.io.is_some()
                        && d.data_offset as u64 + d.data_len as u64 <= s.len as u64
                });
                if !ok {
                    return Step::Fatal(
                        format!("C2HData for CID {} out of range or unexpected", d.cccid),
                        Some(PduError::data_out_of_range()),
                        offending.copy(st),
                    );
                }
                st.data = Some(DataRecv {
                    slot: d.cccid,
                    base: d.data_offset as usize,
                    len: d.data_len as usize,
                    done: 0,
                    digest,
                    success: d.success,
                    direct: false,
                });
                Step::Again
            }
            Received::R2t(r) if st.phase == Phase::Ready => {
                // An R2T may overtake the socket's report that the previous data was sent;
                // then the data goes out when the I/O comes back from the send batch.
                let ok = st.slots.get(r.cccid as usize).is_some_and(|s| {
                    s.busy
                        && s.r2t
                        && (s.io.is_some() || s.in_tx)
                        && s.h2c_next == s.h2c_end
                        && r.offset as u64 + r.len as u64 <= s.len as u64
                });
                if !ok {
                    return Step::Fatal(
                        format!("R2T for CID {} out of range or unexpected", r.cccid),
                        Some(PduError::data_out_of_range()),
                        offending.copy(st),
                    );
                }
                let mut in_tx = true;
                if let Some(s) = st.slots.get_mut(r.cccid as usize) {
                    s.ttag = r.ttag;
                    s.h2c_next = r.offset;
                    s.h2c_end = r.offset + r.len;
                    in_tx = s.in_tx;
                }
                if !in_tx {
                    self.push_h2c(st, r.cccid);
                }
                Step::Again
            }
            Received::Other(what) => sequence(&what, offending.copy(st)),
            Received::IcResp(_) => sequence("ICResp", offending.copy(st)),
            Received::CapsuleResp(_) => sequence("CapsuleResp", offending.copy(st)),
            Received::C2hData(..) => sequence("C2HData", offending.copy(st)),
            Received::R2t(_) => sequence("R2T", offending.copy(st)),
        }
    }

    fn response(&self, st: &mut State, c: Completion, offending: Offending) -> Step {
        let slot = c.cid;
        let Some(s) = st.slots.get_mut(slot as usize).filter(|s| s.busy) else {
            return Step::Fatal(
                format!("response for CID {slot}, which is not outstanding"),
                Some(PduError::invalid_field(pdu::CAPSULE_RESP_HEADER_LEN - 4)),
                offending.copy(st),
            );
        };
        let mut status = io_status(c.status);
        if s.data_error && status.is_success() {
            status = IoStatus::Failed(libc::EIO);
        }
        if status.is_success() && s.next_lba < s.end_lba {
            self.issue_chunk(st, slot);
            return Step::Again;
        }
        if s.in_tx {
            // Still in a send batch: finish when the socket gives the I/O back.
            s.resp = Some(status);
            return Step::Again;
        }
        match s.io.take() {
            Some(io) => self.finish(st, slot, io, status),
            None => {
                return Step::Fatal(
                    format!("response for CID {slot} while its data is being received"),
                    Some(PduError::sequence_error()),
                    offending.copy(st),
                )
            }
        }
        Step::Again
    }

    fn step_data(&self, st: &mut State) -> Step {
        let Some(mut d) = st.data.take() else {
            return Step::Again;
        };
        let idx = d.slot as usize;
        let Some(io) = st.slots.get_mut(idx).and_then(|s| s.io.as_mut()) else {
            return Step::Fatal("C2HData for a vanished command".into(), None, Vec::new());
        };
        if d.done < d.len {
            let n = st.staging.pending().len().min(d.len - d.done);
            if n > 0 {
                let at = d.base + d.done;
                let src = st.staging.pending().get(..n);
                let dst = io.buf.as_mut_slice().get_mut(at..at + n);
                if let (Some(src), Some(dst)) = (src, dst) {
                    dst.copy_from_slice(src);
                }
                st.staging.consume(n);
                d.done += n;
            }
            if d.done < d.len {
                if matches!(io.buf, IoBuf::Dma(_)) {
                    // Receive the rest straight into the I/O's own buffer.
                    if let Some(dma) = io.buf.take().into_dma() {
                        let recv = RecvBuf {
                            mem: RecvMem::Dma(dma),
                            offset: d.base + d.done,
                            len: d.len - d.done,
                        };
                        d.direct = true;
                        st.data = Some(d);
                        return Step::RecvDirect(recv);
                    }
                }
                st.data = Some(d);
                return Step::NeedStaging;
            }
        }
        if d.digest {
            let mut received = [0u8; 4];
            match st.staging.pending().get(..pdu::DIGEST_LEN) {
                Some(b) => received.copy_from_slice(b),
                None => {
                    st.data = Some(d);
                    return Step::NeedStaging;
                }
            }
            st.staging.consume(pdu::DIGEST_LEN);
            let data = io.buf.as_slice().get(d.base..d.base + d.len).unwrap_or(&[]);
            if pdu::verify_data_digest(data, received).is_err() {
                tracing::warn!(
                    "{}: data digest mismatch on C2HData for CID {}",
                    self.cfg.ctrl_name,
                    d.slot
                );
                if let Some(s) = st.slots.get_mut(idx) {
                    s.data_error = true;
                }
            }
        }
        if d.success {
            // SUCCESS: the command is complete, no CapsuleResp follows.
            let Some(s) = st.slots.get_mut(idx) else {
                return Step::Again;
            };
            let status = if s.data_error {
                IoStatus::Failed(libc::EIO)
            } else {
                IoStatus::Success
            };
            if let Some(io) = s.io.take() {
                self.finish(st, d.slot, io, status);
            }
        }
        Step::Again
    }

    /// Ends the queue: every outstanding I/O fails with EIO now (or, if the socket holds
    /// it, when the socket gives it back), later submissions with ENXIO. `term` is an
    /// H2CTermReq to send before closing.
    fn fail(&self, why: &str, term: Option<Hdr>) {
        {
            let mut st = self.st.borrow_mut();
            if st.phase == Phase::Failed {
                return;
            }
            st.phase = Phase::Failed;
            // Queued, unsent PDUs die here; I/Os riding in them fail.
            let queued = std::mem::take(&mut st.tx);
            for seg in queued {
                if let TxSeg::Io { io, slot, .. } = seg {
                    self.finish(&mut st, slot, io, IoStatus::Failed(libc::EIO));
                }
            }
            let receiving = st.data.as_ref().filter(|d| d.direct).map(|d| d.slot);
            for slot in 0..st.slots.len() as u16 {
                if Some(slot) == receiving {
                    continue; // its buffer comes back with the receive
                }
                let io = st.slots.get_mut(slot as usize).and_then(|s| s.io.take());
                if let Some(io) = io {
                    self.finish(&mut st, slot, io, IoStatus::Failed(libc::EIO));
                }
            }
            while let Some(io) = st.pending.pop_front() {
                st.completing.push_back((io, IoStatus::Failed(libc::EIO)));
            }
            if let Some(t) = term {
                st.tx.push(TxSeg::Hdr(t));
                st.close_after_send = true;
            }
        }
        tracing::error!(
            "{}: I/O queue {} to {} failed: {why}; outstanding I/O fails with EIO",
            self.cfg.ctrl_name,
            self.cfg.qid,
            self.cfg.addr
        );
        if self.st.borrow().close_after_send {
            self.send_queued();
        } else {
            self.sock.close();
        }
        self.drain_completions();
    }

    /// An I/O came back from a send batch.
    fn io_returned(&self, st: &mut State, io: Box<BdevIo>, slot: u16) {
        let Some(s) = st.slots.get_mut(slot as usize) else {
            return;
        };
        s.in_tx = false;
        if st.phase == Phase::Failed {
            return self.finish(st, slot, io, IoStatus::Failed(libc::EIO));
        }
        if let Some(status) = s.resp.take() {
            return self.finish(st, slot, io, status);
        }
        let more = s.h2c_next < s.h2c_end;
        s.io = Some(io);
        if more {
            self.push_h2c(st, slot);
        }
    }
}

impl Drop for Qpair {
    fn drop(&mut self) {
        // The last channel using the queue is gone: close the connection (the target drops
        // the queue when it sees the close).
        self.sock.close();
        // Channels should only go once their I/O has drained; if some is still here, fail
        // it on the next loop iteration rather than lose it.
        let st = self.st.get_mut();
        let stranded = st.slots.iter_mut().filter_map(|s| s.io.take());
        let stranded = stranded.chain(st.pending.drain(..)).collect::<Vec<_>>();
        if !stranded.is_empty() {
            tracing::warn!(
                "{}: I/O queue {} closed with {} I/Os outstanding; failing them",
                self.cfg.ctrl_name,
                self.cfg.qid,
                stranded.len()
            );
        }
        for io in stranded {
            complete_later(io, IoStatus::Failed(libc::EIO));
        }
        for (io, status) in st.completing.drain(..) {
            complete_later(io, status);
        }
    }
}

impl oxstor_reactor::net::Flush for Qpair {
    fn flush(&self) {
        self.dirty.set(false);
        self.send_queued();
    }
}

impl SocketEvents<TxSeg> for Qpair {
    fn received(&self, buf: RecvBuf, result: i32) {
        let len = buf.len;
        match buf.mem {
            RecvMem::Heap(staging) => {
                let failed = {
                    let mut st = self.st.borrow_mut();
                    st.staging.returned(staging, result);
                    st.phase == Phase::Failed
                };
                if failed {
                    return;
                }
                if result <= 0 {
                    let why = if result == 0 {
                        "target closed the connection".to_string()
                    } else {
                        format!(
                            "receive failed: {}",
                            std::io::Error::from_raw_os_error(-result)
                        )
                    };
                    return self.fail(&why, None);
                }
            }
            RecvMem::Dma(dma) => {
                let (ok, failed_slot) = {
                    let mut st = self.st.borrow_mut();
                    let failed = st.phase == Phase::Failed;
                    let slot = st.data.as_ref().map(|d| d.slot);
                    if let Some(io) = slot
                        .and_then(|s| st.slots.get_mut(s as usize))
                        .and_then(|s| s.io.as_mut())
                    {
                        io.buf = IoBuf::Dma(dma);
                    }
                    let ok = match st.data.as_mut() {
                        Some(d) if result > 0 && result as usize == len => {
                            d.done += len;
                            d.direct = false;
                            true
                        }
                        _ => false,
                    };
                    (ok && !failed, slot.filter(|_| failed))
                };
                if let Some(slot) = failed_slot {
                    // The queue failed while this read's buffer was out: fail it now.
                    let mut st = self.st.borrow_mut();
                    st.data = None;
                    let io = st.slots.get_mut(slot as usize).and_then(|s| s.io.take());
                    if let Some(io) = io {
                        self.finish(&mut st, slot, io, IoStatus::Failed(libc::EIO));
                    }
                    drop(st);
                    return self.drain_completions();
                }
                if !ok {
                    if let Some(d) = self.st.borrow_mut().data.as_mut() {
                        d.direct = false;
                    }
                    return self.fail("target disconnected in the middle of a PDU", None);
                }
            }
        }
        self.pump();
    }

    fn sent(&self, mut segments: Vec<TxSeg>, result: i32) {
        let (failed, close) = {
            let mut st = self.st.borrow_mut();
            st.tx_busy = false;
            for seg in segments.drain(..) {
                if let TxSeg::Io { io, slot, .. } = seg {
                    self.io_returned(&mut st, io, slot);
                }
            }
            st.tx_spare = segments;
            let failed = st.phase == Phase::Failed;
            (failed, failed && st.close_after_send && st.tx.is_empty())
        };
        if result < 0 && !failed {
            self.fail(
                &format!(
                    "send failed: {}",
                    std::io::Error::from_raw_os_error(-result)
                ),
                None,
            );
        } else if close {
            self.sock.close();
        } else if !self.st.borrow().tx.is_empty() {
            self.mark_dirty();
        }
        self.drain_completions();
    }
}
