//! netsvc-vpn on real namespaces with wireguard-go: a container reaches a
//! remote site only through its tunnel and the underlay carries nothing but
//! WireGuard's UDP; ADD/DEL cycles leave no device, process or socket;
//! private keys appear nowhere; bad input is refused whole.

use std::time::Duration;

use netsvc_tests::capture::Capture;
use netsvc_tests::chain::{CallArgs, plugin_dir};
use netsvc_tests::wireguard::{HandDevice, KeyPair, uapi_sockets, wireguard_go_processes};
use netsvc_tests::{Container, EchoServer, Netns, TestNode, files_under, unique_name, with_stdin};
use netsvc_vpn::tunnel::device_name;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(10);
const SITE_PORT: u16 = 51820;

/// A "remote site": a namespace on the node's underlay (10.98.0.0/24) whose
/// hand-configured WireGuard device serves 10.50.0.0/16.
struct Site {
    ns: Netns,
    device: HandDevice,
}

impl Site {
    fn new(node: &TestNode) -> Site {
        let ns = Netns::create("site").unwrap();
        node.veth("up0", &ns, "up0").unwrap();
        node.add_addr("up0", "10.98.0.1/24").unwrap();
        ns.add_addr("up0", "10.98.0.2/24").unwrap();
        let name: String = unique_name("wgs").chars().take(15).collect();
        let device = HandDevice::start(&ns, &name, SITE_PORT, "10.50.0.1/16").unwrap();
        Site { ns, device }
    }

    /// Lets the tunnel with key `public` and address `address` in.
    fn admit(&self, public: &str, address: &str) {
        self.device.set_peer(&self.ns, public, None, address).unwrap();
        self.ns
            .ip(["route", "replace", address, "dev", &self.device.name])
            .unwrap();
    }

    fn tunnel_conf(&self, extra: Value) -> Value {
        let mut v = json!({"type": "netsvc-vpn", "mode": "tunnel", "address": "10.200.0.2/32",
            "peers": [{"publicKey": self.device.keys.public, "endpoint": format!("10.98.0.2:{SITE_PORT}"),
                       "allowedIPs": ["10.50.0.0/16"]}]});
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        v
    }
}

/// Nothing of the tunnel of `container`/`ifname` is left: no socket, no
/// wireguard-go, no device in the container.
fn assert_no_tunnel(c: &Container, ifname: &str, inner: &str) {
    let device = device_name(c.name(), ifname);
    assert_eq!(uapi_sockets(&device), Vec::<String>::new());
    assert_eq!(wireguard_go_processes(&device), Vec::<String>::new());
    let links = c.ip(["-o", "link", "show"]).unwrap();
    assert!(!links.contains(inner) && !links.contains(&device), "{links}");
}

#[test]
fn a_container_reaches_the_remote_site_only_through_its_tunnel() {
    let node = TestNode::new().unwrap();
    let site = Site::new(&node);
    let keys = KeyPair::generate().unwrap();
    let key_file = keys.write_private(node.state_dir(), "tunnel.key").unwrap();
    site.admit(&keys.public, "10.200.0.2/32");
    let conf = site.tunnel_conf(json!({"privateKeyFile": key_file, "routes": null}));
    let chain = node
        .chain(&node.bridge_conflist("vpnsite", "1.0.0", "10.247.0.0/24", vec![conf]))
        .unwrap();
    let c = node.container("c").unwrap();
    let result = chain.add_with(&c, "eth0", &CallArgs::endpoint("c", None)).unwrap();

    // The result names the tunnel's device in the container and its address.
    let wg0 = result["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .position(|i| i["name"] == "wg0")
        .unwrap();
    assert_eq!(
        result["interfaces"][wg0]["sandbox"],
        c.netns_path().display().to_string()
    );
    let routes = result["routes"].as_array().unwrap();
    let defaults: Vec<&Value> = routes.iter().filter(|r| r["dst"] == "0.0.0.0/0").collect();
    assert_eq!(
        defaults.len(),
        1,
        "the tunnel's default route replaces the bridge's: {result}"
    );
    assert!(defaults[0].get("gw").is_none(), "{result}");
    // The container's default route is the tunnel's; eth0 keeps only its subnet.
    let routes = c.ip(["route", "show"]).unwrap();
    assert!(routes.contains("default dev wg0"), "{routes}");
    assert!(!routes.contains("default via"), "{routes}");
    // The encrypted socket is on the node, not in the container.
    let node_udp = node.exec("ss", ["-uan"]).unwrap();
    assert!(
        node_udp.lines().count() > 1,
        "the node holds the tunnel's UDP socket: {node_udp}"
    );
    assert_eq!(
        c.exec("ss", ["-uanH"]).unwrap().trim(),
        "",
        "no socket in the container"
    );

    let server = EchoServer::start(&site.ns, "10.50.0.1:7000".parse().unwrap(), "site").unwrap();
    let capture = Capture::start(&site.ns, "up0").unwrap();
    let marker = "PLAINTEXT-MARKER-4242";
    let reply = c.tcp_echo(server.addr(), marker, T).unwrap();
    assert_eq!(reply.identity, "site");
    assert!(c.ping("10.50.0.1".parse().unwrap(), 2, T));
    // Underlay addresses are not reachable from the container: not the
    // site's, not the node's.
    assert!(!c.ping("10.98.0.2".parse().unwrap(), 1, Duration::from_secs(2)));
    assert!(!c.ping("10.98.0.1".parse().unwrap(), 1, Duration::from_secs(2)));
    let seen = capture.stop().unwrap();
    assert!(!seen.packets.is_empty(), "the capture saw the tunnel's traffic");
    for p in &seen.packets {
        let wireguard = p.contains(&format!("10.98.0.2.{SITE_PORT}")) && p.contains(": UDP");
        // ARP and IPv6's own link chatter (neighbour discovery, MLD) are the
        // link's, not the container's.
        // ICMPv6 only of those kinds: an echo, or any other ICMPv6 of the
        // container's, would be plaintext on the underlay.
        let link_chatter = p.contains(" ARP,")
            || [
                "neighbor solicitation",
                "neighbor advertisement",
                "router solicitation",
                "multicast listener report",
            ]
            .iter()
            .any(|kind| p.contains(&format!("ICMP6, {kind}")));
        assert!(
            wireguard || link_chatter,
            "only WireGuard's UDP crosses the underlay: {p}"
        );
    }
    assert!(!seen.text.contains(marker), "no plaintext on the underlay");
    assert!(!seen.text.contains("ICMP echo"), "no plaintext ping on the underlay");

    chain.check(&c, "eth0").unwrap();
    chain.del(&c, "eth0").unwrap();
    assert_no_tunnel(&c, "eth0", "wg0");
    chain.del(&c, "eth0").unwrap();
}

/// Runs the plugin binary once as a runtime would, in the node's namespace:
/// (exit status, stdout, stderr).
fn run_plugin(node: &TestNode, command: &str, c: &Container, ifname: &str, conf: &Value) -> (bool, String, String) {
    let mut cmd = node.command(plugin_dir().join("netsvc-vpn"));
    cmd.env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", c.name())
        .env("CNI_NETNS", c.netns_path())
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", plugin_dir())
        .env("RUST_LOG", "trace");
    let out = with_stdin(&mut cmd, &serde_json::to_vec(conf).unwrap()).unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn a_hundred_add_del_cycles_leave_nothing_and_no_private_key_is_ever_shown() {
    let node = TestNode::new().unwrap();
    let site = Site::new(&node);
    // The tunnel alone: the container's only interface, as in WireGuard's
    // namespace pattern, with a key made per attachment.
    let conf = json!({"cniVersion": "1.0.0", "name": "vpncycle",
        "plugins": [site.tunnel_conf(json!({}))]});
    let mut single = conf["plugins"][0].clone();
    single["cniVersion"] = json!("1.0.0");
    single["name"] = json!("vpncycle");
    let chain = node.chain(&conf).unwrap();
    let c = node.container("c").unwrap();
    let device = device_name(c.name(), "tun0");
    for i in 0..100 {
        if i == 0 {
            let (ok, stdout, stderr) = run_plugin(&node, "ADD", &c, "tun0", &single);
            assert!(ok, "{stdout} {stderr}");
            // The device holds a private key; it is in no output and no file
            // of ours (only the public key is recorded).
            let private = c
                .exec("wg", ["show", &device, "private-key"])
                .unwrap()
                .trim()
                .to_string();
            let public = c
                .exec("wg", ["show", &device, "public-key"])
                .unwrap()
                .trim()
                .to_string();
            assert_eq!(private.len(), 44);
            let files = files_under(node.state_dir(), ".key");
            assert!(
                files.iter().any(|(_, text)| text.contains(&public)),
                "the public key is recorded"
            );
            for (what, text) in [("stdout", &stdout), ("stderr", &stderr)]
                .into_iter()
                .chain(files.iter().map(|(p, t)| (p.as_str(), t)))
            {
                assert!(!text.contains(&private), "the private key is in {what}");
            }
            let result: Value = serde_json::from_str(&stdout).unwrap();
            assert_eq!(result["interfaces"][0]["name"], "tun0");
            assert!(c.ip(["route", "show"]).unwrap().contains("default dev tun0"));
            site.admit(&public, "10.200.0.2/32");
            assert!(c.ping("10.50.0.1".parse().unwrap(), 1, T), "the tunnel carries traffic");
            let (ok, stdout, stderr) = run_plugin(&node, "CHECK", &c, "tun0", &with_prev(&single, &result));
            assert!(ok, "{stdout} {stderr}");
            let (ok, stdout, stderr) = run_plugin(&node, "DEL", &c, "tun0", &single);
            assert!(ok, "{stdout} {stderr}");
            assert!(!stderr.contains(&private) && !stdout.contains(&private));
        } else {
            chain.add(&c, "tun0").unwrap_or_else(|e| panic!("ADD {i}: {e}"));
            chain.del(&c, "tun0").unwrap_or_else(|e| panic!("DEL {i}: {e}"));
        }
    }
    assert_no_tunnel(&c, "tun0", "tun0");
    assert!(node.links().unwrap().iter().all(|l| !l.ifname.starts_with("nsv")));
    let recorded = files_under(node.state_dir(), ".key");
    assert!(
        recorded.iter().all(|(path, _)| !path.contains("netsvc-vpn")),
        "no record is left: {recorded:?}"
    );
}

fn with_prev(conf: &Value, result: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = result.clone();
    c
}

#[test]
fn bad_input_is_code_7_naming_the_field_and_leaves_nothing() {
    let node = TestNode::new().unwrap();
    let site = Site::new(&node);
    let key = site.device.keys.public.clone();
    let peer = |extra: Value| {
        let mut p = json!({"publicKey": key, "endpoint": "10.98.0.2:51820", "allowedIPs": ["10.50.0.0/16"]});
        p.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        json!({"peers": [p]})
    };
    for (extra, field) in [
        (peer(json!({"publicKey": "bm90IGEga2V5"})), "peers[0].publicKey"),
        (peer(json!({"endpoint": "10.98.0.2"})), "peers[0].endpoint"),
        (peer(json!({"allowedIPs": ["10.50.0.0/40"]})), "peers[0].allowedIPs[0]"),
        (json!({"address": "10.200.0.2"}), "address"),
        (json!({"mtu": 70000}), "mtu"),
    ] {
        let conf = json!({"cniVersion": "1.0.0", "name": "vpnbad", "plugins": [site.tunnel_conf(extra.clone())]});
        let chain = node.chain(&conf).unwrap();
        let c = node.container("c").unwrap();
        let err = chain.add(&c, "tun0").unwrap_err();
        assert_eq!(err.cni().code, 7, "{extra}: {err}");
        assert!(err.cni().msg.contains(field), "{extra}: {err} does not name {field}");
        assert_no_tunnel(&c, "tun0", "tun0");
    }
}

#[test]
fn gc_removes_tunnels_of_gone_attachments_and_orphan_devices_and_status_says_what_can_run() {
    let node = TestNode::new().unwrap();
    let site = Site::new(&node);
    // GC and STATUS exist from 1.1.0: the tunnel alone speaks it.
    let conf = |extra: Value| json!({"cniVersion": "1.1.0", "name": "vpngc", "plugins": [site.tunnel_conf(extra)]});
    let chain = node.chain(&conf(json!({}))).unwrap();
    chain.status().unwrap();
    let (a, b) = (node.container("a").unwrap(), node.container("b").unwrap());
    chain.add(&a, "tun0").unwrap();
    chain.add(&b, "tun0").unwrap();
    // A device of ours nobody holds (a crash between steps, say).
    let orphan = HandDevice::start(&node, "nsv000000000000", 0, "10.201.0.1/32").unwrap();
    assert_eq!(wireguard_go_processes(&orphan.name).len(), 1);
    // Links that only look like ours: a name that shares the prefix, and
    // one of our form that is no WireGuard device.
    let lookalikes = ["nsmith0", "nsv0000000000aa"];
    for name in lookalikes {
        add_foreign_link(&node, name);
    }

    chain.gc(&[(&a, "tun0")]).unwrap();
    for name in lookalikes {
        assert!(is_foreign_link(&node, name), "GC leaves {name}");
    }
    let dev_a = device_name(a.name(), "tun0");
    assert_eq!(uapi_sockets(&dev_a).len(), 1, "a's tunnel stays");
    chain.check(&a, "tun0").unwrap();
    assert_no_tunnel(&b, "tun0", "tun0");
    assert_eq!(uapi_sockets(&orphan.name), Vec::<String>::new());
    assert_eq!(wireguard_go_processes(&orphan.name), Vec::<String>::new());

    // CHECK sees a tunnel whose device went away (code 120).
    a.ip(["link", "del", "tun0"]).unwrap();
    let err = chain.check(&a, "tun0").unwrap_err();
    assert_eq!(err.cni().code, 120, "{err}");
    chain.del(&a, "tun0").unwrap();
    assert_no_tunnel(&a, "tun0", "tun0");

    // STATUS: the kernel backend forced is 50 on a kernel without WireGuard,
    // and runs on one with it. Whether this kernel has it: `ip` makes a
    // kernel WireGuard device in the node (loading the module if there is one).
    let kernel_wireguard = node.ip(["link", "add", "wgprobe0", "type", "wireguard"]).is_ok();
    if kernel_wireguard {
        node.ip(["link", "del", "wgprobe0"]).unwrap();
    }
    let forced = node.chain(&conf(json!({"backend": "kernel"}))).unwrap();
    if kernel_wireguard {
        forced.status().unwrap();
        forced.add(&a, "tun0").unwrap();
        forced.check(&a, "tun0").unwrap();
        forced.del(&a, "tun0").unwrap();
    } else {
        let err = forced.status().unwrap_err();
        assert_eq!(err.cni().code, 50, "{err}");
        let err = forced.add(&a, "tun0").unwrap_err();
        assert_eq!(err.cni().code, 50, "{err}");
    }
    assert_no_tunnel(&a, "tun0", "tun0");
}

/// Makes interface `name` in `ns` as someone else would: an ifb (this
/// kernel has no dummy driver), a link of no plugin's.
fn add_foreign_link(ns: &Netns, name: &str) {
    ns.ip(["link", "add", name, "type", "ifb"]).unwrap();
}

/// Whether `ns` still has the interface `name` made by [`add_foreign_link`].
fn is_foreign_link(ns: &Netns, name: &str) -> bool {
    ns.ip(["-d", "-o", "link", "show", name])
        .is_ok_and(|l| l.contains(" ifb "))
}

/// Nothing of tunnel device `device` is on the node: no link, no
/// wireguard-go, no UAPI socket.
fn assert_nothing_on_node(node: &TestNode, device: &str) {
    assert_eq!(uapi_sockets(device), Vec::<String>::new());
    assert_eq!(wireguard_go_processes(device), Vec::<String>::new());
    let links = node.ip(["-o", "link", "show"]).unwrap();
    assert!(!links.contains(device), "{links}");
}

#[test]
fn an_interface_the_container_already_has_is_refused_and_left_alone() {
    let node = TestNode::new().unwrap();
    let site = Site::new(&node);
    // The device's name in the container: the runtime's CNI_IFNAME, or the
    // config's `interface`.
    for (extra, taken, code, names) in [
        (json!({}), "tun0", 4, "CNI_IFNAME"),
        (json!({"interface": "vpn0"}), "vpn0", 7, "interface"),
    ] {
        let conf = json!({"cniVersion": "1.0.0", "name": "vpnclash", "plugins": [site.tunnel_conf(extra)]});
        let chain = node.chain(&conf).unwrap();
        let c = node.container("c").unwrap();
        add_foreign_link(&c, taken);
        c.ip(["addr", "add", "192.0.2.7/32", "dev", taken]).unwrap();

        let err = chain.add(&c, "tun0").unwrap_err();
        assert!(is_foreign_link(&c, taken), "the container's {taken} is left ({err})");
        assert!(c.ip(["addr", "show", taken]).unwrap().contains("192.0.2.7/32"));
        let cni = err.cni();
        assert_eq!(cni.code, code, "{err}");
        for part in [names, taken, c.name()] {
            assert!(cni.msg.contains(part), "{err} does not name {part}");
        }
        let device = device_name(c.name(), "tun0");
        assert_nothing_on_node(&node, &device);
        assert!(!c.ip(["-o", "link", "show"]).unwrap().contains(&device));

        // As a runtime does after a failed ADD: DEL, which leaves it too.
        chain.del(&c, "tun0").unwrap();
        assert!(is_foreign_link(&c, taken), "DEL leaves the container's {taken}");
        assert_nothing_on_node(&node, &device);
    }
}

#[test]
fn del_and_check_leave_an_interface_that_took_the_tunnels_name() {
    let node = TestNode::new().unwrap();
    let site = Site::new(&node);
    let conf = json!({"cniVersion": "1.0.0", "name": "vpntaken", "plugins": [site.tunnel_conf(json!({}))]});
    let chain = node.chain(&conf).unwrap();
    let c = node.container("c").unwrap();
    chain.add(&c, "tun0").unwrap();
    // The tunnel's device goes, and another interface takes its name.
    c.ip(["link", "del", "tun0"]).unwrap();
    add_foreign_link(&c, "tun0");
    c.ip(["link", "set", "tun0", "up"]).unwrap();

    let err = chain.check(&c, "tun0").unwrap_err();
    assert_eq!(err.cni().code, 120, "{err}");
    chain.del(&c, "tun0").unwrap();
    assert!(is_foreign_link(&c, "tun0"), "DEL leaves an interface it did not make");
    assert_nothing_on_node(&node, &device_name(c.name(), "tun0"));
}

#[test]
fn a_failed_add_removes_the_device_it_made_and_nothing_else() {
    let node = TestNode::new().unwrap();
    let site = Site::new(&node);
    let conf = json!({"cniVersion": "1.0.0", "name": "vpnundo", "plugins": [site.tunnel_conf(json!({}))]});
    let chain = node.chain(&conf).unwrap();
    let c = node.container("c").unwrap();
    // The node-side name is taken in the container: the device is made and
    // configured on the node, then cannot move in.
    let device = device_name(c.name(), "tun0");
    add_foreign_link(&c, &device);

    let err = chain.add(&c, "tun0").unwrap_err();
    assert_ne!(err.cni().code, 0, "{err}");
    assert_nothing_on_node(&node, &device);
    assert!(is_foreign_link(&c, &device), "the container's {device} is left");
    assert!(c.ip(["link", "show", "tun0"]).is_err(), "no tun0 in the container");
    chain.del(&c, "tun0").unwrap();
    assert!(is_foreign_link(&c, &device));
}
