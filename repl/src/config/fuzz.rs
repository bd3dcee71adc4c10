//! No-panic fuzzing (deterministic xorshift): random token soup and mutations of valid files go
//! through parse, post_parse, dump and plan. Whatever resolves must also survive a dump round
//! trip unchanged.

use super::*;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const SEEDS: &[&str] = &[
    "resource r0 {
  on hw1 { device ox0; disk Raid5; address 127.0.0.1:7788; meta-disk internal; }
  on hw2 { device ox0; disk Malloc1; address 127.0.0.2:7788; meta-disk internal; }
}",
    "common { net { protocol C; } disk { resync-rate 100M; } }
resource r0 {
  volume 0 { device /dev/drbd0 minor 0; disk M0; meta-disk internal; }
  volume 1 { device minor 1; disk none; }
  on a { node-id 0; address 10.0.0.1:7000; }
  on b { node-id 1; address ipv6 [fd00::2]:7000; }
  on c { node-id 2; address 10.0.0.3:7000; }
  connection { host a port 7001; host b address 10.0.0.2:7001; net { protocol A; } }
  connection { path { host a; host c; } path { host a address 10.1.0.1:1; host c address 10.1.0.3:1; } }
  connection-mesh { hosts a b c; net { ping-int 10; } }
}",
    "global { usage-count no; }\nskip resource x { junk }\nresource \"q r\" { on \"h 1\" { node-id 5; device \"d\"; disk \"none\"; } }",
];

const VOCAB: &[&str] = &[
    "resource",
    "r0",
    "on",
    "hw1",
    "hw2",
    "hw3",
    "{",
    "}",
    ";",
    ";",
    "device",
    "disk",
    "meta-disk",
    "internal",
    "none",
    "address",
    "ipv4",
    "ipv6",
    "127.0.0.1:7788",
    "[::1]:1",
    "10.0.0.2:0",
    "node-id",
    "0",
    "1",
    "31",
    "32",
    "volume",
    "connection",
    "connection-mesh",
    "hosts",
    "host",
    "path",
    "port",
    "7789",
    "net",
    "protocol",
    "C",
    "Z",
    "disk",
    "options",
    "common",
    "global",
    "include",
    "skip",
    "minor",
    "\"",
    "\"x y\"",
    "#c\n",
    "\n",
    "ox0",
    "Malloc1",
    "/dev/drbd0",
    "handlers",
    "startup",
    "usage-count",
    "via",
];

fn exercise(text: &str) {
    let Ok(mut cfg) = parse_str(text, "fuzz.res") else {
        return;
    };
    if post_parse(&mut cfg).is_err() {
        return;
    }
    for r in &cfg.resources {
        let d = dump(r);
        let again = load_str(&d, "dump.res").unwrap_or_else(|e| panic!("{e}\n{d}\nfrom\n{text}"));
        assert_eq!(again.resources.len(), 1, "{d}");
        assert_eq!(&again.resources[0], r, "{d}\nfrom\n{text}");
        for h in &r.hosts {
            let up = plan_up(r, &h.name).unwrap_or_else(|e| panic!("{e}\n{d}"));
            assert_eq!(up[0].method, "repl_new_resource");
            let _ = plan_connect(r, &h.name, None, false).unwrap();
            let _ = plan_detach(r, &h.name, None).unwrap();
        }
        assert!(plan_up(r, "no-such-host").is_err());
    }
}

#[test]
fn seeds_resolve() {
    for s in SEEDS {
        let mut cfg = parse_str(s, "seed").unwrap_or_else(|e| panic!("{e}"));
        post_parse(&mut cfg).unwrap_or_else(|e| panic!("{e}"));
        exercise(s);
    }
}

#[test]
fn random_token_soup_does_not_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..3000 {
        let n = rng.below(60);
        let mut s = String::new();
        for _ in 0..n {
            s.push_str(rng.pick(VOCAB));
            s.push(' ');
        }
        exercise(&s);
    }
}

#[test]
fn mutated_files_do_not_panic() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let alphabet = b"{};\"#\\ \n:[]0123456789abxyz./-";
    for i in 0..6000 {
        let mut bytes = SEEDS[i % SEEDS.len()].as_bytes().to_vec();
        for _ in 0..1 + rng.below(4) {
            if bytes.is_empty() {
                break;
            }
            let at = rng.below(bytes.len());
            match rng.below(4) {
                0 => {
                    bytes.remove(at);
                }
                1 => bytes.insert(at, alphabet[rng.below(alphabet.len())]),
                2 => bytes[at] = alphabet[rng.below(alphabet.len())],
                _ => {
                    // Delete or duplicate a short run.
                    let len = rng.below(12).min(bytes.len() - at);
                    if rng.below(2) == 0 {
                        bytes.drain(at..at + len);
                    } else {
                        let run: Vec<u8> = bytes[at..at + len].to_vec();
                        bytes.splice(at..at, run);
                    }
                }
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        exercise(&text);
    }
}

#[test]
fn arbitrary_bytes_do_not_panic() {
    let mut rng = XorShift(0xdead_beef_cafe_f00d);
    for _ in 0..2000 {
        let n = rng.below(200);
        let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        exercise(&String::from_utf8_lossy(&bytes));
    }
}
