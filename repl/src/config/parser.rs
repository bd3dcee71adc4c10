//! Syntax: tokens → top-level items ([`Item`]) of one file. Pure: `include` statements are
//! returned as items for the loader ([`super::include`]) to follow.

use super::error::ConfigError;
use super::lexer::{quote, tokenize, Token, TokenKind};
use super::model::{
    Address, AddressFamily, Connection, Device, Disk, Host, Loc, Mesh, Options, Path, PathHost,
    Resource, Sections, Volume,
};
use std::net::{Ipv4Addr, Ipv6Addr};

/// A top-level statement of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Common(Sections, Loc),
    Resource(Resource),
    /// `include "PATTERN";` at this location.
    Include(String, Loc),
}

/// `node-id` is 0..31 (`DRBD_PEERS_MAX` is 32).
pub const MAX_NODE_ID: u32 = 31;
pub const MAX_VOLUME: u32 = 65535;

#[derive(Debug, Clone)]
struct Word {
    text: String,
    quoted: bool,
    line: u32,
}

impl Word {
    /// An unquoted word equal to `kw`.
    fn is(&self, kw: &str) -> bool {
        !self.quoted && self.text == kw
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Semi,
    Block,
}

#[derive(Debug)]
struct Stmt {
    words: Vec<Word>,
    end: End,
}

impl Stmt {
    fn kw(&self) -> &str {
        &self.words[0].text
    }
    fn line(&self) -> u32 {
        self.words[0].line
    }
    fn args(&self) -> &[Word] {
        &self.words[1..]
    }
}

fn show(words: &[Word]) -> String {
    words
        .iter()
        .map(|w| quote(&w.text, false))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parses one file's text into its top-level items.
pub fn parse_items(text: &str, file: &str) -> Result<Vec<Item>, ConfigError> {
    let toks = tokenize(text, file)?;
    let mut p = Parser {
        toks,
        pos: 0,
        file,
        seen_global: false,
        seen_common: false,
    };
    p.top()
}

struct Parser<'a> {
    toks: Vec<Token>,
    pos: usize,
    file: &'a str,
    seen_global: bool,
    seen_common: bool,
}

/// The section a block belongs to, for error messages ("missing '}' for ...").
struct Ctx {
    what: String,
    line: u32,
}

impl<'a> Parser<'a> {
    fn err(&self, line: u32, reason: impl Into<String>) -> ConfigError {
        ConfigError::new(self.file, line, reason)
    }

    fn loc(&self, line: u32) -> Loc {
        Loc::new(self.file, line)
    }

    /// The next statement of the current block; `None` at its closing `}` (consumed) or, at the
    /// top level (`ctx` is `None`), at the end of the file.
    fn stmt(&mut self, ctx: Option<&Ctx>) -> Result<Option<Stmt>, ConfigError> {
        let mut words: Vec<Word> = Vec::new();
        loop {
            let Some(tok) = self.toks.get(self.pos).cloned() else {
                if let Some(w) = words.last() {
                    return Err(self.err(w.line, format!("expected ';' after '{}'", show(&words))));
                }
                return match ctx {
                    None => Ok(None),
                    Some(c) => Err(self.err(
                        c.line,
                        format!("missing '}}' to close {} (end of file)", c.what),
                    )),
                };
            };
            self.pos += 1;
            match tok.kind {
                TokenKind::Word { text, quoted } => words.push(Word {
                    text,
                    quoted,
                    line: tok.line,
                }),
                TokenKind::Semi | TokenKind::Open => {
                    let (end, what) = match tok.kind {
                        TokenKind::Semi => (End::Semi, "unexpected ';'"),
                        _ => (End::Block, "unexpected '{'"),
                    };
                    let Some(first) = words.first() else {
                        return Err(self.err(tok.line, what));
                    };
                    if first.quoted {
                        return Err(self.err(
                            first.line,
                            format!("expected a keyword, found \"{}\"", first.text),
                        ));
                    }
                    return Ok(Some(Stmt { words, end }));
                }
                TokenKind::Close => {
                    if let Some(w) = words.last() {
                        return Err(
                            self.err(w.line, format!("expected ';' after '{}'", show(&words)))
                        );
                    }
                    return match ctx {
                        Some(_) => Ok(None),
                        None => Err(self.err(tok.line, "unexpected '}'")),
                    };
                }
            }
        }
    }

    /// Checks the shape of `s`: `min..=max` arguments and the expected terminator. Extra words
    /// mean a missing terminator after the last expected one.
    fn shape<'s>(
        &self,
        s: &'s Stmt,
        min: usize,
        max: usize,
        end: End,
    ) -> Result<&'s [Word], ConfigError> {
        let args = s.args();
        let term = if end == End::Semi { ';' } else { '{' };
        if args.len() > max {
            let keep = &s.words[..=max];
            return Err(self.err(
                keep[max].line,
                format!("expected '{term}' after '{}'", show(keep)),
            ));
        }
        if s.end != end {
            let last = s.words.last().map_or(s.line(), |w| w.line);
            return Err(self.err(
                last,
                format!("expected '{term}' after '{}'", show(&s.words)),
            ));
        }
        if args.len() < min {
            return Err(self.err(
                s.line(),
                if min == 1 && max == 1 {
                    format!("'{}' needs a value", s.kw())
                } else {
                    format!("'{}' needs at least {min} argument(s)", s.kw())
                },
            ));
        }
        Ok(args)
    }

    /// Skips the body of a block whose `{` was just read.
    fn skip_block(&mut self, line: u32) -> Result<(), ConfigError> {
        let mut depth = 1usize;
        while let Some(t) = self.toks.get(self.pos) {
            self.pos += 1;
            match t.kind {
                TokenKind::Open => depth += 1,
                TokenKind::Close => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                _ => {}
            }
        }
        Err(self.err(line, "missing '}' to close 'skip' section (end of file)"))
    }

    fn unknown(&self, s: &Stmt, section: &str) -> ConfigError {
        let what = if s.end == End::Block {
            "section"
        } else {
            "keyword"
        };
        self.err(
            s.line(),
            format!("unknown {what} '{}' in {section}", s.kw()),
        )
    }

    fn top(&mut self) -> Result<Vec<Item>, ConfigError> {
        let mut items = Vec::new();
        while let Some(s) = self.stmt(None)? {
            match s.kw() {
                "skip" if s.end == End::Block => self.skip_block(s.line())?,
                "include" => {
                    let a = self.shape(&s, 1, 1, End::Semi)?;
                    items.push(Item::Include(a[0].text.clone(), self.loc(s.line())));
                }
                "global" => {
                    self.shape(&s, 0, 0, End::Block)?;
                    if self.seen_global {
                        return Err(self.err(s.line(), "only one 'global' section is allowed"));
                    }
                    self.seen_global = true;
                    self.global(s.line())?;
                }
                "common" => {
                    self.shape(&s, 0, 0, End::Block)?;
                    if self.seen_common {
                        return Err(self.err(s.line(), "only one 'common' section is allowed"));
                    }
                    self.seen_common = true;
                    let sec = self.common(s.line())?;
                    items.push(Item::Common(sec, self.loc(s.line())));
                }
                "resource" => {
                    let a = self.shape(&s, 1, 1, End::Block)?;
                    let r = self.resource(&a[0].text, s.line())?;
                    items.push(Item::Resource(r));
                }
                k if k.starts_with("require-drbd-module-version-") => {
                    self.shape(&s, 1, 1, End::Semi)?;
                }
                _ => return Err(self.unknown(&s, "the top level")),
            }
        }
        Ok(items)
    }

    fn global(&mut self, line: u32) -> Result<(), ConfigError> {
        const KNOWN: &[&str] = &[
            "usage-count",
            "minor-count",
            "dialog-refresh",
            "disable-ip-verification",
            "udev-always-use-vnr",
            "cmd-timeout-short",
            "cmd-timeout-medium",
            "cmd-timeout-long",
            "hostname",
        ];
        let ctx = Ctx {
            what: "'global' section".into(),
            line,
        };
        while let Some(s) = self.stmt(Some(&ctx))? {
            if s.end == End::Block && s.kw() == "skip" {
                self.skip_block(s.line())?;
            } else if s.end == End::Semi && KNOWN.contains(&s.kw()) {
                self.shape(&s, 0, 1, End::Semi)?;
            } else {
                return Err(self.unknown(&s, "'global'"));
            }
        }
        Ok(())
    }

    /// `net`, `disk`, `options`, `handlers`, `startup`: `key [value];` statements.
    fn options(&mut self, name: &str, line: u32, into: &mut Options) -> Result<(), ConfigError> {
        let ctx = Ctx {
            what: format!("'{name}' section"),
            line,
        };
        while let Some(s) = self.stmt(Some(&ctx))? {
            if s.end == End::Block {
                if s.kw() == "skip" {
                    self.skip_block(s.line())?;
                    continue;
                }
                return Err(self.unknown(&s, &format!("'{name}'")));
            }
            let a = self.shape(&s, 0, 1, End::Semi)?;
            let value = a.first().map_or("yes", |w| w.text.as_str());
            if name == "net" && s.kw() == "protocol" && !matches!(value, "A" | "B" | "C") {
                return Err(self.err(
                    s.line(),
                    format!("protocol must be A, B or C, not '{value}'"),
                ));
            }
            into.set(s.kw(), value);
        }
        Ok(())
    }

    fn common(&mut self, line: u32) -> Result<Sections, ConfigError> {
        let mut sec = Sections::default();
        let ctx = Ctx {
            what: "'common' section".into(),
            line,
        };
        while let Some(s) = self.stmt(Some(&ctx))? {
            if s.end == End::Block && s.kw() == "skip" {
                self.skip_block(s.line())?;
                continue;
            }
            if s.end == End::Block {
                let name = s.kw().to_string();
                if let Some(o) = sec.by_name_mut(&name) {
                    self.shape(&s, 0, 0, End::Block)?;
                    self.options(&name, s.line(), o)?;
                    continue;
                }
            }
            return Err(self.unknown(&s, "'common'"));
        }
        Ok(sec)
    }

    fn resource(&mut self, name: &str, line: u32) -> Result<Resource, ConfigError> {
        let mut r = Resource {
            name: name.to_string(),
            loc: self.loc(line),
            ..Resource::default()
        };
        let section = format!("resource {name}");
        let ctx = Ctx {
            what: format!("'{section}'"),
            line,
        };
        while let Some(s) = self.stmt(Some(&ctx))? {
            let kw = s.kw().to_string();
            match (kw.as_str(), s.end) {
                ("skip", End::Block) => self.skip_block(s.line())?,
                ("net" | "disk" | "options" | "handlers" | "startup", End::Block) => {
                    self.shape(&s, 0, 0, End::Block)?;
                    let o = r.sections.by_name_mut(&kw).expect("section name");
                    self.options(&kw, s.line(), o)?;
                }
                ("volume", _) => {
                    let a = self.shape(&s, 1, 1, End::Block)?;
                    let n = self.volume_number(&a[0])?;
                    if r.volumes.iter().any(|v| v.number == n) {
                        return Err(self.err(s.line(), format!("duplicate 'volume {n}'")));
                    }
                    let v = self.volume(n, s.line(), &section)?;
                    r.volumes.push(v);
                }
                ("device" | "disk" | "meta-disk", End::Semi) => {
                    let v = volume0(&mut r.volumes, self.loc(s.line()));
                    self.volume_stmt(&s, v)?;
                }
                ("on", _) => {
                    if s.args().len() > 1 && s.end == End::Block {
                        return Err(
                            self.err(s.line(), "only one host name per 'on' section is supported")
                        );
                    }
                    let a = self.shape(&s, 1, 1, End::Block)?;
                    let hname = a[0].text.clone();
                    if r.hosts.iter().any(|h| h.name == hname) {
                        return Err(self.err(s.line(), format!("duplicate 'on {hname}' section")));
                    }
                    let h = self.host(&hname, s.line())?;
                    r.hosts.push(h);
                }
                ("connection", _) => {
                    let a = self.shape(&s, 0, 1, End::Block)?;
                    let c = self.connection(a.first().map(|w| w.text.clone()), s.line())?;
                    r.connections.push(c);
                }
                ("connection-mesh", _) => {
                    self.shape(&s, 0, 0, End::Block)?;
                    let m = self.mesh(s.line())?;
                    r.meshes.push(m);
                }
                ("floating" | "stacked-on-top-of", _) => {
                    return Err(self.err(s.line(), format!("'{kw}' sections are not supported")))
                }
                _ => return Err(self.unknown(&s, &format!("'{section}'"))),
            }
        }
        r.volumes.sort_by_key(|v| v.number);
        Ok(r)
    }

    fn volume_number(&self, w: &Word) -> Result<u32, ConfigError> {
        match w.text.parse::<u32>() {
            Ok(n) if n <= MAX_VOLUME => Ok(n),
            _ => Err(self.err(
                w.line,
                format!("volume number must be 0..{MAX_VOLUME}, not '{}'", w.text),
            )),
        }
    }

    fn volume(&mut self, number: u32, line: u32, parent: &str) -> Result<Volume, ConfigError> {
        let mut v = Volume {
            number,
            loc: self.loc(line),
            ..Volume::default()
        };
        let ctx = Ctx {
            what: format!("'volume {number}' in '{parent}'"),
            line,
        };
        while let Some(s) = self.stmt(Some(&ctx))? {
            match (s.kw(), s.end) {
                ("skip", End::Block) => self.skip_block(s.line())?,
                ("device" | "disk" | "meta-disk", End::Semi) => self.volume_stmt(&s, &mut v)?,
                _ => return Err(self.unknown(&s, &format!("'volume {number}'"))),
            }
        }
        Ok(v)
    }

    /// `device ...;`, `disk ...;` or `meta-disk ...;` applied to `v`.
    fn volume_stmt(&self, s: &Stmt, v: &mut Volume) -> Result<(), ConfigError> {
        match s.kw() {
            "device" => {
                let a = self.shape(s, 1, 3, End::Semi)?;
                if v.device.is_some() {
                    return Err(self.err(
                        s.line(),
                        format!("duplicate 'device' for volume {}", v.number),
                    ));
                }
                v.device = Some(self.device(s, a)?);
            }
            "disk" => {
                let a = self.shape(s, 1, 1, End::Semi)?;
                if v.disk.is_some() {
                    return Err(self.err(
                        s.line(),
                        format!("duplicate 'disk' for volume {}", v.number),
                    ));
                }
                v.disk = Some(if a[0].is("none") {
                    Disk::None
                } else if a[0].text.is_empty() {
                    return Err(self.err(s.line(), "empty disk name"));
                } else {
                    Disk::Bdev(a[0].text.clone())
                });
            }
            _ => {
                let a = self.shape(s, 1, 2, End::Semi)?;
                if !(a.len() == 1 && a[0].text == "internal") {
                    return Err(self.err(
                        s.line(),
                        format!(
                            "only internal metadata is supported (meta-disk {})",
                            show(a)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn device(&self, s: &Stmt, a: &[Word]) -> Result<Device, ConfigError> {
        let minor = |w: &Word| {
            w.text
                .parse::<u32>()
                .map_err(|_| self.err(w.line, format!("minor must be a number, not '{}'", w.text)))
        };
        let (name, minor) = match a {
            [m, n] if m.is("minor") => {
                let n = minor(n)?;
                (format!("drbd{n}"), Some(n))
            }
            [d] => (d.text.clone(), None),
            [d, m, n] if m.is("minor") => (d.text.clone(), Some(minor(n)?)),
            _ => {
                return Err(self.err(
                    s.line(),
                    format!(
                        "expected 'device NAME [minor N]', found '{}'",
                        show(&s.words)
                    ),
                ))
            }
        };
        let name = name.strip_prefix("/dev/").unwrap_or(&name).to_string();
        if name.is_empty() {
            return Err(self.err(s.line(), "empty device name"));
        }
        Ok(Device { name, minor })
    }

    fn host(&mut self, name: &str, line: u32) -> Result<Host, ConfigError> {
        let mut h = Host {
            name: name.to_string(),
            loc: self.loc(line),
            ..Host::default()
        };
        let section = format!("on {name}");
        let ctx = Ctx {
            what: format!("'{section}'"),
            line,
        };
        while let Some(s) = self.stmt(Some(&ctx))? {
            match (s.kw(), s.end) {
                ("skip", End::Block) => self.skip_block(s.line())?,
                ("device" | "disk" | "meta-disk", End::Semi) => {
                    let v = volume0(&mut h.volumes, self.loc(s.line()));
                    self.volume_stmt(&s, v)?;
                }
                ("volume", _) => {
                    let a = self.shape(&s, 1, 1, End::Block)?;
                    let n = self.volume_number(&a[0])?;
                    if h.volumes.iter().any(|v| v.number == n) {
                        return Err(
                            self.err(s.line(), format!("duplicate 'volume {n}' in '{section}'"))
                        );
                    }
                    let v = self.volume(n, s.line(), &section)?;
                    h.volumes.push(v);
                }
                ("address", End::Semi) => {
                    let a = self.shape(&s, 1, 2, End::Semi)?;
                    if h.address.is_some() {
                        return Err(
                            self.err(s.line(), format!("duplicate 'address' in '{section}'"))
                        );
                    }
                    let mut i = 0;
                    let addr = self.address(a, &mut i)?;
                    if i != a.len() {
                        return Err(self.err(
                            a[i - 1].line,
                            format!("expected ';' after '{}'", show(&s.words[..=i])),
                        ));
                    }
                    h.address = Some(addr);
                }
                ("node-id", End::Semi) => {
                    let a = self.shape(&s, 1, 1, End::Semi)?;
                    if h.node_id.is_some() {
                        return Err(
                            self.err(s.line(), format!("duplicate 'node-id' in '{section}'"))
                        );
                    }
                    match a[0].text.parse::<u32>() {
                        Ok(n) if n <= MAX_NODE_ID => h.node_id = Some(n),
                        _ => {
                            return Err(self.err(
                                s.line(),
                                format!(
                                    "node-id must be a number from 0 to {MAX_NODE_ID}, not '{}'",
                                    a[0].text
                                ),
                            ))
                        }
                    }
                }
                _ => return Err(self.unknown(&s, &format!("'{section}'"))),
            }
        }
        h.volumes.sort_by_key(|v| v.number);
        Ok(h)
    }

    /// `[ipv4|ipv6] IP:PORT` starting at `a[*i]`; advances `i` past what it used.
    fn address(&self, a: &[Word], i: &mut usize) -> Result<Address, ConfigError> {
        let first = a
            .get(*i)
            .ok_or_else(|| self.err(a.last().map_or(0, |w| w.line), "address is missing"))?;
        let mut family = None;
        let is_family = first.text.starts_with(|c: char| c.is_ascii_alphabetic())
            && first.text.chars().all(|c| c.is_ascii_alphanumeric());
        if is_family {
            family = Some(match first.text.as_str() {
                "ipv4" => AddressFamily::Ipv4,
                "ipv6" => AddressFamily::Ipv6,
                f => {
                    return Err(self.err(
                        first.line,
                        format!("address family '{f}' is not supported (only ipv4 and ipv6)"),
                    ))
                }
            });
            *i += 1;
        }
        let w = a
            .get(*i)
            .ok_or_else(|| self.err(first.line, "address is missing"))?;
        *i += 1;
        parse_address(family, &w.text).map_err(|e| self.err(w.line, e))
    }

    fn connection(&mut self, name: Option<String>, line: u32) -> Result<Connection, ConfigError> {
        let mut c = Connection {
            name,
            loc: self.loc(line),
            ..Connection::default()
        };
        let mut host_lines: Vec<PathHost> = Vec::new();
        let ctx = Ctx {
            what: "'connection' section".into(),
            line,
        };
        while let Some(s) = self.stmt(Some(&ctx))? {
            match (s.kw(), s.end) {
                ("skip", End::Block) => self.skip_block(s.line())?,
                ("host", End::Semi) => host_lines.push(self.path_host(&s)?),
                ("path", _) => {
                    self.shape(&s, 0, 0, End::Block)?;
                    let p = self.path(s.line())?;
                    c.paths.push(p);
                }
                ("net", End::Block) => {
                    self.shape(&s, 0, 0, End::Block)?;
                    self.options("net", s.line(), &mut c.net)?;
                }
                ("disk", End::Block) => {
                    self.shape(&s, 0, 0, End::Block)?;
                    self.options("disk", s.line(), &mut c.disk)?;
                }
                _ => return Err(self.unknown(&s, "'connection'")),
            }
        }
        if !host_lines.is_empty() {
            if !c.paths.is_empty() {
                return Err(self.err(
                    line,
                    "a connection has either 'host' lines or 'path' sections, not both",
                ));
            }
            c.paths.push(Path {
                hosts: host_lines,
                loc: self.loc(line),
            });
        }
        Ok(c)
    }

    fn path(&mut self, line: u32) -> Result<Path, ConfigError> {
        let mut p = Path {
            loc: self.loc(line),
            ..Path::default()
        };
        let ctx = Ctx {
            what: "'path' section".into(),
            line,
        };
        while let Some(s) = self.stmt(Some(&ctx))? {
            match (s.kw(), s.end) {
                ("skip", End::Block) => self.skip_block(s.line())?,
                ("host", End::Semi) => p.hosts.push(self.path_host(&s)?),
                _ => return Err(self.unknown(&s, "'path'")),
            }
        }
        Ok(p)
    }

    /// `host NAME [address [AF] IP:PORT] [port P];`
    fn path_host(&self, s: &Stmt) -> Result<PathHost, ConfigError> {
        let a = s.args();
        let name = a
            .first()
            .ok_or_else(|| self.err(s.line(), "'host' needs a host name"))?;
        let mut ph = PathHost {
            host: name.text.clone(),
            loc: self.loc(s.line()),
            ..PathHost::default()
        };
        let mut i = 1;
        if a.get(i).is_some_and(|w| w.is("address")) {
            i += 1;
            ph.address = Some(self.address(a, &mut i)?);
        }
        if a.get(i).is_some_and(|w| w.is("port")) {
            let w = a
                .get(i + 1)
                .ok_or_else(|| self.err(a[i].line, "'port' needs a number"))?;
            ph.port = Some(parse_port(&w.text).map_err(|e| self.err(w.line, e))?);
            i += 2;
        }
        if i < a.len() {
            if a[i].is("via") {
                return Err(self.err(a[i].line, "DRBD proxy ('via proxy') is not supported"));
            }
            return Err(self.err(
                a[i - 1].line,
                format!("expected ';' after '{}'", show(&s.words[..=i])),
            ));
        }
        Ok(ph)
    }

    fn mesh(&mut self, line: u32) -> Result<Mesh, ConfigError> {
        let mut m = Mesh {
            loc: self.loc(line),
            ..Mesh::default()
        };
        let ctx = Ctx {
            what: "'connection-mesh' section".into(),
            line,
        };
        while let Some(s) = self.stmt(Some(&ctx))? {
            match (s.kw(), s.end) {
                ("skip", End::Block) => self.skip_block(s.line())?,
                ("hosts", End::Semi) => {
                    let a = self.shape(&s, 2, usize::MAX - 1, End::Semi)?;
                    m.hosts.extend(a.iter().map(|w| w.text.clone()));
                }
                ("net", End::Block) => {
                    self.shape(&s, 0, 0, End::Block)?;
                    self.options("net", s.line(), &mut m.net)?;
                }
                _ => return Err(self.unknown(&s, "'connection-mesh'")),
            }
        }
        if m.hosts.is_empty() {
            return Err(self.err(line, "'connection-mesh' needs a 'hosts' line"));
        }
        Ok(m)
    }
}

/// The volume 0 of `vols` (created if missing), for device/disk/meta-disk outside a `volume`.
fn volume0(vols: &mut Vec<Volume>, loc: Loc) -> &mut Volume {
    let idx = match vols.iter().position(|v| v.number == 0) {
        Some(i) => i,
        None => {
            vols.push(Volume {
                number: 0,
                loc,
                ..Volume::default()
            });
            vols.len() - 1
        }
    };
    &mut vols[idx]
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(format!("bad port '{s}'")),
    }
}

/// `IP:PORT` or `[IPv6]:PORT`, checked against `family` if one was written.
pub fn parse_address(family: Option<AddressFamily>, s: &str) -> Result<Address, String> {
    let bad = |why: &str| format!("bad address '{s}': {why}");
    let (ip, port, fam) = if let Some(rest) = s.strip_prefix('[') {
        let (ip, port) = rest
            .split_once("]:")
            .ok_or_else(|| bad("expected [IPV6]:PORT"))?;
        ip.parse::<Ipv6Addr>()
            .map_err(|_| bad("not an IPv6 address"))?;
        (ip, port, AddressFamily::Ipv6)
    } else {
        let (ip, port) = s.rsplit_once(':').ok_or_else(|| bad("expected IP:PORT"))?;
        if ip.contains(':') {
            return Err(bad("write IPv6 addresses as ipv6 [ADDR]:PORT"));
        }
        ip.parse::<Ipv4Addr>()
            .map_err(|_| bad("not an IPv4 address"))?;
        (ip, port, AddressFamily::Ipv4)
    };
    if let Some(f) = family {
        if f != fam {
            return Err(bad(&format!("not an {} address", f.name())));
        }
    }
    let port = parse_port(port).map_err(|e| bad(&e))?;
    Ok(Address {
        family: fam,
        ip: ip.to_string(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Resource {
        match parse_items(text, "t.res").unwrap().remove(0) {
            Item::Resource(r) => r,
            i => panic!("{i:?}"),
        }
    }

    fn err(text: &str) -> String {
        parse_items(text, "r0.res").unwrap_err().to_string()
    }

    #[test]
    fn addresses() {
        let a = parse_address(None, "127.0.0.1:7788").unwrap();
        assert_eq!(
            (a.family, a.ip.as_str(), a.port),
            (AddressFamily::Ipv4, "127.0.0.1", 7788)
        );
        let a = parse_address(Some(AddressFamily::Ipv6), "[fd00::1]:7000").unwrap();
        assert_eq!((a.family, a.ip.as_str()), (AddressFamily::Ipv6, "fd00::1"));
        assert_eq!(a.to_string(), "[fd00::1]:7000");
        for bad in [
            "1.2.3:7",
            "1.2.3.4",
            "1.2.3.4:0",
            "1.2.3.4:70000",
            "fd00::1:7",
            "[x]:1",
            "",
        ] {
            assert!(parse_address(None, bad).is_err(), "{bad}");
        }
        assert!(parse_address(Some(AddressFamily::Ipv6), "1.2.3.4:5").is_err());
        assert!(parse_address(Some(AddressFamily::Ipv4), "[::1]:5").is_err());
    }

    #[test]
    fn devices() {
        let r = one(
            "resource r { volume 0 { device /dev/drbd0 minor 0; disk a; }
              volume 1 { device minor 7; disk b; } volume 2 { device ox2; disk none; } }",
        );
        let d: Vec<_> = r
            .volumes
            .iter()
            .map(|v| v.device.clone().unwrap())
            .collect();
        assert_eq!(
            d[0],
            Device {
                name: "drbd0".into(),
                minor: Some(0)
            }
        );
        assert_eq!(
            d[1],
            Device {
                name: "drbd7".into(),
                minor: Some(7)
            }
        );
        assert_eq!(
            d[2],
            Device {
                name: "ox2".into(),
                minor: None
            }
        );
        assert_eq!(r.volumes[2].disk, Some(Disk::None));
        let r = one("resource r { disk \"none\"; }");
        assert_eq!(r.volumes[0].disk, Some(Disk::Bdev("none".into())));
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(
            err("resource r0 {\n on hw1 {\n  device ox0;\n  disk Malloc1\n  meta-disk internal;\n }\n}\n"),
            "r0.res:4: expected ';' after 'disk Malloc1'"
        );
        assert_eq!(
            err("resource r0 {\n on hw1 { disk Malloc1 }\n}"),
            "r0.res:2: expected ';' after 'disk Malloc1'"
        );
        assert_eq!(
            err("resource r0 {\n on hw1 {\n  bogus 1;\n }\n}"),
            "r0.res:3: unknown keyword 'bogus' in 'on hw1'"
        );
        assert_eq!(
            err("resource r0 {\n frob { }\n}"),
            "r0.res:2: unknown section 'frob' in 'resource r0'"
        );
        assert_eq!(
            err("resource r0 {\n"),
            "r0.res:1: missing '}' to close 'resource r0' (end of file)"
        );
        assert_eq!(err("}"), "r0.res:1: unexpected '}'");
        assert_eq!(err("resource r0 { ; }"), "r0.res:1: unexpected ';'");
        assert_eq!(
            err("resources r0 { }"),
            "r0.res:1: unknown section 'resources' in the top level"
        );
        assert!(err("resource r0 { on a { meta-disk /dev/sdc 0; } }")
            .contains("only internal metadata is supported"));
        assert!(err("resource r0 { on a { node-id 32; } }").contains("node-id must be"));
        assert!(err("resource r0 { on a { address 1.2.3.4; } }").contains("bad address"));
        assert!(err("resource r0 { on a { address sdp 1.2.3.4:5; } }").contains("not supported"));
        assert!(err("resource r0 { net { protocol D; } }").contains("protocol must be A, B or C"));
        assert!(err("resource r0 { on a b { } }").contains("only one host name"));
        assert!(err("resource r0 { on a { } on a { } }").contains("duplicate 'on a'"));
        assert!(err("resource r0 { volume 0 { disk a; disk b; } }").contains("duplicate 'disk'"));
        assert!(err("resource r0 { connection { host a via proxy on x; } }").contains("proxy"));
        assert!(
            err("resource r0 { connection { host a; path { host a; host b; } } }")
                .contains("not both")
        );
        assert!(err("global { frobnicate yes; }").contains("unknown keyword 'frobnicate'"));
        assert!(err("resource \"r0\" { \"on\" x { } }").contains("expected a keyword"));
    }

    #[test]
    fn skip_global_and_options() {
        let items = parse_items(
            "global { usage-count no; udev-always-use-vnr; }\nskip resource x { on a { junk; } }\n\
             common { net { protocol C; } disk { resync-rate 100M; } }\n\
             resource r { net { allow-two-primaries; ping-int 10; ping-int 11; } }",
            "t",
        )
        .unwrap();
        assert_eq!(items.len(), 2);
        let Item::Resource(r) = &items[1] else {
            panic!()
        };
        let net: Vec<_> = r.sections.net.iter().collect();
        assert_eq!(
            net,
            vec![("allow-two-primaries", "yes"), ("ping-int", "11")]
        );
    }
}
