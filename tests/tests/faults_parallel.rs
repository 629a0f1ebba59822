//! Fifty containers ADDed and DELed in parallel, three rounds, about a tenth
//! of the calls killed (a failpoint of the core's transactional call, or
//! SIGKILL of one plugin process at a random moment), each killed ADD
//! followed by the runtime's DEL and each killed DEL retried. After every
//! round the kernel and the store agree exactly: what the test derives from
//! the store's endpoint documents alone (addresses and labels) is compared,
//! element by element, with every nftables set and map, every ifb and HTB
//! root, and the DNS daemon's answers; and the store agrees with what the
//! test knows is running. The seed is printed; `NETSVC_STRESS_SEED` replays it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use netsvc_core::failpoint::FAILPOINT_ENV;
use netsvc_core::naming::fnv64;
use netsvc_tests::chain::{CallArgs, Chain, container_ip};
use netsvc_tests::{Container, TestNode, poll_until};
use serde_json::{Value, json};

const NETWORK: &str = "stress";
const SUBNET: &str = "10.252.0.0/24";
const GATEWAY: &str = "10.252.0.1";
const VIP: &str = "10.96.7.10";
const DOMAIN: &str = "stress.internal";
const ROUNDS: usize = 3;
const PER_ROUND: usize = 50;
const WORKERS: usize = 8;
/// Percent of a phase's calls given a fault.
const FAULT_PERCENT: usize = 10;
/// The services of the chain, as their binaries are named.
const SERVICES: [&str; 4] = ["netsvc-firewall", "netsvc-lb", "netsvc-qos", "netsvc-dns"];
/// The services whose calls pass the core's failpoints (those that record an intent).
const FAILPOINT_SERVICES: [&str; 2] = ["netsvc-firewall", "netsvc-lb"];
/// How long the DNS daemon is given to load the last change (DEL does not wait for it).
const DNS_SETTLE: Duration = Duration::from_secs(10);

/// Container `i` of a round: tier by index, `app:shop` for three in four.
fn tier(i: usize) -> &'static str {
    ["web", "api", "db"][i % 3]
}

fn shop(i: usize) -> bool {
    i % 4 != 3
}

/// Four of each round's fifty stay: survivors live through the later rounds.
fn kept(i: usize) -> bool {
    i.is_multiple_of(13)
}

fn conflist(node: &TestNode) -> Value {
    let firewall = json!({"type": "netsvc-firewall", "defaultIngress": "deny", "policies": [
        {"name": "api-from-web", "select": {"labels": {"tier": "api"}},
         "ingress": [{"from": [{"labels": {"tier": "web"}}], "ports": [{"protocol": "tcp", "port": 8080}]}]}]});
    let lb = json!({"type": "netsvc-lb", "services": [
        {"name": "shop", "vip": VIP, "select": {"labels": {"app": "shop"}},
         "ports": [{"port": 80, "targetPort": 8080}]}]});
    let qos = json!({"type": "netsvc-qos", "ingressRate": "10mbit", "egressRate": "5mbit"});
    let dns = json!({"type": "netsvc-dns", "domain": DOMAIN, "upstreams": [TestNode::UPSTREAM]});
    node.bridge_conflist(NETWORK, "1.0.0", SUBNET, vec![firewall, lb, qos, dns])
}

/// A small seeded generator (xorshift64*): a run is replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// `k` distinct indices below `n`.
    fn pick(&mut self, n: usize, k: usize) -> BTreeSet<usize> {
        let mut all: Vec<usize> = (0..n).collect();
        for i in 0..k.min(n) {
            let j = i + self.below(n - i);
            all.swap(i, j);
        }
        all.into_iter().take(k).collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Add,
    Del,
}

impl Verb {
    fn word(self) -> &'static str {
        match self {
            Verb::Add => "add",
            Verb::Del => "del",
        }
    }

    fn cni(self) -> &'static str {
        match self {
            Verb::Add => "ADD",
            Verb::Del => "DEL",
        }
    }
}

/// How one call is killed.
#[derive(Debug, Clone)]
enum Fault {
    /// `NETSVC_FAILPOINT=<service>/<verb>/<step>=kill` on this call's chain.
    Failpoint(String),
    /// SIGKILL to the call's process of `service`, `delay` after it is seen running.
    Kill { service: &'static str, delay: Duration },
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Failpoint(point) => write!(f, "failpoint {point}=kill"),
            Fault::Kill { service, delay } => write!(f, "SIGKILL of {service} {delay:?} after it started"),
        }
    }
}

fn random_fault(rng: &mut Rng, verb: Verb) -> Fault {
    if rng.below(2) == 0 {
        let service = FAILPOINT_SERVICES[rng.below(FAILPOINT_SERVICES.len())];
        let step = ["staged", "programmed"][rng.below(2)];
        Fault::Failpoint(format!("{service}/{}/{step}", verb.word()))
    } else {
        Fault::Kill {
            service: SERVICES[rng.below(SERVICES.len())],
            delay: Duration::from_micros(rng.below(20_000) as u64),
        }
    }
}

/// A container the test knows is attached (its last ADD succeeded, no DEL since).
struct Member {
    name: String,
    ip: IpAddr,
    labels: BTreeMap<String, String>,
    c: Container,
}

fn labels_of(i: usize) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([("tier".to_string(), tier(i).to_string())]);
    if shop(i) {
        l.insert("app".into(), "shop".into());
    }
    l
}

fn args_of(name: &str, labels: &BTreeMap<String, String>) -> CallArgs {
    let text: Vec<String> = labels.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    CallArgs::endpoint(name, Some(&text.join(",")))
}

/// The pid of `service` running `verb` for container `id` on `node`, if one runs.
fn plugin_process(node: &TestNode, id: &str, verb: Verb, service: &str) -> Option<i32> {
    let markers = [
        format!("NETSVC_STATE_DIR={}", node.state_dir().display()),
        format!("CNI_CONTAINERID={id}"),
        format!("CNI_COMMAND={}", verb.cni()),
    ];
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // comm first: cheap, and names up to 15 characters whole.
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != service {
            continue;
        }
        let exe = std::fs::read_link(entry.path().join("exe")).unwrap_or_default();
        if exe.file_name().is_none_or(|n| n != service) {
            continue;
        }
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        if markers.iter().all(|m| vars.contains(&m.as_bytes())) {
            return Some(pid);
        }
    }
    None
}

/// Runs `f` while a killer waits for the call's `service` process and
/// SIGKILLs it `delay` after seeing it; whether a signal was sent.
fn with_killer<T: Send>(
    node: &TestNode,
    id: &str,
    verb: Verb,
    service: &str,
    delay: Duration,
    f: impl FnOnce() -> T + Send,
) -> (T, bool) {
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let killer = s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                if let Some(pid) = plugin_process(node, id, verb, service) {
                    std::thread::sleep(delay);
                    // SAFETY: kill(2) of a plugin process this test's node started.
                    return unsafe { libc::kill(pid, libc::SIGKILL) } == 0;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            false
        });
        let out = f();
        done.store(true, Ordering::Relaxed);
        (out, killer.join().unwrap())
    })
}

/// What the workers report besides their results.
#[derive(Default)]
struct Journal {
    /// Faults injected and what became of them.
    events: Mutex<Vec<String>>,
    /// Calls that failed where nothing was injected, or DELs that did not succeed.
    problems: Mutex<Vec<String>>,
    injected: AtomicUsize,
    fired: AtomicUsize,
    /// Every call, in the order they ended: what a diff's address went through.
    history: Mutex<Vec<(IpAddr, String)>>,
}

impl Journal {
    fn event(&self, e: String) {
        self.events.lock().unwrap().push(e);
    }

    fn problem(&self, p: String) {
        self.problems.lock().unwrap().push(p);
    }

    fn history(&self, ip: Option<IpAddr>, line: String) {
        if let Some(ip) = ip {
            self.history.lock().unwrap().push((ip, line));
        }
    }

    /// The calls of the containers that had an address `lines` name.
    fn history_of(&self, lines: &[String]) -> Vec<String> {
        let named: BTreeSet<IpAddr> = lines
            .iter()
            .flat_map(|l| l.split(|c: char| !(c.is_ascii_digit() || c == '.')))
            .filter_map(|w| w.trim_matches('.').parse().ok())
            .collect();
        let history = self.history.lock().unwrap();
        history
            .iter()
            .filter(|(ip, _)| named.contains(ip))
            .map(|(ip, line)| format!("{ip}: {line}"))
            .collect()
    }
}

struct World<'n> {
    node: &'n TestNode,
    conflist: Value,
    plain: Chain<'n>,
    journal: Journal,
    epoch: Instant,
}

impl World<'_> {
    /// One call of `verb`, with `fault` when given; the ADD's result.
    fn call(&self, c: &Container, verb: Verb, args: &CallArgs, fault: Option<&Fault>) -> Result<Option<Value>, String> {
        let run = |chain: &Chain| -> Result<Option<Value>, String> {
            match verb {
                Verb::Add => chain.add_with(c, "eth0", args).map(Some),
                Verb::Del => chain.del(c, "eth0").map(|()| None),
            }
            .map_err(|e| e.to_string())
        };
        match fault {
            None => run(&self.plain),
            Some(Fault::Failpoint(point)) => {
                let mut chain = self.node.chain(&self.conflist).unwrap();
                chain
                    .runtime
                    .invoker
                    .env
                    .push((FAILPOINT_ENV.into(), format!("{point}=kill")));
                run(&chain)
            }
            Some(Fault::Kill { service, delay }) => {
                with_killer(self.node, c.name(), verb, service, *delay, || run(&self.plain)).0
            }
        }
    }

    /// The address host-local leased to container `id`, if it holds one.
    fn lease(&self, id: &str) -> Option<IpAddr> {
        let dir = self.node.ipam_dir().join(NETWORK);
        std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
            let body = std::fs::read_to_string(e.path()).ok()?;
            (body.lines().next()? == id).then(|| e.file_name().to_str()?.parse().ok())?
        })
    }

    /// One call into the history of `ip`.
    fn log(&self, c: &Container, name: &str, ip: Option<IpAddr>, what: String, result: &Result<Option<Value>, String>) {
        let outcome = match result {
            Ok(_) => "ok".to_string(),
            Err(e) => format!("failed: {}", e.chars().take(120).collect::<String>()),
        };
        let at = self.epoch.elapsed().as_secs_f64();
        self.journal
            .history(ip, format!("{at:7.3}s {name} ({}) {what}: {outcome}", c.name()));
    }

    /// DEL until it succeeds (a runtime retries it); every failure is a problem.
    fn del_until_done(&self, c: &Container, who: &str, ip: Option<IpAddr>, after: &str) {
        for attempt in 1..=3 {
            let result = self.call(c, Verb::Del, &CallArgs::default(), None);
            self.log(c, who, ip, format!("DEL after {after}"), &result);
            match result {
                Ok(_) => return,
                Err(e) => self
                    .journal
                    .problem(format!("{who}: DEL {attempt} after {after} failed: {e}")),
            }
        }
    }

    /// A faulted call's fate, journaled.
    fn note(&self, who: &str, verb: Verb, fault: Option<&Fault>, result: &Result<Option<Value>, String>) {
        match (fault, result) {
            (None, Ok(_)) => {}
            (None, Err(e)) => self
                .journal
                .problem(format!("{who}: {} failed with no fault injected: {e}", verb.cni())),
            (Some(f), Ok(_)) => self
                .journal
                .event(format!("{who}: {} with {f}: finished first", verb.cni())),
            (Some(f), Err(e)) => {
                self.journal.fired.fetch_add(1, Ordering::Relaxed);
                let short: String = e.chars().take(160).collect();
                self.journal
                    .event(format!("{who}: {} with {f}: killed ({short})", verb.cni()));
            }
        }
        if fault.is_some() {
            self.journal.injected.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// ADD as a runtime does it: a failed ADD is DELed; a container that is
    /// to stay is then started again (its ADD once more, without a fault).
    fn add(
        &self,
        c: &Container,
        name: &str,
        labels: &BTreeMap<String, String>,
        fault: Option<&Fault>,
        keep: bool,
    ) -> Option<IpAddr> {
        let args = args_of(name, labels);
        let mut result = self.call(c, Verb::Add, &args, fault);
        self.note(name, Verb::Add, fault, &result);
        let mut what = match fault {
            Some(f) => format!("ADD with {f}"),
            None => "ADD".to_string(),
        };
        for attempt in 0..4 {
            let ip = match &result {
                Ok(r) => Some(container_ip(r.as_ref().expect("ADD has a result"), "eth0").unwrap()),
                Err(_) => self.lease(c.name()),
            };
            self.log(c, name, ip, what, &result);
            if result.is_ok() {
                return ip;
            }
            self.del_until_done(c, name, ip, "a failed ADD");
            if !keep || attempt == 3 {
                return None;
            }
            result = self.call(c, Verb::Add, &args, None);
            if let Err(e) = &result {
                self.journal
                    .problem(format!("{name}: ADD {} of a kept container failed: {e}", attempt + 2));
            }
            what = "ADD again".into();
        }
        None
    }

    /// DEL as a runtime does it: retried until it succeeds.
    fn del(&self, m: &Member, fault: Option<&Fault>) {
        let first = self.call(&m.c, Verb::Del, &CallArgs::default(), fault);
        self.note(&m.name, Verb::Del, fault, &first);
        let what = match fault {
            Some(f) => format!("DEL with {f}"),
            None => "DEL".to_string(),
        };
        self.log(&m.c, &m.name, Some(m.ip), what, &first);
        if first.is_err() {
            self.del_until_done(&m.c, &m.name, Some(m.ip), "a failed DEL");
        }
    }
}

/// Runs `f` on every job, `WORKERS` at a time; the results in job order.
fn parallel<J: Sync, R: Send>(jobs: &[J], f: impl Fn(&J) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..jobs.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    let r = f(job);
                    results.lock().unwrap()[i] = Some(r);
                }
            });
        }
    });
    results.into_inner().unwrap().into_iter().map(|r| r.unwrap()).collect()
}

#[test]
fn stress_fifty_containers_in_parallel_with_kills_leave_kernel_and_store_in_agreement() {
    let started = Instant::now();
    let seed: u64 = std::env::var("NETSVC_STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("stress seed {seed} (NETSVC_STRESS_SEED={seed} replays the choice of faults)");
    let mut rng = Rng(seed);

    let node = TestNode::new().unwrap();
    // A VIP needs a route the node's traffic can take (a real node's default route).
    node.ip(["link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1"])
        .unwrap();
    node.ip(["link", "set", "uplink0", "up"]).unwrap();
    node.ip(["link", "set", "uplink1", "up"]).unwrap();
    node.ip(["route", "add", "default", "dev", "uplink0"]).unwrap();
    let _upstream = node.upstream_resolver("192.0.2.80 outside.example\n").unwrap();
    let conflist = conflist(&node);
    let world = World {
        node: &node,
        plain: node.chain(&conflist).unwrap(),
        conflist,
        journal: Journal::default(),
        epoch: started,
    };

    let mut live: BTreeMap<String, Member> = BTreeMap::new();
    let mut names_used: BTreeSet<String> = BTreeSet::new();
    for round in 0..ROUNDS {
        let when = format!("seed {seed}, round {round}");
        // ADD all fifty in parallel, a tenth of them faulted.
        let faulted = rng.pick(PER_ROUND, PER_ROUND * FAULT_PERCENT / 100);
        let jobs: Vec<(usize, String, Container, Option<Fault>)> = (0..PER_ROUND)
            .map(|i| {
                let name = format!("r{round}c{i}");
                let c = node.container(&name).unwrap();
                let fault = faulted.contains(&i).then(|| random_fault(&mut rng, Verb::Add));
                (i, name, c, fault)
            })
            .collect();
        let t = Instant::now();
        let ips = parallel(&jobs, |(i, name, c, fault)| {
            world.add(c, name, &labels_of(*i), fault.as_ref(), kept(*i))
        });
        let add_time = t.elapsed();
        let mut leaving = Vec::new();
        for ((i, name, c, _), ip) in jobs.into_iter().zip(ips) {
            names_used.insert(name.clone());
            let Some(ip) = ip else { continue };
            let member = Member {
                name,
                ip,
                labels: labels_of(i),
                c,
            };
            if kept(i) {
                live.insert(member.c.name().to_string(), member);
            } else {
                leaving.push(member);
            }
        }
        // DEL all but the survivors in parallel, a tenth of them faulted.
        let faulted = rng.pick(leaving.len(), leaving.len() * FAULT_PERCENT / 100);
        let jobs: Vec<(Member, Option<Fault>)> = leaving
            .into_iter()
            .enumerate()
            .map(|(k, m)| {
                let fault = faulted.contains(&k).then(|| random_fault(&mut rng, Verb::Del));
                (m, fault)
            })
            .collect();
        let t = Instant::now();
        parallel(&jobs, |(m, fault)| world.del(m, fault.as_ref()));
        let del_time = t.elapsed();
        drop(jobs);
        println!(
            "{when}: {PER_ROUND} ADDs in {add_time:?}, DELs in {del_time:?}; {} attached",
            live.len()
        );
        assert_agreement(&world, &live, &names_used, &when);
    }
    let injected = world.journal.injected.load(Ordering::Relaxed);
    let fired = world.journal.fired.load(Ordering::Relaxed);
    println!("{injected} faults injected, {fired} calls killed:");
    for e in world.journal.events.lock().unwrap().iter() {
        println!("  {e}");
    }
    assert!(fired > 0, "seed {seed}: no call was killed");

    // The survivors leave; then nothing of netsvc is left on the node.
    let survivors: Vec<Member> = std::mem::take(&mut live).into_values().collect();
    parallel(&survivors, |m| world.del(m, None));
    drop(survivors);
    assert_agreement(&world, &live, &names_used, &format!("seed {seed}, survivors gone"));
    let left = netsvc_tests::leftovers::leftovers(&node, &[]).unwrap();
    assert!(
        left.is_empty(),
        "seed {seed}: left after every DEL:\n{}",
        left.join("\n")
    );
    println!("seed {seed}: done in {:?}", started.elapsed());
}

/// Panics, with every difference found, unless the kernel, the store and
/// the containers the test knows of agree.
fn assert_agreement(world: &World, live: &BTreeMap<String, Member>, names_used: &BTreeSet<String>, when: &str) {
    let problems = std::mem::take(&mut *world.journal.problems.lock().unwrap());
    let t = Instant::now();
    let diff = disagreements(world.node, live, names_used);
    println!("{when}: compared in {:?}", t.elapsed());
    if problems.is_empty() && diff.is_empty() {
        return;
    }
    let events = world.journal.events.lock().unwrap().join("\n  ");
    let mut named = diff.clone();
    named.extend(problems.iter().cloned());
    let history = world.journal.history_of(&named).join("\n  ");
    panic!(
        "{when}: {} call problems, {} disagreements\ncalls:\n  {}\ndisagreements:\n  {}\n\
         faults so far:\n  {events}\ncalls of the addresses named above:\n  {history}",
        problems.len(),
        diff.len(),
        problems.join("\n  "),
        diff.join("\n  ")
    );
}

/// An endpoint as the store's document has it.
#[derive(Debug, Clone)]
struct Stored {
    container_id: String,
    ifname: String,
    ips: Vec<IpAddr>,
    names: Vec<String>,
    labels: BTreeMap<String, String>,
}

impl Stored {
    fn id(&self) -> String {
        format!("{}:{}", self.container_id, self.ifname)
    }

    fn has(&self, key: &str, value: &str) -> bool {
        self.labels.get(key).is_some_and(|v| v == value)
    }

    /// The ifb netsvc-qos gives an attachment (`nsq` + 48 bits of FNV-1a of `id/ifname`).
    fn ifb(&self) -> String {
        let digest = fnv64(format!("{}/{}", self.container_id, self.ifname).as_bytes());
        format!("nsq{:012x}", digest >> 16)
    }
}

fn network_dir(node: &TestNode) -> PathBuf {
    node.state_dir().join("kv/networks").join(NETWORK)
}

/// `(file name, document)` of every JSON document directly in `dir`.
fn documents(dir: &Path) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "json") {
            let body = std::fs::read(&path).unwrap_or_default();
            let doc = serde_json::from_slice(&body).unwrap_or_else(|e| json!({"unparsable": e.to_string()}));
            out.push((entry.file_name().to_string_lossy().into_owned(), doc));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn stored_endpoints(node: &TestNode, diff: &mut Vec<String>) -> Vec<Stored> {
    let mut out = Vec::new();
    for (file, doc) in documents(&network_dir(node).join("endpoints")) {
        let v = &doc["value"];
        let strings = |key: &str| -> Vec<String> {
            v[key]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        };
        let ips: Vec<IpAddr> = strings("ips")
            .iter()
            .filter_map(|c| c.split('/').next()?.parse().ok())
            .collect();
        let (Some(id), Some(ifname), false) = (v["containerId"].as_str(), v["ifname"].as_str(), ips.is_empty()) else {
            diff.push(format!(
                "store: endpoint document {file} is not an endpoint with an address: {doc}"
            ));
            continue;
        };
        let labels = v["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        out.push(Stored {
            container_id: id.into(),
            ifname: ifname.into(),
            ips,
            names: strings("names"),
            labels,
        });
    }
    out
}

/// Who holds `ip`, for a diff line.
fn holder(eps: &[Stored], ip: &IpAddr) -> String {
    match eps.iter().find(|e| e.ips.contains(ip)) {
        Some(e) => format!("{ip} ({} {:?})", e.names.join(","), e.labels),
        None => format!("{ip} (no endpoint in the store)"),
    }
}

/// `what`: the differences between `want` and `got`, one line each.
fn set_diff<T: Ord + std::fmt::Debug>(
    what: &str,
    want: &BTreeSet<T>,
    got: &BTreeSet<T>,
    show: impl Fn(&T) -> String,
) -> Vec<String> {
    let mut out: Vec<String> = want
        .difference(got)
        .map(|x| format!("{what}: missing {}", show(x)))
        .collect();
    out.extend(got.difference(want).map(|x| format!("{what}: extra {}", show(x))));
    out
}

/// The kernel's sets and maps of one netsvc table: name → (kind, elements).
type Sets = BTreeMap<String, (String, Vec<Value>)>;

fn sets_of(ruleset: &Value, table: &str) -> Sets {
    let mut out = Sets::new();
    for item in ruleset["nftables"].as_array().into_iter().flatten() {
        for kind in ["set", "map"] {
            if let Some(s) = item.get(kind)
                && s["table"] == table
            {
                let elems = s["elem"].as_array().cloned().unwrap_or_default();
                out.insert(
                    s["name"].as_str().unwrap_or_default().to_string(),
                    (kind.to_string(), elems),
                );
            }
        }
    }
    out
}

/// Every address anywhere in `v` (elements, keys, concatenations, values).
fn addresses_in(v: &Value, out: &mut Vec<IpAddr>) {
    match v {
        Value::String(s) => out.extend(s.parse::<IpAddr>().ok()),
        Value::Array(a) => a.iter().for_each(|x| addresses_in(x, out)),
        Value::Object(o) => o.values().for_each(|x| addresses_in(x, out)),
        _ => {}
    }
}

fn ip_elements(what: &str, elems: &[Value], diff: &mut Vec<String>) -> BTreeSet<IpAddr> {
    let mut out = BTreeSet::new();
    for e in elems {
        match e.as_str().and_then(|s| s.parse().ok()) {
            Some(ip) => {
                out.insert(ip);
            }
            None => diff.push(format!("{what}: an element that is not one address: {e}")),
        }
    }
    out
}

/// Everything the kernel, the store and the running containers disagree on.
fn disagreements(node: &TestNode, live: &BTreeMap<String, Member>, names_used: &BTreeSet<String>) -> Vec<String> {
    let mut diff = Vec::new();
    let eps = stored_endpoints(node, &mut diff);

    // The store and the containers the test knows are attached.
    let stored_ids: BTreeSet<String> = eps.iter().map(|e| e.container_id.clone()).collect();
    let live_ids: BTreeSet<String> = live.keys().cloned().collect();
    let name_of = |id: &String| {
        let from_test = live.get(id).map(|m| m.name.clone());
        let from_store = eps.iter().find(|e| &e.container_id == id).map(|e| e.names.join(","));
        format!("{id} ({})", from_test.or(from_store).unwrap_or_default())
    };
    diff.extend(set_diff(
        "store endpoints vs attached containers",
        &live_ids,
        &stored_ids,
        name_of,
    ));
    for e in &eps {
        if let Some(m) = live.get(&e.container_id)
            && (e.ips != [m.ip] || e.names != [m.name.clone()] || e.labels != m.labels)
        {
            diff.push(format!(
                "store endpoint {}: {:?} {:?} {:?}, the container has {} {} {:?}",
                e.id(),
                e.ips,
                e.names,
                e.labels,
                m.ip,
                m.name,
                m.labels
            ));
        }
    }

    // What the kernel must hold, from the store's endpoints alone.
    let v4 = |pred: &dyn Fn(&Stored) -> bool| -> BTreeSet<IpAddr> {
        eps.iter()
            .filter(|e| pred(e))
            .flat_map(|e| e.ips.iter().copied())
            .filter(IpAddr::is_ipv4)
            .collect()
    };
    let every = v4(&|_| true);
    let api = v4(&|e| e.has("tier", "api"));
    let web = v4(&|e| e.has("tier", "web"));
    let shop = v4(&|e| e.has("app", "shop"));
    let show = |ip: &IpAddr| holder(&eps, ip);

    let ruleset = node.nft_ruleset().unwrap();

    // Firewall: every set's elements.
    let fw = sets_of(&ruleset, "netsvc_firewall");
    let mut seen = BTreeMap::new();
    for (name, (kind, elems)) in &fw {
        let (pattern, want) = if name == "eps4" {
            ("eps4", &every)
        } else if name.ends_with("_eps4") {
            ("<net>_eps4", &every)
        } else if name.ends_with("_sel4") {
            ("<policy>_sel4 (tier=api)", &api)
        } else if name.ends_with("_i0p04") {
            ("<policy>_i0p04 (peers tier=web)", &web)
        } else if name.ends_with('6') {
            ("an IPv6 set", &BTreeSet::new())
        } else {
            diff.push(format!("firewall: a {kind} {name} the config does not make: {elems:?}"));
            continue;
        };
        *seen.entry(pattern).or_insert(0) += 1;
        let got = ip_elements(&format!("firewall set {name}"), elems, &mut diff);
        diff.extend(set_diff(&format!("firewall set {name}"), want, &got, show));
    }
    // Without endpoints the network's sets may be gone with its chains.
    for pattern in [
        "eps4",
        "<net>_eps4",
        "<policy>_sel4 (tier=api)",
        "<policy>_i0p04 (peers tier=web)",
    ] {
        let n = seen.get(pattern).copied().unwrap_or(0);
        if n > 1 || (n == 0 && !eps.is_empty()) {
            diff.push(format!("firewall: {n} sets {pattern}, not one"));
        }
    }

    // Load balancer: hairpin pairs, the slot map, frontends, the port chain.
    let lb = sets_of(&ruleset, "netsvc_lb");
    let vip: IpAddr = VIP.parse().unwrap();
    let frontend = json!({"concat": [VIP, "tcp", 80]});
    let mut slots_maps = Vec::new();
    let mut port_chain = None;
    for (name, (kind, elems)) in &lb {
        match name.as_str() {
            "hairpin" => {
                let want: BTreeSet<(IpAddr, IpAddr)> = every.iter().map(|ip| (*ip, *ip)).collect();
                let got: BTreeSet<(IpAddr, IpAddr)> = elems
                    .iter()
                    .filter_map(|e| {
                        let pair = e["concat"].as_array()?;
                        Some((
                            pair.first()?.as_str()?.parse().ok()?,
                            pair.get(1)?.as_str()?.parse().ok()?,
                        ))
                    })
                    .collect();
                if got.len() != elems.len() {
                    diff.push(format!(
                        "lb set hairpin: elements that are not address pairs: {elems:?}"
                    ));
                }
                diff.extend(set_diff("lb set hairpin", &want, &got, |(a, b)| {
                    format!("{a} . {b} of {}", show(a))
                }));
            }
            "services" => {
                let ok = elems.len() == 1 && elems[0][0] == frontend;
                match elems[0][1]["goto"]["target"].as_str() {
                    Some(chain) if ok => port_chain = Some(chain.to_string()),
                    _ => diff.push(format!("lb map services: {elems:?}, not one goto for {VIP} tcp/80")),
                }
            }
            "affinity" if elems.is_empty() => {}
            "empty" => {
                let want: Vec<Value> = if shop.is_empty() {
                    vec![frontend.clone()]
                } else {
                    vec![]
                };
                if *elems != want {
                    diff.push(format!(
                        "lb set empty: {elems:?} with {} backends, not {want:?}",
                        shop.len()
                    ));
                }
            }
            n if n.ends_with("_slots") => {
                slots_maps.push(n.to_string());
                let mut slots = BTreeMap::new();
                for e in elems {
                    match (e[0].as_u64(), e[1].as_str().and_then(|s| s.parse::<IpAddr>().ok())) {
                        (Some(slot), Some(ip)) => {
                            slots.insert(slot, ip);
                        }
                        _ => diff.push(format!("lb map {n}: an element that is not slot : address: {e}")),
                    }
                }
                let got: BTreeSet<IpAddr> = slots.values().copied().collect();
                diff.extend(set_diff(&format!("lb map {n} backends"), &shop, &got, show));
                let keys: Vec<u64> = slots.keys().copied().collect();
                if keys != (0..shop.len() as u64).collect::<Vec<_>>() || got.len() != slots.len() {
                    diff.push(format!(
                        "lb map {n}: slots {slots:?}, not one slot 0..{} per backend",
                        shop.len()
                    ));
                }
            }
            _ => diff.push(format!(
                "lb: a {kind} {name} the config does not make, or not empty: {elems:?}"
            )),
        }
    }
    // Without endpoints on the node the service may be gone whole.
    if slots_maps.len() > 1 || (slots_maps.is_empty() && !eps.is_empty()) {
        diff.push(format!("lb: slot maps {slots_maps:?}, not one"));
    }
    match &port_chain {
        Some(chain) => diff.extend(port_chain_diff(&ruleset, chain, slots_maps.first(), shop.len())),
        None if eps.is_empty() => {}
        None => diff.push("lb: no frontend for the VIP".into()),
    }

    // No permission the store does not know: every address in any netsvc
    // set or map is a stored endpoint's or the VIP.
    let held: BTreeSet<IpAddr> = eps.iter().flat_map(|e| e.ips.iter().copied()).collect();
    for item in ruleset["nftables"].as_array().into_iter().flatten() {
        for kind in ["set", "map"] {
            let Some(s) = item.get(kind) else { continue };
            let table = s["table"].as_str().unwrap_or_default();
            if !table.starts_with("netsvc") {
                continue;
            }
            let mut found = Vec::new();
            addresses_in(&s["elem"], &mut found);
            let found: BTreeSet<IpAddr> = found.into_iter().collect();
            for ip in found.into_iter().filter(|ip| !held.contains(ip) && *ip != vip) {
                diff.push(format!(
                    "{table} {kind} {}: holds {ip}, no endpoint's address",
                    s["name"]
                ));
            }
        }
    }

    diff.extend(qos_diff(node, live, &eps));
    diff.extend(store_diff(node, &eps));
    diff.extend(dns_diff(live, &eps, names_used));
    diff
}

/// The port chain's first rule picks among exactly the slots there are.
fn port_chain_diff(ruleset: &Value, chain: &str, slots: Option<&String>, backends: usize) -> Vec<String> {
    let rules: Vec<&Value> = ruleset["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i.get("rule"))
        .filter(|r| r["table"] == "netsvc_lb" && r["chain"] == chain)
        .collect();
    let dnat = |r: &Value| -> Option<(u64, String)> {
        let map = r["expr"].as_array()?.iter().find_map(|x| x.get("dnat"))?["addr"]["map"].clone();
        Some((map["key"]["numgen"]["mod"].as_u64()?, map["data"].as_str()?.to_string()))
    };
    let first = rules.first().map(|r| dnat(r));
    let want = slots.map(|s| (backends as u64, format!("@{s}")));
    match (backends, first) {
        (0, None) => vec![],
        (0, Some(_)) => vec![format!("lb chain {chain}: rules without backends: {rules:?}")],
        (_, Some(Some(got))) if Some(&got) == want.as_ref() => vec![],
        (_, got) => vec![format!(
            "lb chain {chain}: first rule picks {got:?}, not mod {backends} of {slots:?}"
        )],
    }
}

/// One ifb per stored endpoint and no other; an HTB root on each endpoint's
/// host veth (found from the container's side) and on its ifb; no shaping
/// anywhere else; qos records for stored endpoints only.
fn qos_diff(node: &TestNode, live: &BTreeMap<String, Member>, eps: &[Stored]) -> Vec<String> {
    let mut diff = Vec::new();
    let want: BTreeSet<String> = eps.iter().map(Stored::ifb).collect();
    let got: BTreeSet<String> = node.links_of_kind("ifb").unwrap().into_iter().collect();
    let owner = |ifb: &String| match eps.iter().find(|e| &e.ifb() == ifb) {
        Some(e) => format!("{ifb} of {} ({})", e.id(), e.names.join(",")),
        None => format!("{ifb} (no endpoint in the store)"),
    };
    diff.extend(set_diff("ifb links", &want, &got, owner));

    let qdiscs: Vec<Value> = node
        .tc_json(&["qdisc", "show"])
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default();
    let has = |dev: &str, kind: &str, root: bool| {
        qdiscs
            .iter()
            .any(|q| q["dev"] == dev && q["kind"] == kind && (!root || q["root"].as_bool() == Some(true)))
    };
    let mut shaped = BTreeSet::new();
    let records = network_dir(node).join("nodes");
    let qos_records: BTreeMap<String, Value> = std::fs::read_dir(&records)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|n| documents(&n.path().join("netsvc-qos")))
        .collect();
    for e in eps {
        let ifb = e.ifb();
        shaped.insert(ifb.clone());
        if !has(&ifb, "htb", true) {
            diff.push(format!(
                "qos: no HTB root on {ifb} of {} ({})",
                e.id(),
                e.names.join(",")
            ));
        }
        let record = qos_records.get(&format!("{}.json", e.id()));
        let Some(m) = live.get(&e.container_id) else { continue };
        let veth = match m.c.veth_peer_in("eth0", node) {
            Ok(v) => v,
            Err(err) => {
                diff.push(format!("qos: no host veth for {}: {err:#}", m.name));
                continue;
            }
        };
        if !has(&veth, "htb", true) {
            diff.push(format!("qos: no HTB root on {veth}, the host veth of {}", m.name));
        }
        if !has(&veth, "ingress", false) {
            diff.push(format!(
                "qos: no ingress qdisc (redirect to the ifb) on {veth} of {}",
                m.name
            ));
        }
        let r = record.map(|d| &d["value"]);
        if r.is_none_or(|r| r["hostVeth"] != veth.as_str() || r["ifb"] != ifb.as_str()) {
            diff.push(format!(
                "qos record of {}: {r:?}, the kernel has {veth} and {ifb}",
                m.name
            ));
        }
        shaped.insert(veth);
    }
    for q in &qdiscs {
        let (dev, kind) = (
            q["dev"].as_str().unwrap_or_default(),
            q["kind"].as_str().unwrap_or_default(),
        );
        if ["htb", "tbf", "ingress", "clsact"].contains(&kind) && !shaped.contains(dev) {
            diff.push(format!("qos: a {kind} qdisc on {dev}, no stored endpoint's"));
        }
    }
    let ids: BTreeSet<String> = eps.iter().map(|e| format!("{}.json", e.id())).collect();
    let got: BTreeSet<String> = qos_records.keys().cloned().collect();
    diff.extend(set_diff("qos records vs store endpoints", &ids, &got, String::clone));
    diff
}

/// The store agrees with itself: no intent left, shaping and LB records
/// of stored endpoints only, every service counting the endpoints there are.
fn store_diff(node: &TestNode, eps: &[Stored]) -> Vec<String> {
    let mut diff = Vec::new();
    diff.extend(netsvc_tests::leftovers::unfinished_intents(node.state_dir()));
    let net = network_dir(node);
    let ids: BTreeSet<String> = eps.iter().map(|e| format!("{}.json", e.id())).collect();
    let shaping: BTreeSet<String> = documents(&net.join("shaping")).into_iter().map(|(f, _)| f).collect();
    diff.extend(set_diff(
        "store shaping documents vs endpoints",
        &ids,
        &shaping,
        String::clone,
    ));

    let nodes: Vec<PathBuf> = std::fs::read_dir(net.join("nodes"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    if eps.is_empty() {
        return diff;
    }
    let [node_dir] = &nodes[..] else {
        diff.push(format!("store: node records {nodes:?}, not one node's"));
        return diff;
    };
    for service in ["netsvc-firewall", "netsvc-lb", "netsvc-dns"] {
        let docs: BTreeMap<String, Value> = documents(&node_dir.join(service)).into_iter().collect();
        let count = docs.get("settings.json").map(|d| d["value"]["endpoints"].clone());
        if count != Some(json!(eps.len())) {
            diff.push(format!(
                "store: {service} settings count {count:?} endpoints, the store has {}",
                eps.len()
            ));
        }
    }
    let shop: BTreeSet<IpAddr> = eps
        .iter()
        .filter(|e| e.has("app", "shop"))
        .flat_map(|e| e.ips.iter().copied())
        .collect();
    let record = documents(&node_dir.join("netsvc-lb"))
        .into_iter()
        .find(|(f, _)| f == "svc-shop.json")
        .map(|(_, d)| d);
    let slots: BTreeSet<IpAddr> = record
        .iter()
        .flat_map(|d| d["value"]["slots"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s.as_str()?.parse().ok())
        .collect();
    diff.extend(set_diff(
        "store lb record svc-shop slots vs endpoints",
        &shop,
        &slots,
        |ip| holder(eps, ip),
    ));
    diff
}

/// One A question to `server`: the response code and the addresses answered.
fn ask_a(sock: &UdpSocket, server: SocketAddr, id: u16, name: &str) -> std::io::Result<(u8, Vec<IpAddr>)> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend(label.as_bytes());
    }
    q.extend([0, 0, 1, 0, 1]);
    let mut buf = [0u8; 1500];
    for _ in 0..3 {
        sock.send_to(&q, server)?;
        while let Ok(n) = sock.recv(&mut buf) {
            if n >= 12 && buf[..2] == id.to_be_bytes() {
                return Ok((buf[3] & 0x0f, a_records(&buf[..n])));
            }
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no answer for {name}"),
    ))
}

/// The A records of a DNS response.
fn a_records(msg: &[u8]) -> Vec<IpAddr> {
    let skip_name = |mut at: usize| -> Option<usize> {
        loop {
            let len = *msg.get(at)?;
            if len & 0xc0 == 0xc0 {
                return Some(at + 2);
            }
            if len == 0 {
                return Some(at + 1);
            }
            at += 1 + len as usize;
        }
    };
    let count = |at: usize| u16::from_be_bytes([msg[at], msg[at + 1]]) as usize;
    let mut out = Vec::new();
    let mut at = 12;
    for _ in 0..count(4) {
        let Some(next) = skip_name(at) else { return out };
        at = next + 4;
    }
    for _ in 0..count(6) {
        let Some(next) = skip_name(at) else { return out };
        let Some(head) = msg.get(next..next + 10) else {
            return out;
        };
        let (rtype, len) = (
            u16::from_be_bytes([head[0], head[1]]),
            u16::from_be_bytes([head[8], head[9]]) as usize,
        );
        let data = next + 10;
        if rtype == 1
            && len == 4
            && let Some(d) = msg.get(data..data + 4)
        {
            out.push(IpAddr::V4(Ipv4Addr::new(d[0], d[1], d[2], d[3])));
        }
        at = data + len;
    }
    out
}

/// Asked from inside an attached container: each stored endpoint's name
/// answers its address, every other name the test used is NXDOMAIN. The
/// daemon loads a DEL's change after DEL returns: asked again until it
/// agrees or [`DNS_SETTLE`] passes.
fn dns_diff(live: &BTreeMap<String, Member>, eps: &[Stored], names_used: &BTreeSet<String>) -> Vec<String> {
    let Some(client) = live.values().next() else {
        return vec![];
    };
    let server: SocketAddr = format!("{GATEWAY}:53").parse().unwrap();
    let want: BTreeMap<String, Vec<IpAddr>> = names_used
        .iter()
        .map(|n| {
            let ips = eps
                .iter()
                .filter(|e| e.names.contains(n))
                .flat_map(|e| e.ips.iter().copied())
                .collect();
            (n.clone(), ips)
        })
        .collect();
    let check = || -> Vec<String> {
        client
            .c
            .run(|| {
                let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
                sock.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
                let mut diff = Vec::new();
                for (i, (name, ips)) in want.iter().enumerate() {
                    let fqdn = format!("{name}.{DOMAIN}");
                    match ask_a(&sock, server, i as u16, &fqdn) {
                        Ok((0, got)) if !ips.is_empty() && got == *ips => {}
                        Ok((3, _)) if ips.is_empty() => {}
                        Ok((rcode, got)) => diff.push(format!(
                            "dns {fqdn}: rcode {rcode} {got:?}, the store has {}",
                            if ips.is_empty() {
                                "no such endpoint (NXDOMAIN)".into()
                            } else {
                                format!("{ips:?}")
                            }
                        )),
                        Err(e) => {
                            // A daemon that does not answer would not answer the rest either.
                            diff.push(format!(
                                "dns {fqdn}: {e} (asked from {}); {} more names not asked",
                                client.name,
                                want.len() - i - 1
                            ));
                            break;
                        }
                    }
                }
                diff
            })
            .unwrap()
    };
    let mut last = Vec::new();
    poll_until(DNS_SETTLE, || {
        last = check();
        last.is_empty().then_some(())
    });
    last
}
