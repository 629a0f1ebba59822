//! A real etcd server inside a test namespace (the cluster's store), on its
//! own data dir; stoppable and restartable to simulate an outage.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::TestNode;

pub struct Etcd<'a> {
    host: &'a TestNode,
    ip: String,
    child: Option<Child>,
}

impl<'a> Etcd<'a> {
    /// Starts etcd in `host`'s namespace, listening on `ip`:2379.
    pub fn start(host: &'a TestNode, ip: &str) -> Result<Self> {
        let mut etcd = Etcd {
            host,
            ip: ip.to_string(),
            child: None,
        };
        etcd.resume()?;
        Ok(etcd)
    }

    /// The `store` object plugins, agents and the CLI use to reach it.
    pub fn store_spec(&self) -> serde_json::Value {
        serde_json::json!({"type": "etcd", "endpoints": [self.url()]})
    }

    pub fn url(&self) -> String {
        format!("http://{}:2379", self.ip)
    }

    /// Starts (again, on the same data) and waits until it accepts clients.
    pub fn resume(&mut self) -> Result<()> {
        let (client, peer) = (self.url(), format!("http://{}:2380", self.ip));
        let child = self
            .host
            .command("etcd")
            .args(["--name", "store", "--data-dir"])
            .arg(self.host.state_dir().join("etcd"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("store={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let probe = self
                .host
                .command("etcdctl")
                .args(["--endpoints", &client, "--dial-timeout=1s", "endpoint", "health"])
                .output()?;
            if probe.status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("etcd did not come up: {}", String::from_utf8_lossy(&probe.stderr));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Writes outside netsvc's prefix (the revision moves on) and compacts
    /// the history up to now: a watcher behind it must re-list.
    pub fn compact_past_now(&self) -> Result<()> {
        let etcdctl = |args: &[&str]| -> Result<String> {
            let out = self
                .host
                .command("etcdctl")
                .args(["--endpoints", &self.url(), "-w", "json"])
                .args(args)
                .output()?;
            if !out.status.success() {
                bail!("etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(String::from_utf8_lossy(&out.stdout).to_string())
        };
        // Two writes: compacting at the second drops the first, so history
        // right after any revision a watcher holds is gone.
        etcdctl(&["put", "/elsewhere", "x"])?;
        let put: serde_json::Value = serde_json::from_str(&etcdctl(&["put", "/elsewhere", "y"])?)?;
        let revision = put["header"]["revision"]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("no revision in {put}"))?;
        etcdctl(&["compact", &revision.to_string()])?;
        Ok(())
    }

    /// Kills the server (an outage); [`Etcd::resume`] brings it back.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Etcd<'_> {
    fn drop(&mut self) {
        self.stop();
    }
}
