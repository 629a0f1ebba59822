//! DNS faults never leave a name pointing at a recycled address.
//! netsvc-dns killed at each step of ADD and DEL (a failpoint, or SIGKILL
//! at a random moment), failing, or on a store that cannot be written, then
//! the runtime's DEL: afterwards the daemon no longer answers the victim's
//! name (asked with dig from a container), the store forgets it, and a
//! container given the same address under another name is answered with
//! its own name only. A repair lists what the daemon lacks or keeps, fixes
//! it, and then finds none.

mod faults_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use faults_support::{SmallDisk, add_failing_at, args, assert_store_forgets, killed_after, repair, with_failpoint};
use netsvc_tests::chain::{Chain, container_ip};
use netsvc_tests::{Container, Netns, TestNode};
use serde_json::json;

const SUBNET: &str = "10.254.0.0/24";
const GATEWAY: &str = "10.254.0.1";
/// The address the victim has, and a container after it gets.
const RECYCLED: &str = "10.254.0.50";
const NETWORK: &str = "faultsd";
const DOMAIN: &str = "faults.internal";
const PLUGIN: &str = "netsvc-dns";

/// `dig +short` from inside `ns`: the answer lines.
fn dig(ns: &Netns, args: &[&str]) -> Vec<String> {
    let mut all = vec![
        format!("@{GATEWAY}"),
        "+short".into(),
        "+time=2".into(),
        "+tries=1".into(),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    let out = ns.exec("dig", &all).unwrap_or_else(|e| panic!("dig {args:?}: {e:#}"));
    out.lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
}

fn fqdn(name: &str) -> String {
    format!("{name}.{DOMAIN}")
}

/// A node with a client on the network that asks the names.
struct Scene {
    node: TestNode,
    client: Container,
    state_dir: Option<PathBuf>,
}

impl Scene {
    fn new(state_dir: Option<&Path>) -> Scene {
        let node = TestNode::new().unwrap();
        let client = node.container("client").unwrap();
        let scene = Scene {
            node,
            client,
            state_dir: state_dir.map(Path::to_path_buf),
        };
        let r = scene
            .chain()
            .add_with(&scene.client, "eth0", &args("client", None))
            .unwrap();
        let ip = container_ip(&r, "eth0").unwrap().to_string();
        assert_eq!(dig(&scene.client, &[&fqdn("client")]), [ip], "before any fault");
        scene
    }

    fn chain(&self) -> Chain<'_> {
        let mut dns = json!({"type": PLUGIN, "domain": DOMAIN, "upstreams": []});
        if let Some(dir) = &self.state_dir {
            dns["stateDir"] = json!(dir);
        }
        self.node
            .chain(&self.node.bridge_conflist(NETWORK, "1.0.0", SUBNET, vec![dns]))
            .unwrap()
    }

    fn state_dir(&self) -> &Path {
        self.state_dir.as_deref().unwrap_or(self.node.state_dir())
    }

    /// The victim's name answers nothing, its address no name.
    fn assert_not_answered(&self, when: &str) {
        assert_eq!(dig(&self.client, &[&fqdn("victim")]), Vec::<String>::new(), "{when}");
        assert_eq!(dig(&self.client, &["-x", RECYCLED]), Vec::<String>::new(), "{when}");
    }

    fn assert_nothing_left(&self, when: &str) {
        self.assert_not_answered(when);
        assert_store_forgets(self.state_dir(), "victim", when);
        self.chain()
            .check(&self.client, "eth0")
            .unwrap_or_else(|e| panic!("{when}: the client's CHECK: {e}"));
    }

    /// A container given the victim's address under another name is
    /// answered with its own name only.
    fn assert_recycled_address_has_its_own_name(&self, when: &str) {
        let next = self.node.container("next").unwrap();
        let r = self
            .chain()
            .add_with(&next, "eth0", &args("next", Some(RECYCLED)))
            .unwrap_or_else(|e| panic!("{when}: ADD next: {e}"));
        assert_eq!(container_ip(&r, "eth0").unwrap().to_string(), RECYCLED, "{when}");
        assert_eq!(dig(&self.client, &[&fqdn("next")]), [RECYCLED], "{when}");
        assert_eq!(
            dig(&self.client, &["-x", RECYCLED]),
            [format!("{}.", fqdn("next"))],
            "{when}: the address has its new name only"
        );
        assert_eq!(dig(&self.client, &[&fqdn("victim")]), Vec::<String>::new(), "{when}");
        self.chain().del(&next, "eth0").unwrap();
    }
}

/// The victim is killed at `step` of ADD or DEL, then the runtime DELs it.
fn killed_at(step: &str) {
    let scene = Scene::new(None);
    let victim = scene.node.container("victim").unwrap();
    let point = format!("{PLUGIN}/{step}");
    let mut faulty = scene.chain();
    with_failpoint(&mut faulty, &format!("{point}=kill"));
    let victim_args = args("victim", Some(RECYCLED));
    if step.starts_with("add/") {
        let err = faulty
            .add_with(&victim, "eth0", &victim_args)
            .expect_err("killed ADD fails");
        assert!(err.to_string().contains(PLUGIN), "{point}: {err}");
    } else {
        scene.chain().add_with(&victim, "eth0", &victim_args).unwrap();
        assert_eq!(dig(&scene.client, &[&fqdn("victim")]), [RECYCLED]);
        faulty.del(&victim, "eth0").expect_err("killed DEL fails");
    }
    scene
        .chain()
        .del(&victim, "eth0")
        .unwrap_or_else(|e| panic!("{point}: DEL after the kill: {e}"));
    drop(victim);
    scene.assert_nothing_left(&point);
    scene.assert_recycled_address_has_its_own_name(&point);
}

#[test]
fn add_killed_after_its_intent_is_recorded() {
    killed_at("add/staged");
}

#[test]
fn add_killed_after_the_daemon_loaded_it() {
    killed_at("add/programmed");
}

#[test]
fn del_killed_after_its_intent_is_recorded() {
    killed_at("del/staged");
}

#[test]
fn del_killed_after_the_daemon_dropped_it() {
    killed_at("del/programmed");
}

#[test]
fn add_failing_undoes_itself() {
    let scene = Scene::new(None);
    let victim = scene.node.container("victim").unwrap();
    let point = format!("{PLUGIN}/add/programmed");
    add_failing_at(scene.chain(), &point, &victim, "eth0", &args("victim", Some(RECYCLED)));
    // Undone before it answered: not answered even before the runtime's DEL.
    scene.assert_nothing_left(&point);
    scene.chain().del(&victim, "eth0").unwrap();
    scene.assert_nothing_left(&point);
    scene.assert_recycled_address_has_its_own_name(&point);
}

#[test]
fn calls_killed_at_random_moments_leave_no_name() {
    let scene = Scene::new(None);
    let mut rng = faults_support::Lcg::seeded();
    let seed = rng.0;
    let mut kills = 0;
    for round in 0..10 {
        let when = format!("seed {seed} round {round}");
        let victim = scene.node.container(&format!("victim{round}")).unwrap();
        let victim_args = args("victim", Some(RECYCLED));
        let del = round % 2 == 1;
        let chain = scene.chain();
        if del {
            chain.add_with(&victim, "eth0", &victim_args).unwrap();
        }
        // A call takes a few milliseconds.
        let delay = Duration::from_micros(rng.below(8_000));
        kills += usize::from(killed_after(&scene.node, PLUGIN, delay, || {
            if del {
                chain.del(&victim, "eth0").map(drop)
            } else {
                chain.add_with(&victim, "eth0", &victim_args).map(drop)
            }
        }));
        chain
            .del(&victim, "eth0")
            .unwrap_or_else(|e| panic!("{when}: DEL after the kill: {e}"));
        scene.assert_nothing_left(&when);
        scene.assert_recycled_address_has_its_own_name(&when);
    }
    eprintln!("{kills} of 10 calls killed (seed {seed})");
}

#[test]
fn del_on_a_full_disk_still_stops_the_name_and_add_serves_nothing() {
    let disk = SmallDisk::new();
    let scene = Scene::new(Some(&disk.dir));
    let victim = scene.node.container("victim").unwrap();
    scene
        .chain()
        .add_with(&victim, "eth0", &args("victim", Some(RECYCLED)))
        .unwrap();
    assert_eq!(dig(&scene.client, &[&fqdn("victim")]), [RECYCLED]);
    disk.fill();
    let other = scene.node.container("other").unwrap();
    let err = scene
        .chain()
        .add_with(&other, "eth0", &args("other", None))
        .expect_err("ADD on a full disk");
    assert!(err.to_string().contains("No space left"), "a clear error: {err}");
    assert_eq!(dig(&scene.client, &[&fqdn("other")]), Vec::<String>::new());
    scene.chain().del(&other, "eth0").unwrap();
    // The DEL's intent cannot be written: the daemon stops answering the
    // name all the same, and DEL fails (the runtime retries) unless the
    // removal alone fits (a deleted document frees room; on this tmpfs it
    // does, so `withdrawn_endpoints_are_not_answered…` tests the withdrawal).
    if let Err(err) = scene.chain().del(&victim, "eth0") {
        assert!(err.to_string().contains("No space left"), "a clear error: {err}");
    }
    scene.assert_not_answered("DEL on a full disk");
    disk.free();
    scene.chain().del(&victim, "eth0").unwrap();
    scene.assert_nothing_left("disk freed");
    scene.assert_recycled_address_has_its_own_name("disk freed");
}

fn daemon_pid(state_dir: &Path) -> i32 {
    std::fs::read_to_string(state_dir.join("dnsd/pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn repair_restarts_the_daemon_and_drops_a_dead_adds_name_then_finds_none() {
    let scene = Scene::new(None);
    let node = &scene.node;
    assert_eq!(repair(node, "netsvc-dns", NETWORK, true), Vec::<String>::new());

    // A daemon that died.
    let pid = daemon_pid(node.state_dir());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let gone = netsvc_tests::poll_until(Duration::from_secs(5), || {
        (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
    assert!(gone.is_some(), "the daemon is gone");
    let found = repair(node, "netsvc-dns", NETWORK, true);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("missing process netsvc-dnsd"), "{found:?}");
    assert_eq!(repair(node, "netsvc-dns", NETWORK, false), found);
    assert_eq!(repair(node, "netsvc-dns", NETWORK, false), Vec::<String>::new());
    assert_ne!(daemon_pid(node.state_dir()), pid, "a new daemon");
    assert_eq!(dig(&scene.client, &[&fqdn("client")]).len(), 1, "it answers again");

    // A dead ADD: the daemon serves what the store still holds; the repair
    // rolls it back, and the name goes.
    let victim = node.container("victim").unwrap();
    let mut faulty = scene.chain();
    with_failpoint(&mut faulty, &format!("{PLUGIN}/add/programmed=kill"));
    faulty
        .add_with(&victim, "eth0", &args("victim", Some(RECYCLED)))
        .expect_err("killed ADD");
    assert_eq!(dig(&scene.client, &[&fqdn("victim")]), [RECYCLED]);
    let dead = vec![format!("extra name {} A {RECYCLED}", fqdn("victim"))];
    assert_eq!(repair(node, "netsvc-dns", NETWORK, true), dead);
    assert_eq!(repair(node, "netsvc-dns", NETWORK, false), dead);
    assert_eq!(repair(node, "netsvc-dns", NETWORK, true), Vec::<String>::new());
    scene.assert_nothing_left("after the repair");
    scene.chain().del(&victim, "eth0").unwrap();
}

/// What a DEL on a store that cannot be written tells the daemon: the
/// endpoint is not answered while the store still holds it, and once the
/// store forgets it the daemon forgets the withdrawal too.
#[test]
fn withdrawn_endpoints_are_not_answered_until_the_store_forgets_them() {
    use netsvc_dns::daemon::{Paths, control};
    let scene = Scene::new(None);
    let victim = scene.node.container("victim").unwrap();
    scene
        .chain()
        .add_with(&victim, "eth0", &args("victim", Some(RECYCLED)))
        .unwrap();
    assert_eq!(dig(&scene.client, &[&fqdn("victim")]), [RECYCLED]);
    let socket = Paths::new(scene.node.state_dir()).control();
    let endpoint = format!("{}:eth0", victim.name());
    control::withdraw(&socket, NETWORK, &endpoint, Duration::from_secs(5))
        .unwrap()
        .unwrap();
    scene.assert_not_answered("withdrawn");
    let view = control::served(&socket, NETWORK, Duration::from_secs(5))
        .unwrap()
        .unwrap();
    assert_eq!(view.withdrawn, std::slice::from_ref(&endpoint));
    assert_eq!(
        repair(&scene.node, "netsvc-dns", NETWORK, true),
        Vec::<String>::new(),
        "a withdrawn endpoint is no difference"
    );
    scene.chain().del(&victim, "eth0").unwrap();
    let view = control::served(&socket, NETWORK, Duration::from_secs(5))
        .unwrap()
        .unwrap();
    assert_eq!(view.withdrawn, Vec::<String>::new(), "forgotten with the endpoint");
    scene.assert_nothing_left("after DEL");
    scene.assert_recycled_address_has_its_own_name("after DEL");
}
