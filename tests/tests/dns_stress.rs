//! netsvc-dnsd under stress: 500 containers coming and going (records follow,
//! memory returns, the same process serves throughout), a minute of random
//! and mutated packets, and floods of idle TCP clients and of queries for a
//! dead upstream. Named `serial_…`: each runs alone (see .config/nextest.toml).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use netsvc_tests::chain::{CallArgs, Chain, container_ip};
use netsvc_tests::{Container, Netns, TestNode};
use serde_json::{Value, json};

fn dns_conf(domain: &str, upstreams: Value) -> Value {
    json!({"type": "netsvc-dns", "domain": domain, "upstreams": upstreams})
}

fn daemon_pid(node: &TestNode) -> u32 {
    let raw = std::fs::read_to_string(node.state_dir().join("dnsd/pid")).unwrap();
    raw.trim().parse().unwrap()
}

/// The daemon's resident set in KiB (`VmRSS` of /proc/PID/status).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {status}"))
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// What the daemon logged; it must never have caught a panic.
fn assert_no_panic_logged(node: &TestNode) {
    let log = std::fs::read_to_string(node.state_dir().join("dnsd/dnsd.log")).unwrap_or_default();
    let panics: Vec<&str> = log.lines().filter(|l| l.contains("panic")).collect();
    assert!(panics.is_empty(), "the daemon panicked: {panics:#?}");
}

/// `dig +short` for many names in one run: the answer lines, in order.
fn dig_many(ns: &Netns, server: &str, names: &[String]) -> Vec<String> {
    let mut args = vec![
        format!("@{server}"),
        "+short".into(),
        "+time=2".into(),
        "+tries=2".into(),
    ];
    args.extend(names.iter().cloned());
    let out = ns.exec("dig", &args).unwrap_or_else(|e| panic!("dig: {e:#}"));
    out.lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
}

/// Adds `count` containers named `{prefix}{i}` to `chain`, four at a time;
/// the containers with their addresses.
fn add_many(node: &TestNode, chain: &Chain, prefix: &str, count: usize) -> Vec<(Container, String, String)> {
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}{i}")).collect();
    let mut added = Vec::with_capacity(count);
    for batch in names.chunks(4) {
        let done: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = batch
                .iter()
                .map(|name| {
                    s.spawn(move || {
                        let c = node.container(name).unwrap();
                        let r = chain
                            .add_with(&c, "eth0", &CallArgs::endpoint(name, None))
                            .unwrap_or_else(|e| panic!("ADD {name}: {e}"));
                        let ip = container_ip(&r, "eth0").unwrap().to_string();
                        (c, name.clone(), ip)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        added.extend(done);
    }
    added
}

/// Deletes the containers `add_many` made, four at a time.
fn del_many(chain: &Chain, containers: Vec<(Container, String, String)>) {
    for batch in containers.chunks(4) {
        std::thread::scope(|s| {
            for (c, name, _) in batch {
                s.spawn(move || chain.del(c, "eth0").unwrap_or_else(|e| panic!("DEL {name}: {e}")));
            }
        });
    }
}

/// Every added name answers with its address, asked 50 names per dig.
fn assert_all_resolve(ns: &Netns, server: &str, domain: &str, containers: &[(Container, String, String)]) {
    for batch in containers.chunks(50) {
        let names: Vec<String> = batch.iter().map(|(_, n, _)| format!("{n}.{domain}")).collect();
        let want: Vec<String> = batch.iter().map(|(_, _, ip)| ip.clone()).collect();
        assert_eq!(dig_many(ns, server, &names), want);
    }
}

#[test]
fn serial_churn_500_containers_come_and_go_and_memory_returns() {
    let node = TestNode::new().unwrap();
    let domain = "churn.internal";
    let chain = node
        .chain(&node.bridge_conflist("dnschurn", "1.0.0", "10.243.0.0/21", vec![dns_conf(domain, json!([]))]))
        .unwrap();
    let probe = node.container("probe").unwrap();
    chain
        .add_with(&probe, "eth0", &CallArgs::endpoint("probe", None))
        .unwrap();
    let gw = "10.243.0.1";
    let pid = daemon_pid(&node);

    // A warm-up round first: the baseline is the daemon after it has served
    // some churn (its runtime's threads and buffers exist), not fresh from exec.
    let warm = add_many(&node, &chain, "warm", 50);
    assert_all_resolve(probe.ns(), gw, domain, &warm);
    del_many(&chain, warm);
    let baseline = settled_rss(pid);

    let started = Instant::now();
    let churned = add_many(&node, &chain, "c", 500);
    println!("500 ADDs in {:?}", started.elapsed());
    assert_all_resolve(probe.ns(), gw, domain, &churned);
    let names: Vec<String> = churned.iter().map(|(_, n, _)| format!("{n}.{domain}")).collect();
    let peak = rss_kib(pid);

    let started = Instant::now();
    del_many(&chain, churned);
    println!("500 DELs in {:?}", started.elapsed());
    for batch in names.chunks(50) {
        assert_eq!(
            dig_many(probe.ns(), gw, batch),
            Vec::<String>::new(),
            "names gone after DEL"
        );
    }
    assert_eq!(
        dig_many(probe.ns(), gw, &[format!("probe.{domain}")]).len(),
        1,
        "the probe is still there"
    );

    assert_eq!(daemon_pid(&node), pid, "no restart");
    let after = settled_rss(pid);
    println!("RSS baseline {baseline} KiB, with 500 containers {peak} KiB, after {after} KiB");
    assert!(
        after as f64 <= baseline as f64 * 1.2,
        "RSS {after} KiB after churn, baseline {baseline} KiB"
    );
    assert_no_panic_logged(&node);
}

/// The daemon's RSS once reloads are done: the smallest of a few samples a
/// moment apart (a reload in flight holds two zones for an instant).
fn settled_rss(pid: u32) -> u64 {
    (0..5)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(300));
            rss_kib(pid)
        })
        .min()
        .unwrap()
}

/// A bridge network `name` with `dns`, a client container called `client`
/// and one called `target`; the target's address.
fn two_containers<'n>(
    node: &'n TestNode,
    name: &str,
    subnet: &str,
    dns: Value,
    client: &str,
) -> (Chain<'n>, Container, Container, String) {
    let chain = node
        .chain(&node.bridge_conflist(name, "1.0.0", subnet, vec![dns]))
        .unwrap();
    let (c, target) = (node.container(client).unwrap(), node.container("target").unwrap());
    chain.add_with(&c, "eth0", &CallArgs::endpoint(client, None)).unwrap();
    let r = chain
        .add_with(&target, "eth0", &CallArgs::endpoint("target", None))
        .unwrap();
    let target_ip = container_ip(&r, "eth0").unwrap().to_string();
    (chain, c, target, target_ip)
}

/// A small seeded generator (xorshift64*): the fuzz run is reproducible from its seed.
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
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// A well-formed query for `name` (type `qtype`), optionally with an EDNS OPT record.
fn query(id: u16, name: &str, qtype: u16, edns: bool) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend(id.to_be_bytes());
    q.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend(label.as_bytes());
    }
    q.push(0);
    q.extend(qtype.to_be_bytes());
    q.extend([0, 1]);
    if edns {
        q.extend([0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
    }
    q
}

/// One hostile packet: pure noise, a mutated query, or a hand-made trap
/// (compression loops, lying counts, odd opcodes and classes).
fn hostile(rng: &mut Rng, names: &[&str]) -> Vec<u8> {
    let name = names[rng.below(names.len())];
    let qtypes = [1, 28, 12, 33, 15, 16, 255, 41, 252, 0, 65535];
    let mut q = query(
        rng.next() as u16,
        name,
        qtypes[rng.below(qtypes.len())],
        rng.below(2) == 0,
    );
    match rng.below(8) {
        0 => (0..rng.below(600)).map(|_| rng.byte()).collect(),
        1 => {
            for _ in 0..=rng.below(8) {
                let i = rng.below(q.len());
                q[i] ^= 1 << rng.below(8);
            }
            q
        }
        2 => {
            q.truncate(rng.below(q.len()));
            q
        }
        3 => {
            for _ in 0..=rng.below(16) {
                let i = rng.below(q.len() + 1);
                q.insert(i, rng.byte());
            }
            q
        }
        4 => {
            // A name that points at itself, or forward past the end.
            let mut t = q[..12].to_vec();
            t.extend([0xc0, [12, 0xff][rng.below(2)], 0, 1, 0, 1]);
            t
        }
        5 => {
            // Counts that promise far more records than follow.
            q[4..12].fill_with(|| rng.byte());
            q
        }
        6 => {
            // Every opcode and flag combination, the QR bit included.
            q[2] = rng.byte();
            q[3] = rng.byte();
            q
        }
        _ => {
            // Random records appended after the question.
            q.extend((0..rng.below(300)).map(|_| rng.byte()));
            q
        }
    }
}

/// TCP abuse: lengths that lie, messages cut off, connections left half-open.
fn hostile_tcp(rng: &mut Rng, server: SocketAddr, names: &[&str]) {
    let Ok(mut conn) = TcpStream::connect_timeout(&server, Duration::from_millis(500)) else {
        return;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
    let msg = hostile(rng, names);
    let len: u16 = match rng.below(3) {
        0 => msg.len() as u16,
        1 => rng.next() as u16,
        _ => 0,
    };
    let _ = conn.write_all(&len.to_be_bytes());
    let _ = conn.write_all(&msg[..rng.below(msg.len() + 1)]);
    if rng.below(4) == 0 {
        let _ = conn.shutdown(std::net::Shutdown::Write);
    }
    let _ = conn.read(&mut [0u8; 512]);
}

#[test]
fn serial_fuzz_random_and_mutated_packets_never_stop_the_daemon() {
    let seconds: u64 = std::env::var("NETSVC_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(65);
    let seed: u64 = std::env::var("NETSVC_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("fuzz seed {seed} (NETSVC_FUZZ_SEED), {seconds} s");

    let node = TestNode::new().unwrap();
    // The upstream is the node's dnsmasq, so forwarded names take the forward path.
    let _upstream = node.upstream_resolver("192.0.2.80 outside.example\n").unwrap();
    let conf = dns_conf("fuzz.internal", json!([TestNode::UPSTREAM]));
    let (_chain, fuzzer, _target, target_ip) = two_containers(&node, "dnsfuzz", "10.243.8.0/24", conf, "fuzzer");
    let pid = daemon_pid(&node);
    let server: SocketAddr = "10.243.8.1:53".parse().unwrap();
    let names = [
        "target.fuzz.internal",
        "fuzzer.fuzz.internal",
        "nobody.fuzz.internal",
        "8.243.10.in-addr.arpa",
        "outside.example",
        "_53._udp.target.fuzz.internal",
        "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p",
    ];

    let sent = fuzzer
        .run(|| {
            let mut rng = Rng(seed);
            let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
            udp.set_nonblocking(true).unwrap();
            let (deadline, mut next_check) = (Instant::now() + Duration::from_secs(seconds), Instant::now());
            let (mut packets, mut checks) = (0u64, 0u32);
            let mut sink = [0u8; 4096];
            while Instant::now() < deadline {
                for _ in 0..64 {
                    let _ = udp.send_to(&hostile(&mut rng, &names), server);
                    packets += 1;
                }
                while udp.recv(&mut sink).is_ok() {}
                if rng.below(8) == 0 {
                    hostile_tcp(&mut rng, server, &names);
                }
                if Instant::now() >= next_check {
                    // A real client is still answered, mid-run.
                    assert_daemon_answers(server, "target.fuzz.internal", &target_ip, packets);
                    next_check = Instant::now() + Duration::from_secs(2);
                    checks += 1;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            println!("{packets} hostile UDP packets, {checks} checks on the way");
            packets
        })
        .unwrap();
    assert!(sent > 10_000, "the fuzzer sent only {sent} packets");

    assert_eq!(daemon_pid(&node), pid, "the same daemon throughout");
    let answer = dig_many(
        fuzzer.ns(),
        "10.243.8.1",
        &["target.fuzz.internal".into(), "outside.example".into()],
    );
    assert_eq!(answer, [target_ip, "192.0.2.80".to_string()]);
    let tcp = fuzzer
        .exec(
            "dig",
            ["@10.243.8.1", "+tcp", "+short", "+time=2", "fuzzer.fuzz.internal"],
        )
        .unwrap();
    assert!(!tcp.trim().is_empty(), "TCP still served");
    assert_no_panic_logged(&node);
}

/// One clean UDP query (retried on loss, as a resolver would) gets `want`.
fn assert_daemon_answers(server: SocketAddr, name: &str, want: &str, after_packets: u64) {
    let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let q = query(0x5eed, name, 1, false);
    let mut buf = [0u8; 1500];
    for _ in 0..3 {
        sock.send_to(&q, server).unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            let reply = &buf[..n];
            assert_eq!(&reply[..2], &q[..2], "reply id");
            // The answer's RDATA is the last four bytes of a one-answer A response.
            let ip: Vec<String> = reply[n - 4..].iter().map(u8::to_string).collect();
            assert_eq!(ip.join("."), want, "answer after {after_packets} hostile packets");
            return;
        }
    }
    panic!("no answer to {name} after {after_packets} hostile packets");
}

#[test]
fn serial_idle_tcp_clients_and_a_dead_upstream_flood_are_bounded() {
    let node = TestNode::new().unwrap();
    // A default route into a veth nobody answers on: the dead upstream's
    // packets leave and vanish, so every forward waits out its timeout.
    node.dead_end_link("uplink0").unwrap();
    node.ip(["route", "add", "default", "dev", "uplink0"]).unwrap();
    let conf = dns_conf("flood.internal", json!(["192.0.2.1"]));
    let (_chain, client, _target, target_ip) = two_containers(&node, "dnsflood", "10.243.9.0/24", conf, "client");
    let pid = daemon_pid(&node);
    // The usual default limit: without a cap, idle clients alone would exhaust it.
    node.exec("prlimit", [format!("--pid={pid}"), "--nofile=1024:1024".into()])
        .unwrap();
    let server: SocketAddr = "10.243.9.1:53".parse().unwrap();

    // 1,100 TCP clients that connect and say nothing.
    let (held, fds) = client
        .run(|| {
            let mut held = Vec::new();
            let mut refused_in_a_row = 0;
            // Past the accept queue the kernel drops SYNs: stop once it is full.
            while held.len() < 1100 && refused_in_a_row < 10 {
                match TcpStream::connect_timeout(&server, Duration::from_millis(200)) {
                    Ok(conn) => {
                        held.push(conn);
                        refused_in_a_row = 0;
                    }
                    Err(_) => refused_in_a_row += 1,
                }
            }
            assert_daemon_answers(server, "target.flood.internal", &target_ip, 0);
            (held.len(), open_fds(pid))
        })
        .unwrap();
    println!("{held} idle TCP clients connected; the daemon held {fds} descriptors");
    // Every connection is taken, and one client holds 8 at most: each new
    // one closes its idlest, so the daemon's descriptors stay bounded.
    assert!(held > 1000, "only {held} clients connected");
    assert!(
        fds < 128 + 64,
        "the daemon held {fds} descriptors for {held} idle clients"
    );
    // Once they are gone, TCP is served again.
    let tcp = netsvc_tests::poll_until(Duration::from_secs(15), || {
        let out = client
            .exec(
                "dig",
                [
                    "@10.243.9.1",
                    "+tcp",
                    "+short",
                    "+time=2",
                    "+tries=1",
                    "target.flood.internal",
                ],
            )
            .ok()?;
        (out.trim() == target_ip).then_some(())
    });
    assert!(tcp.is_some(), "TCP answers again after the idle clients left");

    // 2,000 queries for a dead upstream at once: those past the in-flight cap
    // get SERVFAIL at once, local names keep answering, descriptors stay bounded.
    let (servfail_fast, fds) = client
        .run(|| {
            let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
            let mut buf = [0u8; 512];
            let mut servfail = 0;
            let mut count = |n: usize, buf: &[u8]| {
                if n >= 4 && buf[3] & 0x0f == 2 {
                    servfail += 1;
                }
            };
            // In bursts of 100, reading replies between them, so neither
            // side's socket buffer overflows.
            udp.set_nonblocking(true).unwrap();
            for burst in 0..20u16 {
                for i in burst * 100..(burst + 1) * 100 {
                    udp.send_to(&query(i, &format!("n{i}.dead.example"), 1, false), server)
                        .unwrap();
                }
                std::thread::sleep(Duration::from_millis(5));
                while let Ok(n) = udp.recv(&mut buf) {
                    count(n, &buf);
                }
            }
            let fds = open_fds(pid);
            assert_daemon_answers(server, "target.flood.internal", &target_ip, 2000);
            udp.set_nonblocking(false).unwrap();
            udp.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            while let Ok(n) = udp.recv(&mut buf) {
                count(n, &buf);
            }
            (servfail, fds)
        })
        .unwrap();
    println!("{servfail_fast} SERVFAIL within a moment of 2,000 dead-upstream queries; {fds} descriptors");
    assert!(servfail_fast >= 1500, "only {servfail_fast} immediate SERVFAILs");
    assert!(fds < 512, "the daemon held {fds} descriptors during the flood");
    assert_eq!(daemon_pid(&node), pid);
    assert_no_panic_logged(&node);
}
