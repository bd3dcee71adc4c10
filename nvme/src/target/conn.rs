//! One NVMe/TCP connection: one queue pair, owned by one reactor for its whole life.
//!
//! Receiving: the socket fills a staging buffer; PDUs are parsed out of it in place. A PDU's
//! data goes into the DMA buffer of its command: what already sits in the staging buffer is
//! moved over (at most the in-capsule size, or the tail of one receive), and the rest is
//! received straight into that buffer, so large write data is never copied in user space.
//!
//! Sending: responses, R2Ts and read data produced during one reactor iteration are queued and
//! go out together in one `sendmsg` (a per-core flusher runs after completions are reaped).
//! Read data is sent from the very buffer the bdev filled, and with C2H success the read
//! needs no separate response capsule.
//!
//! Errors: a malformed PDU gets a C2HTermReq naming the offending field, then the connection
//! closes; other connections are untouched. A malformed command gets an NVMe error status.

use super::controller::{self, Controller};
use super::subsystem::Subsystem;
use super::{admin, io_cmd, rpc};
use crate::pdu::{
    self, CommonHeader, DataPdu, FatalErrorStatus, IcResp, Negotiated, Pdu, PduError, PduHeader,
    R2t, Role, TermReq,
};
use crate::spec::command::{Command, SglKind, COMMAND_LEN};
use crate::spec::completion::{Completion, Status};
use crate::staging::Staging;
use oxstor_bdev::{BdevIo, IoChannel, IoDone};
use oxstor_reactor::net::{RecvBuf, RecvMem, Segment, Socket, SocketEvents, TcpSocket};
use oxstor_reactor::{DmaBuf, PollStatus};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const STAGING_LEN: usize = 64 * 1024;
/// The largest header we send: a C2HTermReq (24 + 128) or a C2HData with digest and the
/// most padding a host may ask for (24 + 4 + 124).
const HDR_MAX: usize = 152;
/// Most commands one queue may have in flight, whatever the host claims.
const MAX_SLOTS: usize = 4096;

/// One piece of an outgoing batch. Headers are inline so queueing a PDU allocates nothing.
#[allow(clippy::large_enum_variant)]
pub enum TxSeg {
    Hdr(Hdr),
    Heap(Vec<u8>),
    Digest([u8; 4]),
    Io(Box<BdevIo>),
}

pub struct Hdr {
    bytes: [u8; HDR_MAX],
    len: usize,
}

impl Segment for TxSeg {
    fn bytes(&self) -> &[u8] {
        match self {
            TxSeg::Hdr(h) => &h.bytes[..h.len],
            TxSeg::Heap(v) => v,
            TxSeg::Digest(d) => d,
            TxSeg::Io(io) => io.buf.as_slice(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitIcReq,
    Ready,
    Closing,
}

/// The queue this connection became at Fabrics Connect.
pub struct Queue {
    pub ctrl: Arc<Controller>,
    pub subsystem: Arc<Subsystem>,
    pub qid: u16,
    pub sqsize: u16,
}

/// A command between capsule arrival and its response.
pub struct Request {
    pub cid: u16,
    pub sqe: [u8; COMMAND_LEN],
    /// Data from the host (in-capsule or via R2T/H2CData).
    pub buf: Option<DmaBuf>,
    /// Host data expected through R2T.
    pub xfer_len: u32,
    pub h2c_received: u32,
    /// Bdev I/Os still outstanding (DSM fans out).
    pub pending: u32,
    pub status: Status,
}

impl Request {
    pub fn command(&self) -> Command<'_> {
        // The SQE was copied from a parsed command, so it always has the full length.
        Command::new(&self.sqe)
    }
}

struct DataRecv {
    slot: u16,
    /// Where this PDU's data starts in the command buffer.
    base: usize,
    len: usize,
    done: usize,
    digest: bool,
    h2c: bool,
}

/// An I/O queue's view of one namespace, refreshed when the subsystem changes.
pub struct CachedNs {
    pub channel: Rc<IoChannel>,
    pub block_size: u32,
    pub num_blocks: u64,
    /// Read-only as configured; see [`CachedNs::read_only`] for the live answer.
    pub configured_read_only: bool,
}

impl CachedNs {
    /// Configured read-only, or a bdev that refuses writes right now (a Secondary replica).
    pub fn read_only(&self) -> bool {
        self.configured_read_only || !self.channel.entry().bdev.writable()
    }
}

struct State {
    phase: Phase,
    neg: Negotiated,
    staging: Staging,
    data: Option<DataRecv>,
    queue: Option<Queue>,
    reqs: Vec<Option<Request>>,
    free: Vec<u16>,
    tx: Vec<TxSeg>,
    tx_spare: Vec<TxSeg>,
    tx_busy: bool,
    close_after_send: bool,
    // Boxed because the bdev API passes descriptors as boxes; recycling keeps the box.
    #[allow(clippy::vec_box)]
    io_pool: Vec<Box<BdevIo>>,
    outstanding: u32,
    ns_cache: Vec<Option<Rc<CachedNs>>>,
    ns_generation: u64,
    sqhd: u16,
}

pub struct Conn {
    pub id: u64,
    /// The transport's options when the connection arrived: read per command, so kept here
    /// rather than behind the control plane's lock.
    pub opts: rpc::TransportOptions,
    pub core: usize,
    // The transport is a trait object: the kernel TCP socket today, a user-space stack
    // tomorrow, without touching PDU or controller code.
    sock: Rc<dyn Socket<TxSeg>>,
    me: Weak<Conn>,
    st: RefCell<State>,
    dirty: Cell<bool>,
    /// When this queue last refreshed its controller's keep-alive.
    alive_ns: Cell<u64>,
}

/// Per-core counters for nvmf_get_stats.
#[derive(Default, Clone, Copy, serde::Serialize)]
pub struct CoreStats {
    pub admin_qpairs: u64,
    pub io_qpairs: u64,
    pub current_admin_qpairs: u64,
    pub current_io_qpairs: u64,
    pub pending_bdev_io: u64,
    pub completed_nvme_io: u64,
    pub pdu_errors: u64,
}

thread_local! {
    static CONNS: RefCell<HashMap<u64, Rc<Conn>>> = RefCell::new(HashMap::new());
    static CORE_SETUP: Cell<bool> = const { Cell::new(false) };
    static STATS: RefCell<CoreStats> = RefCell::new(CoreStats::default());
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub fn stat(f: impl FnOnce(&mut CoreStats)) {
    STATS.with(|s| f(&mut s.borrow_mut()));
}

/// Every core's counters.
pub fn stats() -> Vec<CoreStats> {
    match oxstor_bdev::registry::runtime() {
        Some(rt) => rt.run_on_all(|| STATS.with(|s| *s.borrow())),
        None => Vec::new(),
    }
}

fn setup_core() {
    if CORE_SETUP.with(|c| c.replace(true)) {
        return;
    }
    oxstor_reactor::reactor::register_timed_poller(
        "nvmf_keep_alive",
        Duration::from_millis(500),
        check_keep_alive,
    );
}

fn check_keep_alive() -> PollStatus {
    let Some(core) = oxstor_reactor::core_index() else {
        return PollStatus::Idle;
    };
    let now = oxstor_reactor::clock::now_ns();
    for ctrl in controller::on_core(core) {
        if ctrl.keep_alive_expired(now) {
            tracing::warn!(
                "controller {} of {}: keep-alive timeout ({} ms) expired",
                ctrl.cntlid,
                ctrl.subsystem.nqn,
                ctrl.kato_ms()
            );
            controller::destroy(&ctrl, "keep-alive timeout");
        }
    }
    PollStatus::Idle
}

/// Takes over an accepted connection on this reactor.
pub fn start(fd: OwnedFd, core: usize) {
    setup_core();
    let peer = oxstor_reactor::net::peer_of(&fd);
    let sock: Rc<dyn Socket<TxSeg>> = TcpSocket::<TxSeg>::new(fd, peer);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let conn = Rc::new_cyclic(|me| Conn {
        id,
        opts: rpc::transport_options(),
        core,
        sock: sock.clone(),
        me: me.clone(),
        st: RefCell::new(State {
            phase: Phase::AwaitIcReq,
            neg: Negotiated::initial(Role::Controller),
            staging: Staging::new(STAGING_LEN),
            data: None,
            queue: None,
            reqs: Vec::new(),
            free: Vec::new(),
            tx: Vec::with_capacity(64),
            tx_spare: Vec::with_capacity(64),
            tx_busy: false,
            close_after_send: false,
            io_pool: Vec::new(),
            outstanding: 0,
            ns_cache: Vec::new(),
            ns_generation: 0,
            sqhd: 0,
        }),
        dirty: Cell::new(false),
        alive_ns: Cell::new(0),
    });
    let events: Rc<dyn SocketEvents<TxSeg>> = conn.clone();
    sock.set_events(Rc::downgrade(&events));
    CONNS.with(|c| c.borrow_mut().insert(id, conn.clone()));
    tracing::debug!("connection {id} from {peer:?} on reactor {core}");
    conn.recv_staging();
}

pub fn close_by_id(id: u64) {
    if let Some(c) = CONNS.with(|c| c.borrow().get(&id).cloned()) {
        c.close("closed by the target");
    }
}

/// Closes every connection on every core (shutdown).
pub fn close_all() {
    if let Some(rt) = oxstor_bdev::registry::runtime() {
        rt.run_on_all(|| {
            let all: Vec<Rc<Conn>> = CONNS.with(|c| c.borrow().values().cloned().collect());
            for c in all {
                c.close("target shutting down");
            }
        });
    }
}

/// Completes a parked Asynchronous Event Request on admin queue `conn`.
pub fn complete_aer(conn: u64, cid: u16, event: u32) {
    if let Some(c) = CONNS.with(|c| c.borrow().get(&conn).cloned()) {
        c.complete_parked(cid, Status::SUCCESS, event as u64);
    }
}

/// The PDUs a controller receives, owned (the header bytes are consumed right after parsing).
enum Received {
    IcReq(crate::pdu::IcReq),
    Command([u8; COMMAND_LEN]),
    H2cData(DataPdu),
    TermReq(TermReq),
    WrongDirection,
}

/// The header that failed, for the C2HTermReq. A good PDU costs nothing: after a header is
/// consumed its bytes stay in the staging buffer, so only a position is kept.
enum Offending {
    /// `len` bytes that start `back` bytes before the staging read position.
    Consumed { back: usize, len: usize },
    /// Rejected before it was consumed (rare): a copy.
    Copied([u8; 128], usize),
}

impl Offending {
    fn of(header: &[u8]) -> Offending {
        let len = header.len().min(128);
        let mut bytes = [0u8; 128];
        bytes[..len].copy_from_slice(&header[..len]);
        Offending::Copied(bytes, len)
    }

    fn consumed(back: usize, len: usize) -> Offending {
        Offending::Consumed {
            back,
            len: len.min(128),
        }
    }
}

enum Step {
    Again,
    NeedStaging,
    RecvDirect(RecvBuf),
    Execute(u16),
    WaitBuffer(u16, usize),
    Fatal(PduError, Offending),
    Stop,
}

impl Conn {
    pub fn rc(&self) -> Rc<Conn> {
        self.me
            .upgrade()
            .unwrap_or_else(|| unreachable!("a live conn has an Rc"))
    }

    fn recv_staging(&self) {
        let buf = {
            let mut st = self.st.borrow_mut();
            if st.phase == Phase::Closing {
                return;
            }
            // None: a receive is already in flight.
            let Some(buf) = st.staging.lend() else { return };
            buf
        };
        self.sock.recv(buf, false);
    }

    /// Parses and executes everything the staging buffer holds.
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
                    return;
                }
                Step::RecvDirect(buf) => {
                    self.sock.recv(buf, true);
                    return;
                }
                Step::Execute(slot) => self.execute(slot),
                Step::WaitBuffer(slot, len) => self.wait_for_buffer(slot, len),
                Step::Fatal(err, hdr) => {
                    self.fatal(err, hdr);
                    return;
                }
                Step::Stop => return,
            }
        }
    }

    fn step(&self, st: &mut State) -> Step {
        if st.phase == Phase::Closing {
            return Step::Stop;
        }
        if st.data.is_some() {
            return self.step_data(st);
        }
        if !st.staging.is_home() {
            return Step::Stop;
        }
        let avail = st.staging.pending();
        if avail.len() < pdu::COMMON_HEADER_LEN {
            return Step::NeedStaging;
        }
        let layout = match CommonHeader::parse(avail).and_then(|ch| ch.layout(&st.neg)) {
            Ok(l) => l,
            Err(e) => return Step::Fatal(e, Offending::of(avail)),
        };
        let header_len = layout.header_with_digest_len();
        let need = header_len + layout.padding_len();
        if avail.len() < need {
            if need > STAGING_LEN / 2 {
                return Step::Fatal(PduError::invalid_field(3), Offending::of(avail));
            }
            return Step::NeedStaging;
        }
        let pdu = match Pdu::parse(&avail[..header_len], &st.neg) {
            Ok(p) => p,
            Err(e) => return Step::Fatal(e, Offending::of(&avail[..header_len])),
        };
        let offending = Offending::consumed(need, header_len);
        // Own what the header says (the SQE is 64 bytes) before consuming it from staging.
        let header = match pdu.header {
            PduHeader::CapsuleCmd(cmd) => Received::Command(*cmd.as_bytes()),
            PduHeader::IcReq(req) => Received::IcReq(req),
            PduHeader::H2cData(d) => Received::H2cData(d),
            PduHeader::H2cTermReq(t) => Received::TermReq(t),
            _ => Received::WrongDirection,
        };
        st.staging.consume(need);
        match header {
            Received::IcReq(req) => {
                if st.phase != Phase::AwaitIcReq {
                    return Step::Fatal(PduError::sequence_error(), offending);
                }
                let opts = &self.opts;
                let resp = IcResp {
                    pfv: 0,
                    cpda: 0,
                    header_digest: req.header_digest,
                    data_digest: req.data_digest,
                    max_h2c_data: opts.max_io_size,
                };
                let mut hdr = Hdr {
                    bytes: [0; HDR_MAX],
                    len: 0,
                };
                match resp.encode(&mut hdr.bytes) {
                    Ok(n) => hdr.len = n,
                    Err(_) => return Step::Fatal(PduError::sequence_error(), offending),
                }
                st.neg = Negotiated::from_exchange(
                    Role::Controller,
                    &req,
                    &resp,
                    opts.in_capsule_data_size.max(8192),
                );
                st.phase = Phase::Ready;
                st.tx.push(TxSeg::Hdr(hdr));
                self.mark_dirty();
                Step::Again
            }
            _ if st.phase == Phase::AwaitIcReq => {
                Step::Fatal(PduError::sequence_error(), offending)
            }
            Received::Command(sqe) => {
                self.new_command(st, sqe, layout.data_len, layout.data_digest, offending)
            }
            Received::H2cData(d) => self.h2c_data(st, d, layout.data_digest, offending),
            Received::TermReq(t) => {
                tracing::warn!(
                    "connection {}: host terminated it (FES {:#x}, FEI {})",
                    self.id,
                    t.fes,
                    t.fei
                );
                st.phase = Phase::Closing;
                drop_closing(self);
                Step::Stop
            }
            _ => Step::Fatal(PduError::invalid_field(0), offending),
        }
    }

    fn new_command(
        &self,
        st: &mut State,
        sqe: [u8; COMMAND_LEN],
        data_len: usize,
        data_digest: bool,
        offending: Offending,
    ) -> Step {
        if st.reqs.len() >= MAX_SLOTS && st.free.is_empty() {
            return Step::Fatal(
                PduError::fatal(FatalErrorStatus::DataTransferLimitExceeded),
                offending,
            );
        }
        let cmd = Command::new(&sqe);
        let sgl = cmd.sgl();
        let cid = cmd.cid();
        let slot = match st.free.pop() {
            Some(s) => s,
            None => {
                st.reqs.push(None);
                (st.reqs.len() - 1) as u16
            }
        };
        if let Some(q) = &st.queue {
            st.sqhd = (st.sqhd + 1) % (q.sqsize + 1);
        }
        st.reqs[slot as usize] = Some(Request {
            cid,
            sqe,
            buf: None,
            xfer_len: 0,
            h2c_received: 0,
            pending: 0,
            status: Status::SUCCESS,
        });
        if data_len > 0 {
            // In-capsule data: the SGL must say so and agree on the length.
            if !matches!(sgl.kind(), SglKind::InCapsule { .. }) || sgl.length as usize != data_len {
                return Step::Fatal(
                    PduError::invalid_field(pdu::CAPSULE_CMD_HEADER_LEN - 16),
                    offending,
                );
            }
            let Some(buf) = DmaBuf::alloc(data_len) else {
                return Step::Fatal(
                    PduError::fatal(FatalErrorStatus::DataTransferLimitExceeded),
                    offending,
                );
            };
            if let Some(r) = st.reqs[slot as usize].as_mut() {
                r.buf = Some(buf);
            }
            st.data = Some(DataRecv {
                slot,
                base: 0,
                len: data_len,
                done: 0,
                digest: data_digest,
                h2c: false,
            });
            return Step::Again;
        }
        if io_cmd::wants_host_data(&cmd, st.queue.as_ref().map(|q| q.qid))
            && matches!(sgl.kind(), SglKind::TransportDataBlock { .. })
            && sgl.length > 0
        {
            let len = sgl.length;
            if len > self.opts.max_io_size {
                self.respond_in(st, slot, Status::DATA_SGL_LENGTH_INVALID, 0);
                return Step::Again;
            }
            if let Some(r) = st.reqs[slot as usize].as_mut() {
                r.xfer_len = len;
            }
            match DmaBuf::alloc(len as usize) {
                Some(buf) => {
                    if let Some(r) = st.reqs[slot as usize].as_mut() {
                        r.buf = Some(buf);
                    }
                    self.queue_r2t(st, slot);
                    return Step::Again;
                }
                None => return Step::WaitBuffer(slot, len as usize),
            }
        }
        Step::Execute(slot)
    }

    fn queue_r2t(&self, st: &mut State, slot: u16) {
        let Some(r) = st.reqs.get(slot as usize).and_then(Option::as_ref) else {
            return;
        };
        let r2t = R2t {
            cccid: r.cid,
            ttag: slot,
            offset: 0,
            len: r.xfer_len,
        };
        let neg = st.neg;
        push_hdr(st, |b| r2t.encode(&neg, b));
        self.mark_dirty();
    }

    fn wait_for_buffer(&self, slot: u16, len: usize) {
        let weak = self.me.clone();
        self.st.borrow_mut().outstanding += 1;
        DmaBuf::alloc_or_wait(
            len,
            Box::new(move |buf| {
                let Some(conn) = weak.upgrade() else { return };
                let mut st = conn.st.borrow_mut();
                st.outstanding -= 1;
                if st.phase == Phase::Closing {
                    drop(st);
                    drop_closing(&conn);
                    return;
                }
                if let Some(r) = st.reqs.get_mut(slot as usize).and_then(Option::as_mut) {
                    r.buf = Some(buf);
                }
                conn.queue_r2t(&mut st, slot);
            }),
        );
    }

    fn h2c_data(&self, st: &mut State, d: DataPdu, digest: bool, offending: Offending) -> Step {
        let Some(r) = st.reqs.get(d.ttag as usize).and_then(Option::as_ref) else {
            return Step::Fatal(PduError::invalid_field(10), offending);
        };
        if r.cid != d.cccid || r.xfer_len == 0 || r.buf.is_none() {
            return Step::Fatal(PduError::invalid_field(8), offending);
        }
        if d.data_offset != r.h2c_received {
            return Step::Fatal(PduError::sequence_error(), offending);
        }
        if d.data_offset as u64 + d.data_len as u64 > r.xfer_len as u64 {
            return Step::Fatal(PduError::data_out_of_range(), offending);
        }
        st.data = Some(DataRecv {
            slot: d.ttag,
            base: d.data_offset as usize,
            len: d.data_len as usize,
            done: 0,
            digest,
            h2c: true,
        });
        Step::Again
    }

    fn step_data(&self, st: &mut State) -> Step {
        let Some(mut d) = st.data.take() else {
            return Step::Again;
        };
        let slot = d.slot as usize;
        if d.done < d.len {
            let n = st.staging.pending().len().min(d.len - d.done);
            if n > 0 {
                let State { staging, reqs, .. } = &mut *st;
                let src = &staging.pending()[..n];
                if let Some(dst) = reqs[slot].as_mut().and_then(|r| r.buf.as_mut()) {
                    dst.as_mut_slice()[d.base + d.done..d.base + d.done + n].copy_from_slice(src);
                }
                staging.consume(n);
                d.done += n;
            }
            if d.done < d.len {
                let Some(buf) = st.reqs[slot].as_mut().and_then(|r| r.buf.take()) else {
                    return Step::Stop;
                };
                let recv = RecvBuf {
                    mem: RecvMem::Dma(buf),
                    offset: d.base + d.done,
                    len: d.len - d.done,
                };
                st.data = Some(d);
                return Step::RecvDirect(recv);
            }
        }
        if d.digest {
            let mut received = [0u8; 4];
            match st.staging.pending().get(..pdu::DIGEST_LEN) {
                Some(bytes) => received.copy_from_slice(bytes),
                None => {
                    st.data = Some(d);
                    return Step::NeedStaging;
                }
            }
            st.staging.consume(pdu::DIGEST_LEN);
            let data = st.reqs[slot]
                .as_ref()
                .and_then(|r| r.buf.as_ref())
                .map(|b| &b.as_slice()[d.base..d.base + d.len]);
            let bad = data.is_some_and(|data| pdu::verify_data_digest(data, received).is_err());
            if bad {
                // NVMe/TCP has no fatal error for this: the command fails with a transient
                // transport error (the host may retry) and the connection carries on.
                tracing::warn!("connection {}: data digest mismatch", self.id);
                if let Some(r) = st.reqs[slot].as_mut() {
                    r.status = Status::TRANSIENT_TRANSPORT_ERROR;
                }
            }
        }
        if d.h2c {
            let Some(r) = st.reqs[slot].as_mut() else {
                return Step::Stop;
            };
            r.h2c_received += d.len as u32;
            if r.h2c_received < r.xfer_len {
                return Step::Again;
            }
        }
        Step::Execute(d.slot)
    }

    fn execute(&self, slot: u16) {
        let conn = self.rc();
        let (opcode, is_connected, qid) = {
            let st = self.st.borrow();
            let Some(r) = st.reqs.get(slot as usize).and_then(Option::as_ref) else {
                return;
            };
            if let Some(q) = &st.queue {
                self.note_host_alive(&q.ctrl);
            }
            if !r.status.is_success() {
                let status = r.status;
                drop(st);
                return self.respond(slot, status, 0);
            }
            (
                r.sqe[0],
                st.queue.is_some(),
                st.queue.as_ref().map_or(0, |q| q.qid),
            )
        };
        if opcode == crate::spec::opcodes::admin::FABRICS {
            admin::fabrics(&conn, slot);
        } else if !is_connected {
            self.respond(slot, Status::COMMAND_SEQUENCE_ERROR, 0);
        } else if qid == 0 {
            admin::execute(&conn, slot);
        } else {
            io_cmd::execute(&conn, slot);
        }
    }

    /// Any command proves the host alive (traffic-based keep-alive, as Linux nvmet does): a
    /// busy or slow host whose Keep Alive waits behind I/O must not lose its controller. The
    /// shared timestamp is refreshed at most every 250 ms per queue, not per I/O.
    fn note_host_alive(&self, ctrl: &Controller) {
        let now = oxstor_reactor::clock::ticks_as_ns(oxstor_reactor::now_ticks());
        if now.saturating_sub(self.alive_ns.get()) > 250_000_000 {
            self.alive_ns.set(now);
            ctrl.keep_alive();
        }
    }

    // ---- helpers used by the command modules

    pub fn with_request<R>(&self, slot: u16, f: impl FnOnce(&mut Request) -> R) -> Option<R> {
        let mut st = self.st.borrow_mut();
        st.reqs
            .get_mut(slot as usize)
            .and_then(Option::as_mut)
            .map(f)
    }

    pub fn queue(&self) -> Option<(Arc<Controller>, Arc<Subsystem>, u16)> {
        let st = self.st.borrow();
        st.queue
            .as_ref()
            .map(|q| (q.ctrl.clone(), q.subsystem.clone(), q.qid))
    }

    pub fn bind_queue(&self, q: Queue) {
        let mut st = self.st.borrow_mut();
        st.sqhd = 0;
        st.queue = Some(q);
    }

    pub fn negotiated(&self) -> Negotiated {
        self.st.borrow().neg
    }

    pub fn peer(&self) -> String {
        self.sock
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    }

    /// The cached namespace `nsid` for this I/O queue, refreshing the cache when the
    /// subsystem's namespaces changed.
    pub fn namespace(&self, nsid: u32) -> Option<Rc<CachedNs>> {
        let mut st = self.st.borrow_mut();
        let sub = st.queue.as_ref()?.subsystem.clone();
        let generation = sub.generation();
        if st.ns_generation != generation {
            st.ns_cache.clear();
            st.ns_generation = generation;
        }
        let idx = nsid as usize;
        if let Some(Some(ns)) = st.ns_cache.get(idx) {
            return Some(ns.clone());
        }
        let ns = sub.namespace(nsid)?;
        let channel = ns.entry.channel().ok()?;
        let g = ns.entry.bdev.geometry();
        let cached = Rc::new(CachedNs {
            channel,
            block_size: g.block_size,
            num_blocks: g.num_blocks,
            configured_read_only: ns.read_only,
        });
        if idx < 4096 {
            if st.ns_cache.len() <= idx {
                st.ns_cache.resize(idx + 1, None);
            }
            st.ns_cache[idx] = Some(cached.clone());
        }
        Some(cached)
    }

    pub fn take_io(&self) -> Option<Box<BdevIo>> {
        self.st.borrow_mut().io_pool.pop()
    }

    pub fn io_started(&self) {
        self.st.borrow_mut().outstanding += 1;
        stat(|s| s.pending_bdev_io += 1);
    }

    /// Completes a command with a response capsule.
    pub fn respond(&self, slot: u16, status: Status, result: u64) {
        let mut st = self.st.borrow_mut();
        self.respond_in(&mut st, slot, status, result);
    }

    fn respond_in(&self, st: &mut State, slot: u16, status: Status, result: u64) {
        let Some(req) = st.reqs.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        st.free.push(slot);
        self.push_resp(st, req.cid, status, result);
    }

    fn push_resp(&self, st: &mut State, cid: u16, status: Status, result: u64) {
        let mut c = Completion::new(cid, status).with_result_u64(result);
        c.sq_head = st.sqhd;
        c.sq_id = st.queue.as_ref().map_or(0, |q| q.qid);
        let neg = st.neg;
        push_hdr(st, |b| pdu::encode_capsule_resp(&c, &neg, b));
        stat(|s| s.completed_nvme_io += 1);
        self.mark_dirty();
    }

    /// Completes a command by sending `data` to the host, then (unless C2H success applies)
    /// a response capsule.
    pub fn respond_data(&self, slot: u16, data: TxSeg, status: Status, result: u64) {
        let mut st = self.st.borrow_mut();
        let Some(req) = st.reqs.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        st.free.push(slot);
        let len = data.bytes().len();
        let success = status.is_success() && result == 0 && self.opts.c2h_success;
        let c2h = DataPdu {
            cccid: req.cid,
            ttag: 0,
            data_offset: 0,
            data_len: len as u32,
            last: true,
            success,
        };
        let neg = st.neg;
        push_hdr(&mut st, |b| c2h.encode_c2h(&neg, b));
        let digest = (neg.data_digest && len > 0).then(|| pdu::data_digest(data.bytes()));
        st.tx.push(data);
        if let Some(d) = digest {
            st.tx.push(TxSeg::Digest(d.to_le_bytes()));
        }
        if success {
            stat(|s| s.completed_nvme_io += 1);
            self.mark_dirty();
        } else {
            self.push_resp(&mut st, req.cid, status, result);
        }
    }

    /// Parks an Asynchronous Event Request (its slot is released; the CID is remembered).
    pub fn park(&self, slot: u16) {
        let mut st = self.st.borrow_mut();
        if st
            .reqs
            .get_mut(slot as usize)
            .and_then(Option::take)
            .is_some()
        {
            st.free.push(slot);
        }
    }

    pub fn complete_parked(&self, cid: u16, status: Status, result: u64) {
        let mut st = self.st.borrow_mut();
        if st.phase == Phase::Closing {
            return;
        }
        self.push_resp(&mut st, cid, status, result);
    }

    /// Called when a bdev I/O of this connection finished and its descriptor is free again.
    pub fn io_finished(&self, mut io: Box<BdevIo>) {
        let closing = {
            let mut st = self.st.borrow_mut();
            st.outstanding -= 1;
            io.buf.take();
            st.io_pool.push(io);
            st.phase == Phase::Closing
        };
        stat(|s| s.pending_bdev_io = s.pending_bdev_io.saturating_sub(1));
        if closing {
            drop_closing(self);
        }
    }

    pub fn io_finished_keep_buffer(&self) {
        let closing = {
            let mut st = self.st.borrow_mut();
            st.outstanding -= 1;
            st.phase == Phase::Closing
        };
        stat(|s| s.pending_bdev_io = s.pending_bdev_io.saturating_sub(1));
        if closing {
            drop_closing(self);
        }
    }

    pub fn is_closing(&self) -> bool {
        self.st.borrow().phase == Phase::Closing
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

    fn fatal(&self, err: PduError, offending: Offending) {
        stat(|s| s.pdu_errors += 1);
        tracing::warn!(
            "connection {} ({}): {err}; terminating it",
            self.id,
            self.peer()
        );
        let mut st = self.st.borrow_mut();
        if let Some(term) = TermReq::for_error(&err) {
            let mut hdr = Hdr {
                bytes: [0; HDR_MAX],
                len: 0,
            };
            let copied;
            let offending: &[u8] = match &offending {
                Offending::Copied(bytes, len) => &bytes[..*len],
                Offending::Consumed { back, len } => {
                    copied = st.staging.before(*back, *len).to_vec();
                    &copied
                }
            };
            if let Ok(n) = term.encode(Role::Controller, offending, &mut hdr.bytes) {
                hdr.len = n;
                st.tx.push(TxSeg::Hdr(hdr));
            }
        }
        st.close_after_send = true;
        drop(st);
        self.mark_dirty();
    }

    /// Ends the connection and the queue it carried.
    pub fn close(&self, why: &str) {
        {
            let mut st = self.st.borrow_mut();
            if st.phase == Phase::Closing {
                return;
            }
            st.phase = Phase::Closing;
        }
        tracing::debug!("connection {}: {why}", self.id);
        self.sock.close();
        let queue = self.st.borrow_mut().queue.take();
        if let Some(q) = queue {
            if q.qid == 0 {
                stat(|s| s.current_admin_qpairs = s.current_admin_qpairs.saturating_sub(1));
                controller::destroy(&q.ctrl, "admin queue closed");
            } else {
                stat(|s| s.current_io_qpairs = s.current_io_qpairs.saturating_sub(1));
                q.ctrl.remove_io_queue(self.id);
            }
        }
        drop_closing(self);
    }
}

/// Forgets a closing connection once nothing of it is in flight.
fn drop_closing(conn: &Conn) {
    let done = {
        let st = conn.st.borrow();
        st.phase == Phase::Closing && st.outstanding == 0 && !st.tx_busy
    };
    if done {
        conn.sock.close();
        CONNS.with(|c| c.borrow_mut().remove(&conn.id));
    }
}

fn push_hdr(st: &mut State, f: impl FnOnce(&mut [u8]) -> Result<usize, pdu::EncodeError>) {
    let mut hdr = Hdr {
        bytes: [0; HDR_MAX],
        len: 0,
    };
    match f(&mut hdr.bytes) {
        Ok(n) => {
            hdr.len = n;
            st.tx.push(TxSeg::Hdr(hdr));
        }
        Err(e) => tracing::error!("cannot encode a PDU header: {e}"),
    }
}

impl SocketEvents<TxSeg> for Conn {
    fn received(&self, buf: RecvBuf, result: i32) {
        match buf.mem {
            RecvMem::Heap(staging) => {
                self.st.borrow_mut().staging.returned(staging, result);
                if result <= 0 {
                    self.close(if result == 0 {
                        "host disconnected"
                    } else {
                        "receive failed"
                    });
                    return;
                }
            }
            RecvMem::Dma(dma) => {
                let ok = {
                    let mut st = self.st.borrow_mut();
                    let slot = st.data.as_ref().map(|d| d.slot as usize);
                    if let Some(r) = slot
                        .and_then(|s| st.reqs.get_mut(s))
                        .and_then(Option::as_mut)
                    {
                        r.buf = Some(dma);
                    }
                    match st.data.as_mut() {
                        Some(d) if result > 0 && result as usize == buf.len => {
                            d.done += result as usize;
                            true
                        }
                        _ => false,
                    }
                };
                if !ok {
                    self.close("host disconnected in the middle of a PDU");
                    return;
                }
            }
        }
        self.pump();
    }

    fn sent(&self, mut segments: Vec<TxSeg>, result: i32) {
        let mut recycled = Vec::new();
        for seg in segments.drain(..) {
            if let TxSeg::Io(io) = seg {
                recycled.push(io);
            }
        }
        let (close, more) = {
            let mut st = self.st.borrow_mut();
            st.tx_busy = false;
            st.tx_spare = segments;
            for mut io in recycled {
                io.buf.take();
                st.io_pool.push(io);
            }
            (result < 0 || st.close_after_send, !st.tx.is_empty())
        };
        if close {
            self.close(if result < 0 {
                "send failed"
            } else {
                "terminated after a fatal PDU error"
            });
        } else if more {
            self.send_queued();
        }
        if self.is_closing() {
            drop_closing(self);
        }
    }
}

impl oxstor_reactor::net::Flush for Conn {
    fn flush(&self) {
        self.dirty.set(false);
        self.send_queued();
    }
}

impl IoDone for Conn {
    fn io_done(&self, io: Box<BdevIo>, tag: u64) {
        io_cmd::completed(self, io, tag as u16);
    }
}
