//! What only the file store does: revisions across reopen, private modes,
//! state-dir resolution, temp-file sweeping. The Store contract both
//! backends keep is in store_contract.rs.

use std::os::unix::fs::PermissionsExt;

use netsvc_core::store::{FileStore, Store, resolve_state_dir};
use serde_json::json;

#[test]
fn revisions_are_monotonic_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = FileStore::open(dir.path()).expect("open");
    let r1 = a.put("k", &json!(1)).expect("put");
    let b = FileStore::open(dir.path()).expect("reopen");
    let r2 = b.put("k2", &json!(1)).expect("put");
    assert!(r2 > r1);
    assert_eq!(b.revision().expect("rev"), r2);
}

#[test]
fn modes_are_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("state");
    let s = FileStore::open(&root).expect("open");
    s.put("networks/n1/endpoints/a", &json!({"secret": false}))
        .expect("put");
    let mode = |p: &std::path::Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&root.join("kv/networks/n1/endpoints")), 0o700);
    assert_eq!(mode(&root.join("kv/networks/n1/endpoints/a.json")), 0o600);
    assert_eq!(mode(&root.join("changes.log")), 0o600);
}

#[test]
fn state_dir_resolution() {
    assert_eq!(
        resolve_state_dir(None, None).expect("default"),
        std::path::Path::new("/run/netsvc")
    );
    assert_eq!(
        resolve_state_dir(None, Some("/e")).expect("env"),
        std::path::Path::new("/e")
    );
    assert_eq!(
        resolve_state_dir(None, Some("")).expect("empty env"),
        std::path::Path::new("/run/netsvc")
    );
    assert_eq!(
        resolve_state_dir(Some("/c"), Some("/e")).expect("config wins"),
        std::path::Path::new("/c")
    );
    for bad in ["relative", "/a/../b", ""] {
        let err = resolve_state_dir(Some(bad), None).expect_err(bad);
        let cni = netsvc_core::cni::CniError::from(err);
        assert_eq!(cni.code, 7);
        assert!(cni.msg.contains("stateDir"), "{}", cni.msg);
    }
}

#[test]
fn listing_sweeps_temp_files_of_dead_writers_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = FileStore::open(dir.path()).expect("open");
    s.put("networks/n1/endpoints/a", &json!(1)).expect("put");
    let docs = dir.path().join("kv/networks/n1/endpoints");
    // Above any pid_max (2^22): a writer that cannot be alive.
    let dead = docs.join(".tmp.4194305.0.b.json");
    let alive = docs.join(format!(".tmp.{}.0.c.json", std::process::id()));
    std::fs::write(&dead, b"{").expect("dead temp");
    std::fs::write(&alive, b"{").expect("live temp");
    let listed = s.list("networks/n1/").expect("list");
    assert_eq!(listed.len(), 1, "temp files are never documents");
    assert!(!dead.exists(), "a dead writer's temp file is swept");
    assert!(alive.exists(), "a live writer's temp file is left alone");
}
