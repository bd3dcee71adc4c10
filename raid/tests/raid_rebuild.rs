//! Rebuild on real reactors: raid5 and raid6 members rebuilt from parity (with user writes
//! running alongside), then proven by failing *other* members and reading everything back;
//! the bandwidth cap of `bdev_raid_set_options`; hot spares taking a failed member's slot.

use oxstor_bdev::blocking;
use oxstor_bdev::registry::{self, BdevEntry};
use oxstor_bdev::{error, malloc, IoStatus, IoType};
use oxstor_raid::rebuild::{self, BdevRaidSetOptionsParams};
use oxstor_raid::rpc::{self, BdevRaidCreateParams};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::{mk_malloc, raid_info, rt, serial};

const BS: usize = 512;

fn io(
    core: usize,
    entry: &Arc<BdevEntry>,
    t: IoType,
    off: u64,
    n: u64,
    data: Option<Vec<u8>>,
) -> (IoStatus, Vec<u8>) {
    rt();
    blocking::io(
        core,
        entry,
        t,
        off,
        n,
        data.as_deref(),
        Duration::from_secs(10),
    )
    .expect("I/O never completed")
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

/// Makes every I/O of error bdev `name` fail from now on.
fn inject(name: &str) {
    error::inject(
        &serde_json::from_value(json!({
            "name": name, "io_type": "all", "error_type": "failure", "num": 1_000_000
        }))
        .unwrap(),
    )
    .unwrap();
}

fn add(raid: &str, base: &str) {
    rpc::add_base_bdev(
        serde_json::from_value(json!({"raid_bdev": raid, "base_bdev": base})).unwrap(),
    )
    .unwrap();
}

/// Adds `base` as a hot spare (on a healthy raid1 a plain add would grow the array).
fn add_spare(raid: &str, base: &str) {
    rpc::add_base_bdev(
        serde_json::from_value(json!({"raid_bdev": raid, "base_bdev": base, "spare": true}))
            .unwrap(),
    )
    .unwrap();
}

fn remove(base: &str) {
    rpc::remove_base_bdev(serde_json::from_value(json!({ "name": base })).unwrap()).unwrap();
}

fn set_options(window_kb: Option<u64>, mb_s: Option<u64>) {
    rebuild::set_options(BdevRaidSetOptionsParams {
        process_window_size_kb: window_kb,
        process_max_bandwidth_mb_sec: mb_s,
        ..Default::default()
    })
    .unwrap();
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out waiting: {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// An array over error bdevs over mallocs, with the model of what it holds.
struct Array {
    name: String,
    entry: Arc<BdevEntry>,
    /// Malloc names under the original members (slot order); members are `EE_<base>`.
    bases: Vec<String>,
    /// Mallocs added later.
    extra: Vec<String>,
    image: Vec<u8>,
}

impl Array {
    fn new(name: &str, level: &str, members: usize, member_blocks: u64) -> Array {
        rt();
        let bases: Vec<String> = (0..members).map(|i| format!("{name}_m{i}")).collect();
        let slots: Vec<String> = bases
            .iter()
            .map(|b| {
                mk_malloc(b, member_blocks, BS as u32);
                error::create(serde_json::from_value(json!({"base_name": b})).unwrap()).unwrap()
            })
            .collect();
        let mut params = json!({"name": name, "raid_level": level, "base_bdevs": slots});
        if level != "raid1" {
            params["strip_size_kb"] = json!(4);
        }
        rpc::create(serde_json::from_value::<BdevRaidCreateParams>(params).unwrap()).unwrap();
        let entry = registry::open(name, true).unwrap();
        let blocks = entry.bdev.geometry().num_blocks as usize;
        Array {
            name: name.to_string(),
            entry,
            bases,
            extra: Vec::new(),
            image: vec![0u8; blocks * BS],
        }
    }

    fn blocks(&self) -> u64 {
        (self.image.len() / BS) as u64
    }

    fn member(&self, i: usize) -> String {
        format!("EE_{}", self.bases[i])
    }

    fn write(&mut self, core: usize, off: u64, data: &[u8]) {
        let n = (data.len() / BS) as u64;
        let st = io(
            core,
            &self.entry,
            IoType::Write,
            off,
            n,
            Some(data.to_vec()),
        )
        .0;
        assert_eq!(st, IoStatus::Success, "write {off}+{n}");
        self.image[off as usize * BS..][..data.len()].copy_from_slice(data);
    }

    fn fill(&mut self, seed: u8) {
        let total = self.blocks();
        let mut off = 0;
        let mut i = 0u8;
        while off < total {
            let n = 61.min(total - off);
            let data = pattern(n as usize * BS, seed.wrapping_add(i));
            self.write(i as usize % 2, off, &data);
            off += n;
            i = i.wrapping_add(1);
        }
    }

    fn check_data(&self, what: &str) {
        let total = self.blocks();
        let mut off = 0;
        let mut i = 0;
        while off < total {
            let n = [37, 5, 64, 1, 24][i % 5].min(total - off);
            let (st, got) = io(i % 2, &self.entry, IoType::Read, off, n, None);
            assert_eq!(st, IoStatus::Success, "{what}: read {off}+{n}");
            let want = &self.image[off as usize * BS..][..n as usize * BS];
            assert!(got == want, "{what}: array blocks {off}+{n} differ");
            off += n;
            i += 1;
        }
    }

    /// Writes a few ranges while a rebuild runs, until it is done (each add of a member is
    /// one rebuild; waits for `members` operational and no process).
    fn write_until_rebuilt(&mut self, members: u64, seed: u8) -> u32 {
        let t0 = Instant::now();
        let mut writes = 0u32;
        let total = self.blocks();
        loop {
            let v = raid_info(&self.name);
            if v["process"].is_null() && v["num_base_bdevs_operational"] == members {
                return writes;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "rebuild never finished: {v}"
            );
            let off = (writes as u64 * 7919) % (total - 40);
            let n = 1 + (writes as u64 * 13) % 40;
            let data = pattern(n as usize * BS, seed.wrapping_add(writes as u8));
            self.write(writes as usize % 2, off, &data);
            writes += 1;
        }
    }

    fn delete(self) {
        rpc::delete(serde_json::from_value(json!({ "name": self.name })).unwrap()).unwrap();
        for b in &self.bases {
            error::delete(&format!("EE_{b}")).unwrap();
            malloc::delete(b).unwrap();
        }
        for b in &self.extra {
            malloc::delete(b).unwrap();
        }
    }
}

fn slot_states(v: &Value) -> Vec<String> {
    v["base_bdevs_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["state"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn raid5_member_is_rebuilt_from_parity() {
    let _g = serial();
    let mut a = Array::new("R5rb", "raid5", 4, 2048);
    a.fill(1);
    // Member 1 fails: reads find it and mark it faulty.
    inject(&a.member(1));
    a.check_data("degraded");
    assert_eq!(raid_info("R5rb")["num_base_bdevs_operational"], 3);
    remove(&a.member(1));
    a.write(0, 100, &pattern(50 * BS, 77));

    mk_malloc("R5rb_new", 2048, BS as u32);
    a.extra.push("R5rb_new".into());
    // Slow and in small windows, so that user writes land before, inside and after the
    // windows being rebuilt.
    set_options(Some(16), Some(2));
    add("R5rb", "R5rb_new");
    let v = raid_info("R5rb");
    if v["process"].is_object() {
        assert_eq!(v["process"]["type"], "rebuild", "{v}");
        assert_eq!(v["process"]["target"], "R5rb_new", "{v}");
    }
    let writes = a.write_until_rebuilt(4, 9);
    eprintln!("raid5 rebuild: {writes} writes ran alongside");
    set_options(Some(rebuild::DEFAULT_WINDOW_KB), Some(0));
    assert!(writes > 10, "only {writes} writes during the rebuild");
    let v = raid_info("R5rb");
    assert_eq!(v["state"], "online", "{v}");
    assert_eq!(slot_states(&v), ["online"; 4], "{v}");
    a.check_data("rebuilt");
    // The rebuilt member must hold correct data and parity: lose another member and read.
    inject(&a.member(2));
    a.check_data("rebuilt, then member 2 failed");
    a.write(1, 333, &pattern(200 * BS, 5));
    a.check_data("rebuilt, member 2 failed, rewritten");
    a.delete();
}

#[test]
fn raid6_two_members_are_rebuilt() {
    let _g = serial();
    // Small windows: many windows in flight, locks taken and released in order.
    set_options(Some(8), Some(0));
    let mut a = Array::new("R6rb", "raid6", 5, 2048);
    a.fill(3);
    remove(&a.member(0));
    remove(&a.member(3));
    a.write(1, 2000, &pattern(99 * BS, 8));
    mk_malloc("R6rb_a", 2048, BS as u32);
    mk_malloc("R6rb_b", 2048, BS as u32);
    a.extra.push("R6rb_a".into());
    a.extra.push("R6rb_b".into());
    // Two adds: the first fills a slot and rebuilds it; the second waits as a spare and
    // takes the other missing slot when the first rebuild is done.
    add("R6rb", "R6rb_a");
    add("R6rb", "R6rb_b");
    let writes = a.write_until_rebuilt(5, 21);
    eprintln!("raid6 rebuilds: {writes} writes ran alongside");
    let v = raid_info("R6rb");
    assert_eq!(slot_states(&v), ["online"; 5], "{v}");
    a.check_data("rebuilt");
    // Only the two new members and member 4 remain: everything must still read back.
    inject(&a.member(1));
    inject(&a.member(2));
    a.check_data("rebuilt, then members 1 and 2 failed");
    set_options(Some(rebuild::DEFAULT_WINDOW_KB), Some(0));
    a.delete();
}

#[test]
fn bandwidth_cap_slows_the_rebuild() {
    let _g = serial();
    const MIB: u64 = 1024 * 1024;
    // raid5 of 4 x 16 MiB (48 MiB of data): the target gets 16 MiB at 16 MiB/s.
    let blocks = 16 * MIB / BS as u64;
    let a = Array::new("R5bw", "raid5", 4, blocks);
    remove(&a.member(2));
    set_options(None, Some(16));
    mk_malloc("R5bw_new", blocks, BS as u32);
    let t0 = Instant::now();
    add("R5bw", "R5bw_new");
    let mut speeds = Vec::new();
    let mut eta_seen = false;
    loop {
        let v = raid_info("R5bw");
        if v["process"].is_null() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "rebuild too slow: {v}"
        );
        if let Some(s) = v["process"]["speed_mb_s"].as_f64() {
            if t0.elapsed() > Duration::from_millis(300) && s > 0.0 {
                speeds.push(s);
            }
        }
        eta_seen |= v["process"]["eta_sec"].is_u64();
        assert!(v["process"]["progress"]["percent"].as_u64().unwrap() <= 100);
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = t0.elapsed();
    set_options(None, Some(0));
    eprintln!("capped rebuild: {took:?}, speeds {speeds:?}");
    // 16 MiB at 16 MiB/s: about a second.
    assert!(
        took >= Duration::from_millis(500),
        "capped rebuild took only {took:?}"
    );
    assert!(eta_seen, "no eta_sec reported");
    assert!(!speeds.is_empty());
    let max = speeds.iter().cloned().fold(0.0, f64::max);
    assert!(max < 16.0 * 2.0, "measured {max} MiB/s over a 16 MiB/s cap");
    assert_eq!(raid_info("R5bw")["num_base_bdevs_operational"], 4);
    let mut a = a;
    a.extra.push("R5bw_new".into());
    a.delete();
}

#[test]
fn set_options_refuses_a_zero_window() {
    assert!(rebuild::set_options(BdevRaidSetOptionsParams {
        process_window_size_kb: Some(0),
        process_max_bandwidth_mb_sec: None,
        ..Default::default()
    })
    .is_err());
}

#[test]
fn spare_replaces_a_failed_raid1_member() {
    let _g = serial();
    let mut a = Array::new("R1sp", "raid1", 2, 2048);
    a.fill(5);
    mk_malloc("R1sp_spare", 2048, BS as u32);
    a.extra.push("R1sp_spare".into());
    add_spare("R1sp", "R1sp_spare");
    let v = raid_info("R1sp");
    assert!(v["process"].is_null(), "{v}");
    assert_eq!(slot_states(&v), ["online", "online", "spare"], "{v}");
    assert_eq!(v["base_bdevs_list"][2]["name"], "R1sp_spare");
    // Member 0 fails under writes: the spare takes its slot and is rebuilt.
    inject(&a.member(0));
    a.write(0, 10, &pattern(20 * BS, 1));
    a.write(1, 500, &pattern(20 * BS, 2));
    wait_for("the spare to be rebuilt", 30, || {
        let v = raid_info("R1sp");
        v["process"].is_null() && slot_states(&v) == ["online", "online"]
    });
    let v = raid_info("R1sp");
    assert_eq!(v["base_bdevs_list"][0]["name"], "R1sp_spare", "{v}");
    // The old member is released; the spare alone can serve everything.
    inject(&a.member(1));
    a.check_data("spare rebuilt, other member failed");
    a.delete();
}

#[test]
fn raid5_rebuild_with_superblock_marks_the_member_active() {
    use oxstor_raid::persist;
    use oxstor_raid::superblock::MemberState;
    let _g = serial();
    rt();
    // 4 MiB members: 1 MiB superblock area, then data.
    let blocks = (4 << 20) / BS as u64;
    let names: Vec<String> = (0..4).map(|i| format!("R5sb_m{i}")).collect();
    for n in &names {
        mk_malloc(n, blocks, BS as u32);
    }
    rpc::create(
        serde_json::from_value::<BdevRaidCreateParams>(json!({
            "name": "R5sb", "raid_level": "raid5", "strip_size_kb": 4,
            "base_bdevs": names, "superblock": true
        }))
        .unwrap(),
    )
    .unwrap();
    let entry = registry::open("R5sb", true).unwrap();
    let total = entry.bdev.geometry().num_blocks;
    let image = pattern(total as usize * BS, 11);
    let mut off = 0;
    while off < total {
        let n = 256.min(total - off);
        let d = image[off as usize * BS..][..n as usize * BS].to_vec();
        assert_eq!(
            io(0, &entry, IoType::Write, off, n, Some(d)).0,
            IoStatus::Success
        );
        off += n;
    }
    remove("R5sb_m1");
    mk_malloc("R5sb_new", blocks, BS as u32);
    add("R5sb", "R5sb_new");
    wait_for("the rebuild", 30, || {
        let v = raid_info("R5sb");
        v["process"].is_null() && v["num_base_bdevs_operational"] == 4
    });
    wait_for("the new member's superblock", 10, || {
        persist::read_superblock("R5sb_new").is_ok_and(|sb| {
            sb.members
                .iter()
                .any(|m| m.slot == Some(1) && m.state == MemberState::Active)
        })
    });
    let sb = persist::read_superblock("R5sb_m0").unwrap();
    assert!(
        sb.members
            .iter()
            .any(|m| m.slot == Some(1) && m.state == MemberState::Active),
        "{:?}",
        sb.members
    );
    // Without member 2, everything comes from the rebuilt member and the other two.
    remove("R5sb_m2");
    let mut off = 0;
    while off < total {
        let n = 100.min(total - off);
        let (st, got) = io(1, &entry, IoType::Read, off, n, None);
        assert_eq!(st, IoStatus::Success);
        assert!(
            got == image[off as usize * BS..][..n as usize * BS],
            "blocks {off}+{n}"
        );
        off += n;
    }
    drop(entry);
    rpc::delete(serde_json::from_value(json!({ "name": "R5sb" })).unwrap()).unwrap();
    for n in names.iter().chain(["R5sb_new".to_string()].iter()) {
        malloc::delete(n).unwrap();
    }
}

/// Array blocks the bitmap tracks per bit in the delta tests.
const DELTA_CHUNK_BYTES: u64 = 32 * 1024;

/// A raid5 or raid6 with a superblock (so a write-intent bitmap) over mallocs of 16 MiB,
/// filled with a pattern, whose bitmap is clean: removes member 1, writes about 1% of the
/// array, adds member 1 back while writing elsewhere, and checks that only the stripes
/// under the regions written while it was away were rebuilt; then fails other members
/// and reads everything back.
fn delta_readd(level: &str, members: usize) {
    use oxstor_raid::intent;
    let _g = serial();
    rt();
    intent::set_chunk_bytes(DELTA_CHUNK_BYTES);
    intent::set_sweep_period(Duration::from_secs(600));
    let name = format!("{level}dl");
    let blocks = (16 << 20) / BS as u64;
    let names: Vec<String> = (0..members).map(|i| format!("{name}_m{i}")).collect();
    for n in &names {
        mk_malloc(n, blocks, BS as u32);
    }
    rpc::create(
        serde_json::from_value::<BdevRaidCreateParams>(json!({
            "name": name, "raid_level": level, "strip_size_kb": 4,
            "base_bdevs": names, "superblock": true
        }))
        .unwrap(),
    )
    .unwrap();
    let entry = registry::open(&name, true).unwrap();
    let total = entry.bdev.geometry().num_blocks;
    let mut image = pattern(total as usize * BS, 17);
    let write = |image: &mut Vec<u8>, off: u64, data: Vec<u8>| {
        let n = (data.len() / BS) as u64;
        image[off as usize * BS..][..data.len()].copy_from_slice(&data);
        assert_eq!(
            io(off as usize % 2, &entry, IoType::Write, off, n, Some(data)).0,
            IoStatus::Success,
            "write {off}+{n}"
        );
    };
    let mut off = 0;
    while off < total {
        let n = 256.min(total - off);
        let data = image[off as usize * BS..][..n as usize * BS].to_vec();
        write(&mut image, off, data);
        off += n;
    }
    let v = raid_info(&name);
    let chunk = v["bitmap"]["chunk_blocks"].as_u64().expect("a bitmap");
    // The member must miss only what is written below, not the fill.
    oxstor_raid::intent::set_sweep_period(Duration::from_millis(20));
    wait_for("the sweeper to clear the fill's regions", 30, || {
        raid_info(&name)["bitmap"]["dirty_regions"] == 0
    });
    intent::set_sweep_period(Duration::from_secs(600));

    remove(&names[1]);
    // About 1% of the array: one whole bitmap region and a misaligned run.
    let away = [(8 * chunk, chunk), (total / 2 + 5, total / 100 - chunk)];
    for (i, &(off, n)) in away.iter().enumerate() {
        write(&mut image, off, pattern(n as usize * BS, 40 + i as u8));
    }
    // Stripes the rebuild must recompute: every stripe under a region written.
    let parity = if level == "raid6" { 2 } else { 1 };
    let stripe_blocks = (members as u64 - parity) * 8;
    let mut stripes = std::collections::BTreeSet::new();
    for &(off, n) in &away {
        for region in off / chunk..=(off + n - 1) / chunk {
            let (a, b) = (region * chunk, ((region + 1) * chunk).min(total));
            stripes.extend(a / stripe_blocks..b.div_ceil(stripe_blocks));
        }
    }
    let strip_bytes = 8 * BS as u64;
    let want = stripes.len() as u64 * strip_bytes;

    // Slow, so that the writes below land while it runs. They go to stripes the member did
    // not miss (which the rebuild skips: the member must get them as they happen) and to
    // some it did.
    set_options(Some(4), Some(1));
    add(&name, &names[1]);
    let mut during = Vec::new();
    let mut i = 0u64;
    loop {
        let v = raid_info(&name);
        if v["process"].is_null() && v["num_base_bdevs_operational"] == members as u64 {
            break;
        }
        assert!(i < 100_000, "the rebuild never finished: {v}");
        let off = (i * 7919 + 3) % (total - 16);
        let n = 1 + i % 16;
        write(&mut image, off, pattern(n as usize * BS, i as u8));
        during.push((off, n));
        i += 1;
    }
    set_options(Some(rebuild::DEFAULT_WINDOW_KB), Some(0));
    eprintln!(
        "{level} delta rebuild: {} writes ran alongside",
        during.len()
    );
    let v = raid_info(&name);
    assert_eq!(slot_states(&v), vec!["online"; members], "{v}");
    let last = &v["last_rebuild"];
    assert_eq!(last["full"], false, "{v}");
    let copied = last["bytes_copied"].as_u64().unwrap();
    // Writes that raced with the rebuild's start may have joined the regions it rebuilds.
    let mut with_racing = stripes.clone();
    for &(off, n) in &during {
        for region in off / chunk..=(off + n - 1) / chunk {
            let (a, b) = (region * chunk, ((region + 1) * chunk).min(total));
            with_racing.extend(a / stripe_blocks..b.div_ceil(stripe_blocks));
        }
    }
    let member_bytes = v["base_bdevs_list"][1]["data_size"].as_u64().unwrap() * BS as u64;
    eprintln!(
        "{level} delta rebuild: copied {copied} bytes, {want} expected, member {member_bytes}"
    );
    assert!(
        copied >= want && copied <= with_racing.len() as u64 * strip_bytes,
        "copied {copied} bytes, expected {want}: {v}"
    );
    assert!(
        copied * 20 < member_bytes,
        "copied {copied} of {member_bytes} bytes: not a delta"
    );

    let check = |what: &str| {
        let mut off = 0;
        while off < total {
            let n = 200.min(total - off);
            let (st, got) = io(off as usize % 2, &entry, IoType::Read, off, n, None);
            assert_eq!(st, IoStatus::Success, "{what}: read {off}+{n}");
            assert!(
                got == image[off as usize * BS..][..n as usize * BS],
                "{what}: blocks {off}+{n} differ"
            );
            off += n;
        }
    };
    check("re-added");
    // With the other members gone, every stripe is read through member 1 and the parity.
    for n in names.iter().skip(2).take(parity as usize) {
        remove(n);
    }
    check("re-added, then other members removed");
    drop(entry);
    rpc::delete(serde_json::from_value(json!({ "name": name })).unwrap()).unwrap();
    for n in &names {
        malloc::delete(n).unwrap();
    }
    intent::set_chunk_bytes(64 << 20);
}

#[test]
fn raid5_readded_member_gets_only_missed_stripes() {
    delta_readd("raid5", 4);
}

#[test]
fn raid6_readded_member_gets_only_missed_stripes() {
    delta_readd("raid6", 5);
}

/// Reads of stripes the rebuild has passed go to the member being rebuilt (it is current
/// there), without reconstructing it from the others.
#[test]
fn reads_below_the_rebuild_watermark_use_the_rebuilt_member() {
    let _g = serial();
    const MIB: u64 = 1024 * 1024;
    let blocks = 8 * MIB / BS as u64;
    let mut a = Array::new("R5wm", "raid5", 4, blocks);
    a.fill(23);
    remove(&a.member(3));
    mk_malloc("R5wm_new", blocks, BS as u32);
    a.extra.push("R5wm_new".into());
    let target = registry::lookup("R5wm_new").unwrap();
    // 8 MiB at 2 MiB/s: four seconds, while the reads below take a fraction of that.
    set_options(Some(64), Some(2));
    add("R5wm", "R5wm_new");
    wait_for("the rebuild to pass a quarter of the member", 30, || {
        raid_info("R5wm")["process"]["progress"]["percent"]
            .as_u64()
            .is_some_and(|p| p >= 25)
    });
    let done = raid_info("R5wm")["process"]["progress"]["blocks"]
        .as_u64()
        .unwrap();
    let before = registry::iostat(&target).read.ops;
    // Stripes 0..done/8 are rebuilt: read their data (3 strips of 8 blocks each).
    let below = done / 8 * 24;
    let mut off = 0;
    while off < below {
        let n = 24.min(below - off);
        let (st, got) = io(off as usize % 2, &a.entry, IoType::Read, off, n, None);
        assert_eq!(st, IoStatus::Success);
        assert!(
            got == a.image[off as usize * BS..][..n as usize * BS],
            "blocks {off}+{n}"
        );
        off += n;
    }
    let reads = registry::iostat(&target).read.ops - before;
    let still = !raid_info("R5wm")["process"].is_null();
    set_options(Some(rebuild::DEFAULT_WINDOW_KB), Some(0));
    assert!(
        still,
        "the rebuild finished before the reads did: inconclusive"
    );
    // A quarter of the stripes hold their parity on the target; the others a data strip.
    assert!(
        reads * 2 >= done / 8,
        "{reads} reads of the target for {} rebuilt stripes",
        done / 8
    );
    wait_for("the rebuild", 30, || raid_info("R5wm")["process"].is_null());
    a.check_data("rebuilt");
    a.delete();
}
