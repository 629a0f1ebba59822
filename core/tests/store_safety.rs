//! The file store's state dir is ours alone (root): a dir someone else owns
//! or can write is refused, nothing in it is opened through a symbolic
//! link, and everything a store round makes is 0700 (folders) or 0600
//! (files).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use netsvc_core::cni::{Call, CniError, Env, NetConf};
use netsvc_core::store::{Change, FileStore, Store, StoreError, resolve_state_dir};
use serde_json::json;

/// A 0700 folder `state` in a fresh temp dir.
fn state_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("mkdir");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    (dir, state)
}

/// Both ways in refuse `state` with code 7 on `stateDir`, naming the path and `why`.
fn assert_refused(state: &Path, why: &str) {
    match FileStore::open(state) {
        Err(StoreError::InvalidStateDir { path, why: w }) => {
            assert_eq!(path, state.display().to_string());
            assert!(w.contains(why), "{w}");
        }
        other => panic!("{} accepted: {other:?}", state.display()),
    }
    let err = resolve_state_dir(state.to_str(), None).expect_err("resolve refuses it too");
    let cni = CniError::from(err);
    assert_eq!(cni.code, 7);
    assert!(cni.msg.contains("stateDir"), "{}", cni.msg);
    assert!(cni.msg.contains(&state.display().to_string()), "{}", cni.msg);
    assert!(cni.msg.contains(why), "{}", cni.msg);
    assert!(
        !state.join("kv").exists(),
        "nothing is written into a refused state dir"
    );
}

#[test]
fn a_state_dir_of_another_uid_is_refused() {
    let (_dir, state) = state_dir();
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).expect("chown");
    assert_refused(&state, "owned by uid 65534");
}

#[test]
fn a_state_dir_others_can_write_is_refused() {
    let (_dir, state) = state_dir();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    assert_refused(&state, "writable by group or others (mode 0777");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o770)).expect("chmod");
    assert_refused(&state, "writable by group or others (mode 0770");
    // Readable is not writable: accepted (with a warning).
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    FileStore::open(&state).expect("0755 opens");
}

#[test]
fn a_symlinked_state_dir_is_refused() {
    let (dir, state) = state_dir();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&state, &link).expect("symlink");
    assert_refused(&link, "symbolic link");
}

#[test]
fn a_missing_state_dir_is_made_0700() {
    let (_dir, state) = state_dir();
    let fresh = state.join("a/b");
    resolve_state_dir(fresh.to_str(), None).expect("a missing dir resolves");
    FileStore::open(&fresh).expect("open");
    assert_eq!(mode(&fresh), 0o700);
    assert_eq!(mode(&state.join("a")), 0o700);
}

/// A symbolic link planted where a document (or the log, or a lock) lives
/// is never followed: the store fails naming it, and the file it points to
/// is left as it was.
#[test]
fn symbolic_links_in_the_state_dir_are_not_followed() {
    let (dir, state) = state_dir();
    let s = FileStore::open(&state).expect("open");
    let key = "networks/n1/endpoints/a";
    s.put(key, &json!({"v": 1})).expect("put");
    let doc = state.join("kv/networks/n1/endpoints/a.json");
    let outside = dir.path().join("outside.json");
    let planted = br#"{"revision": 1, "value": {"v": "planted"}}"#;
    std::fs::write(&outside, planted).expect("outside");
    std::fs::remove_file(&doc).expect("rm doc");
    std::os::unix::fs::symlink(&outside, &doc).expect("symlink doc");

    let named = |e: StoreError| {
        let text = e.to_string();
        assert!(matches!(e, StoreError::Io { .. }), "{text}");
        assert!(text.contains(&doc.display().to_string()), "{text}");
        assert!(text.contains("symbolic link"), "{text}");
    };
    named(s.get(key).expect_err("get"));
    named(s.list("networks/n1/").expect_err("list"));
    named(s.put(key, &json!({"v": 2})).expect_err("put"));
    named(s.delete(key).expect_err("delete"));
    let v = json!({"v": 3});
    named(
        s.commit(&[Change {
            key,
            expected: Some(1),
            was: None,
            value: Some(&v),
        }])
        .expect_err("commit"),
    );
    assert_eq!(std::fs::read(&outside).expect("read outside"), planted);
    assert!(std::fs::symlink_metadata(&doc).expect("lstat").file_type().is_symlink());

    // The change log and the store lock alike.
    std::fs::remove_file(&doc).expect("rm link");
    for name in ["changes.log", ".store.lock"] {
        let file = state.join(name);
        let target = dir.path().join(format!("outside-{name}"));
        std::fs::write(&target, b"untouched").expect("target");
        std::fs::remove_file(&file).expect("rm");
        std::os::unix::fs::symlink(&target, &file).expect("symlink");
        let err = s.put(key, &json!({"v": 4})).expect_err(name).to_string();
        assert!(err.contains(name) && err.contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read(&target).expect("read"), b"untouched");
        std::fs::remove_file(&file).expect("rm link");
    }
    s.put(key, &json!({"v": 5}))
        .expect("the store works once the links are gone");
}

#[test]
fn everything_a_store_round_makes_is_private() {
    let (_dir, state) = state_dir();
    let s = FileStore::open(&state).expect("open");
    // A log about to compact (at the next revision, 21000), written 0644:
    // compaction rewrites it, and writes `.compacted`.
    let lines: String = (1..21_000)
        .map(|r| format!("{{\"kind\":\"put\",\"key\":\"old/k\",\"revision\":{r}}}\n"))
        .collect();
    std::fs::write(state.join("changes.log"), lines).expect("log");
    assert_eq!(mode(&state.join("changes.log")), 0o644);

    s.put("networks/n1", &json!({"name": "n1"})).expect("put");
    let (a, b) = (json!({"id": "a"}), json!({"id": "b"}));
    s.commit(&[
        Change {
            key: "networks/n1/endpoints/a",
            expected: None,
            was: None,
            value: Some(&a),
        },
        Change {
            key: "networks/n1/nodes/h1/firewall/settings",
            expected: None,
            was: None,
            value: Some(&b),
        },
    ])
    .expect("commit");
    let _lock = s.lock_network("n1", std::time::Duration::from_secs(1)).expect("lock");
    // A document that does not parse, quarantined by a list.
    std::fs::write(state.join("kv/networks/n1/endpoints/a.json"), b"{").expect("tear");
    assert_eq!(s.list("networks/").expect("list").len(), 2);
    assert!(state.join(".compacted").exists(), "the log was compacted");

    // A DEL the store could not take, queued in the state dir.
    let env = Env::from_lookup(|k| {
        match k {
            "CNI_COMMAND" => Some("DEL"),
            "CNI_CONTAINERID" => Some("c1"),
            "CNI_IFNAME" => Some("eth0"),
            _ => None,
        }
        .map(str::to_string)
    })
    .expect("env");
    let conf = NetConf::from_value(&json!({
        "cniVersion": "1.0.0", "name": "n1", "type": "netsvc-firewall",
        "stateDir": state.display().to_string(),
    }))
    .expect("conf");
    netsvc_core::runtime::pending::queue(&Call {
        env,
        conf,
        node: netsvc_core::node::NodeName::new("node", "n1").unwrap(),
    })
    .expect("queue");

    let mut seen = Vec::new();
    walk(&state, &mut seen);
    for name in [
        "changes.log",
        ".compacted",
        ".store.lock",
        "locks/n1.lock",
        "pending",
        "kv/networks/n1.json",
    ] {
        assert!(seen.iter().any(|p| p.ends_with(name)), "{name} not made: {seen:?}");
    }
}

/// Asserts every folder under `dir` is 0700 and every file 0600, owned by us.
fn walk(dir: &Path, seen: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        let meta = std::fs::symlink_metadata(&path).expect("lstat");
        assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw(), "{}", path.display());
        if meta.is_dir() {
            assert_eq!(meta.mode() & 0o7777, 0o700, "{}", path.display());
            walk(&path, seen);
        } else {
            assert!(meta.is_file(), "{} is neither file nor folder", path.display());
            assert_eq!(meta.mode() & 0o7777, 0o600, "{}", path.display());
        }
        seen.push(path);
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("meta").permissions().mode() & 0o7777
}
