//! Faults never open a hole. A plugin killed at each step of ADD and of DEL
//! (a failpoint, or SIGKILL at a random moment), or a store that cannot be
//! written, and then the runtime's DEL: afterwards nothing of the
//! attachment is left in the kernel or the store, and a new container given
//! the same address with other labels is denied where policy says so and
//! gets no VIP traffic (real probes).

mod faults_support;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use faults_support::{Lcg, SmallDisk, add_failing_at, assert_store_forgets, killed_after, with_failpoint};
use netsvc_tests::chain::{CallArgs, Chain, container_ip, json_of, netsvc};
use netsvc_tests::{Container, EchoServer, TestNode};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(5);
/// How long a probe that policy must deny is given.
const DENIED: Duration = Duration::from_millis(800);
const SUBNET: &str = "10.251.0.0/24";
/// The address the victim has, and the intruder gets after it.
const RECYCLED: &str = "10.251.0.50";
const VIP: &str = "10.96.0.10";
const NETWORK: &str = "faults";

/// The two services whose kernel state is a permission.
#[derive(Debug, Clone, Copy)]
enum Svc {
    /// `api` (tier api) admits tier web on tcp/8080 only.
    Firewall,
    /// The VIP's port 80 goes to tier api on 8080.
    Lb,
}

impl Svc {
    fn plugin(self) -> &'static str {
        match self {
            Svc::Firewall => "netsvc-firewall",
            Svc::Lb => "netsvc-lb",
        }
    }

    fn conf(self, state_dir: Option<&Path>) -> Value {
        let mut conf = match self {
            Svc::Firewall => json!({"type": "netsvc-firewall", "defaultIngress": "deny", "policies": [
                {"name": "api-from-web", "select": {"labels": {"tier": "api"}},
                 "ingress": [{"from": [{"labels": {"tier": "web"}}], "ports": [{"protocol": "tcp", "port": 8080}]}]}]}),
            Svc::Lb => json!({"type": "netsvc-lb", "services": [
                {"name": "api", "vip": VIP, "select": {"labels": {"tier": "api"}},
                 "ports": [{"port": 80, "targetPort": 8080}]}]}),
        };
        if let Some(dir) = state_dir {
            conf["stateDir"] = json!(dir);
        }
        conf
    }

    /// The victim's tier: one the service grants something to.
    fn granted_tier(self) -> &'static str {
        match self {
            Svc::Firewall => "web",
            Svc::Lb => "api",
        }
    }
}

/// A node with a server (`api`, answering on 8080) and a client (`web`)
/// attached, and the service proven to work for them.
struct Scene {
    node: TestNode,
    svc: Svc,
    _api: Container,
    web: Container,
    api_ip: IpAddr,
    _server: EchoServer,
}

fn args(name: &str, tier: &str, ip: Option<&str>) -> CallArgs {
    let mut a = CallArgs::endpoint(name, Some(&format!("tier:{tier}")));
    // host-local takes a requested address from CNI_ARGS.
    a.args.extend(ip.map(|ip| ("IP".to_string(), ip.to_string())));
    a
}

impl Scene {
    fn new(svc: Svc, state_dir: Option<&Path>) -> Scene {
        let node = TestNode::new().unwrap();
        // A VIP needs a route the node's traffic can take (a real node's default route).
        node.ip(["link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1"])
            .unwrap();
        node.ip(["link", "set", "uplink0", "up"]).unwrap();
        node.ip(["link", "set", "uplink1", "up"]).unwrap();
        node.ip(["route", "add", "default", "dev", "uplink0"]).unwrap();
        let (api, web) = (node.container("api").unwrap(), node.container("web").unwrap());
        let scene_chain = node.chain(&conflist(&node, svc, state_dir)).unwrap();
        let r = scene_chain.add_with(&api, "eth0", &args("api", "api", None)).unwrap();
        let api_ip = container_ip(&r, "eth0").unwrap();
        scene_chain.add_with(&web, "eth0", &args("web", "web", None)).unwrap();
        let server = EchoServer::start(api.ns(), "0.0.0.0:8080".parse().unwrap(), "api").unwrap();
        let scene = Scene {
            node,
            svc,
            _api: api,
            web,
            api_ip,
            _server: server,
        };
        scene.assert_service_works("before any fault");
        scene
    }

    fn chain(&self, state_dir: Option<&Path>) -> Chain<'_> {
        self.node.chain(&conflist(&self.node, self.svc, state_dir)).unwrap()
    }

    /// The address the service serves `web` at: the server's, or the VIP.
    fn target(&self) -> SocketAddr {
        match self.svc {
            Svc::Firewall => SocketAddr::new(self.api_ip, 8080),
            Svc::Lb => SocketAddr::new(VIP.parse().unwrap(), 80),
        }
    }

    /// The positive control: what the service grants still works.
    fn assert_service_works(&self, when: &str) {
        for i in 0..5 {
            let reply = self
                .web
                .tcp_echo(self.target(), &format!("hi {i}"), T)
                .unwrap_or_else(|e| panic!("{when}: web reaches {}: {e:#}", self.target()));
            assert_eq!(reply.identity, "api", "{when}");
        }
    }

    /// Nothing of the recycled address in our nftables, nothing of
    /// `container` in the store, no intent left unfinished.
    fn assert_nothing_left(&self, container: &str, state_dir: &Path, when: &str) {
        let ruleset = self.node.exec("nft", ["list", "ruleset"]).unwrap();
        assert!(
            !ruleset.contains(RECYCLED),
            "{when}: the kernel still holds {RECYCLED}:\n{ruleset}"
        );
        assert_store_forgets(state_dir, container, when);
    }

    /// A container given the victim's address with a tier the service
    /// grants nothing: denied by the firewall, never a VIP backend.
    fn assert_intruder_gets_nothing(&self, chain: &Chain, when: &str) {
        let intruder = self.node.container("intruder").unwrap();
        let r = chain
            .add_with(&intruder, "eth0", &args("intruder", "db", Some(RECYCLED)))
            .unwrap_or_else(|e| panic!("{when}: ADD intruder: {e}"));
        assert_eq!(container_ip(&r, "eth0").unwrap().to_string(), RECYCLED, "{when}");
        match self.svc {
            Svc::Firewall => {
                let got = intruder.tcp_echo(self.target(), "let me in", DENIED);
                assert!(got.is_err(), "{when}: tier db at {RECYCLED} passed policy: {got:?}");
            }
            Svc::Lb => {
                let _srv = EchoServer::start(intruder.ns(), "0.0.0.0:8080".parse().unwrap(), "intruder").unwrap();
                for i in 0..20 {
                    let reply = self.web.tcp_echo(self.target(), &format!("req {i}"), T).unwrap();
                    assert_eq!(
                        reply.identity, "api",
                        "{when}: the VIP sent request {i} to the intruder"
                    );
                }
            }
        }
        chain.del(&intruder, "eth0").unwrap();
        self.assert_service_works(when);
    }
}

fn conflist(node: &TestNode, svc: Svc, state_dir: Option<&Path>) -> Value {
    node.bridge_conflist(NETWORK, "1.0.0", SUBNET, vec![svc.conf(state_dir)])
}

/// The victim (granted something) is killed at `step` of ADD or DEL, then
/// the runtime DELs it as it does after a failed call.
fn killed_at(svc: Svc, step: &str) {
    let scene = Scene::new(svc, None);
    let victim = scene.node.container("victim").unwrap();
    let plain = scene.chain(None);
    let mut faulty = scene.chain(None);
    let point = format!("{}/{step}", svc.plugin());
    with_failpoint(&mut faulty, &format!("{point}=kill"));
    let victim_args = args("victim", svc.granted_tier(), Some(RECYCLED));
    if step.starts_with("add/") {
        let err = faulty
            .add_with(&victim, "eth0", &victim_args)
            .expect_err("killed ADD fails");
        assert!(err.to_string().contains(svc.plugin()), "{point}: {err}");
    } else {
        plain.add_with(&victim, "eth0", &victim_args).unwrap();
        faulty.del(&victim, "eth0").expect_err("killed DEL fails");
    }
    // The dead call's intent is there for `netsvc status` to show.
    let status = json_of(&netsvc(&scene.node, &["status", "--format", "json"]), "netsvc status");
    let unfinished = &status["networks"][0]["unfinished"][0];
    assert_eq!(unfinished["service"], svc.plugin(), "{point}: {status}");
    assert_eq!(unfinished["op"], &step[..3], "{point}: {status}");
    // What a runtime does next: DEL (again), which must succeed.
    plain
        .del(&victim, "eth0")
        .unwrap_or_else(|e| panic!("{point}: DEL after the kill: {e}"));
    drop(victim);
    scene.assert_nothing_left("victim", scene.node.state_dir(), &point);
    scene.assert_intruder_gets_nothing(&plain, &point);
}

#[test]
fn firewall_add_killed_after_its_intent_is_recorded() {
    killed_at(Svc::Firewall, "add/staged");
}

#[test]
fn firewall_add_killed_after_the_kernel_is_programmed() {
    killed_at(Svc::Firewall, "add/programmed");
}

#[test]
fn firewall_del_killed_after_its_intent_is_recorded() {
    killed_at(Svc::Firewall, "del/staged");
}

#[test]
fn firewall_del_killed_after_the_kernel_is_programmed() {
    killed_at(Svc::Firewall, "del/programmed");
}

#[test]
fn lb_add_killed_after_its_intent_is_recorded() {
    killed_at(Svc::Lb, "add/staged");
}

#[test]
fn lb_add_killed_after_the_kernel_is_programmed() {
    killed_at(Svc::Lb, "add/programmed");
}

#[test]
fn lb_del_killed_after_its_intent_is_recorded() {
    killed_at(Svc::Lb, "del/staged");
}

#[test]
fn lb_del_killed_after_the_kernel_is_programmed() {
    killed_at(Svc::Lb, "del/programmed");
}

/// A failed kernel step (not a kill): ADD undoes itself before it answers.
fn failing_at(svc: Svc, step: &str) {
    let scene = Scene::new(svc, None);
    let victim = scene.node.container("victim").unwrap();
    let point = format!("{}/{step}", svc.plugin());
    let victim_args = args("victim", svc.granted_tier(), Some(RECYCLED));
    add_failing_at(scene.chain(None), &point, &victim, "eth0", &victim_args);
    // Undone before it answered: nothing even before the runtime's DEL.
    let ruleset = scene.node.exec("nft", ["list", "ruleset"]).unwrap();
    assert!(
        !ruleset.contains(RECYCLED),
        "{point}: a failed ADD left {RECYCLED}:\n{ruleset}"
    );
    let plain = scene.chain(None);
    plain.del(&victim, "eth0").unwrap();
    scene.assert_nothing_left("victim", scene.node.state_dir(), &point);
    scene.assert_intruder_gets_nothing(&plain, &point);
}

#[test]
fn firewall_add_failing_in_the_kernel_undoes_itself() {
    failing_at(Svc::Firewall, "add/programmed");
}

#[test]
fn lb_add_failing_in_the_kernel_undoes_itself() {
    failing_at(Svc::Lb, "add/programmed");
}

/// Rounds of ADD then DEL of the victim, each call SIGKILLed at a random
/// moment (or finishing first), then the runtime's DEL.
fn killed_at_random(svc: Svc) {
    let scene = Scene::new(svc, None);
    let plain = scene.chain(None);
    let mut rng = Lcg::seeded();
    let seed = rng.0;
    let mut kills = 0;
    for round in 0..8 {
        let when = format!("seed {seed} round {round}");
        let victim = scene.node.container(&format!("victim{round}")).unwrap();
        let victim_args = args("victim", svc.granted_tier(), Some(RECYCLED));
        let del = round % 2 == 1;
        if del {
            plain.add_with(&victim, "eth0", &victim_args).unwrap();
        }
        let delay = Duration::from_micros(rng.below(5_000));
        let killed = killed_after(&scene.node, svc.plugin(), delay, || {
            if del {
                plain.del(&victim, "eth0").map(drop)
            } else {
                plain.add_with(&victim, "eth0", &victim_args).map(drop)
            }
        });
        kills += usize::from(killed);
        plain
            .del(&victim, "eth0")
            .unwrap_or_else(|e| panic!("{when}: DEL after the kill: {e}"));
        scene.assert_nothing_left(&format!("victim{round}"), scene.node.state_dir(), &when);
        scene.assert_intruder_gets_nothing(&plain, &when);
    }
    eprintln!("{} of 8 calls killed (seed {seed})", kills);
}

#[test]
fn firewall_calls_killed_at_random_moments_leave_no_hole() {
    killed_at_random(Svc::Firewall);
}

#[test]
fn lb_calls_killed_at_random_moments_leave_no_hole() {
    killed_at_random(Svc::Lb);
}

/// `op` is killed right after the n-th document the store writes for it,
/// for every n until the call runs through: each commit cut off halfway
/// (part of the graph change written, its intent recorded before it) is
/// finished by the runtime's next DEL, and the recycled address gets
/// nothing.
fn cut_off_after_each_document(svc: Svc, op: &str) {
    let scene = Scene::new(svc, None);
    let plain = scene.chain(None);
    for n in 1.. {
        let when = format!("{op} killed after document {n}");
        let victim = scene.node.container(&format!("victim{n}")).unwrap();
        let victim_args = args("victim", svc.granted_tier(), Some(RECYCLED));
        let mut faulty = scene.chain(None);
        with_failpoint(&mut faulty, &format!("store/write/{n}=kill"));
        let killed = if op == "add" {
            faulty.add_with(&victim, "eth0", &victim_args).is_err()
        } else {
            plain.add_with(&victim, "eth0", &victim_args).unwrap();
            faulty.del(&victim, "eth0").is_err()
        };
        plain
            .del(&victim, "eth0")
            .unwrap_or_else(|e| panic!("{when}: DEL after the kill: {e}"));
        scene.assert_nothing_left(&format!("victim{n}"), scene.node.state_dir(), &when);
        scene.assert_intruder_gets_nothing(&plain, &when);
        if !killed {
            // At least one commit of several documents was cut in two.
            assert!(n > 2, "{when}: {op} writes more than {} documents", n - 1);
            break;
        }
    }
}

#[test]
fn firewall_add_cut_off_after_each_document_leaves_no_hole() {
    cut_off_after_each_document(Svc::Firewall, "add");
}

#[test]
fn firewall_del_cut_off_after_each_document_leaves_no_hole() {
    cut_off_after_each_document(Svc::Firewall, "del");
}

#[test]
fn lb_add_cut_off_after_each_document_leaves_no_hole() {
    cut_off_after_each_document(Svc::Lb, "add");
}

#[test]
fn lb_del_cut_off_after_each_document_leaves_no_hole() {
    cut_off_after_each_document(Svc::Lb, "del");
}

fn full_disk(svc: Svc) {
    let disk = SmallDisk::new();
    let scene = Scene::new(svc, Some(&disk.dir));
    let plain = scene.chain(Some(&disk.dir));
    let victim = scene.node.container("victim").unwrap();
    disk.fill();
    let err = plain
        .add_with(&victim, "eth0", &args("victim", svc.granted_tier(), Some(RECYCLED)))
        .expect_err("ADD on a full disk fails");
    assert!(err.to_string().contains("No space left"), "a clear error: {err}");
    plain.del(&victim, "eth0").unwrap();
    scene.assert_nothing_left("victim", &disk.dir, "full disk");
    disk.free();
    scene.assert_intruder_gets_nothing(&plain, "disk freed");
}

#[test]
fn firewall_add_on_a_full_disk_fails_cleanly_and_opens_nothing() {
    full_disk(Svc::Firewall);
}

#[test]
fn lb_add_on_a_full_disk_fails_cleanly_and_opens_nothing() {
    full_disk(Svc::Lb);
}

/// The victim's document truncated in the middle of the network's
/// endpoints: other containers come and go, and the victim's DEL still
/// takes its address out of the kernel (from the runtime's result).
fn truncated_document(svc: Svc) {
    let scene = Scene::new(svc, None);
    let plain = scene.chain(None);
    let victim = scene.node.container("victim").unwrap();
    plain
        .add_with(&victim, "eth0", &args("victim", svc.granted_tier(), Some(RECYCLED)))
        .unwrap();
    let endpoints = scene.node.state_dir().join(format!("kv/networks/{NETWORK}/endpoints"));
    let doc = std::fs::read_dir(&endpoints)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| std::fs::read_to_string(p).unwrap().contains("\"victim\""))
        .expect("the victim's endpoint document");
    let body = std::fs::read(&doc).unwrap();
    std::fs::write(&doc, &body[..body.len() / 2]).unwrap();

    let other = scene.node.container("other").unwrap();
    plain.add_with(&other, "eth0", &args("other", "web", None)).unwrap();
    plain.del(&other, "eth0").unwrap();
    plain.del(&victim, "eth0").unwrap();
    let quarantined = scene.node.state_dir().join("quarantine");
    assert_eq!(
        std::fs::read_dir(&quarantined).map(|d| d.count()).unwrap_or(0),
        1,
        "the truncated document is set aside in {}",
        quarantined.display()
    );
    scene.assert_nothing_left("victim", scene.node.state_dir(), "truncated document");
    scene.assert_intruder_gets_nothing(&plain, "truncated document");
}

#[test]
fn firewall_survives_a_truncated_endpoint_document() {
    truncated_document(Svc::Firewall);
}

#[test]
fn lb_survives_a_truncated_endpoint_document() {
    truncated_document(Svc::Lb);
}

/// A dead LB ADD finished by another container's ADD, then the runtime's
/// DEL of the dead one, with the firewall still holding its endpoint (DEL
/// runs the chain backwards): its hairpin element goes too.
#[test]
fn lb_add_killed_then_finished_by_another_add_leaves_nothing() {
    let node = TestNode::new().unwrap();
    let conf = node.bridge_conflist(
        NETWORK,
        "1.0.0",
        SUBNET,
        vec![Svc::Firewall.conf(None), Svc::Lb.conf(None)],
    );
    let plain = node.chain(&conf).unwrap();
    let mut faulty = node.chain(&conf).unwrap();
    with_failpoint(&mut faulty, "netsvc-lb/add/programmed=kill");
    let (first, victim, next) = (
        node.container("first").unwrap(),
        node.container("victim").unwrap(),
        node.container("next").unwrap(),
    );
    plain.add_with(&first, "eth0", &args("first", "api", None)).unwrap();
    faulty
        .add_with(&victim, "eth0", &args("victim", "api", Some(RECYCLED)))
        .expect_err("killed");
    plain.add_with(&next, "eth0", &args("next", "api", None)).unwrap();
    plain.del(&victim, "eth0").unwrap();
    let ruleset = node.exec("nft", ["list", "ruleset"]).unwrap();
    assert!(!ruleset.contains(RECYCLED), "{RECYCLED} is left:\n{ruleset}");
}
