//! The typed nftables form (`nft::Batch` with `nft::expr`) held to nft
//! itself: each object and rule is written over netlink in one namespace,
//! and its text (what errors and `--dry-run` show) is given to nft in
//! another. The kernel must hold the same thing either way: the same
//! listing (handles aside) and the same expressions. What is checked here
//! is what a firewall writes: conntrack state, families, ports and port
//! ranges, address sets and prefix sets (negated too), counters, rate
//! limits, logs, every verdict, rule comments, and deleting a rule by its
//! handle.

use netsvc_core::inet::IpNet;
use netsvc_core::nft::expr::{Base, CT_STATE_ESTABLISHED, CT_STATE_RELATED, CtKey, Expr, REG_1};
use netsvc_core::nft::{Batch, DataType, ElementOp, NftTable, NlRule, SetDecl, Verdict};
use netsvc_tests::Netns;
use nftables::types::NfFamily;
use serde_json::Value;

const TABLE: &str = "t";

fn without_handles(v: &mut Value) {
    match v {
        Value::Object(o) => {
            o.remove("handle");
            o.values_mut().for_each(without_handles);
        }
        Value::Array(a) => a.iter_mut().for_each(without_handles),
        _ => {}
    }
}

/// The ruleset as nft lists it, handles aside (after nft's metainfo).
fn listing(ns: &Netns) -> Vec<Value> {
    let mut v: Value = serde_json::from_str(&ns.exec("nft", ["-j", "list", "ruleset"]).unwrap()).unwrap();
    without_handles(&mut v);
    v["nftables"].as_array().unwrap()[1..].to_vec()
}

/// Each rule's expressions as the kernel dumps them (`nft --debug=netlink`).
fn expressions(ns: &Netns) -> Vec<String> {
    ns.exec("nft", ["--debug=netlink", "list", "ruleset"])
        .unwrap()
        .lines()
        .filter(|l| l.trim_start().starts_with('['))
        .map(str::to_string)
        .collect()
}

/// `batch` over netlink in one namespace, its text through nft in another;
/// both namespaces are returned for more of the same.
fn both_ways(batch: &Batch, ns: Option<(Netns, Netns)>) -> (Netns, Netns) {
    let (by_netlink, by_nft) =
        ns.unwrap_or_else(|| (Netns::create("nlform").unwrap(), Netns::create("nftform").unwrap()));
    by_netlink
        .run(|| batch.apply().unwrap_or_else(|e| panic!("{e}")))
        .unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), batch.text()).unwrap();
    by_nft
        .exec("nft", ["-f", file.path().to_str().unwrap()])
        .unwrap_or_else(|e| panic!("{e}\n{}", batch.text()));
    (by_netlink, by_nft)
}

fn assert_same(ns: &(Netns, Netns), when: &str) {
    let (a, b) = (listing(&ns.0), listing(&ns.1));
    assert_eq!(a.len(), b.len(), "{when}: {a:#?}\n{b:#?}");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y, "{when}: over netlink, then by nft");
    }
    assert_eq!(expressions(&ns.0), expressions(&ns.1), "{when}");
}

fn rule(text: &str, exprs: Vec<Expr>) -> NlRule {
    NlRule {
        exprs,
        text: text.to_string(),
    }
}

fn table() -> NftTable {
    NftTable::new(NfFamily::INet, TABLE).unwrap()
}

/// `meta nfproto <family>`: what nft puts before an `ip`/`ip6` match in an inet table.
fn nfproto(v4: bool) -> Vec<Expr> {
    vec![
        Expr::MetaNfproto { dreg: REG_1 },
        Expr::CmpEq {
            sreg: REG_1,
            value: vec![if v4 { 2 } else { 10 }],
        },
    ]
}

fn addr(v4: bool, source: bool) -> Expr {
    let (offset, len) = match (v4, source) {
        (true, true) => (12, 4),
        (true, false) => (16, 4),
        (false, true) => (8, 16),
        (false, false) => (24, 16),
    };
    Expr::Payload {
        base: Base::Network,
        offset,
        len,
        dreg: REG_1,
    }
}

fn dport() -> Expr {
    Expr::Payload {
        base: Base::Transport,
        offset: 2,
        len: 2,
        dreg: REG_1,
    }
}

#[test]
fn a_firewalls_rules_over_netlink_are_the_rules_nft_compiles_from_their_text() {
    let mut b = Batch::new(&table());
    b.add_table();
    b.add_set(SetDecl::typed("hosts4", &[DataType::Ipv4Addr], None))
        .unwrap();
    b.add_set(SetDecl::typed("nets6", &[DataType::Ipv6Addr], None).interval())
        .unwrap();
    b.add_chain("next", None).unwrap();
    b.add_chain(
        "forward",
        Some(netsvc_core::nft::BaseChain {
            kind: "filter",
            hook: netsvc_core::nft::Hook::Forward,
            priority: -5,
        }),
    )
    .unwrap();
    let replies = {
        let mut e = vec![
            Expr::Ct {
                key: CtKey::State,
                original: false,
                dreg: REG_1,
            },
            Expr::Bitwise {
                sreg: REG_1,
                dreg: REG_1,
                mask: (CT_STATE_ESTABLISHED | CT_STATE_RELATED).to_ne_bytes().to_vec(),
                xor: vec![0; 4],
            },
            Expr::CmpNeq {
                sreg: REG_1,
                value: vec![0; 4],
            },
        ];
        e.extend([Expr::Counter, Expr::Verdict(Verdict::Accept)]);
        rule("ct state established,related counter accept", e)
    };
    b.commented_rule("forward", replies, false, Some("replies pass".into()))
        .unwrap();
    let mut ports = nfproto(true);
    ports.extend([
        Expr::MetaL4proto { dreg: REG_1 },
        Expr::CmpEq {
            sreg: REG_1,
            value: vec![6],
        },
        dport(),
        Expr::InRange {
            sreg: REG_1,
            from: 8080u16.to_be_bytes().to_vec(),
            to: 8090u16.to_be_bytes().to_vec(),
        },
        Expr::Counter,
        Expr::Verdict(Verdict::Return),
    ]);
    b.add_rule(
        "next",
        rule(
            "meta nfproto ipv4 meta l4proto tcp th dport 8080-8090 counter return",
            ports,
        ),
    )
    .unwrap();
    let mut from_hosts = nfproto(true);
    from_hosts.extend([
        addr(true, true),
        Expr::InSet {
            set: "hosts4".into(),
            sreg: REG_1,
            invert: false,
        },
        Expr::MetaL4proto { dreg: REG_1 },
        Expr::CmpEq {
            sreg: REG_1,
            value: vec![17],
        },
        dport(),
        Expr::CmpEq {
            sreg: REG_1,
            value: 53u16.to_be_bytes().to_vec(),
        },
        Expr::Counter,
        Expr::Verdict(Verdict::Goto("next".into())),
    ]);
    b.commented_rule(
        "forward",
        rule(
            "ip saddr @hosts4 meta l4proto udp th dport 53 counter goto next",
            from_hosts,
        ),
        true,
        Some("a \"quoted\" reason, #0123456789".into()),
    )
    .unwrap();
    let mut not_from_nets = nfproto(false);
    not_from_nets.extend([
        addr(false, false),
        Expr::InSet {
            set: "nets6".into(),
            sreg: REG_1,
            invert: true,
        },
        Expr::Limit { rate: 10, burst: 5 },
        Expr::Log {
            prefix: "netsvc-fw denied: ".into(),
            group: Some(7),
        },
    ]);
    b.add_rule(
        "forward",
        rule(
            "ip6 daddr != @nets6 limit rate 10/second log prefix \"netsvc-fw denied: \" group 7",
            not_from_nets,
        ),
    )
    .unwrap();
    let mut v4_only = nfproto(true);
    v4_only.extend([Expr::Verdict(Verdict::Jump("next".into()))]);
    b.add_rule("forward", rule("meta nfproto ipv4 jump next", v4_only))
        .unwrap();
    b.add_rule(
        "forward",
        rule(
            "log prefix \"plain: \" counter drop",
            vec![
                Expr::Log {
                    prefix: "plain: ".into(),
                    group: None,
                },
                Expr::Counter,
                Expr::Verdict(Verdict::Drop),
            ],
        ),
    )
    .unwrap();
    for h in ["10.0.0.2", "10.0.0.3"] {
        b.push(ElementOp::Add, "hosts4", h.parse().unwrap()).unwrap();
    }
    let ns = both_ways(&b, None);
    assert!(expressions(&ns.0).len() > 30, "{:#?}", expressions(&ns.0));
    assert_same(&ns, "rules");

    // A rule goes by its handle (the listing's), the same both ways.
    let handle = |ns: &Netns| -> u64 {
        let v: Value = serde_json::from_str(
            &ns.exec("nft", ["-j", "list", "chain", "inet", TABLE, "forward"])
                .unwrap(),
        )
        .unwrap();
        v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o.get("rule"))
            .find(|r| r["comment"] == "replies pass")
            .and_then(|r| r["handle"].as_u64())
            .expect("the replies rule")
    };
    assert_eq!(handle(&ns.0), handle(&ns.1));
    let mut delete = Batch::new(&table());
    delete.delete_rule("forward", handle(&ns.0)).unwrap();
    let ns = both_ways(&delete, Some(ns));
    assert_same(&ns, "a rule deleted by its handle");
}

#[test]
fn prefixes_in_an_interval_set_over_netlink_are_the_ones_nft_writes() {
    let mut b = Batch::new(&table());
    b.add_table();
    b.add_set(SetDecl::typed("nets4", &[DataType::Ipv4Addr], None).interval())
        .unwrap();
    b.add_set(SetDecl::typed("nets6", &[DataType::Ipv6Addr], None).interval())
        .unwrap();
    b.add_set(SetDecl::typed("any4", &[DataType::Ipv4Addr], None).interval())
        .unwrap();
    let nets4 = ["10.0.0.0/8", "192.168.1.1/32", "172.16.0.0/12", "255.255.255.0/24"];
    let nets6 = ["fd00::/8", "::1/128", "2001:db8::/32", "ffff::/16"];
    for (set, nets) in [("nets4", &nets4[..]), ("nets6", &nets6[..])] {
        for n in nets {
            b.interval(ElementOp::Add, set, n.parse::<IpNet>().unwrap()).unwrap();
        }
    }
    b.interval(ElementOp::Add, "any4", "0.0.0.0/0".parse().unwrap())
        .unwrap();
    let ns = both_ways(&b, None);
    let sets = listing(&ns.0);
    let nets4_listed = sets
        .iter()
        .find(|o| o["set"]["name"] == "nets4")
        .map(|o| o["set"]["elem"].as_array().unwrap().len());
    assert_eq!(nets4_listed, Some(4), "{sets:#?}");
    assert_same(&ns, "prefixes added");

    let mut less = Batch::new(&table());
    for (set, net) in [
        ("nets4", "10.0.0.0/8"),
        ("nets4", "255.255.255.0/24"),
        ("nets6", "ffff::/16"),
    ] {
        less.interval(ElementOp::Delete, set, net.parse().unwrap()).unwrap();
    }
    let ns = both_ways(&less, Some(ns));
    assert_same(&ns, "prefixes deleted");
}
