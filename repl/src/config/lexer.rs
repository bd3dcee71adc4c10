//! Tokens of drbd.conf: words, quoted strings, `{`, `}` and `;`; `#` starts a comment.

use super::error::ConfigError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKind {
    /// A bare word or a quoted string (with escapes resolved).
    Word {
        text: String,
        quoted: bool,
    },
    Open,
    Close,
    Semi,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub line: u32,
}

/// Characters that end a bare word.
pub fn is_special(c: char) -> bool {
    c.is_whitespace() || matches!(c, '{' | '}' | ';' | '"' | '#')
}

/// Splits `text` into tokens. `file` only names the file in errors.
pub fn tokenize(text: &str, file: &str) -> Result<Vec<Token>, ConfigError> {
    let mut out = Vec::new();
    let mut line: u32 = 1;
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            '\n' => {
                line = line.saturating_add(1);
                chars.next();
            }
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' => {
                while let Some(&c) = chars.peek() {
                    if c == '\n' {
                        break;
                    }
                    chars.next();
                }
            }
            '{' | '}' | ';' => {
                chars.next();
                let kind = match c {
                    '{' => TokenKind::Open,
                    '}' => TokenKind::Close,
                    _ => TokenKind::Semi,
                };
                out.push(Token { kind, line });
            }
            '"' => {
                chars.next();
                let start = line;
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => {
                            return Err(ConfigError::new(file, start, "unterminated quoted string"))
                        }
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            None => {
                                return Err(ConfigError::new(
                                    file,
                                    start,
                                    "unterminated quoted string",
                                ))
                            }
                            Some(e) => {
                                if e == '\n' {
                                    line = line.saturating_add(1);
                                }
                                s.push(e)
                            }
                        },
                        Some(ch) => {
                            if ch == '\n' {
                                line = line.saturating_add(1);
                            }
                            s.push(ch)
                        }
                    }
                }
                out.push(Token {
                    kind: TokenKind::Word {
                        text: s,
                        quoted: true,
                    },
                    line: start,
                });
            }
            _ => {
                let mut s = String::new();
                while let Some(&c) = chars.peek() {
                    if is_special(c) {
                        break;
                    }
                    s.push(c);
                    chars.next();
                }
                out.push(Token {
                    kind: TokenKind::Word {
                        text: s,
                        quoted: false,
                    },
                    line,
                });
            }
        }
    }
    Ok(out)
}

/// Writes `s` so that [`tokenize`] reads it back as one word with the same text; `force`
/// quotes even a plain word (for a bdev literally named `none`, say).
pub fn quote(s: &str, force: bool) -> String {
    if !force && !s.is_empty() && !s.chars().any(is_special) && !s.contains('\\') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<(String, bool, u32)> {
        tokenize(text, "t")
            .unwrap()
            .into_iter()
            .map(|t| match t.kind {
                TokenKind::Word { text, quoted } => (text, quoted, t.line),
                TokenKind::Open => ("{".into(), false, t.line),
                TokenKind::Close => ("}".into(), false, t.line),
                TokenKind::Semi => (";".into(), false, t.line),
            })
            .collect()
    }

    #[test]
    fn words_braces_comments_lines() {
        let w = words("resource r0 { # comment ; {\n  disk \"a b\";\n}\n");
        let expect: Vec<(String, bool, u32)> = vec![
            ("resource".into(), false, 1),
            ("r0".into(), false, 1),
            ("{".into(), false, 1),
            ("disk".into(), false, 2),
            ("a b".into(), true, 2),
            (";".into(), false, 2),
            ("}".into(), false, 3),
        ];
        assert_eq!(w, expect);
    }

    #[test]
    fn addresses_are_single_words() {
        let w = words("address ipv6 [fd00::1]:7788;address 1.2.3.4:1;");
        assert_eq!(w[2].0, "[fd00::1]:7788");
        assert_eq!(w[5].0, "1.2.3.4:1");
    }

    #[test]
    fn escapes_and_unterminated() {
        let w = words(r#""a\"b\\c""#);
        assert_eq!(w[0].0, "a\"b\\c");
        let e = tokenize("x\n\"abc", "f.res").unwrap_err();
        assert_eq!(e.to_string(), "f.res:2: unterminated quoted string");
    }

    #[test]
    fn quote_round_trips() {
        for s in [
            "plain",
            "",
            "a b",
            "x;y",
            "q\"q",
            "back\\slash",
            "#",
            "{",
            "multi\nline",
        ] {
            let q = quote(s, false);
            let t = tokenize(&q, "t").unwrap();
            assert_eq!(t.len(), 1, "{q}");
            match &t[0].kind {
                TokenKind::Word { text, .. } => assert_eq!(text, s),
                k => panic!("{k:?}"),
            }
        }
        assert_eq!(quote("none", true), "\"none\"");
        assert_eq!(quote("ox0", false), "ox0");
    }
}
