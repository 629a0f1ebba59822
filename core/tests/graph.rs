//! Service graph: identity, selectors, transactions.

use std::collections::BTreeMap;

use netsvc_core::graph::{Endpoint, Graph, GraphError, Network, Peer, Policy, Selector, Service, identity};
use netsvc_core::node::NodeName;
use netsvc_core::store::{FileStore, Store};
use proptest::prelude::*;
use serde_json::json;

fn args(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn ep(net: &str, cid: &str, names: &[&str], labels: &[(&str, &str)]) -> Endpoint {
    Endpoint {
        network: net.into(),
        container_id: cid.into(),
        ifname: "eth0".into(),
        ips: vec!["10.0.0.2/24".parse().unwrap()],
        names: names.iter().map(|s| s.to_string()).collect(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    }
}

#[test]
fn identity_from_all_sources() {
    let a = args(&[
        ("IgnoreUnknown", "1"),
        ("K8S_POD_NAME", "web-0"),
        ("NETSVC_NAME", "web"),
        ("NETSVC_LABELS", "app:web,tier:front"),
    ]);
    let rc = json!({"aliases": ["www", "web"]});
    let multus = json!({"cni": {"labels": {"app": "overridden", "team": "a"}}});
    let id = identity("net1", &a, Some(&rc), Some(&multus)).expect("identity");
    assert_eq!(id.names, ["web", "web-0", "www"]);
    let want: BTreeMap<String, String> = [("app", "web"), ("team", "a"), ("tier", "front")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(id.labels, want);
}

#[test]
fn podman_alias_map_counts_only_this_network() {
    let rc = json!({"aliases": {"net1": ["a", "b"], "net2": ["c"]}});
    assert_eq!(identity("net1", &[], Some(&rc), None).expect("net1").names, ["a", "b"]);
    assert_eq!(identity("net2", &[], Some(&rc), None).expect("net2").names, ["c"]);
    assert!(identity("net3", &[], Some(&rc), None).expect("net3").names.is_empty());
    assert!(identity("net1", &[], None, None).expect("none").names.is_empty());
}

#[test]
fn identity_errors_name_field_and_value() {
    let check = |r: Result<_, GraphError>, field: &str, value: &str| {
        let msg = r.expect_err("should fail").to_string();
        assert!(msg.contains(field) && msg.contains(value), "{msg}");
    };
    check(
        identity("n", &args(&[("K8S_POD_NAME", "bad name")]), None, None),
        "CNI_ARGS.K8S_POD_NAME",
        "bad name",
    );
    check(
        identity("n", &[], Some(&json!({"aliases": ["ok", "-bad"]})), None),
        "runtimeConfig.aliases[1]",
        "-bad",
    );
    check(
        identity("n", &[], Some(&json!({"aliases": {"n": ["x_"]}})), None),
        "runtimeConfig.aliases.n[0]",
        "x_",
    );
    check(
        identity("n", &[], Some(&json!({"aliases": 3})), None),
        "runtimeConfig.aliases",
        "3",
    );
    check(
        identity("n", &args(&[("NETSVC_LABELS", "novalue")]), None, None),
        "NETSVC_LABELS",
        "novalue",
    );
    check(
        identity("n", &args(&[("NETSVC_LABELS", "k:v v")]), None, None),
        "NETSVC_LABELS",
        "v v",
    );
    check(
        identity("n", &[], None, Some(&json!({"cni": {"labels": {"k": 1}}}))),
        "args.cni.labels.k",
        "1",
    );
    let cni: netsvc_core::cni::CniError = identity("n", &args(&[("NETSVC_NAME", "a..b")]), None, None)
        .expect_err("bad")
        .into();
    assert_eq!(cni.code, 7);
}

#[test]
fn selector_semantics() {
    let e = ep("n", "c1", &["web", "www"], &[("app", "web"), ("tier", "front")]);
    let sel = |v: serde_json::Value| serde_json::from_value::<Selector>(v).expect("selector");
    assert!(sel(json!({})).matches(&e));
    assert!(sel(json!({"names": ["db", "www"]})).matches(&e));
    assert!(!sel(json!({"names": ["db"]})).matches(&e));
    assert!(sel(json!({"labels": {"app": "web"}})).matches(&e));
    assert!(!sel(json!({"labels": {"app": "web", "tier": "back"}})).matches(&e));
    assert!(!sel(json!({"names": ["web"], "labels": {"x": "y"}})).matches(&e));
    assert!(serde_json::from_value::<Selector>(json!({"name": ["typo"]})).is_err());
    assert!(
        sel(json!({"names": ["bad name"]}))
            .validate("policies[0].selector")
            .is_err()
    );
}

#[test]
fn peer_refuses_private_key() {
    let p = json!({"name": "p1", "publicKey": "abc=", "privateKey": "secret"});
    assert!(serde_json::from_value::<Peer>(p).is_err());
}

proptest! {
    #[test]
    fn selector_is_label_subset(labels in prop::collection::btree_map("[a-z]{1,4}", "[a-z]{1,4}", 0..6),
                                extra in "[a-z]{5,6}", take in 0usize..6) {
        let e = Endpoint { labels: labels.clone(), ..Default::default() };
        // Any subset of the endpoint's labels matches; adding an unknown key does not.
        let subset: BTreeMap<_, _> = labels.clone().into_iter().take(take).collect();
        let mut s = Selector { names: vec![], labels: subset };
        prop_assert!(s.matches(&e));
        s.labels.insert(extra, "v".into());
        prop_assert!(!s.matches(&e));
    }

    #[test]
    fn labels_round_trip_through_cni_args(labels in prop::collection::btree_map("[a-z][a-z0-9]{0,5}", "[a-z0-9]{0,5}", 0..6)) {
        let raw = labels.iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(",");
        let id = identity("n", &[("NETSVC_LABELS".into(), raw)], None, None).expect("parse");
        prop_assert_eq!(id.labels, labels);
    }
}

fn store() -> (tempfile::TempDir, FileStore) {
    let d = tempfile::tempdir().expect("tempdir");
    let s = FileStore::open(d.path()).expect("open");
    (d, s)
}

#[test]
fn transaction_commits_and_lists() {
    let (_d, s) = store();
    let g = Graph::new(&s, &NodeName::new("node", "n1").unwrap());
    g.transaction("n1", |tx| {
        tx.put_network(&Network {
            name: "n1".into(),
            subnets: vec!["10.0.0.0/24".parse().unwrap()],
            ..Default::default()
        })?;
        tx.put_endpoint(&ep("n1", "c1", &["a"], &[]))?;
        tx.put_endpoint(&ep("n1", "c2", &["b"], &[]))?;
        // Reads see staged writes.
        assert_eq!(tx.endpoints()?.len(), 2);
        tx.put_service(&Service {
            name: "svc".into(),
            ..Default::default()
        })?;
        tx.put_policy(&Policy {
            name: "deny".into(),
            ingress: vec![json!({"from": "x"})],
            ..Default::default()
        })
    })
    .expect("tx");
    g.transaction("n2", |tx| tx.put_endpoint(&ep("n2", "c3", &[], &[])))
        .expect("tx2");
    assert_eq!(
        g.network("n1").expect("get").expect("net").subnets,
        ["10.0.0.0/24".parse().unwrap()]
    );
    let ids: Vec<_> = g.endpoints("n1").expect("list").iter().map(Endpoint::id).collect();
    assert_eq!(ids, ["c1:eth0", "c2:eth0"]);
    assert_eq!(g.attachments().expect("all").len(), 3);
    assert_eq!(g.services("n1").expect("svc").len(), 1);
    assert_eq!(g.policies("n1").expect("pol")[0].ingress.len(), 1);
}

#[test]
fn failed_transaction_commits_nothing() {
    let (_d, s) = store();
    let g = Graph::new(&s, &NodeName::new("node", "n1").unwrap());
    let rev = s.revision().expect("rev");
    let r: Result<(), GraphError> = g.transaction("n1", |tx| {
        tx.put_endpoint(&ep("n1", "c1", &[], &[]))?;
        Err(GraphError::invalid("x", "y", "boom"))
    });
    assert!(r.is_err());
    assert!(g.endpoints("n1").expect("list").is_empty());
    assert_eq!(s.revision().expect("rev"), rev);
    // An endpoint of another network is refused, naming the field.
    let err = g
        .transaction("n1", |tx| tx.put_endpoint(&ep("n2", "c1", &[], &[])))
        .expect_err("mismatch");
    assert!(err.to_string().contains("endpoint.network"), "{err}");
}

#[test]
fn remove_endpoint_is_idempotent() {
    let (_d, s) = store();
    let g = Graph::new(&s, &NodeName::new("node", "n1").unwrap());
    g.transaction("n1", |tx| tx.put_endpoint(&ep("n1", "c1", &["a"], &[])))
        .expect("put");
    assert_eq!(
        g.remove_endpoint("n1", "c1", "eth0").expect("rm").map(|e| e.names),
        Some(vec!["a".to_string()])
    );
    assert_eq!(g.remove_endpoint("n1", "c1", "eth0").expect("rm again"), None);
    assert_eq!(g.remove_endpoint("never", "c1", "eth0").expect("rm unknown net"), None);
    assert!(g.attachments().expect("all").is_empty());
}

#[test]
fn conflicting_commit_is_undone() {
    let (_d, s) = store();
    let g = Graph::new(&s, &NodeName::new("node", "n1").unwrap());
    g.transaction("n1", |tx| tx.put_endpoint(&ep("n1", "a", &["old"], &[])))
        .expect("seed");
    let err = g
        .transaction("n1", |tx| -> Result<(), GraphError> {
            tx.put_endpoint(&ep("n1", "a", &["new"], &[]))?;
            tx.put_endpoint(&ep("n1", "b", &["new"], &[]))?;
            // Someone writes without the lock after we staged "b": its CAS fails.
            s.put(
                "networks/n1/endpoints/b:eth0",
                &serde_json::to_value(ep("n1", "b", &["rogue"], &[])).expect("json"),
            )
            .map_err(GraphError::from)?;
            Ok(())
        })
        .expect_err("conflict");
    assert_eq!(netsvc_core::cni::CniError::from(err).code, 11);
    // The commit wrote nothing: "a" is as it was.
    assert_eq!(g.endpoint("n1", "a", "eth0").expect("get").expect("a").names, ["old"]);
    assert_eq!(g.endpoint("n1", "b", "eth0").expect("get").expect("b").names, ["rogue"]);
}
