//! veth creation, move, addresses and routes give working connectivity; the
//! veth-peer finder returns the host-side interface; deletes of missing
//! objects are Ok. All work happens inside throwaway namespaces.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use std::os::fd::AsFd;

use common::TestNs;
use netsvc_core::netlink::{self, NetlinkError, Rtnl, addresses, links, routes};
use netsvc_core::netns;

const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const CTR_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

/// A "node" namespace with `hveth` and a "container" namespace with `eth0`,
/// wired and addressed entirely through our netlink code.
fn wire(node: &TestNs, ctr: &TestNs) {
    let ctr_fd = netns::open(&ctr.path).unwrap();
    netlink::within(&node.path, |h| {
        links::create_veth(h, "hveth", "tmp-peer", Some(1400))?;
        let peer = links::get_by_name(h, "tmp-peer")?;
        links::move_to_netns(h, peer.index, std::os::fd::AsFd::as_fd(&ctr_fd))?;
        let host = links::get_by_name(h, "hveth")?;
        assert_eq!(host.mtu, Some(1400));
        addresses::add(h, host.index, IpAddr::V4(HOST_IP), 24)?;
        links::set_up(h, host.index)?;
        Ok(())
    })
    .unwrap();
    netlink::within(&ctr.path, |h| {
        let peer = links::get_by_name(h, "tmp-peer")?;
        links::rename(h, peer.index, "eth0")?;
        links::set_mtu(h, peer.index, 1400)?;
        addresses::add(h, peer.index, IpAddr::V4(CTR_IP), 24)?;
        addresses::add(h, peer.index, "fd77::2".parse().unwrap(), 64)?;
        links::set_up(h, peer.index)?;
        routes::add(
            h,
            &routes::Route {
                dst: "10.99.0.0".parse().unwrap(),
                dst_len: 16,
                gateway: Some(IpAddr::V4(HOST_IP)),
                oif: None,
                metric: Some(50),
            },
        )?;
        routes::add_default(h, IpAddr::V4(HOST_IP), Some(peer.index))?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn veth_move_address_route_give_connectivity() {
    let node = TestNs::new("lnk-node");
    let ctr = TestNs::new("lnk-ctr");
    wire(&node, &ctr);

    // observe with ip(8)
    let out = ctr.exec(&["ip", "-j", "addr", "show", "dev", "eth0"]);
    assert!(out.contains("10.77.0.2") && out.contains("fd77::2"), "{out}");
    let out = ctr.exec(&["ip", "route", "show"]);
    assert!(out.contains("default via 10.77.0.1 dev eth0"), "{out}");
    assert!(out.contains("10.99.0.0/16 via 10.77.0.1 dev eth0"), "{out}");
    // node -> container and container -> a routed address on the node side
    node.exec(&["ip", "addr", "add", "10.99.0.1/32", "dev", "lo"]);
    node.exec(&["ping", "-c", "1", "-W", "2", "10.77.0.2"]);
    ctr.exec(&["ping", "-c", "1", "-W", "2", "10.99.0.1"]);

    // our own listings agree
    let (addrs, rts) = netlink::within(&ctr.path, |h| {
        let eth0 = links::get_by_name(h, "eth0").unwrap();
        assert!(eth0.up);
        assert_eq!(eth0.kind.as_deref(), Some("veth"));
        let a = addresses::list(h, Some(eth0.index)).unwrap();
        let r = routes::list(h, false).unwrap();
        Ok((a, r))
    })
    .unwrap();
    assert!(
        addrs
            .iter()
            .any(|a| a.address == IpAddr::V4(CTR_IP) && a.prefix_len == 24)
    );
    assert!(
        rts.iter()
            .any(|r| r.is_default() && r.gateway == Some(IpAddr::V4(HOST_IP)))
    );
    assert!(rts.iter().any(|r| r.dst_len == 16 && r.metric == Some(50)));
}

#[test]
fn veth_peer_finder_returns_host_side() {
    let node = TestNs::new("peer-node");
    let ctr = TestNs::new("peer-ctr");
    // a decoy veth so indexes differ from the trivial case
    node.exec(&["ip", "link", "add", "decoy0", "type", "veth", "peer", "name", "decoy1"]);
    wire(&node, &ctr);
    let host = links::host_veth_peer(&ctr.path, "eth0", &node.path).unwrap();
    assert_eq!(host.name, "hveth");
    let idx: serde_json::Value = serde_json::from_str(&node.exec(&["ip", "-j", "link", "show", "hveth"])).unwrap();
    assert_eq!(idx[0]["ifindex"].as_u64(), Some(u64::from(host.index)));

    // lo is not a veth; a missing name is LinkNotFound
    let e = links::host_veth_peer(&ctr.path, "lo", &node.path).unwrap_err();
    assert!(e.to_string().contains("not a veth"), "{e}");
    let e = links::host_veth_peer(&ctr.path, "nope0", &node.path).unwrap_err();
    assert!(e.is_not_found(), "{e}");
    // A namespace the node never named, whose eth0's peer is inside it too:
    // the finder names it, and finds no host-side peer whatever the indexes.
    let alone = TestNs::new("peer-alone");
    alone.exec(&["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "inner0"]);
    let alone_fd = netns::open(&alone.path).unwrap();
    let nsid_of = || netns::run_sync(&node.path, || Rtnl::open()?.nsid_of(alone_fd.as_fd())).unwrap();
    assert_eq!(nsid_of().unwrap(), None);
    let e = links::host_veth_peer(&alone.path, "eth0", &node.path).unwrap_err();
    // eth0's peer index is inner0's, in `alone`: in the node's namespace
    // that index is either no link or some link that is not eth0's peer.
    let index_in = |ns: &TestNs, name: &str| -> u64 {
        let link: serde_json::Value = serde_json::from_str(&ns.exec(&["ip", "-j", "link", "show", name])).unwrap();
        link[0]["ifindex"].as_u64().unwrap()
    };
    let inner = index_in(&alone, "inner0");
    let node_links: serde_json::Value = serde_json::from_str(&node.exec(&["ip", "-j", "link", "show"])).unwrap();
    let same_index = node_links
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["ifindex"].as_u64() == Some(inner));
    match same_index {
        None => assert!(
            matches!(&e, NetlinkError::LinkNotFound(what) if *what == format!("#{inner}")),
            "no link #{inner} in the node: {e}"
        ),
        Some(link) => {
            let name = link["ifname"].as_str().unwrap();
            let want = format!("peer #{inner} of eth0 is {name} in the host namespace, not a veth peered with eth0");
            assert!(e.to_string().contains(&want), "{e}");
        }
    }
    assert!(nsid_of().unwrap().is_some());

    // a gone container namespace is "not found" too (DEL treats it as done)
    let e = links::host_veth_peer(std::path::Path::new("/var/run/netns/nsvc-gone"), "eth0", &node.path).unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

#[test]
fn deletes_are_idempotent() {
    let node = TestNs::new("del-node");
    let ctr = TestNs::new("del-ctr");
    wire(&node, &ctr);
    netlink::within(&ctr.path, |h| {
        let eth0 = links::get_by_name(h, "eth0").unwrap();
        let route = routes::Route {
            dst: "10.99.0.0".parse().unwrap(),
            dst_len: 16,
            gateway: Some(IpAddr::V4(HOST_IP)),
            oif: None,
            metric: Some(50),
        };
        for _ in 0..2 {
            routes::delete(h, &route).unwrap();
            addresses::delete(h, eth0.index, IpAddr::V4(CTR_IP), 24).unwrap();
        }
        assert!(
            !addresses::list(h, Some(eth0.index))
                .unwrap()
                .iter()
                .any(|a| a.address == IpAddr::V4(CTR_IP))
        );
        links::set_down(h, eth0.index).unwrap();
        assert!(!links::get_by_index(h, eth0.index).unwrap().up);
        links::delete(h, eth0.index).unwrap();
        links::delete(h, eth0.index).unwrap();
        links::delete_by_name(h, "eth0").unwrap();
        addresses::delete(h, eth0.index, IpAddr::V4(CTR_IP), 24).unwrap();
        assert!(links::find_by_name(h, "eth0").unwrap().is_none());
        assert!(links::get_by_name(h, "eth0").unwrap_err().is_not_found());
        Ok(())
    })
    .unwrap();
    // deleting one end removed the pair
    let (ok, _) = node.try_exec(&["ip", "link", "show", "hveth"]);
    assert!(!ok);
    // adding twice reports "exists"
    netlink::within(&node.path, |h| {
        let idx = links::create_ifb(h, "ifbx").unwrap();
        let e = links::create_ifb(h, "ifbx").unwrap_err();
        assert!(e.is_exists(), "{e}");
        links::delete(h, idx).unwrap();
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_link_made_comes_back_with_its_index() {
    let ns = TestNs::new("mk-ifb");
    let (made, again) = netlink::within(&ns.path, |rtnl| {
        let made = links::create(rtnl, links::ifb_creation("ifb-made")?)?;
        let again = links::create(rtnl, links::ifb_creation("ifb-made")?).unwrap_err();
        Ok((made, again))
    })
    .unwrap();
    let shown: serde_json::Value = serde_json::from_str(&ns.exec(&["ip", "-j", "link", "show", "ifb-made"])).unwrap();
    let index = shown[0]["ifindex"].as_u64().and_then(|i| u32::try_from(i).ok());
    assert_eq!(made, index, "the echoed index is the link's");
    assert!(again.is_exists(), "{again}");
}
