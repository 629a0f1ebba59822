//! The specs in examples/: each composes (`netsvc compose`) into a conflist
//! `netsvc validate` accepts, and `netsvc exec` runs that conflist for real
//! on a node namespace: ADD, CHECK and DEL, with traffic where the example
//! promises some.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use netsvc_tests::chain::{self, container_ip};
use netsvc_tests::{Container, EchoServer, TestNode, output_with_timeout};
use serde_json::Value;

const T: Duration = Duration::from_secs(10);

fn netsvc(node: &TestNode, args: &[&str]) -> Output {
    let mut cmd = node.command(chain::plugin_dir().join("netsvc"));
    cmd.args(args);
    output_with_timeout(&mut cmd, Duration::from_secs(30)).unwrap()
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Composes `examples/<name>.yaml`, has it validated, and writes it for the
/// node (host-local's leases in the node's state dir: the one change).
fn composed(node: &TestNode, name: &str) -> PathBuf {
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../examples/{name}.yaml"));
    let text = ok(netsvc(node, &["compose", spec.to_str().unwrap()]), "compose");
    let raw = node.state_dir().join(format!("{name}.raw.conflist"));
    std::fs::write(&raw, &text).unwrap();
    ok(netsvc(node, &["validate", raw.to_str().unwrap()]), "validate");
    let mut conf: Value = serde_json::from_str(&text).unwrap();
    conf["plugins"][0]["ipam"]["dataDir"] = Value::String(node.ipam_dir().display().to_string());
    let path = node.state_dir().join(format!("{name}.conflist"));
    std::fs::write(&path, serde_json::to_vec_pretty(&conf).unwrap()).unwrap();
    path
}

/// `netsvc exec OP conflist netns` for container `c`, named and labelled.
fn exec(node: &TestNode, op: &str, list: &Path, c: &Container, who: Option<(&str, &str)>) -> Output {
    let cache = node.state_dir().join("cli-cache");
    let mut args = vec![op, list.to_str().unwrap(), c.netns_path().to_str().unwrap()];
    let cni_path = chain::cni_path().into_string().unwrap();
    let cache = cache.to_str().unwrap().to_string();
    args.extend(["--cache-dir", &cache, "--cni-path", &cni_path]);
    let identity = who.map(|(name, tier)| format!("IgnoreUnknown=1;NETSVC_NAME={name};NETSVC_LABELS=tier:{tier}"));
    if let Some(identity) = &identity {
        args.extend(["--args", identity]);
    }
    let mut full = vec!["exec"];
    full.extend(args);
    netsvc(node, &full)
}

fn add(node: &TestNode, list: &Path, c: &Container, who: Option<(&str, &str)>) -> Value {
    serde_json::from_str(&ok(exec(node, "add", list, c, who), "exec add")).unwrap()
}

fn check_and_del(node: &TestNode, list: &Path, c: &Container) {
    ok(exec(node, "check", list, c, None), "exec check");
    ok(exec(node, "del", list, c, None), "exec del");
}

#[test]
fn tiered_web_app() {
    let node = TestNode::new().unwrap();
    let list = composed(&node, "tiered-web");
    let (web, api, db) = (
        node.container("web").unwrap(),
        node.container("api").unwrap(),
        node.container("db").unwrap(),
    );
    add(&node, &list, &web, Some(("web", "web")));
    let r_api = add(&node, &list, &api, Some(("api-1", "api")));
    let r_db = add(&node, &list, &db, Some(("db", "db")));
    let api_server = EchoServer::start(&api, "0.0.0.0:8080".parse().unwrap(), "api").unwrap();
    let db_server = EchoServer::start(&db, "0.0.0.0:5432".parse().unwrap(), "db").unwrap();
    // web reaches the api replicas through the VIP; the firewall lets it.
    let reply = web.tcp_echo("10.96.10.10:80".parse().unwrap(), "order", T).unwrap();
    assert_eq!(reply.identity, api_server.identity());
    // web may not talk to db: only api may.
    let db_addr = std::net::SocketAddr::new(container_ip(&r_db, "eth0").unwrap(), db_server.port());
    assert!(web.tcp_echo(db_addr, "peek", Duration::from_secs(2)).is_err());
    let api_ip = container_ip(&r_api, "eth0").unwrap();
    assert_eq!(api.tcp_echo(db_addr, "query", T).unwrap().identity, "db");
    // Names, from the resolver at the gateway: the service's is its VIP,
    // a container's is its address.
    let dig = |name: &str| {
        let answer = web.exec("dig", ["+short", "+time=2", "@10.88.10.1", name]).unwrap();
        answer.trim().to_string()
    };
    assert_eq!(dig("api.shop.internal"), "10.96.10.10");
    assert_eq!(dig("api-1.shop.internal"), api_ip.to_string());
    // `netsvc status` shows the service with its backend, and the policies.
    let status = ok(netsvc(&node, &["status", "--network", "shop"]), "status");
    let api_id = format!("{}:eth0", api.name());
    assert!(
        status.contains(&format!(
            "service api  vip 10.96.10.10  ports 80->8080/tcp  backends {api_id}"
        )),
        "{status}"
    );
    assert!(
        status.contains("firewall  default ingress deny  policies web-from-anywhere, api-from-web, db-from-api"),
        "{status}"
    );
    let json: Value = serde_json::from_str(&ok(netsvc(&node, &["status", "--format", "json"]), "status")).unwrap();
    assert_eq!(json["networks"][0]["endpoints"].as_array().unwrap().len(), 3);
    for c in [&web, &api, &db] {
        check_and_del(&node, &list, c);
    }
}

#[test]
fn rate_limited_tenant() {
    let node = TestNode::new().unwrap();
    let list = composed(&node, "rate-limited-tenant");
    let c = node.container("tenant").unwrap();
    add(&node, &list, &c, Some(("tenant", "tenant")));
    let host = c.veth_peer_in("eth0", &node).unwrap();
    let classes = node.exec("tc", ["class", "show", "dev", &host]).unwrap();
    assert!(classes.contains("rate 50Mbit"), "{classes}");
    assert_eq!(node.links_of_kind("ifb").unwrap().len(), 1);
    let status = ok(netsvc(&node, &["status"]), "status");
    assert!(
        status.contains("to it 50.000 Mbit/s  from it 50.000 Mbit/s"),
        "{status}"
    );
    check_and_del(&node, &list, &c);
    assert_eq!(node.links_of_kind("ifb").unwrap().len(), 0);
}

#[test]
fn site_vpn() {
    let node = TestNode::new().unwrap();
    let list = composed(&node, "site-vpn");
    let c = node.container("branch").unwrap();
    let result = add(&node, &list, &c, Some(("branch", "branch")));
    assert!(
        result["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == "wg0")
    );
    let routes = c.ip(["route", "show"]).unwrap();
    assert!(routes.contains("10.50.0.0/16 dev wg0"), "{routes}");
    assert!(
        routes.contains("default via 10.88.30.1"),
        "the rest leaves by the bridge: {routes}"
    );
    check_and_del(&node, &list, &c);
    assert!(!c.ip(["link", "show"]).unwrap().contains("wg0"));
}
