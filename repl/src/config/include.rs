//! Reading files: `include` with `*`/`?` patterns in the file-name part, relative to the
//! including file. All file access goes through [`FileSource`], so everything but
//! [`parse_file`] stays pure.

use super::error::ConfigError;
use super::model::{Config, Loc};
use super::parser::{parse_items, Item};
use std::path::{Path, PathBuf};

/// Includes nested deeper than this are taken for a loop.
pub const MAX_INCLUDE_DEPTH: usize = 16;

/// Where file contents come from.
pub trait FileSource {
    fn read(&self, path: &Path) -> std::io::Result<String>;
    /// The names of the entries of directory `dir`.
    fn list_dir(&self, dir: &Path) -> std::io::Result<Vec<String>>;
}

/// The real file system.
pub struct Fs;

impl FileSource for Fs {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
    fn list_dir(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            if e.file_type().map(|t| !t.is_dir()).unwrap_or(false) {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(out)
    }
}

/// Parses `text` (named `file` in errors). `include` is an error here: it needs files.
pub fn parse_str(text: &str, file: &str) -> Result<Config, ConfigError> {
    let mut cfg = Config::default();
    let mut common_seen = None;
    for item in parse_items(text, file)? {
        if let Item::Include(_, loc) = &item {
            return Err(ConfigError::at(
                loc,
                "'include' needs a file to be relative to (use parse_file)",
            ));
        }
        add_item(&mut cfg, item, &mut common_seen)?;
    }
    Ok(cfg)
}

/// Reads `path` and everything it includes from the file system (syntax only; resolve with
/// [`post_parse`](super::post_parse())).
pub fn parse_file(path: &Path) -> Result<Config, ConfigError> {
    parse_file_with(path, &Fs)
}

/// [`parse_file`] over any [`FileSource`].
pub fn parse_file_with(path: &Path, src: &dyn FileSource) -> Result<Config, ConfigError> {
    let mut cfg = Config::default();
    let mut common_seen = None;
    load(path, src, 0, &mut cfg, &mut common_seen)?;
    Ok(cfg)
}

fn add_item(
    cfg: &mut Config,
    item: Item,
    common_seen: &mut Option<Loc>,
) -> Result<(), ConfigError> {
    match item {
        Item::Common(sec, loc) => {
            if let Some(prev) = common_seen {
                return Err(ConfigError::at(
                    &loc,
                    format!("only one 'common' section is allowed (another at {prev})"),
                ));
            }
            *common_seen = Some(loc);
            cfg.common = sec;
        }
        Item::Resource(r) => {
            if let Some(prev) = cfg.resource(&r.name) {
                return Err(ConfigError::at(
                    &r.loc,
                    format!("resource {} is already defined at {}", r.name, prev.loc),
                ));
            }
            cfg.resources.push(r);
        }
        Item::Include(..) => unreachable!("includes are expanded by the caller"),
    }
    Ok(())
}

fn load(
    path: &Path,
    src: &dyn FileSource,
    depth: usize,
    cfg: &mut Config,
    common_seen: &mut Option<Loc>,
) -> Result<(), ConfigError> {
    let name = path.display().to_string();
    let text = src
        .read(path)
        .map_err(|e| ConfigError::new(&name, 0, format!("cannot read: {e}")))?;
    for item in parse_items(&text, &name)? {
        match item {
            Item::Include(pattern, loc) => {
                if depth + 1 >= MAX_INCLUDE_DEPTH {
                    return Err(ConfigError::at(
                        &loc,
                        format!("includes nested more than {MAX_INCLUDE_DEPTH} deep (a loop?)"),
                    ));
                }
                let base = path.parent().unwrap_or(Path::new(""));
                for f in expand(base, &pattern, src, &loc)? {
                    load(&f, src, depth + 1, cfg, common_seen)?;
                }
            }
            item => add_item(cfg, item, common_seen)?,
        }
    }
    Ok(())
}

/// The files `pattern` names, relative to `base` unless absolute; sorted. A pattern with
/// wildcards may match nothing; a plain name is returned as is (reading it reports a miss).
fn expand(
    base: &Path,
    pattern: &str,
    src: &dyn FileSource,
    loc: &Loc,
) -> Result<Vec<PathBuf>, ConfigError> {
    let full = base.join(pattern);
    let (dir, file) = match (full.parent(), full.file_name()) {
        (Some(d), Some(f)) => (d.to_path_buf(), f.to_string_lossy().into_owned()),
        _ => {
            return Err(ConfigError::at(
                loc,
                format!("bad include pattern '{pattern}'"),
            ))
        }
    };
    if dir.to_string_lossy().contains(['*', '?', '[']) {
        return Err(ConfigError::at(
            loc,
            format!("include '{pattern}': wildcards are only supported in the file name"),
        ));
    }
    if !file.contains(['*', '?']) {
        return Ok(vec![full]);
    }
    let mut names: Vec<String> = match src.list_dir(&dir) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(ConfigError::at(
                loc,
                format!("include '{pattern}': cannot list {}: {e}", dir.display()),
            ))
        }
    };
    // Like glob(3): a leading '.' is only matched explicitly.
    names.retain(|n| glob_match(&file, n) && (file.starts_with('.') || !n.starts_with('.')));
    names.sort();
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

/// `*` matches any run of characters, `?` exactly one; everything else itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// An in-memory file system for tests.
    #[derive(Default)]
    pub struct MemFs(pub BTreeMap<PathBuf, String>);

    impl MemFs {
        pub fn with(files: &[(&str, &str)]) -> MemFs {
            MemFs(
                files
                    .iter()
                    .map(|(p, t)| (PathBuf::from(p), t.to_string()))
                    .collect(),
            )
        }
    }

    impl FileSource for MemFs {
        fn read(&self, path: &Path) -> std::io::Result<String> {
            self.0
                .get(path)
                .cloned()
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        }
        fn list_dir(&self, dir: &Path) -> std::io::Result<Vec<String>> {
            Ok(self
                .0
                .keys()
                .filter(|p| p.parent() == Some(dir))
                .filter_map(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
                .collect())
        }
    }

    #[test]
    fn globbing() {
        assert!(glob_match("*.res", "r0.res"));
        assert!(glob_match("*.res", ".res"));
        assert!(!glob_match("*.res", "r0.res~"));
        assert!(glob_match("r?.res", "r1.res"));
        assert!(!glob_match("r?.res", "r10.res"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("plain", "plain"));
    }

    #[test]
    fn includes_relative_sorted_and_nested() {
        let fs = MemFs::with(&[
            (
                "/etc/oxstor/oxstor.conf",
                "include \"global_common.conf\";\ninclude \"oxstor.d/*.res\";\n",
            ),
            (
                "/etc/oxstor/global_common.conf",
                "global { usage-count no; }\ncommon { net { protocol B; } }",
            ),
            ("/etc/oxstor/oxstor.d/r1.res", "resource r1 { }"),
            (
                "/etc/oxstor/oxstor.d/r0.res",
                "resource r0 { }\ninclude \"more/x.inc\";",
            ),
            ("/etc/oxstor/oxstor.d/more/x.inc", "resource r2 { }"),
            ("/etc/oxstor/oxstor.d/r0.res.bak", "garbage {"),
            ("/etc/oxstor/oxstor.d/.hidden.res", "garbage {"),
        ]);
        let cfg = parse_file_with(Path::new("/etc/oxstor/oxstor.conf"), &fs).unwrap();
        let names: Vec<_> = cfg.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["r0", "r2", "r1"]);
        assert_eq!(cfg.common.net.get("protocol"), Some("B"));
        assert_eq!(cfg.resources[1].loc.file, "/etc/oxstor/oxstor.d/more/x.inc");
    }

    #[test]
    fn include_errors() {
        let fs = MemFs::with(&[
            ("/a.conf", "include \"b.conf\";"),
            ("/loop.conf", "include \"loop.conf\";"),
            ("/none.conf", "include \"nothing/*.res\";\nresource r { }"),
            ("/bad.conf", "include \"x/*/y.res\";"),
            ("/dup.conf", "resource r { }\ninclude \"dup2.conf\";"),
            ("/dup2.conf", "\nresource r { }"),
            ("/c2.conf", "common { }\ninclude \"c3.conf\";"),
            ("/c3.conf", "common { }"),
        ]);
        let e = parse_file_with(Path::new("/a.conf"), &fs).unwrap_err();
        assert_eq!(e.file, "/b.conf");
        assert!(e.to_string().starts_with("/b.conf: cannot read"), "{e}");
        let e = parse_file_with(Path::new("/loop.conf"), &fs).unwrap_err();
        assert!(e.reason.contains("a loop"), "{e}");
        let cfg = parse_file_with(Path::new("/none.conf"), &fs).unwrap();
        assert_eq!(cfg.resources.len(), 1);
        let e = parse_file_with(Path::new("/bad.conf"), &fs).unwrap_err();
        assert!(e.reason.contains("only supported in the file name"), "{e}");
        let e = parse_file_with(Path::new("/dup.conf"), &fs).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/dup2.conf:2: resource r is already defined at /dup.conf:1"
        );
        let e = parse_file_with(Path::new("/c2.conf"), &fs).unwrap_err();
        assert!(e.reason.contains("only one 'common'"), "{e}");
        let e = parse_str("include \"x\";", "s").unwrap_err();
        assert!(e.reason.contains("parse_file"));
    }

    #[test]
    fn real_files() {
        let dir = std::env::temp_dir().join(format!("oxstor-config-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("d")).unwrap();
        std::fs::write(dir.join("main.conf"), "include \"d/*.res\";\n").unwrap();
        std::fs::write(dir.join("d/a.res"), "resource a { }\n").unwrap();
        std::fs::write(dir.join("d/b.res"), "resource b { }\n").unwrap();
        let cfg = parse_file(&dir.join("main.conf"));
        std::fs::remove_dir_all(&dir).unwrap();
        let names: Vec<_> = cfg.unwrap().resources.into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["a", "b"]);
    }
}
