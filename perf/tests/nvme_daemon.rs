//! `oxperf nvme` against the real `oxstor` daemon over NVMe/TCP: the verify workload on
//! several queue pairs (one per oxperf core), checked end to end.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const OXPERF: &str = env!("CARGO_BIN_EXE_oxperf");

/// The daemon binary, built by the same `cargo test --workspace` next to oxperf.
fn oxstor_bin() -> PathBuf {
    let p = PathBuf::from(OXPERF).with_file_name("oxstor");
    if !p.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "oxstor-tools", "--bin", "oxstor"])
            .status()
            .expect("build oxstor");
        assert!(status.success());
    }
    p
}

struct Daemon {
    child: Child,
    sock: PathBuf,
    dir: PathBuf,
}

impl Daemon {
    fn start() -> Daemon {
        let dir = std::env::temp_dir().join(format!("oxperf-nvme-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("rpc.sock");
        let child = Command::new(oxstor_bin())
            .args(["-m", "0x1", "-r"])
            .arg(&sock)
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("stderr.log")).unwrap(),
            ))
            .spawn()
            .expect("spawn oxstor");
        let deadline = Instant::now() + Duration::from_secs(30);
        while UnixStream::connect(&sock).is_err() {
            assert!(Instant::now() < deadline, "oxstor did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon { child, sock, dir }
    }

    fn call(&self, method: &str, params: Value) -> Value {
        let mut s = UnixStream::connect(&self.sock).unwrap();
        let req = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        s.write_all(req.to_string().as_bytes()).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert!(v.get("error").is_none(), "{method}: {v}");
        v["result"].clone()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn verify_over_nvme_tcp_on_two_queue_pairs() {
    let d = Daemon::start();
    let nqn = "nqn.2016-06.io.oxstor:perf";
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    d.call(
        "bdev_malloc_create",
        json!({"name": "M0", "num_blocks": 16384, "block_size": 4096}),
    );
    d.call("nvmf_create_transport", json!({"trtype": "TCP"}));
    d.call(
        "nvmf_create_subsystem",
        json!({"nqn": nqn, "allow_any_host": true}),
    );
    d.call(
        "nvmf_subsystem_add_ns",
        json!({"nqn": nqn, "namespace": {"bdev_name": "M0"}}),
    );
    d.call(
        "nvmf_subsystem_add_listener",
        json!({"nqn": nqn, "listen_address": {"trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": port.to_string()}}),
    );
    let trid = format!("trtype:tcp traddr:127.0.0.1 trsvcid:{port} subnqn:{nqn}");
    for size in ["4k", "64k"] {
        let out = Command::new(OXPERF)
            .args([
                "nvme", "-r", &trid, "-c", "0x3", "-q", "16", "-o", size, "-w", "verify", "-t", "2",
            ])
            .args(["--output", "json"])
            .output()
            .expect("run oxperf");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "oxperf nvme verify {size} failed:\n{stdout}\n{stderr}"
        );
        let v: Value = serde_json::from_str(&stdout).expect("json output");
        assert!(v["iops"].as_f64().unwrap_or(0.0) > 0.0, "{v}");
        assert_eq!(v["mismatches"].as_u64(), Some(0), "{v}");
        assert_eq!(v["io_failed"].as_u64(), Some(0), "{v}");
        assert_eq!(
            v["jobs"].as_array().map(Vec::len),
            Some(2),
            "one job per queue pair: {v}"
        );
    }
    let stats = d.call("nvmf_get_stats", json!({}));
    let io_qpairs: u64 = stats["poll_groups"]
        .as_array()
        .map(|g| g.iter().map(|p| p["io_qpairs"].as_u64().unwrap_or(0)).sum())
        .unwrap_or(0);
    assert!(io_qpairs >= 4, "two runs of two queue pairs each: {stats}");
    let bdev = d.call("bdev_get_iostat", json!({"name": "M0"}));
    assert!(
        bdev["bdevs"][0]["num_write_ops"].as_u64().unwrap_or(0) > 0,
        "{bdev}"
    );
}
