//! Cross-process guarantees of the FileStore: writers are separate
//! processes (the `netsvc-store-writer` binary), as plugins are.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netsvc_core::store::{FileStore, Store};
use netsvc_tests::store_writer::{BIG, COUNTER, big_doc};
use serde_json::json;

/// Starts one writer process of `role` on the store at `dir`.
fn spawn(role: &str, dir: &Path, n: u64) -> Child {
    Command::new(env!("CARGO_BIN_EXE_netsvc-store-writer"))
        .arg(role)
        .arg(dir)
        .arg(n.to_string())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn netsvc-store-writer")
}

fn run_writers(role: &str, procs: u64, iters: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let children: Vec<Child> = (0..procs).map(|_| spawn(role, dir.path(), iters)).collect();
    for mut c in children {
        assert!(c.wait().expect("wait").success(), "a writer failed");
    }
    let s = FileStore::open(dir.path()).expect("open");
    let n = s.get(COUNTER).expect("get").expect("counter").value["n"].as_u64();
    assert_eq!(n, Some(procs * iters), "lost updates");
}

#[test]
fn twenty_cas_writer_processes_lose_no_update() {
    run_writers("cas", 20, 15);
}

#[test]
fn twenty_locked_writer_processes_lose_no_update() {
    run_writers("lock", 20, 15);
}

#[test]
fn sigkill_mid_write_never_tears_a_document() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = FileStore::open(dir.path()).expect("open");
    s.put(BIG, &big_doc(0)).expect("seed");
    let mut seed = u64::from(std::process::id());
    let mut last_seen = 0;
    for round in 0..8u64 {
        // Each writer numbers its documents from its own base.
        let base = (round + 1) * 1_000_000;
        let mut child = spawn("big", dir.path(), base);
        // Wait (bounded) until this writer has completed a write, so a slow
        // start on a loaded machine still kills it mid-stream, not before it began.
        let started = Instant::now() + Duration::from_secs(30);
        while last_seen < base && Instant::now() < started {
            check_doc(&s, &mut last_seen);
        }
        assert!(last_seen >= base, "round {round}: the writer never completed a write");
        // Pseudo-random delay (xorshift): kill at an arbitrary point of a write.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let deadline = Instant::now() + Duration::from_millis(150 + seed % 400);
        // Parse continuously while the writer runs: readers never see a torn doc.
        while Instant::now() < deadline {
            check_doc(&s, &mut last_seen);
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill");
        let status = child.wait().expect("wait");
        assert!(!status.success(), "round {round}: writer should have been killed");
        check_doc(&s, &mut last_seen);
        // The store stays writable after a crash.
        s.put("after/kill", &json!(round)).expect("put after kill");
    }
    let events = s.changes_since("after/", 0).expect("changes");
    assert_eq!(events.len(), 8);
}

fn check_doc(s: &FileStore, last_seen: &mut u64) {
    let e = s.get(BIG).expect("a whole document parses").expect("present");
    let i = e.value["i"].as_u64().expect("i");
    let items = e.value["items"].as_array().expect("items");
    assert_eq!(items.len() as u64, e.value["len"].as_u64().expect("len"));
    assert!(items.iter().all(|v| v.as_u64() == Some(i)), "mixed document");
    *last_seen = i;
}
