//! A named, throwaway network namespace and the ways to act inside it.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sched::{CloneFlags, setns};

use crate::names::unique_name;
use crate::process::{DEFAULT_TIMEOUT, output_with_timeout};

/// Where `ip netns` bind-mounts named namespaces.
pub(crate) const NETNS_DIR: &str = "/var/run/netns";

/// A network namespace created with `ip netns add`, deleted on drop.
///
/// Dropping it also kills every process still inside it (a daemon a plugin
/// detached, say), so nothing outlives the test. lo is up from the start.
/// A namespace someone else made ([`Netns::adopt`]) is only looked into.
#[derive(Debug)]
pub struct Netns {
    name: String,
    path: PathBuf,
    owned: bool,
}

impl Netns {
    /// Creates a namespace named [`unique_name`]`(prefix)` and brings lo up.
    pub fn create(prefix: &str) -> Result<Netns> {
        static SWEEP: std::sync::Once = std::sync::Once::new();
        if !nix::unistd::geteuid().is_root() {
            bail!("the integration tests need root (to make network namespaces): run them as root, as CI does");
        }
        SWEEP.call_once(sweep_orphans);
        let name = unique_name(prefix);
        // `ip netns add` only makes the namespace and its bind mount; the root
        // namespace's links, routes and sysctls are left alone.
        let out = output_with_timeout(Command::new("ip").args(["netns", "add", &name]), DEFAULT_TIMEOUT)?;
        if !out.status.success() {
            bail!("ip netns add {name}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let ns = Netns {
            path: Path::new(NETNS_DIR).join(&name),
            name,
            owned: true,
        };
        ns.ip(["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A namespace another program made and bind-mounted in [`NETNS_DIR`]
    /// (a podman container's): probes work in it, drop leaves it alone.
    pub fn adopt(path: &Path) -> Result<Netns> {
        let name = path
            .strip_prefix(NETNS_DIR)
            .or_else(|_| path.strip_prefix("/run/netns"))
            .with_context(|| format!("{} is not under {NETNS_DIR}", path.display()))?;
        Ok(Netns {
            name: name.display().to_string(),
            path: Path::new(NETNS_DIR).join(name),
            owned: false,
        })
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/var/run/netns/<name>`: what CNI_NETNS and `nsenter --net=` take.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A command whose process enters this namespace before exec.
    ///
    /// Uses `setns` in `pre_exec`: no extra process, and unlike
    /// `ip netns exec` it leaves the mount namespace (and /sys) untouched.
    /// /proc/sys/net still shows this namespace's sysctls.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        // Open now, in the parent: the hook between fork and exec only joins it.
        let mut cmd = Command::new(program);
        netsvc_core::spawn::enter_netns_on_exec(&mut cmd, File::open(&self.path).map(OwnedFd::from));
        cmd
    }

    /// Runs `f` on a fresh thread that has entered this namespace.
    ///
    /// Sockets `f` opens belong to this namespace. A panic in `f` is
    /// re-raised here.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let file = self.open()?;
        thread::scope(|s| {
            let handle = s.spawn(move || {
                setns(&file, CloneFlags::CLONE_NEWNET).context("setns")?;
                Ok(f())
            });
            handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    pub(crate) fn open(&self) -> Result<File> {
        File::open(&self.path).with_context(|| format!("open {}", self.path.display()))
    }

    /// Runs `program args…` inside the namespace; the output, whatever the exit.
    pub fn output<I, S>(&self, program: &str, args: I, timeout: Duration) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        output_with_timeout(self.command(program).args(args), timeout)
    }

    /// Runs `program args…` inside the namespace; stdout, or an error naming
    /// the command and its stderr when it fails.
    pub fn exec<I, S>(&self, program: &str, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.output(program, &args, DEFAULT_TIMEOUT)?;
        if !out.status.success() {
            bail!(
                "[{}] {program} {args:?}: {}: {}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `ip args…` inside the namespace.
    pub fn ip<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.exec("ip", args)
    }

    /// Creates a veth pair `ifname` (here) ↔ `peer_ifname` (in `peer`), both up.
    ///
    /// Test scaffolding for topologies that do not need a plugin chain; the
    /// pair is created inside this namespace, never in the root one.
    pub fn veth(&self, ifname: &str, peer: &Netns, peer_ifname: &str) -> Result<()> {
        self.ip([
            "link",
            "add",
            ifname,
            "type",
            "veth",
            "peer",
            "name",
            peer_ifname,
            "netns",
            peer.name(),
        ])?;
        self.ip(["link", "set", ifname, "up"])?;
        peer.ip(["link", "set", peer_ifname, "up"])?;
        Ok(())
    }

    /// A link `ifname` (up) whose far end is a veth peer nobody listens on:
    /// packets routed into it leave and vanish (a dead upstream, say), and an
    /// address on it is one more of this namespace's own addresses.
    pub fn dead_end_link(&self, ifname: &str) -> Result<()> {
        let peer = format!("{}x", &ifname[..ifname.len().min(14)]);
        self.ip(["link", "add", ifname, "type", "veth", "peer", "name", &peer])?;
        self.ip(["link", "set", ifname, "up"])?;
        self.ip(["link", "set", &peer, "up"]).map(drop)
    }

    /// Adds `cidr` (e.g. `10.0.0.1/24`) to `ifname`.
    pub fn add_addr(&self, ifname: &str, cidr: &str) -> Result<()> {
        // nodad: IPv6 addresses are usable at once instead of after DAD.
        let mut args = vec!["addr", "add", cidr, "dev", ifname];
        if cidr.contains(':') {
            args.push("nodad");
        }
        self.ip(args).map(drop)
    }

    fn kill_processes(&self) {
        let Ok(out) = output_with_timeout(Command::new("ip").args(["netns", "pids", &self.name]), DEFAULT_TIMEOUT)
        else {
            return;
        };
        let me = std::process::id();
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            match pid.parse::<i32>() {
                Ok(pid) if pid as u32 != me => {
                    let pid = nix::unistd::Pid::from_raw(pid);
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGKILL);
                }
                _ => {}
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        self.kill_processes();
        let res = output_with_timeout(
            Command::new("ip").args(["netns", "delete", &self.name]),
            DEFAULT_TIMEOUT,
        );
        match res {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "netsvc-tests: ip netns delete {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("netsvc-tests: ip netns delete {}: {e:#}", self.name),
        }
    }
}

/// Deletes harness namespaces whose test process is gone: a test killed with
/// SIGKILL (a nextest timeout) never runs its drop cleanup.
fn sweep_orphans() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for name in entries.flatten().filter_map(|e| e.file_name().into_string().ok()) {
        let Some(pid) = crate::names::owner_pid(&name) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let _ = output_with_timeout(Command::new("ip").args(["netns", "delete", &name]), DEFAULT_TIMEOUT);
    }
}
