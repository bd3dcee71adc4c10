//! The write-intent bitmap on real reactors: only dirty regions are resynced after an
//! unclean shutdown, and a member that comes back gets only the regions it missed.

use oxstor_bdev::blocking;
use oxstor_bdev::registry::{self, BdevEntry};
use oxstor_bdev::{uring, IoStatus, IoType};
use oxstor_raid::persist;
use oxstor_raid::rpc;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod common;
use common::{mk_malloc, mk_uring, raid_info, rt, serial};

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
    mk_uring("bmu0", &files[0], 512);
    mk_uring("bmu1", &files[1], 512);
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
    mk_uring("bmu0", &files[0], 512);
    mk_uring("bmu1", &files[1], 512);
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
    mk_uring("bmv0", &files[0], 512);
    mk_uring("bmv1", &files[1], 512);
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
        mk_uring(n, f, 512);
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
        mk_uring(n, f, 512);
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

// ---------------------------------------------------------------------------------------------
// raid10 (near layout, 2 copies) and the bounded-queue-depth mirror rebuild.
// ---------------------------------------------------------------------------------------------

/// raid10 strips of the tests: 16 KiB.
const STRIP_BLOCKS: u64 = 32;

/// Member and member block of copy `copy` of array chunk `chunk` (md's near-2 layout).
fn near2(chunk: u64, copy: u64, members: u64, strip: u64) -> (usize, u64) {
    let slot = 2 * chunk + copy;
    ((slot % members) as usize, (slot / members) * strip)
}

/// Array chunks whose two copies differ, given every member's data area (slot order).
fn raid10_diverging_chunks(data: &[Vec<u8>], chunks: u64, strip: u64) -> Vec<u64> {
    let bytes = (strip * 512) as usize;
    let n = data.len() as u64;
    (0..chunks)
        .filter(|&c| {
            let (m0, o0) = near2(c, 0, n, strip);
            let (m1, o1) = near2(c, 1, n, strip);
            let a = &data[m0][o0 as usize * 512..][..bytes];
            let b = &data[m1][o1 as usize * 512..][..bytes];
            a != b
        })
        .collect()
}

fn setup_files(tag: &str, count: usize) -> (std::path::PathBuf, Vec<std::path::PathBuf>) {
    let (dir, mut files) = setup(tag);
    for i in files.len()..count {
        let f = dir.join(format!("m{i}.img"));
        std::fs::File::create(&f).unwrap().set_len(8 << 20).unwrap();
        files.push(f);
    }
    (dir, files)
}

fn create_raid10(name: &str, members: &[&str], uuid: &str) {
    rpc::create(
        serde_json::from_value(json!({
            "name": name, "raid_level": "raid10", "strip_size_kb": STRIP_BLOCKS / 2,
            "base_bdevs": members, "uuid": uuid, "superblock": true
        }))
        .unwrap(),
    )
    .unwrap();
}

#[test]
fn raid10_unclean_shutdown_resyncs_only_dirty_regions() {
    let _s = serial();
    rt();
    let (dir, files) = setup_files("r10resync", 4);
    let names = ["bmy0", "bmy1", "bmy2", "bmy3"];
    for (n, f) in names.iter().zip(&files) {
        mk_uring(n, f, 512);
    }
    create_raid10("bmr10", &names, "72345678-9abc-4def-8123-456789abcdef");
    let raid = registry::lookup("bmr10").unwrap();
    let blocks = raid.bdev.geometry().num_blocks;
    let chunks = blocks / STRIP_BLOCKS;
    assert_eq!(raid_info("bmr10")["bitmap"]["chunk_blocks"], CHUNK_BLOCKS);
    let a = pattern(8 * 512, 31);
    let b = pattern(16 * 512, 32);
    let (off_a, off_b) = (3 * CHUNK_BLOCKS + 5, 40 * CHUNK_BLOCKS);
    io(&raid, IoType::Write, off_a, 8, Some(a.clone()));
    io(&raid, IoType::Write, off_b, 16, Some(b.clone()));
    assert_eq!(raid_info("bmr10")["bitmap"]["dirty_regions"], 2);

    drop(raid);
    persist::set_unclean_teardown(true);
    rpc::delete(serde_json::from_value(json!({"name": "bmr10"})).unwrap()).unwrap();
    persist::set_unclean_teardown(false);
    assert!(!persist::read_superblock("bmy0").unwrap().clean);
    // The crash lost `a` on its second copy...
    let chunk_a = off_a / STRIP_BLOCKS;
    let (m, moff) = near2(chunk_a, 1, 4, STRIP_BLOCKS);
    let member = registry::lookup(names[m]).unwrap();
    let within = off_a % STRIP_BLOCKS;
    io(
        &member,
        IoType::Write,
        DATA_OFFSET + moff + within,
        8,
        Some(vec![0xee; 8 * 512]),
    );
    // ...and a chunk in a clean region differs too, which no resync may touch: only the
    // dirty regions are copied.
    let clean_chunk = 100 * CHUNK_BLOCKS / STRIP_BLOCKS;
    let (m, moff) = near2(clean_chunk, 1, 4, STRIP_BLOCKS);
    let member = registry::lookup(names[m]).unwrap();
    io(
        &member,
        IoType::Write,
        DATA_OFFSET + moff,
        STRIP_BLOCKS,
        Some(vec![0x55; STRIP_BLOCKS as usize * 512]),
    );
    drop(member);

    for n in names {
        uring::delete(n).unwrap();
    }
    for (n, f) in names.iter().zip(&files) {
        mk_uring(n, f, 512);
    }
    persist::examine_all();
    let raid = registry::lookup("bmr10").expect("array reassembled");
    let info = raid_info("bmr10");
    assert_eq!(info["last_resync"]["regions"], 2, "{info:#}");
    assert_eq!(info["last_resync"]["bytes"], 2 * CHUNK_BYTES, "{info:#}");
    assert_eq!(info["last_resync"]["full"], false, "{info:#}");
    assert_eq!(info["bitmap"]["dirty_regions"], 0, "{info:#}");
    assert_eq!(io(&raid, IoType::Read, off_a, 8, None), a);
    assert_eq!(io(&raid, IoType::Read, off_b, 16, None), b);
    let data: Vec<Vec<u8>> = names.iter().map(|n| member_data(n)).collect();
    assert_eq!(
        raid10_diverging_chunks(&data, chunks, STRIP_BLOCKS),
        vec![clean_chunk],
        "the dirty regions' copies agree again; the clean region was left alone"
    );

    drop(raid);
    rpc::delete(serde_json::from_value(json!({"name": "bmr10", "clear_sb": true})).unwrap())
        .unwrap();
    for n in names {
        uring::delete(n).unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn raid10_readded_member_gets_only_missed_regions() {
    let _s = serial();
    rt();
    let (dir, files) = setup_files("r10readd", 4);
    let names = ["bmz0", "bmz1", "bmz2", "bmz3"];
    for (n, f) in names.iter().zip(&files) {
        mk_uring(n, f, 512);
    }
    create_raid10("bmr11", &names, "82345678-9abc-4def-8123-456789abcdef");
    let raid = registry::lookup("bmr11").unwrap();
    let blocks = raid.bdev.geometry().num_blocks;
    let chunks = blocks / STRIP_BLOCKS;
    let mut image = pattern((blocks * 512) as usize, 40);
    for off in (0..blocks).step_by(2048) {
        let n = 2048.min(blocks - off);
        let range = (off * 512) as usize..((off + n) * 512) as usize;
        io(&raid, IoType::Write, off, n, Some(image[range].to_vec()));
    }
    oxstor_raid::intent::set_sweep_period(Duration::from_millis(20));
    wait_for("the sweeper to clear idle regions", || {
        raid_info("bmr11")["bitmap"]["dirty_regions"] == 0
    });
    oxstor_raid::intent::set_sweep_period(Duration::from_secs(600));

    rpc::remove_base_bdev(serde_json::from_value(json!({"name": "bmz1"})).unwrap()).unwrap();
    // About 1% of the array while bmz1 is away: one full region and a bit of two others.
    let n1 = CHUNK_BLOCKS;
    let n2 = blocks / 100 - n1;
    let writes = [(10 * CHUNK_BLOCKS, n1, 2u8), (50 * CHUNK_BLOCKS + 7, n2, 3)];
    for (off, n, seed) in writes {
        let data = pattern((n * 512) as usize, seed);
        image[(off * 512) as usize..][..data.len()].copy_from_slice(&data);
        io(&raid, IoType::Write, off, n, Some(data));
    }
    // bmz1 holds copy 1 of the even chunks: the rebuild owes it those of the dirty regions.
    let mut dirty: Vec<u64> = writes
        .iter()
        .flat_map(|&(off, n, _)| off / CHUNK_BLOCKS..=(off + n - 1) / CHUNK_BLOCKS)
        .collect();
    dirty.dedup();
    assert_eq!(dirty, vec![10, 50, 51]);
    let owed_blocks: u64 = dirty
        .iter()
        .flat_map(|r| r * CHUNK_BLOCKS / STRIP_BLOCKS..(r + 1) * CHUNK_BLOCKS / STRIP_BLOCKS)
        .filter(|&c| (0..2).any(|copy| near2(c, copy, 4, STRIP_BLOCKS).0 == 1))
        .count() as u64
        * STRIP_BLOCKS;

    rpc::add_base_bdev(
        serde_json::from_value(json!({"raid_bdev": "bmr11", "base_bdev": "bmz1"})).unwrap(),
    )
    .unwrap();
    wait_for("the rebuild", || {
        let info = raid_info("bmr11");
        info["state"] == "online"
            && info["num_base_bdevs_operational"] == 4
            && info.get("process").is_none()
            && info.get("last_rebuild").is_some()
    });
    let info = raid_info("bmr11");
    assert_eq!(info["last_rebuild"]["full"], false, "{info:#}");
    assert_eq!(info["last_rebuild"]["regions"], 3, "{info:#}");
    assert_eq!(
        info["last_rebuild"]["bytes_copied"],
        owed_blocks * 512,
        "only bmz1's chunks of the 3 dirty regions: {info:#}"
    );
    let member_bytes = info["base_bdevs_list"][1]["data_size"].as_u64().unwrap() * 512;
    assert!(
        owed_blocks * 512 * 50 < member_bytes,
        "{owed_blocks} blocks"
    );
    let data: Vec<Vec<u8>> = names.iter().map(|n| member_data(n)).collect();
    assert!(
        raid10_diverging_chunks(&data, chunks, STRIP_BLOCKS).is_empty(),
        "both copies of every chunk agree"
    );
    for off in (0..blocks).step_by(2048) {
        let n = 2048.min(blocks - off);
        let got = io(&raid, IoType::Read, off, n, None);
        assert!(
            got == image[(off * 512) as usize..][..got.len()],
            "array blocks {off}+{n}"
        );
    }

    drop(raid);
    rpc::delete(serde_json::from_value(json!({"name": "bmr11", "clear_sb": true})).unwrap())
        .unwrap();
    for n in names {
        uring::delete(n).unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn io_on(core: usize, entry: &Arc<BdevEntry>, off: u64, data: Vec<u8>) {
    let n = data.len() as u64 / 512;
    let (st, _) = blocking::io(
        core,
        entry,
        IoType::Write,
        off,
        n,
        Some(&data),
        Duration::from_secs(10),
    )
    .expect("I/O never completed");
    assert_eq!(st, IoStatus::Success, "write {off}+{n}");
}

fn set_rebuild_options(window_kb: u64, queue_depth: u64) {
    oxstor_raid::rebuild::set_options(oxstor_raid::rebuild::BdevRaidSetOptionsParams {
        process_window_size_kb: Some(window_kb),
        process_max_bandwidth_mb_sec: Some(0),
        process_queue_depth: Some(queue_depth),
        ..Default::default()
    })
    .unwrap();
}

/// A new member behind a delay bdev (1 ms per write), so that windows in flight overlap.
fn slow_member(name: &str, blocks: u64) -> String {
    mk_malloc(name, blocks, 512);
    oxstor_bdev::delay::create(
        serde_json::from_value(json!({
            "base_bdev_name": name, "name": format!("{name}slow"),
            "avg_read_latency": 0, "p99_read_latency": 0,
            "avg_write_latency": 1000, "p99_write_latency": 1000
        }))
        .unwrap(),
    )
    .unwrap()
}

fn whole(name: &str, blocks: u64) -> Vec<u8> {
    let e = registry::lookup(name).unwrap();
    let mut out = Vec::new();
    for off in (0..blocks).step_by(2048) {
        out.extend(io(&e, IoType::Read, off, 2048.min(blocks - off), None));
    }
    out
}

/// Replaces slot 1 of `raid` with a slow new member and rebuilds it while two threads (one
/// per core) write to disjoint 24 KiB units (not aligned to the windows, so some straddle
/// two). The writers pause 3 ms after every 4 writes: the rebuild runs its full queue depth
/// only when no user I/O came for a millisecond, so deep spans start in the lulls and meet
/// the writes that follow. Returns the new member's name, the array image, the writes made
/// while the rebuild ran, and how long the rebuild took.
fn rebuild_under_writes(
    raid: &str,
    old: &str,
    new: &str,
    member_blocks: u64,
    members: u64,
    mut image: Vec<u8>,
) -> (String, Vec<u8>, u64, Duration) {
    let entry = registry::lookup(raid).unwrap();
    let blocks = entry.bdev.geometry().num_blocks;
    rpc::remove_base_bdev(serde_json::from_value(json!({"name": old})).unwrap()).unwrap();
    let slow = slow_member(new, member_blocks);
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    const UNIT: u64 = 48;
    let writers: Vec<_> = (0..2u64)
        .map(|core| {
            let (entry, stop, writes) = (entry.clone(), stop.clone(), writes.clone());
            std::thread::spawn(move || {
                let mut done = Vec::new();
                let mut i = core;
                while !stop.load(Ordering::Acquire) {
                    // Units `core`, `core + 2`, ... (scrambled), a piece of each.
                    let unit = (i * 7919) % (blocks / UNIT) / 2 * 2 + core;
                    let len = 1 + (i * 13) % UNIT;
                    let off = unit * UNIT + (i * 5) % (UNIT - len + 1);
                    let data = pattern((len * 512) as usize, i as u8);
                    io_on(core as usize, &entry, off, data.clone());
                    writes.fetch_add(1, Ordering::Relaxed);
                    done.push((off, data));
                    i += 2;
                    if i % 8 == core {
                        std::thread::sleep(Duration::from_millis(3));
                    }
                }
                done
            })
        })
        .collect();
    // Let the writers get going first.
    let w0 = writes.load(Ordering::Relaxed);
    wait_for("user writes", || writes.load(Ordering::Relaxed) > w0 + 20);
    let t0 = std::time::Instant::now();
    let w1 = writes.load(Ordering::Relaxed);
    rpc::add_base_bdev(
        serde_json::from_value(json!({"raid_bdev": raid, "base_bdev": slow})).unwrap(),
    )
    .unwrap();
    wait_for("the rebuild", || {
        let info = raid_info(raid);
        info["num_base_bdevs_operational"] == members && info.get("process").is_none()
    });
    let took = t0.elapsed();
    let during = writes.load(Ordering::Relaxed) - w1;
    stop.store(true, Ordering::Release);
    for w in writers {
        for (off, data) in w.join().unwrap() {
            image[(off * 512) as usize..][..data.len()].copy_from_slice(&data);
        }
    }
    let info = raid_info(raid);
    assert_eq!(info["base_bdevs_list"][1]["state"], "online", "{info:#}");
    (slow, image, during, took)
}

fn fill_array(name: &str, seed: u8) -> Vec<u8> {
    let e = registry::lookup(name).unwrap();
    let blocks = e.bdev.geometry().num_blocks;
    let image = pattern((blocks * 512) as usize, seed);
    for off in (0..blocks).step_by(2048) {
        let n = 2048.min(blocks - off);
        io(
            &e,
            IoType::Write,
            off,
            n,
            Some(image[(off * 512) as usize..][..(n * 512) as usize].to_vec()),
        );
    }
    image
}

fn check_array(name: &str, image: &[u8]) {
    let got = whole(name, image.len() as u64 / 512);
    if let Some(i) = got.iter().zip(image).position(|(a, b)| a != b) {
        panic!(
            "{name}: array block {} differs from what was written",
            i / 512
        );
    }
}

#[test]
fn deep_rebuild_under_writes_leaves_identical_copies() {
    let _s = serial();
    rt();
    const MEMBER: u64 = 8192; // 4 MiB
                              // Small windows: many spans, 8 windows each, so user writes meet locked spans often.
    set_rebuild_options(16, 8);

    // raid1.
    for m in ["bqa0", "bqa1"] {
        mk_malloc(m, MEMBER, 512);
    }
    rpc::create(
        serde_json::from_value(json!({
            "name": "bqr1", "raid_level": "raid1", "base_bdevs": ["bqa0", "bqa1"]
        }))
        .unwrap(),
    )
    .unwrap();
    let image = fill_array("bqr1", 50);
    let (slow, image, during, took_qd8) =
        rebuild_under_writes("bqr1", "bqa1", "bqa2", MEMBER, 2, image);
    eprintln!("raid1 rebuild at queue depth 8 took {took_qd8:?}, {during} user writes meanwhile");
    assert!(during > 0, "user writes ran during the rebuild");
    assert!(
        whole("bqa0", MEMBER) == whole("bqa2", MEMBER),
        "raid1 copies differ"
    );
    check_array("bqr1", &image);
    // The same rebuild one window at a time throughout.
    set_rebuild_options(16, 1);
    let (slow1, image, _, took_qd1) = rebuild_under_writes("bqr1", &slow, "bqa3", MEMBER, 2, image);
    eprintln!("raid1 rebuild at queue depth 1 took {took_qd1:?}");
    assert!(
        whole("bqa0", MEMBER) == whole("bqa3", MEMBER),
        "raid1 copies differ"
    );
    check_array("bqr1", &image);
    rpc::delete(serde_json::from_value(json!({"name": "bqr1"})).unwrap()).unwrap();
    for d in [slow, slow1] {
        oxstor_bdev::delay::delete(&d).unwrap();
    }
    for m in ["bqa0", "bqa1", "bqa2", "bqa3"] {
        oxstor_bdev::malloc::delete(m).unwrap();
    }

    // raid10 over 4 members, 16 KiB strips (one window per strip).
    set_rebuild_options(16, 8);
    let names = ["bqb0", "bqb1", "bqb2", "bqb3"];
    for m in names {
        mk_malloc(m, MEMBER, 512);
    }
    rpc::create(
        serde_json::from_value(json!({
            "name": "bqr10", "raid_level": "raid10", "strip_size_kb": STRIP_BLOCKS / 2,
            "base_bdevs": names
        }))
        .unwrap(),
    )
    .unwrap();
    let chunks = registry::lookup("bqr10")
        .unwrap()
        .bdev
        .geometry()
        .num_blocks
        / STRIP_BLOCKS;
    let image = fill_array("bqr10", 60);
    let (slow, image, during, took) =
        rebuild_under_writes("bqr10", "bqb1", "bqb4", MEMBER, 4, image);
    eprintln!("raid10 rebuild at queue depth 8 took {took:?}, {during} user writes meanwhile");
    assert!(during > 0, "user writes ran during the rebuild");
    let data: Vec<Vec<u8>> = ["bqb0", "bqb4", "bqb2", "bqb3"]
        .iter()
        .map(|m| whole(m, MEMBER))
        .collect();
    assert_eq!(
        raid10_diverging_chunks(&data, chunks, STRIP_BLOCKS),
        Vec::<u64>::new(),
        "raid10 copies differ"
    );
    check_array("bqr10", &image);
    rpc::delete(serde_json::from_value(json!({"name": "bqr10"})).unwrap()).unwrap();
    oxstor_bdev::delay::delete(&slow).unwrap();
    for m in ["bqb0", "bqb1", "bqb2", "bqb3", "bqb4"] {
        oxstor_bdev::malloc::delete(m).unwrap();
    }
    set_rebuild_options(oxstor_raid::rebuild::DEFAULT_WINDOW_KB, 4);
}

/// While set, the log line `begin_rebuild` writes between taking a returning member's delta
/// and putting the member back in service (`... returns: copying N region(s)`) sleeps, as if
/// the scheduler had preempted the control thread right there.
static PREEMPT_READD: AtomicBool = AtomicBool::new(false);
/// How many times that line slept.
static PREEMPTED_READDS: AtomicU64 = AtomicU64::new(0);

/// The test binary's tracing subscriber: nothing but the [`PREEMPT_READD`] hook.
struct PreemptedReadd;

impl tracing::Subscriber for PreemptedReadd {
    fn enabled(&self, meta: &tracing::Metadata<'_>) -> bool {
        meta.is_event() && meta.target().starts_with("oxstor_raid")
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Delta(bool);
        impl tracing::field::Visit for Delta {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                self.0 |= f.name() == "message" && format!("{v:?}").contains("returns: copying");
            }
        }
        if !PREEMPT_READD.load(Ordering::Acquire) {
            return;
        }
        let mut delta = Delta(false);
        event.record(&mut delta);
        if delta.0 {
            PREEMPTED_READDS.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn install_preempted_readd() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        tracing::subscriber::set_global_default(PreemptedReadd)
            .expect("no other subscriber in this test binary");
    });
}

/// Writes racing the re-add of a returning raid1 member. A write that begins after the
/// rebuild took the member's delta, but fans out before the member turns REBUILDING, skips
/// the member and is in no delta; the window is the control thread's to lose, so it is
/// widened here as a preemption would ([`PreemptedReadd`]). Every write lands in a region
/// nothing wrote before, so only the bitmap's dirty set, read once the member is
/// REBUILDING, can send such a write's region to the member: after each re-add, both copies
/// of every region written must agree.
#[test]
fn writes_racing_a_readd_reach_the_returning_member() {
    let _s = serial();
    rt();
    install_preempted_readd();
    let preempted_before = PREEMPTED_READDS.load(Ordering::Relaxed);
    // One region per write (4 KiB), so that each write marks a region of its own.
    const REGION: u64 = 8;
    const ROUNDS: u64 = 6;
    oxstor_raid::intent::set_chunk_bytes(REGION * 512);
    oxstor_raid::intent::set_sweep_period(Duration::from_secs(600));
    for n in ["bmw0", "bmw1"] {
        mk_malloc(n, 65536, 512);
    }
    create_raid1(
        "bmr4",
        ["bmw0", "bmw1"],
        "92345678-9abc-4def-8123-456789abcdef",
    );
    let raid = registry::lookup("bmr4").unwrap();
    let regions = raid.bdev.geometry().num_blocks / REGION;
    assert_eq!(raid_info("bmr4")["bitmap"]["chunk_blocks"], REGION);
    let copies_agree = |first: u64, end: u64| {
        let (m0, m1) = (
            registry::lookup("bmw0").unwrap(),
            registry::lookup("bmw1").unwrap(),
        );
        let mut pos = first * REGION;
        while pos < end * REGION {
            let n = 2048.min(end * REGION - pos);
            let a = io(&m0, IoType::Read, DATA_OFFSET + pos, n, None);
            let b = io(&m1, IoType::Read, DATA_OFFSET + pos, n, None);
            if let Some(i) = a.iter().zip(&b).position(|(x, y)| x != y) {
                return Err(pos + i as u64 / 512);
            }
            pos += n;
        }
        Ok(())
    };
    let mut next_region = 0;
    for round in 0..ROUNDS {
        rpc::remove_base_bdev(serde_json::from_value(json!({"name": "bmw1"})).unwrap()).unwrap();
        // The member misses one write while it is away: the delta is not empty.
        io(
            &raid,
            IoType::Write,
            next_region * REGION,
            REGION,
            Some(pattern(REGION as usize * 512, round as u8)),
        );
        let first = next_region + 1;
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..2u64)
            .map(|core| {
                let (raid, stop) = (raid.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut region = first + core;
                    while !stop.load(Ordering::Acquire) && region < regions {
                        let data = pattern(REGION as usize * 512, region as u8);
                        io_on(core as usize, &raid, region * REGION, data);
                        region += 2;
                    }
                    region
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(2));
        PREEMPT_READD.store(true, Ordering::Release);
        let added = rpc::add_base_bdev(
            serde_json::from_value(json!({"raid_bdev": "bmr4", "base_bdev": "bmw1"})).unwrap(),
        );
        PREEMPT_READD.store(false, Ordering::Release);
        added.unwrap();
        wait_for("the rebuild", || {
            let info = raid_info("bmr4");
            info["num_base_bdevs_operational"] == 2 && info.get("process").is_none()
        });
        // Writes that began after the member was back in service reached it directly.
        std::thread::sleep(Duration::from_millis(2));
        stop.store(true, Ordering::Release);
        let end = writers
            .into_iter()
            .map(|w| w.join().unwrap())
            .max()
            .unwrap_or(first);
        let info = raid_info("bmr4");
        assert_eq!(info["last_rebuild"]["full"], false, "{info:#}");
        assert!(
            end > first + 2,
            "round {round}: writes ran during the re-add"
        );
        if let Err(block) = copies_agree(next_region, end) {
            panic!(
                "round {round}: array block {block} differs between the copies ({} regions \
                 written around the re-add)",
                end - first
            );
        }
        next_region = end;
        assert!(next_region < regions, "the rounds fit the array");
    }
    assert_eq!(
        PREEMPTED_READDS.load(Ordering::Relaxed) - preempted_before,
        ROUNDS,
        "every re-add was held between its delta and the member's return"
    );
    assert_eq!(
        member_data("bmw0"),
        member_data("bmw1"),
        "members identical"
    );

    drop(raid);
    rpc::delete(serde_json::from_value(json!({"name": "bmr4", "clear_sb": true})).unwrap())
        .unwrap();
    for n in ["bmw0", "bmw1"] {
        oxstor_bdev::malloc::delete(n).unwrap();
    }
    oxstor_raid::intent::set_chunk_bytes(CHUNK_BYTES);
}

/// Reads of 4 KiB at random offsets on the reactor it was started on, 4 in flight, each
/// completion submitting the next until `stop`: a load that no thread scheduling pauses.
struct ReactorReads {
    me: std::rc::Weak<ReactorReads>,
    channel: std::rc::Rc<oxstor_bdev::IoChannel>,
    blocks: u64,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    inflight: Arc<AtomicU64>,
}

impl ReactorReads {
    const DEPTH: u64 = 4;

    /// Starts the load on reactor `core`; it runs until `stop` and its reads have all come
    /// back (`inflight` is 0).
    fn start(core: usize, entry: &Arc<BdevEntry>, stop: &Arc<AtomicBool>) -> ReactorReadsStats {
        let stats = ReactorReadsStats {
            done: Arc::new(AtomicU64::new(0)),
            failed: Arc::new(AtomicU64::new(0)),
            inflight: Arc::new(AtomicU64::new(Self::DEPTH)),
        };
        let (entry, stop, s) = (entry.clone(), stop.clone(), stats.clone());
        rt().send(core, move || {
            let Ok(channel) = entry.channel() else {
                s.failed.fetch_add(1, Ordering::Relaxed);
                s.inflight.store(0, Ordering::Release);
                return;
            };
            let load = std::rc::Rc::new_cyclic(|me| ReactorReads {
                me: me.clone(),
                channel,
                blocks: entry.bdev.geometry().num_blocks,
                stop,
                done: s.done,
                failed: s.failed,
                inflight: s.inflight,
            });
            for i in 0..Self::DEPTH {
                let buf = oxstor_reactor::DmaBuf::zeroed(4096).expect("a 4 KiB DMA buffer");
                let io =
                    oxstor_bdev::BdevIo::new(IoType::Read, i * 8, 8, oxstor_bdev::IoBuf::Dma(buf));
                load.channel.submit(io, load.clone(), 0);
            }
        });
        stats
    }
}

impl oxstor_bdev::IoDone for ReactorReads {
    fn io_done(&self, mut io: Box<oxstor_bdev::BdevIo>, _tag: u64) {
        let counter = if io.status == IoStatus::Success {
            &self.done
        } else {
            &self.failed
        };
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let Some(me) = self.me.upgrade() else { return };
        if self.stop.load(Ordering::Acquire) {
            self.inflight.fetch_sub(1, Ordering::Release);
            return;
        }
        let next = (n.wrapping_mul(7919) % (self.blocks / 8)) * 8;
        io.reset(IoType::Read, next, 8);
        self.channel.submit(io, me, 0);
    }
}

#[derive(Clone)]
struct ReactorReadsStats {
    done: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    inflight: Arc<AtomicU64>,
}

/// A mirror rebuild keeps `process_queue_depth` windows in flight only while the array is
/// otherwise idle; while users read it copies one window at a time (md's resync rule). The
/// new member takes 1 ms per write, so the rebuild's duration tells how many windows it
/// had in flight (fastest of three runs per case).
#[test]
fn mirror_rebuild_backs_off_while_users_do_io() {
    let _s = serial();
    rt();
    const MEMBER: u64 = 8192; // 4 MiB: 256 windows of 16 KiB
    set_rebuild_options(16, 8);
    for m in ["bpa0", "bpa1"] {
        mk_malloc(m, MEMBER, 512);
    }
    rpc::create(
        serde_json::from_value(json!({
            "name": "bpr1", "raid_level": "raid1", "base_bdevs": ["bpa0", "bpa1"]
        }))
        .unwrap(),
    )
    .unwrap();
    let raid = registry::lookup("bpr1").unwrap();
    let image = fill_array("bpr1", 70);
    // Replaces slot 1's member `old` with a new slow one; with readers on both reactors if
    // `busy`. Returns the new member, how long the rebuild took, and the reads meanwhile.
    let rebuild = |old: &str, new: &str, busy: bool| -> (String, Duration, u64) {
        rpc::remove_base_bdev(serde_json::from_value(json!({"name": old})).unwrap()).unwrap();
        let slow = slow_member(new, MEMBER);
        let stop = Arc::new(AtomicBool::new(false));
        let loads: Vec<ReactorReadsStats> = if busy {
            (0..2)
                .map(|core| ReactorReads::start(core, &raid, &stop))
                .collect()
        } else {
            Vec::new()
        };
        let reads = || -> u64 { loads.iter().map(|l| l.done.load(Ordering::Relaxed)).sum() };
        if busy {
            wait_for("the readers", || reads() > 100);
        }
        let (t0, reads0) = (std::time::Instant::now(), reads());
        rpc::add_base_bdev(
            serde_json::from_value(json!({"raid_bdev": "bpr1", "base_bdev": slow})).unwrap(),
        )
        .unwrap();
        wait_for("the rebuild", || {
            let info = raid_info("bpr1");
            info["num_base_bdevs_operational"] == 2 && info.get("process").is_none()
        });
        let (took, during) = (t0.elapsed(), reads() - reads0);
        stop.store(true, Ordering::Release);
        wait_for("the readers to stop", || {
            loads
                .iter()
                .all(|l| l.inflight.load(Ordering::Acquire) == 0)
        });
        for l in &loads {
            assert_eq!(l.failed.load(Ordering::Relaxed), 0, "user reads failed");
        }
        assert_eq!(
            raid_info("bpr1")["base_bdevs_list"][1]["state"],
            "online",
            "{new} rebuilt"
        );
        (slow, took, during)
    };
    // Each case three times, interleaved, keeping the fastest run: noise on a shared
    // machine only ever adds time, and the cases differ by several times.
    let (mut old, mut next) = ("bpa1".to_string(), 2);
    let (mut idle8, mut idle1, mut busy8) = (Duration::MAX, Duration::MAX, Duration::MAX);
    let mut reads = u64::MAX;
    for _ in 0..3 {
        for (depth, busy) in [(8, false), (1, false), (8, true)] {
            set_rebuild_options(16, depth);
            let (slow, took, during) = rebuild(&old, &format!("bpa{next}"), busy);
            (old, next) = (slow, next + 1);
            let best = match (depth, busy) {
                (8, false) => &mut idle8,
                (1, false) => &mut idle1,
                _ => {
                    reads = reads.min(during);
                    &mut busy8
                }
            };
            *best = (*best).min(took);
        }
    }
    eprintln!(
        "raid1 rebuild: idle at queue depth 8 {idle8:?}, idle at 1 {idle1:?}, \
         at 8 with {reads} user reads meanwhile {busy8:?}"
    );
    assert!(
        idle8 * 2 < idle1,
        "idle, 8 windows in flight ({idle8:?}) beat 1 ({idle1:?})"
    );
    assert!(
        reads > 1000,
        "users read during the rebuild ({reads} reads)"
    );
    assert!(
        busy8 * 2 > idle1,
        "with users reading, the rebuild ({busy8:?}) went one window at a time, as at \
         queue depth 1 ({idle1:?}), not as when idle ({idle8:?})"
    );
    assert!(
        whole("bpa0", MEMBER) == whole(&old, MEMBER),
        "raid1 copies differ"
    );
    check_array("bpr1", &image);

    drop(raid);
    rpc::delete(serde_json::from_value(json!({"name": "bpr1"})).unwrap()).unwrap();
    for i in 2..next {
        oxstor_bdev::delay::delete(&format!("bpa{i}slow")).unwrap();
    }
    for m in (0..next).map(|i| format!("bpa{i}")) {
        oxstor_bdev::malloc::delete(&m).unwrap();
    }
    set_rebuild_options(oxstor_raid::rebuild::DEFAULT_WINDOW_KB, 4);
}
