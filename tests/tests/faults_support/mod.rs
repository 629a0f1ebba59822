//! What the fault suites share: failpoints on a chain,
//! a plugin SIGKILLed at a random moment of its call, a small disk, the
//! store's view of an attachment, and a service's repair (`netsvc repair`
//! on the node).

#![allow(dead_code)] // each suite uses its own part

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use netsvc_core::failpoint::FAILPOINT_ENV;
use netsvc_tests::chain::{CallArgs, Chain, netsvc_repair};
use netsvc_tests::{Container, TestNode, files_under};

/// An endpoint called `name`, given the address `ip` when asked (host-local
/// takes a requested address from CNI_ARGS).
pub fn args(name: &str, ip: Option<&str>) -> CallArgs {
    let mut a = CallArgs::endpoint(name, None);
    a.args.extend(ip.map(|ip| ("IP".to_string(), ip.to_string())));
    a
}

pub fn with_failpoint(chain: &mut Chain, spec: &str) {
    chain.runtime.invoker.env.push((FAILPOINT_ENV.into(), spec.into()));
}

/// An ADD of `c` through `chain` with the failpoint `point` set to fail:
/// it must fail, with the failpoint's error.
pub fn add_failing_at(mut chain: Chain, point: &str, c: &Container, ifname: &str, args: &CallArgs) {
    with_failpoint(&mut chain, &format!("{point}=error"));
    let err = chain.add_with(c, ifname, args).expect_err("a failing ADD fails");
    assert!(err.to_string().contains(&format!("failpoint {point}")), "{err}");
}

/// Nothing in the store names `name` (an endpoint's name), and no call's
/// intent is left unfinished.
pub fn assert_store_forgets(state_dir: &Path, name: &str, when: &str) {
    for (path, body) in files_under(&state_dir.join("kv"), ".lock") {
        assert!(
            !body.contains(&format!("\"{name}\"")),
            "{when}: {path} still names {name}: {body}"
        );
    }
    let unfinished = netsvc_tests::leftovers::unfinished_intents(state_dir);
    assert!(unfinished.is_empty(), "{when}: {unfinished:?}");
}

/// The pids of processes of binary `plugin` running for `node` (by their state dir).
pub fn plugin_pids(node: &TestNode, plugin: &str) -> Vec<i32> {
    let marker = format!("NETSVC_STATE_DIR={}", node.state_dir().display());
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let exe = std::fs::read_link(entry.path().join("exe")).unwrap_or_default();
        if exe.file_name().is_none_or(|n| n != plugin) {
            continue;
        }
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        if environ.split(|b| *b == 0).any(|v| v == marker.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

/// A small pseudo-random sequence (no dependency; the seed is printed).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn seeded() -> Lcg {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64;
        Lcg(seed)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Runs `call` and SIGKILLs the `plugin` process it starts `delay` after it
/// appears (unless it finished first); whether one was killed.
pub fn killed_after<R: Send>(node: &TestNode, plugin: &str, delay: Duration, call: impl FnOnce() -> R + Send) -> bool {
    std::thread::scope(|s| {
        let running = s.spawn(call);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut killed = false;
        while !running.is_finished() && Instant::now() < deadline {
            if plugin_pids(node, plugin).is_empty() {
                std::thread::sleep(Duration::from_micros(300));
                continue;
            }
            std::thread::sleep(delay);
            for pid in plugin_pids(node, plugin) {
                // SAFETY: kill(2) of a process this test's node started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                killed = true;
            }
            break;
        }
        let _ = running.join();
        killed
    })
}

/// A small tmpfs a store lives on, unmounted on drop.
pub struct SmallDisk {
    pub dir: PathBuf,
    _mountpoint: tempfile::TempDir,
}

impl SmallDisk {
    pub fn new() -> SmallDisk {
        let mountpoint = tempfile::Builder::new().prefix("netsvc-disk").tempdir().unwrap();
        let dir = mountpoint.path().to_path_buf();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(ok.success(), "mount a tmpfs on {}", dir.display());
        SmallDisk {
            dir,
            _mountpoint: mountpoint,
        }
    }

    /// Takes every free page.
    pub fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.dir.join("filler")).unwrap();
        let page = [0u8; 4096];
        while f.write_all(&page).is_ok() {}
        let _ = f.sync_all();
    }

    pub fn free(&self) {
        std::fs::remove_file(self.dir.join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// `service`'s differences on `network` as `netsvc repair` finds
/// (`dry_run`) or fixes them: `<kind> <object>` each.
pub fn repair(node: &TestNode, service: &str, network: &str, dry_run: bool) -> Vec<String> {
    let mut args = vec!["--network", network];
    if dry_run {
        args.push("--dry-run");
    }
    netsvc_repair(node, &args)
        .into_iter()
        .filter(|(s, _)| s == service)
        .map(|(_, d)| d)
        .collect()
}
