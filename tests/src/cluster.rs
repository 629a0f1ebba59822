//! Simulated nodes sharing a store: node namespaces on a switched underlay
//! (a bridge in a hub namespace, which also runs etcd), each running the
//! reference pattern "a network spanning nodes" and its own `netsvc agent`.

use std::process::{Child, Stdio};

use netsvc_core::node::NODE_ENV;
use netsvc_core::store::STORE_ENV;
use serde_json::{Value, json};

use crate::TestNode;
use crate::chain::{Chain, plugin_dir};

/// The pattern every simulated node runs (node A's values).
pub const PATTERN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../docs/patterns/network-spanning-nodes.conflist"
);
/// Where the hub's etcd listens (the pattern's `store`).
pub const ETCD_IP: &str = "10.97.0.254";

/// The pattern's conflist as written.
fn pattern() -> Value {
    serde_json::from_slice(&std::fs::read(PATTERN).expect("the pattern's conflist")).expect("the pattern is JSON")
}

/// The hub: the underlay switch (bridge `ul`) and the etcd host.
pub fn hub() -> anyhow::Result<TestNode> {
    let hub = TestNode::new()?;
    hub.ip(["link", "add", "ul", "type", "bridge"])?;
    hub.ip(["addr", "add", &format!("{ETCD_IP}/24"), "dev", "ul"])?;
    hub.ip(["link", "set", "ul", "up"])?;
    Ok(hub)
}

/// Nodes named `names`, numbered from 1, each plugged into the hub.
pub fn join(hub: &TestNode, names: &[&str]) -> anyhow::Result<Vec<SimNode>> {
    let mut out = Vec::new();
    for (name, index) in names.iter().zip(1u8..) {
        let ns = TestNode::new()?;
        let port = format!("ul-{index}");
        ns.veth("ul0", hub, &port)?;
        hub.ip(["link", "set", &port, "master", "ul", "up"])?;
        ns.add_addr("ul0", &format!("10.97.0.{index}/24"))?;
        out.push(SimNode {
            name: name.to_string(),
            ns,
            index,
        });
    }
    Ok(out)
}

/// One simulated node: its namespace, underlay address and pod subnet.
pub struct SimNode {
    pub name: String,
    pub ns: TestNode,
    pub index: u8,
}

impl SimNode {
    pub fn underlay_ip(&self) -> String {
        format!("10.97.0.{}", self.index)
    }

    pub fn gateway(&self) -> String {
        format!("10.90.{}.1", self.index)
    }

    /// The pattern's conflist (node A's, docs/patterns/network-spanning-nodes.conflist)
    /// with this node's pod subnet and underlay address.
    pub fn conflist(&self) -> Value {
        let mut conf = pattern();
        let subnet = format!("10.90.{}.0/24", self.index);
        conf["plugins"][0]["ipam"]["ranges"] = json!([[{"subnet": subnet}]]);
        conf["plugins"][0]["ipam"]["dataDir"] = json!(self.ns.ipam_dir());
        conf["plugins"][1]["podSubnet"] = json!(subnet);
        conf["plugins"][1]["endpoint"] = json!(self.underlay_ip());
        conf
    }

    pub fn chain(&self) -> Chain<'_> {
        let mut chain = self.ns.chain(&self.conflist()).unwrap();
        chain.runtime.invoker.env.push((NODE_ENV.into(), self.name.clone()));
        chain
    }

    /// Starts this node's agent on its conflist, registered for `lease_ttl` seconds.
    pub fn agent(&self, store: &Value, lease_ttl: u64) -> Agent {
        let path = self.ns.state_dir().join("span.conflist");
        std::fs::write(&path, serde_json::to_vec(&self.conflist()).unwrap()).unwrap();
        let mut child = self
            .ns
            .command(plugin_dir().join("netsvc"))
            .args([
                "agent",
                "--node",
                &self.name,
                "--lease-ttl",
                &lease_ttl.to_string(),
                "--conflist",
            ])
            .arg(&path)
            .env(STORE_ENV, store.to_string())
            .env(NODE_ENV, &self.name)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.ns.state_dir().join("agent.log")).unwrap())
            .spawn()
            .unwrap();
        // An agent that cannot run (a `netsvc` built without the etcd
        // backend, a bad store) exits at once: say why now, not as a
        // backend missing from a VIP much later.
        let exited = crate::poll_until(std::time::Duration::from_millis(500), || {
            child.try_wait().ok().flatten()
        });
        if let Some(status) = exited {
            let log = std::fs::read_to_string(self.ns.state_dir().join("agent.log")).unwrap_or_default();
            panic!("the agent of {} exited at once ({status}): {log}", self.name);
        }
        Agent(Some(child))
    }

    /// What the agent reports of its last run.
    pub fn agent_state(&self) -> Value {
        let path = self.ns.state_dir().join("agent").join(format!("{}.json", self.name));
        serde_json::from_slice(&std::fs::read(path).unwrap_or_default()).unwrap_or(Value::Null)
    }
}

/// The `store` the pattern's plugins name.
pub fn store_of_the_pattern() -> Value {
    let conf = pattern();
    conf["plugins"][1]["store"].clone()
}

pub struct Agent(Option<Child>);

impl Agent {
    pub fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}
