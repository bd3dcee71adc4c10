//! The discovery log page, built per host from the subsystems it may reach.

use super::{listener, rpc};
use crate::spec::log::{
    adrfam, encode_discovery_log, subtype, tcp_sectype, treq, trtype, DiscoveryEntry,
};
use crate::spec::nqn::DISCOVERY_NQN;
use std::net::SocketAddr;

fn entry(sub_type: u8, nqn: &str, addr: SocketAddr, traddr: &str, port_id: u16) -> DiscoveryEntry {
    DiscoveryEntry {
        transport_type: trtype::TCP,
        address_family: if addr.is_ipv6() {
            adrfam::IPV6
        } else {
            adrfam::IPV4
        },
        subsystem_type: sub_type,
        transport_requirements: treq::SECURE_CHANNEL_NOT_REQUIRED,
        port_id,
        controller_id: 0xFFFF,
        admin_max_sq_size: rpc::transport_options().max_aq_depth as u16,
        entry_flags: 0,
        service_id: addr.port().to_string(),
        subsystem_nqn: nqn.to_string(),
        address: traddr.to_string(),
        tcp_security_type: tcp_sectype::NONE,
    }
}

/// The whole log for `hostnqn`: every subsystem listener it may connect to, then this
/// discovery controller's own addresses. The generation counter is a checksum of the content,
/// so it changes exactly when the log does.
pub fn log_page(hostnqn: &str) -> Vec<u8> {
    let listening = listener::addresses();
    let port_of = |a: &SocketAddr| listening.iter().position(|x| x == a).unwrap_or(0) as u16;
    let mut entries = Vec::new();
    for sub in rpc::subsystems() {
        if !sub.host_allowed(hostnqn) {
            continue;
        }
        for l in sub.state().listeners.iter() {
            entries.push(entry(
                subtype::NVME,
                &sub.nqn,
                l.addr,
                &l.traddr,
                port_of(&l.addr),
            ));
        }
    }
    for a in &listening {
        entries.push(entry(
            subtype::CURRENT_DISCOVERY,
            DISCOVERY_NQN,
            *a,
            &a.ip().to_string(),
            port_of(a),
        ));
    }
    let content = encode_discovery_log(0, &entries);
    encode_discovery_log(crc32c::crc32c(&content) as u64 + 1, &entries)
}
