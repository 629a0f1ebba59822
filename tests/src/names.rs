//! Unique, short namespace names.
//!
//! Names are `<prefix><pid hex>-<counter hex>`: unique across the parallel
//! test processes nextest runs, and short because later tests may derive
//! interface names (≤ 15 bytes) from them.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other namespace of this host uses right now, e.g. `nd1f3a-0`.
///
/// The prefix should be 1–3 characters. A name left behind by a killed
/// earlier run with the same pid is skipped rather than reused.
pub fn unique_name(prefix: &str) -> String {
    let pid = std::process::id();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}{pid:x}-{n:x}");
        if !Path::new(crate::netns::NETNS_DIR).join(&name).exists() {
            return name;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_and_distinct() {
        let a = unique_name("nd");
        let b = unique_name("nd");
        assert_ne!(a, b);
        // pid_max is at most 2^22, so 6 hex digits; leave room for a suffix.
        assert!(a.len() <= 12, "{a}");
    }
}
