//! A superblock raid1 on two uring files and a superblock raid10 on four are written over
//! NVMe/TCP by `oxperf`, the daemon is killed with SIGKILL mid-run, and a second daemon on the
//! same files must reassemble both arrays from their superblocks, resync only the regions the
//! write-intent bitmap marked dirty (a strict subset of each array), serve a clean `oxperf`
//! verify run, and leave every pair of copies byte-identical.
//!
//! The bitmap chunk is mdadm's 64 MiB (not settable over RPC), so the members are sparse
//! files of 1-2 GiB (32 regions per array) and the loads are *sequential* writes from LBA 0
//! cut short after about two seconds: they dirty the first few regions only.

mod common;

use common::{free_port, oxperf_bin, Daemon, TempDir};
use serde_json::{json, Value};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NQN: &str = "nqn.2016-06.io.oxstor:raidcrash";
const NQN10: &str = "nqn.2016-06.io.oxstor:raidcrash10";
const MEMBER_BYTES: u64 = 2 << 30;
/// raid10 members: 4 x 1 GiB make a 2 GiB array, as many regions as the raid1's.
const MEMBER10_BYTES: u64 = 1 << 30;

fn uring_members(d: &Daemon, files: &[PathBuf]) {
    for (i, f) in files.iter().enumerate() {
        d.ok(
            "bdev_uring_create",
            json!({"name": format!("U{i}"), "filename": f.to_str().unwrap(), "block_size": 4096}),
        );
    }
}

fn export(d: &Daemon, port: u16, nqn: &str, serial: &str, bdev: &str) {
    if nqn == NQN {
        d.ok("nvmf_create_transport", json!({"trtype": "TCP"}));
    }
    common::export_tcp(d, nqn, serial, bdev, port);
}

fn export_both(d: &Daemon, port: u16, port10: u16) {
    export(d, port, NQN, "OXRAID1", "R1");
    export(d, port10, NQN10, "OXRAID10", "R10");
}

fn raid(d: &Daemon, name: &str) -> Value {
    let all = d.ok("bdev_raid_get_bdevs", json!({"category": "all"}));
    all.as_array()
        .and_then(|a| a.iter().find(|r| r["name"] == name))
        .cloned()
        .unwrap_or(Value::Null)
}

fn trid(port: u16, nqn: &str) -> String {
    format!("trtype:tcp traddr:127.0.0.1 trsvcid:{port} subnqn:{nqn}")
}

/// A sequential 4 KiB write load at QD16 on one exported array, for up to 30 s.
fn write_load(oxperf: &Path, port: u16, nqn: &str) -> std::process::Child {
    Command::new(oxperf)
        .args(["nvme", "-r", &trid(port, nqn)])
        .args(["-q", "16", "-o", "4k", "-w", "write", "-t", "30"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run oxperf")
}

/// A 2 s verify run on one exported array: no mismatch, no failed I/O.
fn verify(oxperf: &Path, port: u16, nqn: &str) {
    let out = Command::new(oxperf)
        .args(["nvme", "-r", &trid(port, nqn)])
        .args(["-q", "16", "-o", "4k", "-w", "verify", "-t", "2"])
        .args(["--output", "json"])
        .output()
        .expect("run oxperf verify");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "oxperf verify of {nqn} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&stdout).expect("oxperf json output");
    assert_eq!(v["mismatches"].as_u64(), Some(0), "{nqn}: {v}");
    assert_eq!(v["io_failed"].as_u64(), Some(0), "{nqn}: {v}");
    assert!(v["iops"].as_f64().unwrap_or(0.0) > 0.0, "{nqn}: {v}");
}

/// The reassembled array `r` resynced only regions the bitmap had dirty: at least those
/// dirty at the kill, and fewer than all. Returns the resynced region count.
fn assert_dirty_only_resync(r: &Value, dirty_before: u64, total_regions: u64) -> u64 {
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
    assert_eq!(
        r["bitmap"]["dirty_regions"], 0,
        "resynced regions are clean: {r}"
    );
    regions
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
    // U0, U1: raid1 R1; U2..U5: raid10 R10 (64 KiB strips).
    let files: Vec<PathBuf> = (0..6)
        .map(|i| files_dir.path(&format!("m{i}.img")))
        .collect();
    for (i, f) in files.iter().enumerate() {
        common::file_of_size(f, if i < 2 { MEMBER_BYTES } else { MEMBER10_BYTES });
    }

    // --- Daemon A: create, export, write, SIGKILL. ---
    let mut a = Daemon::start_with(&["-m", "0x1"]);
    uring_members(&a, &files);
    a.ok(
        "bdev_raid_create",
        json!({"name": "R1", "raid_level": "raid1", "superblock": true, "base_bdevs": ["U0", "U1"]}),
    );
    a.ok(
        "bdev_raid_create",
        json!({"name": "R10", "raid_level": "raid10", "strip_size_kb": 64, "superblock": true,
               "base_bdevs": ["U2", "U3", "U4", "U5"]}),
    );
    let mut total_regions = Vec::new();
    for name in ["R1", "R10"] {
        let r = raid(&a, name);
        assert_eq!(r["state"], "online", "{r}");
        let regions = r["bitmap"]["regions"].as_u64().expect("bitmap regions");
        assert!(regions >= 16, "2 GiB arrays give many 64 MiB regions: {r}");
        total_regions.push(regions);
    }
    let (port_a, port_a10) = (free_port(), free_port());
    export_both(&a, port_a, port_a10);

    let mut loads = [
        write_load(&oxperf, port_a, NQN),
        write_load(&oxperf, port_a10, NQN10),
    ];
    // Wait until writes are really flowing to both arrays, then a little more.
    let deadline = Instant::now() + Duration::from_secs(20);
    for name in ["R1", "R10"] {
        loop {
            let st = a.ok("bdev_get_iostat", json!({"name": name}));
            if st["bdevs"][0]["num_write_ops"].as_u64().unwrap_or(0) > 1000 {
                break;
            }
            assert!(Instant::now() < deadline, "no writes reached {name}: {st}");
            for load in &mut loads {
                assert!(
                    load.try_wait().unwrap().is_none(),
                    "oxperf ended before the crash"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    std::thread::sleep(Duration::from_millis(1500));
    let mut dirty_before = Vec::new();
    for (name, total) in ["R1", "R10"].into_iter().zip(&total_regions) {
        let before = raid(&a, name);
        let dirty = before["bitmap"]["dirty_regions"].as_u64().unwrap();
        assert!(
            dirty > 0 && dirty < *total,
            "writes in flight dirty a strict subset: {before}"
        );
        dirty_before.push(dirty);
    }
    for load in &mut loads {
        assert!(
            load.try_wait().unwrap().is_none(),
            "oxperf still writing at the kill"
        );
    }
    a.child.kill().expect("kill -9 daemon A");
    a.child.wait().expect("reap daemon A");
    for load in &mut loads {
        let _ = load.kill();
        let _ = load.wait();
    }

    // --- Daemon B: same files, reassembly from superblocks, dirty-only resync. ---
    let b = Daemon::start_with(&["-m", "0x1"]);
    uring_members(&b, &files);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut after = Vec::new();
    for name in ["R1", "R10"] {
        let r = loop {
            let r = raid(&b, name);
            if r["state"] == "online" && r["last_resync"].is_object() && r.get("process").is_none()
            {
                break r;
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not reassemble and resync: {r}\n{}",
                b.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(r["superblock"], true, "{r}");
        after.push(r);
    }
    assert_eq!(after[0]["num_base_bdevs_operational"], 2, "{}", after[0]);
    assert_eq!(after[1]["num_base_bdevs_operational"], 4, "{}", after[1]);
    for (i, r) in after.iter().enumerate() {
        let regions = assert_dirty_only_resync(r, dirty_before[i], total_regions[i]);
        eprintln!(
            "{}: dirty at the kill: {}/{}; resynced after restart: {regions} ({})",
            r["name"], dirty_before[i], total_regions[i], r["last_resync"]
        );
    }

    let (port_b, port_b10) = (free_port(), free_port());
    export_both(&b, port_b, port_b10);
    verify(&oxperf, port_b, NQN);
    verify(&oxperf, port_b10, NQN10);

    let mut b = b;
    let status = b.terminate();
    assert!(status.success(), "daemon B exit: {status}\n{}", b.stderr());
    common::assert_no_panic(&b.stderr());

    // After the resync and a clean shutdown every pair of copies holds the same data area:
    // the raid1's two members, and (near layout over 4 members) raid10 members 0 and 1, 2
    // and 3, which hold the two copies of the even and the odd chunks row by row.
    for (r, pairs, member_bytes) in [
        (&after[0], &[(0, 1)][..], MEMBER_BYTES),
        (&after[1], &[(2, 3), (4, 5)][..], MEMBER10_BYTES),
    ] {
        let data_offset = r["base_bdevs_list"][0]["data_offset"].as_u64().unwrap();
        let data_size = r["base_bdevs_list"][0]["data_size"].as_u64().unwrap();
        let off = data_offset * 4096;
        let len = (data_size * 4096).min(member_bytes - off);
        for &(x, y) in pairs {
            same_range(&files[x], &files[y], off, len)
                .unwrap_or_else(|e| panic!("{}: {e}: {r}", r["name"]));
        }
    }
}
