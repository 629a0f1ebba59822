//! The order of one plugin call (`Session::intended`) over a real file
//! store: the intent is recorded and the graph change committed before
//! `program` runs, and the intent cleared after; a failure undoes; a dead
//! call's intent is found by the next call, its ADD rolled back in the graph.

use std::cell::Cell;

use netsvc_core::cni::CniError;
use netsvc_core::graph::{Endpoint, Graph, Intent, Op, pending};
use netsvc_core::node::NodeName;
use netsvc_core::store::FileStore;

fn node_a() -> NodeName {
    NodeName::new("node", "a").unwrap()
}

const SERVICE: &str = "svc";

fn ep(cid: &str) -> Endpoint {
    Endpoint {
        network: "n1".into(),
        container_id: cid.into(),
        ifname: "eth0".into(),
        ips: vec!["10.0.0.2/24".parse().unwrap()],
        ..Default::default()
    }
}

fn store() -> (tempfile::TempDir, FileStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path().join("state")).unwrap();
    (dir, store)
}

#[test]
fn the_intent_is_committed_before_program_runs_and_cleared_after() {
    let (_dir, store) = store();
    let graph = Graph::new(&store, &node_a());
    let session = graph.lock("n1").unwrap();
    let seen_during = Cell::new(None);
    let out = session
        .intended(
            SERVICE,
            Intent::adding(&ep("c1")),
            |tx, stale| -> Result<Option<u32>, CniError> {
                assert!(stale.is_none());
                tx.attach_endpoint(&ep("c1"), SERVICE)?;
                Ok(Some(7))
            },
            |_, plan| {
                // What a process dying here would leave: the graph change and its intent.
                let g = Graph::new(&store, &node_a());
                seen_during.set(Some((
                    pending(&g, "n1", SERVICE).unwrap(),
                    g.endpoint("n1", "c1", "eth0").unwrap().is_some(),
                )));
                Ok(plan + 1)
            },
            |_| panic!("nothing to undo"),
        )
        .unwrap();
    assert_eq!(out, Some(8));
    let (intent, recorded) = seen_during.take().unwrap();
    let intent = intent.expect("the intent is recorded while the kernel is programmed");
    assert_eq!(
        (intent.op, intent.addresses),
        (Op::Add, vec!["10.0.0.2/24".parse().unwrap()])
    );
    assert!(recorded, "and so is the graph change");
    assert_eq!(pending(&graph, "n1", SERVICE).unwrap(), None, "cleared after");
}

#[test]
fn a_failed_program_undoes_and_returns_its_error() {
    let (_dir, store) = store();
    let graph = Graph::new(&store, &node_a());
    let session = graph.lock("n1").unwrap();
    let undone = Cell::new(false);
    let err = session
        .intended(
            SERVICE,
            Intent::attachment(Op::Add, "c1", "eth0"),
            |tx, _| -> Result<Option<()>, CniError> {
                tx.attach_endpoint(&ep("c1"), SERVICE)?;
                Ok(Some(()))
            },
            |_, ()| -> Result<(), CniError> { Err(CniError::io("the kernel said no")) },
            |s| {
                undone.set(true);
                s.transaction(|tx| tx.detach_endpoint("c1", "eth0", SERVICE).map(drop))?;
                s.clear_intent(SERVICE)?;
                Ok(())
            },
        )
        .expect_err("the program's error");
    assert!(err.msg.contains("the kernel said no"), "{err}");
    assert!(undone.get());
    assert_eq!(graph.endpoint("n1", "c1", "eth0").unwrap(), None);
    assert_eq!(pending(&graph, "n1", SERVICE).unwrap(), None);
}

#[test]
fn a_dead_add_is_rolled_back_by_the_next_call_which_carries_its_addresses_on() {
    let (_dir, store) = store();
    let graph = Graph::new(&store, &node_a());
    // A call that died after its commit: its intent and the endpoint.
    let session = graph.lock("n1").unwrap();
    session
        .record_intent(SERVICE, Some(&Intent::adding(&ep("dead"))))
        .unwrap();
    session
        .transaction(|tx| tx.attach_endpoint(&ep("dead"), SERVICE))
        .unwrap();
    let mut other = ep("c2");
    other.ips = vec!["10.0.0.3/24".parse().unwrap()];
    session
        .intended(
            SERVICE,
            Intent::adding(&other),
            |tx, stale| -> Result<Option<()>, CniError> {
                let stale = stale.expect("the dead call's intent");
                assert_eq!((stale.op, stale.container_id.as_deref()), (Op::Add, Some("dead")));
                assert_eq!(tx.get_endpoint("dead", "eth0")?, None, "rolled back in the graph");
                tx.attach_endpoint(&other, SERVICE)?;
                Ok(Some(()))
            },
            |_, ()| -> Result<(), CniError> {
                let g = Graph::new(&store, &node_a());
                let carried = pending(&g, "n1", SERVICE).unwrap().unwrap().addresses;
                assert_eq!(
                    carried,
                    ["10.0.0.3/24".parse().unwrap(), "10.0.0.2/24".parse().unwrap()],
                    "the dead call's addresses go on"
                );
                Ok(())
            },
            |_| Ok(()),
        )
        .unwrap();
    assert_eq!(graph.endpoint("n1", "dead", "eth0").unwrap(), None);
    assert!(graph.endpoint("n1", "c2", "eth0").unwrap().is_some());
    assert_eq!(pending(&graph, "n1", SERVICE).unwrap(), None);
}

#[test]
fn each_service_keeps_its_own_intent_in_the_networks_lock_file() {
    let (dir, store) = store();
    let graph = Graph::new(&store, &node_a());
    let session = graph.lock("n1").unwrap();
    let fw = Intent::adding(&ep("c1"));
    let lb = Intent::network(Op::Render);
    session.record_intent("firewall", Some(&fw)).unwrap();
    session.record_intent("lb", Some(&lb)).unwrap();
    session.clear_intent("firewall").unwrap();
    assert_eq!(pending(&graph, "n1", "firewall").unwrap(), None);
    assert_eq!(pending(&graph, "n1", "lb").unwrap(), Some(lb));
    session.clear_intent("lb").unwrap();
    let lock_file = dir.path().join("state/locks/n1.lock");
    assert_eq!(std::fs::read(&lock_file).unwrap(), b"", "no intent: an empty lock file");
}

#[test]
fn an_intent_written_over_a_longer_one_and_not_yet_cut_still_reads() {
    let (dir, store) = store();
    let graph = Graph::new(&store, &node_a());
    let mut long = Intent::adding(&ep("c1"));
    long.addresses = (2..40).map(|i| format!("10.0.0.{i}/24").parse().unwrap()).collect();
    let short = Intent::network(Op::Gc);
    let session = graph.lock("n1").unwrap();
    session.record_intent(SERVICE, Some(&long)).unwrap();
    // What a holder killed between writing the short body and cutting the file leaves.
    let lock_file = dir.path().join("state/locks/n1.lock");
    let mut body = std::fs::read(&lock_file).unwrap();
    let new = serde_json::to_vec(&serde_json::json!({ SERVICE: short })).unwrap();
    body[..new.len()].copy_from_slice(&new);
    std::fs::write(&lock_file, &body).unwrap();
    assert_eq!(session.intent(SERVICE).unwrap(), Some(short.clone()));
    assert_eq!(pending(&graph, "n1", SERVICE).unwrap(), Some(short));
}
