//! Key validation. Every key segment becomes a file or directory name in the
//! file store, so segments are checked before any path is built.

use super::StoreError;

/// Longest segment: leaves room under NAME_MAX (255) for `.json` and temp prefixes.
pub const MAX_SEGMENT_LEN: usize = 200;
/// Most segments in one key (bounds directory depth).
pub const MAX_SEGMENTS: usize = 16;
/// Longest key.
pub const MAX_KEY_LEN: usize = 1024;

/// Checks one segment: non-empty, at most [`MAX_SEGMENT_LEN`] bytes, no `/`,
/// NUL, control characters or whitespace, does not start with `.` (that
/// excludes `.`, `..`, hidden and temp files) and does not end in `.json`
/// (which would collide with a document file).
pub fn validate_segment(segment: &str) -> Result<(), String> {
    if segment.is_empty() {
        return Err("empty segment".into());
    }
    if segment.len() > MAX_SEGMENT_LEN {
        return Err(format!("segment longer than {MAX_SEGMENT_LEN} bytes"));
    }
    if segment.starts_with('.') {
        return Err(format!("segment {segment:?} starts with '.'"));
    }
    if segment.ends_with(".json") {
        return Err(format!("segment {segment:?} ends with .json"));
    }
    if let Some(c) = segment
        .chars()
        .find(|c| *c == '/' || c.is_control() || c.is_whitespace())
    {
        return Err(format!("segment {segment:?} contains {c:?}"));
    }
    Ok(())
}

/// Checks a whole key and returns its segments.
pub fn validate_key(key: &str) -> Result<Vec<&str>, StoreError> {
    if key.len() > MAX_KEY_LEN {
        return Err(StoreError::invalid_key(key, format!("longer than {MAX_KEY_LEN} bytes")));
    }
    let segments: Vec<&str> = key.split('/').collect();
    if segments.len() > MAX_SEGMENTS {
        return Err(StoreError::invalid_key(
            key,
            format!("more than {MAX_SEGMENTS} segments"),
        ));
    }
    for s in &segments {
        validate_segment(s).map_err(|why| StoreError::invalid_key(key, why))?;
    }
    Ok(segments)
}

/// Joins segments into a key, validating each.
pub fn join(segments: &[&str]) -> Result<String, StoreError> {
    let key = segments.join("/");
    validate_key(&key)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_traversal_and_junk() {
        for bad in [
            "", "..", "a/../b", "a//b", "/a", "a/", ".hidden", "a\0b", "a b", "x.json", "a/b\n",
        ] {
            assert!(validate_key(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(validate_key(&"a".repeat(MAX_SEGMENT_LEN + 1)).is_err());
        assert!(validate_key(&vec!["a"; MAX_SEGMENTS + 1].join("/")).is_err());
    }

    #[test]
    fn accepts_normal_keys() {
        for ok in ["networks/net1", "networks/net-1/endpoints/abc123:eth0", "a.b/c_d@e"] {
            assert!(validate_key(ok).is_ok(), "{ok:?} should be accepted");
        }
    }
}
