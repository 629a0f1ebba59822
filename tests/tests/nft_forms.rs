//! The firewall's rules and sets in nftables' typed form (`nft::Batch`)
//! held to nft itself: written over netlink in one namespace and, as their
//! text (what errors and `--dry-run` show), through nft in another, the
//! kernel holds the same thing either way: the same listing (handles
//! aside) and the same expressions. Every statement the firewall writes is
//! here (conntrack state, families, ports and port ranges, address sets
//! negated or not, counters, rate limits, logs with and without a group,
//! every verdict), with rule comments, deleting a rule by its handle, and
//! prefixes in interval sets up to the top of the address space.

use netsvc_core::inet::IpNet;
use netsvc_core::nft::{BaseChain, Batch, DataType, ElementOp, Family, Hook, NftTable, SetDecl, Verdict};
use netsvc_firewall::config::Protocol;
use netsvc_firewall::model::Fam;
use netsvc_firewall::stmt::{self, Stmt};
use netsvc_tests::Netns;
use netsvc_tests::nft_forms::TwoWays;
use serde_json::Value;

const TABLE: &str = "t";

fn table() -> NftTable {
    NftTable::new(Family::Inet, TABLE).unwrap()
}

fn both_ways(batch: &Batch, ways: &TwoWays) {
    ways.apply(batch, &batch.text());
}

fn rule(b: &mut Batch, chain: &str, stmts: &[Stmt], comment: Option<&str>) {
    b.commented_rule(chain, stmt::rule(stmts), true, comment.map(str::to_string))
        .unwrap();
}

fn addr(fam: Fam, source: bool, set: &str, negate: bool) -> Stmt {
    Stmt::Addr {
        fam,
        source,
        set: set.into(),
        negate,
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
    let base = BaseChain {
        kind: "filter",
        hook: Hook::Forward,
        priority: -5,
    };
    b.add_chain("forward", Some(base)).unwrap();
    let replies = [Stmt::Replies, Stmt::Counter, Stmt::Verdict(Verdict::Accept)];
    b.commented_rule("forward", stmt::rule(&replies), false, Some("replies pass".into()))
        .unwrap();
    let ports = [
        Stmt::Family(Fam::V4),
        Stmt::L4(Protocol::Tcp),
        Stmt::Dport(8080, 8090),
        Stmt::Counter,
        Stmt::Verdict(Verdict::Return),
    ];
    rule(&mut b, "next", &ports, None);
    let from_hosts = [
        addr(Fam::V4, true, "hosts4", false),
        Stmt::L4(Protocol::Udp),
        Stmt::Dport(53, 53),
        Stmt::Counter,
        Stmt::Verdict(Verdict::Goto("next".into())),
    ];
    rule(&mut b, "forward", &from_hosts, Some("a \"quoted\" reason, #0123456789"));
    let not_to_nets = [
        addr(Fam::V6, false, "nets6", true),
        Stmt::Limit(10),
        Stmt::Log {
            prefix: "netsvc-fw denied: ".into(),
            group: Some(7),
        },
    ];
    rule(&mut b, "forward", &not_to_nets, None);
    let v6_jump = [Stmt::Family(Fam::V6), Stmt::Verdict(Verdict::Jump("next".into()))];
    rule(&mut b, "forward", &v6_jump, None);
    let dropped = [
        Stmt::Log {
            prefix: "plain: ".into(),
            group: None,
        },
        Stmt::Counter,
        Stmt::Verdict(Verdict::Drop),
    ];
    rule(&mut b, "forward", &dropped, None);
    for h in ["10.0.0.2", "10.0.0.3"] {
        b.push(ElementOp::Add, "hosts4", h.parse().unwrap()).unwrap();
    }
    let ways = TwoWays::new();
    both_ways(&b, &ways);
    assert!(
        netsvc_tests::nft_forms::expressions(&ways.by_netlink).len() > 30,
        "{:#?}",
        netsvc_tests::nft_forms::expressions(&ways.by_netlink)
    );
    ways.assert_same("rules");

    // A rule goes by its handle (the listing's), the same both ways.
    let handle = |ns: &Netns| -> u64 {
        let out = ns
            .exec("nft", ["-j", "list", "chain", "inet", TABLE, "forward"])
            .unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o.get("rule"))
            .find(|r| r["comment"] == "replies pass")
            .and_then(|r| r["handle"].as_u64())
            .expect("the replies rule")
    };
    assert_eq!(handle(&ways.by_netlink), handle(&ways.by_nft));
    let mut delete = Batch::new(&table());
    delete.delete_rule("forward", handle(&ways.by_netlink)).unwrap();
    both_ways(&delete, &ways);
    ways.assert_same("a rule deleted by its handle");
}

#[test]
fn prefixes_in_an_interval_set_over_netlink_are_the_ones_nft_writes() {
    let mut b = Batch::new(&table());
    b.add_table();
    for (name, ty) in [
        ("nets4", DataType::Ipv4Addr),
        ("nets6", DataType::Ipv6Addr),
        ("any4", DataType::Ipv4Addr),
    ] {
        b.add_set(SetDecl::typed(name, &[ty], None).interval()).unwrap();
    }
    let nets4 = ["10.0.0.0/8", "192.168.1.1/32", "172.16.0.0/12", "255.255.255.0/24"];
    let nets6 = ["fd00::/8", "::1/128", "2001:db8::/32", "ffff::/16"];
    for (set, nets) in [("nets4", &nets4[..]), ("nets6", &nets6[..])] {
        for n in nets {
            b.interval(ElementOp::Add, set, n.parse::<IpNet>().unwrap()).unwrap();
        }
    }
    b.interval(ElementOp::Add, "any4", "0.0.0.0/0".parse().unwrap())
        .unwrap();
    let ways = TwoWays::new();
    both_ways(&b, &ways);
    let sets = netsvc_tests::nft_forms::listing(&ways.by_netlink);
    let nets4_listed = sets
        .iter()
        .find(|o| o["set"]["name"] == "nets4")
        .map(|o| o["set"]["elem"].as_array().unwrap().len());
    assert_eq!(nets4_listed, Some(4), "{sets:#?}");
    ways.assert_same("prefixes added");

    let mut less = Batch::new(&table());
    for (set, net) in [
        ("nets4", "10.0.0.0/8"),
        ("nets4", "255.255.255.0/24"),
        ("nets6", "ffff::/16"),
    ] {
        less.interval(ElementOp::Delete, set, net.parse().unwrap()).unwrap();
    }
    both_ways(&less, &ways);
    ways.assert_same("prefixes deleted");
}
