//! Replication (issue 5) against real daemons: every node is its own `oxstor` process with a
//! uring bdev over a file as its backing disk, driven with `oxadm` and drbd.conf-style resource
//! files as a user would. Data is checked byte for byte in the backing files after the
//! daemons let go of them (the replicated data is bytes [0, size_blocks * block_size)).
//!
//! Writers: `oxperf nvme` for the verify/randwrite workloads, and an in-process NVMe/TCP host
//! (oxstor_nvme's host bdev on a one-reactor runtime in this test process) where the test has
//! to know exactly which blocks were written and which writes were acknowledged.
//!
//! The tests run one at a time (a static mutex): each starts two or three daemons, and the
//! machine has two cores. Every wait is a hang guard (90 s), never a performance threshold.
//! `REPL_TEST_LOGS=1` prints the daemons' logs at the end of each test (always on failure).
//!
//! Runtime bugs these tests found (fixed in repl/src): a panic when a receiver resumed its data
//! stream under protocols A/B (apply.rs), an acceptor that never met its dialer again after a
//! long absence and a stray meta socket paired with the real data socket (connect.rs),
//! `connect` right after a refusal failing with EADDRINUSE (connect.rs), acknowledged protocol
//! C writes resynced again after a disconnect (write.rs), peers not told of disk state changes
//! (resource.rs), and `down` half done on an exported device (rpc.rs).

mod common;

use common::{host_runtime, oxperf_bin, Daemon, TempDir};
use oxstor_bdev::registry::{self, BdevEntry};
use oxstor_bdev::{blocking, IoStatus, IoType};
use oxstor_repl::wire::{self, Features, Header, Initial, Packet, HEADER_LEN};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const OXADM: &str = env!("CARGO_BIN_EXE_oxadm");
const RES: &str = "r0";
const BS: u64 = 4096;
/// Backing files: 32 MiB of data plus room for the internal metadata.
const SMALL_FILE: u64 = 33 << 20;
/// Test 2's disk: 64 MiB of data.
const BIG_FILE: u64 = 65 << 20;
/// A hang guard, never a performance threshold.
const WAIT: Duration = Duration::from_secs(90);

fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------------------
// Ports and addresses

const ADDRS: [&str; 3] = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];

/// Two consecutive ports (replication, NVMe/TCP) free on all three loopback addresses, below
/// the ephemeral range and spread by process id and test so parallel runs do not meet.
fn ports(test: u16) -> (u16, u16) {
    let start = (std::process::id() % 1000) * 12 + test as u32 * 2;
    let free = |p: u16| ADDRS.iter().all(|a| TcpListener::bind((*a, p)).is_ok());
    (0..200u32)
        .map(|i| ((start + i * 1013) % 12000 + 20000) as u16)
        .find(|&p| free(p) && free(p + 1))
        .map(|p| (p, p + 1))
        .expect("no free port pair")
}

// ---------------------------------------------------------------------------------------
// Nodes and clusters

struct Node {
    host: String,
    addr: &'static str,
    mask: &'static str,
    file: PathBuf,
    daemon: Option<Daemon>,
    /// The log of the last daemon that ran here and was stopped.
    last_log: String,
}

impl Node {
    fn d(&self) -> &Daemon {
        self.daemon.as_ref().expect("daemon running")
    }
}

/// Two or three daemons, the shared resource file and the backing files. Dropping it kills
/// whatever daemons still run (`Daemon`'s own Drop) and removes the files; on a failure it
/// first prints each daemon's log.
struct Cluster {
    files: TempDir,
    conf: PathBuf,
    nodes: Vec<Node>,
    nvme_port: u16,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("REPL_TEST_LOGS").is_some() {
            for n in &self.nodes {
                let log = n
                    .daemon
                    .as_ref()
                    .map_or_else(|| n.last_log.clone(), |d| d.stderr());
                let lines: Vec<&str> = log.lines().collect();
                let from = lines.len().saturating_sub(80);
                eprintln!(
                    "----- log of node {} -----\n{}",
                    n.host,
                    lines[from..].join("\n")
                );
            }
        }
        for n in &mut self.nodes {
            drop(n.daemon.take());
        }
    }
}

struct Spec<'a> {
    test: u16,
    hosts: usize,
    file_bytes: u64,
    /// `resync-rate` (KiB/s or with a unit).
    resync_rate: &'a str,
    /// Extra text inside `resource r0 { }` (e.g. a connection-mesh).
    extra: &'a str,
}

impl Cluster {
    fn new(s: Spec) -> Cluster {
        let files = TempDir::new(&format!("repl{}", s.test));
        let (port, nvme_port) = ports(s.test);
        let mut text = format!(
            "# written by tools/tests/repl.rs\nresource {RES} {{\n  net {{ protocol C; ping-timeout 30; }}\n  disk {{ resync-rate {}; }}\n",
            s.resync_rate
        );
        let names = ["a", "b", "c"];
        let mut nodes = Vec::new();
        for (i, host) in names.iter().take(s.hosts).enumerate() {
            text += &format!(
                "  on {host} {{ node-id {i}; device ox0; disk Disk0; address {}:{port}; meta-disk internal; }}\n",
                ADDRS[i]
            );
            let file = files.path(&format!("{host}.img"));
            common::file_of_size(&file, s.file_bytes);
            nodes.push(Node {
                host: host.to_string(),
                addr: ADDRS[i],
                mask: if i == 1 { "0x2" } else { "0x1" },
                file,
                daemon: None,
                last_log: String::new(),
            });
        }
        text += s.extra;
        text += "}\n";
        let conf = files.path("r0.res");
        std::fs::write(&conf, text).expect("write resource file");
        let mut c = Cluster {
            files,
            conf,
            nodes,
            nvme_port,
        };
        for i in 0..s.hosts {
            c.start(i);
        }
        c
    }

    /// Starts node `i`'s daemon and its backing bdev `Disk0` over the node's file.
    fn start(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        assert!(n.daemon.is_none(), "node {} already runs", n.host);
        let d = Daemon::start_in(TempDir::new(&format!("repl-{}", n.host)), &["-m", n.mask]);
        d.ok(
            "bdev_uring_create",
            json!({"name": "Disk0", "filename": n.file.to_str().unwrap(), "block_size": BS}),
        );
        n.daemon = Some(d);
    }

    /// SIGTERM, and a check that the daemon never panicked.
    fn stop(&mut self, i: usize) {
        let mut d = self.nodes[i].daemon.take().expect("daemon running");
        let st = d.terminate();
        self.nodes[i].last_log = d.stderr();
        common::assert_no_panic(&d.stderr());
        assert!(
            st.success(),
            "node {} exited with {st}:\n{}",
            self.nodes[i].host,
            d.stderr()
        );
    }

    /// kill -9.
    fn kill(&mut self, i: usize) {
        let mut d = self.nodes[i].daemon.take().expect("daemon running");
        d.child.kill().expect("kill -9");
        d.child.wait().expect("reap");
        self.nodes[i].last_log = d.stderr();
        common::assert_no_panic(&d.stderr());
    }

    fn d(&self, i: usize) -> &Daemon {
        self.nodes[i].d()
    }

    fn oxadm_out(&self, i: usize, args: &[&str]) -> Output {
        let n = &self.nodes[i];
        Command::new(OXADM)
            .arg("-c")
            .arg(&self.conf)
            .args(["--host", &n.host, "-s"])
            .arg(&n.d().sock)
            .args(args)
            .env_remove("OXSTOR_RPC_SOCK")
            .stdin(Stdio::null())
            .output()
            .expect("run oxadm")
    }

    /// Runs `oxadm ARGS` for node `i` and insists on success.
    fn adm(&self, i: usize, args: &[&str]) -> String {
        let out = self.oxadm_out(i, args);
        assert!(
            out.status.success(),
            "oxadm {} on {} failed ({}):\n{}{}",
            args.join(" "),
            self.nodes[i].host,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn status(&self, i: usize) -> Value {
        let v = self.d(i).ok("repl_status", json!({"resource": RES}));
        v[0].clone()
    }

    /// The connection of node `i` to `peer_node_id` in `repl_status`.
    fn conn(&self, i: usize, peer: u64) -> Value {
        conn_of(&self.status(i), peer)
    }

    fn wait_until(&self, what: &str, mut cond: impl FnMut(&Cluster) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            for n in &self.nodes {
                if let Some(d) = &n.daemon {
                    common::assert_no_panic(&d.stderr());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until node `i` is UpToDate and every one of `peers` is Connected, Established
    /// and UpToDate.
    fn wait_synced(&self, i: usize, peers: &[u64]) {
        let last = std::cell::RefCell::new(Value::Null);
        let guard = PrintOnPanic(&last);
        self.wait_until(
            &format!("node {} in sync with {peers:?}", self.nodes[i].host),
            |c| {
                let st = c.status(i);
                *last.borrow_mut() = st.clone();
                st["volumes"][0]["disk_state"] == "UpToDate"
                    && peers.iter().all(|&p| {
                        let cn = conn_of(&st, p);
                        cn["connection_state"] == "Connected"
                            && cn["peer_devices"][0]["replication_state"] == "Established"
                            && cn["peer_devices"][0]["peer_disk_state"] == "UpToDate"
                    })
            },
        );
        drop(guard);
    }

    fn data_bytes(&self, i: usize) -> u64 {
        let v = &self.status(i)["volumes"][0];
        v["size_blocks"].as_u64().expect("size_blocks")
            * v["block_size"].as_u64().expect("block_size")
    }

    /// Exports node `i`'s `ox0` over NVMe/TCP on `addr:nvme_port`; returns the NQN.
    fn export(&self, i: usize) -> String {
        let d = self.d(i);
        let nqn = format!("nqn.2016-06.io.oxstor:repl-{}", self.nodes[i].host);
        if d.call("nvmf_get_transports", Value::Null)
            .map(|v| v.as_array().map_or(0, Vec::len))
            .unwrap_or(0)
            == 0
        {
            d.ok("nvmf_create_transport", json!({"trtype": "TCP"}));
        }
        d.ok(
            "nvmf_create_subsystem",
            json!({"nqn": nqn, "allow_any_host": true, "serial_number": "OXREPL"}),
        );
        d.ok(
            "nvmf_subsystem_add_ns",
            json!({"nqn": nqn, "namespace": {"bdev_name": "ox0"}}),
        );
        d.ok(
            "nvmf_subsystem_add_listener",
            json!({"nqn": nqn, "listen_address": {"trtype": "tcp", "adrfam": "ipv4",
                "traddr": self.nodes[i].addr, "trsvcid": self.nvme_port.to_string()}}),
        );
        nqn
    }

    /// Removes the export again (the namespace holds a claim on `ox0`, so `down` needs this).
    fn unexport(&self, i: usize) {
        let nqn = format!("nqn.2016-06.io.oxstor:repl-{}", self.nodes[i].host);
        self.d(i).ok("nvmf_delete_subsystem", json!({"nqn": nqn}));
    }

    fn trid(&self, i: usize) -> String {
        format!(
            "trtype:tcp traddr:{} trsvcid:{} subnqn:nqn.2016-06.io.oxstor:repl-{}",
            self.nodes[i].addr, self.nvme_port, self.nodes[i].host
        )
    }

    /// `up` everywhere, `primary --force` on node 0, and the initial full sync.
    fn up_and_sync(&self) {
        for i in 0..self.nodes.len() {
            self.adm(i, &["up", RES]);
        }
        self.adm(0, &["primary", "--force", RES]);
        let peers: Vec<u64> = (1..self.nodes.len() as u64).collect();
        self.wait_synced(0, &peers);
        for i in 1..self.nodes.len() {
            self.wait_synced(i, &[0]);
        }
        assert_eq!(self.status(0)["role"], "Primary");
    }

    /// Node `i`'s log lines that contain `needle`.
    fn log_lines(&self, i: usize, needle: &str) -> Vec<String> {
        self.d(i)
            .stderr()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }
}

/// Prints the last status seen when a wait fails.
struct PrintOnPanic<'a>(&'a std::cell::RefCell<Value>);

impl Drop for PrintOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("last status: {:#}", self.0.borrow());
        }
    }
}

fn conn_of(status: &Value, peer: u64) -> Value {
    status["connections"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["peer_node_id"] == peer))
        .cloned()
        .unwrap_or_else(|| panic!("no connection to node-id {peer} in {status}"))
}

/// The numbers N of log lines `... done: N blocks` / `... done (N blocks)`.
fn resync_counts(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| {
            let at = l
                .find("done: ")
                .map(|i| i + 6)
                .or_else(|| l.find("done (").map(|i| i + 6))?;
            l[at..].split(' ').next()?.parse().ok()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Files

fn read_range(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(path).expect("open backing file");
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf).expect("read backing file");
    buf
}

fn read_block(path: &Path, lba: u64) -> Vec<u8> {
    read_range(path, lba * BS, BS)
}

/// Asserts bytes [0, len) of two files are identical; returns how many 4 KiB blocks are not
/// all zero (so a test can tell it compared real data).
fn assert_same_data(a: &Path, b: &Path, len: u64) -> u64 {
    let chunk = 4u64 << 20;
    let mut nonzero = 0;
    let mut at = 0;
    while at < len {
        let n = chunk.min(len - at);
        let x = read_range(a, at, n);
        let y = read_range(b, at, n);
        if x != y {
            let i = x.iter().zip(&y).position(|(p, q)| p != q).unwrap();
            panic!(
                "{} and {} differ at byte {} (block {})",
                a.display(),
                b.display(),
                at + i as u64,
                (at + i as u64) / BS
            );
        }
        nonzero += x
            .chunks(BS as usize)
            .filter(|c| c.iter().any(|&v| v != 0))
            .count() as u64;
        at += n;
    }
    nonzero
}

/// Deterministic block contents naming their LBA, a version and a writer tag.
fn pattern(lba: u64, version: u64, tag: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(BS as usize);
    out.extend_from_slice(&lba.to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    let mut x =
        lba.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ version.rotate_left(29) ^ (tag as u64) << 56 | 1;
    while out.len() < BS as usize {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out[16] = tag;
    out.truncate(BS as usize);
    out
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

// ---------------------------------------------------------------------------------------
// In-process NVMe/TCP host

/// A controller attached to one of the nodes' exports; detached on drop.
struct Host {
    ctrl: String,
    entry: Arc<BdevEntry>,
}

impl Host {
    fn attach(c: &Cluster, i: usize) -> Host {
        static N: AtomicU64 = AtomicU64::new(0);
        host_runtime();
        let ctrl = format!("ReplHost{}", N.fetch_add(1, Ordering::Relaxed));
        let params = serde_json::from_value(json!({
            "name": ctrl, "trtype": "tcp", "adrfam": "ipv4", "traddr": c.nodes[i].addr,
            "trsvcid": c.nvme_port.to_string(),
            "subnqn": format!("nqn.2016-06.io.oxstor:repl-{}", c.nodes[i].host),
        }))
        .unwrap();
        let bdevs = oxstor_nvme::host::attach(params).expect("attach the NVMe/TCP host");
        let entry = registry::lookup(&bdevs[0]).expect("host bdev");
        assert_eq!(entry.bdev.geometry().block_size as u64, BS);
        Host { ctrl, entry }
    }

    fn write(&self, lba: u64, data: &[u8]) -> Result<(), String> {
        match blocking::io(
            0,
            &self.entry,
            IoType::Write,
            lba,
            data.len() as u64 / BS,
            Some(data),
            Duration::from_secs(20),
        ) {
            Ok((IoStatus::Success, _)) => Ok(()),
            Ok((st, _)) => Err(format!("write at {lba}: {st:?}")),
            Err(e) => Err(format!("write at {lba}: {e}")),
        }
    }

    fn read(&self, lba: u64) -> Result<Vec<u8>, String> {
        match blocking::io(
            0,
            &self.entry,
            IoType::Read,
            lba,
            1,
            None,
            Duration::from_secs(20),
        ) {
            Ok((IoStatus::Success, data)) => Ok(data),
            Ok((st, _)) => Err(format!("read at {lba}: {st:?}")),
            Err(e) => Err(format!("read at {lba}: {e}")),
        }
    }

    fn write_ok(&self, lba: u64, data: &[u8]) {
        self.write(lba, data).unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = oxstor_nvme::host::detach(&self.ctrl);
    }
}

// ---------------------------------------------------------------------------------------
// oxperf

fn oxperf(c: &Cluster, i: usize, workload: &str, secs: u32) -> Value {
    let out = Command::new(oxperf_bin())
        .args([
            "nvme",
            "-r",
            &c.trid(i),
            "-q",
            "16",
            "-o",
            "4k",
            "-w",
            workload,
            "-t",
            &secs.to_string(),
        ])
        .args(["--output", "json"])
        .output()
        .expect("run oxperf");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "oxperf {workload} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&stdout).expect("oxperf json");
    assert_eq!(v["io_failed"].as_u64(), Some(0), "{v}");
    assert!(v["iops"].as_f64().unwrap_or(0.0) > 0.0, "{v}");
    v
}

// ---------------------------------------------------------------------------------------
// Tests

/// A verify workload on the Primary; online verify finds nothing; the backing files hold the
/// same bytes.
#[test]
fn two_node_replication_is_identical() {
    let _s = serial();
    let mut c = Cluster::new(Spec {
        test: 0,
        hosts: 2,
        file_bytes: SMALL_FILE,
        resync_rate: "6M",
        extra: "",
    });
    // The verify workload runs during the initial full sync (held to 6 MiB/s, so 32 MiB take
    // more than 5 s): host writes and resync meet on the same blocks.
    for i in 0..2 {
        c.adm(i, &["up", RES]);
    }
    c.adm(0, &["primary", "--force", RES]);
    c.wait_until("the initial sync to start", |c| {
        c.conn(0, 1)["peer_devices"][0]["replication_state"] == "SyncSource"
    });
    c.export(0);
    let v = oxperf(&c, 0, "verify", 3);
    assert_eq!(v["mismatches"].as_u64(), Some(0), "{v}");
    let pd = c.conn(0, 1)["peer_devices"][0].clone();
    assert_eq!(
        pd["replication_state"], "SyncSource",
        "the workload ran during the sync: {pd}"
    );
    // Interrupted: b stays Inconsistent and cannot be promoted; then the sync completes.
    // (An interrupted *full* sync starts over; DRBD resumes it with a sync UUID.)
    c.adm(0, &["disconnect", RES]);
    let left = c.conn(0, 1)["peer_devices"][0]["out_of_sync_kib"]
        .as_u64()
        .unwrap();
    assert!(left > 0, "the sync was still running");
    assert_eq!(c.status(1)["volumes"][0]["disk_state"], "Inconsistent");
    let out = c.oxadm_out(1, &["primary", RES]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an Inconsistent disk was promoted: {err}"
    );
    assert!(err.contains("UpToDate"), "{err}");
    c.adm(0, &["connect", RES]);
    c.wait_synced(0, &[1]);
    c.wait_synced(1, &[0]);

    // The Secondary refuses host writes (and serves reads).
    assert_eq!(c.status(1)["role"], "Secondary");
    c.export(1);
    let hb = Host::attach(&c, 1);
    assert!(
        hb.write(7, &pattern(7, 9, 0xEE)).is_err(),
        "a Secondary accepted a write"
    );
    assert!(hb.read(7).is_ok());
    drop(hb);
    c.unexport(1);

    c.adm(0, &["verify", RES]);
    c.wait_until("online verify to finish", |c| {
        c.conn(0, 1)["peer_devices"][0]["verify_finished"] == true
    });
    let pd = c.conn(0, 1)["peer_devices"][0].clone();
    assert_eq!(pd["verify_out_of_sync_kib"], 0, "{pd}");
    assert_eq!(pd["out_of_sync_kib"], 0, "{pd}");
    assert_eq!(pd["replication_state"], "Established", "{pd}");
    let status_text = c.adm(0, &["status", RES]);
    assert!(
        status_text.contains("role:Primary") && status_text.contains("verify-out-of-sync:0"),
        "{status_text}"
    );

    // Verify really compares: blocks changed behind b's back are found, and resynced (only
    // they) at the next connect.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&c.nodes[1].file)
            .unwrap();
        for lba in [10u64, 2000, 5000] {
            f.write_at(&pattern(lba, 77, 0xDD), lba * BS).unwrap();
        }
        f.sync_data().unwrap();
    }
    c.adm(0, &["verify", RES]);
    c.wait_until("the second online verify to finish", |c| {
        c.conn(0, 1)["peer_devices"][0]["verify_finished"] == true
    });
    let pd = c.conn(0, 1)["peer_devices"][0].clone();
    assert_eq!(pd["verify_out_of_sync_kib"], 3 * 4, "{pd}");
    assert_eq!(pd["out_of_sync_kib"], 3 * 4, "{pd}");
    c.adm(0, &["disconnect", RES]);
    c.adm(0, &["connect", RES]);
    c.wait_synced(0, &[1]);
    c.wait_synced(1, &[0]);
    let runs = resync_counts(&c.log_lines(0, "resync to b done"));
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[1], 3, "only the blocks verify found are resynced");

    let len = c.data_bytes(0);
    c.unexport(0);
    c.adm(0, &["down", RES]);
    c.adm(1, &["down", RES]);
    let written = assert_same_data(&c.nodes[0].file, &c.nodes[1].file, len);
    assert!(written > 0, "the workload wrote nothing");
    c.stop(0);
    c.stop(1);
}

/// A Secondary that was away gets exactly the blocks written meanwhile, nothing more.
#[test]
fn secondary_returns_resyncs_only_dirty_blocks() {
    let _s = serial();
    let mut c = Cluster::new(Spec {
        test: 1,
        hosts: 2,
        file_bytes: BIG_FILE,
        resync_rate: "400M",
        extra: "",
    });
    c.up_and_sync();
    let len = c.data_bytes(0);
    let blocks = len / BS;
    assert!(blocks >= 16384, "64 MiB of data: {blocks} blocks");
    c.export(0);
    let host = Host::attach(&c, 0);

    // A clean departure of the Secondary, daemon and all.
    c.adm(1, &["down", RES]);
    c.stop(1);
    c.wait_until("the Primary to notice", |c| {
        c.conn(0, 1)["connection_state"] != "Connected"
    });

    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut dirty = std::collections::BTreeSet::new();
    while dirty.len() < 300 {
        dirty.insert(rng.next() % blocks);
    }
    // Some blocks twice: still one dirty block each.
    for (n, &lba) in dirty.iter().enumerate() {
        host.write_ok(lba, &pattern(lba, 1, 0xA1));
        if n % 7 == 0 {
            host.write_ok(lba, &pattern(lba, 2, 0xA1));
        }
    }
    let pd = c.conn(0, 1)["peer_devices"][0].clone();
    assert_eq!(
        pd["out_of_sync_kib"],
        json!(300 * 4),
        "the bitmap holds the 300 blocks: {pd}"
    );

    // Back with the same file.
    c.start(1);
    c.adm(1, &["up", RES]);
    c.wait_synced(0, &[1]);
    c.wait_synced(1, &[0]);
    let src = resync_counts(&c.log_lines(0, "resync to b done"));
    let dst = resync_counts(&c.log_lines(1, "resync from a done"));
    // The initial full sync, then the dirty blocks only.
    assert_eq!(src.len(), 2, "two resyncs on the Primary: {src:?}");
    assert_eq!(src[0], blocks, "the initial sync is a full one");
    assert_eq!(src[1], 300, "only the dirty blocks are resynced");
    assert_eq!(dst, vec![300], "the returning Secondary saw the same count");

    drop(host);
    c.unexport(0);
    c.adm(0, &["down", RES]);
    c.adm(1, &["down", RES]);
    assert_same_data(&c.nodes[0].file, &c.nodes[1].file, len);
    for &lba in dirty.iter().take(20) {
        let ver = if dirty.iter().position(|&x| x == lba).unwrap() % 7 == 0 {
            2
        } else {
            1
        };
        assert!(
            read_block(&c.nodes[1].file, lba) == pattern(lba, ver, 0xA1),
            "block {lba}"
        );
    }
    c.stop(0);
    c.stop(1);
}

/// kill -9 of the Primary under protocol C: the promoted Secondary has every acknowledged
/// write.
#[test]
fn primary_crash_loses_no_acknowledged_write() {
    let _s = serial();
    let mut c = Cluster::new(Spec {
        test: 2,
        hosts: 2,
        file_bytes: SMALL_FILE,
        resync_rate: "400M",
        extra: "",
    });
    c.up_and_sync();
    assert!(c.data_bytes(0) / BS >= 2048);
    c.export(0);
    let host = Arc::new(Host::attach(&c, 0));

    const THREADS: u64 = 4;
    /// Per LBA: the last acknowledged version, and a version sent but never acknowledged.
    type Log = HashMap<u64, (Option<u64>, Option<u64>)>;
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (host, acked, stop) = (host.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                // Each writer owns the LBAs ≡ t (mod THREADS) among the first 2048, so no LBA
                // ever has two writes in flight, and LBAs are rewritten often.
                let mut log: Log = HashMap::new();
                let mut rng = Rng(0x1234_5678 + t);
                let mut version = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let lba = (rng.next() % (2048 / THREADS)) * THREADS + t;
                    version += 1;
                    match host.write(lba, &pattern(lba, version, t as u8)) {
                        Ok(()) => {
                            log.entry(lba).or_default().0 = Some(version);
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            log.entry(lba).or_default().1 = Some(version);
                            break;
                        }
                    }
                }
                (t, log)
            })
        })
        .collect();
    let deadline = Instant::now() + WAIT;
    while acked.load(Ordering::Relaxed) < 1500 {
        assert!(Instant::now() < deadline, "writes do not get acknowledged");
        assert!(
            writers.iter().all(|w| !w.is_finished()),
            "a writer failed before the crash"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    c.kill(0);
    let at_kill = acked.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let logs: Vec<(u64, Log)> = writers
        .into_iter()
        .map(|w| w.join().expect("writer"))
        .collect();
    drop(host);
    let total_acked = acked.load(Ordering::Relaxed);
    assert!(total_acked >= at_kill);

    // The Secondary notices, and may be promoted: its disk is UpToDate.
    c.wait_until("the Secondary to lose the Primary", |c| {
        c.conn(1, 0)["connection_state"] != "Connected"
    });
    c.adm(1, &["primary", RES]);
    let st = c.status(1);
    assert_eq!(st["role"], "Primary", "{st}");
    assert_eq!(st["volumes"][0]["disk_state"], "UpToDate", "{st}");

    // The new Primary writes while the old one is away (LBAs the writers above never used).
    c.export(1);
    let hb = Host::attach(&c, 1);
    for lba in 4096..4146 {
        hb.write_ok(lba, &pattern(lba, 1, 0xCB));
    }
    drop(hb);
    c.unexport(1);

    // The crashed Primary returns as a Secondary. Its activity log names the 4 MiB extents it
    // may have written without the peer (blocks 0..2048 = extents 0 and 1): those and b's 50
    // new blocks are resynced from b, nothing else.
    c.start(0);
    c.adm(0, &["up", RES]);
    c.wait_synced(1, &[0]);
    c.wait_synced(0, &[1]);
    assert_eq!(c.status(0)["role"], "Secondary");
    assert_eq!(
        resync_counts(&c.log_lines(1, "resync to a done")),
        vec![2048 + 50],
        "b resyncs a's activity-log extents and its own writes"
    );
    let len = c.data_bytes(1);
    c.adm(1, &["down", RES]);
    c.adm(0, &["down", RES]);
    assert_same_data(&c.nodes[0].file, &c.nodes[1].file, len);
    for lba in 4096..4146 {
        assert!(
            read_block(&c.nodes[0].file, lba) == pattern(lba, 1, 0xCB),
            "block {lba}"
        );
    }
    c.stop(0);
    c.stop(1);

    let f = &c.nodes[1].file;
    let mut checked = 0;
    let mut in_flight = 0;
    for (t, log) in &logs {
        for (&lba, &(acked_v, pending_v)) in log {
            let got = read_block(f, lba);
            let ok_acked = acked_v.is_some_and(|v| got == pattern(lba, v, *t as u8));
            let ok_pending = pending_v.is_some_and(|v| got == pattern(lba, v, *t as u8));
            if pending_v.is_some() {
                in_flight += 1;
            }
            if let Some(v) = acked_v {
                checked += 1;
                assert!(
                    ok_acked || ok_pending,
                    "LBA {lba}: the acknowledged version {v} of writer {t} is lost (found version {} tag {}; pending {pending_v:?})",
                    u64::from_le_bytes(got[8..16].try_into().unwrap()),
                    got[16]
                );
            }
        }
    }
    assert!(checked > 100, "only {checked} LBAs were acknowledged");
    eprintln!("{total_acked} writes acknowledged over {checked} LBAs, {in_flight} in flight at the crash; all present");
}

/// Both sides write while disconnected: the split brain is detected at the handshake on both
/// nodes, nothing is resynced, and each side keeps its own data, until the victim discards its
/// changes.
#[test]
fn split_brain_is_detected_and_nothing_is_touched() {
    let _s = serial();
    let mut c = Cluster::new(Spec {
        test: 3,
        hosts: 2,
        file_bytes: SMALL_FILE,
        resync_rate: "400M",
        extra: "",
    });
    c.up_and_sync();
    c.export(0);
    let ha = Host::attach(&c, 0);
    // Common data, replicated.
    for lba in 0..100 {
        ha.write_ok(lba, &pattern(lba, 1, 0xBA));
    }
    c.adm(0, &["disconnect", RES]);
    c.adm(1, &["disconnect", RES]);
    assert_eq!(c.conn(0, 1)["connection_state"], "StandAlone");
    assert_eq!(c.conn(1, 0)["connection_state"], "StandAlone");

    // A writes 0..50; B, promoted, writes 25..75.
    for lba in 0..50 {
        ha.write_ok(lba, &pattern(lba, 2, 0xAA));
    }
    drop(ha);
    c.unexport(0);
    c.adm(1, &["primary", RES]);
    c.export(1);
    let hb = Host::attach(&c, 1);
    for lba in 25..75 {
        hb.write_ok(lba, &pattern(lba, 2, 0xBB));
    }
    drop(hb);
    c.unexport(1);
    c.adm(1, &["secondary", RES]);

    let expect_a = |lba: u64| {
        if lba < 50 {
            pattern(lba, 2, 0xAA)
        } else {
            pattern(lba, 1, 0xBA)
        }
    };
    let expect_b = |lba: u64| {
        if (25..75).contains(&lba) {
            pattern(lba, 2, 0xBB)
        } else {
            pattern(lba, 1, 0xBA)
        }
    };
    let split_seen = |c: &Cluster| {
        (0..2).all(|i| {
            let cn = c.conn(i, 1 - i as u64);
            cn["split_brain"] == true && cn["connection_state"] == "StandAlone"
        })
    };

    c.adm(0, &["connect", RES]);
    c.adm(1, &["connect", RES]);
    c.wait_until("split brain on both nodes", split_seen);
    for i in 0..2 {
        let cn = c.conn(i, 1 - i as u64);
        assert!(
            cn["last_error"]
                .as_str()
                .unwrap_or("")
                .contains("Split-Brain"),
            "{cn}"
        );
        assert_eq!(cn["peer_devices"][0]["resynced_blocks"], 0, "{cn}");
        assert_eq!(cn["peer_devices"][0]["replication_state"], "Off", "{cn}");
        // Node i's own changes are still marked for the peer: nothing was synced.
        assert!(
            cn["peer_devices"][0]["out_of_sync_kib"].as_u64().unwrap() >= 50 * 4,
            "{cn}"
        );
        assert_eq!(c.status(i)["volumes"][0]["disk_state"], "UpToDate");
    }
    assert_eq!(c.status(0)["role"], "Primary");
    // Only the initial full sync ever ran.
    assert_eq!(resync_counts(&c.log_lines(0, "resync to b done")).len(), 1);
    assert!(c.log_lines(1, "resync from a done").len() == 1);

    c.adm(0, &["down", RES]);
    c.adm(1, &["down", RES]);
    for lba in 0..100 {
        assert!(
            read_block(&c.nodes[0].file, lba) == expect_a(lba),
            "node a, block {lba}"
        );
        assert!(
            read_block(&c.nodes[1].file, lba) == expect_b(lba),
            "node b, block {lba}"
        );
    }

    // The split brain survives a restart of the resource (it is in the metadata) ...
    c.adm(0, &["up", RES]);
    c.adm(1, &["up", RES]);
    c.wait_until("split brain after up", split_seen);
    // ... until b is declared the victim.
    c.adm(1, &["connect", "--discard-my-data", RES]);
    c.adm(0, &["connect", RES]);
    c.wait_synced(0, &[1]);
    c.wait_synced(1, &[0]);
    // b's changes (25..75) and a's (0..50) are both resynced from a: blocks 0..75.
    let src = resync_counts(&c.log_lines(0, "resync to b done"));
    assert_eq!(src.len(), 2, "{src:?}");
    assert_eq!(src[1], 75, "a resyncs both sides' changed blocks to b");
    let len = c.data_bytes(0);
    c.adm(0, &["down", RES]);
    c.adm(1, &["down", RES]);
    assert_same_data(&c.nodes[0].file, &c.nodes[1].file, len);
    for lba in 0..100 {
        assert!(
            read_block(&c.nodes[1].file, lba) == expect_a(lba),
            "node b after recovery, block {lba}"
        );
    }
    c.stop(0);
    c.stop(1);
}

/// Three nodes in a mesh, one Primary: both Secondaries get the initial sync and every write.
#[test]
fn three_nodes_one_primary() {
    let _s = serial();
    let mut c = Cluster::new(Spec {
        test: 4,
        hosts: 3,
        file_bytes: SMALL_FILE,
        resync_rate: "400M",
        extra: "  connection-mesh { hosts a b c; }\n",
    });
    c.up_and_sync();
    // b and c know each other too.
    c.wait_until("b and c connected", |c| {
        c.conn(1, 2)["connection_state"] == "Connected"
            && c.conn(2, 1)["connection_state"] == "Connected"
    });
    c.export(0);
    oxperf(&c, 0, "randwrite", 2);
    let v = oxperf(&c, 0, "verify", 1);
    assert_eq!(v["mismatches"].as_u64(), Some(0), "{v}");
    let len = c.data_bytes(0);
    c.unexport(0);
    for i in 0..3 {
        c.adm(i, &["down", RES]);
    }
    let written = assert_same_data(&c.nodes[0].file, &c.nodes[1].file, len);
    assert!(written > 0);
    assert_same_data(&c.nodes[0].file, &c.nodes[2].file, len);
    for i in 0..3 {
        c.stop(i);
    }
}

/// Protocols A (a–b) and B (a–c): epochs, barriers and the receiver's pause/resume under a
/// queue-depth-16 verify workload. After a reconnect, whatever a could not be sure of (epochs
/// not yet barrier-acked) is resynced, and then the three disks are identical.
#[test]
fn protocols_a_and_b_replicate_in_order() {
    let _s = serial();
    let mut c = Cluster::new(Spec {
        test: 6,
        hosts: 3,
        file_bytes: SMALL_FILE,
        resync_rate: "400M",
        extra: "  connection { host a; host b; net { protocol A; } }\n  connection { host a; host c; net { protocol B; } }\n  connection { host b; host c; }\n",
    });
    c.up_and_sync();
    assert_eq!(c.conn(0, 1)["protocol"], "A");
    assert_eq!(c.conn(0, 2)["protocol"], "B");
    c.export(0);
    let v = oxperf(&c, 0, "verify", 3);
    assert_eq!(v["mismatches"].as_u64(), Some(0), "{v}");
    c.adm(0, &["disconnect", RES]);
    c.adm(0, &["connect", RES]);
    c.wait_synced(0, &[1, 2]);
    c.wait_synced(1, &[0, 2]);
    c.wait_synced(2, &[0, 1]);
    c.adm(0, &["verify", RES]);
    c.wait_until("online verify against b and c to finish", |c| {
        (1..3).all(|p| c.conn(0, p)["peer_devices"][0]["verify_finished"] == true)
    });
    for p in 1..3 {
        let pd = c.conn(0, p)["peer_devices"][0].clone();
        assert_eq!(pd["verify_out_of_sync_kib"], 0, "node-id {p}: {pd}");
    }
    let len = c.data_bytes(0);
    c.unexport(0);
    for i in 0..3 {
        c.adm(i, &["down", RES]);
    }
    let written = assert_same_data(&c.nodes[0].file, &c.nodes[1].file, len);
    assert!(written > 0);
    assert_same_data(&c.nodes[0].file, &c.nodes[2].file, len);
    for i in 0..3 {
        c.stop(i);
    }
}

/// Reads until EOF or error; true when the peer closed the connection within `WAIT`.
fn closed_by_peer(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

fn raw(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect to the replication listener");
    s.write_all(bytes).expect("send");
    s
}

fn initial(data: bool, sender: u32, receiver: u32, resource: &str) -> Vec<u8> {
    let i = Initial {
        sender_node_id: sender,
        receiver_node_id: receiver,
        resource: resource.into(),
    };
    let p = if data {
        Packet::InitialData(i)
    } else {
        Packet::InitialMeta(i)
    };
    p.encode(0, 0)
}

/// Malformed packets, a wrong version, unknown node ids and resources, broken resource files
/// and bad RPC parameters: each is a dropped connection or a clear error, never a panic, and
/// replication goes on afterwards.
#[test]
fn bad_input_never_panics() {
    let _s = serial();
    let mut c = Cluster::new(Spec {
        test: 7,
        hosts: 2,
        file_bytes: SMALL_FILE,
        resync_rate: "400M",
        extra: "",
    });
    c.up_and_sync();
    // b (node-id 1) listens; a dials. With a disconnected, b waits for a dialer.
    c.adm(0, &["disconnect", RES]);
    let away = Instant::now();
    c.wait_until("b to lose a", |c| {
        c.conn(1, 0)["connection_state"] == "Connecting"
    });
    let port = c.conf_port();
    let b_addr: SocketAddr = format!("127.0.0.2:{port}").parse().unwrap();

    // (a) The wire.
    let mut garbage = vec![0u8; 64];
    for (i, b) in garbage.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37) ^ 0x5a;
    }
    // (what, bytes, what b's log says about it)
    let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![("garbage", garbage, "bad magic 0x5a7f1035")];
    let mut bad_magic = initial(true, 0, 1, RES);
    bad_magic[0] ^= 0xff;
    cases.push(("wrong magic", bad_magic, "bad magic 0xb0585250"));
    let mut too_long = Header {
        volume: 0,
        cmd: wire::Cmd::InitialData,
        len: 0,
    }
    .encode();
    too_long[8..12].copy_from_slice(&(wire::MAX_PAYLOAD + 1).to_be_bytes());
    cases.push(("oversized length", too_long.to_vec(), "exceeds the limit"));
    cases.push((
        "unknown node-id",
        initial(true, 7, 1, RES),
        "resource 'r0' has no peer with node-id 7",
    ));
    cases.push((
        "unknown resource",
        initial(true, 0, 1, "nosuch"),
        "resource 'nosuch' has no peer",
    ));
    let mut truncated = initial(true, 0, 1, RES);
    truncated.truncate(HEADER_LEN + 3);
    cases.push(("Initial cut short", truncated, "reading a InitialData body"));
    for (what, bytes, logged) in &cases {
        let mut s = raw(b_addr, bytes);
        if *what == "Initial cut short" {
            // The listener's read times out (5 s) and closes; we close first here.
            s.shutdown(std::net::Shutdown::Write).ok();
        }
        assert!(
            closed_by_peer(&mut s),
            "{what}: the connection was not dropped"
        );
        c.wait_until(&format!("b to log the {what} case"), |c| {
            !c.log_lines(1, logged).is_empty()
        });
        c.d(1).assert_alive();
    }

    // A valid pair of Initials for node 0, then Features no version overlaps.
    let mut data = raw(b_addr, &initial(true, 0, 1, RES));
    let _meta = raw(b_addr, &initial(false, 0, 1, RES));
    let mut hb = [0u8; HEADER_LEN];
    data.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    data.read_exact(&mut hb).expect("b starts the handshake");
    let h = Header::parse(&hb).expect("b's header");
    let mut body = vec![0u8; h.len as usize];
    data.read_exact(&mut body).unwrap();
    match Packet::parse(&h, &body).expect("b's packet") {
        Packet::Features(f) => assert_eq!((f.sender_node_id, f.receiver_node_id), (1, 0)),
        p => panic!("expected Features, got {:?}", p.cmd()),
    }
    let ours = Features {
        proto_min: 99,
        proto_max: 99,
        feature_flags: 0,
        sender_node_id: 0,
        receiver_node_id: 1,
    };
    data.write_all(&Packet::Features(ours).encode(0, 0))
        .unwrap();
    assert!(
        closed_by_peer(&mut data),
        "incompatible version: the connection was not dropped"
    );
    c.wait_until("the version refusal in b's log", |c| {
        !c.log_lines(1, "incompatible protocol versions").is_empty()
    });

    // Features from an impostor node-id.
    let mut data = raw(b_addr, &initial(true, 0, 1, RES));
    let _meta = raw(b_addr, &initial(false, 0, 1, RES));
    data.read_exact(&mut hb).expect("b starts the handshake");
    let h = Header::parse(&hb).unwrap();
    let mut body = vec![0u8; h.len as usize];
    data.read_exact(&mut body).unwrap();
    let ours = Features {
        proto_min: wire::PROTO_MIN,
        proto_max: wire::PROTO_MAX,
        feature_flags: 0,
        sender_node_id: 5,
        receiver_node_id: 1,
    };
    data.write_all(&Packet::Features(ours).encode(0, 0))
        .unwrap();
    assert!(
        closed_by_peer(&mut data),
        "wrong node-id in Features: the connection was not dropped"
    );
    c.d(1).assert_alive();

    // A lone meta socket that names the real peer, left behind (and closed) just before the
    // real peer dials: it must not be paired with the real data socket.
    // Before the fix in connect.rs it was, and the link stalled until the ping timeout.
    let _lone = raw(b_addr, &initial(false, 0, 1, RES));
    // And a long absence of the dialer (longer than connect-int, 10 s): the acceptor must
    // still meet it. Before the fix in connect.rs the two never reconnected.
    std::thread::sleep(Duration::from_secs(12).saturating_sub(away.elapsed()));

    // The real peer still connects and replicates.
    c.adm(0, &["connect", RES]);
    c.wait_synced(0, &[1]);
    c.wait_synced(1, &[0]);
    c.export(0);
    // `down` refuses while the device is exported, and changes nothing.
    let out = c.oxadm_out(0, &["down", RES]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("in use"), "{err}");
    assert_eq!(c.status(0)["role"], "Primary");
    assert_eq!(c.conn(0, 1)["connection_state"], "Connected");
    let h = Host::attach(&c, 0);
    for lba in 0..64 {
        h.write_ok(lba * 7, &pattern(lba * 7, 1, 0x66));
    }
    drop(h);
    c.adm(0, &["verify", RES]);
    c.wait_until("online verify to finish", |c| {
        c.conn(0, 1)["peer_devices"][0]["verify_finished"] == true
    });
    assert_eq!(c.conn(0, 1)["peer_devices"][0]["verify_out_of_sync_kib"], 0);

    // The new link never broke (a link over the stray meta socket did, at the ping timeout).
    let lost = c.log_lines(1, "connection to a lost");
    assert_eq!(lost.len(), 1, "only the disconnect ended a link: {lost:#?}");

    // (b) Broken resource files: exit 10 with file:line, and nothing reaches the daemon.
    let broken = [
        ("missing-semi.res", "resource r9 {\n  on a { node-id 0; device ox9; disk Disk9; address 127.0.0.1:7000 }\n  on b { node-id 1; device ox9; disk Disk9; address 127.0.0.2:7000; }\n}\n", ":2"),
        ("unknown-kw.res", "resource r9 {\n  on a { node-id 0; device ox9; disk Disk9; address 127.0.0.1:7000; }\n  on b { node-id 1; device ox9; disk Disk9; address 127.0.0.2:7000; }\n  bogus-keyword 1;\n}\n", ":4"),
        ("three-hosts.res", "resource r9 {\n  on a { device ox9; disk Disk9; address 127.0.0.1:7000; }\n  on b { device ox9; disk Disk9; address 127.0.0.2:7000; }\n  on c { device ox9; disk Disk9; address 127.0.0.3:7000; }\n}\n", ":"),
        ("unclosed.res", "resource r9 {\n  on a { node-id 0; device ox9; disk Disk9; address 127.0.0.1:7000; }\n", ":"),
    ];
    for (name, text, line) in broken {
        let path = c.files.path(name);
        std::fs::write(&path, text).unwrap();
        for cmd in [
            &["up", "r9"][..],
            &["dump", "r9"][..],
            &["primary", "r9"][..],
        ] {
            let out = Command::new(OXADM)
                .arg("-c")
                .arg(&path)
                .args(["--host", "a", "-s"])
                .arg(&c.d(0).sock)
                .args(cmd)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(10), "{name} {cmd:?}: {err}");
            assert!(
                err.contains(&format!("{name}{line}")),
                "{name} {cmd:?}: no file:line in {err:?}"
            );
        }
    }
    let all = c.d(0).ok("repl_status", json!({}));
    assert_eq!(
        all.as_array().map(Vec::len),
        Some(1),
        "only r0 exists: {all}"
    );
    assert!(common::bdev_names(c.d(0)).iter().all(|n| n != "ox9"));

    // (c) Bad RPC parameters.
    let d = c.d(1);
    let bad: Vec<(&str, Value)> = vec![
        (
            "repl_attach",
            json!({"resource": "nosuch", "device": "oxq", "disk": "Disk0"}),
        ),
        ("repl_new_resource", json!({"name": "r5", "node_id": 99})),
        (
            "repl_new_resource",
            json!({"name": "bad name!", "node_id": 1}),
        ),
        ("repl_new_resource", json!({"name": RES, "node_id": 1})),
        ("repl_new_resource", json!({"name": "r6"})),
        (
            "repl_new_resource",
            json!({"name": "r7", "node_id": 1, "bogus": 1}),
        ),
        (
            "repl_new_path",
            json!({"resource": RES, "peer_node_id": 0, "local_addr": "not-an-address", "remote_addr": "127.0.0.1:1"}),
        ),
        (
            "repl_new_path",
            json!({"resource": RES, "peer_node_id": 0, "local_addr": "127.0.0.2:1", "remote_addr": "127.0.0.1:99999"}),
        ),
        (
            "repl_new_path",
            json!({"resource": RES, "peer_node_id": 9, "local_addr": "127.0.0.2:1", "remote_addr": "127.0.0.1:1"}),
        ),
        (
            "repl_attach",
            json!({"resource": RES, "device": "oxz", "disk": "Disk0", "meta_disk": "/dev/x"}),
        ),
        (
            "repl_attach",
            json!({"resource": RES, "device": "oxz", "disk": "Disk0"}),
        ),
        ("repl_new_peer", json!({"resource": RES, "peer_node_id": 0})),
        ("repl_new_peer", json!({"resource": RES, "peer_node_id": 1})),
        (
            "repl_new_peer",
            json!({"resource": RES, "peer_node_id": 99}),
        ),
        (
            "repl_new_peer",
            json!({"resource": RES, "peer_node_id": 2, "net": {"protocol": "D"}}),
        ),
        ("repl_connect", json!({"resource": RES, "peer_node_id": 5})),
        (
            "repl_disconnect",
            json!({"resource": "nosuch", "peer_node_id": 0}),
        ),
        ("repl_primary", json!({"resource": "nosuch"})),
        ("repl_verify", json!({"resource": RES, "peer_node_id": 3})),
        ("repl_status", json!({"resource": "nosuch"})),
        ("repl_down", json!({"resource": "nosuch"})),
        ("repl_status", json!([1, 2])),
    ];
    for (method, params) in bad {
        let (code, msg) = d.err(method, params.clone());
        assert!(
            code < 0 && !msg.is_empty(),
            "{method} {params}: {code} {msg}"
        );
        d.assert_alive();
    }
    // A Secondary cannot be promoted while the peer is Primary.
    let (_, msg) = d.err("repl_primary", json!({"resource": RES}));
    assert!(msg.contains("Primary"), "{msg}");
    // Still replicating, and still in sync.
    c.wait_synced(0, &[1]);
    c.wait_synced(1, &[0]);
    let len = c.data_bytes(0);
    c.unexport(0);
    c.adm(0, &["down", RES]);
    c.adm(1, &["down", RES]);
    assert_same_data(&c.nodes[0].file, &c.nodes[1].file, len);
    for lba in 0..64 {
        assert!(read_block(&c.nodes[1].file, lba * 7) == pattern(lba * 7, 1, 0x66));
    }
    c.stop(0);
    c.stop(1);
}

impl Cluster {
    /// The replication port written into the resource file.
    fn conf_port(&self) -> u16 {
        let text = std::fs::read_to_string(&self.conf).unwrap();
        let at = text.find("address 127.0.0.1:").unwrap() + "address 127.0.0.1:".len();
        text[at..].split(';').next().unwrap().parse().unwrap()
    }
}
