//! Resolving a parsed configuration the way drbdadm's `post_parse()` does, in its order:
//! `must_have_two_hosts` for the explicit connections, connection-mesh expansion, the implicit
//! connection, host info in the address pairs (with the implicit node-ids), and a node-id for
//! every host. Then the checks drbdadm leaves to the kernel: unique node-ids, complete volumes.

use super::crc::address_hash;
use super::error::ConfigError;
use super::model::{Config, Connection, Host, Path, PathHost, Resource, Volume};

/// Resolves every resource of `cfg` (see [`super::model`] for what "resolved" means).
/// Running it again on a resolved configuration changes nothing.
pub fn post_parse(cfg: &mut Config) -> Result<(), ConfigError> {
    for r in &mut cfg.resources {
        r.sections = cfg.common.merged(&r.sections);
        post_parse_resource(r)?;
    }
    Ok(())
}

/// Resolves one resource whose `common` options are already merged in.
pub fn post_parse_resource(r: &mut Resource) -> Result<(), ConfigError> {
    inherit_volumes(r);
    for c in &r.connections {
        must_have_two_hosts(r, c)?;
    }
    create_connections_from_meshes(r)?;
    let implicit = create_implicit_connections(r)?;
    let mut pairs: Vec<(String, String)> = Vec::new();
    for i in 0..r.connections.len() {
        set_host_info_in_host_address_pairs(r, i, implicit && i == 0)?;
        let (a, b) = r.connections[i].hosts().expect("two hosts checked");
        let key = if a < b { (a, b) } else { (b, a) };
        if pairs.iter().any(|(x, y)| (x.as_str(), y.as_str()) == key) {
            return Err(ConfigError::at(
                &r.connections[i].loc,
                format!("duplicate connection between '{}' and '{}'", key.0, key.1),
            ));
        }
        pairs.push((key.0.to_string(), key.1.to_string()));
    }
    for h in &r.hosts {
        if h.node_id.is_none() {
            return Err(ConfigError::at(
                &h.loc,
                format!("node-id is missing in 'on {}'", h.name),
            ));
        }
    }
    validate(r)
}

/// Folds the resource-level volumes into every host: a host's own settings win.
fn inherit_volumes(r: &mut Resource) {
    let templates = std::mem::take(&mut r.volumes);
    for h in &mut r.hosts {
        for t in &templates {
            match h.volumes.iter_mut().find(|v| v.number == t.number) {
                Some(v) => {
                    if v.device.is_none() {
                        v.device = t.device.clone();
                    }
                    if v.disk.is_none() {
                        v.disk = t.disk.clone();
                    }
                }
                None => h.volumes.push(Volume {
                    loc: h.loc.clone(),
                    ..t.clone()
                }),
            }
        }
        h.volumes.sort_by_key(|v| v.number);
    }
}

fn must_have_two_hosts(r: &Resource, c: &Connection) -> Result<(), ConfigError> {
    if c.paths.is_empty() {
        return Err(ConfigError::at(
            &c.loc,
            format!(
                "resource {}: a connection needs two 'host' lines or 'path' sections",
                r.name
            ),
        ));
    }
    for p in &c.paths {
        if p.hosts.len() != 2 {
            return Err(ConfigError::at(
                &p.loc,
                format!(
                    "resource {}: a connection (or path) must name exactly two hosts, not {}",
                    r.name,
                    p.hosts.len()
                ),
            ));
        }
    }
    Ok(())
}

/// Every pair of a mesh's hosts becomes a connection with the mesh's net options, unless an
/// explicit connection between the two exists.
fn create_connections_from_meshes(r: &mut Resource) -> Result<(), ConfigError> {
    for m in std::mem::take(&mut r.meshes) {
        for (i, h) in m.hosts.iter().enumerate() {
            if r.host(h).is_none() {
                return Err(ConfigError::at(
                    &m.loc,
                    format!(
                        "connection-mesh of resource {} names host '{h}', which has no 'on' section",
                        r.name
                    ),
                ));
            }
            if m.hosts[..i].contains(h) {
                return Err(ConfigError::at(
                    &m.loc,
                    format!("connection-mesh names host '{h}' twice"),
                ));
            }
        }
        for (i, a) in m.hosts.iter().enumerate() {
            for b in &m.hosts[i + 1..] {
                let exists = r
                    .connections
                    .iter()
                    .any(|c| c.peer_of(a) == Some(b.as_str()));
                if exists {
                    continue;
                }
                let end = |h: &str| PathHost {
                    host: h.to_string(),
                    loc: m.loc.clone(),
                    ..PathHost::default()
                };
                r.connections.push(Connection {
                    name: None,
                    paths: vec![Path {
                        hosts: vec![end(a), end(b)],
                        loc: m.loc.clone(),
                    }],
                    net: m.net.clone(),
                    disk: Default::default(),
                    loc: m.loc.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Without any connection: two `on` hosts get one implicit connection with one path; more
/// than two is an error. Returns whether it created the connection.
fn create_implicit_connections(r: &mut Resource) -> Result<bool, ConfigError> {
    if !r.connections.is_empty() {
        return Ok(false);
    }
    if r.hosts.len() >= 3 {
        return Err(ConfigError::at(
            &r.loc,
            format!(
                "Resource {}: Use explicit 'connection' sections with more than two 'on' sections.",
                r.name
            ),
        ));
    }
    if r.hosts.len() < 2 {
        return Ok(false);
    }
    let mut ends = Vec::new();
    for h in &r.hosts {
        if h.address.is_none() {
            return Err(ConfigError::at(
                &h.loc,
                format!("address is missing in 'on {}'", h.name),
            ));
        }
        ends.push(PathHost {
            host: h.name.clone(),
            loc: h.loc.clone(),
            ..PathHost::default()
        });
    }
    r.connections.push(Connection {
        paths: vec![Path {
            hosts: ends,
            loc: r.loc.clone(),
        }],
        loc: r.loc.clone(),
        ..Connection::default()
    });
    Ok(true)
}

/// Resolves the endpoints of connection `ci` and, for the implicit connection between two
/// hosts without node-ids, derives them like drbdadm's `generate_implicit_node_id()`.
fn set_host_info_in_host_address_pairs(
    r: &mut Resource,
    ci: usize,
    implicit: bool,
) -> Result<(), ConfigError> {
    let mut pair: Option<(String, String)> = None;
    for pi in 0..r.connections[ci].paths.len() {
        for ei in 0..2 {
            let ph = &r.connections[ci].paths[pi].hosts[ei];
            let Some(host) = r.host(&ph.host) else {
                return Err(ConfigError::at(
                    &ph.loc,
                    format!(
                        "resource {}: connection names host '{}', which has no 'on' section",
                        r.name, ph.host
                    ),
                ));
            };
            let mut addr = match (&ph.address, &host.address) {
                (Some(a), _) | (None, Some(a)) => a.clone(),
                (None, None) => {
                    return Err(ConfigError::at(
                        &ph.loc,
                        format!(
                            "resource {}: host '{}' has no address (neither in 'on {}' nor in the connection)",
                            r.name, ph.host, ph.host
                        ),
                    ))
                }
            };
            if let Some(p) = ph.port {
                addr.port = p;
            }
            let ph = &mut r.connections[ci].paths[pi].hosts[ei];
            ph.address = Some(addr);
            ph.port = None;
        }
        let p = &r.connections[ci].paths[pi];
        let (a, b) = (p.hosts[0].host.clone(), p.hosts[1].host.clone());
        if a == b {
            return Err(ConfigError::at(
                &p.loc,
                format!("a connection needs two different hosts, not '{a}' twice"),
            ));
        }
        let key = if a < b { (a, b) } else { (b, a) };
        match &pair {
            None => pair = Some(key),
            Some(k) if *k == key => {}
            Some(k) => {
                return Err(ConfigError::at(
                    &p.loc,
                    format!(
                        "all paths of a connection must join the same hosts ('{}' and '{}')",
                        k.0, k.1
                    ),
                ))
            }
        }
    }
    if implicit {
        let (a, b) = r.connections[ci].hosts().expect("two hosts");
        let ia = r.hosts.iter().position(|h| h.name == a).expect("host");
        let ib = r.hosts.iter().position(|h| h.name == b).expect("host");
        if r.hosts[ia].node_id.is_none() && r.hosts[ib].node_id.is_none() {
            let hash = |h: &Host| address_hash(&h.address.as_ref().expect("address").ip);
            let (ha, hb) = (hash(&r.hosts[ia]), hash(&r.hosts[ib]));
            // Signed comparison, as drbdadm holds the hashes in an `int`.
            let (ida, idb) = match ha.cmp(&hb) {
                std::cmp::Ordering::Greater => (0, 1),
                std::cmp::Ordering::Less => (1, 0),
                std::cmp::Ordering::Equal => {
                    return Err(ConfigError::at(
                        &r.loc,
                        format!(
                            "resource {}: BAD LUCK, equal hashes for the addresses of '{a}' and '{b}'; set node-id explicitly",
                            r.name
                        ),
                    ))
                }
            };
            r.hosts[ia].node_id = Some(ida);
            r.hosts[ib].node_id = Some(idb);
        }
    }
    Ok(())
}

fn validate(r: &Resource) -> Result<(), ConfigError> {
    for (i, h) in r.hosts.iter().enumerate() {
        if let Some(prev) = r.hosts[..i].iter().find(|p| p.node_id == h.node_id) {
            return Err(ConfigError::at(
                &h.loc,
                format!(
                    "node-id {} of 'on {}' is also used by 'on {}'",
                    h.node_id.unwrap_or_default(),
                    h.name,
                    prev.name
                ),
            ));
        }
        for (j, v) in h.volumes.iter().enumerate() {
            let Some(dev) = &v.device else {
                return Err(ConfigError::at(
                    &v.loc,
                    format!("volume {} of 'on {}' has no 'device'", v.number, h.name),
                ));
            };
            if v.disk.is_none() {
                return Err(ConfigError::at(
                    &v.loc,
                    format!(
                        "volume {} of 'on {}' has no 'disk' (write 'disk none;' for a diskless node)",
                        v.number, h.name
                    ),
                ));
            }
            if let Some(o) = h.volumes[..j]
                .iter()
                .find(|o| o.device.as_ref().map(|d| &d.name) == Some(&dev.name))
            {
                return Err(ConfigError::at(
                    &v.loc,
                    format!(
                        "volumes {} and {} of 'on {}' use the same device '{}'",
                        o.number, v.number, h.name, dev.name
                    ),
                ));
            }
        }
    }
    Ok(())
}
