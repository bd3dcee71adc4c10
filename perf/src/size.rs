//! I/O sizes as users type them: `4096`, `4k`, `128K`, `1M`, `1MiB`, `512B`.

use crate::PerfError;

/// Parses a byte count with an optional binary suffix (k, m, g; optional "iB"/"B").
pub fn parse_size(text: &str) -> Result<u64, PerfError> {
    let bad = |why: &str| PerfError::usage(format!("invalid size '{text}': {why}"));
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits_end);
    if num.is_empty() {
        return Err(bad("expected a number such as 4096, 4k or 1M"));
    }
    let n: u64 = num.parse().map_err(|_| bad("number too large"))?;
    let unit: u64 = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(bad("unknown suffix (use k, M or G)")),
    };
    let bytes = n.checked_mul(unit).ok_or_else(|| bad("too large"))?;
    if bytes == 0 {
        return Err(bad("must be greater than 0"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("4k").unwrap(), 4096);
        assert_eq!(parse_size("128K").unwrap(), 131072);
        assert_eq!(parse_size("1M").unwrap(), 1 << 20);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("512B").unwrap(), 512);
        for bad in [
            "",
            "k",
            "0",
            "4x",
            "-4",
            "1.5M",
            "99999999999999999999",
            "17179869184G",
        ] {
            assert!(parse_size(bad).is_err(), "{bad} should be rejected");
        }
    }
}
