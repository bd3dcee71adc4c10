//! Resource files in drbd.conf syntax, resolved like drbdadm does it.
//!
//! - [`lexer`]: words, quoted strings, braces, `;`, `#` comments;
//! - [`parser`]: one file's text into top-level items (syntax errors with file:line);
//! - [`include`]: files and `include "glob";` ([`parse_file`] is the only function that
//!   touches the file system; [`parse_file_with`] takes any [`FileSource`]);
//! - [`model`]: [`Config`], [`Resource`], [`Host`], [`Connection`], ...;
//! - [`post_parse`](mod@post_parse): drbdadm's post_parse (mesh, implicit connection, implicit
//!   node-ids from [`crc`]'s drbd-style crc32c) and validation;
//! - [`dump`](mod@dump): a resolved resource back as drbd.conf text;
//! - [`plan`]: the daemon's JSON-RPC calls for `oxadm up`, `down`, `attach`, ...
//!
//! ```
//! use oxstor_repl::config::{load_str, plan_up};
//! let cfg = load_str(
//!     "resource r0 {
//!        on hw1 { device ox0; disk Raid5; address 127.0.0.1:7788; meta-disk internal; }
//!        on hw2 { device ox0; disk Malloc1; address 127.0.0.2:7788; meta-disk internal; }
//!      }",
//!     "r0.res",
//! )
//! .unwrap();
//! let r0 = cfg.resource("r0").unwrap();
//! assert_eq!(r0.host("hw2").unwrap().node_id, Some(0));
//! assert_eq!(plan_up(r0, "hw1").unwrap()[0].method, "repl_new_resource");
//! ```

pub mod crc;
pub mod dump;
pub mod error;
pub mod include;
pub mod lexer;
pub mod model;
pub mod parser;
pub mod plan;
pub mod post_parse;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;

pub use dump::dump;
pub use error::ConfigError;
pub use include::{parse_file, parse_file_with, parse_str, FileSource};
pub use model::{
    Address, AddressFamily, Config, Connection, Device, Disk, Host, Loc, Mesh, Options, Path,
    PathHost, Resource, Sections, Volume,
};
pub use plan::{
    plan_attach, plan_connect, plan_create_md, plan_detach, plan_disconnect, plan_down,
    plan_new_current_uuid, plan_primary, plan_secondary, plan_status, plan_up, plan_verify,
    RpcCall,
};
pub use post_parse::{post_parse, post_parse_resource};

/// [`parse_file`] then [`post_parse`]: a resolved configuration.
pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
    let mut cfg = parse_file(path)?;
    post_parse(&mut cfg)?;
    Ok(cfg)
}

/// [`parse_str`] then [`post_parse`]: a resolved configuration.
pub fn load_str(text: &str, file: &str) -> Result<Config, ConfigError> {
    let mut cfg = parse_str(text, file)?;
    post_parse(&mut cfg)?;
    Ok(cfg)
}
