//! VPN faults leave no device behind. netsvc-vpn (a tunnel, and a node's
//! mesh device) killed at each step of ADD and DEL (a failpoint, or SIGKILL
//! at a random moment), failing, or on a store that cannot be written, then
//! the runtime's DEL: afterwards no WireGuard device of the attachment is
//! left on the node or in the container, no wireguard-go serves it and no
//! UAPI socket is left, the store forgets it, and another tunnel still
//! holds. A repair lists what differs, fixes what it can, and then finds
//! nothing more.

mod faults_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use faults_support::{SmallDisk, add_failing_at, args, assert_store_forgets, killed_after, repair, with_failpoint};
use netsvc_tests::chain::Chain;
use netsvc_tests::wireguard::{HandDevice, SITE_KEYS, Site, uapi_sockets, wireguard_go_processes};
use netsvc_tests::{Container, TestNode, poll_until, unique_name};
use netsvc_vpn::tunnel::device_name;
use serde_json::{Value, json};

const NETWORK: &str = "faultsv";
const PLUGIN: &str = "netsvc-vpn";
const IFNAME: &str = "tun0";

/// Nothing of WireGuard device `device` on the node: no link, no
/// wireguard-go, no UAPI socket.
fn assert_no_device(node: &TestNode, device: &str, when: &str) {
    assert_eq!(uapi_sockets(device), Vec::<String>::new(), "{when}");
    assert_eq!(wireguard_go_processes(device), Vec::<String>::new(), "{when}");
    let links = node.ip(["-o", "link", "show"]).unwrap();
    assert!(!links.contains(device), "{when}: {links}");
}

/// A node with a remote site and a bystander's tunnel to it.
struct Tunnels {
    node: TestNode,
    _site: Site,
    bystander: Container,
    state_dir: Option<PathBuf>,
}

impl Tunnels {
    fn new(state_dir: Option<&Path>) -> Tunnels {
        let node = TestNode::new().unwrap();
        let site = Site::start(&node).unwrap();
        let bystander = node.container("bystander").unwrap();
        let scene = Tunnels {
            node,
            _site: site,
            bystander,
            state_dir: state_dir.map(Path::to_path_buf),
        };
        scene
            .chain()
            .add_with(&scene.bystander, IFNAME, &args("bystander", None))
            .unwrap();
        scene.chain().check(&scene.bystander, IFNAME).unwrap();
        scene
    }

    /// The tunnel alone: the container's only interface.
    fn chain(&self) -> Chain<'_> {
        let mut vpn = json!({"type": PLUGIN, "mode": "tunnel", "address": "10.200.0.2/32",
            "peers": [{"publicKey": SITE_KEYS.1, "endpoint": "192.0.2.1:51820", "allowedIPs": ["10.50.0.0/16"]}]});
        if let Some(dir) = &self.state_dir {
            vpn["stateDir"] = json!(dir);
        }
        self.node
            .chain(&json!({"cniVersion": "1.0.0", "name": NETWORK, "plugins": [vpn]}))
            .unwrap()
    }

    fn state_dir(&self) -> &Path {
        self.state_dir.as_deref().unwrap_or(self.node.state_dir())
    }

    /// Nothing of `victim`'s tunnel on the node, in the container or the
    /// store; the bystander's tunnel intact.
    fn assert_nothing_left(&self, victim: &Container, when: &str) {
        let device = device_name(victim.name(), IFNAME);
        assert_no_device(&self.node, &device, when);
        let inside = victim.ip(["-o", "link", "show"]).unwrap();
        assert!(
            !inside.contains(IFNAME) && !inside.contains(&device),
            "{when}: {inside}"
        );
        assert_store_forgets(self.state_dir(), "victim", when);
        self.chain()
            .check(&self.bystander, IFNAME)
            .unwrap_or_else(|e| panic!("{when}: the bystander's tunnel: {e}"));
    }

    /// A new container gets a tunnel as usual and leaves nothing.
    fn assert_next_gets_its_own(&self, when: &str) {
        let next = self.node.container("next").unwrap();
        self.chain()
            .add_with(&next, IFNAME, &args("next", None))
            .unwrap_or_else(|e| panic!("{when}: ADD next: {e}"));
        self.chain().check(&next, IFNAME).unwrap();
        self.chain().del(&next, IFNAME).unwrap();
        assert_no_device(&self.node, &device_name(next.name(), IFNAME), when);
    }
}

fn tunnel_killed_at(step: &str) {
    let scene = Tunnels::new(None);
    let victim = scene.node.container("victim").unwrap();
    let point = format!("{PLUGIN}/{step}");
    let mut faulty = scene.chain();
    with_failpoint(&mut faulty, &format!("{point}=kill"));
    if step.starts_with("add/") {
        let err = faulty
            .add_with(&victim, IFNAME, &args("victim", None))
            .expect_err("killed ADD fails");
        assert!(err.to_string().contains(PLUGIN), "{point}: {err}");
    } else {
        scene.chain().add_with(&victim, IFNAME, &args("victim", None)).unwrap();
        faulty.del(&victim, IFNAME).expect_err("killed DEL fails");
    }
    scene
        .chain()
        .del(&victim, IFNAME)
        .unwrap_or_else(|e| panic!("{point}: DEL after the kill: {e}"));
    scene.assert_nothing_left(&victim, &point);
    scene.assert_next_gets_its_own(&point);
}

#[test]
fn tunnel_add_killed_after_its_intent_is_recorded() {
    tunnel_killed_at("add/staged");
}

#[test]
fn tunnel_add_killed_after_the_device_is_up() {
    tunnel_killed_at("add/programmed");
}

#[test]
fn tunnel_del_killed_after_its_intent_is_recorded() {
    tunnel_killed_at("del/staged");
}

#[test]
fn tunnel_del_killed_after_the_device_is_gone() {
    tunnel_killed_at("del/programmed");
}

#[test]
fn tunnel_add_failing_undoes_itself() {
    let scene = Tunnels::new(None);
    let victim = scene.node.container("victim").unwrap();
    let point = format!("{PLUGIN}/add/programmed");
    add_failing_at(scene.chain(), &point, &victim, IFNAME, &args("victim", None));
    // Undone before it answered.
    scene.assert_nothing_left(&victim, &point);
    scene.chain().del(&victim, IFNAME).unwrap();
    scene.assert_nothing_left(&victim, &point);
    scene.assert_next_gets_its_own(&point);
}

#[test]
fn tunnel_calls_killed_at_random_moments_leave_no_device() {
    let scene = Tunnels::new(None);
    let mut rng = faults_support::Lcg::seeded();
    let seed = rng.0;
    let mut kills = 0;
    for round in 0..10 {
        let when = format!("seed {seed} round {round}");
        let victim = scene.node.container(&format!("victim{round}")).unwrap();
        let del = round % 2 == 1;
        let chain = scene.chain();
        if del {
            chain.add_with(&victim, IFNAME, &args("victim", None)).unwrap();
        }
        let delay = Duration::from_micros(rng.below(if del { 30_000 } else { 80_000 }));
        kills += usize::from(killed_after(&scene.node, PLUGIN, delay, || {
            if del {
                chain.del(&victim, IFNAME).map(drop)
            } else {
                chain.add_with(&victim, IFNAME, &args("victim", None)).map(drop)
            }
        }));
        chain
            .del(&victim, IFNAME)
            .unwrap_or_else(|e| panic!("{when}: DEL after the kill: {e}"));
        scene.assert_nothing_left(&victim, &when);
    }
    scene.assert_next_gets_its_own("after the rounds");
    eprintln!("{kills} of 10 calls killed (seed {seed})");
}

#[test]
fn tunnel_del_on_a_full_disk_still_removes_the_device_and_add_makes_none() {
    let disk = SmallDisk::new();
    let scene = Tunnels::new(Some(&disk.dir));
    let victim = scene.node.container("victim").unwrap();
    scene.chain().add_with(&victim, IFNAME, &args("victim", None)).unwrap();
    disk.fill();
    let other = scene.node.container("other").unwrap();
    let err = scene
        .chain()
        .add_with(&other, IFNAME, &args("other", None))
        .expect_err("ADD on a full disk");
    assert!(err.to_string().contains("No space left"), "a clear error: {err}");
    assert_no_device(&scene.node, &device_name(other.name(), IFNAME), "ADD on a full disk");
    scene.chain().del(&other, IFNAME).unwrap();
    // The DEL's intent cannot be written: the device goes all the same, and
    // DEL fails (the runtime retries) unless the removal alone fits (a
    // deleted document frees room; on this tmpfs it does).
    if let Err(err) = scene.chain().del(&victim, IFNAME) {
        assert!(err.to_string().contains("No space left"), "a clear error: {err}");
    }
    assert_no_device(&scene.node, &device_name(victim.name(), IFNAME), "DEL on a full disk");
    disk.free();
    scene.chain().del(&victim, IFNAME).unwrap();
    scene.assert_nothing_left(&victim, "disk freed");
    scene.assert_next_gets_its_own("disk freed");
}

/// A node whose containers are meshed: the node's device is made with its
/// first endpoint on the network and goes with its last.
struct Mesh {
    node: TestNode,
    /// The mesh node's name: unique on the host, as its device's name is.
    name: String,
}

impl Mesh {
    fn new() -> Mesh {
        let node = TestNode::new().unwrap();
        node.dead_end_link("ul0").unwrap();
        node.add_addr("ul0", "192.0.2.20/24").unwrap();
        Mesh {
            node,
            name: unique_name("n"),
        }
    }

    fn conf(&self) -> Value {
        let vpn = json!({"type": PLUGIN, "mode": "mesh", "endpoint": "192.0.2.20",
            "podSubnet": "10.88.7.0/24", "node": self.name, "mtu": 1420});
        self.node.bridge_conflist(NETWORK, "1.0.0", "10.88.7.0/24", vec![vpn])
    }

    fn chain(&self) -> Chain<'_> {
        self.node.chain(&self.conf()).unwrap()
    }

    fn device(&self) -> String {
        netsvc_vpn::mesh::device_name(&self.name, NETWORK)
    }

    /// CHECK passes once the keeper the ADD started holds its lock.
    fn assert_checks(&self, c: &Container) {
        let passed = poll_until(Duration::from_secs(5), || self.chain().check(c, "eth0").ok());
        if passed.is_none() {
            self.chain().check(c, "eth0").unwrap();
        }
    }

    /// The node's mesh device, its wireguard-go, its keeper and its
    /// published peer are gone; the store forgets the victim.
    fn assert_nothing_left(&self, when: &str) {
        assert_no_device(&self.node, &self.device(), when);
        let keeper = format!("keep-mesh {} {NETWORK} {}", self.node.state_dir().display(), self.name);
        let stopped = poll_until(Duration::from_secs(5), || {
            let running = self.node.exec("pgrep", ["-f", &keeper]).unwrap_or_default();
            running.trim().is_empty().then_some(())
        });
        assert!(stopped.is_some(), "{when}: the keeper of {} exits", self.device());
        assert_store_forgets(self.node.state_dir(), "victim", when);
        assert_store_forgets(self.node.state_dir(), &self.name, when);
    }
}

fn mesh_killed_at(step: &str) {
    let scene = Mesh::new();
    let victim = scene.node.container("victim").unwrap();
    let point = format!("{PLUGIN}/{step}");
    let mut faulty = scene.chain();
    with_failpoint(&mut faulty, &format!("{point}=kill"));
    if step.starts_with("add/") {
        faulty
            .add_with(&victim, "eth0", &args("victim", None))
            .expect_err("killed ADD fails");
    } else {
        scene.chain().add_with(&victim, "eth0", &args("victim", None)).unwrap();
        scene.assert_checks(&victim);
        faulty.del(&victim, "eth0").expect_err("killed DEL fails");
    }
    scene
        .chain()
        .del(&victim, "eth0")
        .unwrap_or_else(|e| panic!("{point}: DEL after the kill: {e}"));
    scene.assert_nothing_left(&point);
    // The next container meshes as usual.
    let next = scene.node.container("next").unwrap();
    scene.chain().add_with(&next, "eth0", &args("next", None)).unwrap();
    scene.assert_checks(&next);
    scene.chain().del(&next, "eth0").unwrap();
}

#[test]
fn mesh_add_killed_after_its_intent_is_recorded() {
    mesh_killed_at("add/staged");
}

#[test]
fn mesh_add_killed_after_the_device_is_up() {
    mesh_killed_at("add/programmed");
}

#[test]
fn mesh_del_killed_after_its_intent_is_recorded() {
    mesh_killed_at("del/staged");
}

#[test]
fn mesh_del_killed_after_the_device_is_gone() {
    mesh_killed_at("del/programmed");
}

/// Kills `op` right after the n-th document the store writes for it, for
/// every n until the call runs through: each commit cut off halfway (an
/// endpoint's member record gone and its node's peer not yet) is finished
/// by the runtime's next DEL.
fn mesh_cut_off_after_each_document(op: &str) {
    let scene = Mesh::new();
    for n in 1.. {
        let when = format!("{op} killed after document {n}");
        let victim = scene.node.container(&format!("victim{n}")).unwrap();
        let mut faulty = scene.chain();
        with_failpoint(&mut faulty, &format!("store/write/{n}=kill"));
        let killed = if op == "add" {
            faulty.add_with(&victim, "eth0", &args("victim", None)).is_err()
        } else {
            scene.chain().add_with(&victim, "eth0", &args("victim", None)).unwrap();
            faulty.del(&victim, "eth0").is_err()
        };
        scene
            .chain()
            .del(&victim, "eth0")
            .unwrap_or_else(|e| panic!("{when}: DEL after the kill: {e}"));
        scene.assert_nothing_left(&when);
        if !killed {
            assert!(n > 3, "{op} writes more than {} documents", n - 1);
            break;
        }
    }
}

#[test]
fn mesh_add_cut_off_after_each_document_leaves_nothing() {
    mesh_cut_off_after_each_document("add");
}

#[test]
fn mesh_del_cut_off_after_each_document_leaves_nothing() {
    mesh_cut_off_after_each_document("del");
}

#[test]
fn mesh_add_failing_undoes_itself() {
    let scene = Mesh::new();
    let victim = scene.node.container("victim").unwrap();
    let point = format!("{PLUGIN}/add/programmed");
    add_failing_at(scene.chain(), &point, &victim, "eth0", &args("victim", None));
    scene.assert_nothing_left(&point);
    scene.chain().del(&victim, "eth0").unwrap();
    scene.assert_nothing_left(&point);
}

#[test]
fn mesh_calls_killed_at_random_moments_leave_no_device() {
    let scene = Mesh::new();
    let mut rng = faults_support::Lcg::seeded();
    let seed = rng.0;
    let mut kills = 0;
    for round in 0..8 {
        let when = format!("seed {seed} round {round}");
        let victim = scene.node.container(&format!("victim{round}")).unwrap();
        let del = round % 2 == 1;
        let chain = scene.chain();
        if del {
            chain.add_with(&victim, "eth0", &args("victim", None)).unwrap();
        }
        let delay = Duration::from_micros(rng.below(if del { 60_000 } else { 80_000 }));
        kills += usize::from(killed_after(&scene.node, PLUGIN, delay, || {
            if del {
                chain.del(&victim, "eth0").map(drop)
            } else {
                chain.add_with(&victim, "eth0", &args("victim", None)).map(drop)
            }
        }));
        chain
            .del(&victim, "eth0")
            .unwrap_or_else(|e| panic!("{when}: DEL after the kill: {e}"));
        scene.assert_nothing_left(&when);
    }
    eprintln!("{kills} of 8 calls killed (seed {seed})");
}

fn repaired(node: &TestNode, dry_run: bool) -> Vec<String> {
    let mut found = repair(node, "netsvc-vpn", NETWORK, dry_run);
    found.sort();
    found
}

#[test]
fn repair_fixes_a_tunnel_and_removes_a_dead_adds_device_and_orphans() {
    let scene = Tunnels::new(None);
    let node = &scene.node;
    assert_eq!(repaired(node, true), Vec::<String>::new(), "nothing drifted yet");
    let ours = device_name(scene.bystander.name(), IFNAME);
    let place = scene.bystander.netns_path().display().to_string();
    // Its peer dropped, its device down, and a device of our form nobody holds.
    node.exec("wg", ["set", &ours, "peer", SITE_KEYS.1, "remove"]).unwrap();
    scene.bystander.ip(["link", "set", IFNAME, "down"]).unwrap();
    let stray = format!("nsv{:012x}", (u64::from(std::process::id()) << 8) | 0xbb);
    let _orphan = HandDevice::start(node, &stray, 0, "10.201.0.1/32").unwrap();
    let mut want = vec![
        format!("differs link {IFNAME} ({ours}) in {place} (down)"),
        format!("missing peer {} of {ours}", SITE_KEYS.1),
        format!("extra process wireguard-go {stray}"),
    ];
    want.sort();
    assert_eq!(repaired(node, true), want, "the dry run lists the drift");
    assert_eq!(repaired(node, false), want, "the repair fixes what it listed");
    assert_eq!(
        repaired(node, false),
        Vec::<String>::new(),
        "a second repair finds nothing"
    );
    scene.chain().check(&scene.bystander, IFNAME).unwrap();
    assert_no_device(node, &stray, "the orphan");

    // What a dead ADD left: the device in the container and its wireguard-go.
    let victim = node.container("victim").unwrap();
    let mut faulty = scene.chain();
    with_failpoint(&mut faulty, &format!("{PLUGIN}/add/programmed=kill"));
    faulty
        .add_with(&victim, IFNAME, &args("victim", None))
        .expect_err("killed ADD");
    let dead_device = device_name(victim.name(), IFNAME);
    let mut dead = vec![
        format!(
            "extra link {IFNAME} ({dead_device}) in {}",
            victim.netns_path().display()
        ),
        format!("extra process wireguard-go {dead_device}"),
    ];
    dead.sort();
    assert_eq!(repaired(node, true), dead);
    assert_eq!(repaired(node, false), dead);
    assert_eq!(repaired(node, true), Vec::<String>::new());
    scene.assert_nothing_left(&victim, "after the repair");

    // A tunnel whose device is gone cannot be made again (its key was
    // never kept): listed, and left to the runtime.
    scene.bystander.ip(["link", "del", IFNAME]).unwrap();
    let lost = vec![format!("missing link {IFNAME} ({ours}) in {place}")];
    assert_eq!(repaired(node, true), lost);
    assert_eq!(repaired(node, false), Vec::<String>::new(), "nothing it could fix");
    assert_eq!(repaired(node, true), lost);
    scene.chain().del(&scene.bystander, IFNAME).unwrap();
    assert_eq!(repaired(node, true), Vec::<String>::new());
}

#[test]
fn repair_brings_back_a_mesh_device_and_its_keeper() {
    let scene = Mesh::new();
    let node = &scene.node;
    let c = node.container("c").unwrap();
    scene.chain().add_with(&c, "eth0", &args("c", None)).unwrap();
    assert_eq!(repaired(node, true), Vec::<String>::new(), "nothing drifted yet");
    let device = scene.device();
    // The device deleted by hand: wireguard-go exits with it, the keeper after.
    node.ip(["link", "del", &device]).unwrap();
    let gone = poll_until(Duration::from_secs(5), || {
        wireguard_go_processes(&device).is_empty().then_some(())
    });
    assert!(gone.is_some(), "wireguard-go of {device} exits");
    let want = vec![format!("missing link {device}")];
    assert_eq!(repaired(node, true), want);
    assert_eq!(repaired(node, false), want);
    assert_eq!(repaired(node, true), Vec::<String>::new());
    scene.assert_checks(&c);
    scene.chain().del(&c, "eth0").unwrap();
    scene.assert_nothing_left("after DEL");
}
