//! The JSON-RPC server: a Unix socket, an accept thread, one thread per connection.
//!
//! This is the control path, so plain blocking threads are the simple and right tool; the
//! reactors are never involved except through messages a handler sends them. Connections are
//! capped (SPDK allows 64) so a misbehaving client cannot exhaust threads or descriptors.
//!
//! [`Server::stop`] stops accepting, closes the read side of every open connection so each
//! finishes the request it is running and answers it, and waits (bounded) for them to end:
//! after it returns no handler is running, so the daemon can tear the bdevs down safely.

mod connection;
mod framing;
pub mod socket;

pub use connection::MAX_REQUEST_BYTES;
pub use socket::{SocketError, SocketFile};

use crate::context::Context;
use serde_json::json;
use std::collections::HashMap;
use std::io::Write;
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// How long [`Server::stop`] waits for running requests to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Open connections, so shutdown can reach them. Each value is a clone of the client socket.
#[derive(Default)]
struct Connections {
    open: Mutex<HashMap<u64, UnixStream>>,
    closed: Condvar,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, UnixStream>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
        self.closed.notify_all();
    }
}

pub struct Server {
    socket: SocketFile,
    stopping: Arc<AtomicBool>,
    accept_done: mpsc::Receiver<()>,
    accept_thread: Option<JoinHandle<()>>,
    connections: Arc<Connections>,
}

impl Server {
    /// Binds `path` and starts accepting clients.
    pub fn start(path: &Path, ctx: Context) -> Result<Server, SocketError> {
        let (listener, socket) = socket::bind(path)?;
        let stopping = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Connections::default());
        let (done_tx, accept_done) = mpsc::channel();
        let spawn = {
            let stopping = stopping.clone();
            let connections = connections.clone();
            std::thread::Builder::new()
                .name("rpc_accept".into())
                .spawn(move || {
                    accept_loop(listener, ctx, &stopping, &connections);
                    let _ = done_tx.send(());
                })
        };
        let accept_thread = match spawn {
            Ok(t) => t,
            Err(e) => {
                socket.remove();
                return Err(SocketError::Io {
                    path: path.to_path_buf(),
                    source: e,
                });
            }
        };
        Ok(Server {
            socket,
            stopping,
            accept_done,
            accept_thread: Some(accept_thread),
            connections,
        })
    }

    pub fn path(&self) -> &Path {
        self.socket.path()
    }

    /// Stops serving (see the module docs). Returns the socket file for the caller to remove
    /// once the rest of the daemon is down.
    pub fn stop(mut self) -> SocketFile {
        self.stopping.store(true, Ordering::SeqCst);
        // accept() has no timeout: a connection of our own wakes it to see the flag.
        let _ = UnixStream::connect(self.socket.path());
        match self.accept_done.recv_timeout(Duration::from_secs(2)) {
            Ok(()) => {
                if let Some(t) = self.accept_thread.take() {
                    let _ = t.join();
                }
            }
            Err(_) => tracing::warn!("rpc: accept thread did not stop; leaving it"),
        }
        for stream in self.connections.lock().values() {
            let _ = stream.shutdown(Shutdown::Read);
        }
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let mut open = self.connections.lock();
        while !open.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!("rpc: {} connection(s) still busy at shutdown", open.len());
                break;
            }
            open = match self.connections.closed.wait_timeout(open, left) {
                Ok((guard, _)) => guard,
                Err(p) => p.into_inner().0,
            };
        }
        drop(open);
        self.socket
    }
}

fn refuse(mut stream: UnixStream) {
    tracing::warn!("rpc: refusing a client: {MAX_CONNECTIONS} connections already open");
    let msg = json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": { "code": -libc::EBUSY, "message": format!("too many RPC connections (limit {MAX_CONNECTIONS})") },
    });
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let _ = stream.write_all(format!("{msg}\n").as_bytes());
}

fn accept_loop(
    listener: UnixListener,
    ctx: Context,
    stopping: &AtomicBool,
    connections: &Arc<Connections>,
) {
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);
    for conn in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            break;
        }
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("rpc: accept failed: {e}");
                // Out of descriptors, usually: do not spin on it.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        {
            let mut open = connections.lock();
            if open.len() >= MAX_CONNECTIONS {
                drop(open);
                refuse(stream);
                continue;
            }
            match stream.try_clone() {
                Ok(clone) => open.insert(id, clone),
                Err(e) => {
                    tracing::warn!("rpc: cannot track a client socket: {e}");
                    continue;
                }
            };
        }
        let ctx = ctx.clone();
        let conns = connections.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("rpc_conn_{id}"))
            .spawn(move || {
                connection::serve(stream, &ctx);
                conns.remove(id);
            });
        if let Err(e) = spawned {
            tracing::warn!("rpc: cannot start a connection thread: {e}");
            connections.remove(id);
        }
    }
}
