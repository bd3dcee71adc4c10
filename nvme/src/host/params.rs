//! `bdev_nvme_attach_controller` parameters (SPDK's names) and the parser for
//! spdk_nvme_perf's transport ID string (`-r 'trtype:tcp traddr:... subnqn:...'`).

use oxstor_bdev::BdevError;
use serde::{Deserialize, Serialize};
use std::net::{SocketAddr, ToSocketAddrs};

/// The NVMe/TCP port a transport ID means when it names none.
pub const DEFAULT_TRSVCID: &str = "4420";

/// `bdev_nvme_attach_controller` parameters. Every field SPDK's method takes is accepted so
/// SPDK configs load; the ones this initiator does not act on are kept for save_config.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachParams {
    /// Controller name; bdevs are named `<name>n<nsid>`.
    pub name: String,
    /// Transport type: only "tcp" (any case).
    pub trtype: String,
    /// Target address (IP or host name).
    pub traddr: String,
    /// "IPv4" or "IPv6".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adrfam: Option<String>,
    /// Target port (default 4420).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trsvcid: Option<String>,
    /// Subsystem NQN to connect to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnqn: Option<String>,
    /// Our host NQN; a random UUID-based one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostnqn: Option<String>,
    /// Local address to bind (accepted, not used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostaddr: Option<String>,
    /// Local port to bind (accepted, not used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostsvcid: Option<String>,
    /// Ask for header digests.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hdgst: bool,
    /// Ask for data digests.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ddgst: bool,
    /// Most I/O queues to ask for (default: one per reactor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_io_queues: Option<u32>,
    /// I/O queue depth to ask for (default 128, capped by CAP.MQES).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_queue_size: Option<u32>,
    /// Keep Alive Timeout in ms (an oxstor extension; SPDK sets it in bdev_nvme_set_options).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive_timeout_ms: Option<u32>,
    /// Fabrics Connect / admin command timeout in µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fabrics_connect_timeout_us: Option<u64>,
    /// SPDK multipath mode (accepted, not used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multipath: Option<String>,
    /// Accepted, not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctrlr_loss_timeout_sec: Option<i64>,
    /// Accepted, not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect_delay_sec: Option<u64>,
    /// Accepted, not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fast_io_fail_timeout_sec: Option<u64>,
    /// Socket priority (accepted, not used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    /// Accepted, not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prchk_reftag: Option<bool>,
    /// Accepted, not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prchk_guard: Option<bool>,
    /// Accepted, not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bdevs: Option<u32>,
    /// Accepted, not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_unrecognized_csi: Option<bool>,
    /// TLS PSK: not supported (refused when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psk: Option<String>,
    /// DH-HMAC-CHAP key: not supported (refused when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhchap_key: Option<String>,
    /// DH-HMAC-CHAP controller key: not supported (refused when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhchap_ctrlr_key: Option<String>,
}

impl AttachParams {
    /// Checks what this initiator cannot do and resolves the target address.
    pub(crate) fn resolve(&self) -> Result<SocketAddr, BdevError> {
        if self.name.is_empty() {
            return Err(BdevError::Invalid("name must not be empty".into()));
        }
        if !self.trtype.eq_ignore_ascii_case("tcp") {
            return Err(BdevError::Invalid(format!(
                "trtype '{}' is not supported (only TCP)",
                self.trtype
            )));
        }
        if self.psk.is_some() || self.dhchap_key.is_some() || self.dhchap_ctrlr_key.is_some() {
            return Err(BdevError::Invalid(
                "TLS PSK and DH-HMAC-CHAP are not supported".into(),
            ));
        }
        let ipv6 = match self
            .adrfam
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("ipv4") => false,
            Some("ipv6") => true,
            Some(other) => {
                return Err(BdevError::Invalid(format!(
                    "adrfam '{other}' is not supported"
                )))
            }
        };
        let svc = self.trsvcid.as_deref().unwrap_or(DEFAULT_TRSVCID);
        let port: u16 = svc
            .parse()
            .map_err(|_| BdevError::Invalid(format!("trsvcid '{svc}' is not a port number")))?;
        let host = if (ipv6 || self.traddr.contains(':')) && !self.traddr.starts_with('[') {
            format!("[{}]", self.traddr)
        } else {
            self.traddr.clone()
        };
        format!("{host}:{port}")
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.find(|a| a.is_ipv6() == ipv6 || self.adrfam.is_none()))
            .ok_or_else(|| BdevError::Invalid(format!("cannot resolve traddr '{}'", self.traddr)))
    }
}

/// Parses spdk_nvme_perf's transport ID string, e.g.
/// `trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4420 subnqn:nqn.2016-06.io.spdk:cnode1`,
/// into attach parameters for a controller called `name`. Keys are case-insensitive and may
/// be followed by `:` or `=`; values end at whitespace (so NQNs keep their colons).
pub fn parse_transport_id(trid: &str, name: &str) -> Result<AttachParams, BdevError> {
    let mut p = AttachParams {
        name: name.to_string(),
        ..Default::default()
    };
    for pair in trid.split_whitespace() {
        let Some(sep) = pair.find([':', '=']) else {
            return Err(BdevError::Invalid(format!(
                "'{pair}' in the transport ID is not key:value"
            )));
        };
        let (key, value) = (&pair[..sep], &pair[sep + 1..]);
        if value.is_empty() {
            return Err(BdevError::Invalid(format!(
                "transport ID key '{key}' has no value"
            )));
        }
        let value = value.to_string();
        match key.to_ascii_lowercase().as_str() {
            "trtype" => p.trtype = value,
            "adrfam" => p.adrfam = Some(value),
            "traddr" => p.traddr = value,
            "trsvcid" => p.trsvcid = Some(value),
            "subnqn" => p.subnqn = Some(value),
            "hostnqn" => p.hostnqn = Some(value),
            "hostaddr" => p.hostaddr = Some(value),
            "hostsvcid" => p.hostsvcid = Some(value),
            "priority" => {
                p.priority = Some(value.parse().map_err(|_| {
                    BdevError::Invalid(format!("priority '{value}' is not a number"))
                })?)
            }
            other => {
                return Err(BdevError::Invalid(format!(
                    "unknown transport ID key '{other}'"
                )))
            }
        }
    }
    if p.trtype.is_empty() {
        return Err(BdevError::Invalid("transport ID lacks trtype".into()));
    }
    if p.traddr.is_empty() {
        return Err(BdevError::Invalid("transport ID lacks traddr".into()));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_transport_id() {
        let p = parse_transport_id(
            "trtype:TCP ADRFAM:IPv4 traddr:127.0.0.1 trsvcid:4421 subnqn:nqn.2016-06.io.spdk:cnode1",
            "Nvme0",
        )
        .unwrap();
        assert_eq!(p.name, "Nvme0");
        assert_eq!(p.trtype, "TCP");
        assert_eq!(p.adrfam.as_deref(), Some("IPv4"));
        assert_eq!(p.traddr, "127.0.0.1");
        assert_eq!(p.trsvcid.as_deref(), Some("4421"));
        assert_eq!(p.subnqn.as_deref(), Some("nqn.2016-06.io.spdk:cnode1"));
        assert_eq!(p.hostnqn, None);
        assert_eq!(p.resolve().unwrap(), "127.0.0.1:4421".parse().unwrap());
    }

    #[test]
    fn equals_separator_hostnqn_and_default_port() {
        let p = parse_transport_id(
            "trtype=tcp traddr=::1 hostnqn=nqn.2014-08.org.nvmexpress:uuid:x",
            "N",
        )
        .unwrap();
        assert_eq!(p.traddr, "::1");
        assert_eq!(
            p.hostnqn.as_deref(),
            Some("nqn.2014-08.org.nvmexpress:uuid:x")
        );
        assert_eq!(p.resolve().unwrap(), "[::1]:4420".parse().unwrap());
    }

    #[test]
    fn bad_transport_ids() {
        assert!(parse_transport_id("traddr:1.2.3.4", "N").is_err());
        assert!(parse_transport_id("trtype:tcp", "N").is_err());
        assert!(parse_transport_id("trtype:tcp traddr:1.2.3.4 bogus:1", "N").is_err());
        assert!(parse_transport_id("trtype:tcp traddr", "N").is_err());
        let rdma = parse_transport_id("trtype:rdma traddr:1.2.3.4", "N").unwrap();
        assert!(rdma.resolve().is_err());
    }

    #[test]
    fn spdk_attach_params_deserialize() {
        let p: AttachParams = serde_json::from_value(serde_json::json!({
            "name": "Nvme0", "trtype": "tcp", "traddr": "127.0.0.1", "adrfam": "ipv4",
            "trsvcid": "4420", "subnqn": "nqn.2016-06.io.spdk:cnode1", "hdgst": true,
            "multipath": "disable", "ctrlr_loss_timeout_sec": -1, "reconnect_delay_sec": 0,
            "fast_io_fail_timeout_sec": 0, "num_io_queues": 4, "priority": 0
        }))
        .unwrap();
        assert!(p.hdgst && !p.ddgst);
        assert_eq!(p.num_io_queues, Some(4));
        let bad: Result<AttachParams, _> = serde_json::from_value(serde_json::json!({
            "name": "Nvme0", "trtype": "tcp", "traddr": "127.0.0.1", "nonsense": 1
        }));
        assert!(bad.is_err());
    }
}
