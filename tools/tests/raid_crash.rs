//! A superblock raid1 on two uring files is written over NVMe/TCP by `oxperf`, the daemon is
//! killed with SIGKILL mid-run, and a second daemon on the same files must reassemble the
//! array from its superblocks, resync only the regions the write-intent bitmap marked dirty
//! (a strict subset of the array), serve a clean `oxperf` verify run, and leave both mirrors
//! byte-identical.
//!
//! The bitmap chunk is mdadm's 64 MiB (not settable over RPC), so the members are 2 GiB
//! sparse files (32 regions) and the load is a *sequential* write from LBA 0 cut short after
//! about two seconds: it dirties the first few regions only.

mod common;

use common::{Daemon, TempDir};
use serde_json::{json, Value};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NQN: &str = "nqn.2016-06.io.oxstor:raidcrash";
const MEMBER_BYTES: u64 = 2 << 30;

fn oxperf_bin() -> PathBuf {
    let p = PathBuf::from(common::OXSTOR).with_file_name("oxperf");
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

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

fn uring_members(d: &Daemon, files: &[PathBuf]) {
    for (i, f) in files.iter().enumerate() {
        d.ok(
            "bdev_uring_create",
            json!({"name": format!("U{i}"), "filename": f.to_str().unwrap(), "block_size": 4096}),
        );
    }
}

fn export(d: &Daemon, port: u16) {
    d.ok("nvmf_create_transport", json!({"trtype": "TCP"}));
    d.ok(
        "nvmf_create_subsystem",
        json!({"nqn": NQN, "allow_any_host": true, "serial_number": "OXRAID1"}),
    );
    d.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "R1"}}),
    );
    d.ok(
        "nvmf_subsystem_add_listener",
        json!({"nqn": NQN, "listen_address": {"trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1", "trsvcid": port.to_string()}}),
    );
}

fn raid(d: &Daemon) -> Value {
    let all = d.ok("bdev_raid_get_bdevs", json!({"category": "all"}));
    all.as_array()
        .and_then(|a| a.iter().find(|r| r["name"] == "R1"))
        .cloned()
        .unwrap_or(Value::Null)
}

fn trid(port: u16) -> String {
    format!("trtype:tcp traddr:127.0.0.1 trsvcid:{port} subnqn:{NQN}")
}

/// Compares `len` bytes at `offset` of two files.
fn same_range(a: &Path, b: &Path, offset: u64, len: u64) -> Result<(), String> {
    use std::io::{Seek, SeekFrom};
    let mut fa = std::fs::File::open(a).unwrap();
    let mut fb = std::fs::File::open(b).unwrap();
    fa.seek(SeekFrom::Start(offset)).unwrap();
    fb.seek(SeekFrom::Start(offset)).unwrap();
    let mut ba = vec![0u8; 4 << 20];
    let mut bb = vec![0u8; 4 << 20];
    let mut done = 0u64;
    while done < len {
        let n = ((len - done) as usize).min(ba.len());
        fa.read_exact(&mut ba[..n]).unwrap();
        fb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            let i = ba[..n]
                .iter()
                .zip(&bb[..n])
                .position(|(x, y)| x != y)
                .unwrap();
            return Err(format!(
                "mirrors differ at byte {}",
                offset + done + i as u64
            ));
        }
        done += n as u64;
    }
    Ok(())
}

#[test]
fn kill_9_mid_write_reassembles_resyncs_dirty_regions_and_verifies() {
    let oxperf = oxperf_bin();
    let files_dir = TempDir::new("raidcrash-files");
    let files: Vec<PathBuf> = (0..2)
        .map(|i| files_dir.path(&format!("m{i}.img")))
        .collect();
    for f in &files {
        common::file_of_size(f, MEMBER_BYTES);
    }

    // --- Daemon A: create, export, write, SIGKILL. ---
    let mut a = Daemon::start_with(&["-m", "0x1"]);
    uring_members(&a, &files);
    a.ok(
        "bdev_raid_create",
        json!({"name": "R1", "raid_level": "raid1", "superblock": true, "base_bdevs": ["U0", "U1"]}),
    );
    let r = raid(&a);
    assert_eq!(r["state"], "online", "{r}");
    let total_regions = r["bitmap"]["regions"].as_u64().expect("bitmap regions");
    assert!(
        total_regions >= 16,
        "2 GiB members give many 64 MiB regions: {r}"
    );
    let port_a = free_port();
    export(&a, port_a);

    let mut load = Command::new(&oxperf)
        .args([
            "nvme",
            "-r",
            &trid(port_a),
            "-q",
            "16",
            "-o",
            "4k",
            "-w",
            "write",
            "-t",
            "30",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run oxperf");
    // Wait until writes are really flowing, then a little more.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = a.ok("bdev_get_iostat", json!({"name": "R1"}));
        if st["bdevs"][0]["num_write_ops"].as_u64().unwrap_or(0) > 1000 {
            break;
        }
        assert!(Instant::now() < deadline, "no writes reached R1: {st}");
        assert!(
            load.try_wait().unwrap().is_none(),
            "oxperf ended before the crash"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let before = raid(&a);
    let dirty_before = before["bitmap"]["dirty_regions"].as_u64().unwrap();
    assert!(
        dirty_before > 0 && dirty_before < total_regions,
        "writes in flight dirty a strict subset: {before}"
    );
    assert!(
        load.try_wait().unwrap().is_none(),
        "oxperf still writing at the kill"
    );
    a.child.kill().expect("kill -9 daemon A");
    a.child.wait().expect("reap daemon A");
    let _ = load.kill();
    let _ = load.wait();

    // --- Daemon B: same files, reassembly from superblocks, dirty-only resync. ---
    let b = Daemon::start_with(&["-m", "0x1"]);
    uring_members(&b, &files);
    let deadline = Instant::now() + Duration::from_secs(60);
    let r = loop {
        let r = raid(&b);
        if r["state"] == "online" && r["last_resync"].is_object() && r.get("process").is_none() {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "R1 did not reassemble and resync: {r}\n{}",
            b.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(r["num_base_bdevs_operational"], 2, "{r}");
    assert_eq!(r["superblock"], true, "{r}");
    let resync = &r["last_resync"];
    let regions = resync["regions"].as_u64().expect("last_resync.regions");
    assert_eq!(
        resync["full"], false,
        "dirty-only resync, not a full one: {r}"
    );
    assert!(regions > 0, "the crash left dirty regions to resync: {r}");
    assert!(
        regions < total_regions,
        "only the dirty subset ({regions}) of {total_regions} regions is resynced: {r}"
    );
    assert!(
        regions >= dirty_before,
        "every region dirty at the crash ({dirty_before}) is resynced: {r}"
    );
    assert!(resync["bytes"].as_u64().unwrap_or(0) > 0, "{r}");
    eprintln!("dirty at the kill: {dirty_before}/{total_regions}; resync after restart: {resync}");
    let data_offset = r["base_bdevs_list"][0]["data_offset"].as_u64().unwrap();
    let data_size = r["base_bdevs_list"][0]["data_size"].as_u64().unwrap();

    let port_b = free_port();
    export(&b, port_b);
    let out = Command::new(&oxperf)
        .args([
            "nvme",
            "-r",
            &trid(port_b),
            "-q",
            "16",
            "-o",
            "4k",
            "-w",
            "verify",
            "-t",
            "2",
        ])
        .args(["--output", "json"])
        .output()
        .expect("run oxperf verify");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "oxperf verify failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&stdout).expect("oxperf json output");
    assert_eq!(v["mismatches"].as_u64(), Some(0), "{v}");
    assert_eq!(v["io_failed"].as_u64(), Some(0), "{v}");
    assert!(v["iops"].as_f64().unwrap_or(0.0) > 0.0, "{v}");

    let mut b = b;
    let status = b.terminate();
    assert!(status.success(), "daemon B exit: {status}\n{}", b.stderr());
    common::assert_no_panic(&b.stderr());

    // After the resync and a clean shutdown both mirrors hold the same data area.
    let off = data_offset * 4096;
    let len = (data_size * 4096).min(MEMBER_BYTES - off);
    same_range(&files[0], &files[1], off, len).unwrap_or_else(|e| panic!("{e}: {r}"));
}
