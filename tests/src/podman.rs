//! Real containers: podman on its CNI backend, inside a [`TestNode`].
//!
//! Each [`Podman`] has its own containers.conf (CNI backend, our plugins
//! first on the plugin path, its own network directory), its own storage
//! and a busybox-static root filesystem, so no registry is needed and the
//! host's podman state is never touched. Podman runs in the node namespace
//! (`nsenter --net`, which keeps the host's mounts and cgroups), so the
//! bridges, nftables tables and daemons our plugins make live there too.
//!
//! Every container runs busybox `httpd` on the ports it is given, serving
//! its own name at `/id`: [`Podman::fetch`] from another container answers
//! who was reached, the way the echo servers of the namespace tests do.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tempfile::TempDir;

use crate::chain::{REFERENCE_PLUGIN_DIR, plugin_dir};
use crate::netns::Netns;
use crate::node::{STATE_DIR_ENV, TestNode};
use crate::process::{output_with_timeout, poll_until};

/// Podman's own commands (run, network connect, rm) take a while on two
/// cores; a plugin chain is part of each.
const PODMAN_TIMEOUT: Duration = Duration::from_secs(60);

/// One podman installation on a node.
pub struct Podman<'n> {
    node: &'n TestNode,
    dir: TempDir,
}

/// A container to start: its networks, and the labels its CNI calls carry.
#[derive(Debug, Clone, Default)]
pub struct Run<'a> {
    pub name: &'a str,
    pub networks: &'a [&'a str],
    /// `k:v,k2:v2`, given to the plugins as `NETSVC_LABELS` in CNI_ARGS
    /// (podman adds `K8S_POD_NAME=<name>` itself).
    pub labels: Option<&'a str>,
    /// TCP ports its httpd serves `/id` on.
    pub ports: &'a [u16],
}

impl<'n> Podman<'n> {
    /// A fresh podman configuration and storage for `node`.
    pub fn new(node: &'n TestNode) -> Result<Podman<'n>> {
        let dir = tempfile::Builder::new().prefix("netsvc-podman-").tempdir()?;
        let pm = Podman { node, dir };
        std::fs::create_dir_all(pm.networks_dir())?;
        busybox_rootfs(&pm.rootfs())?;
        let conf = format!(
            "[containers]\n\
             default_ulimits = []\n\
             [network]\n\
             network_backend = \"cni\"\n\
             cni_plugin_dirs = [\"{ours}\", \"{reference}\"]\n\
             network_config_dir = \"{networks}\"\n\
             [engine]\n\
             runtime = \"runc\"\n\
             cgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\n",
            ours = plugin_dir().display(),
            reference = REFERENCE_PLUGIN_DIR,
            networks = pm.networks_dir().display(),
        );
        std::fs::write(pm.conf_file(), conf)?;
        Ok(pm)
    }

    fn conf_file(&self) -> PathBuf {
        self.dir.path().join("containers.conf")
    }

    fn networks_dir(&self) -> PathBuf {
        self.dir.path().join("networks")
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// Installs `conflist` as a podman network. Its host-local leases go to
    /// this podman's directory, not the host's /var/lib/cni, and our plugins
    /// keep state in the node's state dir: set in the config, because the
    /// cleanup conmon runs when a container exits does not pass on
    /// `NETSVC_STATE_DIR`.
    pub fn add_network(&self, mut conflist: Value) -> Result<String> {
        let name = conflist["name"].as_str().context("conflist has no name")?.to_string();
        if conflist["plugins"][0]["ipam"]["type"] == "host-local" {
            let leases = self.dir.path().join("ipam");
            conflist["plugins"][0]["ipam"]["dataDir"] = Value::String(leases.display().to_string());
        }
        let state = Value::String(self.node.state_dir().display().to_string());
        for plugin in conflist["plugins"].as_array_mut().into_iter().flatten() {
            if plugin["type"].as_str().is_some_and(|t| t.starts_with("netsvc-")) {
                plugin["stateDir"] = state.clone();
            }
        }
        let file = self.networks_dir().join(format!("{name}.conflist"));
        std::fs::write(&file, serde_json::to_string_pretty(&conflist)?)?;
        Ok(name)
    }

    /// A podman command in the node namespace with this installation's
    /// configuration, storage and the node's netsvc state dir.
    pub fn command(&self, labels: Option<&str>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.node.path().display()))
            .arg("podman")
            .arg("--root")
            .arg(self.dir.path().join("storage"))
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .arg("--tmpdir")
            .arg(self.dir.path().join("tmp"))
            .args(["--storage-driver", "vfs"])
            .env("CONTAINERS_CONF", self.conf_file())
            .env(STATE_DIR_ENV, self.node.state_dir());
        // Podman appends CNI_ARGS from its environment to its own.
        match labels {
            Some(labels) => cmd.env("CNI_ARGS", format!("NETSVC_LABELS={labels}")),
            None => cmd.env_remove("CNI_ARGS"),
        };
        cmd
    }

    /// `podman args…`; stdout, or an error with podman's stderr.
    pub fn podman(&self, args: &[&str]) -> Result<String> {
        self.podman_with(None, args)
    }

    fn podman_with(&self, labels: Option<&str>, args: &[&str]) -> Result<String> {
        let out = output_with_timeout(self.command(labels).args(args), PODMAN_TIMEOUT)?;
        if !out.status.success() {
            bail!(
                "podman {args:?}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts a container (detached) serving its name on `run.ports`.
    pub fn run(&self, run: &Run) -> Result<()> {
        let serve: String = run.ports.iter().map(|p| format!("httpd -p {p} -h /srv; ")).collect();
        let script = format!("echo {} > /srv/id; {serve}exec sleep 1000000", run.name);
        let rootfs = self.rootfs();
        let mut args = vec!["run", "-d", "--name", run.name];
        for network in run.networks {
            args.extend(["--network", network]);
        }
        // The root filesystem is shared: each container's files live in its own tmpfs.
        args.extend(["--tmpfs", "/srv", "--rootfs", rootfs.to_str().context("rootfs path")?]);
        args.extend(["/bin/sh", "-c", &script]);
        self.podman_with(run.labels, &args).map(drop)
    }

    /// `podman exec name sh -c script`, whatever its exit.
    pub fn exec(&self, name: &str, script: &str) -> Result<Output> {
        output_with_timeout(
            self.command(None).args(["exec", name, "/bin/sh", "-c", script]),
            PODMAN_TIMEOUT,
        )
    }

    /// Who answers `GET http://addr:port/id` from inside `from`, if anyone
    /// does within two seconds.
    pub fn fetch(&self, from: &str, addr: IpAddr, port: u16) -> Option<String> {
        // busybox nc, not wget: the static wget crashes in the libc resolver
        // even for a literal address.
        let request = format!("printf 'GET /id HTTP/1.0\\r\\n\\r\\n' | timeout 3 nc -w 2 {addr} {port}");
        let out = self.exec(from, &request).ok()?;
        let response = String::from_utf8_lossy(&out.stdout);
        let (head, body) = response.split_once("\r\n\r\n")?;
        (out.status.success() && head.starts_with("HTTP/1.1 200")).then(|| body.trim().to_string())
    }

    /// The address `name` resolves to inside `from`, through the
    /// nameservers and search domains podman wrote into its resolv.conf.
    pub fn resolve(&self, from: &str, name: &str) -> Option<IpAddr> {
        // busybox ping resolves with the libc resolver, which reads
        // resolv.conf (nslookup would need a server and a full name).
        let out = self.exec(from, &format!("ping -c 1 -W 1 {name}")).ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let first = text.lines().next()?;
        let inside = first.split_once('(')?.1.split_once(')')?.0;
        inside.parse().ok()
    }

    /// What `name` resolves to inside `from` once that is `want`, or what it
    /// last resolved to after five seconds: the DNS daemon follows the store
    /// within moments of a runtime's call, not during it.
    pub fn resolve_settled(&self, from: &str, name: &str, want: Option<IpAddr>) -> Option<IpAddr> {
        poll_until(Duration::from_secs(5), || {
            let got = self.resolve(from, name);
            (got == want).then_some(got)
        })
        .unwrap_or_else(|| self.resolve(from, name))
    }

    /// The container's address on `network`.
    pub fn ip(&self, name: &str, network: &str) -> Result<IpAddr> {
        let inspect = self.inspect(name)?;
        let ip = inspect["NetworkSettings"]["Networks"][network]["IPAddress"]
            .as_str()
            .with_context(|| format!("{name} has no address on {network}"))?;
        ip.parse()
            .with_context(|| format!("{name}'s address on {network}: {ip}"))
    }

    /// The container's network namespace, for probes and measurements from
    /// the harness side.
    pub fn netns(&self, name: &str) -> Result<Netns> {
        let inspect = self.inspect(name)?;
        let key = inspect["NetworkSettings"]["SandboxKey"]
            .as_str()
            .with_context(|| format!("{name} has no network namespace"))?;
        Netns::adopt(Path::new(key))
    }

    /// The container's full id.
    pub fn id(&self, name: &str) -> Result<String> {
        Ok(self
            .podman(&["inspect", "--format", "{{.Id}}", name])?
            .trim()
            .to_string())
    }

    /// `podman inspect name`: what podman made of the container (and of our results).
    pub fn inspect(&self, name: &str) -> Result<Value> {
        let out = self.podman(&["inspect", name])?;
        let mut all: Value = serde_json::from_str(&out).context("podman inspect")?;
        Ok(all[0].take())
    }

    /// `podman network connect network name`, its CNI calls carrying `labels`.
    pub fn connect(&self, name: &str, network: &str, labels: Option<&str>) -> Result<()> {
        self.podman_with(labels, &["network", "connect", network, name])
            .map(drop)
    }

    pub fn disconnect(&self, name: &str, network: &str) -> Result<()> {
        self.podman(&["network", "disconnect", network, name]).map(drop)
    }

    /// Stops a container at once (its `sleep` ignores SIGTERM as PID 1).
    pub fn stop(&self, name: &str) -> Result<()> {
        self.podman(&["stop", "-t", "0", name]).map(drop)
    }

    pub fn start(&self, name: &str, labels: Option<&str>) -> Result<()> {
        self.podman_with(labels, &["start", name]).map(drop)
    }

    /// `podman rm -af`: every container stopped, detached and removed.
    pub fn remove_all(&self) -> Result<()> {
        self.podman(&["rm", "-a", "-f", "-t", "0"]).map(drop)
    }
}

impl Drop for Podman<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.remove_all() {
            eprintln!("netsvc-tests: podman rm -af: {e:#}");
        }
    }
}

/// A root filesystem of busybox-static and its applet links.
fn busybox_rootfs(root: &Path) -> Result<()> {
    let bin = root.join("bin");
    for dir in ["bin", "etc", "proc", "sys", "dev", "tmp", "srv", "run"] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    std::fs::copy("/bin/busybox", bin.join("busybox")).context("copy /bin/busybox (busybox-static)")?;
    let list = output_with_timeout(Command::new("/bin/busybox").arg("--list"), Duration::from_secs(10))?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", bin.join(applet))?;
        }
    }
    Ok(())
}
