//! The resource model: what the parser produces and `post_parse` resolves.
//!
//! Before [`post_parse`](super::post_parse()) a [`Resource`] holds what the files said;
//! afterwards it is *resolved*: `common` options are folded into the resource's sections,
//! resource-level volumes are folded into every host, connection-meshes and the implicit
//! connection are expanded into [`Connection`]s whose paths carry full addresses, and every host
//! has a node-id. [`dump`](super::dump()) prints a resolved resource and parses back to an equal
//! one. Source locations ([`Loc`]) never take part in equality.

use std::fmt;

/// Where something was written: file (as given to the parser) and 1-based line.
///
/// Two locations always compare equal, so that models parsed from different text (for example
/// a file and its [`dump`](super::dump())) can be compared for meaning.
#[derive(Debug, Clone, Default)]
pub struct Loc {
    pub file: String,
    pub line: u32,
}

impl Loc {
    pub fn new(file: &str, line: u32) -> Loc {
        Loc {
            file: file.to_string(),
            line,
        }
    }
}

impl PartialEq for Loc {
    fn eq(&self, _: &Loc) -> bool {
        true
    }
}
impl Eq for Loc {}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// `key value;` options of one section, in the order written; a later value for the same key
/// replaces the earlier one in place. A key written without a value (`allow-two-primaries;`)
/// holds `"yes"`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    entries: Vec<(String, String)>,
}

impl Options {
    pub fn new() -> Options {
        Options::default()
    }
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    /// Sets `key`, keeping its position if it was already there.
    pub fn set(&mut self, key: &str, value: &str) {
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = value.to_string(),
            None => self.entries.push((key.to_string(), value.to_string())),
        }
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    /// `self` overridden by `over` (inheritance: common < resource < connection).
    pub fn merged(&self, over: &Options) -> Options {
        let mut out = self.clone();
        for (k, v) in over.iter() {
            out.set(k, v);
        }
        out
    }
    /// A JSON object of strings, keyed by the drbd option name.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.entries
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
        )
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Options {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Options {
        let mut o = Options::new();
        for (k, v) in iter {
            o.set(&k.into(), &v.into());
        }
        o
    }
}

/// The option sections of `common` and `resource`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sections {
    pub net: Options,
    pub disk: Options,
    pub options: Options,
    pub handlers: Options,
    pub startup: Options,
}

impl Sections {
    /// `self` overridden by `over`, section by section.
    pub fn merged(&self, over: &Sections) -> Sections {
        Sections {
            net: self.net.merged(&over.net),
            disk: self.disk.merged(&over.disk),
            options: self.options.merged(&over.options),
            handlers: self.handlers.merged(&over.handlers),
            startup: self.startup.merged(&over.startup),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.iter().all(|(_, o)| o.is_empty())
    }
    /// `(section name, options)` in the order `dump` prints them.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Options)> {
        [
            ("options", &self.options),
            ("net", &self.net),
            ("disk", &self.disk),
            ("handlers", &self.handlers),
            ("startup", &self.startup),
        ]
        .into_iter()
    }
    pub(crate) fn by_name_mut(&mut self, name: &str) -> Option<&mut Options> {
        Some(match name {
            "net" => &mut self.net,
            "disk" => &mut self.disk,
            "options" => &mut self.options,
            "handlers" => &mut self.handlers,
            "startup" => &mut self.startup,
            _ => return None,
        })
    }
}

/// Everything read from a file and its includes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// The `common` section; folded into every resource by `post_parse`.
    pub common: Sections,
    pub resources: Vec<Resource>,
}

impl Config {
    pub fn resource(&self, name: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.name == name)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resource {
    pub name: String,
    pub loc: Loc,
    pub sections: Sections,
    /// Resource-level `volume` sections (and a resource-level device/disk/meta-disk as volume 0):
    /// defaults for every host. Empty once resolved (folded into [`Host::volumes`]).
    pub volumes: Vec<Volume>,
    /// The `on` sections in file order.
    pub hosts: Vec<Host>,
    /// Explicit connections; once resolved also the ones from meshes and the implicit one.
    pub connections: Vec<Connection>,
    /// `connection-mesh` sections. Empty once resolved (expanded into `connections`).
    pub meshes: Vec<Mesh>,
}

impl Resource {
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }
    pub fn host_by_node_id(&self, id: u32) -> Option<&Host> {
        self.hosts.iter().find(|h| h.node_id == Some(id))
    }
    pub fn host_names(&self) -> Vec<&str> {
        self.hosts.iter().map(|h| h.name.as_str()).collect()
    }
    /// Resolved connections that have `host` at one end.
    pub fn connections_of<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a Connection> {
        self.connections
            .iter()
            .filter(move |c| c.peer_of(host).is_some())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Volume {
    pub number: u32,
    pub device: Option<Device>,
    pub disk: Option<Disk>,
    pub loc: Loc,
}

/// `device ox0;`, `device /dev/drbd0 minor 0;` or `device minor 3;` (named `drbd3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The bdev name the replicated device gets: the device with a leading `/dev/` removed.
    pub name: String,
    pub minor: Option<u32>,
}

/// The backing bdev of a volume, or `none` for a diskless node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disk {
    None,
    Bdev(String),
}

impl Disk {
    pub fn bdev(&self) -> Option<&str> {
        match self {
            Disk::None => None,
            Disk::Bdev(b) => Some(b),
        }
    }
}

/// An `on HOST { }` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    /// Always set once resolved.
    pub node_id: Option<u32>,
    pub address: Option<Address>,
    /// Sorted by volume number; once resolved complete (device and disk set).
    pub volumes: Vec<Volume>,
    pub loc: Loc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressFamily {
    Ipv4,
    Ipv6,
}

impl AddressFamily {
    pub fn name(self) -> &'static str {
        match self {
            AddressFamily::Ipv4 => "ipv4",
            AddressFamily::Ipv6 => "ipv6",
        }
    }
}

/// An endpoint. `ip` is kept as written (it is what the implicit node-id hashes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub family: AddressFamily,
    pub ip: String,
    pub port: u16,
}

impl fmt::Display for Address {
    /// `IP:PORT`, or `[IP]:PORT` for IPv6.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.family {
            AddressFamily::Ipv4 => write!(f, "{}:{}", self.ip, self.port),
            AddressFamily::Ipv6 => write!(f, "[{}]:{}", self.ip, self.port),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Connection {
    /// `connection NAME { }` (optional, informational).
    pub name: Option<String>,
    /// Two `host` lines make one path; otherwise the `path` sections.
    pub paths: Vec<Path>,
    pub net: Options,
    /// Peer-device options (`resync-rate`, `c-max-rate`, ...).
    pub disk: Options,
    pub loc: Loc,
}

impl Connection {
    /// The two host names (those of the first path); `None` before `must_have_two_hosts`.
    pub fn hosts(&self) -> Option<(&str, &str)> {
        let p = self.paths.first()?;
        match p.hosts.as_slice() {
            [a, b] => Some((a.host.as_str(), b.host.as_str())),
            _ => None,
        }
    }
    /// The other end of this connection if `host` is one end.
    pub fn peer_of(&self, host: &str) -> Option<&str> {
        let (a, b) = self.hosts()?;
        if a == host {
            Some(b)
        } else if b == host {
            Some(a)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Path {
    /// Exactly two once checked.
    pub hosts: Vec<PathHost>,
    pub loc: Loc,
}

impl Path {
    pub fn endpoint(&self, host: &str) -> Option<&PathHost> {
        self.hosts.iter().find(|h| h.host == host)
    }
}

/// `host NAME [address [AF] IP:PORT] [port P];`. Once resolved `address` is set (from the `on`
/// section unless given here, with `port` applied) and `port` is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathHost {
    pub host: String,
    pub address: Option<Address>,
    pub port: Option<u16>,
    pub loc: Loc,
}

/// `connection-mesh { hosts a b c; net { } }`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mesh {
    pub hosts: Vec<String>,
    pub net: Options,
    pub loc: Loc,
}
