//! raid5 and raid6 on real reactors: data and parity placement as md lays them out,
//! full and partial stripe writes from both cores (read-modify-write and reconstruct-write),
//! concurrent writers on the same stripes, degraded reads and writes with failed members,
//! and the RPC rules for removing and adding members.

use oxstor_bdev::blocking;
use oxstor_bdev::registry::{self, BdevEntry};
use oxstor_bdev::{error, malloc, IoStatus, IoType};
use oxstor_raid::layout::{Layout, RaidLevel, StripRole};
use oxstor_raid::parity;
use oxstor_raid::rpc::{self, BdevRaidCreateParams};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

mod common;
use common::{mk_malloc, raid_info, rt};

const BS: usize = 512;
/// Strip of 4 KiB = 8 blocks.
const STRIP: u64 = 8;
const MEMBER_BLOCKS: u64 = 256;

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

fn read(core: usize, e: &Arc<BdevEntry>, off: u64, n: u64) -> Vec<u8> {
    let (st, data) = io(core, e, IoType::Read, off, n, None);
    assert_eq!(st, IoStatus::Success, "read {off}+{n} from {}", e.name());
    data
}

/// Reads a whole bdev directly (claimed bdevs still open for reads).
fn read_member(name: &str) -> Vec<u8> {
    let e = registry::open(name, false).unwrap();
    let blocks = e.bdev.geometry().num_blocks;
    let mut out = Vec::new();
    let mut off = 0;
    while off < blocks {
        let n = 128.min(blocks - off);
        out.extend(read(0, &e, off, n));
        off += n;
    }
    out
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

/// A malloc bdev wrapped in an error bdev; returns the error bdev's name.
fn mk_error_member(name: &str) -> String {
    mk_malloc(name, MEMBER_BLOCKS, BS as u32);
    error::create(serde_json::from_value(json!({"base_name": name})).unwrap()).unwrap()
}

/// Makes every I/O of `io_type` to error bdev `name` fail from now on.
fn inject(name: &str, io_type: &str) {
    error::inject(
        &serde_json::from_value(json!({
            "name": name, "io_type": io_type, "error_type": "failure", "num": 1_000_000
        }))
        .unwrap(),
    )
    .unwrap();
}

fn create(params: Value) -> Result<String, oxstor_bdev::BdevError> {
    rpc::create(serde_json::from_value::<BdevRaidCreateParams>(params).expect("params decode"))
}

/// An array under test with the model of what it should hold.
struct Array {
    entry: Arc<BdevEntry>,
    layout: Layout,
    /// Names of the malloc bdevs under the members, in slot order.
    bases: Vec<String>,
    image: Vec<u8>,
}

impl Array {
    fn new(name: &str, level: &str, pure: RaidLevel, members: usize) -> Array {
        rt();
        let bases: Vec<String> = (0..members).map(|i| format!("{name}_m{i}")).collect();
        let slots: Vec<String> = bases.iter().map(|b| mk_error_member(b)).collect();
        create(
            json!({"name": name, "raid_level": level, "strip_size_kb": 4,
                      "base_bdevs": slots}),
        )
        .unwrap();
        let entry = registry::open(name, true).unwrap();
        let layout = Layout::new(pure, STRIP, &vec![MEMBER_BLOCKS; members]).unwrap();
        let g = entry.bdev.geometry();
        assert_eq!(g.num_blocks, layout.array_blocks());
        assert_eq!(g.optimal_io_boundary as u64, layout.stripe_data_blocks());
        assert_eq!(g.write_unit_size, 1);
        let image = vec![0u8; layout.array_blocks() as usize * BS];
        Array {
            entry,
            layout,
            bases,
            image,
        }
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

    /// Reads the whole array (from both cores, in pieces of odd sizes) against the model.
    fn check_data(&self, what: &str) {
        let total = self.layout.array_blocks();
        let mut off = 0;
        let mut i = 0;
        while off < total {
            let n = [37, 5, 64, 1, 24][i % 5].min(total - off);
            let got = read(i % 2, &self.entry, off, n);
            let want = &self.image[off as usize * BS..][..n as usize * BS];
            assert!(got == want, "{what}: array blocks {off}+{n} differ");
            off += n;
            i += 1;
        }
    }

    /// Checks the members directly: data where md puts it, P (and Q) matching.
    fn check_members(&self, skip: &[usize]) {
        let strip = STRIP as usize * BS;
        let members: Vec<Vec<u8>> = self.bases.iter().map(|b| read_member(b)).collect();
        let k = self.layout.data_members();
        for stripe in 0..self.layout.stripe_count() {
            let row = stripe as usize * strip;
            let mut data = vec![Vec::new(); k];
            for (m, member) in members.iter().enumerate() {
                if let StripRole::Data(i) = self.layout.role_in_stripe(stripe, m) {
                    data[i] = member[row..row + strip].to_vec();
                }
            }
            for (i, d) in data.iter().enumerate() {
                let at = (stripe as usize * k + i) * strip;
                let m = self.layout.data_member(stripe, i);
                if !skip.contains(&m) {
                    assert!(
                        *d == self.image[at..at + strip],
                        "stripe {stripe}: data strip {i} on member {m} is wrong"
                    );
                }
            }
            let mut p = vec![0u8; strip];
            let mut q = vec![0u8; strip];
            let pm = self.layout.parity_members(stripe);
            match pm.q {
                None => parity::compute_p(&data, &mut p).unwrap(),
                Some(_) => parity::compute_pq(&data, &mut p, &mut q).unwrap(),
            }
            assert!(
                members[pm.p][row..row + strip] == p,
                "stripe {stripe}: P on member {} is wrong",
                pm.p
            );
            if let Some(qm) = pm.q {
                assert!(
                    members[qm][row..row + strip] == q,
                    "stripe {stripe}: Q on member {qm} is wrong"
                );
            }
        }
    }

    /// Full stripes, partial stripes, unaligned ranges, single blocks, from both cores.
    fn write_patterns(&mut self, seed: u8) {
        let sd = self.layout.stripe_data_blocks();
        let total = self.layout.array_blocks();
        let shapes: [(u64, u64); 8] = [
            (sd, sd),                // one full stripe
            (3 * sd, 2 * sd),        // two full stripes
            (5, 30),                 // partial, unaligned, across a stripe boundary
            (sd * 6 + 3, 1),         // one block
            (sd * 7 + STRIP - 2, 4), // across a strip boundary inside a stripe
            (sd * 9 + 1, sd * 3),    // partial + full + partial
            (total - 11, 11),        // the end of the array
            (sd * 14, STRIP),        // one whole strip
        ];
        for (i, &(off, n)) in shapes.iter().enumerate() {
            let data = pattern(n as usize * BS, seed.wrapping_add(i as u8 * 17));
            self.write(i % 2, off, &data);
        }
    }

    fn delete(self, name: &str) {
        rpc::delete(serde_json::from_value(json!({ "name": name })).unwrap()).unwrap();
        for b in &self.bases {
            error::delete(&format!("EE_{b}")).unwrap();
            malloc::delete(b).unwrap();
        }
    }
}

fn healthy_then_degraded(name: &str, level: &str, pure: RaidLevel, members: usize, fail: &[usize]) {
    let mut a = Array::new(name, level, pure, members);
    a.write_patterns(1);
    a.check_data("healthy");
    a.check_members(&[]);
    // Overwrite partly, so read-modify-write sees non-zero old data and parity.
    a.write_patterns(99);
    a.check_data("rewritten");
    a.check_members(&[]);

    for &m in fail {
        inject(&format!("EE_{}", a.bases[m]), "all");
    }
    // Reads find the failed members, mark them faulty and reconstruct.
    a.check_data("degraded read");
    let v = raid_info(name);
    assert_eq!(v["state"], "online", "{v}");
    assert_eq!(v["num_base_bdevs_operational"], members - fail.len(), "{v}");
    // Degraded writes keep parity consistent: read back through reconstruction.
    a.write_patterns(201);
    a.check_data("degraded write");
    a.delete(name);
}

#[test]
fn raid5_on_4_members() {
    healthy_then_degraded("R5x4", "raid5", RaidLevel::Raid5, 4, &[2]);
}

#[test]
fn raid5_on_6_members_uses_read_modify_write() {
    // Five data strips: a one-strip write reads 2 strips by RMW and 4 by RCW.
    healthy_then_degraded("R5x6", "5", RaidLevel::Raid5, 6, &[0]);
}

#[test]
fn raid6_on_5_members_survives_two_failures() {
    healthy_then_degraded("R6x5", "raid6", RaidLevel::Raid6, 5, &[1, 3]);
}

#[test]
fn raid6_on_7_members_uses_read_modify_write() {
    healthy_then_degraded("R6x7", "6", RaidLevel::Raid6, 7, &[4, 6]);
}

/// Two cores write different blocks of the same stripes at once: without stripe locking
/// across cores, one write's parity would be computed from the other's old data.
#[test]
fn concurrent_writers_on_the_same_stripes_keep_parity() {
    for (name, level, pure, members) in [
        ("R5cc", "raid5", RaidLevel::Raid5, 4),
        ("R6cc", "raid6", RaidLevel::Raid6, 6),
    ] {
        let mut a = Array::new(name, level, pure, members);
        let sd = a.layout.stripe_data_blocks();
        let stripes = a.layout.stripe_count();
        let threads: Vec<_> = (0..2usize)
            .map(|core| {
                let e = a.entry.clone();
                std::thread::spawn(move || {
                    let mut written = Vec::new();
                    for round in 0..3u8 {
                        for s in 0..stripes {
                            // Core 0 writes the first strip's first half, core 1 the last
                            // strip's second half.
                            let off = if core == 0 {
                                s * sd
                            } else {
                                s * sd + sd - STRIP / 2
                            };
                            let data = pattern(STRIP as usize / 2 * BS, round * 7 + core as u8);
                            let st =
                                io(core, &e, IoType::Write, off, STRIP / 2, Some(data.clone()));
                            assert_eq!(st.0, IoStatus::Success);
                            written.push((off, data));
                        }
                    }
                    written
                })
            })
            .collect();
        for t in threads {
            for (off, data) in t.join().unwrap() {
                a.image[off as usize * BS..][..data.len()].copy_from_slice(&data);
            }
        }
        a.check_data("concurrent");
        a.check_members(&[]);
        a.delete(name);
    }
}

#[test]
fn members_can_be_removed_while_redundancy_remains() {
    let mut a = Array::new("R6rm", "raid6", RaidLevel::Raid6, 5);
    a.write_patterns(3);
    let rm = |n: &str| rpc::remove_base_bdev(serde_json::from_value(json!({ "name": n })).unwrap());
    rm(&format!("EE_{}", a.bases[0])).unwrap();
    a.check_data("one removed");
    a.write_patterns(4);
    rm(&format!("EE_{}", a.bases[2])).unwrap();
    a.check_data("two removed");
    let err = rm(&format!("EE_{}", a.bases[4])).unwrap_err();
    assert_eq!(err.errno(), libc::EINVAL, "{err}");
    a.write_patterns(5);
    a.check_data("two removed, rewritten");
    // A new member fills a missing slot and is rebuilt (see raid_rebuild.rs for more).
    mk_malloc("R6rm_new", MEMBER_BLOCKS, BS as u32);
    rpc::add_base_bdev(
        serde_json::from_value(json!({"raid_bdev": "R6rm", "base_bdev": "R6rm_new"})).unwrap(),
    )
    .unwrap();
    let t0 = std::time::Instant::now();
    while raid_info("R6rm")["process"].is_object() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "rebuild never finished"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(raid_info("R6rm")["num_base_bdevs_operational"], 4);
    a.check_data("one member rebuilt");
    a.delete("R6rm");
    malloc::delete("R6rm_new").unwrap();

    // raid5 allows one removal only.
    let a = Array::new("R5rm", "raid5f", RaidLevel::Raid5, 3);
    rm(&format!("EE_{}", a.bases[1])).unwrap();
    let err = rm(&format!("EE_{}", a.bases[0])).unwrap_err();
    assert_eq!(err.errno(), libc::EINVAL, "{err}");
    a.check_data("raid5 of 3, one removed");
    a.delete("R5rm");
}

#[test]
fn too_many_failures_fail_io_instead_of_returning_garbage() {
    let mut a = Array::new("R5ko", "raid5", RaidLevel::Raid5, 4);
    a.write_patterns(8);
    inject(&format!("EE_{}", a.bases[0]), "all");
    inject(&format!("EE_{}", a.bases[1]), "all");
    let sd = a.layout.stripe_data_blocks();
    // Reads touching both members fail; the array reports offline.
    let mut failed = 0;
    for s in 0..4 {
        if io(0, &a.entry, IoType::Read, s * sd, sd, None).0 != IoStatus::Success {
            failed += 1;
        }
    }
    assert!(failed > 0);
    assert_eq!(raid_info("R5ko")["state"], "offline");
    let st = io(
        1,
        &a.entry,
        IoType::Write,
        0,
        sd,
        Some(pattern(sd as usize * BS, 1)),
    )
    .0;
    assert_ne!(st, IoStatus::Success);
    a.delete("R5ko");
}
