//! Shared harness: runs the real `oxstor` binary on a private socket and talks to it.
//!
//! Each [`Daemon`] gets its own temporary directory (socket, stderr log, scratch files); Drop
//! kills the process if it is still running and removes the directory.

#![allow(dead_code)]

use oxstor_tools::client::{Client, ClientError};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const OXSTOR: &str = env!("CARGO_BIN_EXE_oxstor");
pub const OXCTL: &str = env!("CARGO_BIN_EXE_oxctl");

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "oxt-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Daemon {
    pub child: Child,
    pub sock: PathBuf,
    pub stderr_path: PathBuf,
    pub dir: TempDir,
}

/// How a daemon that was expected to fail ended.
pub struct Failed {
    pub status: ExitStatus,
    pub stderr: String,
}

fn spawn(dir: &TempDir, extra: &[&str]) -> (Child, PathBuf, PathBuf) {
    let sock = dir.path("rpc.sock");
    let stderr_path = dir.path("stderr.log");
    let stderr = std::fs::File::create(&stderr_path).expect("create stderr log");
    let mut cmd = Command::new(OXSTOR);
    // Defaults unless the test passes its own.
    if !extra.contains(&"-m") {
        cmd.args(["-m", "0x1"]);
    }
    if !extra.contains(&"-r") {
        cmd.arg("-r").arg(&sock);
    }
    let child = cmd
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn oxstor");
    (child, sock, stderr_path)
}

impl Daemon {
    pub fn start() -> Daemon {
        Daemon::start_with(&[])
    }

    /// Starts `oxstor -m 0x1 -r <tmp sock> EXTRA...` and waits until it accepts RPC.
    pub fn start_with(extra: &[&str]) -> Daemon {
        Daemon::start_in(TempDir::new("d"), extra)
    }

    pub fn start_in(dir: TempDir, extra: &[&str]) -> Daemon {
        let (child, sock, stderr_path) = spawn(&dir, extra);
        let mut d = Daemon {
            child,
            sock,
            stderr_path,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if d.stderr().contains("oxstor: listening on") && UnixStream::connect(&d.sock).is_ok() {
                return d;
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("oxstor exited early ({status}):\n{}", d.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "oxstor did not come up:\n{}",
                d.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs a daemon that must fail to start; returns its exit status and stderr.
    pub fn expect_failure(dir: &TempDir, extra: &[&str]) -> Failed {
        let (mut child, _sock, stderr_path) = spawn(dir, extra);
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Ok(Some(s)) = child.try_wait() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "oxstor kept running:\n{}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Failed {
            status,
            stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.sock, Some(Duration::from_secs(30))).expect("connect to oxstor")
    }

    /// One call on a fresh connection: the result, or the JSON-RPC error's (code, message).
    pub fn call(&self, method: &str, params: Value) -> Result<Value, (i32, String)> {
        let params = (!params.is_null()).then_some(params);
        match self.client().call(method, params) {
            Ok(v) => Ok(v),
            Err(ClientError::Rpc(e)) => Err((e.code, e.message)),
            Err(e) => panic!("{method}: transport failure: {e}\n{}", self.stderr()),
        }
    }

    pub fn ok(&self, method: &str, params: Value) -> Value {
        self.call(method, params)
            .unwrap_or_else(|(c, m)| panic!("{method} failed: {c} {m}"))
    }

    pub fn err(&self, method: &str, params: Value) -> (i32, String) {
        match self.call(method, params) {
            Ok(v) => panic!("{method} unexpectedly succeeded: {v}"),
            Err(e) => e,
        }
    }

    /// Asserts the daemon still answers a plain request.
    pub fn assert_alive(&self) {
        let v = self.ok("spdk_get_version", Value::Null);
        assert_eq!(v["version"], "oxstor v0.1.0");
    }

    /// Writes raw bytes on a new connection, half-closes it, and returns every response.
    pub fn raw(&self, bytes: &[u8]) -> Vec<Value> {
        let mut s = UnixStream::connect(&self.sock).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).ok();
        s.write_all(bytes).expect("write request");
        s.shutdown(std::net::Shutdown::Write).ok();
        read_all_values(s)
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(
            ok.map(|s| s.success()).unwrap_or(false),
            "kill -TERM failed"
        );
        self.wait(Duration::from_secs(30))
    }

    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "oxstor did not exit:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads concatenated JSON values until EOF.
pub fn read_all_values(s: impl Read) -> Vec<Value> {
    serde_json::Deserializer::from_reader(BufReader::new(s))
        .into_iter::<Value>()
        .map_while(Result::ok)
        .collect()
}

/// Reads one newline-terminated response line.
pub fn read_line_value(r: &mut impl BufRead) -> Value {
    let mut line = String::new();
    r.read_line(&mut line).expect("read response");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad response {line:?}: {e}"))
}

pub fn request(method: &str, params: Value, id: u64) -> Vec<u8> {
    let mut v = json!({ "jsonrpc": "2.0", "method": method, "id": id });
    if !params.is_null() {
        v["params"] = params;
    }
    serde_json::to_vec(&v).expect("serialize")
}

pub fn malloc(d: &Daemon, name: &str) -> String {
    d.ok(
        "bdev_malloc_create",
        json!({ "name": name, "num_blocks": 2048, "block_size": 512 }),
    )
    .as_str()
    .expect("name")
    .to_string()
}

pub fn bdev_names(d: &Daemon) -> Vec<String> {
    d.ok("bdev_get_bdevs", Value::Null)
        .as_array()
        .expect("array")
        .iter()
        .map(|b| b["name"].as_str().expect("name").to_string())
        .collect()
}

pub fn assert_no_panic(stderr: &str) {
    assert!(!stderr.contains("panicked"), "daemon panicked:\n{stderr}");
}

pub fn file_of_size(path: &Path, bytes: u64) {
    let f = std::fs::File::create(path).expect("create file");
    f.set_len(bytes).expect("size file");
}

/// The `oxperf` binary next to `oxstor`, built on first use (it is another package's binary,
/// which cargo does not build for these tests).
pub fn oxperf_bin() -> PathBuf {
    let p = PathBuf::from(OXSTOR).with_file_name("oxperf");
    if !p.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "oxstor-perf", "--bin", "oxperf"])
            .status()
            .expect("build oxperf");
        assert!(status.success(), "cargo build -p oxstor-perf failed");
    }
    assert!(p.exists(), "oxperf not found at {}", p.display());
    p
}

/// A TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// Exports `bdev` as the only namespace of a new subsystem `nqn` on 127.0.0.1:`port` (the
/// TCP transport must exist).
pub fn export_tcp(d: &Daemon, nqn: &str, serial: &str, bdev: &str, port: u16) {
    d.ok(
        "nvmf_create_subsystem",
        json!({"nqn": nqn, "allow_any_host": true, "serial_number": serial}),
    );
    d.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": nqn, "namespace": {"bdev_name": bdev}}),
    );
    d.ok(
        "nvmf_subsystem_add_listener",
        json!({"nqn": nqn, "listen_address": {"trtype": "tcp", "adrfam": "ipv4",
               "traddr": "127.0.0.1", "trsvcid": port.to_string()}}),
    );
}

/// A one-reactor runtime in this test process, for NVMe/TCP host bdevs that talk to a daemon.
pub fn host_runtime() -> oxstor_reactor::Handle {
    use oxstor_reactor::{CoreMask, PoolConfig, Runtime, RuntimeConfig};
    use std::sync::{Mutex, OnceLock};
    static RT: OnceLock<Mutex<Runtime>> = OnceLock::new();
    let rt = RT.get_or_init(|| {
        let rt = Runtime::start(RuntimeConfig {
            cores: CoreMask::from_cores(vec![0]).expect("core 0"),
            pin: false,
            pool: PoolConfig {
                counts: [1024, 64, 64, 64, 64, 64],
            },
            ..Default::default()
        })
        .expect("start the test's reactor");
        oxstor_bdev::registry::set_runtime(Some(rt.handle()));
        Mutex::new(rt)
    });
    rt.lock().unwrap_or_else(|p| p.into_inner()).handle()
}
