//! Getting connected: listeners, outgoing connects with back-off, and the handshake.
//!
//! This is control-path work on ordinary threads with blocking sockets; only a finished,
//! agreed connection moves to the resource's home core (as two file descriptors).
//!
//! Who dials: the node with the lower node-id connects, the other accepts. Every node
//! listens on its path's local address; one listener per address serves every resource and
//! peer using it, and routes a new socket by the `InitialData`/`InitialMeta` packet (resource
//! name and node ids). A socket from a node-id that is not configured is closed with a log
//! line. The handshake runs on the data socket: `Features` (protocol version range, node ids),
//! `Protocol` (must match), then each side's `Uuids`, `Sizes` and `State`.

use crate::wire::{self, Cmd, Features, Header, Initial, Packet, HEADER_LEN};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

pub fn read_packet(s: &mut TcpStream) -> Result<(Header, Packet), String> {
    let mut hb = [0u8; HEADER_LEN];
    s.read_exact(&mut hb)
        .map_err(|e| format!("reading a packet header: {e}"))?;
    let hdr = Header::parse(&hb).map_err(|e| e.to_string())?;
    if hdr.cmd.carries_data() {
        return Err(format!("unexpected {:?} during the handshake", hdr.cmd));
    }
    let mut body = vec![0u8; hdr.len as usize];
    s.read_exact(&mut body)
        .map_err(|e| format!("reading a {:?} body: {e}", hdr.cmd))?;
    let pkt = Packet::parse(&hdr, &body).map_err(|e| e.to_string())?;
    Ok((hdr, pkt))
}

pub fn write_packet(s: &mut TcpStream, p: &Packet) -> Result<(), String> {
    s.write_all(&p.encode(0, 0))
        .map_err(|e| format!("sending {:?}: {e}", p.cmd()))
}

type Arrival = (Cmd, TcpStream);

struct Listener {
    users: usize,
    stop: Arc<AtomicBool>,
}

/// Sockets accepted for (resource, dialing node-id) wait here for their connector thread.
static ROUTES: Mutex<Option<RouteMap>> = Mutex::new(None);
static NEXT_ROUTE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
static LISTENERS: Mutex<Option<HashMap<SocketAddr, Listener>>> = Mutex::new(None);

type RouteMap = HashMap<(String, u32), (u64, Sender<Arrival>)>;

fn routes() -> std::sync::MutexGuard<'static, Option<RouteMap>> {
    ROUTES.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts (or shares) the listener on `addr`.
pub fn listen(addr: SocketAddr) -> Result<(), String> {
    let mut all = LISTENERS.lock().unwrap_or_else(|p| p.into_inner());
    let map = all.get_or_insert_with(HashMap::new);
    if let Some(l) = map.get_mut(&addr) {
        l.users += 1;
        return Ok(());
    }
    // A listener just given up (unlisten) keeps its socket until its accept thread notices
    // the stop flag (≤ 20 ms): wait for it rather than fail a quick disconnect/connect.
    let deadline = Instant::now() + Duration::from_secs(1);
    let listener = loop {
        match TcpListener::bind(addr) {
            Ok(l) => break l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(format!("cannot listen on {addr}: {e}")),
        }
    };
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    std::thread::Builder::new()
        .name(format!("repl-listen-{}", addr.port()))
        .spawn(move || accept_loop(listener, stop2))
        .map_err(|e| e.to_string())?;
    map.insert(addr, Listener { users: 1, stop });
    Ok(())
}

pub fn unlisten(addr: SocketAddr) {
    let mut all = LISTENERS.lock().unwrap_or_else(|p| p.into_inner());
    let Some(map) = all.as_mut() else { return };
    if let Some(l) = map.get_mut(&addr) {
        l.users -= 1;
        if l.users == 0 {
            l.stop.store(true, Ordering::Relaxed);
            map.remove(&addr);
        }
    }
}

fn accept_loop(listener: TcpListener, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, from)) => {
                std::thread::spawn(move || route(stream, from));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                tracing::warn!("replication listener: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Reads the first packet of an accepted socket and hands it to whoever waits for it.
fn route(mut stream: TcpStream, from: SocketAddr) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
    let (cmd, init) = match read_packet(&mut stream) {
        Ok((h, Packet::InitialData(i))) => (h.cmd, i),
        Ok((h, Packet::InitialMeta(i))) => (h.cmd, i),
        Ok((h, _)) => {
            tracing::warn!(
                "replication connection from {from}: first packet is {:?}, not Initial; closed",
                h.cmd
            );
            return;
        }
        Err(e) => {
            tracing::warn!("replication connection from {from}: {e}; closed");
            return;
        }
    };
    let key = (init.resource.clone(), init.sender_node_id);
    let tx = routes()
        .as_ref()
        .and_then(|m| m.get(&key).map(|r| r.1.clone()));
    match tx {
        Some(tx) => {
            let _ = tx.send((cmd, stream));
        }
        None => tracing::warn!(
            "replication connection from {from}: resource '{}' has no peer with node-id {} here; closed",
            init.resource,
            init.sender_node_id
        ),
    }
}

/// What the connector needs from the resource and hands back to it.
pub struct PeerTarget {
    pub resource: String,
    pub my_node_id: u8,
    pub peer_node_id: u8,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub connect_int: Duration,
    pub protocol: Protocol,
}

use crate::wire::Protocol;

/// A connected, identified pair of sockets and the peer's handshake answers.
pub struct Handshaken {
    pub data: OwnedFd,
    pub meta: OwnedFd,
    pub peer_uuids: wire::Uuids,
    pub peer_sizes: wire::Sizes,
    pub peer_state: wire::State,
    pub peer_protocol: Protocol,
    /// What we sent, so the home core can check nothing changed before adopting the link.
    pub sent_uuids: wire::Uuids,
}

/// Our side of the handshake, computed on the home core.
pub struct LocalView {
    pub uuids: wire::Uuids,
    pub sizes: wire::Sizes,
    pub state: wire::State,
}

/// Connection attempts for one peer, until `stop`.
pub struct Connector {
    pub stop: Arc<AtomicBool>,
}

impl Connector {
    /// Runs the connect/handshake/adopt loop on its own thread. `local_view` snapshots our
    /// handshake answers on the home core; `adopt` installs the link there and returns a
    /// receiver that yields when the link dies (or an error if it refused the link, and
    /// whether to keep retrying).
    pub fn spawn(
        target: PeerTarget,
        local_view: impl Fn() -> Option<LocalView> + Send + 'static,
        adopt: impl Fn(Handshaken) -> Result<Receiver<String>, (String, bool)> + Send + 'static,
    ) -> Connector {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let (tx, rx) = mpsc::channel();
        let route = NEXT_ROUTE.fetch_add(1, Ordering::Relaxed);
        if target.my_node_id > target.peer_node_id {
            routes().get_or_insert_with(HashMap::new).insert(
                (target.resource.clone(), target.peer_node_id as u32),
                (route, tx),
            );
        }
        let name = format!("repl-{}-{}", target.resource, target.peer_node_id);
        let _ = std::thread::Builder::new().name(name).spawn(move || {
            connector_loop(target, route, rx, stop2, local_view, adopt);
        });
        Connector { stop }
    }
}

fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let until = Instant::now() + d;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn connector_loop(
    t: PeerTarget,
    route: u64,
    arrivals: Receiver<Arrival>,
    stop: Arc<AtomicBool>,
    local_view: impl Fn() -> Option<LocalView>,
    adopt: impl Fn(Handshaken) -> Result<Receiver<String>, (String, bool)>,
) {
    let min_backoff = Duration::from_millis(100);
    let mut backoff = min_backoff;
    let mut last_error = String::new();
    while !stop.load(Ordering::Relaxed) {
        let attempt = if t.my_node_id < t.peer_node_id {
            dial(&t)
        } else {
            await_dial(&arrivals, &stop)
        };
        let result = attempt.and_then(|(d, m)| handshake(&t, d, m, &local_view));
        match result {
            Ok(hs) => match adopt(hs) {
                Ok(lost) => {
                    backoff = min_backoff;
                    last_error.clear();
                    // Wait for the link to end, waking now and then to notice `stop`.
                    loop {
                        match lost.recv_timeout(Duration::from_millis(100)) {
                            Ok(_) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                            Err(mpsc::RecvTimeoutError::Timeout)
                                if stop.load(Ordering::Relaxed) =>
                            {
                                break
                            }
                            Err(mpsc::RecvTimeoutError::Timeout) => {}
                        }
                    }
                    continue;
                }
                Err((why, retry)) => {
                    if !retry {
                        tracing::error!(
                            "{}: connection to node-id {} refused: {why}",
                            t.resource,
                            t.peer_node_id
                        );
                        break;
                    }
                    last_error = why;
                }
            },
            Err(e) => {
                if e != last_error {
                    tracing::info!(
                        "{}: connecting to node-id {} ({}): {e}",
                        t.resource,
                        t.peer_node_id,
                        t.remote
                    );
                }
                last_error = e;
            }
        }
        sleep_unless_stopped(backoff, &stop);
        // Only the dialer backs off. An acceptor that slept up to connect-int would leave a
        // dialer's sockets queued past its handshake timeout, then take those dead sockets
        // first when it wakes: after a long absence the two never met again.
        if t.my_node_id < t.peer_node_id {
            backoff = (backoff * 2).min(t.connect_int);
        }
    }
    if t.my_node_id > t.peer_node_id {
        if let Some(m) = routes().as_mut() {
            let key = (t.resource.clone(), t.peer_node_id as u32);
            // A newer connector for the same peer may have taken the route over.
            if m.get(&key).is_some_and(|r| r.0 == route) {
                m.remove(&key);
            }
        }
    }
}

fn tune(s: &TcpStream) -> Result<(), String> {
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(|e| e.to_string())
}

fn dial_one(t: &PeerTarget, first: Packet) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect_timeout(&t.remote, HANDSHAKE_TIMEOUT)
        .map_err(|e| format!("connect {}: {e}", t.remote))?;
    tune(&s)?;
    write_packet(&mut s, &first)?;
    Ok(s)
}

fn initial(t: &PeerTarget) -> Initial {
    Initial {
        sender_node_id: t.my_node_id as u32,
        receiver_node_id: t.peer_node_id as u32,
        resource: t.resource.clone(),
    }
}

fn dial(t: &PeerTarget) -> Result<(TcpStream, TcpStream), String> {
    let data = dial_one(t, Packet::InitialData(initial(t)))?;
    let meta = dial_one(t, Packet::InitialMeta(initial(t)))?;
    Ok((data, meta))
}

/// How long a pair whose meta socket arrived before its data socket waits for a newer meta
/// socket: the dialer opens data first, so an earlier meta is usually one left over from an
/// older attempt (or from someone else).
const PAIR_GRACE: Duration = Duration::from_millis(200);

/// The socket is still open at the other end (a dialer that gave up has closed its sockets).
fn alive(s: &TcpStream) -> bool {
    if s.set_nonblocking(true).is_err() {
        return false;
    }
    let ok = match s.peek(&mut [0u8; 1]) {
        Ok(n) => n > 0,
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
    };
    ok && s.set_nonblocking(false).is_ok()
}

fn await_dial(
    arrivals: &Receiver<Arrival>,
    stop: &AtomicBool,
) -> Result<(TcpStream, TcpStream), String> {
    // The newest socket of each kind wins; a pair is taken when its meta socket came after
    // its data socket, or after PAIR_GRACE; sockets closed by their dialer are dropped.
    let mut data: Option<TcpStream> = None;
    let mut meta: Option<TcpStream> = None;
    let mut in_order = false;
    let mut paired_at: Option<Instant> = None;
    let mut first_at: Option<Instant> = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err("stopped".into());
        }
        if data.is_some() && meta.is_some() {
            let paired = *paired_at.get_or_insert_with(Instant::now);
            if in_order || paired.elapsed() >= PAIR_GRACE {
                if !data.as_ref().is_some_and(alive) {
                    data = None;
                }
                if !meta.as_ref().is_some_and(alive) {
                    meta = None;
                }
                if data.is_some() && meta.is_some() {
                    break;
                }
                if data.is_none() && meta.is_none() {
                    first_at = None;
                }
                in_order = false;
                paired_at = None;
            }
        }
        let wait = Duration::from_millis(if paired_at.is_some() { 20 } else { 100 });
        match arrivals.recv_timeout(wait) {
            Ok((cmd, s)) => {
                if cmd == Cmd::InitialData {
                    data = Some(s);
                    in_order = false;
                } else {
                    in_order = data.is_some();
                    meta = Some(s);
                }
                paired_at = None;
                first_at.get_or_insert_with(Instant::now);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if data.is_none() && meta.is_none() {
                    return Err("waiting for the peer to connect".into());
                }
                // A half pair that never completes is dropped so the dialer starts over.
                if paired_at.is_none() && first_at.is_some_and(|t| t.elapsed() > HANDSHAKE_TIMEOUT)
                {
                    return Err("only one of the two sockets arrived".into());
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err("listener gone".into()),
        }
    }
    let (d, m) = (
        data.unwrap_or_else(|| unreachable!()),
        meta.unwrap_or_else(|| unreachable!()),
    );
    tune(&d)?;
    tune(&m)?;
    Ok((d, m))
}

fn handshake(
    t: &PeerTarget,
    mut data: TcpStream,
    meta: TcpStream,
    local_view: &impl Fn() -> Option<LocalView>,
) -> Result<Handshaken, String> {
    let ours = Features {
        proto_min: wire::PROTO_MIN,
        proto_max: wire::PROTO_MAX,
        feature_flags: wire::feature::WRITE_ZEROES
            | wire::feature::TRIM
            | wire::feature::ONLINE_VERIFY,
        sender_node_id: t.my_node_id as u32,
        receiver_node_id: t.peer_node_id as u32,
    };
    write_packet(&mut data, &Packet::Features(ours))?;
    let theirs = match read_packet(&mut data)? {
        (_, Packet::Features(f)) => f,
        (h, _) => return Err(format!("expected Features, got {:?}", h.cmd)),
    };
    if theirs.sender_node_id != t.peer_node_id as u32
        || theirs.receiver_node_id != t.my_node_id as u32
    {
        return Err(format!(
            "peer says it is node-id {} talking to {}; we expect node-id {} talking to {}",
            theirs.sender_node_id, theirs.receiver_node_id, t.peer_node_id, t.my_node_id
        ));
    }
    let agreed = ours.proto_max.min(theirs.proto_max);
    if agreed < ours.proto_min.max(theirs.proto_min) {
        return Err(format!(
            "incompatible protocol versions: peer speaks {}..{}, we speak {}..{}",
            theirs.proto_min, theirs.proto_max, ours.proto_min, ours.proto_max
        ));
    }
    write_packet(&mut data, &Packet::Protocol(t.protocol))?;
    let peer_protocol = match read_packet(&mut data)? {
        (_, Packet::Protocol(p)) => p,
        (h, _) => return Err(format!("expected Protocol, got {:?}", h.cmd)),
    };
    if peer_protocol.protocol != t.protocol.protocol {
        return Err(format!(
            "incompatible replication protocols: ours {}, peer's {}",
            t.protocol.protocol as char, peer_protocol.protocol as char
        ));
    }
    let view = local_view().ok_or("the resource is gone")?;
    write_packet(&mut data, &Packet::Uuids(view.uuids.clone()))?;
    write_packet(&mut data, &Packet::Sizes(view.sizes))?;
    write_packet(&mut data, &Packet::State(view.state))?;
    let mut uuids = None;
    let mut sizes = None;
    let mut state = None;
    while uuids.is_none() || sizes.is_none() || state.is_none() {
        match read_packet(&mut data)? {
            (_, Packet::Uuids(u)) => uuids = Some(u),
            (_, Packet::Sizes(s)) => sizes = Some(s),
            (_, Packet::State(s)) => state = Some(s),
            (h, _) => return Err(format!("unexpected {:?} during the handshake", h.cmd)),
        }
    }
    let _ = data.set_read_timeout(None);
    let _ = data.set_write_timeout(None);
    let _ = meta.set_read_timeout(None);
    let _ = meta.set_write_timeout(None);
    Ok(Handshaken {
        data: OwnedFd::from(data),
        meta: OwnedFd::from(meta),
        peer_uuids: uuids.unwrap_or_else(|| unreachable!()),
        peer_sizes: sizes.unwrap_or_else(|| unreachable!()),
        peer_state: state.unwrap_or_else(|| unreachable!()),
        peer_protocol,
        sent_uuids: view.uuids,
    })
}
