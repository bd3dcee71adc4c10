//! The write-intent bitmap on real reactors: only dirty regions are resynced after an
//! unclean shutdown, and a member that comes back gets only the regions it missed.

use oxstor_bdev::blocking;
use oxstor_bdev::registry::{self, BdevEntry};
use oxstor_bdev::{uring, IoStatus, IoType};
use oxstor_raid::persist;
use oxstor_raid::rpc;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

mod common;
use common::{rt, serial};

fn io(entry: &Arc<BdevEntry>, t: IoType, off: u64, n: u64, data: Option<Vec<u8>>) -> Vec<u8> {
    rt();
    let (st, data) = blocking::io(
        1,
        entry,
        t,
        off,
        n,
        data.as_deref(),
        Duration::from_secs(10),
    )
    .expect("I/O never completed");
    assert_eq!(st, IoStatus::Success, "{t:?} {off}+{n} on {}", entry.name());
    data
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed) ^ (i >> 10) as u8)
        .collect()
}

fn mk_uring(name: &str, path: &std::path::Path) {
    uring::create(
        serde_json::from_value(
            json!({"name": name, "filename": path.to_str().unwrap(), "block_size": 512}),
        )
        .unwrap(),
    )
    .unwrap();
}

fn raid_info(name: &str) -> Value {
    let all = rpc::get_bdevs(serde_json::from_value(json!({"category": "all"})).unwrap()).unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

const CHUNK_BYTES: u64 = 64 * 1024;
const CHUNK_BLOCKS: u64 = CHUNK_BYTES / 512;
/// Blocks of the 1 MiB superblock area before the data on each member.
const DATA_OFFSET: u64 = 2048;

fn setup(tag: &str) -> (std::path::PathBuf, Vec<std::path::PathBuf>) {
    oxstor_raid::intent::set_chunk_bytes(CHUNK_BYTES);
    // Long enough that no bit is cleared behind the tests' backs.
    oxstor_raid::intent::set_sweep_period(Duration::from_secs(600));
    let dir = std::env::temp_dir().join(format!("oxstor-raid-bm-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let files: Vec<_> = (0..2).map(|i| dir.join(format!("m{i}.img"))).collect();
    for f in &files {
        let file = std::fs::File::create(f).unwrap();
        file.set_len(8 << 20).unwrap();
    }
    (dir, files)
}

fn create_raid1(name: &str, members: [&str; 2], uuid: &str) {
    rpc::create(
        serde_json::from_value(json!({
            "name": name, "raid_level": "raid1", "base_bdevs": members,
            "uuid": uuid, "superblock": true
        }))
        .unwrap(),
    )
    .unwrap();
}

/// Reads a member's whole data area, 1 MiB at a time.
fn member_data(name: &str) -> Vec<u8> {
    let e = registry::lookup(name).unwrap();
    let blocks = e.bdev.geometry().num_blocks - DATA_OFFSET;
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < blocks {
        let n = 2048.min(blocks - pos);
        out.extend(io(&e, IoType::Read, DATA_OFFSET + pos, n, None));
        pos += n;
    }
    out
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn unclean_shutdown_resyncs_only_dirty_regions() {
    let _s = serial();
    rt();
    let (dir, files) = setup("resync");
    mk_uring("bmu0", &files[0]);
    mk_uring("bmu1", &files[1]);
    create_raid1(
        "bmr1",
        ["bmu0", "bmu1"],
        "22345678-9abc-4def-8123-456789abcdef",
    );
    let raid = registry::lookup("bmr1").unwrap();
    let info = raid_info("bmr1");
    assert_eq!(info["bitmap"]["chunk_blocks"], CHUNK_BLOCKS);
    assert_eq!(info["bitmap"]["dirty_regions"], 0);
    let sb = persist::read_superblock("bmu0").unwrap();
    let loc = sb.bitmap.expect("the superblock names the bitmap");
    assert_eq!(loc.chunk_blocks, CHUNK_BLOCKS);

    // Two writes in two regions (3 and 40).
    let a = pattern(8 * 512, 11);
    let b = pattern(16 * 512, 12);
    let (off_a, off_b) = (3 * CHUNK_BLOCKS + 5, 40 * CHUNK_BLOCKS);
    io(&raid, IoType::Write, off_a, 8, Some(a.clone()));
    io(&raid, IoType::Write, off_b, 16, Some(b.clone()));
    assert_eq!(raid_info("bmr1")["bitmap"]["dirty_regions"], 2);
    // The bits reached the disk before the data did.
    let m0 = registry::lookup("bmu0").unwrap();
    let img = io(&m0, IoType::Read, loc.offset_bytes / 512, 1, None);
    let bits = &img[oxstor_raid::bitmap::HEADER_LEN..];
    assert_eq!(bits[0], 1 << 3);
    assert_eq!(bits[5], 1 << 0);
    assert!(bits[1..5].iter().all(|&x| x == 0));

    // Crash: no clean superblock, no final bitmap write.
    drop(raid);
    persist::set_unclean_teardown(true);
    rpc::delete(serde_json::from_value(json!({"name": "bmr1"})).unwrap()).unwrap();
    persist::set_unclean_teardown(false);
    assert!(!persist::read_superblock("bmu0").unwrap().clean);
    // The second mirror lost its copy of the first write (it was in flight at the crash).
    let m1 = registry::lookup("bmu1").unwrap();
    io(
        &m1,
        IoType::Write,
        DATA_OFFSET + off_a,
        8,
        Some(vec![0xee; 8 * 512]),
    );
    drop((m0, m1));

    uring::delete("bmu0").unwrap();
    uring::delete("bmu1").unwrap();
    mk_uring("bmu0", &files[0]);
    mk_uring("bmu1", &files[1]);
    persist::examine_all();
    let raid = registry::lookup("bmr1").expect("array reassembled");
    let info = raid_info("bmr1");
    assert_eq!(info["last_resync"]["regions"], 2, "{info:#}");
    assert_eq!(info["last_resync"]["bytes"], 2 * CHUNK_BYTES);
    assert_eq!(io(&raid, IoType::Read, off_a, 8, None), a);
    assert_eq!(io(&raid, IoType::Read, off_b, 16, None), b);
    assert_eq!(
        member_data("bmu0"),
        member_data("bmu1"),
        "mirrors agree again"
    );
    // Resynced regions are clean again.
    assert_eq!(info["bitmap"]["dirty_regions"], 0);

    drop(raid);
    rpc::delete(serde_json::from_value(json!({"name": "bmr1", "clear_sb": true})).unwrap())
        .unwrap();
    uring::delete("bmu0").unwrap();
    uring::delete("bmu1").unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn readded_member_gets_only_missed_regions() {
    let _s = serial();
    rt();
    let (dir, files) = setup("readd");
    mk_uring("bmv0", &files[0]);
    mk_uring("bmv1", &files[1]);
    create_raid1(
        "bmr2",
        ["bmv0", "bmv1"],
        "32345678-9abc-4def-8123-456789abcdef",
    );
    let raid = registry::lookup("bmr2").unwrap();
    let blocks = raid.bdev.geometry().num_blocks;
    // Some data while both members are in.
    io(&raid, IoType::Write, 0, 256, Some(pattern(256 * 512, 1)));
    assert_eq!(raid_info("bmr2")["bitmap"]["dirty_regions"], 2);
    // Idle regions are cleared lazily by the sweeper (2 idle sweeps).
    oxstor_raid::intent::set_sweep_period(Duration::from_millis(20));
    wait_for("the sweeper to clear idle regions", || {
        raid_info("bmr2")["bitmap"]["dirty_regions"] == 0
    });
    oxstor_raid::intent::set_sweep_period(Duration::from_secs(600));

    rpc::remove_base_bdev(serde_json::from_value(json!({"name": "bmv1"})).unwrap()).unwrap();
    // About 1% of the array while bmv1 is away: one full region and a bit of another.
    let n1 = CHUNK_BLOCKS;
    let n2 = blocks / 100 - n1;
    io(
        &raid,
        IoType::Write,
        10 * CHUNK_BLOCKS,
        n1,
        Some(pattern((n1 * 512) as usize, 2)),
    );
    io(
        &raid,
        IoType::Write,
        50 * CHUNK_BLOCKS + 7,
        n2,
        Some(pattern((n2 * 512) as usize, 3)),
    );

    rpc::add_base_bdev(
        serde_json::from_value(json!({"raid_bdev": "bmr2", "base_bdev": "bmv1"})).unwrap(),
    )
    .unwrap();
    wait_for("the rebuild", || {
        let info = raid_info("bmr2");
        info["state"] == "online"
            && info["num_base_bdevs_operational"] == 2
            && info.get("process").is_none()
            && info.get("last_rebuild").is_some()
    });
    let info = raid_info("bmr2");
    let copied = info["last_rebuild"]["bytes_copied"].as_u64().unwrap();
    assert_eq!(info["last_rebuild"]["full"], false, "{info:#}");
    assert!(
        copied > 0 && copied <= 2 * CHUNK_BYTES,
        "copied {copied} bytes: {info:#}"
    );
    assert_eq!(
        member_data("bmv0"),
        member_data("bmv1"),
        "members identical"
    );

    drop(raid);
    rpc::delete(serde_json::from_value(json!({"name": "bmr2", "clear_sb": true})).unwrap())
        .unwrap();
    uring::delete("bmv0").unwrap();
    uring::delete("bmv1").unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn raid5_unclean_shutdown_resyncs_parity_of_dirty_regions() {
    let _s = serial();
    rt();
    let (dir, mut files) = setup("raid5");
    files.push(dir.join("m2.img"));
    std::fs::File::create(&files[2])
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let names = ["bmw0", "bmw1", "bmw2"];
    for (n, f) in names.iter().zip(&files) {
        mk_uring(n, f);
    }
    rpc::create(
        serde_json::from_value(json!({
            "name": "bmr5", "raid_level": "raid5", "strip_size_kb": 16,
            "base_bdevs": names, "uuid": "42345678-9abc-4def-8123-456789abcdef",
            "superblock": true
        }))
        .unwrap(),
    )
    .unwrap();
    let raid = registry::lookup("bmr5").unwrap();
    let a = pattern(64 * 512, 21);
    let b = pattern(64 * 512, 22);
    let (off_a, off_b) = (2 * CHUNK_BLOCKS, 30 * CHUNK_BLOCKS);
    io(&raid, IoType::Write, off_a, 64, Some(a.clone()));
    io(&raid, IoType::Write, off_b, 64, Some(b.clone()));
    assert_eq!(raid_info("bmr5")["bitmap"]["dirty_regions"], 2);
    drop(raid);
    persist::set_unclean_teardown(true);
    rpc::delete(serde_json::from_value(json!({"name": "bmr5"})).unwrap()).unwrap();
    persist::set_unclean_teardown(false);
    // The stripe of `a` (stripe 4: 2 data strips of 32 blocks) sits at member block 128 of
    // every member; garble its parity strip, as a crash between data and parity would.
    let strip_of = |n: &str| {
        let e = registry::lookup(n).unwrap();
        io(&e, IoType::Read, DATA_OFFSET + 128, 32, None)
    };
    let parity_member = names
        .iter()
        .copied()
        .find(|n| {
            let s = strip_of(n);
            s != a[..16384] && s != a[16384..]
        })
        .expect("one member holds the parity");
    let pm = registry::lookup(parity_member).unwrap();
    io(
        &pm,
        IoType::Write,
        DATA_OFFSET + 128,
        32,
        Some(vec![0xee; 16384]),
    );
    drop(pm);
    for n in names {
        uring::delete(n).unwrap();
    }
    for (n, f) in names.iter().zip(&files) {
        mk_uring(n, f);
    }
    persist::examine_all();
    let raid = registry::lookup("bmr5").expect("array reassembled");
    let info = raid_info("bmr5");
    assert_eq!(info["last_resync"]["regions"], 2, "{info:#}");
    assert_eq!(io(&raid, IoType::Read, off_a, 64, None), a);
    let xor = names.iter().fold(vec![0u8; 16384], |mut acc, n| {
        acc.iter_mut().zip(strip_of(n)).for_each(|(x, y)| *x ^= y);
        acc
    });
    assert!(xor.iter().all(|&x| x == 0), "parity recomputed");
    // Degraded reads rebuild from parity: it must be consistent.
    rpc::remove_base_bdev(serde_json::from_value(json!({"name": "bmw0"})).unwrap()).unwrap();
    assert_eq!(io(&raid, IoType::Read, off_a, 64, None), a);
    assert_eq!(io(&raid, IoType::Read, off_b, 64, None), b);

    drop(raid);
    rpc::delete(serde_json::from_value(json!({"name": "bmr5", "clear_sb": true})).unwrap())
        .unwrap();
    for n in names {
        uring::delete(n).unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes into regions already dirty on disk skip the bitmap lock (per-core counts): the
/// sweeper must still never clear a bit under such a write in flight. One member sits
/// behind a delay bdev so the write stays in flight across many 1 ms sweeps.
#[test]
fn sweep_keeps_the_bit_of_a_lock_free_write_in_flight() {
    let _s = serial();
    rt();
    oxstor_raid::intent::set_chunk_bytes(CHUNK_BYTES);
    oxstor_raid::intent::set_sweep_period(Duration::from_secs(600));
    for n in ["bmx0", "bmx1"] {
        oxstor_bdev::malloc::create(
            serde_json::from_value(json!({"name": n, "num_blocks": 16384, "block_size": 512}))
                .unwrap(),
        )
        .unwrap();
    }
    // 150 ms per write on the second copy.
    oxstor_bdev::delay::create(
        serde_json::from_value(json!({
            "base_bdev_name": "bmx1", "name": "bmxslow",
            "avg_read_latency": 0, "p99_read_latency": 0,
            "avg_write_latency": 150_000, "p99_write_latency": 150_000
        }))
        .unwrap(),
    )
    .unwrap();
    create_raid1(
        "bmr3",
        ["bmx0", "bmxslow"],
        "62345678-9abc-4def-8123-456789abcdef",
    );
    let raid = registry::lookup("bmr3").unwrap();
    let loc = persist::read_superblock("bmx0").unwrap().bitmap.unwrap();
    let m0 = registry::lookup("bmx0").unwrap();
    let bit3_on_disk = || {
        let img = io(&m0, IoType::Read, loc.offset_bytes / 512, 1, None);
        img[oxstor_raid::bitmap::HEADER_LEN] & (1 << 3) != 0
    };
    let off = 3 * CHUNK_BLOCKS + 1;
    // First write: the bit goes to disk first (the locked path).
    io(&raid, IoType::Write, off, 4, Some(pattern(4 * 512, 1)));
    assert!(bit3_on_disk());
    // Sweep every millisecond from now on; a second write takes the lock-free path and
    // stays in flight for 150 ms.
    oxstor_raid::intent::set_sweep_period(Duration::from_millis(1));
    let writer = {
        let raid = raid.clone();
        std::thread::spawn(move || {
            let t0 = std::time::Instant::now();
            io(&raid, IoType::Write, off, 4, Some(pattern(4 * 512, 2)));
            t0.elapsed()
        })
    };
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(8));
        let (on_disk, dirty) = (
            bit3_on_disk(),
            raid_info("bmr3")["bitmap"]["dirty_regions"].clone(),
        );
        // Still in flight after both reads: they saw the write in flight.
        if writer.is_finished() {
            break;
        }
        assert!(on_disk, "bit cleared under a write in flight");
        assert_eq!(dirty, 1);
    }
    let took = writer.join().unwrap();
    eprintln!("lock-free write took {took:?}");
    // Once idle, the bit is cleared (in memory and on disk) as before.
    wait_for("the idle region to be cleared", || {
        raid_info("bmr3")["bitmap"]["dirty_regions"] == 0 && !bit3_on_disk()
    });
    // The next write takes the locked path again and sets the bit on disk (no sweeping
    // now, so nothing clears it once the write is done).
    oxstor_raid::intent::set_sweep_period(Duration::from_secs(600));
    io(&raid, IoType::Write, off, 4, Some(pattern(4 * 512, 3)));
    assert!(bit3_on_disk());
    drop((raid, m0));
    rpc::delete(serde_json::from_value(json!({"name": "bmr3", "clear_sb": true})).unwrap())
        .unwrap();
    oxstor_bdev::delay::delete("bmxslow").unwrap();
    for n in ["bmx0", "bmx1"] {
        oxstor_bdev::malloc::delete(n).unwrap();
    }
}
