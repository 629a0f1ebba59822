//! netsvc-vpn's mesh across two simulated nodes: two node namespaces joined
//! by a veth underlay, each with its own bridge network and container, one
//! state dir standing in for the shared store. Containers reach each other
//! through the nodes' WireGuard devices; after `netsvc vpn rotate` on one
//! node, traffic resumes within one keepalive period.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use netsvc_tests::capture::Capture;
use netsvc_tests::chain::{CallArgs, container_ip, plugin_dir};
use netsvc_tests::wireguard::{uapi_sockets, wireguard_go_processes};
use netsvc_tests::{EchoServer, TestNode, files_under, poll_until};
use netsvc_vpn::mesh::device_name;
use serde_json::{Value, json};

const NETWORK: &str = "meshnet";
const KEEPALIVE: u64 = 25;

fn mesh_conflist(node: &TestNode, store: &Path, name: &str, subnet: &str, endpoint: &str) -> Value {
    let mut conf = node.bridge_conflist(
        NETWORK,
        "1.0.0",
        subnet,
        vec![json!({"type": "netsvc-vpn", "mode": "mesh", "endpoint": endpoint,
                    "podSubnet": subnet, "node": name, "persistentKeepalive": KEEPALIVE})],
    );
    // One state dir for both nodes: the shared store.
    conf["plugins"][1]["stateDir"] = json!(store);
    conf
}

fn netsvc(node: &TestNode, args: &[&str]) -> String {
    let out = node.command(plugin_dir().join("netsvc")).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "netsvc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn public_key_of(status: &Value, node: &str) -> String {
    status[0]["mesh"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == node)
        .map(|n| n["publicKey"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

/// What the mesh keepers logged, for failure messages.
fn keeper_logs(store: &Path) -> String {
    let Ok(dir) = std::fs::read_dir(store.join("vpn/keepers")) else {
        return "no keeper ran".into();
    };
    dir.flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn containers_on_two_nodes_talk_through_the_mesh_and_survive_a_key_rotation() {
    let (a, b) = (TestNode::new().unwrap(), TestNode::new().unwrap());
    let store = tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .unwrap();
    a.veth("ul0", &b, "ul0").unwrap();
    a.add_addr("ul0", "10.97.0.1/24").unwrap();
    b.add_addr("ul0", "10.97.0.2/24").unwrap();
    let chain_a = a
        .chain(&mesh_conflist(&a, store.path(), "node-a", "10.89.1.0/24", "10.97.0.1"))
        .unwrap();
    let chain_b = b
        .chain(&mesh_conflist(&b, store.path(), "node-b", "10.89.2.0/24", "10.97.0.2"))
        .unwrap();
    let (ca, cb) = (a.container("ca").unwrap(), b.container("cb").unwrap());
    let ra = chain_a.add_with(&ca, "eth0", &CallArgs::endpoint("ca", None)).unwrap();
    let rb = chain_b.add_with(&cb, "eth0", &CallArgs::endpoint("cb", None)).unwrap();
    let ip_b = container_ip(&rb, "eth0").unwrap();

    // Each node's key is kept 0600; its device's MTU is the underlay's less 80.
    for node in ["node-a", "node-b"] {
        let key = store.path().join("vpn/nodes").join(format!("{node}.key"));
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let (dev_a, dev_b) = (device_name("node-a", NETWORK), device_name("node-b", NETWORK));
    assert_eq!(a.link(&dev_a).unwrap().mtu, 1420);
    // Node A learned of B from the store (its keeper), with a route to B's pods.
    let routed = poll_until(Duration::from_secs(10), || {
        let routes = a.ip(["route", "show", "dev", &dev_a]).ok()?;
        routes.contains("10.89.2.0/24").then_some(())
    });
    assert!(
        routed.is_some(),
        "A routes B's pod subnet through its mesh device; keepers said: {}",
        keeper_logs(store.path())
    );

    let server = EchoServer::start(&cb, "0.0.0.0:7000".parse().unwrap(), "cb").unwrap();
    let to_b = std::net::SocketAddr::new(ip_b, server.port());
    let capture = Capture::start(&a, "ul0").unwrap();
    let marker = "MESH-PLAINTEXT-7777";
    let reply = poll_until(Duration::from_secs(10), || {
        ca.tcp_echo(to_b, marker, Duration::from_secs(2)).ok()
    });
    assert_eq!(
        reply.expect("A's container reaches B's through the mesh").identity,
        "cb"
    );
    let seen = capture.stop().unwrap();
    assert!(!seen.text.contains(marker), "no plaintext on the underlay");
    assert!(
        seen.packets
            .iter()
            .filter(|p| p.contains(" IP "))
            .all(|p| p.contains(": UDP") && p.contains(".51871")),
        "only WireGuard's UDP between the nodes: {:?}",
        seen.packets
    );
    chain_a.check(&ca, "eth0").unwrap();
    chain_b.check(&cb, "eth0").unwrap();

    // Rotate A's key: B's keeper takes A's new key from the store, and
    // traffic resumes within one keepalive period.
    let state = store.path().to_str().unwrap();
    let status = |node: &TestNode| -> Value {
        serde_json::from_str(&netsvc(
            node,
            &["vpn", "status", "--format", "json", "--state-dir", state],
        ))
        .unwrap()
    };
    let before = public_key_of(&status(&a), "node-a");
    let key_file = store.path().join("vpn/nodes/node-a.key");
    let private_before = std::fs::read_to_string(&key_file).unwrap();
    let rotated = netsvc(&a, &["vpn", "rotate", "--node", "node-a", "--state-dir", state]);
    assert!(rotated.contains(NETWORK), "{rotated}");
    let started = Instant::now();
    let after = public_key_of(&status(&a), "node-a");
    assert_ne!(before, after, "a new public key is published");
    let private_after = std::fs::read_to_string(&key_file).unwrap();
    assert_ne!(private_before, private_after);
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let resumed = poll_until(Duration::from_secs(KEEPALIVE), || {
        ca.tcp_echo(to_b, "after rotation", Duration::from_secs(1)).ok()
    });
    assert!(
        resumed.is_some(),
        "traffic resumes within {KEEPALIVE} s of the rotation"
    );
    eprintln!("traffic resumed {:?} after the rotation", started.elapsed());
    let peers_on_b = b.exec("wg", ["show", &dev_b, "peers"]).unwrap();
    assert_eq!(peers_on_b.trim(), after, "B holds A's new key only");
    // Status shows public keys and never a private one; neither do the
    // keepers' logs, the ADD results or any other file of the store.
    let text = netsvc(&a, &["vpn", "status", "--state-dir", state]);
    assert!(text.contains(&after), "{text}");
    for private in [private_before.trim(), private_after.trim()] {
        assert!(!text.contains(private), "a private key in the status");
        assert!(
            !keeper_logs(store.path()).contains(private),
            "a private key in a keeper's log"
        );
        assert!(!ra.to_string().contains(private) && !rb.to_string().contains(private));
        for (path, body) in files_under(store.path(), ".key") {
            assert!(!body.contains(private), "a private key in {path}");
        }
    }
    chain_a.check(&ca, "eth0").unwrap();

    // The last container of A leaves: A's device, process, socket and
    // published entry go; B drops A as a peer and its route.
    chain_a.del(&ca, "eth0").unwrap();
    assert!(a.link(&dev_a).is_err(), "A's device is gone");
    assert_eq!(uapi_sockets(&dev_a), Vec::<String>::new());
    assert_eq!(wireguard_go_processes(&dev_a), Vec::<String>::new());
    assert_eq!(public_key_of(&status(&b), "node-a"), "");
    let dropped = poll_until(Duration::from_secs(10), || {
        let peers = b.exec("wg", ["show", &dev_b, "peers"]).ok()?;
        let routes = b.ip(["route", "show", "dev", &dev_b]).ok()?;
        (peers.trim().is_empty() && !routes.contains("10.89.1.0/24")).then_some(())
    });
    assert!(dropped.is_some(), "B forgot A");
    chain_b.del(&cb, "eth0").unwrap();
    assert_eq!(uapi_sockets(&dev_b), Vec::<String>::new());
    chain_b.del(&cb, "eth0").unwrap();
}
