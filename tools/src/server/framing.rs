//! Finding where one JSON value ends in a byte stream, without parsing it.
//!
//! Clients may send requests back to back with no delimiter (SPDK's framing), so the server
//! has to find value boundaries itself. Scanning bytes as they arrive (tracking bracket depth
//! and string/escape state) is linear in the input and lets the server enforce the size cap
//! on the *buffered* request before parsing anything; each complete value is then parsed in
//! one go with `serde_json::from_slice`. The scanner only delimits: a malformed value is
//! still cut somewhere and the parser reports the real error.

/// Incremental scanner over a growing buffer that starts at the current value.
#[derive(Debug, Default)]
pub struct Scanner {
    /// How far the buffer has been scanned.
    pos: usize,
    state: State,
    depth: u32,
    in_string: bool,
    escaped: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Only whitespace so far.
    #[default]
    Leading,
    /// Inside an object, array or top-level string.
    Delimited,
    /// A top-level number or literal: it ends at whitespace, punctuation or end of input.
    Scalar,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn ends_scalar(b: u8) -> bool {
    is_ws(b) || matches!(b, b'{' | b'}' | b'[' | b']' | b',' | b':' | b'"')
}

impl Scanner {
    /// Whether anything but whitespace has been seen.
    pub fn started(&self) -> bool {
        self.state != State::Leading
    }

    /// Scans new bytes of `buf`; returns the end offset of the first complete value.
    pub fn scan(&mut self, buf: &[u8]) -> Option<usize> {
        while self.pos < buf.len() {
            let b = buf[self.pos];
            self.pos += 1;
            match self.state {
                State::Leading => match b {
                    _ if is_ws(b) => {}
                    b'{' | b'[' => {
                        self.state = State::Delimited;
                        self.depth = 1;
                    }
                    b'"' => {
                        self.state = State::Delimited;
                        self.in_string = true;
                    }
                    _ => self.state = State::Scalar,
                },
                State::Scalar => {
                    if ends_scalar(b) {
                        self.pos -= 1;
                        return Some(self.pos);
                    }
                }
                State::Delimited if self.in_string => {
                    if self.escaped {
                        self.escaped = false;
                    } else if b == b'\\' {
                        self.escaped = true;
                    } else if b == b'"' {
                        self.in_string = false;
                        if self.depth == 0 {
                            return Some(self.pos);
                        }
                    }
                }
                State::Delimited => match b {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => {
                        self.depth -= 1;
                        if self.depth == 0 {
                            return Some(self.pos);
                        }
                    }
                    _ => {}
                },
            }
        }
        None
    }

    /// At end of input: a pending top-level scalar is complete (anything else is cut off).
    pub fn finish(&self, buf: &[u8]) -> Option<usize> {
        (self.state == State::Scalar).then_some(buf.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(input: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = input.to_vec();
        let mut s = Scanner::default();
        while let Some(end) = s.scan(&buf) {
            out.push(String::from_utf8_lossy(&buf[..end]).trim().to_string());
            buf.drain(..end);
            s = Scanner::default();
        }
        if let Some(end) = s.finish(&buf) {
            out.push(String::from_utf8_lossy(&buf[..end]).trim().to_string());
        }
        out
    }

    #[test]
    fn splits_concatenated_values() {
        assert_eq!(
            split(br#"{"a":"}{\"]"} [1,[2]]"x\"y" 42 true{}"#),
            [
                r#"{"a":"}{\"]"}"#,
                "[1,[2]]",
                r#""x\"y""#,
                "42",
                "true",
                "{}"
            ]
        );
    }

    #[test]
    fn waits_for_more_bytes_across_chunks() {
        let mut s = Scanner::default();
        let mut buf = br#"  {"method": "x", "p": {"#.to_vec();
        assert_eq!(s.scan(&buf), None);
        assert!(s.started());
        buf.extend_from_slice(b"}}\n");
        assert_eq!(s.scan(&buf), Some(buf.len() - 1));
        let mut ws = Scanner::default();
        assert_eq!(ws.scan(b" \n\t"), None);
        assert!(!ws.started());
    }
}
