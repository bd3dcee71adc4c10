//! NVMe Qualified Names (NQNs) and the fixed-width text fields they live in.
//!
//! NVMe Base 2.0 section 4.5 allows two forms:
//!
//! * `nqn.yyyy-mm.reverse.domain[:anything]`, where the date is a month in
//!   which the naming authority owned the domain;
//! * `nqn.2014-08.org.nvmexpress:uuid:xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`
//!   for hosts and subsystems without a domain of their own.
//!
//! An NQN is at most 223 bytes of UTF-8. On the wire it sits in a 256-byte
//! NUL-padded field; [`fixed_field_str`] reads such fields.

/// The well-known NQN of a discovery subsystem.
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

/// Longest valid NQN, in bytes.
pub const NQN_MAX_LEN: usize = 223;

const UUID_PREFIX: &str = "nqn.2014-08.org.nvmexpress:uuid:";

/// Why a string is not a valid NQN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NqnError {
    /// The NQN is empty.
    #[error("NQN is empty")]
    Empty,
    /// The NQN is longer than 223 bytes.
    #[error("NQN is {0} bytes long; at most 223 are allowed")]
    TooLong(usize),
    /// The NQN does not start with `nqn.`.
    #[error("NQN does not start with \"nqn.\"")]
    MissingPrefix,
    /// The date after `nqn.` is not `yyyy-mm`.
    #[error("NQN date is not of the form yyyy-mm")]
    InvalidDate,
    /// The reverse domain name is missing or malformed.
    #[error("NQN reverse domain name is missing or malformed")]
    InvalidDomain,
    /// The UUID form has a malformed UUID.
    #[error("NQN UUID is not of the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx")]
    InvalidUuid,
    /// The NQN contains a control character (including NUL).
    #[error("NQN contains a control character")]
    ControlCharacter,
}

/// Checks `nqn` against the NQN grammar.
pub fn validate_nqn(nqn: &str) -> Result<(), NqnError> {
    if nqn.is_empty() {
        return Err(NqnError::Empty);
    }
    if nqn.len() > NQN_MAX_LEN {
        return Err(NqnError::TooLong(nqn.len()));
    }
    if nqn.chars().any(char::is_control) {
        return Err(NqnError::ControlCharacter);
    }
    if let Some(uuid) = nqn.strip_prefix(UUID_PREFIX) {
        return if is_uuid(uuid) {
            Ok(())
        } else {
            Err(NqnError::InvalidUuid)
        };
    }
    let rest = nqn.strip_prefix("nqn.").ok_or(NqnError::MissingPrefix)?;
    let (date, rest) = rest.split_at_checked(7).ok_or(NqnError::InvalidDate)?;
    if !is_year_month(date) {
        return Err(NqnError::InvalidDate);
    }
    let domain_and_user = rest.strip_prefix('.').ok_or(NqnError::InvalidDomain)?;
    let domain = domain_and_user
        .split_once(':')
        .map_or(domain_and_user, |(domain, _user_part)| domain);
    if is_reverse_domain(domain) {
        Ok(())
    } else {
        Err(NqnError::InvalidDomain)
    }
}

fn is_year_month(date: &str) -> bool {
    let bytes = date.as_bytes();
    let [y0, y1, y2, y3, b'-', m0, m1] = bytes else {
        return false;
    };
    let digits = [*y0, *y1, *y2, *y3, *m0, *m1];
    if !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let month = (m0 - b'0') * 10 + (m1 - b'0');
    (1..=12).contains(&month)
}

fn is_reverse_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn is_uuid(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Why a fixed-width text field could not be read as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// The bytes before the first NUL are not UTF-8.
    #[error("text field is not valid UTF-8")]
    NotUtf8,
}

/// Reads a NUL-padded fixed-width field: the text up to the first NUL, or
/// the whole field if there is none.
pub fn fixed_field_str(field: &[u8]) -> Result<&str, FieldError> {
    let len = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    let text = field.get(..len).unwrap_or_default();
    std::str::from_utf8(text).map_err(|_| FieldError::NotUtf8)
}

/// Reads a space-padded ASCII field (Serial Number, Model Number, Firmware
/// Revision): [`fixed_field_str`] with trailing spaces removed.
pub fn space_padded_field_str(field: &[u8]) -> Result<&str, FieldError> {
    fixed_field_str(field).map(|text| text.trim_end_matches(' '))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_forms() {
        for nqn in [
            DISCOVERY_NQN,
            "nqn.2014-08.com.example:nvme:nvm-subsystem-sn-d78432",
            "nqn.2016-06.io.spdk:cnode1",
            "nqn.2024-01.io.oxstor:disk0",
            "nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
            "nqn.2014-08.org.nvmexpress:uuid:F81D4FAE-7DEC-11D0-A765-00A0C91E6BF6",
            "nqn.2021-12.example",
        ] {
            assert_eq!(validate_nqn(nqn), Ok(()), "{nqn}");
        }
    }

    #[test]
    fn rejects_malformed() {
        let cases = [
            ("", NqnError::Empty),
            ("iqn.2014-08.com.example:x", NqnError::MissingPrefix),
            ("nqn.", NqnError::InvalidDate),
            ("nqn.14-08.com.example", NqnError::InvalidDate),
            ("nqn.2014-13.com.example", NqnError::InvalidDate),
            ("nqn.2014-00.com.example", NqnError::InvalidDate),
            ("nqn.2014_08.com.example", NqnError::InvalidDate),
            ("nqn.2014-08", NqnError::InvalidDomain),
            ("nqn.2014-08.", NqnError::InvalidDomain),
            ("nqn.2014-08:com", NqnError::InvalidDomain),
            ("nqn.2014-08.com..example", NqnError::InvalidDomain),
            ("nqn.2014-08.:user", NqnError::InvalidDomain),
            (
                "nqn.2014-08.org.nvmexpress:uuid:not-a-uuid",
                NqnError::InvalidUuid,
            ),
            (
                "nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf",
                NqnError::InvalidUuid,
            ),
            ("nqn.2014-08.com.example:a\0b", NqnError::ControlCharacter),
            ("nqn.2014-08.é.example", NqnError::InvalidDomain),
        ];
        for (nqn, error) in cases {
            assert_eq!(validate_nqn(nqn), Err(error), "{nqn:?}");
        }
    }

    #[test]
    fn length_limit_is_223_bytes() {
        let base = "nqn.2014-08.com.example:";
        let exact = format!("{base}{}", "a".repeat(NQN_MAX_LEN - base.len()));
        assert_eq!(validate_nqn(&exact), Ok(()));
        let over = format!("{exact}a");
        assert_eq!(validate_nqn(&over), Err(NqnError::TooLong(224)));
    }

    #[test]
    fn reads_fixed_fields() {
        let mut field = [0u8; 16];
        field[..5].copy_from_slice(b"hello");
        assert_eq!(fixed_field_str(&field), Ok("hello"));
        assert_eq!(fixed_field_str(b"full"), Ok("full"));
        assert_eq!(fixed_field_str(&[]), Ok(""));
        assert_eq!(fixed_field_str(&[0xFF, 0]), Err(FieldError::NotUtf8));
        assert_eq!(space_padded_field_str(b"SN123   "), Ok("SN123"));
    }
}
