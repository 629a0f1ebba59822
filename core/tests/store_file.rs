//! FileStore semantics: CAS, prefix listing, idempotent delete, watch, locks, modes.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use netsvc_core::store::{EventKind, FileStore, Store, StoreError, resolve_state_dir};
use serde_json::json;

fn store() -> (tempfile::TempDir, FileStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = FileStore::open(dir.path().join("state")).expect("open");
    (dir, s)
}

#[test]
fn cas_semantics() {
    let (_d, s) = store();
    let k = "networks/n1/endpoints/c1:eth0";
    // Absent expected: creates once, then conflicts.
    let r1 = s.compare_and_swap(k, None, &json!({"v": 1})).expect("create");
    let err = s.compare_and_swap(k, None, &json!({"v": 2})).expect_err("exists");
    assert!(matches!(err, StoreError::Conflict { actual: Some(a), .. } if a == r1));
    // Matching revision: swaps; stale revision: conflicts and leaves the value.
    let r2 = s.compare_and_swap(k, Some(r1), &json!({"v": 2})).expect("swap");
    assert!(r2 > r1);
    assert!(s.compare_and_swap(k, Some(r1), &json!({"v": 3})).is_err());
    let e = s.get(k).expect("get").expect("present");
    assert_eq!((e.value, e.revision), (json!({"v": 2}), r2));
    // compare_and_delete: stale fails, current deletes.
    assert!(s.compare_and_delete(k, r1).is_err());
    s.compare_and_delete(k, r2).expect("cad");
    assert!(s.get(k).expect("get").is_none());
    // CAS on a wrong revision of an absent key conflicts with actual None.
    let err = s.compare_and_swap(k, Some(r2), &json!(1)).expect_err("absent");
    assert!(matches!(err, StoreError::Conflict { actual: None, .. }));
    // Conflicts map to CNI "try again".
    assert_eq!(netsvc_core::cni::CniError::from(err).code, 11);
}

#[test]
fn list_by_prefix() {
    let (_d, s) = store();
    for k in [
        "networks/n1",
        "networks/n1/endpoints/a",
        "networks/n1/endpoints/b",
        "networks/n10/endpoints/c",
        "other/x",
    ] {
        s.put(k, &json!(k)).expect("put");
    }
    let keys = |p: &str| s.list(p).expect("list").into_iter().map(|e| e.key).collect::<Vec<_>>();
    assert_eq!(
        keys("networks/n1/endpoints/"),
        ["networks/n1/endpoints/a", "networks/n1/endpoints/b"]
    );
    assert_eq!(
        keys("networks/n1/"),
        ["networks/n1/endpoints/a", "networks/n1/endpoints/b"]
    );
    assert_eq!(keys("networks/n1").len(), 4); // string prefix, like etcd: includes n10
    assert_eq!(keys("").len(), 5);
    assert!(keys("nothing/here/").is_empty());
    assert!(s.list("../etc/").is_err());
    let e = &s.list("other/").expect("list")[0];
    assert_eq!(e.value, json!("other/x"));
}

#[test]
fn delete_is_idempotent() {
    let (_d, s) = store();
    let k = "networks/n1/endpoints/a";
    assert_eq!(s.delete(k).expect("absent delete"), None);
    s.put(k, &json!(1)).expect("put");
    assert!(s.delete(k).expect("delete").is_some());
    assert_eq!(s.delete(k).expect("again"), None);
    assert!(s.get(k).expect("get").is_none());
    assert!(s.list("networks/").expect("list").is_empty());
}

#[test]
fn watch_sees_put_and_delete() {
    let (_d, s) = store();
    let start = s.revision().expect("rev");
    s.put("networks/n1/endpoints/a", &json!(1)).expect("put");
    s.put("networks/n2/endpoints/b", &json!(1)).expect("put other");
    s.delete("networks/n1/endpoints/a").expect("delete");
    let events = s.watch("networks/n1/", start, Duration::from_secs(1)).expect("watch");
    let kinds: Vec<_> = events.iter().map(|e| (e.kind, e.key.as_str())).collect();
    assert_eq!(
        kinds,
        [
            (EventKind::Put, "networks/n1/endpoints/a"),
            (EventKind::Delete, "networks/n1/endpoints/a")
        ]
    );
    assert!(events[0].revision < events[1].revision);
    // From the last revision: nothing new, returns empty after the timeout.
    let last = s.revision().expect("rev");
    assert!(
        s.watch("networks/", last, Duration::from_millis(50))
            .expect("watch")
            .is_empty()
    );
    // A writer in another thread wakes a blocked watcher.
    std::thread::scope(|sc| {
        sc.spawn(|| {
            std::thread::sleep(Duration::from_millis(100));
            s.put("networks/n1/x", &json!(2)).expect("put");
        });
        let ev = s.watch("networks/n1/", last, Duration::from_secs(5)).expect("watch");
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].key, "networks/n1/x");
    });
}

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
fn network_lock_is_exclusive_and_times_out() {
    let (_d, s) = store();
    let g = s.lock_network("n1", Duration::from_secs(1)).expect("lock");
    let err = s.lock_network("n1", Duration::from_millis(50)).expect_err("held");
    assert!(matches!(err, StoreError::Timeout { .. }));
    assert_eq!(netsvc_core::cni::CniError::from(err).code, 11);
    // Another network is independent.
    let _other = s.lock_network("n2", Duration::from_millis(50)).expect("other network");
    drop(g);
    let _again = s.lock_network("n1", Duration::from_millis(50)).expect("released");
    assert!(s.lock_network("../x", Duration::from_millis(1)).is_err());
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
fn rejects_bad_keys() {
    let (_d, s) = store();
    for bad in ["../x", "a/../../b", "a/.tmp", "a\0b", "", "a//b", "x/y.json"] {
        assert!(s.put(bad, &json!(1)).is_err(), "{bad:?}");
        assert!(s.get(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn state_dir_resolution() {
    assert_eq!(
        resolve_state_dir(None, None).expect("default"),
        std::path::Path::new("/var/lib/netsvc")
    );
    assert_eq!(
        resolve_state_dir(None, Some("/e")).expect("env"),
        std::path::Path::new("/e")
    );
    assert_eq!(
        resolve_state_dir(None, Some("")).expect("empty env"),
        std::path::Path::new("/var/lib/netsvc")
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
