//! What the fault suites of QoS, DNS and VPN share: failpoints on a chain,
//! a plugin SIGKILLed at a random moment of its call, a small disk, the
//! store's view of an attachment, and a service's repair run inside a
//! node's namespace (the test binary itself, run again there).

#![allow(dead_code)] // each suite uses its own part

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use netsvc_core::failpoint::FAILPOINT_ENV;
use netsvc_core::reconcile::Repair;
use netsvc_tests::chain::{CallArgs, Chain, plugin_dir};
use netsvc_tests::{TestNode, files_under};

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

/// Nothing in the store names `name` (an endpoint's name), and no call's
/// intent is left unfinished.
pub fn assert_store_forgets(state_dir: &Path, name: &str, when: &str) {
    for (path, body) in files_under(&state_dir.join("kv"), ".lock") {
        assert!(
            !body.contains(&format!("\"{name}\"")),
            "{when}: {path} still names {name}: {body}"
        );
        assert!(!path.ends_with("/intent.json"), "{when}: {path} left: {body}");
    }
}

/// The pids of processes of binary `plugin` running for `node` (by their state dir).
fn plugin_pids(node: &TestNode, plugin: &str) -> Vec<i32> {
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

/// Names the repair a re-run test binary does: `<network> <dry|fix>`.
const REPAIR_ENV: &str = "NETSVC_TEST_REPAIR";
/// How a re-run test binary prints each difference.
const DIFF_LINE: &str = "DIFFERENCE ";

/// The body of a suite's `repair_runner` test: nothing in a normal run;
/// when the test binary is run again by [`repair`], the repair (or diff)
/// of `service` on the network it names, each difference on a line.
pub fn serve_repair(service: &dyn Repair) {
    let Ok(task) = std::env::var(REPAIR_ENV) else {
        return;
    };
    let (network, mode) = task.split_once(' ').expect("<network> <dry|fix>");
    let store = netsvc_core::store::open(None).expect("open the node's store");
    let found = match mode {
        "dry" => service.diff(&store, network),
        _ => service.repair(&store, network),
    };
    match found {
        Ok(found) => {
            for d in found {
                println!("{DIFF_LINE}{} {}", d.kind.word(), d.object);
            }
        }
        Err(e) => println!("{DIFF_LINE}error {}", e.msg),
    }
}

/// Runs the suite's `runner` test (its [`serve_repair`]) again, in `node`'s
/// namespace with its state dir: `<kind> <object>` per difference found
/// (`dry_run`) or fixed.
pub fn repair(node: &TestNode, runner: &str, network: &str, dry_run: bool) -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    let mode = if dry_run { "dry" } else { "fix" };
    let out = node
        .command(exe)
        .args([runner, "--exact", "--nocapture", "--test-threads=1"])
        .env(REPAIR_ENV, format!("{network} {mode}"))
        // Where a daemon a repair starts is found.
        .env("CNI_PATH", plugin_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "repair runner: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found: Vec<String> = stdout
        .lines()
        // libtest may print "test … " before the first line.
        .filter_map(|l| l.find(DIFF_LINE).map(|i| l[i + DIFF_LINE.len()..].to_string()))
        .collect();
    assert!(
        !found.iter().any(|d| d.starts_with("error ")),
        "repair failed: {found:?}"
    );
    found
}
