//! QoS faults leave no shaping behind. netsvc-qos killed at each step of
//! ADD and DEL (a failpoint, or SIGKILL at a random moment), failing in the
//! kernel, or on a store that cannot be written, then the runtime's DEL:
//! afterwards the attachment's ifb is gone and its host veth holds none of
//! our qdiscs (looked at before the bridge's DEL removes the veth), the
//! store forgets it, another container's shaping is intact, and a
//! container given the same address is shaped as its own. A repair lists
//! exactly the drift made by hand, fixes it, and then finds none.

mod faults_support;

use std::time::Duration;

use faults_support::{SmallDisk, add_failing_at, args, assert_store_forgets, killed_after, repair, with_failpoint};
use netsvc_qos::kernel::ifb_name;
use netsvc_tests::chain::{Chain, container_ip};
use netsvc_tests::{Container, TestNode};
use serde_json::{Value, json};

const SUBNET: &str = "10.253.0.0/24";
/// The address the victim has, and a container after it gets.
const RECYCLED: &str = "10.253.0.50";
const NETWORK: &str = "faultsq";
const PLUGIN: &str = "netsvc-qos";

fn qos(state_dir: Option<&std::path::Path>) -> Value {
    let mut conf = json!({"type": PLUGIN, "ingressRate": "10mbit", "egressRate": "20mbit"});
    if let Some(dir) = state_dir {
        conf["stateDir"] = json!(dir);
    }
    conf
}

/// A node with a bystander shaped on the network.
struct Scene {
    node: TestNode,
    bystander: Container,
    state_dir: Option<std::path::PathBuf>,
}

impl Scene {
    fn new(state_dir: Option<&std::path::Path>) -> Scene {
        let node = TestNode::new().unwrap();
        let bystander = node.container("bystander").unwrap();
        let scene = Scene {
            node,
            bystander,
            state_dir: state_dir.map(|d| d.to_path_buf()),
        };
        scene
            .full()
            .add_with(&scene.bystander, "eth0", &args("bystander", None))
            .unwrap();
        scene.full().check(&scene.bystander, "eth0").unwrap();
        scene
    }

    /// bridge, then netsvc-qos: how containers come and go.
    fn full(&self) -> Chain<'_> {
        let extra = vec![qos(self.state_dir.as_deref())];
        self.node
            .chain(&self.node.bridge_conflist(NETWORK, "1.0.0", SUBNET, extra))
            .unwrap()
    }

    /// netsvc-qos alone: its DEL takes the shaping off and leaves the veth
    /// (the bridge's DEL would remove it), so what it left there shows.
    fn alone(&self) -> Chain<'_> {
        let conf = json!({"cniVersion": "1.0.0", "name": NETWORK, "plugins": [qos(self.state_dir.as_deref())]});
        self.node.chain(&conf).unwrap()
    }

    /// Our qdiscs and ifbs on the node beside the bystander's.
    fn shaping_left(&self) -> Vec<String> {
        let theirs = [
            self.bystander.veth_peer_in("eth0", &self.node).unwrap(),
            ifb_name(self.bystander.name(), "eth0"),
        ];
        let mut left = Vec::new();
        let qdiscs = self.node.tc_json(&["qdisc", "show"]).unwrap();
        for q in qdiscs.as_array().into_iter().flatten() {
            let (kind, dev) = (q["kind"].as_str().unwrap_or(""), q["dev"].as_str().unwrap_or(""));
            if ["htb", "tbf", "ingress"].contains(&kind) && !theirs.iter().any(|t| t == dev) {
                left.push(format!("qdisc {kind} on {dev}"));
            }
        }
        for ifb in self.node.links_of_kind("ifb").unwrap() {
            if ifb != theirs[1] {
                left.push(format!("ifb {ifb}"));
            }
        }
        left
    }

    /// Nothing of the victim in tc, links or the store; the bystander intact.
    fn assert_nothing_left(&self, when: &str) {
        assert_eq!(self.shaping_left(), Vec::<String>::new(), "{when}");
        let state_dir = self.state_dir.clone().unwrap_or(self.node.state_dir().to_path_buf());
        assert_store_forgets(&state_dir, "victim", when);
        self.full()
            .check(&self.bystander, "eth0")
            .unwrap_or_else(|e| panic!("{when}: the bystander's shaping: {e}"));
    }

    /// A container given the victim's address is shaped as its own and
    /// leaves nothing.
    fn assert_recycled_address_is_shaped_as_its_own(&self, when: &str) {
        let next = self.node.container("next").unwrap();
        let r = self
            .full()
            .add_with(&next, "eth0", &args("next", Some(RECYCLED)))
            .unwrap_or_else(|e| panic!("{when}: ADD next: {e}"));
        assert_eq!(container_ip(&r, "eth0").unwrap().to_string(), RECYCLED, "{when}");
        self.full()
            .check(&next, "eth0")
            .unwrap_or_else(|e| panic!("{when}: CHECK next: {e}"));
        let ifb = ifb_name(next.name(), "eth0");
        assert!(self.node.links_of_kind("ifb").unwrap().contains(&ifb), "{when}");
        self.full().del(&next, "eth0").unwrap();
        assert_eq!(self.shaping_left(), Vec::<String>::new(), "{when}: after next");
    }
}

/// The victim is killed at `step` of ADD or DEL, then the runtime DELs it.
fn killed_at(step: &str) {
    let scene = Scene::new(None);
    let victim = scene.node.container("victim").unwrap();
    let point = format!("{PLUGIN}/{step}");
    let (mut faulty_full, mut faulty_alone) = (scene.full(), scene.alone());
    with_failpoint(&mut faulty_full, &format!("{point}=kill"));
    with_failpoint(&mut faulty_alone, &format!("{point}=kill"));
    let victim_args = args("victim", Some(RECYCLED));
    if step.starts_with("add/") {
        let err = faulty_full
            .add_with(&victim, "eth0", &victim_args)
            .expect_err("killed ADD fails");
        assert!(err.to_string().contains(PLUGIN), "{point}: {err}");
    } else {
        scene.full().add_with(&victim, "eth0", &victim_args).unwrap();
        faulty_alone.del(&victim, "eth0").expect_err("killed DEL fails");
    }
    // What a runtime does next: DEL (again), which must succeed.
    scene
        .alone()
        .del(&victim, "eth0")
        .unwrap_or_else(|e| panic!("{point}: DEL after the kill: {e}"));
    scene.assert_nothing_left(&point);
    scene.full().del(&victim, "eth0").unwrap();
    scene.assert_recycled_address_is_shaped_as_its_own(&point);
}

#[test]
fn add_killed_after_its_intent_is_recorded() {
    killed_at("add/staged");
}

#[test]
fn add_killed_after_the_kernel_is_shaped() {
    killed_at("add/programmed");
}

#[test]
fn del_killed_after_its_intent_is_recorded() {
    killed_at("del/staged");
}

#[test]
fn del_killed_after_the_shaping_is_off() {
    killed_at("del/programmed");
}

#[test]
fn add_failing_in_the_kernel_undoes_itself() {
    let scene = Scene::new(None);
    let victim = scene.node.container("victim").unwrap();
    let point = format!("{PLUGIN}/add/programmed");
    add_failing_at(scene.full(), &point, &victim, "eth0", &args("victim", Some(RECYCLED)));
    // Undone before it answered: nothing even before the runtime's DEL.
    scene.assert_nothing_left(&point);
    scene.alone().del(&victim, "eth0").unwrap();
    scene.assert_nothing_left(&point);
    scene.full().del(&victim, "eth0").unwrap();
    scene.assert_recycled_address_is_shaped_as_its_own(&point);
}

#[test]
fn calls_killed_at_random_moments_leave_no_shaping() {
    let scene = Scene::new(None);
    let mut rng = faults_support::Lcg::seeded();
    let seed = rng.0;
    let mut kills = 0;
    for round in 0..10 {
        let when = format!("seed {seed} round {round}");
        let victim = scene.node.container(&format!("victim{round}")).unwrap();
        let victim_args = args("victim", Some(RECYCLED));
        let del = round % 2 == 1;
        if del {
            scene.full().add_with(&victim, "eth0", &victim_args).unwrap();
        }
        let delay = Duration::from_micros(rng.below(30_000));
        let (full, alone) = (scene.full(), scene.alone());
        kills += usize::from(killed_after(&scene.node, PLUGIN, delay, || {
            if del {
                alone.del(&victim, "eth0").map(drop)
            } else {
                full.add_with(&victim, "eth0", &victim_args).map(drop)
            }
        }));
        alone
            .del(&victim, "eth0")
            .unwrap_or_else(|e| panic!("{when}: DEL after the kill: {e}"));
        scene.assert_nothing_left(&when);
        full.del(&victim, "eth0").unwrap();
        scene.assert_recycled_address_is_shaped_as_its_own(&when);
    }
    eprintln!("{kills} of 10 calls killed (seed {seed})");
}

#[test]
fn del_on_a_full_disk_still_takes_the_shaping_off_and_add_opens_nothing() {
    let disk = SmallDisk::new();
    let scene = Scene::new(Some(&disk.dir));
    let victim = scene.node.container("victim").unwrap();
    scene
        .full()
        .add_with(&victim, "eth0", &args("victim", Some(RECYCLED)))
        .unwrap();
    disk.fill();
    // ADD on a full disk fails and shapes nothing.
    let other = scene.node.container("other").unwrap();
    let err = scene
        .full()
        .add_with(&other, "eth0", &args("other", None))
        .expect_err("ADD on a full disk");
    assert!(err.to_string().contains("No space left"), "a clear error: {err}");
    let veth = other.veth_peer_in("eth0", &scene.node).unwrap();
    let on_veth = scene.node.exec("tc", ["qdisc", "show", "dev", &veth]).unwrap();
    assert!(!on_veth.contains("htb") && !on_veth.contains("ingress"), "{on_veth}");
    let ifbs = scene.node.links_of_kind("ifb").unwrap();
    assert!(
        !ifbs.contains(&ifb_name(other.name(), "eth0")),
        "ADD on a full disk: {ifbs:?}"
    );
    scene.alone().del(&other, "eth0").unwrap();
    // The DEL's intent cannot be written: the shaping comes off all the
    // same, and DEL fails (the runtime retries) unless the removal alone
    // fits (a deleted document frees room; on this tmpfs it does).
    if let Err(err) = scene.alone().del(&victim, "eth0") {
        assert!(err.to_string().contains("No space left"), "a clear error: {err}");
    }
    assert_eq!(scene.shaping_left(), Vec::<String>::new(), "DEL on a full disk");
    disk.free();
    scene.alone().del(&victim, "eth0").unwrap();
    scene.assert_nothing_left("disk freed");
    scene.full().del(&victim, "eth0").unwrap();
    scene.full().del(&other, "eth0").unwrap();
    scene.assert_recycled_address_is_shaped_as_its_own("disk freed");
}

fn repaired(node: &TestNode, dry_run: bool) -> Vec<String> {
    let mut found = repair(node, "netsvc-qos", NETWORK, dry_run);
    found.sort();
    found
}

#[test]
fn repair_lists_exactly_the_drift_fixes_it_and_then_finds_none() {
    let scene = Scene::new(None);
    let node = &scene.node;
    assert_eq!(repaired(node, true), Vec::<String>::new(), "nothing drifted yet");
    let b = node.container("b").unwrap();
    scene.full().add_with(&b, "eth0", &args("b", None)).unwrap();
    let veth_a = scene.bystander.veth_peer_in("eth0", node).unwrap();
    let ifb_b = ifb_name(b.name(), "eth0");
    let stray = "nsq0000000000aa";
    node.exec("tc", ["qdisc", "del", "dev", &veth_a, "root"]).unwrap();
    node.ip(["link", "del", &ifb_b]).unwrap();
    node.ip(["link", "add", stray, "type", "ifb"]).unwrap();
    let veth_b = b.veth_peer_in("eth0", node).unwrap();
    let mut want = vec![
        format!("missing qdisc htb 1: root on {veth_a}"),
        format!("missing link {ifb_b}"),
        format!("extra link {stray}"),
    ];
    // The redirect lost its target with the ifb.
    want.push(format!(
        "differs filter u32 ingress redirect to #0 on {veth_b} (wants {ifb_b})"
    ));
    want.sort();
    assert_eq!(repaired(node, true), want, "the dry run lists the drift");
    assert_eq!(repaired(node, false), want, "the repair fixes what it listed");
    assert_eq!(
        repaired(node, false),
        Vec::<String>::new(),
        "a second repair finds nothing"
    );
    scene.full().check(&scene.bystander, "eth0").unwrap();
    scene.full().check(&b, "eth0").unwrap();
    assert!(!node.links_of_kind("ifb").unwrap().contains(&stray.to_string()));

    // What a dead ADD left: its shaping and ifb are extra, and go.
    let victim = node.container("victim").unwrap();
    let mut faulty = scene.full();
    with_failpoint(&mut faulty, &format!("{PLUGIN}/add/programmed=kill"));
    faulty
        .add_with(&victim, "eth0", &args("victim", None))
        .expect_err("killed ADD");
    let veth_v = victim.veth_peer_in("eth0", node).unwrap();
    let ifb_v = ifb_name(victim.name(), "eth0");
    let mut dead = vec![
        format!("extra qdisc htb 1: root on {veth_v}"),
        format!("extra qdisc ingress ffff: on {veth_v}"),
        format!("extra link {ifb_v}"),
    ];
    dead.sort();
    assert_eq!(repaired(node, true), dead);
    assert_eq!(repaired(node, false), dead);
    assert_eq!(repaired(node, true), Vec::<String>::new());
    scene.full().del(&b, "eth0").unwrap();
    assert_eq!(scene.shaping_left(), Vec::<String>::new());
    assert_store_forgets(node.state_dir(), "victim", "after the repair");
    scene.full().del(&victim, "eth0").unwrap();
}
