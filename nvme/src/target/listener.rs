//! Listening sockets, shared by every subsystem that listens on the same address, and the
//! spreading of accepted connections over the reactors (round robin; a queue pair then stays
//! on its reactor for life).

use oxstor_reactor::net::TcpAcceptor;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// The reactor that owns every acceptor.
const ACCEPT_CORE: usize = 0;

static REFS: Mutex<Vec<(SocketAddr, usize)>> = Mutex::new(Vec::new());
static NEXT_CORE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static ACCEPTORS: RefCell<HashMap<SocketAddr, Rc<TcpAcceptor>>> = RefCell::new(HashMap::new());
}

fn refs() -> std::sync::MutexGuard<'static, Vec<(SocketAddr, usize)>> {
    REFS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Addresses being listened on.
pub fn addresses() -> Vec<SocketAddr> {
    refs().iter().map(|(a, _)| *a).collect()
}

/// Starts listening on `addr`, or adds a reference to an existing listener.
pub fn acquire(addr: SocketAddr) -> std::io::Result<()> {
    let mut r = refs();
    if let Some(e) = r.iter_mut().find(|(a, _)| *a == addr) {
        e.1 += 1;
        return Ok(());
    }
    let rt = oxstor_bdev::registry::runtime()
        .ok_or_else(|| std::io::Error::other("no reactors running"))?;
    let rt2 = rt.clone();
    rt.run_on(ACCEPT_CORE, move || {
        let acc = TcpAcceptor::bind(
            addr,
            Box::new(move |fd| {
                let core = NEXT_CORE.fetch_add(1, Ordering::Relaxed) % rt2.num_reactors();
                rt2.send(core, move || super::conn::start(fd, core));
            }),
        )?;
        ACCEPTORS.with(|a| a.borrow_mut().insert(addr, acc));
        Ok::<(), std::io::Error>(())
    })?;
    tracing::info!("NVMe/TCP target listening on {addr}");
    r.push((addr, 1));
    Ok(())
}

/// Drops a reference; the last one closes the listening socket.
pub fn release(addr: SocketAddr) {
    let mut r = refs();
    let Some(pos) = r.iter().position(|(a, _)| *a == addr) else {
        return;
    };
    r[pos].1 -= 1;
    if r[pos].1 > 0 {
        return;
    }
    r.remove(pos);
    if let Some(rt) = oxstor_bdev::registry::runtime() {
        rt.run_on(ACCEPT_CORE, move || {
            if let Some(acc) = ACCEPTORS.with(|a| a.borrow_mut().remove(&addr)) {
                acc.stop();
            }
        });
    }
    tracing::info!("NVMe/TCP target stopped listening on {addr}");
}

pub fn release_all() {
    for addr in addresses() {
        while refs().iter().any(|(a, _)| *a == addr) {
            release(addr);
        }
    }
}
