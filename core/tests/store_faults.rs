//! Faults of the file store stay local: a document that does not parse is
//! quarantined and reads as absent (its neighbours still list), and a full
//! disk fails a write cleanly, leaving every document as it was.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use netsvc_core::store::{Change, EventKind, FileStore, Store, StoreError};
use serde_json::json;

fn doc(root: &Path, key: &str) -> PathBuf {
    root.join("kv").join(format!("{key}.json"))
}

#[test]
fn a_truncated_document_is_quarantined_and_its_neighbours_still_list() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let s = FileStore::open(root).expect("open");
    let keys = [
        "networks/n1/endpoints/a",
        "networks/n1/endpoints/b",
        "networks/n1/endpoints/c",
    ];
    for k in keys {
        s.put(k, &json!({"id": k, "ips": ["10.0.0.2/24"]})).expect("put");
    }
    let before = s.revision().expect("revision");
    let bad = doc(root, keys[1]);
    let body = std::fs::read(&bad).expect("read");
    let torn = &body[..body.len() / 2];
    std::fs::write(&bad, torn).expect("truncate");
    // As a hand edit might leave it: quarantine makes it private again.
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    let listed: Vec<String> = s
        .list("networks/n1/endpoints/")
        .expect("one bad document does not fail the list")
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(listed, [keys[0], keys[2]]);
    assert!(!bad.exists(), "moved out of kv/");

    let q = s.quarantined();
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0].key, keys[1]);
    assert_eq!(q[0].path.parent(), Some(root.join("quarantine").as_path()));
    assert_eq!(
        q[0].path.file_name().and_then(|n| n.to_str()),
        Some(format!("networks%n1%endpoints%b.{}.json", q[0].revision).as_str())
    );
    assert!(q[0].why.as_deref().is_some_and(|w| w.contains("EOF")), "{q:?}");
    assert_eq!(std::fs::read(&q[0].path).expect("kept"), torn, "kept as it was found");
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o7777;
    assert_eq!((mode(&q[0].path), mode(&root.join("quarantine"))), (0o600, 0o700));

    // Watchers learn the key is gone.
    let events = s.changes_since("networks/n1/", before).expect("changes");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].kind, events[0].key.as_str(), events[0].revision),
        (EventKind::Delete, keys[1], q[0].revision)
    );
    assert!(s.revision().expect("revision") > before);

    assert_eq!(s.get(keys[1]).expect("get"), None);
    let rev = s.put(keys[1], &json!({"id": "b again"})).expect("a later put works");
    let again = s.get(keys[1]).expect("get").expect("present");
    assert_eq!((again.value, again.revision), (json!({"id": "b again"}), rev));
    assert_eq!(s.list("networks/n1/endpoints/").expect("list").len(), 3);
    assert_eq!(s.quarantined().len(), 1);
}

/// Garbage met by a read (get) or under the lock (compare-and-swap, a
/// commit's checks, delete): quarantined each time, then absent.
#[test]
fn garbage_is_quarantined_wherever_it_is_met() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let s = FileStore::open(root).expect("open");
    let garble = |key: &str| {
        s.put(key, &json!(1)).expect("put");
        std::fs::write(doc(root, key), b"\0\x01 not json").expect("garble");
    };
    garble("k/get");
    assert_eq!(s.get("k/get").expect("get"), None);
    garble("k/cas");
    s.compare_and_swap("k/cas", None, &json!(2))
        .expect("absent now: creates");
    garble("k/commit");
    let v = json!(3);
    s.commit(&[Change {
        key: "k/commit",
        expected: None,
        was: None,
        value: Some(&v),
    }])
    .expect("commit");
    garble("k/del");
    assert_eq!(s.delete("k/del").expect("delete"), None, "nothing readable was deleted");
    // A document that is JSON but not a document (no revision) too.
    s.put("k/shape", &json!(1)).expect("put");
    std::fs::write(doc(root, "k/shape"), br#"{"value": 1}"#).expect("reshape");
    assert_eq!(s.list("k/").expect("list").len(), 2);

    let keys: Vec<String> = s.quarantined().into_iter().map(|q| q.key).collect();
    assert_eq!(keys, ["k/get", "k/cas", "k/commit", "k/del", "k/shape"]);
    let value = |k| s.get(k).expect("get").map(|e| e.value);
    assert_eq!((value("k/cas"), value("k/commit")), (Some(json!(2)), Some(json!(3))));
}

/// A watcher hears of the quarantine as a delete.
#[test]
fn a_watch_sees_the_quarantine() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = FileStore::open(dir.path()).expect("open");
    let rev = s.put("n/a", &json!(1)).expect("put");
    std::fs::write(doc(dir.path(), "n/a"), b"{").expect("tear");
    let watcher = {
        let s = s.clone();
        std::thread::spawn(move || s.watch("n/", rev, Duration::from_secs(10)))
    };
    assert_eq!(s.get("n/a").expect("get"), None);
    let events = watcher.join().expect("join").expect("watch");
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].kind, events[0].key.as_str()), (EventKind::Delete, "n/a"));
}

/// Unmounts the test's tmpfs, even when the test panics.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Runs `f` on a thread with its own mount namespace (the host's mounts
/// never see the test's) in which a 64 KiB tmpfs is mounted on a temp dir.
fn on_small_tmpfs(f: impl FnOnce(&Path) + Send + 'static) {
    let thread = std::thread::spawn(move || {
        use nix::mount::{MsFlags, mount};
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("own mount namespace");
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .expect("private mounts");
        let dir = tempfile::tempdir().expect("tempdir");
        mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            MsFlags::empty(),
            Some("size=64k,mode=0700"),
        )
        .expect("mount tmpfs");
        let _mounted = Mounted(dir.path().to_path_buf());
        f(dir.path());
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// Fills the file system of `dir` until a write fails with ENOSPC.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("filler");
    let chunk = vec![0u8; 4096];
    loop {
        if let Err(e) = file.write_all(&chunk) {
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
            return path;
        }
    }
}

fn assert_no_space(e: StoreError, root: &Path) {
    let text = e.to_string();
    match e {
        StoreError::Io { path, source } => {
            assert_eq!(source.raw_os_error(), Some(libc::ENOSPC), "{text}");
            assert!(Path::new(&path).starts_with(root), "{text}");
        }
        _ => panic!("not an I/O error: {text}"),
    }
}

/// Every file under `dir` whose name starts with `.tmp.`.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(temp_files(&path));
        } else if entry.file_name().to_string_lossy().starts_with(".tmp.") {
            out.push(path);
        }
    }
    out
}

#[test]
fn a_full_disk_fails_the_write_and_keeps_the_old_document() {
    on_small_tmpfs(|mnt| {
        let root = mnt.join("state");
        let s = FileStore::open(&root).expect("open");
        let (a, b) = ("networks/n1/endpoints/a", "networks/n1/endpoints/b");
        let old = json!({"v": "old"});
        let ra = s.put(a, &old).expect("put");
        let filler = fill(mnt);
        // Larger than a page: the new document needs space the disk lacks.
        let big = json!({"v": "x".repeat(8192)});

        assert_no_space(s.put(a, &big).expect_err("put on a full disk"), &root);
        assert_no_space(
            s.commit(&[
                Change {
                    key: a,
                    expected: Some(ra),
                    was: Some(&old),
                    value: Some(&big),
                },
                Change {
                    key: b,
                    expected: None,
                    was: None,
                    value: Some(&big),
                },
            ])
            .expect_err("commit on a full disk"),
            &root,
        );
        let e = s.get(a).expect("get").expect("still there");
        assert_eq!((e.value, e.revision), (old.clone(), ra), "the old document, whole");
        assert_eq!(s.get(b).expect("get"), None);
        assert_eq!(temp_files(&root), Vec::<PathBuf>::new(), "no half-written file left");
        assert!(s.quarantined().is_empty());

        // Space back: the store goes on.
        std::fs::remove_file(filler).expect("rm filler");
        let r = s.put(a, &big).expect("put");
        assert_eq!(s.get(a).expect("get").map(|e| (e.value, e.revision)), Some((big, r)));
        assert_eq!(s.list("networks/n1/").expect("list").len(), 1);
    });
}
