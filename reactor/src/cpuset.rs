//! Core masks as SPDK writes them: `0x3`, `3`, or a list `[0,1]` / `[0-3,6]`.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreMask(Vec<usize>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid core mask '{0}': {1}")]
pub struct CoreMaskError(String, &'static str);

impl CoreMask {
    pub fn cores(&self) -> &[usize] {
        &self.0
    }

    pub fn single(core: usize) -> Self {
        CoreMask(vec![core])
    }

    pub fn from_cores(mut cores: Vec<usize>) -> Result<Self, CoreMaskError> {
        cores.sort_unstable();
        cores.dedup();
        if cores.is_empty() {
            return Err(CoreMaskError(String::new(), "no cores selected"));
        }
        Ok(CoreMask(cores))
    }

    pub fn parse(text: &str) -> Result<Self, CoreMaskError> {
        let err = |why| CoreMaskError(text.to_string(), why);
        let t = text.trim();
        let mut cores = Vec::new();
        if let Some(list) = t.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (lo, hi) = match part.split_once('-') {
                    Some((a, b)) => (a.trim(), b.trim()),
                    None => (part, part),
                };
                let lo: usize = lo.parse().map_err(|_| err("not a core number"))?;
                let hi: usize = hi.parse().map_err(|_| err("not a core number"))?;
                if lo > hi || hi >= 1024 {
                    return Err(err("bad core range"));
                }
                cores.extend(lo..=hi);
            }
        } else {
            let hex = t
                .strip_prefix("0x")
                .or_else(|| t.strip_prefix("0X"))
                .unwrap_or(t);
            if hex.is_empty() || hex.len() > 32 {
                return Err(err("expected a hex mask such as 0x3"));
            }
            let bits = u128::from_str_radix(hex, 16).map_err(|_| err("not a hex number"))?;
            cores.extend((0..128).filter(|i| bits & (1u128 << i) != 0));
        }
        CoreMask::from_cores(cores).map_err(|_| err("no cores selected"))
    }
}

impl fmt::Display for CoreMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.iter().all(|&c| c < 128) {
            let bits: u128 = self.0.iter().fold(0, |m, &c| m | (1u128 << c));
            write!(f, "0x{bits:x}")
        } else {
            write!(f, "{:?}", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hex_and_lists() {
        assert_eq!(CoreMask::parse("0x3").unwrap().cores(), &[0, 1]);
        assert_eq!(CoreMask::parse("5").unwrap().cores(), &[0, 2]);
        assert_eq!(CoreMask::parse("[0-2,5]").unwrap().cores(), &[0, 1, 2, 5]);
        assert_eq!(CoreMask::parse("0x3").unwrap().to_string(), "0x3");
    }

    #[test]
    fn rejects_garbage() {
        assert!(CoreMask::parse("0x0").is_err());
        assert!(CoreMask::parse("zz").is_err());
        assert!(CoreMask::parse("[3-1]").is_err());
        assert!(CoreMask::parse("").is_err());
        assert!(CoreMask::parse("[99999]").is_err());
    }
}
