//! The one error type of this module: every error names a file, a line and a reason.

use super::model::Loc;

/// `FILE:LINE: reason` (or `FILE: reason` when no line applies, such as an unreadable file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", where_(.file, *.line))]
pub struct ConfigError {
    pub file: String,
    /// 1-based; 0 when the error is about the file as a whole.
    pub line: u32,
    pub reason: String,
}

fn where_(file: &str, line: u32) -> String {
    if line == 0 {
        file.to_string()
    } else {
        format!("{file}:{line}")
    }
}

impl ConfigError {
    pub fn new(file: &str, line: u32, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_string(),
            line,
            reason: reason.into(),
        }
    }
    pub fn at(loc: &Loc, reason: impl Into<String>) -> ConfigError {
        ConfigError::new(&loc.file, loc.line, reason)
    }
}
