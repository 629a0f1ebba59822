//! One container cannot lock others out of netsvc-dnsd: 1,000 idle TCP
//! connections from one container, and another container's TCP queries
//! are all answered at once (the flooder's own idlest connections make room).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use netsvc_tests::TestNode;
use netsvc_tests::chain::CallArgs;
use serde_json::json;

const DOMAIN: &str = "fair.internal";
const GW: &str = "10.244.1.1";

/// A DNS query for `web.<DOMAIN>` A, id `id`, as DNS over TCP sends it (length first).
fn tcp_query(id: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in format!("web.{DOMAIN}").split('.') {
        q.push(label.len() as u8);
        q.extend(label.as_bytes());
    }
    q.extend([0, 0, 1, 0, 1]);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend(q);
    framed
}

/// Lets this process hold as many descriptors as its hard limit allows.
fn raise_open_files() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the local struct given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
}

#[test]
fn a_thousand_idle_tcp_connections_of_one_container_do_not_lock_another_out() {
    raise_open_files();
    let node = TestNode::new().unwrap();
    let dns = json!({"type": "netsvc-dns", "domain": DOMAIN, "upstreams": []});
    let chain = node
        .chain(&node.bridge_conflist("fair", "1.0.0", "10.244.1.0/24", vec![dns]))
        .unwrap();
    let [web, flood, client] = ["web", "flood", "client"].map(|n| node.container(n).unwrap());
    for (c, name) in [(&web, "web"), (&flood, "flood"), (&client, "client")] {
        chain.add_with(c, "eth0", &CallArgs::endpoint(name, None)).unwrap();
    }
    // The flooder opens 1,000 connections and says nothing on any.
    let held: Vec<TcpStream> = flood
        .ns()
        .run(|| {
            (0..1000)
                .map(|i| TcpStream::connect((GW, 53)).unwrap_or_else(|e| panic!("connection {i}: {e}")))
                .collect()
        })
        .unwrap();
    // Meanwhile another container asks over TCP, a new connection per query.
    let took: Vec<Duration> = client
        .ns()
        .run(|| {
            (0..50u16)
                .map(|id| {
                    let started = Instant::now();
                    let mut c = TcpStream::connect((GW, 53)).expect("connect");
                    c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                    c.write_all(&tcp_query(id)).unwrap();
                    let mut len = [0u8; 2];
                    c.read_exact(&mut len)
                        .unwrap_or_else(|e| panic!("query {id} unanswered within 1 s: {e}"));
                    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    c.read_exact(&mut reply).unwrap();
                    assert_eq!(reply[..2], id.to_be_bytes(), "the answer to query {id}");
                    assert_eq!(reply[3] & 0x0f, 0, "NOERROR");
                    started.elapsed()
                })
                .collect()
        })
        .unwrap();
    let mut sorted = took.clone();
    sorted.sort();
    println!(
        "50 TCP queries beside 1,000 idle connections: median {:?}, p99 {:?}, max {:?}",
        sorted[25], sorted[49], sorted[49]
    );
    drop(held);
}
