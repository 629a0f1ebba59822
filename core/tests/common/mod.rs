//! Throwaway network namespaces for integration tests (root required).
//! Tests shell out to `ip`/`tc` only to set up and to observe.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A named namespace (`ip netns add`), deleted on drop — also after a panic.
pub struct TestNs {
    pub name: String,
    pub path: PathBuf,
}

impl TestNs {
    pub fn new(tag: &str) -> TestNs {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("nsvc-{tag}-{}-{n}", std::process::id());
        run("ip", &["netns", "add", &name]);
        let path = PathBuf::from("/var/run/netns").join(&name);
        let ns = TestNs { name, path };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Run a command inside the namespace; panics unless it succeeds.
    pub fn exec(&self, args: &[&str]) -> String {
        let (ok, out) = self.try_exec(args);
        assert!(ok, "{args:?} in {} failed: {out}", self.name);
        out
    }

    /// Run a command inside the namespace: (success, stdout+stderr).
    pub fn try_exec(&self, args: &[&str]) -> (bool, String) {
        let mut full = vec!["netns", "exec", &self.name];
        full.extend_from_slice(args);
        let out = Command::new("ip").args(&full).output().expect("spawn ip");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    /// `tc -j …` inside the namespace, parsed.
    pub fn tc_json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["tc", "-j"];
        full.extend_from_slice(args);
        let out = self.exec(&full);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("tc {args:?}: {e}: {out}"))
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

fn run(cmd: &str, args: &[&str]) {
    let st = Command::new(cmd).args(args).status().expect("spawn");
    assert!(st.success(), "{cmd} {args:?} failed");
}

/// The inode of the calling thread's network namespace.
pub fn thread_ns_inode() -> u64 {
    netsvc_core::netns::current_inode().expect("read /proc/thread-self/ns/net")
}

/// The inode of the namespace bound at `path`.
pub fn ns_inode(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).expect("stat netns").ino()
}
