//! A plugin hands its nf_tables sockets to a child that releases them after
//! the plugin has exited, so the runtime does not wait for the kernel's
//! grace period; `NETSVC_SOCKET_HANDOFF=off` switches that off, a number of
//! milliseconds says how long the child keeps them.

mod faults_support;

use std::collections::BTreeSet;
use std::time::Duration;

use faults_support::plugin_pids;
use netsvc_core::runtime::SOCKET_HANDOFF_ENV;
use netsvc_tests::chain::CallArgs;
use netsvc_tests::{TestNode, poll_until};
use serde_json::json;

const PLUGIN: &str = "netsvc-firewall";

/// The inodes of the nf_tables (NETLINK_NETFILTER, 12) sockets of `pid`'s namespace.
fn netfilter_sockets_of_namespace(pid: i32) -> BTreeSet<String> {
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/netlink")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.get(1) == Some(&"12")).then(|| cols.last().map(|i| i.to_string()))?
        })
        .collect()
}

/// What `pid` holds open: (socket inodes, anything that is neither a socket nor a pipe).
fn descriptors(pid: i32) -> (BTreeSet<String>, Vec<String>) {
    let mut sockets = BTreeSet::new();
    let mut other = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let target = std::fs::read_link(entry.path())
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        match target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) {
            Some(inode) => drop(sockets.insert(inode.to_string())),
            None if target.starts_with("pipe:") => {}
            None => other.push(format!("{}: {target}", entry.file_name().to_string_lossy())),
        }
    }
    (sockets, other)
}

#[test]
fn a_plugin_leaves_its_nf_tables_sockets_to_a_child_unless_told_not_to() {
    let node = TestNode::new().unwrap();
    let conflist = node.bridge_conflist("handoff", "1.0.0", "10.93.0.0/24", vec![json!({"type": PLUGIN})]);
    for (setting, handed_off) in [("4000", true), ("off", false)] {
        let container = node.container(&format!("c{setting}")).unwrap();
        let mut chain = node.chain(&conflist).unwrap();
        chain
            .runtime
            .invoker
            .env
            .push((SOCKET_HANDOFF_ENV.into(), setting.into()));
        chain
            .add_with(&container, "eth0", &CallArgs::endpoint("c", None))
            .unwrap();
        // The plugin has exited: what runs of it now is the child.
        let children = plugin_pids(&node, PLUGIN);
        if !handed_off {
            assert!(children.is_empty(), "{SOCKET_HANDOFF_ENV}=off: {children:?} still run");
        } else {
            assert_eq!(children.len(), 1, "one child keeps the ADD's sockets: {children:?}");
            let child = children[0];
            let (sockets, other) = descriptors(child);
            assert!(other.is_empty(), "the child keeps only sockets: {other:?}");
            let netfilter = netfilter_sockets_of_namespace(child);
            assert!(
                !sockets.is_empty() && sockets.is_subset(&netfilter),
                "the child's sockets {sockets:?} are nf_tables sockets ({netfilter:?})"
            );
        }
        chain.del(&container, "eth0").unwrap();
        let gone = poll_until(Duration::from_secs(10), || {
            plugin_pids(&node, PLUGIN).is_empty().then_some(())
        });
        assert!(gone.is_some(), "the children exit once they have released the sockets");
    }
}
