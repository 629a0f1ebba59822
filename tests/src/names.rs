//! Unique, short namespace names.
//!
//! Names are `<prefix><pid hex>-<counter hex>`: unique across the parallel
//! test processes nextest runs, and short because later tests may derive
//! interface names (≤ 15 bytes) from them. The counter starts at a random
//! point of each process: a later test process given a pid an earlier one
//! had (a run starts thousands) then makes other names, so what a killed
//! test left under a name (a wireguard-go socket named after a container's
//! id, say) is not found by the next test that makes that name.

use std::path::Path;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: LazyLock<AtomicU32> = LazyLock::new(|| {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    AtomicU32::new(nanos % 0x400)
});

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

/// Prefixes the harness names namespaces with.
pub(crate) const PREFIXES: [&str; 2] = ["nd", "ct"];

/// The pid that made a harness namespace, read back from its name
/// (`<prefix><pid hex>-<counter hex>`); `None` for any other name.
pub(crate) fn owner_pid(name: &str) -> Option<u32> {
    let rest = PREFIXES.iter().find_map(|p| name.strip_prefix(p))?;
    let (pid, counter) = rest.split_once('-')?;
    let hex = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
    if !hex(pid) || !hex(counter) {
        return None;
    }
    u32::from_str_radix(pid, 16).ok()
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

    #[test]
    fn owner_pid_reads_only_harness_names() {
        assert_eq!(owner_pid("nd1f3a-0"), Some(0x1f3a));
        assert_eq!(owner_pid("ct2b-1c"), Some(0x2b));
        assert_eq!(owner_pid("netsvc-t-1-2"), None);
        assert_eq!(owner_pid("ndx-1"), None);
        assert_eq!(owner_pid("cni-1234"), None);
    }
}
