//! `oxperf net`: kernel-TCP baselines over loopback that need no other tool.
//!
//! - [`rtt`]: an echo server thread and a client ping-ponging `size`-byte messages
//!   (TCP_NODELAY), one histogram of round trips: the "TCP round trip" that replication
//!   latency is compared with;
//! - [`stream`]: one client writing `write_size`-byte buffers to a sink for a while, like a
//!   single-stream iperf3.
//!
//! Plain blocking `std::net`: it is a baseline, not the I/O path. With a core mask the client
//! is pinned to its first core and the server to its last (like the reactors, one thread per
//! core), so `-c 0x3` puts them on different cores and `-c 0x1` on the same one.

use crate::stats::{new_histogram, LatencySummary};
use crate::PerfError;
use oxstor_reactor::CoreMask;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// What `oxperf net rtt` runs.
#[derive(Debug, Clone)]
pub struct RttOptions {
    /// Where the echo server listens (port 0: any free port).
    pub addr: SocketAddr,
    /// Round trips measured (after a short unmeasured warm-up).
    pub count: u64,
    /// Message size in bytes, both ways.
    pub size: usize,
    pub cores: Option<CoreMask>,
}

/// What `oxperf net stream` runs.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    pub addr: SocketAddr,
    pub duration: Duration,
    /// Bytes per `write` call.
    pub write_size: usize,
    pub cores: Option<CoreMask>,
}

/// Round-trip results.
#[derive(Debug, Clone)]
pub struct RttReport {
    pub count: u64,
    pub size: usize,
    pub latency: LatencySummary,
    pub client_core: Option<usize>,
    pub server_core: Option<usize>,
}

/// Streaming results.
#[derive(Debug, Clone)]
pub struct StreamReport {
    pub write_size: usize,
    pub bytes: u64,
    pub seconds: f64,
    pub client_core: Option<usize>,
    pub server_core: Option<usize>,
}

impl StreamReport {
    pub fn mib_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.bytes as f64 / (1024.0 * 1024.0) / self.seconds
        } else {
            0.0
        }
    }
}

fn io_err(what: &str, e: std::io::Error) -> PerfError {
    PerfError::run(format!("{what}: {e}"))
}

/// (client core, server core) of a mask: its first and its last.
fn placement(cores: &Option<CoreMask>) -> Result<(Option<usize>, Option<usize>), PerfError> {
    let Some(mask) = cores else {
        return Ok((None, None));
    };
    let available = std::thread::available_parallelism().map_or(usize::MAX, |n| n.get());
    if let Some(&c) = mask.cores().iter().find(|&&c| c >= available) {
        return Err(PerfError::usage(format!(
            "core mask {mask} names core {c}, but this machine has {available} core(s)"
        )));
    }
    Ok((mask.cores().first().copied(), mask.cores().last().copied()))
}

fn pin(core: Option<usize>) {
    if let Some(id) = core {
        if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
            tracing::warn!("could not pin to core {id}");
        }
    }
}

/// Binds the server, runs `serve` on its own (pinned) thread for one connection, and returns
/// the connected client stream (TCP_NODELAY, pinned) and the server thread.
fn pair<T: Send + 'static>(
    addr: SocketAddr,
    client_core: Option<usize>,
    server_core: Option<usize>,
    serve: impl FnOnce(TcpStream) -> std::io::Result<T> + Send + 'static,
) -> Result<(TcpStream, std::thread::JoinHandle<std::io::Result<T>>), PerfError> {
    let listener = TcpListener::bind(addr).map_err(|e| io_err(&format!("bind {addr}"), e))?;
    let local = listener.local_addr().map_err(|e| io_err("local_addr", e))?;
    let server = std::thread::Builder::new()
        .name("oxperf-net-server".into())
        .spawn(move || {
            pin(server_core);
            let (s, _) = listener.accept()?;
            s.set_nodelay(true)?;
            serve(s)
        })
        .map_err(|e| io_err("spawn the server thread", e))?;
    pin(client_core);
    let client = TcpStream::connect(local).map_err(|e| io_err(&format!("connect {local}"), e))?;
    client
        .set_nodelay(true)
        .map_err(|e| io_err("TCP_NODELAY", e))?;
    Ok((client, server))
}

fn join<T>(h: std::thread::JoinHandle<std::io::Result<T>>) -> Result<T, PerfError> {
    h.join()
        .map_err(|_| PerfError::run("the server thread panicked"))?
        .map_err(|e| io_err("server", e))
}

/// Ping-pong of `size`-byte messages; the histogram of round trips.
pub fn rtt(o: &RttOptions) -> Result<RttReport, PerfError> {
    if o.count == 0 {
        return Err(PerfError::usage("-n must be at least 1"));
    }
    if o.size == 0 || o.size > 64 << 20 {
        return Err(PerfError::usage(format!(
            "--size must be between 1 and 64 MiB, got {}",
            o.size
        )));
    }
    let (client_core, server_core) = placement(&o.cores)?;
    let size = o.size;
    let (mut c, server) = pair(o.addr, client_core, server_core, move |mut s| {
        let mut buf = vec![0u8; size];
        loop {
            // A clean EOF between messages ends the session.
            match s.read(&mut buf[..1])? {
                0 => return Ok(()),
                _ => s.read_exact(&mut buf[1..])?,
            }
            s.write_all(&buf)?;
        }
    })?;
    let warmup = (o.count / 10).min(1000);
    let mut msg = vec![0x5au8; size];
    let mut hist = new_histogram();
    for i in 0..warmup + o.count {
        msg[0] = i as u8;
        let t = Instant::now();
        c.write_all(&msg).map_err(|e| io_err("send", e))?;
        c.read_exact(&mut msg).map_err(|e| io_err("receive", e))?;
        let ns = t.elapsed().as_nanos() as u64;
        if i >= warmup {
            hist.saturating_record(ns.max(1));
        }
    }
    let _ = c.shutdown(Shutdown::Write);
    join(server)?;
    Ok(RttReport {
        count: o.count,
        size,
        latency: LatencySummary::from_histogram(&hist),
        client_core,
        server_core,
    })
}

/// One stream of `write_size`-byte writes into a sink for `duration`; the rate is what the
/// sink received over the time from the first write to its end of file.
pub fn stream(o: &StreamOptions) -> Result<StreamReport, PerfError> {
    if o.write_size == 0 || o.write_size > 64 << 20 {
        return Err(PerfError::usage(format!(
            "-o must be between 1 and 64 MiB, got {}",
            o.write_size
        )));
    }
    let (client_core, server_core) = placement(&o.cores)?;
    let (mut c, server) = pair(o.addr, client_core, server_core, |mut s| {
        let mut buf = vec![0u8; 1 << 20];
        let mut bytes = 0u64;
        loop {
            match s.read(&mut buf)? {
                0 => return Ok((bytes, Instant::now())),
                n => bytes += n as u64,
            }
        }
    })?;
    let buf = vec![0xa5u8; o.write_size];
    let start = Instant::now();
    let end = start + o.duration;
    // Check the clock every few writes only: small writes are cheap.
    let every = (1 << 20) / o.write_size.min(1 << 20);
    'outer: loop {
        for _ in 0..every.max(1) {
            c.write_all(&buf).map_err(|e| io_err("send", e))?;
        }
        if Instant::now() >= end {
            break 'outer;
        }
    }
    c.shutdown(Shutdown::Write)
        .map_err(|e| io_err("shutdown", e))?;
    let (bytes, eof) = join(server)?;
    Ok(StreamReport {
        write_size: o.write_size,
        bytes,
        seconds: eof.duration_since(start).as_secs_f64(),
        client_core,
        server_core,
    })
}

fn core(c: Option<usize>) -> Value {
    c.map_or(Value::Null, |c| json!(c))
}

pub fn rtt_text(r: &RttReport) -> String {
    let l = &r.latency;
    format!(
        "TCP round trip over loopback: {} x {} bytes (TCP_NODELAY)\n\
         RTT (us): min {:.2}  p50 {:.2}  p90 {:.2}  p99 {:.2}  mean {:.2}  max {:.2}\n",
        r.count, r.size, l.min, l.p50, l.p90, l.p99, l.mean, l.max
    )
}

pub fn rtt_json(r: &RttReport) -> Value {
    let l = &r.latency;
    json!({
        "test": "rtt",
        "count": r.count,
        "size": r.size,
        "client_core": core(r.client_core),
        "server_core": core(r.server_core),
        "rtt_us": {
            "mean": l.mean, "min": l.min, "p50": l.p50, "p90": l.p90,
            "p99": l.p99, "p99.9": l.p99_9, "max": l.max,
        },
    })
}

pub fn stream_text(r: &StreamReport) -> String {
    format!(
        "TCP stream over loopback: {}-byte writes, {} bytes in {:.2} s\n{:.2} MiB/s ({:.2} Gbit/s)\n",
        r.write_size,
        r.bytes,
        r.seconds,
        r.mib_s(),
        r.bytes as f64 * 8.0 / 1e9 / r.seconds.max(1e-9)
    )
}

pub fn stream_json(r: &StreamReport) -> Value {
    json!({
        "test": "stream",
        "io_size": r.write_size,
        "bytes": r.bytes,
        "runtime_s": r.seconds,
        "mib_s": r.mib_s(),
        "client_core": core(r.client_core),
        "server_core": core(r.server_core),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_and_stream_report_positive_numbers() {
        let r = rtt(&RttOptions {
            addr: "127.0.0.1:0".parse().unwrap(),
            count: 200,
            size: 64,
            cores: None,
        })
        .unwrap();
        assert!(r.latency.p50 > 0.0 && r.latency.min <= r.latency.p99);
        let s = stream(&StreamOptions {
            addr: "127.0.0.1:0".parse().unwrap(),
            duration: Duration::from_millis(100),
            write_size: 65536,
            cores: None,
        })
        .unwrap();
        assert!(s.bytes > 0 && s.mib_s() > 0.0);
    }
}
