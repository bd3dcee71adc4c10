//! Printing a resolved resource in drbd.conf syntax, like `drbdadm dump`: the implicit
//! connection and the derived node-ids are written out, so the text parses back to an equal
//! resource.

use super::lexer::quote;
use super::model::{Disk, Host, Options, Resource, Volume};
use std::fmt::Write;

const IND: &str = "    ";

/// The resource as drbd.conf text (ends with a newline).
pub fn dump(res: &Resource) -> String {
    let mut out = String::new();
    let w = &mut out;
    let from = format!("{}:{}", res.loc.file, res.loc.line).replace(['\n', '\r'], " ");
    let _ = writeln!(w, "# resolved from {from}");
    let _ = writeln!(w, "resource {} {{", q(&res.name));
    for (name, opts) in res.sections.iter() {
        options(w, 1, name, opts);
    }
    // Only an unresolved resource still has these.
    for v in &res.volumes {
        volume(w, 1, v);
    }
    for h in &res.hosts {
        host(w, h);
    }
    for c in &res.connections {
        let _ = match &c.name {
            Some(n) => writeln!(w, "{IND}connection {} {{", q(n)),
            None => writeln!(w, "{IND}connection {{"),
        };
        for p in &c.paths {
            let _ = writeln!(w, "{IND}{IND}path {{");
            for e in &p.hosts {
                let _ = write!(w, "{IND}{IND}{IND}host {}", q(&e.host));
                if let Some(a) = &e.address {
                    let _ = write!(w, " address {} {a}", a.family.name());
                }
                if let Some(p) = e.port {
                    let _ = write!(w, " port {p}");
                }
                let _ = writeln!(w, ";");
            }
            let _ = writeln!(w, "{IND}{IND}}}");
        }
        options(w, 2, "net", &c.net);
        options(w, 2, "disk", &c.disk);
        let _ = writeln!(w, "{IND}}}");
    }
    for m in &res.meshes {
        let _ = writeln!(w, "{IND}connection-mesh {{");
        let hosts: Vec<String> = m.hosts.iter().map(|h| q(h)).collect();
        let _ = writeln!(w, "{IND}{IND}hosts {};", hosts.join(" "));
        options(w, 2, "net", &m.net);
        let _ = writeln!(w, "{IND}}}");
    }
    let _ = writeln!(w, "}}");
    out
}

fn q(s: &str) -> String {
    quote(s, false)
}

fn options(w: &mut String, depth: usize, name: &str, opts: &Options) {
    if opts.is_empty() {
        return;
    }
    let ind = IND.repeat(depth);
    let _ = writeln!(w, "{ind}{name} {{");
    for (k, v) in opts.iter() {
        let _ = writeln!(w, "{ind}{IND}{k} {};", q(v));
    }
    let _ = writeln!(w, "{ind}}}");
}

fn host(w: &mut String, h: &Host) {
    let _ = writeln!(w, "{IND}on {} {{", q(&h.name));
    if let Some(id) = h.node_id {
        let _ = writeln!(w, "{IND}{IND}node-id {id};");
    }
    if let Some(a) = &h.address {
        let _ = writeln!(w, "{IND}{IND}address {} {a};", a.family.name());
    }
    for v in &h.volumes {
        volume(w, 2, v);
    }
    let _ = writeln!(w, "{IND}}}");
}

fn volume(w: &mut String, depth: usize, v: &Volume) {
    let ind = IND.repeat(depth);
    let _ = writeln!(w, "{ind}volume {} {{", v.number);
    if let Some(d) = &v.device {
        // A name that itself starts with /dev/ gets it back, since parsing strips one.
        let name = if d.name.starts_with("/dev/") {
            format!("/dev/{}", d.name)
        } else {
            d.name.clone()
        };
        let _ = match d.minor {
            Some(m) => writeln!(w, "{ind}{IND}device {} minor {m};", q(&name)),
            None => writeln!(w, "{ind}{IND}device {};", q(&name)),
        };
    }
    match &v.disk {
        Some(Disk::None) => {
            let _ = writeln!(w, "{ind}{IND}disk none;");
        }
        Some(Disk::Bdev(b)) => {
            let _ = writeln!(w, "{ind}{IND}disk {};", quote(b, b == "none"));
            let _ = writeln!(w, "{ind}{IND}meta-disk internal;");
        }
        None => {}
    }
    let _ = writeln!(w, "{ind}}}");
}
