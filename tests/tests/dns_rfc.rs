//! netsvc-dnsd against the RFCs a resolver library relies on, asked with
//! `dig` and `kdig` from a container of a real bridge network: one named
//! test per behaviour.

use std::net::UdpSocket;
use std::time::Duration;

use netsvc_tests::chain::{CallArgs, Chain};
use netsvc_tests::{Container, TestNode};
use serde_json::json;

const DOMAIN: &str = "rfc.internal";

/// A network with the DNS plugin, a container named `web` on it, and a
/// client container asking the gateway's resolver.
struct Scene {
    _web: Container,
    client: Container,
    gw: String,
    // Last: the node outlives the containers' namespaces.
    node: TestNode,
}

impl Scene {
    fn new(subnet: u8) -> Scene {
        let node = TestNode::new().unwrap();
        let dns = json!({"type": "netsvc-dns", "domain": DOMAIN, "upstreams": []});
        let chain: Chain = node
            .chain(&node.bridge_conflist(
                &format!("rfc{subnet}"),
                "1.0.0",
                &format!("10.243.{subnet}.0/24"),
                vec![dns],
            ))
            .unwrap();
        let (web, client) = (node.container("web").unwrap(), node.container("client").unwrap());
        chain.add_with(&web, "eth0", &CallArgs::endpoint("web", None)).unwrap();
        chain
            .add_with(&client, "eth0", &CallArgs::endpoint("client", None))
            .unwrap();
        drop(chain);
        Scene {
            _web: web,
            client,
            gw: format!("10.243.{subnet}.1"),
            node,
        }
    }

    /// `tool` (dig or kdig) against the resolver: its whole output.
    fn ask(&self, tool: &str, args: &[&str]) -> String {
        let mut all = vec![format!("@{}", self.gw), "+time=2".into(), "+tries=1".into()];
        if tool == "kdig" {
            all.truncate(1);
            all.extend(["+timeout=2".into(), "+retry=0".into()]);
        }
        all.extend(args.iter().map(|s| s.to_string()));
        self.client
            .ns()
            .exec(tool, &all)
            .unwrap_or_else(|e| panic!("{tool} {args:?}: {e:#}"))
    }

    fn dig(&self, args: &[&str]) -> String {
        self.ask("dig", args)
    }

    /// The first answer to raw `query` bytes over UDP, from the client.
    fn raw(&self, query: Vec<u8>) -> Vec<u8> {
        let server = format!("{}:53", self.gw);
        self.client
            .ns()
            .run(move || {
                let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                s.send_to(&query, &server).unwrap();
                let mut buf = [0u8; 1500];
                let (n, _) = s.recv_from(&mut buf).expect("an answer");
                buf[..n].to_vec()
            })
            .unwrap()
    }
}

/// dig's `status: …` (the response code).
fn status(out: &str) -> &str {
    out.split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_else(|| panic!("no status in {out}"))
}

/// The records of one section of dig's output (`ANSWER`, `AUTHORITY`), as lines.
fn section<'a>(out: &'a str, name: &str) -> Vec<&'a str> {
    let Some(start) = out.find(&format!(";; {name} SECTION:")) else {
        return Vec::new();
    };
    out[start..]
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect()
}

/// A query's header and question, by hand: id 0x1234, `opcode`, `questions` times `web.<DOMAIN> A`.
fn raw_query(opcode: u8, questions: u16) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, opcode << 3 | 0x01, 0x00];
    q.extend(questions.to_be_bytes());
    q.extend([0, 0, 0, 0, 0, 0]);
    for _ in 0..questions {
        for label in format!("web.{DOMAIN}").split('.') {
            q.push(label.len() as u8);
            q.extend(label.as_bytes());
        }
        q.extend([0, 0, 1, 0, 1]);
    }
    q
}

/// RFC 1035: the zone's apex holds its SOA and NS records, and the name
/// server they name resolves, to the resolver's own address.
#[test]
fn rfc1035_the_apex_has_soa_and_ns_and_its_name_server_resolves() {
    let s = Scene::new(1);
    let soa = s.dig(&[DOMAIN, "SOA"]);
    assert_eq!(status(&soa), "NOERROR", "{soa}");
    let answers = section(&soa, "ANSWER");
    assert!(
        answers.len() == 1 && answers[0].contains("SOA") && answers[0].contains(&format!("ns.{DOMAIN}.")),
        "{soa}"
    );
    let ns = s.dig(&[DOMAIN, "NS"]);
    assert!(
        section(&ns, "ANSWER")
            .iter()
            .any(|l| l.ends_with(&format!("NS\tns.{DOMAIN}."))),
        "{ns}"
    );
    assert_eq!(s.dig(&["+short", &format!("ns.{DOMAIN}"), "A"]).trim(), s.gw);
    let other = s.dig(&[DOMAIN, "A"]);
    assert_eq!(status(&other), "NOERROR", "the apex exists: {other}");
    assert!(section(&other, "ANSWER").is_empty(), "{other}");
}

/// RFC 2308: NXDOMAIN and NODATA carry the zone's SOA in the authority
/// section, whose TTL bounds how long a resolver may cache the negative answer.
#[test]
fn rfc2308_negative_answers_carry_the_soa() {
    let s = Scene::new(2);
    for (args, want) in [
        (["nobody.rfc.internal", "A"], "NXDOMAIN"),
        (["web.rfc.internal", "MX"], "NOERROR"),
    ] {
        let out = s.dig(&args);
        assert_eq!(status(&out), want, "{out}");
        assert!(section(&out, "ANSWER").is_empty(), "{out}");
        let authority = section(&out, "AUTHORITY");
        assert!(
            authority.len() == 1 && authority[0].starts_with(&format!("{DOMAIN}.")) && authority[0].contains("SOA"),
            "{out}"
        );
    }
}

/// RFC 6891 6.1.3: a query of EDNS version 1 gets BADVERS, with the
/// server's own OPT record of version 0.
#[test]
fn rfc6891_an_edns_version_above_0_gets_badvers() {
    let s = Scene::new(3);
    let out = s.dig(&["+edns=1", "+noednsnegotiation", "web.rfc.internal"]);
    assert_eq!(status(&out), "BADVERS", "{out}");
    assert!(out.contains("; EDNS: version: 0"), "{out}");
}

/// RFC 6891 6.1.2 and RFC 8906: options and flags the server does not know are ignored.
#[test]
fn rfc6891_unknown_edns_options_and_flags_are_ignored() {
    let s = Scene::new(4);
    let out = s.dig(&["+ednsopt=65001:c0ffee", "+ednsflags=0x40", "web.rfc.internal"]);
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert_eq!(section(&out, "ANSWER").len(), 1, "{out}");
}

/// RFC 3225 3: the DO bit of a query is copied into the response.
#[test]
fn rfc3225_the_do_bit_is_copied_into_the_response() {
    let s = Scene::new(5);
    let with = s.dig(&["+dnssec", "web.rfc.internal"]);
    assert!(with.contains("; EDNS: version: 0, flags: do;"), "{with}");
    let without = s.dig(&["web.rfc.internal"]);
    assert!(without.contains("; EDNS: version: 0, flags:;"), "{without}");
}

/// RFC 1035 4.1.2 (one question per query, as every server implements it):
/// two questions get FORMERR, with the query's id.
#[test]
fn rfc1035_a_query_of_two_questions_gets_formerr() {
    let s = Scene::new(6);
    let r = s.raw(raw_query(0, 2));
    assert_eq!((r[0], r[1]), (0x12, 0x34), "the query's id");
    assert_eq!(r[2] & 0x80, 0x80, "a response");
    assert_eq!(r[3] & 0x0f, 1, "FORMERR");
    let one = s.raw(raw_query(0, 1));
    assert_eq!(one[3] & 0x0f, 0, "one question is answered: NOERROR");
}

/// RFC 1035 4.1.1: an opcode the server does not implement gets NOTIMP.
#[test]
fn rfc1035_an_opcode_we_do_not_serve_gets_notimp() {
    let s = Scene::new(7);
    let out = s.dig(&["+opcode=2", "web.rfc.internal"]);
    assert_eq!(status(&out), "NOTIMP", "{out}");
    let r = s.raw(raw_query(5, 1));
    assert_eq!(r[3] & 0x0f, 4, "UPDATE gets NOTIMP");
}

/// RFC 7766 6.2.1: several queries on one TCP connection, each answered
/// (kdig keeps the connection open between them).
#[test]
fn rfc7766_several_queries_on_one_tcp_connection_are_each_answered() {
    let s = Scene::new(8);
    let out = s.ask(
        "kdig",
        &[
            "+tcp",
            "+keepopen",
            "web.rfc.internal",
            "client.rfc.internal",
            "ns.rfc.internal",
            "nobody.rfc.internal",
        ],
    );
    let codes: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split("status: ").nth(1))
        .map(|s| s.split(';').next().unwrap_or(s).split(',').next().unwrap_or(s).trim())
        .collect();
    assert_eq!(codes, ["NOERROR", "NOERROR", "NOERROR", "NXDOMAIN"], "{out}");
}

/// RFC 8482: ANY is answered (here with the name's records: there are few).
#[test]
fn rfc8482_any_is_answered() {
    let s = Scene::new(9);
    let out = s.dig(&["+notcp", "web.rfc.internal", "ANY"]);
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert!(!out.contains("flags: qr tc"), "it fits UDP: {out}");
    let kinds: Vec<&str> = section(&out, "ANSWER")
        .iter()
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    assert_eq!(kinds, ["A"], "{out}");
    let apex = s.dig(&[DOMAIN, "ANY"]);
    let kinds: Vec<&str> = section(&apex, "ANSWER")
        .iter()
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    assert_eq!(kinds, ["SOA", "NS"], "{apex}");
}

/// RFC 1035 4.2.1 and RFC 7766: an answer larger than a plain UDP client
/// takes (512 bytes) comes truncated (TC) over UDP and whole over TCP.
#[test]
fn rfc1035_an_answer_too_big_for_udp_is_truncated_and_whole_over_tcp() {
    let s = Scene::new(10);
    let node = &s.node;
    let dns = json!({"type": "netsvc-dns", "domain": DOMAIN, "upstreams": [], "capabilities": {"aliases": true}});
    let chain: Chain = node
        .chain(&node.bridge_conflist("rfc10", "1.0.0", "10.243.10.0/24", vec![dns]))
        .unwrap();
    // 34 addresses: 34 answers of 16 bytes each are past 512.
    let many: Vec<Container> = (0..34).map(|i| node.container(&format!("m{i}")).unwrap()).collect();
    for (i, c) in many.iter().enumerate() {
        let mut args = CallArgs::endpoint(&format!("m{i}"), None);
        args.cap_args
            .insert("aliases".into(), json!({chain.list.name.clone(): ["many"]}));
        chain.add_with(c, "eth0", &args).unwrap();
    }
    let udp = s.dig(&["+noedns", "+notcp", "+ignore", "many.rfc.internal"]);
    let flags = udp
        .split("flags: ")
        .nth(1)
        .and_then(|f| f.split(';').next())
        .unwrap_or_default();
    assert!(flags.split(' ').any(|f| f == "tc"), "truncated over UDP: {udp}");
    let tcp = s.dig(&["+tcp", "many.rfc.internal"]);
    assert_eq!(status(&tcp), "NOERROR", "{tcp}");
    assert_eq!(section(&tcp, "ANSWER").len(), 34, "whole over TCP: {tcp}");
}
