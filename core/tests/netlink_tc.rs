//! tc objects built by our encoders, checked against what the kernel reports
//! back through `tc` (JSON where iproute2 prints JSON; iproute2 6.1 prints HTB
//! classes as text only, so those are read from `tc -s -d class show`, whose
//! `tokens`/`ctokens` are the exact tick buffers we encoded).

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::TestNs;
use netsvc_core::netlink::tc::{self, HtbClass, HtbQdisc, Mode, Psched, Rate, Tbf, TbfLimit, U32Match, handle};
use netsvc_core::netlink::{self, Rtnl};
use netsvc_core::netlink::{NetlinkError, links};

/// A namespace with a veth pair `ta`/`tb` (both ends inside it).
/// `up`: set both ends up (a down link sends nothing, so the HTB token
/// buckets stay exactly as encoded).
fn veth_ns(tag: &str, up: bool) -> (TestNs, u32, u32) {
    let ns = TestNs::new(tag);
    let (a, b) = netlink::within(&ns.path, |h| {
        links::create_veth(h, "ta", "tb", None)?;
        let a = links::get_by_name(h, "ta")?.index;
        let b = links::get_by_name(h, "tb")?.index;
        if up {
            links::set_up(h, a)?;
            links::set_up(h, b)?;
        }
        Ok::<_, NetlinkError>((a, b))
    })
    .unwrap();
    (ns, a, b)
}

fn word_after<'a>(text: &'a str, key: &str) -> &'a str {
    let pos = text
        .find(&format!(" {key} "))
        .unwrap_or_else(|| panic!("{key} not in {text}"));
    text[pos + key.len() + 2..].split_whitespace().next().unwrap_or("")
}

#[test]
fn htb_qdisc_class_and_u32_filter() {
    let (ns, a, _) = veth_ns("htb", false);
    let ps = Psched::from_proc().unwrap();
    let class = HtbClass {
        rate: Rate::from_bits_per_sec(1_000_000),
        ceil: Some(Rate::from_bits_per_sec(2_000_000)),
        burst: Some(15_360),
        cburst: Some(15_360),
        prio: 1,
        quantum: None,
    };
    netlink::within(&ns.path, |h| {
        let q = HtbQdisc {
            default_class: 0x10,
            r2q: 10,
            direct_qlen: None,
        };
        let big = HtbClass {
            rate: Rate::from_bytes_per_sec(5_000_000_000),
            ..HtbClass::new(Rate::from_bits_per_sec(1))
        };
        let matches = [
            U32Match::Dst(Ipv4Addr::new(10, 0, 0, 0), 24),
            U32Match::Protocol(6),
            U32Match::Dport(80),
        ];
        // One datagram, carried out in order; replace is idempotent.
        let tree = vec![
            tc::htb_qdisc(a, tc::ROOT, 1, &q, Mode::Add)?,
            tc::htb_class(a, handle(1, 0), handle(1, 0x10), &class, &ps, Mode::Add)?,
            tc::htb_class(a, handle(1, 0), handle(1, 0x20), &big, &ps, Mode::Add)?,
            tc::htb_class(a, handle(1, 0), handle(1, 0x10), &class, &ps, Mode::Replace)?,
            tc::u32_class_filter(a, handle(1, 0), 1, &matches, handle(1, 0x10))?,
        ];
        Rtnl::open()?.apply(&tree)?;
        // Add of an existing class is EEXIST, alone or in a batch whose
        // other requests pass (the first refusal is the batch's answer).
        let again = tc::htb_class(a, handle(1, 0), handle(1, 0x10), &class, &ps, Mode::Add)?;
        let e = h.send(again.clone()).unwrap_err();
        assert!(e.is_exists(), "{e}");
        let gone = tc::qdisc_deletion(a, tc::INGRESS_PARENT)?;
        let e = Rtnl::open()?.apply(&[gone, again]).unwrap_err();
        assert!(e.is_exists() && e.to_string().contains("add htb class"), "{e}");
        let qd = tc::list_qdiscs(h, a)?;
        assert!(
            qd.iter()
                .any(|q| q.kind == "htb" && q.handle == handle(1, 0) && q.parent == tc::ROOT),
            "{qd:?}"
        );
        let cl = tc::list_classes(h, a)?;
        assert!(
            cl.iter().any(|c| c.kind == "htb" && c.handle == handle(1, 0x10)),
            "{cl:?}"
        );
        Ok::<_, NetlinkError>(())
    })
    .unwrap();

    let q = ns.tc_json(&["-s", "qdisc", "show", "dev", "ta"]);
    let htb = &q[0];
    assert_eq!(htb["kind"], "htb");
    assert_eq!(htb["handle"], "1:");
    assert_eq!(htb["options"]["r2q"], 10);
    assert_eq!(htb["options"]["default"], "0x10");

    let text = ns.exec(&["tc", "-s", "-d", "class", "show", "dev", "ta", "classid", "1:10"]);
    assert_eq!(word_after(&text, "rate"), "1Mbit", "{text}");
    assert_eq!(word_after(&text, "ceil"), "2Mbit", "{text}");
    assert_eq!(word_after(&text, "prio"), "1", "{text}");
    assert_eq!(word_after(&text, "burst"), "15Kb/1", "{text}");
    assert_eq!(word_after(&text, "cburst"), "15Kb/1", "{text}");
    // quantum = rate / r2q (bytes)
    assert_eq!(word_after(&text, "quantum"), "12500", "{text}");
    // the kernel's token buckets start full: exactly the ticks we encoded
    let tokens = format!(
        "tokens: {} ctokens: {}",
        ps.xmittime(class.rate, 15_360),
        ps.xmittime(class.ceil(), 15_360)
    );
    assert!(text.contains(&tokens), "{tokens} not in {text}");

    let text = ns.exec(&["tc", "-d", "class", "show", "dev", "ta", "classid", "1:20"]);
    assert_eq!(word_after(&text, "rate"), "40Gbit", "64-bit rate: {text}");

    let f = ns.exec(&["tc", "-j", "filter", "show", "dev", "ta"]);
    assert!(f.contains(r#""flowid":"1:10""#), "{f}");
    assert!(
        f.contains(r#""value":"a000000","mask":"ffffff00","offmask":"","off":16"#),
        "{f}"
    );
    assert!(
        f.contains(r#""value":"60000","mask":"ff0000","offmask":"","off":8"#),
        "{f}"
    );
    assert!(f.contains(r#""value":"50","mask":"ffff","offmask":"","off":20"#), "{f}");
    assert!(f.contains(r#""protocol":"ip","pref":1"#), "{f}");

    // delete the filters, then the root qdisc, twice each: Ok
    netlink::within(&ns.path, |h| {
        for _ in 0..2 {
            tc::delete_filters(h, a, handle(1, 0), 1, tc::ETH_P_IP)?;
        }
        for _ in 0..2 {
            tc::delete_qdisc(h, a, tc::ROOT)?;
            tc::delete_qdisc(h, a, tc::INGRESS_PARENT)?;
        }
        // a link that does not exist at all
        tc::delete_qdisc(h, 999_999, tc::ROOT)?;
        Ok::<_, NetlinkError>(())
    })
    .unwrap();
    let q = ns.tc_json(&["qdisc", "show", "dev", "ta"]);
    assert!(q.as_array().unwrap().iter().all(|q| q["kind"] != "htb"), "{q}");
}

#[test]
fn tbf_reports_rate_burst_latency() {
    let (ns, _, b) = veth_ns("tbf", true);
    let ps = Psched::from_proc().unwrap();
    let tbf = Tbf {
        rate: Rate::from_bits_per_sec(8_000_000),
        burst: 10_240,
        limit: TbfLimit::Latency(Duration::from_millis(25)),
    };
    netlink::within(&ns.path, |h| {
        h.send(tc::tbf_qdisc(b, tc::ROOT, 0, &tbf, &ps, Mode::Replace)?)?;
        // replace again with a new rate: still one qdisc
        let faster = Tbf {
            rate: Rate::from_bits_per_sec(16_000_000),
            limit: TbfLimit::Bytes(50_000),
            ..tbf
        };
        h.send(tc::tbf_qdisc(b, tc::ROOT, 0, &faster, &ps, Mode::Replace)?)?;
        h.send(tc::tbf_qdisc(b, tc::ROOT, 0, &tbf, &ps, Mode::Replace)?)
    })
    .unwrap();
    let q = ns.tc_json(&["-s", "qdisc", "show", "dev", "tb"]);
    let all = q.as_array().unwrap();
    assert_eq!(all.iter().filter(|q| q["kind"] == "tbf").count(), 1, "{q}");
    let t = all.iter().find(|q| q["kind"] == "tbf").unwrap();
    assert_eq!(t["options"]["rate"], 1_000_000, "{t}");
    assert_eq!(t["options"]["burst"], 10_240, "{t}");
    assert_eq!(t["options"]["lat"], 25_000, "{t}");
    // -raw shows the buffer in ticks and the byte limit (rate*latency + burst)
    let raw = ns.exec(&["tc", "-raw", "qdisc", "show", "dev", "tb"]);
    assert!(raw.contains("limit 35240b"), "{raw}");
    let ticks = format!("[{:08x}]", ps.xmittime(tbf.rate, tbf.burst));
    assert!(raw.contains(&ticks), "{ticks} not in {raw}");
}

#[test]
fn ingress_and_mirred_redirect_to_ifb() {
    let (ns, _, b) = veth_ns("ifb", true);
    let ps = Psched::from_proc().unwrap();
    let ifb = netlink::within(&ns.path, |h| {
        let ifb = links::create_ifb(h, "ifb-tb")?;
        links::set_up(h, ifb)?;
        h.send(tc::ingress_qdisc(b, Mode::Add)?)?;
        h.send(tc::redirect_filter(b, tc::INGRESS_HANDLE, 1, ifb)?)?;
        let shaping = Tbf {
            rate: Rate::from_bits_per_sec(4_000_000),
            burst: 8_000,
            limit: TbfLimit::Bytes(64_000),
        };
        h.send(tc::tbf_qdisc(ifb, tc::ROOT, 0, &shaping, &ps, Mode::Add)?)?;
        Ok::<_, NetlinkError>(ifb)
    })
    .unwrap();
    let q = ns.tc_json(&["qdisc", "show", "dev", "tb"]);
    assert!(
        q.as_array()
            .unwrap()
            .iter()
            .any(|q| q["kind"] == "ingress" && q["handle"] == "ffff:" && q["parent"] == "ffff:fff1"),
        "{q}"
    );
    let f = ns.exec(&["tc", "-j", "filter", "show", "dev", "tb", "parent", "ffff:"]);
    assert!(f.contains(r#""protocol":"all""#), "{f}");
    assert!(f.contains(r#""value":"0","mask":"0","offmask":"","off":0"#), "{f}");
    assert!(
        f.contains(r#""kind":"mirred","mirred_action":"redirect","direction":"egress","to_dev":"ifb-tb""#),
        "{f}"
    );
    assert!(f.contains(r#""control_action":{"type":"stolen"}"#), "{f}");
    let q = ns.tc_json(&["qdisc", "show", "dev", "ifb-tb"]);
    assert_eq!(q[0]["kind"], "tbf", "{q}");
    assert_eq!(q[0]["options"]["rate"], 500_000, "{q}");
    assert_eq!(q[0]["options"]["burst"], 8_000, "{q}");

    // traffic actually reaches the ifb: ping across the pair, count on ifb
    ns.exec(&["ip", "addr", "add", "10.5.0.1/24", "dev", "ta"]);
    ns.exec(&["ip", "addr", "add", "10.5.0.2/24", "dev", "tb"]);
    let _ = ns.try_exec(&["ping", "-c", "1", "-W", "1", "-I", "ta", "10.5.0.2"]);
    let stats = ns.tc_json(&["-s", "qdisc", "show", "dev", "ifb-tb"]);
    assert!(stats[0]["packets"].as_u64().unwrap_or(0) > 0, "{stats}");

    netlink::within(&ns.path, |h| {
        for _ in 0..2 {
            tc::delete_qdisc(h, b, tc::INGRESS_PARENT)?;
            tc::delete_qdisc(h, ifb, tc::ROOT)?;
            links::delete(h, ifb)?;
        }
        Ok::<_, NetlinkError>(())
    })
    .unwrap();
    let q = ns.tc_json(&["qdisc", "show", "dev", "tb"]);
    assert!(q.as_array().unwrap().iter().all(|q| q["kind"] != "ingress"), "{q}");
}
