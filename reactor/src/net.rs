//! Network transports: TCP sockets driven by the reactor's io_uring, behind a small trait so a
//! user-space TCP stack can stand in for the kernel's without touching protocol code.
//!
//! The API is ownership-passing, so it is safe to use: a receive takes an owned buffer
//! ([`RecvBuf`]) and hands it back with the byte count; a send takes a batch of owned
//! [`Segment`]s (PDU headers, the DMA buffers of read data) and hands the batch back once every
//! byte is on the wire. A whole batch goes out in one `sendmsg`, which is how several responses
//! produced in one loop iteration cost a single system call. Short sends are continued here;
//! the protocol layer only ever sees "all sent" or an error.

use crate::dma::DmaBuf;
use crate::reactor::with_ring;
use crate::ring::{CompletionHandler, HandlerId};
use io_uring::{opcode, types};
use std::cell::{Cell, RefCell};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::{Rc, Weak};

/// Bytes a socket can send; owned by the socket until the send completes.
pub trait Segment: 'static {
    fn bytes(&self) -> &[u8];
}

/// The memory a receive lands in: a connection's staging buffer, or the DMA buffer that will
/// go to the bdev (so large write data is received in place).
pub enum RecvMem {
    Heap(Box<[u8]>),
    Dma(DmaBuf),
}

/// A receive target: `mem[offset .. offset + len]`.
pub struct RecvBuf {
    pub mem: RecvMem,
    pub offset: usize,
    pub len: usize,
}

impl RecvBuf {
    fn range_ptr(&mut self) -> Option<*mut u8> {
        let slice: &mut [u8] = match &mut self.mem {
            RecvMem::Heap(b) => b,
            RecvMem::Dma(d) => d.as_mut_slice(),
        };
        let end = self.offset.checked_add(self.len)?;
        slice.get_mut(self.offset..end).map(|s| s.as_mut_ptr())
    }
}

/// What a socket reports to its owner.
pub trait SocketEvents<S: Segment> {
    /// `result` is the byte count (0 = peer closed) or a negative errno.
    fn received(&self, buf: RecvBuf, result: i32);
    /// Every byte of `segments` was sent (`result` ≥ 0), or the send failed (negative errno).
    fn sent(&self, segments: Vec<S>, result: i32);
}

/// A connected byte stream.
pub trait Socket<S: Segment> {
    fn set_events(&self, events: Weak<dyn SocketEvents<S>>);
    /// Starts one receive; `waitall` asks for the whole range before completing.
    fn recv(&self, buf: RecvBuf, waitall: bool);
    /// Starts sending `segments` in order. One batch in flight at a time.
    fn send(&self, segments: Vec<S>);
    /// Shuts the connection down; pending operations complete with 0 or an error.
    fn close(&self);
    fn peer_addr(&self) -> Option<SocketAddr>;
}

const TAG_RECV: u64 = 0;
const TAG_SEND: u64 = 1;

struct SendState<S> {
    segments: Vec<S>,
    sent: usize,
    total: usize,
}

/// The kernel-visible part of a send. Kept across sends so a batch allocates nothing.
struct SendMsg {
    iovecs: Vec<libc::iovec>,
    msg: Box<libc::msghdr>,
}

/// A kernel TCP socket on this core's io_uring.
pub struct TcpSocket<S: Segment> {
    fd: RefCell<Option<OwnedFd>>,
    raw_fd: i32,
    handler: Cell<Option<HandlerId>>,
    events: RefCell<Option<Weak<dyn SocketEvents<S>>>>,
    recv_buf: RefCell<Option<RecvBuf>>,
    send: RefCell<Option<SendState<S>>>,
    send_msg: RefCell<SendMsg>,
    inflight: Cell<u32>,
    closed: Cell<bool>,
    peer: Option<SocketAddr>,
}

impl<S: Segment> TcpSocket<S> {
    /// Adopts a connected socket on the calling reactor.
    pub fn new(fd: OwnedFd, peer: Option<SocketAddr>) -> Rc<Self> {
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads one c_int from a live local; the fd is owned by us.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        let sock = Rc::new(TcpSocket {
            raw_fd: fd.as_raw_fd(),
            fd: RefCell::new(Some(fd)),
            handler: Cell::new(None),
            events: RefCell::new(None),
            recv_buf: RefCell::new(None),
            send: RefCell::new(None),
            send_msg: RefCell::new(SendMsg {
                iovecs: Vec::with_capacity(64),
                // SAFETY: msghdr is plain old data; all-zero is its documented empty value.
                msg: Box::new(unsafe { std::mem::zeroed() }),
            }),
            inflight: Cell::new(0),
            closed: Cell::new(false),
            peer,
        });
        let id = with_ring(|r| r.register_handler(sock.clone()));
        sock.handler.set(Some(id));
        sock
    }

    /// Connects to `addr` (blocking connect; used by initiators on the control path).
    pub fn connect(addr: SocketAddr) -> std::io::Result<Rc<Self>> {
        let stream = std::net::TcpStream::connect(addr)?;
        Ok(Self::new(OwnedFd::from(stream), Some(addr)))
    }

    fn events(&self) -> Option<Rc<dyn SocketEvents<S>>> {
        self.events.borrow().as_ref().and_then(Weak::upgrade)
    }

    fn push(&self, entry: io_uring::squeue::Entry, tag: u64, passive: bool) {
        let Some(id) = self.handler.get() else { return };
        self.inflight.set(self.inflight.get() + 1);
        // SAFETY: the entry points into `recv_buf` or `send`/`send_msg` (segments, iovecs, msghdr),
        // which this socket owns and does not touch until the completion for `tag` arrives;
        // the ring's handler table keeps the socket alive until then, and `fd` is closed only
        // once nothing is in flight.
        with_ring(|r| unsafe {
            if passive {
                r.push_passive(entry, id, tag)
            } else {
                r.push(entry, id, tag)
            }
        });
    }

    fn submit_send(&self) {
        let entry = {
            let guard = self.send.borrow();
            let Some(st) = guard.as_ref() else { return };
            let mut m = self.send_msg.borrow_mut();
            let m = &mut *m;
            // Rebuild the iovec list from the first unsent byte.
            m.iovecs.clear();
            let mut skip = st.sent;
            for seg in &st.segments {
                let b = seg.bytes();
                if skip >= b.len() {
                    skip -= b.len();
                    continue;
                }
                m.iovecs.push(libc::iovec {
                    iov_base: b[skip..].as_ptr() as *mut libc::c_void,
                    iov_len: b.len() - skip,
                });
                skip = 0;
            }
            m.msg.msg_iov = m.iovecs.as_mut_ptr();
            m.msg.msg_iovlen = m.iovecs.len();
            opcode::SendMsg::new(types::Fd(self.raw_fd), &*m.msg as *const libc::msghdr)
                .flags(libc::MSG_NOSIGNAL as u32)
                .build()
        };
        self.push(entry, TAG_SEND, false);
    }

    fn release_if_idle(&self) {
        if self.closed.get() && self.inflight.get() == 0 {
            self.fd.borrow_mut().take();
            if let Some(id) = self.handler.take() {
                with_ring(|r| r.unregister_handler(id));
            }
        }
    }
}

impl<S: Segment> Socket<S> for TcpSocket<S> {
    fn set_events(&self, events: Weak<dyn SocketEvents<S>>) {
        *self.events.borrow_mut() = Some(events);
    }

    fn recv(&self, mut buf: RecvBuf, waitall: bool) {
        if self.closed.get() {
            if let Some(ev) = self.events() {
                ev.received(buf, -libc::ECONNRESET);
            }
            return;
        }
        let Some(ptr) = buf.range_ptr() else {
            if let Some(ev) = self.events() {
                ev.received(buf, -libc::EINVAL);
            }
            return;
        };
        let len = buf.len as u32;
        *self.recv_buf.borrow_mut() = Some(buf);
        let flags = if waitall { libc::MSG_WAITALL } else { 0 };
        let entry = opcode::Recv::new(types::Fd(self.raw_fd), ptr, len)
            .flags(flags)
            .build();
        // Waiting for whatever the peer sends next is passive; the rest of a PDU whose
        // length is known (waitall) is on its way.
        self.push(entry, TAG_RECV, !waitall);
    }

    fn send(&self, segments: Vec<S>) {
        let total = segments.iter().map(|s| s.bytes().len()).sum();
        if self.send.borrow().is_some() {
            // One batch at a time: the kernel still reads the previous one's iovecs.
            if let Some(ev) = self.events() {
                ev.sent(segments, -libc::EBUSY);
            }
            return;
        }
        if self.closed.get() || total == 0 {
            if let Some(ev) = self.events() {
                ev.sent(segments, if total == 0 { 0 } else { -libc::EPIPE });
            }
            return;
        }
        *self.send.borrow_mut() = Some(SendState {
            segments,
            sent: 0,
            total,
        });
        self.submit_send();
    }

    fn close(&self) {
        if self.closed.replace(true) {
            return;
        }
        // SAFETY: shutdown on a descriptor we still own; errors (already closed) are harmless.
        unsafe { libc::shutdown(self.raw_fd, libc::SHUT_RDWR) };
        self.release_if_idle();
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }
}

impl<S: Segment> CompletionHandler for TcpSocket<S> {
    fn complete(&self, tag: u64, result: i32, _flags: u32) {
        self.inflight.set(self.inflight.get().saturating_sub(1));
        match tag {
            TAG_RECV => {
                let buf = self.recv_buf.borrow_mut().take();
                if let (Some(buf), Some(ev)) = (buf, self.events()) {
                    ev.received(buf, result);
                }
            }
            TAG_SEND => {
                let more = {
                    let mut guard = self.send.borrow_mut();
                    match guard.as_mut() {
                        Some(st) if result > 0 => {
                            st.sent += result as usize;
                            st.sent < st.total
                        }
                        _ => false,
                    }
                };
                if more && !self.closed.get() {
                    self.submit_send();
                } else {
                    let st = self.send.borrow_mut().take();
                    if let (Some(st), Some(ev)) = (st, self.events()) {
                        let r = if result < 0 {
                            result
                        } else if st.sent < st.total {
                            -libc::EPIPE
                        } else {
                            st.total as i32
                        };
                        ev.sent(st.segments, r);
                    }
                }
            }
            _ => {}
        }
        self.release_if_idle();
    }
}

/// A listening socket whose accepts run on this core's ring. Each accepted connection is
/// handed to `on_accept`, which typically forwards the fd to some reactor.
pub struct TcpAcceptor {
    listener: RefCell<Option<TcpListener>>,
    raw_fd: i32,
    handler: Cell<Option<HandlerId>>,
    on_accept: RefCell<Box<dyn FnMut(OwnedFd)>>,
    stopping: Cell<bool>,
    armed: Cell<bool>,
    local: SocketAddr,
}

impl TcpAcceptor {
    /// Binds `addr` and starts accepting. Must run on a reactor thread.
    pub fn bind(addr: SocketAddr, on_accept: Box<dyn FnMut(OwnedFd)>) -> std::io::Result<Rc<Self>> {
        let listener = TcpListener::bind(addr)?;
        let local = listener.local_addr()?;
        let acc = Rc::new(TcpAcceptor {
            raw_fd: listener.as_raw_fd(),
            listener: RefCell::new(Some(listener)),
            handler: Cell::new(None),
            on_accept: RefCell::new(on_accept),
            stopping: Cell::new(false),
            armed: Cell::new(false),
            local,
        });
        let id = with_ring(|r| r.register_handler(acc.clone()));
        acc.handler.set(Some(id));
        acc.arm();
        Ok(acc)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn arm(&self) {
        let Some(id) = self.handler.get() else { return };
        let entry = opcode::Accept::new(
            types::Fd(self.raw_fd),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .flags(libc::SOCK_CLOEXEC)
        .build();
        self.armed.set(true);
        // SAFETY: accept with null address pointers references no memory of ours; the
        // listening fd stays open until the acceptor has no accept in flight.
        with_ring(|r| unsafe { r.push_passive(entry, id, 0) });
    }

    /// Stops listening; the port is free once the pending accept has been cancelled.
    pub fn stop(&self) {
        if self.stopping.replace(true) {
            return;
        }
        // SAFETY: shutdown on our own listening fd wakes the pending accept with an error.
        unsafe { libc::shutdown(self.raw_fd, libc::SHUT_RDWR) };
        if !self.armed.get() {
            self.finish();
        }
    }

    fn finish(&self) {
        self.listener.borrow_mut().take();
        if let Some(id) = self.handler.take() {
            with_ring(|r| r.unregister_handler(id));
        }
    }
}

impl CompletionHandler for TcpAcceptor {
    fn complete(&self, _tag: u64, result: i32, _flags: u32) {
        self.armed.set(false);
        if self.stopping.get() {
            if result >= 0 {
                // SAFETY: a fresh fd from accept that nobody else owns; closed right away.
                drop(unsafe { OwnedFd::from_raw_fd(result) });
            }
            self.finish();
            return;
        }
        if result >= 0 {
            // SAFETY: accept returned a new descriptor that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(result) };
            (self.on_accept.borrow_mut())(fd);
        } else if result != -libc::EINTR && result != -libc::ECONNABORTED {
            tracing::warn!("accept on {} failed: errno {}", self.local, -result);
        }
        self.arm();
    }
}

/// The peer address of a connected socket fd.
pub fn peer_of(fd: &OwnedFd) -> Option<SocketAddr> {
    let dup = fd.try_clone().ok()?;
    let stream = std::net::TcpStream::from(dup);
    stream.peer_addr().ok()
}

/// A connection that batches what it sends: everything queued during one loop iteration goes
/// out in one send when the iteration's completions have all been handled.
pub trait Flush {
    /// Sends what has been queued (called once per iteration in which it asked to be).
    fn flush(&self);
}

thread_local! {
    static TO_FLUSH: std::cell::RefCell<Vec<Rc<dyn Flush>>> = const { std::cell::RefCell::new(Vec::new()) };
    static FLUSHER: Cell<bool> = const { Cell::new(false) };
}

/// Has `conn.flush()` run at the end of this loop iteration on this core. Callers keep their
/// own "already asked" flag, so each connection is listed once per iteration.
pub fn flush_later(conn: Rc<dyn Flush>) {
    if !FLUSHER.with(|f| f.replace(true)) {
        crate::reactor::register_poller("net_flush", flush_pending);
    }
    TO_FLUSH.with(|l| l.borrow_mut().push(conn));
}

fn flush_pending() -> crate::PollStatus {
    let pending = TO_FLUSH.with(|l| std::mem::take(&mut *l.borrow_mut()));
    if pending.is_empty() {
        return crate::PollStatus::Idle;
    }
    for conn in &pending {
        conn.flush();
    }
    // Give the (emptied) vector back so its capacity is reused next iteration.
    TO_FLUSH.with(|l| {
        let mut l = l.borrow_mut();
        if l.is_empty() {
            let mut v = pending;
            v.clear();
            *l = v;
        }
    });
    crate::PollStatus::Busy
}
