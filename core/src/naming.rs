//! Stable short names for kernel objects derived from user names: readable,
//! within the kernel's limits, and distinct for distinct inputs.

/// 64-bit FNV-1a: a stable digest (unlike `DefaultHasher`, fixed across
/// toolchains), for names and for change detection, not for security.
pub fn fnv64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `fnv64` as 16 hex digits.
pub fn digest_hex(bytes: &[u8]) -> String {
    format!("{:016x}", fnv64(bytes))
}

/// A name for a kernel object built from a user's name: the name's letters,
/// digits and `_` (others become `_`), cut to `keep` bytes, then `_` and six
/// hex digits of the whole name's digest, so `web-a` and `web_a` stay apart.
pub fn object_name(name: &str, keep: usize) -> String {
    let clean: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .take(keep)
        .collect();
    format!("{clean}_{:06x}", fnv64(name.as_bytes()) & 0xff_ffff)
}

/// A name a user gave that is not one (what [`validate_name`] refuses).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} {value:?}: {why}")]
pub struct InvalidName {
    pub field: String,
    pub value: String,
    pub why: &'static str,
}

/// A word of a name: 1–`max` bytes of `[A-Za-z0-9_.-]`, alphanumeric at both ends.
pub fn is_word(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// A DNS-ish name: dot-separated labels of letters, digits, `-`, `_`, each
/// starting and ending alphanumeric and at most 63 bytes; 253 bytes in all.
pub fn validate_name(field: &str, name: &str) -> Result<(), InvalidName> {
    let ok = name.len() <= 253 && name.split('.').all(|l| is_word(l, 63));
    if ok {
        Ok(())
    } else {
        Err(InvalidName {
            field: field.to_string(),
            value: name.to_string(),
            why: "a name is dot-separated labels of [A-Za-z0-9_-], each starting and ending alphanumeric, ≤63 bytes (≤253 in all)",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_distinct_and_short() {
        assert_eq!(fnv64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(object_name("web-a", 20), object_name("web_a", 20));
        assert_eq!(object_name("web-a", 20), object_name("web-a", 20));
        assert!(object_name(&"x".repeat(100), 20).len() <= 27);
        assert!(object_name("a.b-c", 20).starts_with("a_b_c_"));
    }
}
