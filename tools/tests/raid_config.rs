//! RAID arrays through `save_config` and `--json`: a raid5 with a superblock and a raid0
//! without one, on uring files, written over NVMe/TCP by a host in this process; the saved
//! config restarts a second daemon on the same files with both arrays online, the same
//! members and options, and every block written still there.
//!
//! As in SPDK, the superblock array is not in the saved config: its members are, and
//! examine reassembles it from their superblocks. The raid0 is replayed by its
//! `bdev_raid_create`, the options by `bdev_raid_set_options`.

mod common;

use common::{free_port, host_runtime, Daemon, TempDir};
use oxstor_bdev::registry::{self, BdevEntry};
use oxstor_bdev::{blocking, IoStatus, IoType};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BS: u64 = 4096;
const NQN5: &str = "nqn.2016-06.io.oxstor:raidcfg5";
const NQN0: &str = "nqn.2016-06.io.oxstor:raidcfg0";
const OPTIONS: &str = r#"{"process_window_size_kb": 256, "process_max_bandwidth_mb_sec": 50, "process_queue_depth": 2, "start_dirty_degraded": false}"#;

fn raid(d: &Daemon, name: &str) -> Value {
    let all = d.ok("bdev_raid_get_bdevs", json!({"category": "all"}));
    all.as_array()
        .and_then(|a| a.iter().find(|r| r["name"] == name))
        .cloned()
        .unwrap_or(Value::Null)
}

/// What must survive the restart of an array's `bdev_raid_get_bdevs` entry.
fn identity(r: &Value) -> Value {
    let members: Vec<Value> = r["base_bdevs_list"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|m| json!([m["name"], m["state"], m["data_offset"], m["data_size"]]))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "name": r["name"], "uuid": r["uuid"], "raid_level": r["raid_level"],
        "strip_size_kb": r["strip_size_kb"], "state": r["state"],
        "superblock": r["superblock"], "num_base_bdevs": r["num_base_bdevs"],
        "num_base_bdevs_operational": r["num_base_bdevs_operational"], "members": members,
    })
}

/// A controller attached to one exported array; detached on drop.
struct Host {
    ctrl: String,
    entry: Arc<BdevEntry>,
}

impl Host {
    fn attach(port: u16, nqn: &str) -> Host {
        static N: AtomicU64 = AtomicU64::new(0);
        host_runtime();
        let ctrl = format!("RaidCfgHost{}", N.fetch_add(1, Ordering::Relaxed));
        let params = serde_json::from_value(json!({
            "name": ctrl, "trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1",
            "trsvcid": port.to_string(), "subnqn": nqn,
        }))
        .expect("attach parameters");
        let bdevs = oxstor_nvme::host::attach(params).expect("attach the NVMe/TCP host");
        let entry = registry::lookup(&bdevs[0]).expect("host bdev");
        assert_eq!(u64::from(entry.bdev.geometry().block_size), BS);
        Host { ctrl, entry }
    }

    fn blocks(&self) -> u64 {
        self.entry.bdev.geometry().num_blocks
    }

    fn io(&self, t: IoType, lba: u64, blocks: u64, data: Option<&[u8]>) -> Vec<u8> {
        let (st, out) = blocking::io(
            0,
            &self.entry,
            t,
            lba,
            blocks,
            data,
            Duration::from_secs(20),
        )
        .unwrap_or_else(|e| panic!("{t:?} {lba}+{blocks}: {e}"));
        assert_eq!(st, IoStatus::Success, "{t:?} {lba}+{blocks}");
        out
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = oxstor_nvme::host::detach(&self.ctrl);
    }
}

/// A block no other block of the test equals: its array, LBA and a pseudo-random tail.
fn block(array: u8, lba: u64) -> Vec<u8> {
    let mut x = lba.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(array) << 56 | 1;
    let mut out = Vec::with_capacity(BS as usize);
    out.push(array);
    out.extend_from_slice(&lba.to_le_bytes());
    while out.len() < BS as usize {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(BS as usize);
    out
}

/// The extents written to each array (LBA, blocks): full raid5 stripes (3 x 64 KiB) and
/// pieces of them, raid0 strips and a write across a strip boundary, the last blocks.
fn extents(blocks: u64) -> Vec<(u64, u64)> {
    vec![
        (0, 48),
        (48, 5),
        (100, 1),
        (1000, 40),
        (blocks / 2 - 7, 14),
        (blocks - 3, 3),
    ]
}

fn write_pattern(host: &Host, array: u8) {
    for (lba, n) in extents(host.blocks()) {
        let data: Vec<u8> = (lba..lba + n).flat_map(|b| block(array, b)).collect();
        host.io(IoType::Write, lba, n, Some(&data));
    }
}

fn check_pattern(host: &Host, array: u8, what: &str) {
    for (lba, n) in extents(host.blocks()) {
        let got = host.io(IoType::Read, lba, n, None);
        for (i, b) in (lba..lba + n).enumerate() {
            assert!(
                got[i * BS as usize..][..BS as usize] == block(array, b)[..],
                "{what}: array {array} block {b} is not what was written"
            );
        }
    }
}

fn calls_of<'a>(saved: &'a Value, method: &str) -> Vec<&'a Value> {
    saved["subsystems"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["subsystem"] == "bdev")
        .flat_map(|s| s["config"].as_array().into_iter().flatten())
        .filter(|c| c["method"] == method)
        .map(|c| &c["params"])
        .collect()
}

#[test]
fn raid_arrays_and_options_round_trip_through_save_config_with_their_data() {
    let t0 = Instant::now();
    let files_dir = TempDir::new("raidcfg-files");
    // U0..U3: raid5 R5 (superblock); U4, U5: raid0 R0.
    let files: Vec<PathBuf> = (0..6)
        .map(|i| files_dir.path(&format!("m{i}.img")))
        .collect();
    for f in &files {
        common::file_of_size(f, 32 << 20);
    }
    let options: Value = serde_json::from_str(OPTIONS).expect("options");

    // --- Daemon A: create, set options, export, write, save. ---
    let mut a = Daemon::start_with(&["-m", "0x1"]);
    for (i, f) in files.iter().enumerate() {
        a.ok(
            "bdev_uring_create",
            json!({"name": format!("U{i}"), "filename": f, "block_size": BS}),
        );
    }
    a.ok("bdev_raid_set_options", options.clone());
    a.ok(
        "bdev_raid_create",
        json!({"name": "R5", "raid_level": "raid5", "strip_size_kb": 64, "superblock": true,
               "base_bdevs": ["U0", "U1", "U2", "U3"]}),
    );
    a.ok(
        "bdev_raid_create",
        json!({"name": "R0", "raid_level": "raid0", "strip_size_kb": 64,
               "base_bdevs": ["U4", "U5"]}),
    );
    let before: Vec<Value> = ["R5", "R0"].iter().map(|n| raid(&a, n)).collect();
    assert_eq!(before[0]["state"], "online", "{}", before[0]);
    assert_eq!(before[0]["superblock"], true, "{}", before[0]);
    assert_eq!(before[1]["state"], "online", "{}", before[1]);
    assert_eq!(before[1]["superblock"], false, "{}", before[1]);

    let (port5, port0) = (free_port(), free_port());
    a.ok("nvmf_create_transport", json!({"trtype": "TCP"}));
    common::export_tcp(&a, NQN5, "OXRAIDCFG5", "R5", port5);
    common::export_tcp(&a, NQN0, "OXRAIDCFG0", "R0", port0);
    {
        let (h5, h0) = (Host::attach(port5, NQN5), Host::attach(port0, NQN0));
        write_pattern(&h5, 5);
        write_pattern(&h0, 0);
        check_pattern(&h5, 5, "daemon A");
        check_pattern(&h0, 0, "daemon A");
    }

    let saved = a.ok("save_config", Value::Null);
    assert_eq!(
        calls_of(&saved, "bdev_raid_set_options"),
        vec![&options],
        "the options are saved: {saved:#}"
    );
    let creates = calls_of(&saved, "bdev_raid_create");
    assert_eq!(creates.len(), 1, "only the raid0 is replayed: {saved:#}");
    assert_eq!(creates[0]["name"], "R0");
    assert_eq!(creates[0]["base_bdevs"], json!(["U4", "U5"]));
    assert_eq!(calls_of(&saved, "bdev_uring_create").len(), 6);
    let cfg_dir = TempDir::new("raidcfg");
    let cfg = cfg_dir.path("saved.json");
    std::fs::write(&cfg, serde_json::to_vec_pretty(&saved).expect("serialize")).expect("save");
    let status = a.terminate();
    assert!(status.success(), "daemon A exit: {status}\n{}", a.stderr());
    common::assert_no_panic(&a.stderr());

    // --- Daemon B: the saved config on the same files. ---
    let b = Daemon::start_with(&["-m", "0x1", "--json", cfg.to_str().expect("utf-8 path")]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let after: Vec<Value> = ["R5", "R0"]
        .iter()
        .map(|n| loop {
            let r = raid(&b, n);
            if r["state"] == "online" && r.get("process").is_none() {
                break r;
            }
            assert!(
                Instant::now() < deadline,
                "{n} is not back online: {r}\n{}",
                b.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        })
        .collect();
    for (x, y) in before.iter().zip(&after) {
        assert_eq!(identity(x), identity(y), "the same array after the restart");
    }
    let again = b.ok("save_config", Value::Null);
    assert_eq!(
        calls_of(&again, "bdev_raid_set_options"),
        vec![&options],
        "the options are in force again"
    );
    assert_eq!(again, saved, "save_config after --json differs");
    {
        // The nvmf target came back from the config too, on the same ports.
        let (h5, h0) = (Host::attach(port5, NQN5), Host::attach(port0, NQN0));
        check_pattern(&h5, 5, "daemon B");
        check_pattern(&h0, 0, "daemon B");
    }
    common::assert_no_panic(&b.stderr());
    eprintln!("round trip took {:?}", t0.elapsed());
}
