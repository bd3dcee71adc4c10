//! An established connection to one peer: its two TCP streams on the home core's io_uring.
//!
//! The *data* stream carries writes, barriers, resync data, bitmaps and verify traffic; the
//! *meta* stream carries acks and pings, so an ack never queues behind bulk data. Each stream
//! batches what is queued during one reactor iteration into one `sendmsg`, and parses what
//! arrives with [`crate::wire`]: each receive fills a staging buffer with as many packets as
//! have arrived (acks, barriers, small writes: one receive for many); block data is copied
//! from it into a DMA buffer that goes on to the disk, or, for large writes not all there
//! yet, received straight into that buffer. Packets are handed to the resource's dispatcher;
//! any error (socket, parse, protocol) ends the link, and the resource decides what that means.

use crate::options::Protocol;
use crate::wire::{Cmd, Header, Packet, HEADER_LEN};
use oxstor_bdev::IoBuf;
use oxstor_reactor::net::{
    flush_later, Flush, RecvBuf, RecvMem, Segment, Socket, SocketEvents, TcpSocket,
};
use oxstor_reactor::{DmaBuf, PollStatus, PollerId};
use std::cell::{Cell, RefCell};
use std::os::fd::OwnedFd;
use std::rc::{Rc, Weak};
use std::time::Duration;

/// Bytes queued on a stream: a packet header+body, or block data shared with a local write,
/// or block data read for the peer.
pub enum Seg {
    Bytes(Vec<u8>),
    Shared(Rc<IoBuf>),
    Dma(DmaBuf),
}

impl Segment for Seg {
    fn bytes(&self) -> &[u8] {
        match self {
            Seg::Bytes(b) => b,
            Seg::Shared(b) => b.as_slice(),
            Seg::Dma(d) => d.as_slice(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Data,
    Meta,
}

/// What the link reports to its owner (the resource, on the same core).
pub trait LinkEvents {
    /// A packet arrived; `data` holds the block data of Data/RsData. Returning `Err` ends the
    /// link with that reason.
    fn packet(
        &self,
        link: &Rc<Link>,
        kind: StreamKind,
        pkt: Packet,
        data: Option<DmaBuf>,
    ) -> Result<(), String>;
    /// Block data of these write requests is on the wire (protocol A's completion point).
    fn data_sent(&self, link: &Rc<Link>, ids: &[u64]);
    /// The link is gone.
    fn lost(&self, link: &Rc<Link>, reason: &str);
    /// Called now and then: a reason to give up on the peer (answers overdue), if any.
    fn overdue(&self) -> Option<String>;
}

/// Bytes asked of the kernel per receive: many small packets (acks, 4 KiB writes and their
/// barriers) arrive in one receive instead of two or three receives each.
const RX_STAGING: usize = 64 << 10;

enum Stage {
    /// Receiving into the staging buffer; packets are parsed out of it.
    Staging,
    /// Receiving the rest of a packet's block data straight into its DMA buffer.
    Data(Packet),
}

/// Received bytes not yet parsed: `buf[start..end]`. `buf` is `None` while a staging receive
/// owns it.
struct Staging {
    buf: Option<Box<[u8]>>,
    start: usize,
    end: usize,
}

pub struct Stream {
    kind: StreamKind,
    link: RefCell<Weak<Link>>,
    sock: Rc<TcpSocket<Seg>>,
    queue: RefCell<Vec<Seg>>,
    queued_ids: RefCell<Vec<u64>>,
    sending_ids: RefCell<Vec<u64>>,
    sending: Cell<bool>,
    flush_asked: Cell<bool>,
    stage: RefCell<Stage>,
    rx: RefCell<Staging>,
    paused: Cell<bool>,
    /// Parsing stopped because the stream is paused (no receive is in flight).
    parked: Cell<bool>,
}

impl Stream {
    fn new(kind: StreamKind, fd: OwnedFd) -> Rc<Stream> {
        let peer = oxstor_reactor::net::peer_of(&fd);
        let s = Rc::new(Stream {
            kind,
            link: RefCell::new(Weak::new()),
            sock: TcpSocket::new(fd, peer),
            queue: RefCell::new(Vec::new()),
            queued_ids: RefCell::new(Vec::new()),
            sending_ids: RefCell::new(Vec::new()),
            sending: Cell::new(false),
            flush_asked: Cell::new(false),
            stage: RefCell::new(Stage::Staging),
            rx: RefCell::new(Staging {
                buf: Some(vec![0u8; RX_STAGING].into_boxed_slice()),
                start: 0,
                end: 0,
            }),
            paused: Cell::new(false),
            parked: Cell::new(false),
        });
        let weak: Weak<dyn SocketEvents<Seg>> =
            Rc::downgrade(&(s.clone() as Rc<dyn SocketEvents<Seg>>));
        s.sock.set_events(weak);
        s
    }

    fn link(&self) -> Option<Rc<Link>> {
        self.link.borrow().upgrade()
    }

    /// Queues a packet; it goes out at the end of this reactor iteration.
    pub fn send(self: &Rc<Self>, pkt: &Packet) {
        self.queue.borrow_mut().push(Seg::Bytes(pkt.encode(0, 0)));
        self.ask_flush();
    }

    /// Queues a Data/RsData packet with its block data; `id` is reported by `data_sent`.
    pub fn send_with_data(self: &Rc<Self>, pkt: &Packet, data: Seg, id: Option<u64>) {
        let len = data.bytes().len() as u32;
        let mut q = self.queue.borrow_mut();
        q.push(Seg::Bytes(pkt.encode(0, len)));
        q.push(data);
        drop(q);
        if let Some(id) = id {
            self.queued_ids.borrow_mut().push(id);
        }
        self.ask_flush();
    }

    fn ask_flush(self: &Rc<Self>) {
        if !self.flush_asked.replace(true) {
            flush_later(self.clone());
        }
    }

    /// Parses and delivers every whole packet in the staging buffer, then receives more.
    /// Block data that is not all there yet is received straight into its DMA buffer.
    fn pump(&self) {
        loop {
            if self.paused.get() {
                self.parked.set(true);
                return;
            }
            if self.link().is_none_or(|l| l.dead.get()) {
                return;
            }
            match self.next_packet() {
                Ok(Some((pkt, data))) => {
                    if !self.deliver(pkt, data) {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => return self.fail(e),
            }
        }
    }

    /// The next whole packet in the staging buffer, or `None` once a receive is started (for
    /// more staged bytes or for the rest of a packet's block data).
    fn next_packet(&self) -> Result<Option<(Packet, Option<DmaBuf>)>, String> {
        let mut rx = self.rx.borrow_mut();
        let rx = &mut *rx;
        let Some(buf) = rx.buf.as_mut() else {
            return Ok(None);
        };
        let avail = rx.end - rx.start;
        let mut need = HEADER_LEN;
        if avail >= HEADER_LEN {
            let mut arr = [0u8; HEADER_LEN];
            arr.copy_from_slice(&buf[rx.start..rx.start + HEADER_LEN]);
            let hdr = Header::parse(&arr).map_err(|e| format!("{:?} stream: {e}", self.kind))?;
            let body = if hdr.cmd.carries_data() {
                hdr.cmd.body_len()
            } else {
                hdr.len as usize
            };
            need = HEADER_LEN + body;
            if avail >= need {
                let at = rx.start + HEADER_LEN;
                let pkt = Packet::parse(&hdr, &buf[at..at + body])
                    .map_err(|e| format!("{:?} stream: {e}", self.kind))?;
                if !hdr.cmd.carries_data() {
                    rx.start += need;
                    return Ok(Some((pkt, None)));
                }
                let len = hdr.len as usize - body;
                if len == 0 {
                    return Err(format!("{:?} without data", hdr.cmd));
                }
                let Some(mut dma) = DmaBuf::alloc(len) else {
                    return Err(format!("no {len}-byte buffer for incoming data"));
                };
                let have = (avail - need).min(len);
                let from = rx.start + need;
                dma.as_mut_slice()[..have].copy_from_slice(&buf[from..from + have]);
                if have == len {
                    rx.start += need + len;
                    return Ok(Some((pkt, Some(dma))));
                }
                // The staging buffer is used up; the rest goes straight to the DMA buffer.
                rx.start = 0;
                rx.end = 0;
                *self.stage.borrow_mut() = Stage::Data(pkt);
                self.sock.recv(
                    RecvBuf {
                        mem: RecvMem::Dma(dma),
                        offset: have,
                        len: len - have,
                    },
                    true,
                );
                return Ok(None);
            }
        }
        // Not a whole header and body yet: make room and receive more.
        if rx.start > 0 {
            buf.copy_within(rx.start..rx.end, 0);
            rx.end -= rx.start;
            rx.start = 0;
        }
        if need > buf.len() {
            // A large variable body (a bitmap): grow to hold it.
            let mut bigger = vec![0u8; need].into_boxed_slice();
            bigger[..rx.end].copy_from_slice(&buf[..rx.end]);
            *buf = bigger;
        }
        let Some(buf) = rx.buf.take() else {
            return Ok(None);
        };
        let len = buf.len() - rx.end;
        *self.stage.borrow_mut() = Stage::Staging;
        // Waiting for whatever the peer sends next is passive.
        self.sock.recv(
            RecvBuf {
                mem: RecvMem::Heap(buf),
                offset: rx.end,
                len,
            },
            false,
        );
        Ok(None)
    }

    /// Stops reading after the current packet (a receiver draining an epoch).
    pub fn pause(&self) {
        self.paused.set(true);
    }

    pub fn resume(self: &Rc<Self>) {
        self.paused.set(false);
        if self.parked.replace(false) {
            // Parse on in the next iteration, not from here: the caller (a disk completion
            // finishing an epoch) may still hold state that delivering a packet touches.
            let me = Rc::downgrade(self);
            oxstor_reactor::reactor::schedule_after(Duration::ZERO, move || {
                if let Some(s) = me.upgrade() {
                    s.pump();
                }
            });
        }
    }

    fn fail(&self, reason: String) {
        if let Some(l) = self.link() {
            l.fail(&reason);
        }
    }

    /// Hands a packet to the owner; whether the link is still alive.
    fn deliver(&self, pkt: Packet, data: Option<DmaBuf>) -> bool {
        let Some(link) = self.link() else {
            return false;
        };
        if link.dead.get() {
            return false;
        }
        link.last_rx_ns.set(oxstor_reactor::clock::now_ns());
        let Some(ev) = link.events.upgrade() else {
            return false;
        };
        if let Err(reason) = ev.packet(&link, self.kind, pkt, data) {
            link.fail(&reason);
            return false;
        }
        !link.dead.get()
    }
}

impl SocketEvents<Seg> for Stream {
    fn received(&self, mut buf: RecvBuf, result: i32) {
        if result <= 0 {
            let why = if result == 0 {
                "peer closed the connection".to_string()
            } else {
                format!("receive failed: errno {}", -result)
            };
            return self.fail(format!("{:?} stream: {why}", self.kind));
        }
        let got = result as usize;
        let stage = std::mem::replace(&mut *self.stage.borrow_mut(), Stage::Staging);
        match (stage, buf.mem) {
            (Stage::Staging, RecvMem::Heap(b)) => {
                let mut rx = self.rx.borrow_mut();
                rx.end = buf.offset + got.min(buf.len);
                rx.buf = Some(b);
            }
            (Stage::Data(pkt), mem) if got < buf.len => {
                // A short read: ask for the rest of the block data.
                *self.stage.borrow_mut() = Stage::Data(pkt);
                buf.mem = mem;
                buf.offset += got;
                buf.len -= got;
                self.sock.recv(buf, true);
                return;
            }
            (Stage::Data(pkt), RecvMem::Dma(dma)) => {
                if !self.deliver(pkt, Some(dma)) {
                    return;
                }
            }
            _ => return self.fail(format!("{:?} stream: unexpected receive", self.kind)),
        }
        self.pump();
    }

    fn sent(&self, segments: Vec<Seg>, result: i32) {
        // Release the shared write buffers before `data_sent`: under protocol A that
        // completes the writes, which take their buffers back only if no one else holds them.
        drop(segments);
        self.sending.set(false);
        let ids = std::mem::take(&mut *self.sending_ids.borrow_mut());
        if result < 0 {
            return self.fail(format!(
                "{:?} stream: send failed: errno {}",
                self.kind, -result
            ));
        }
        if let Some(link) = self.link() {
            if !ids.is_empty() && !link.dead.get() {
                if let Some(ev) = link.events.upgrade() {
                    ev.data_sent(&link, &ids);
                }
            }
        }
        if !self.queue.borrow().is_empty() {
            self.flush_now();
        }
    }
}

impl Stream {
    fn flush_now(&self) {
        if self.sending.get() {
            return;
        }
        let segs = std::mem::take(&mut *self.queue.borrow_mut());
        if segs.is_empty() {
            return;
        }
        *self.sending_ids.borrow_mut() = std::mem::take(&mut *self.queued_ids.borrow_mut());
        self.sending.set(true);
        self.sock.send(segs);
    }
}

impl Flush for Stream {
    fn flush(&self) {
        self.flush_asked.set(false);
        self.flush_now();
    }
}

pub struct Link {
    pub peer_node_id: u8,
    pub protocol: Protocol,
    pub data: Rc<Stream>,
    pub meta: Rc<Stream>,
    events: Weak<dyn LinkEvents>,
    pub dead: Cell<bool>,
    last_rx_ns: Cell<u64>,
    ping_sent_ns: Cell<Option<u64>>,
    ping_int: Duration,
    ping_timeout: Duration,
    poller: Cell<Option<PollerId>>,
    /// Told when the link dies (the connector thread waits on it to reconnect).
    lost_tx: RefCell<Option<std::sync::mpsc::Sender<String>>>,
}

impl Link {
    /// Adopts the two connected sockets on the calling (home) reactor and starts receiving.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        peer_node_id: u8,
        protocol: Protocol,
        data_fd: OwnedFd,
        meta_fd: OwnedFd,
        events: Weak<dyn LinkEvents>,
        ping_int: Duration,
        ping_timeout: Duration,
        lost_tx: std::sync::mpsc::Sender<String>,
    ) -> Rc<Link> {
        let link = Rc::new(Link {
            peer_node_id,
            protocol,
            data: Stream::new(StreamKind::Data, data_fd),
            meta: Stream::new(StreamKind::Meta, meta_fd),
            events,
            dead: Cell::new(false),
            last_rx_ns: Cell::new(oxstor_reactor::clock::now_ns()),
            ping_sent_ns: Cell::new(None),
            ping_int,
            ping_timeout,
            poller: Cell::new(None),
            lost_tx: RefCell::new(Some(lost_tx)),
        });
        *link.data.link.borrow_mut() = Rc::downgrade(&link);
        *link.meta.link.borrow_mut() = Rc::downgrade(&link);
        let weak = Rc::downgrade(&link);
        let period =
            (ping_timeout / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
        let id = oxstor_reactor::reactor::register_timed_poller("repl_ping", period, move || {
            weak.upgrade().map_or(PollStatus::Idle, |l| l.tick())
        });
        link.poller.set(Some(id));
        link
    }

    /// Starts the receive loops; called once the owner holds the link.
    pub fn begin_receiving(&self) {
        self.data.pump();
        self.meta.pump();
    }

    fn tick(self: &Rc<Self>) -> PollStatus {
        if self.dead.get() {
            return PollStatus::Idle;
        }
        let now = oxstor_reactor::clock::now_ns();
        if let Some(sent) = self.ping_sent_ns.get() {
            if now.saturating_sub(sent) > self.ping_timeout.as_nanos() as u64 {
                self.fail(&format!(
                    "PingAck did not arrive in time ({} ms)",
                    self.ping_timeout.as_millis()
                ));
                return PollStatus::Busy;
            }
        } else if now.saturating_sub(self.last_rx_ns.get()) > self.ping_int.as_nanos() as u64 {
            self.ping_sent_ns.set(Some(now));
            self.meta.send(&Packet::Ping);
        }
        if let Some(why) = self.events.upgrade().and_then(|e| e.overdue()) {
            self.fail(&why);
            return PollStatus::Busy;
        }
        PollStatus::Idle
    }

    pub fn ping_acked(&self) {
        self.ping_sent_ns.set(None);
    }

    /// Ends the link: closes both streams and tells the owner once.
    pub fn fail(self: &Rc<Self>, reason: &str) {
        if self.dead.replace(true) {
            return;
        }
        self.data.sock.close();
        self.meta.sock.close();
        if let Some(id) = self.poller.take() {
            oxstor_reactor::unregister_poller(id);
        }
        if let Some(ev) = self.events.upgrade() {
            ev.lost(self, reason);
        }
        if let Some(tx) = self.lost_tx.borrow_mut().take() {
            let _ = tx.send(reason.to_string());
        }
    }

    pub fn stream(&self, kind: StreamKind) -> &Rc<Stream> {
        match kind {
            StreamKind::Data => &self.data,
            StreamKind::Meta => &self.meta,
        }
    }
}

/// Whether a command belongs on the meta stream.
pub fn is_meta(cmd: Cmd) -> bool {
    matches!(
        cmd,
        Cmd::BarrierAck
            | Cmd::RecvAck
            | Cmd::WriteAck
            | Cmd::NegAck
            | Cmd::Ping
            | Cmd::PingAck
            | Cmd::RsWriteAck
    )
}
