//! The reference patterns of docs/patterns: the files the book shows are
//! the files the tests run.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::chain::plugin_dir;
use crate::process::output_with_timeout;

/// `docs/patterns/<file>`.
pub fn pattern(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/patterns")
        .join(file)
}

/// The pattern's conflist: what `netsvc compose` (the command a user runs)
/// makes of `<name>.yaml`, checked to be the `<name>.conflist` the book shows.
pub fn composed(name: &str) -> Value {
    let spec = pattern(&format!("{name}.yaml"));
    let out = output_with_timeout(
        Command::new(plugin_dir().join("netsvc")).arg("compose").arg(&spec),
        Duration::from_secs(30),
    )
    .expect("run netsvc compose");
    assert!(
        out.status.success(),
        "netsvc compose {}: {}",
        spec.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = std::fs::read_to_string(pattern(&format!("{name}.conflist"))).expect("the pattern's conflist");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        shown,
        "docs/patterns/{name}.conflist is not what `netsvc compose` makes of its spec"
    );
    serde_json::from_str(&shown).expect("the conflist is JSON")
}
