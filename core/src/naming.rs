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
