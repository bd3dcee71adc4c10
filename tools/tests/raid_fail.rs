//! Member failure in the middle of a verify run, through the real daemon.
//!
//! Each test builds one array in its own `oxstor` over error bdevs (`EE_<base>`) stacked on
//! uring files, exports it over NVMe/TCP on 127.0.0.1 and runs `oxperf nvme -w verify`
//! against it. Once writes flow, `bdev_error_inject_error` makes one member fail (two for
//! raid6); the verify run must still end with no failed I/O and no mismatch, and the array
//! must be online with the member(s) faulty. Then spare(s) on fresh files are added and
//! rebuilt, a second verify run must be clean, a scrub must find redundancy consistent, and
//! after a clean shutdown every array block is read back from the member files (through the
//! array's own address arithmetic): mirror copies agree, and each block is either never
//! written (zero) or the oxperf block written for that very LBA, intact.
//!
//! oxperf's verify reads back each write right after it, so the offline read-back is what
//! checks data written before the failure and rebuilt onto the spare.

mod common;

use common::{free_port, oxperf_bin, Daemon, TempDir};
use oxstor_raid::layout::{Layout, RaidLevel};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BLOCK: u64 = 4096;
const MEMBER_BYTES: u64 = 8 << 20;
/// oxperf I/O size: large enough that two short runs cover much of each array.
const IO_SIZE: &str = "16k";
const STRIP_KB: u64 = 64;
/// The verify header oxperf writes at the start of every block (perf/src/verify.rs).
const VERIFY_MAGIC: &[u8; 8] = b"OXPERFV1";

/// One level's scenario: how many members, which fail and with what kind of I/O error.
struct Scenario {
    level: &'static str,
    members: usize,
    failures: &'static [(usize, &'static str)],
}

struct Array<'a> {
    d: &'a Daemon,
    name: String,
    nqn: String,
    port: u16,
}

impl Array<'_> {
    fn info(&self) -> Value {
        let all = self.d.ok("bdev_raid_get_bdevs", json!({"category": "all"}));
        all.as_array()
            .and_then(|a| a.iter().find(|r| r["name"] == self.name.as_str()))
            .cloned()
            .unwrap_or(Value::Null)
    }

    fn slot_states(&self) -> Vec<String> {
        let info = self.info();
        info["base_bdevs_list"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|m| m["state"].as_str().unwrap_or("?").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn wait_for(&self, what: &str, limit: Duration, mut done: impl FnMut(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let info = self.info();
            if done(&info) {
                return info;
            }
            assert!(
                Instant::now() < deadline,
                "{}: timed out waiting for {what}: {info:#}\n{}",
                self.name,
                self.d.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn writes(&self) -> u64 {
        let st = self.d.ok("bdev_get_iostat", json!({"name": self.name}));
        st["bdevs"][0]["num_write_ops"].as_u64().unwrap_or(0)
    }

    fn verify(&self, oxperf: &Path, seconds: u32) -> Child {
        let trid = format!(
            "trtype:tcp traddr:127.0.0.1 trsvcid:{} subnqn:{}",
            self.port, self.nqn
        );
        Command::new(oxperf)
            .args([
                "nvme", "-r", &trid, "-q", "16", "-o", IO_SIZE, "-w", "verify",
            ])
            .args(["-t", &seconds.to_string(), "--output", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run oxperf")
    }
}

/// Kills an oxperf run if the test fails before collecting it.
struct Load(Option<Child>);

impl Load {
    fn running(&mut self) -> bool {
        self.0
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits for the run and checks it was clean: no failed I/O, no mismatch, real I/O.
    fn assert_clean(&mut self, when: &str) -> Value {
        let child = self.0.take().expect("an oxperf run to collect");
        let out = child.wait_with_output().expect("wait for oxperf");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "oxperf verify {when} failed ({}):\n{stdout}\n{stderr}",
            out.status
        );
        let v: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("oxperf json output ({e}):\n{stdout}\n{stderr}"));
        assert_eq!(v["mismatches"].as_u64(), Some(0), "{when}: {v}");
        assert_eq!(v["io_failed"].as_u64(), Some(0), "{when}: {v}");
        assert!(v["iops"].as_f64().unwrap_or(0.0) > 0.0, "{when}: {v}");
        v
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn export(d: &Daemon, raid: &str, nqn: &str, port: u16) {
    d.ok("nvmf_create_transport", json!({"trtype": "TCP"}));
    common::export_tcp(d, nqn, "OXRAIDFAIL", raid, port);
}

/// A uring bdev over `file`, which is created (empty) unless it exists.
fn uring(d: &Daemon, name: &str, file: &Path) {
    if !file.exists() {
        common::file_of_size(file, MEMBER_BYTES);
    }
    d.ok(
        "bdev_uring_create",
        json!({"name": name, "filename": file.to_str().expect("utf-8 path"), "block_size": BLOCK}),
    );
}

/// crc32c (Castagnoli), the checksum oxperf puts in its verify header.
fn crc32c(parts: &[&[u8]]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, entry) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0x82f6_3b78 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *entry = c;
        }
        t
    });
    let mut crc = !0u32;
    for part in parts {
        for &b in *part {
            crc = table[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
        }
    }
    !crc
}

/// What one block read back from a member holds.
#[derive(Debug, PartialEq)]
enum Found {
    Zero,
    Written,
    Bad(String),
}

fn classify(block: &[u8], lba: u64) -> Found {
    if block.iter().all(|&b| b == 0) {
        return Found::Zero;
    }
    if &block[..8] != VERIFY_MAGIC {
        return Found::Bad(format!("LBA {lba}: neither zero nor an oxperf block"));
    }
    let stored = u32::from_le_bytes([block[24], block[25], block[26], block[27]]);
    let computed = crc32c(&[&block[..24], &block[28..]]);
    if stored != computed {
        return Found::Bad(format!(
            "LBA {lba}: crc32c {computed:#010x}, header says {stored:#010x}"
        ));
    }
    let mut lba_bytes = [0u8; 8];
    lba_bytes.copy_from_slice(&block[8..16]);
    let found = u64::from_le_bytes(lba_bytes);
    if found != lba {
        return Found::Bad(format!(
            "LBA {lba}: holds the block written for LBA {found}"
        ));
    }
    Found::Written
}

/// What the offline read-back found.
struct ReadBack {
    /// Array blocks holding oxperf data.
    written: u64,
    /// Copies of such blocks that live on the members listed as rebuilt.
    on_rebuilt: u64,
}

/// Reads every array block from the member files through `layout` (array data starting
/// `data_offset` blocks into each member) and panics on any copy that is wrong or disagrees
/// with another copy.
fn read_back(layout: &Layout, data_offset: u64, files: &[PathBuf], rebuilt: &[usize]) -> ReadBack {
    let images: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).unwrap_or_else(|e| panic!("read {}: {e}", f.display())))
        .collect();
    let bs = BLOCK as usize;
    let mut found = ReadBack {
        written: 0,
        on_rebuilt: 0,
    };
    for lba in 0..layout.array_blocks() {
        let pieces = layout
            .map(lba, 1)
            .unwrap_or_else(|e| panic!("map LBA {lba}: {e}"));
        for piece in pieces {
            let mut first: Option<&[u8]> = None;
            for loc in piece.copies() {
                let at = (data_offset + loc.member_offset) as usize * bs;
                let block = &images[loc.member][at..at + bs];
                match classify(block, lba) {
                    Found::Bad(why) => panic!("member {}: {why}", loc.member),
                    Found::Written => {
                        found.written += u64::from(first.is_none());
                        found.on_rebuilt += u64::from(rebuilt.contains(&loc.member));
                    }
                    Found::Zero => {}
                }
                if let Some(other) = first {
                    assert!(
                        other == block,
                        "LBA {lba}: the copy on member {} differs from the first",
                        loc.member
                    );
                }
                first.get_or_insert(block);
            }
        }
    }
    found
}

fn fail_members_mid_verify(s: &Scenario) {
    let oxperf = oxperf_bin();
    let files_dir = TempDir::new(&format!("raidfail-{}", s.level));
    let mut d = Daemon::start_with(&["-m", "0x1"]);
    let raid_name = format!("R_{}", s.level);
    let mut bases = Vec::new();
    let mut files: Vec<PathBuf> = Vec::new();
    for i in 0..s.members {
        let file = files_dir.path(&format!("m{i}.img"));
        let base = format!("U{i}");
        uring(&d, &base, &file);
        let ee = d.ok("bdev_error_create", json!({"base_name": base}));
        assert_eq!(ee, format!("EE_{base}"), "SPDK's error bdev name");
        bases.push(format!("EE_{base}"));
        files.push(file);
    }
    let mut create = json!({"name": raid_name, "raid_level": s.level, "base_bdevs": bases});
    if s.level != "raid1" {
        create["strip_size_kb"] = json!(STRIP_KB);
    }
    d.ok("bdev_raid_create", create);
    let array = Array {
        d: &d,
        name: raid_name.clone(),
        nqn: format!("nqn.2016-06.io.oxstor:fail-{}", s.level),
        port: free_port(),
    };
    assert_eq!(array.info()["state"], "online");
    export(&d, &array.name, &array.nqn, array.port);

    // --- Failure in the middle of a verify run. ---
    let mut load = Load(Some(array.verify(&oxperf, 5)));
    let deadline = Instant::now() + Duration::from_secs(20);
    while array.writes() < 300 {
        assert!(load.running(), "oxperf ended before any failure");
        assert!(Instant::now() < deadline, "no writes reach {}", array.name);
        std::thread::sleep(Duration::from_millis(20));
    }
    for &(slot, io_type) in s.failures {
        d.ok(
            "bdev_error_inject_error",
            json!({"name": bases[slot], "io_type": io_type, "error_type": "failure",
                "num": 1_000_000}),
        );
    }
    let failed_slots: Vec<usize> = s.failures.iter().map(|&(slot, _)| slot).collect();
    array.wait_for(
        "the failed member(s) to turn faulty",
        Duration::from_secs(20),
        |v| {
            failed_slots
                .iter()
                .all(|&slot| v["base_bdevs_list"][slot]["state"] == "faulty")
        },
    );
    assert!(
        load.running(),
        "the failures must land while the verify run is still going"
    );
    load.assert_clean("across the failure");
    let info = array.info();
    assert_eq!(info["state"], "online", "degraded, still serving: {info:#}");
    assert_eq!(
        info["num_base_bdevs_operational"].as_u64(),
        Some((s.members - failed_slots.len()) as u64),
        "{info:#}"
    );
    for (slot, state) in array.slot_states().iter().enumerate() {
        let expected = if failed_slots.contains(&slot) {
            "faulty"
        } else {
            "online"
        };
        assert_eq!(state, expected, "slot {slot}: {info:#}");
    }

    // --- Spares on fresh files take the failed slots and are rebuilt. ---
    for (i, &slot) in failed_slots.iter().enumerate() {
        let file = files_dir.path(&format!("spare{i}.img"));
        let spare = format!("S{i}");
        uring(&d, &spare, &file);
        d.ok(
            "bdev_raid_add_base_bdev",
            json!({"raid_bdev": raid_name, "base_bdev": spare}),
        );
        // The rebuild writes the spare's file: from here on it stands for the slot.
        files[slot] = file;
    }
    let spare_names: Vec<String> = (0..failed_slots.len()).map(|i| format!("S{i}")).collect();
    let info = array.wait_for("the rebuild(s) to finish", Duration::from_secs(60), |v| {
        v.get("process").is_none()
            && v["base_bdevs_list"]
                .as_array()
                .is_some_and(|l| l.len() == s.members && l.iter().all(|m| m["state"] == "online"))
    });
    for &slot in &failed_slots {
        let name = info["base_bdevs_list"][slot]["name"].as_str().unwrap_or("");
        assert!(
            spare_names.iter().any(|n| n == name),
            "slot {slot} is served by a spare: {info:#}"
        );
    }
    assert_eq!(
        info["num_base_bdevs_operational"].as_u64(),
        Some(s.members as u64)
    );

    let mut load = Load(Some(array.verify(&oxperf, 2)));
    load.assert_clean("after the rebuild");

    d.ok(
        "bdev_raid_scrub",
        json!({"name": raid_name, "action": "check"}),
    );
    let info = array.wait_for("the scrub to finish", Duration::from_secs(60), |v| {
        v["scrub"]["done"] == true
    });
    assert!(info["scrub"].get("error").is_none(), "{info:#}");
    assert_eq!(info["scrub"]["mismatch_cnt"], 0, "{info:#}");
    let array_blocks = {
        let b = d.ok("bdev_get_bdevs", json!({"name": raid_name}));
        b[0]["num_blocks"].as_u64().expect("num_blocks")
    };
    drop(array);

    let status = d.terminate();
    assert!(status.success(), "daemon exit: {status}\n{}", d.stderr());
    common::assert_no_panic(&d.stderr());

    // --- Offline read-back of everything the array holds, rebuilt members included. ---
    let level: RaidLevel = s.level.parse().expect("level");
    let strip_blocks = if s.level == "raid1" {
        1
    } else {
        STRIP_KB * 1024 / BLOCK
    };
    let sizes = vec![MEMBER_BYTES / BLOCK; s.members];
    let layout = Layout::new(level, strip_blocks, &sizes).expect("layout");
    assert_eq!(
        layout.array_blocks(),
        array_blocks,
        "the test maps the array as it ran"
    );
    let found = read_back(&layout, 0, &files, &failed_slots);
    eprintln!(
        "{}: {} of {array_blocks} blocks hold verify data, {} copies on rebuilt members",
        s.level, found.written, found.on_rebuilt
    );
    // Two verify runs cover a good part of a small array, the rebuilt members included.
    assert!(
        found.written > array_blocks / 8,
        "only {} of {array_blocks} blocks hold verify data",
        found.written
    );
    assert!(
        found.on_rebuilt > 0,
        "no verify data on the rebuilt member(s) {failed_slots:?}"
    );
}

#[test]
fn raid1_member_fails_mid_verify_then_spare_rebuilds() {
    fail_members_mid_verify(&Scenario {
        level: "raid1",
        members: 2,
        failures: &[(1, "all")],
    });
}

#[test]
fn raid5_member_fails_mid_verify_then_spare_rebuilds() {
    fail_members_mid_verify(&Scenario {
        level: "raid5",
        members: 4,
        failures: &[(2, "write")],
    });
}

#[test]
fn raid10_member_fails_mid_verify_then_spare_rebuilds() {
    fail_members_mid_verify(&Scenario {
        level: "raid10",
        members: 4,
        failures: &[(0, "read")],
    });
}

#[test]
fn raid6_two_members_fail_mid_verify_then_spares_rebuild() {
    fail_members_mid_verify(&Scenario {
        level: "raid6",
        members: 5,
        failures: &[(1, "all"), (3, "write")],
    });
}

/// A hot spare of a superblock raid5 is still a spare after a daemon restart (its bdev
/// created before the members'), and when a member fails in the middle of a verify run it
/// takes the slot by itself and is rebuilt.
#[test]
fn superblock_spare_survives_daemon_restart_and_takes_over() {
    let oxperf = oxperf_bin();
    let files_dir = TempDir::new("raidfail-spare");
    let files: Vec<PathBuf> = (0..3)
        .map(|i| files_dir.path(&format!("m{i}.img")))
        .collect();
    let spare_file = files_dir.path("spare.img");
    let raid_name = "R_spare";

    let mut a = Daemon::start_with(&["-m", "0x1"]);
    for (i, file) in files.iter().enumerate() {
        uring(&a, &format!("U{i}"), file);
        a.ok("bdev_error_create", json!({"base_name": format!("U{i}")}));
    }
    uring(&a, "SP", &spare_file);
    a.ok(
        "bdev_raid_create",
        json!({"name": raid_name, "raid_level": "raid5", "strip_size_kb": STRIP_KB,
            "superblock": true, "base_bdevs": ["EE_U0", "EE_U1", "EE_U2"]}),
    );
    a.ok(
        "bdev_raid_add_base_bdev",
        json!({"raid_bdev": raid_name, "base_bdev": "SP", "spare": true}),
    );
    let status = a.terminate();
    assert!(status.success(), "daemon A exit: {status}\n{}", a.stderr());
    common::assert_no_panic(&a.stderr());

    // The error bdevs pass the superblocks through, so a uring bdev is examined (and may
    // complete the array) before an error bdev could claim it: the last member comes back
    // bare, the others behind error bdevs, the spare first of all.
    let mut b = Daemon::start_with(&["-m", "0x1"]);
    uring(&b, "SP", &spare_file);
    for (i, file) in files.iter().enumerate().take(2) {
        uring(&b, &format!("U{i}"), file);
        b.ok("bdev_error_create", json!({"base_name": format!("U{i}")}));
    }
    uring(&b, "U2", &files[2]);
    let array = Array {
        d: &b,
        name: raid_name.to_string(),
        nqn: "nqn.2016-06.io.oxstor:fail-spare".to_string(),
        port: free_port(),
    };
    let info = array.info();
    assert_eq!(
        info["state"],
        "online",
        "reassembled: {info:#}\n{}",
        b.stderr()
    );
    assert_eq!(info["num_base_bdevs"], 3, "the spare is no slot: {info:#}");
    assert_eq!(
        array.slot_states(),
        ["online", "online", "online", "spare"],
        "{info:#}"
    );
    let names: Vec<&str> = info["base_bdevs_list"]
        .as_array()
        .map(|l| l.iter().filter_map(|m| m["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["EE_U0", "EE_U1", "U2", "SP"], "{info:#}");
    assert_eq!(info["stale_base_bdevs"], json!([]), "{info:#}");
    export(&b, raid_name, &array.nqn, array.port);

    let mut load = Load(Some(array.verify(&oxperf, 5)));
    let deadline = Instant::now() + Duration::from_secs(20);
    while array.writes() < 300 {
        assert!(load.running(), "oxperf ended before the failure");
        assert!(Instant::now() < deadline, "no writes reach {raid_name}");
        std::thread::sleep(Duration::from_millis(20));
    }
    b.ok(
        "bdev_error_inject_error",
        json!({"name": "EE_U1", "io_type": "all", "error_type": "failure", "num": 1_000_000}),
    );
    array.wait_for("the spare to take slot 1", Duration::from_secs(20), |v| {
        v["base_bdevs_list"][1]["name"] == "SP"
    });
    assert!(
        load.running(),
        "the failure must land while the verify run is still going"
    );
    load.assert_clean("across the failure");
    let info = array.wait_for(
        "the spare's rebuild to finish",
        Duration::from_secs(60),
        |v| {
            v.get("process").is_none()
                && v["base_bdevs_list"]
                    .as_array()
                    .is_some_and(|l| l.len() == 3 && l.iter().all(|m| m["state"] == "online"))
        },
    );
    let data_offset = info["base_bdevs_list"][0]["data_offset"]
        .as_u64()
        .expect("data_offset");
    let array_blocks = {
        let v = b.ok("bdev_get_bdevs", json!({"name": raid_name}));
        v[0]["num_blocks"].as_u64().expect("num_blocks")
    };
    drop(array);
    let status = b.terminate();
    assert!(status.success(), "daemon B exit: {status}\n{}", b.stderr());
    common::assert_no_panic(&b.stderr());

    let member_blocks = MEMBER_BYTES / BLOCK - data_offset;
    let layout = Layout::new(
        RaidLevel::Raid5,
        STRIP_KB * 1024 / BLOCK,
        &[member_blocks; 3],
    )
    .expect("layout");
    assert_eq!(layout.array_blocks(), array_blocks);
    let in_service = [files[0].clone(), spare_file.clone(), files[2].clone()];
    let found = read_back(&layout, data_offset, &in_service, &[1]);
    assert!(
        found.written > 0 && found.on_rebuilt > 0,
        "nothing written to check"
    );
}
