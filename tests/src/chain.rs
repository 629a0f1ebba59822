//! Running a CNI plugin chain on a [`TestNode`] through the
//! same runtime code as `netsvc exec`: plugins run inside the node namespace
//! with the node's `NETSVC_STATE_DIR`, results are cached in the node's state.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Context, Result};
use netsvc_composer::runtime::{Invoker, Runtime, RuntimeConf, RuntimeError};
use netsvc_core::cni::{Attachment, NetConfList};
use serde_json::{Map, Value, json};

use crate::node::{Container, STATE_DIR_ENV, TestNode};

/// Overrides where the workspace's plugin binaries are looked for.
pub const PLUGIN_DIR_ENV: &str = "NETSVC_PLUGIN_DIR";

/// Where reference plugins live on Debian (containernetworking-plugins).
pub const REFERENCE_PLUGIN_DIR: &str = "/usr/lib/cni";

/// The directory holding the workspace's plugin binaries (`target/debug`).
///
/// `$NETSVC_PLUGIN_DIR` if set; otherwise the folder of the running
/// executable: a test's (cargo and nextest put those in
/// `target/<profile>/deps/`) or a binary's beside the plugins
/// (`target/<profile>/netsvc-bench`).
pub fn plugin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(PLUGIN_DIR_ENV) {
        return dir.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("an executable has a directory");
    match dir.file_name() {
        Some(name) if name == "deps" => dir.parent().unwrap_or(dir).to_path_buf(),
        _ => dir.to_path_buf(),
    }
}

/// CNI_PATH for chains: our plugins first, then the reference plugins.
pub fn cni_path() -> OsString {
    std::env::join_paths([plugin_dir(), PathBuf::from(REFERENCE_PLUGIN_DIR)]).expect("plugin dirs hold no ':'")
}

/// Runs the `netsvc` command line inside `node`'s namespace with its state
/// dir, as a user on the node would.
pub fn netsvc(node: &TestNode, args: &[&str]) -> std::process::Output {
    let mut cmd = node.command(plugin_dir().join("netsvc"));
    cmd.args(args);
    crate::process::output_with_timeout(&mut cmd, std::time::Duration::from_secs(30)).expect("netsvc runs")
}

/// `netsvc repair --format json [extra…]` on `node` (`--dry-run`,
/// `--network N`): each difference it found or fixed as (service, `<kind>
/// <object>`), in its order. Panics when a service could not be compared.
pub fn netsvc_repair(node: &TestNode, extra: &[&str]) -> Vec<(String, String)> {
    let mut cmd = node.command(plugin_dir().join("netsvc"));
    cmd.args(["repair", "--format", "json"])
        .args(extra)
        // Where a daemon a repair starts is found, as a runtime's CNI_PATH says.
        .env("CNI_PATH", plugin_dir());
    let out = crate::process::output_with_timeout(&mut cmd, std::time::Duration::from_secs(30)).expect("netsvc runs");
    let report = json_of(&out, "netsvc repair");
    assert_eq!(report["errors"], json!([]), "netsvc repair: {report}");
    report["differences"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let field = |k: &str| d[k].as_str().unwrap_or_default().to_string();
            (field("service"), format!("{} {}", field("kind"), field("object")))
        })
        .collect()
}

/// `netsvc exec args…` on `node`, results cached in its state dir, plugins
/// found on [`cni_path`].
pub fn netsvc_exec(node: &TestNode, args: &[&str]) -> std::process::Output {
    let cache = node.state_dir().join("cli-cache");
    let cni_path = cni_path();
    let mut all = vec!["exec"];
    all.extend(args);
    all.extend(["--cache-dir", cache.to_str().expect("utf-8 path"), "--cni-path"]);
    all.push(cni_path.to_str().expect("utf-8 path"));
    netsvc(node, &all)
}

/// The JSON a successful `netsvc` run printed (`Null` for none); panics
/// with its output, naming `what`, when it failed.
pub fn json_of(out: &std::process::Output, what: &str) -> Value {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// A conflist bound to a node.
pub struct Chain<'a> {
    node: &'a TestNode,
    pub list: NetConfList,
    pub runtime: Runtime,
}

/// What one attachment call carries besides the container and ifname.
#[derive(Debug, Clone, Default)]
pub struct CallArgs {
    pub args: Vec<(String, String)>,
    pub cap_args: Map<String, Value>,
}

impl CallArgs {
    /// An endpoint's identity in CNI_ARGS: `NETSVC_NAME`, and `NETSVC_LABELS`
    /// (`k:v,k2:v2`) when given, beside the `IgnoreUnknown=1` the reference
    /// plugins need to accept our keys.
    pub fn endpoint(name: &str, labels: Option<&str>) -> CallArgs {
        let mut args = vec![
            ("IgnoreUnknown".to_string(), "1".to_string()),
            ("NETSVC_NAME".into(), name.into()),
        ];
        args.extend(labels.map(|l| ("NETSVC_LABELS".to_string(), l.to_string())));
        CallArgs {
            args,
            ..Default::default()
        }
    }
}

impl TestNode {
    /// Binds `conflist` to this node. Plugins run in the node namespace.
    pub fn chain(&self, conflist: &Value) -> Result<Chain<'_>> {
        let bytes = serde_json::to_vec(conflist)?;
        let list = NetConfList::parse(&bytes).map_err(|e| anyhow::anyhow!("conflist: {e}"))?;
        let invoker = Invoker {
            cni_path: std::env::split_paths(&cni_path()).collect(),
            plugin_netns: Some(self.path().to_path_buf()),
            env: vec![(STATE_DIR_ENV.into(), self.state_dir().display().to_string())],
        };
        Ok(Chain {
            node: self,
            list,
            runtime: Runtime::new(invoker, self.state_dir().join("cni-cache")),
        })
    }

    /// Where host-local keeps this node's leases (never the host's /var/lib/cni).
    pub fn ipam_dir(&self) -> PathBuf {
        self.state_dir().join("ipam")
    }

    /// A conflist of the reference bridge + host-local on `subnet`, followed by `extra` plugins.
    pub fn bridge_conflist(&self, name: &str, version: &str, subnet: &str, extra: Vec<Value>) -> Value {
        let bridge: String = format!("br-{name}").chars().take(15).collect();
        let mut plugins = vec![json!({
            "type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false, "hairpinMode": true,
            "ipam": {"type": "host-local", "dataDir": self.ipam_dir(),
                     "ranges": [[{"subnet": subnet}]], "routes": [{"dst": "0.0.0.0/0"}]}
        })];
        plugins.extend(extra);
        json!({"cniVersion": version, "name": name, "plugins": plugins})
    }
}

impl Chain<'_> {
    fn conf(&self, c: &Container, ifname: &str, extra: &CallArgs) -> RuntimeConf {
        RuntimeConf {
            container_id: c.name().to_string(),
            netns: Some(c.netns_path().to_path_buf()),
            ifname: ifname.to_string(),
            args: extra.args.clone(),
            cap_args: extra.cap_args.clone(),
        }
    }

    pub fn add(&self, c: &Container, ifname: &str) -> Result<Value, RuntimeError> {
        self.add_with(c, ifname, &CallArgs::default())
    }

    pub fn add_with(&self, c: &Container, ifname: &str, extra: &CallArgs) -> Result<Value, RuntimeError> {
        self.runtime.add(&self.list, &self.conf(c, ifname, extra))
    }

    pub fn check(&self, c: &Container, ifname: &str) -> Result<(), RuntimeError> {
        self.runtime
            .check(&self.list, &self.conf(c, ifname, &CallArgs::default()))
    }

    pub fn del(&self, c: &Container, ifname: &str) -> Result<(), RuntimeError> {
        self.runtime
            .del(&self.list, &self.conf(c, ifname, &CallArgs::default()))
    }

    /// DEL as a runtime sends it once the container's namespace is gone.
    pub fn del_without_netns(&self, container_id: &str, ifname: &str) -> Result<(), RuntimeError> {
        let rt = RuntimeConf {
            container_id: container_id.into(),
            ifname: ifname.into(),
            ..Default::default()
        };
        self.runtime.del(&self.list, &rt)
    }

    /// GC keeping only `(container, ifname)` pairs.
    pub fn gc(&self, keep: &[(&Container, &str)]) -> Result<(), RuntimeError> {
        let valid: Vec<Attachment> = keep
            .iter()
            .map(|(c, i)| Attachment {
                container_id: c.name().to_string(),
                ifname: i.to_string(),
            })
            .collect();
        self.runtime.gc(&self.list, &valid)
    }

    pub fn status(&self) -> Result<(), RuntimeError> {
        self.runtime.status(&self.list)
    }

    /// The node this chain runs on.
    pub fn node(&self) -> &TestNode {
        self.node
    }
}

/// The first IPv4 address the result gives the container interface `ifname`.
pub fn container_ip(result: &Value, ifname: &str) -> Result<std::net::IpAddr> {
    let interfaces = result["interfaces"].as_array().context("result has no interfaces")?;
    let idx = interfaces
        .iter()
        .position(|i| i["name"] == ifname && i.get("sandbox").is_some())
        .context("result has no container interface")?;
    let ip = result["ips"]
        .as_array()
        .context("result has no ips")?
        .iter()
        .find(|ip| ip["interface"].as_u64() == Some(idx as u64))
        .context("no address on the container interface")?;
    let cidr = ip["address"].as_str().context("address")?;
    Ok(cidr.split('/').next().unwrap_or_default().parse()?)
}
