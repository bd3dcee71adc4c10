//! `net { }` and `disk { }` options as oxadm passes them (drbd.conf names, string values),
//! checked and turned into typed settings. Unknown names are errors; DRBD knobs we accept but
//! do not implement are logged once, so a real drbd.conf still loads.

use crate::meta::generation::AfterSb;
use std::collections::BTreeMap;
use std::time::Duration;

pub type OptionMap = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    A,
    B,
    C,
}

impl Protocol {
    pub fn to_wire(self) -> u8 {
        match self {
            Protocol::A => b'A',
            Protocol::B => b'B',
            Protocol::C => b'C',
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Protocol::A => "A",
            Protocol::B => "B",
            Protocol::C => "C",
        }
    }
}

#[derive(Debug, Clone)]
pub struct NetOptions {
    pub protocol: Protocol,
    pub after_sb_0pri: AfterSb,
    /// `discard-node-NAME` before it is resolved to a node id.
    pub discard_node_name: Option<String>,
    pub ping_int: Duration,
    pub ping_timeout: Duration,
    pub timeout: Duration,
    pub connect_int: Duration,
    pub max_epoch_size: u32,
    pub ko_count: u32,
}

impl Default for NetOptions {
    fn default() -> Self {
        NetOptions {
            protocol: Protocol::C,
            after_sb_0pri: AfterSb::Disconnect,
            discard_node_name: None,
            ping_int: Duration::from_secs(10),
            ping_timeout: Duration::from_millis(500),
            timeout: Duration::from_secs(6),
            connect_int: Duration::from_secs(10),
            max_epoch_size: 2048,
            ko_count: 7,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DiskOptions {
    /// Resync bandwidth cap in bytes/s.
    pub resync_rate: u64,
    pub al_extents: u32,
}

impl Default for DiskOptions {
    fn default() -> Self {
        DiskOptions {
            resync_rate: 100 << 20,
            al_extents: 1237,
        }
    }
}

fn number(key: &str, v: &str) -> Result<u64, String> {
    v.trim()
        .parse::<u64>()
        .map_err(|_| format!("option {key}: '{v}' is not a number"))
}

/// DRBD sizes: a plain number is in `default_unit` bytes; K/M/G suffixes are binary.
fn size(key: &str, v: &str, default_unit: u64) -> Result<u64, String> {
    let v = v.trim();
    let (digits, unit) = match v.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let unit = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                's' | 'S' => 512,
                _ => return Err(format!("option {key}: unknown unit in '{v}'")),
            };
            (&v[..i], unit)
        }
        _ => (v, default_unit),
    };
    number(key, digits)?
        .checked_mul(unit)
        .ok_or_else(|| format!("option {key}: '{v}' is too large"))
}

fn positive(key: &str, v: u64) -> Result<u64, String> {
    if v == 0 {
        return Err(format!("option {key} must be greater than 0"));
    }
    Ok(v)
}

/// DRBD knobs accepted for compatibility but not acted upon.
const IGNORED_NET: &[&str] = &[
    "sndbuf-size",
    "rcvbuf-size",
    "max-buffers",
    "after-sb-1pri",
    "after-sb-2pri",
    "rr-conflict",
    "csums-alg",
    "data-integrity-alg",
    "fencing",
    "tcp-cork",
    "transport",
    "socket-check-timeout",
    "congestion-fill",
    "congestion-extents",
    "on-congestion",
];
const IGNORED_DISK: &[&str] = &[
    "c-plan-ahead",
    "c-fill-target",
    "c-delay-target",
    "c-min-rate",
    "on-io-error",
    "disk-barrier",
    "disk-flushes",
    "disk-drain",
    "md-flushes",
    "al-updates",
    "read-balancing",
    "resync-after",
    "discard-zeroes-if-aligned",
    "rs-discard-granularity",
];

pub fn parse_net(map: &OptionMap) -> Result<NetOptions, String> {
    let mut o = NetOptions::default();
    for (k, v) in map {
        match k.as_str() {
            "protocol" => {
                o.protocol = match v.trim() {
                    "A" | "a" => Protocol::A,
                    "B" | "b" => Protocol::B,
                    "C" | "c" => Protocol::C,
                    _ => return Err(format!("protocol must be A, B or C, not '{v}'")),
                }
            }
            "after-sb-0pri" => {
                let v = v.trim();
                if let Some(name) = v.strip_prefix("discard-node-") {
                    if name.is_empty() {
                        return Err("after-sb-0pri discard-node- needs a host name".into());
                    }
                    o.discard_node_name = Some(name.to_string());
                    o.after_sb_0pri = AfterSb::Disconnect;
                } else {
                    o.after_sb_0pri = v
                        .parse::<AfterSb>()
                        .map_err(|e| format!("after-sb-0pri: {e}"))?;
                }
            }
            // DRBD's unit is seconds for ping-int and connect-int, tenths of a second for
            // ping-timeout and timeout.
            "ping-int" => o.ping_int = Duration::from_secs(positive(k, number(k, v)?)?),
            "ping-timeout" => {
                o.ping_timeout = Duration::from_millis(100 * positive(k, number(k, v)?)?)
            }
            "timeout" => o.timeout = Duration::from_millis(100 * positive(k, number(k, v)?)?),
            "connect-int" => o.connect_int = Duration::from_secs(positive(k, number(k, v)?)?),
            "max-epoch-size" => o.max_epoch_size = positive(k, number(k, v)?)?.min(1 << 20) as u32,
            "ko-count" => o.ko_count = positive(k, number(k, v)?)?.min(1000) as u32,
            "verify-alg" => {
                if !v.trim().eq_ignore_ascii_case("crc32c") {
                    return Err(format!("verify-alg '{v}' is not supported (crc32c is)"));
                }
            }
            "allow-two-primaries" => {
                if v.trim() != "no" {
                    return Err(
                        "allow-two-primaries is not supported: one Primary at a time".into(),
                    );
                }
            }
            "cram-hmac-alg" | "shared-secret" => {
                return Err(format!("{k} is not supported (no peer authentication yet)"))
            }
            k if IGNORED_NET.contains(&k) => {
                tracing::info!("net option {k} is accepted but has no effect in oxstor")
            }
            _ => return Err(format!("unknown net option '{k}'")),
        }
    }
    Ok(o)
}

pub fn parse_disk(map: &OptionMap) -> Result<DiskOptions, String> {
    let mut o = DiskOptions::default();
    let mut rate_set = false;
    for (k, v) in map {
        match k.as_str() {
            // KiB/s unless a unit is given, as in DRBD.
            "resync-rate" => {
                o.resync_rate = positive(k, size(k, v, 1024)?)?;
                rate_set = true;
            }
            "c-max-rate" if !rate_set => o.resync_rate = positive(k, size(k, v, 1024)?)?,
            "c-max-rate" => {}
            "al-extents" => o.al_extents = positive(k, number(k, v)?)?.min(u32::MAX as u64) as u32,
            k if IGNORED_DISK.contains(&k) => {
                tracing::info!("disk option {k} is accepted but has no effect in oxstor")
            }
            _ => return Err(format!("unknown disk option '{k}'")),
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(kv: &[(&str, &str)]) -> OptionMap {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn net_defaults_and_units() {
        let o = parse_net(&map(&[
            ("protocol", "B"),
            ("ping-timeout", "5"),
            ("timeout", "60"),
        ]))
        .unwrap();
        assert_eq!(o.protocol, Protocol::B);
        assert_eq!(o.ping_timeout, Duration::from_millis(500));
        assert_eq!(o.timeout, Duration::from_secs(6));
        let o = parse_net(&map(&[("after-sb-0pri", "discard-node-hw2")])).unwrap();
        assert_eq!(o.discard_node_name.as_deref(), Some("hw2"));
    }

    #[test]
    fn net_errors_are_clear() {
        assert!(parse_net(&map(&[("protocol", "D")]))
            .unwrap_err()
            .contains("A, B or C"));
        assert!(parse_net(&map(&[("bogus", "1")]))
            .unwrap_err()
            .contains("unknown net option"));
        assert!(parse_net(&map(&[("ping-int", "x")]))
            .unwrap_err()
            .contains("not a number"));
        assert!(parse_net(&map(&[("allow-two-primaries", "yes")])).is_err());
    }

    #[test]
    fn disk_sizes() {
        assert_eq!(
            parse_disk(&map(&[("resync-rate", "100M")]))
                .unwrap()
                .resync_rate,
            100 << 20
        );
        assert_eq!(
            parse_disk(&map(&[("resync-rate", "250")]))
                .unwrap()
                .resync_rate,
            250 << 10
        );
        assert_eq!(
            parse_disk(&map(&[("resync-rate", "10M"), ("c-max-rate", "1G")]))
                .unwrap()
                .resync_rate,
            10 << 20
        );
        assert!(parse_disk(&map(&[("resync-rate", "10Q")])).is_err());
        assert!(parse_disk(&map(&[("resync-rate", "0")])).is_err());
    }
}
