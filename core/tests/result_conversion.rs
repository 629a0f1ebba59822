//! Result conversion across every pair of spec versions, as libcni converts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netsvc_core::cni::{CniResult, Dns, Interface, IpConfig, IpNet, Route, SUPPORTED_VERSIONS, Version};
use proptest::prelude::*;

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
    ]
}

fn net() -> impl Strategy<Value = IpNet> {
    ip().prop_flat_map(|a| {
        let max: u8 = if a.is_ipv4() { 32 } else { 128 };
        (Just(a), 0..=max).prop_map(|(a, p)| IpNet::new(a, p).expect("prefix in range"))
    })
}

fn word() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9]{0,8}"
}

fn interface() -> impl Strategy<Value = Interface> {
    (
        word(),
        proptest::option::of("[0-9a-f]{2}(:[0-9a-f]{2}){5}"),
        proptest::option::of(576u32..9000),
        proptest::option::of("/var/run/netns/[a-z]{1,6}"),
        proptest::option::of("/run/[a-z]{1,6}.sock"),
        proptest::option::of("0000:00:0[0-9].0"),
    )
        .prop_map(|(name, mac, mtu, sandbox, socket_path, pci_id)| Interface {
            name,
            mac: mac.unwrap_or_default(),
            mtu,
            sandbox,
            socket_path,
            pci_id,
        })
}

fn routes() -> impl Strategy<Value = Vec<Route>> {
    let o = || proptest::option::of(0u32..10_000);
    proptest::collection::vec((net(), proptest::option::of(ip()), o(), o(), o(), o(), o()), 0..4).prop_map(|v| {
        v.into_iter()
            .map(|(dst, gw, mtu, advmss, priority, table, scope)| Route {
                dst,
                gw,
                mtu,
                advmss,
                priority,
                table,
                scope,
            })
            .collect()
    })
}

fn dns() -> impl Strategy<Value = Dns> {
    (
        proptest::collection::vec(ip().prop_map(|a| a.to_string()), 0..3),
        proptest::option::of(word()),
        proptest::collection::vec(word(), 0..3),
        proptest::collection::vec(word(), 0..2),
    )
        .prop_map(|(nameservers, domain, search, options)| Dns {
            nameservers,
            domain: domain.unwrap_or_default(),
            search,
            options,
        })
}

fn result() -> impl Strategy<Value = CniResult> {
    proptest::collection::vec(interface(), 0..3).prop_flat_map(|interfaces| {
        let n = interfaces.len();
        let index = if n == 0 {
            Just(None).boxed()
        } else {
            proptest::option::of(0..n).boxed()
        };
        let ips = proptest::collection::vec((net(), proptest::option::of(ip()), index), 0..4).prop_map(|v| {
            v.into_iter()
                .map(|(address, gateway, interface)| IpConfig {
                    version: None,
                    address,
                    gateway,
                    interface,
                })
                .collect::<Vec<_>>()
        });
        (Just(interfaces), ips, routes(), dns()).prop_map(|(interfaces, ips, routes, dns)| CniResult {
            interfaces,
            ips,
            routes,
            dns,
        })
    })
}

fn canonical(r: &CniResult, v: &str) -> CniResult {
    let mut r = r.restricted_to(Version::parse(v).expect("known version"));
    for ip in &mut r.ips {
        ip.version = None;
    }
    r
}

proptest! {
    /// A→B→A keeps exactly what both versions can express.
    #[test]
    fn every_version_pair_round_trips(r in result(), a in 0..SUPPORTED_VERSIONS.len(), b in 0..SUPPORTED_VERSIONS.len()) {
        let (va, vb) = (SUPPORTED_VERSIONS[a], SUPPORTED_VERSIONS[b]);
        let in_a = r.to_value(va).unwrap();
        let in_b = CniResult::convert(&in_a, va, vb).unwrap();
        let back = CniResult::convert(&in_b, vb, va).unwrap();
        let older = if a < b { va } else { vb };
        prop_assert_eq!(CniResult::from_value(&back, va).unwrap(), canonical(&r, older));
        prop_assert_eq!(&back["cniVersion"], va);
    }

    /// Before 1.0.0 every address carries its family; from 1.0.0 none does.
    #[test]
    fn ip_version_field_follows_the_spec(r in result(), b in 0..SUPPORTED_VERSIONS.len()) {
        let vb = SUPPORTED_VERSIONS[b];
        let out = r.to_value(vb).unwrap();
        let old = !Version::parse(vb).unwrap().is_1x();
        for (i, ip) in r.ips.iter().enumerate() {
            let field = out["ips"][i].get("version").cloned();
            if old {
                let want = if ip.address.is_ipv4() { "4" } else { "6" };
                prop_assert_eq!(field, Some(serde_json::Value::String(want.into())));
            } else {
                prop_assert!(field.is_none());
            }
        }
    }
}
