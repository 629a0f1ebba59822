//! The node (the machine plugins run on) and its containers, as namespaces.

use std::ffi::OsStr;
use std::fs::Permissions;
use std::ops::Deref;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use tempfile::TempDir;

use crate::netns::Netns;

/// Env var that points plugins at their state dir.
pub const STATE_DIR_ENV: &str = "NETSVC_STATE_DIR";

/// A node: its own network namespace plus its own plugin state dir.
///
/// Derefs to its [`Netns`], so every probe and observer works on it. Drop
/// deletes the namespace (killing what runs in it) and the state dir.
#[derive(Debug)]
pub struct TestNode {
    // Field order is drop order: namespace (and its daemons) before state.
    ns: Netns,
    state: TempDir,
}

impl TestNode {
    /// A fresh node namespace (lo up) and state dir (0700).
    pub fn new() -> Result<TestNode> {
        let ns = Netns::create("nd")?;
        let state = tempfile::Builder::new()
            .prefix("netsvc-state-")
            // The state dir holds keys and leases: owner only, as in production.
            .permissions(Permissions::from_mode(0o700))
            .tempdir()
            .context("create state dir")?;
        Ok(TestNode { ns, state })
    }

    /// The node's namespace.
    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    /// The state dir plugins of this node use (`NETSVC_STATE_DIR`).
    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// A command that runs inside the node namespace with `NETSVC_STATE_DIR`
    /// set to this node's state dir: the way to run a plugin binary.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = self.ns.command(program);
        cmd.env(STATE_DIR_ENV, self.state.path());
        cmd
    }

    /// A new container namespace (lo up, nothing else) on this node.
    ///
    /// `label` is for messages only; the namespace gets a unique name.
    pub fn container(&self, label: &str) -> Result<Container> {
        Ok(Container {
            label: label.to_owned(),
            ns: Netns::create("ct")?,
        })
    }
}

/// A process of the node's, killed on drop.
pub struct Daemon(std::process::Child);

impl Daemon {
    /// Spawns `cmd`; the process lives as long as the returned value.
    pub fn spawn(cmd: &mut Command) -> Result<Daemon> {
        Ok(Daemon(cmd.spawn().with_context(|| format!("spawn {cmd:?}"))?))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl TestNode {
    /// Where [`TestNode::upstream_resolver`] answers.
    pub const UPSTREAM: &str = "127.0.0.53:5353";

    /// An upstream resolver on the node at [`Self::UPSTREAM`]: dnsmasq
    /// answering only from `hosts` (a hosts file's text), asking nobody else.
    pub fn upstream_resolver(&self, hosts: &str) -> Result<Daemon> {
        self.upstream_resolver_with_ttl(hosts, 0)
    }

    /// [`Self::upstream_resolver`] answering with TTL `ttl` (dnsmasq's
    /// `--local-ttl`; 0, its default, lets nobody keep an answer).
    pub fn upstream_resolver_with_ttl(&self, hosts: &str, ttl: u32) -> Result<Daemon> {
        let file = self.state_dir().join("upstream.hosts");
        std::fs::write(&file, hosts)?;
        self.ip(["addr", "add", "127.0.0.53/8", "dev", "lo"]).ok();
        let child = self
            .command("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--listen-address=127.0.0.53",
            ])
            .args(["--bind-interfaces", "--port=5353", "--user=root"])
            .arg(format!("--local-ttl={ttl}"))
            .arg(format!("--addn-hosts={}", file.display()))
            .spawn()
            .context("spawn dnsmasq")?;
        Ok(Daemon(child))
    }
}

impl Deref for TestNode {
    type Target = Netns;
    fn deref(&self) -> &Netns {
        &self.ns
    }
}

/// A container's network namespace; the plugin chain wires it to the node.
#[derive(Debug)]
pub struct Container {
    label: String,
    ns: Netns,
}

impl Container {
    /// The label given to [`TestNode::container`].
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The container's namespace.
    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    /// `/var/run/netns/<name>`: the CNI_NETNS to hand a plugin chain.
    pub fn netns_path(&self) -> &Path {
        self.ns.path()
    }
}

impl Deref for Container {
    type Target = Netns;
    fn deref(&self) -> &Netns {
        &self.ns
    }
}
