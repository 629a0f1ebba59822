//! The Store contract: one suite, run unchanged against every backend —
//! the embedded file store, and etcd (a real `etcd` server started per
//! test, when the crate is built with the `etcd` feature).

use std::time::Duration;

use netsvc_core::store::{Change, EventKind, Store, StoreError};
use serde_json::json;

/// The cases: each takes a fresh, empty store.
mod contract {
    use super::*;

    pub fn cas_semantics(s: &dyn Store) {
        let k = "networks/n1/endpoints/c1:eth0";
        // Absent expected: creates once, then conflicts.
        let r1 = s.compare_and_swap(k, None, &json!({"v": 1})).expect("create");
        let err = s.compare_and_swap(k, None, &json!({"v": 2})).expect_err("exists");
        assert!(matches!(err, StoreError::Conflict { actual: Some(a), .. } if a == r1));
        // Matching revision: swaps; stale revision: conflicts and leaves the value.
        let r2 = s.compare_and_swap(k, Some(r1), &json!({"v": 2})).expect("swap");
        assert!(r2 > r1);
        assert!(s.compare_and_swap(k, Some(r1), &json!({"v": 3})).is_err());
        let e = s.get(k).expect("get").expect("present");
        assert_eq!((e.value, e.revision), (json!({"v": 2}), r2));
        // compare_and_delete: stale fails, current deletes.
        assert!(s.compare_and_delete(k, r1).is_err());
        s.compare_and_delete(k, r2).expect("cad");
        assert!(s.get(k).expect("get").is_none());
        // CAS on a wrong revision of an absent key conflicts with actual None.
        let err = s.compare_and_swap(k, Some(r2), &json!(1)).expect_err("absent");
        assert!(matches!(err, StoreError::Conflict { actual: None, .. }));
        // Conflicts map to CNI "try again".
        assert_eq!(netsvc_core::cni::CniError::from(err).code, 11);
    }

    pub fn commit_writes_all_or_leaves_each_key_as_it_was(s: &dyn Store) {
        let (a, b, c) = (
            "networks/n1/endpoints/a",
            "networks/n1/endpoints/b",
            "networks/n1/endpoints/c",
        );
        let (a0, a1, a2, b1, b2, c0) = (
            json!("a0"),
            json!("a1"),
            json!("a2"),
            json!("b1"),
            json!("b2"),
            json!("c0"),
        );
        let ra = s.put(a, &a0).expect("seed a");
        let rc = s.put(c, &c0).expect("seed c");
        let before = s.revision().expect("revision");
        // One commit changes a, makes b and deletes c.
        let write = |key, expected, was, value| Change {
            key,
            expected,
            was,
            value,
        };
        s.commit(&[
            write(a, Some(ra), Some(&a0), Some(&a1)),
            write(b, None, None, Some(&b1)),
            write(c, Some(rc), Some(&c0), None),
        ])
        .expect("commit");
        let value = |k| s.get(k).expect("get").map(|e| e.value);
        assert_eq!(
            (value(a), value(b), value(c)),
            (Some(a1.clone()), Some(b1.clone()), None)
        );
        let events = s.changes_since("networks/n1/", before).expect("changes");
        let seen: Vec<(EventKind, &str)> = events.iter().map(|e| (e.kind, e.key.as_str())).collect();
        assert_eq!(seen, [(EventKind::Put, a), (EventKind::Put, b), (EventKind::Delete, c)]);
        // A commit whose second key moved meanwhile: a conflict naming it,
        // and both keys hold what they held.
        let ra1 = s.get(a).expect("get").expect("a").revision;
        let rb1 = s.get(b).expect("get").expect("b").revision;
        let err = s
            .commit(&[
                write(a, Some(ra1), Some(&a1), Some(&a2)),
                write(b, Some(rb1 + 1), Some(&b1), Some(&b2)),
            ])
            .expect_err("b moved");
        assert!(matches!(&err, StoreError::Conflict { key, .. } if key == b), "{err:?}");
        assert_eq!((value(a), value(b)), (Some(a1), Some(b1)));
    }

    pub fn list_by_prefix(s: &dyn Store) {
        for k in [
            "networks/n1",
            "networks/n1/endpoints/a",
            "networks/n1/endpoints/b",
            "networks/n10/endpoints/c",
            "other/x",
        ] {
            s.put(k, &json!(k)).expect("put");
        }
        let keys = |p: &str| s.list(p).expect("list").into_iter().map(|e| e.key).collect::<Vec<_>>();
        assert_eq!(
            keys("networks/n1/endpoints/"),
            ["networks/n1/endpoints/a", "networks/n1/endpoints/b"]
        );
        assert_eq!(
            keys("networks/n1/"),
            ["networks/n1/endpoints/a", "networks/n1/endpoints/b"]
        );
        assert_eq!(keys("networks/n1").len(), 4); // string prefix, like etcd: includes n10
        assert_eq!(keys("").len(), 5);
        assert!(keys("nothing/here/").is_empty());
        assert!(s.list("../etc/").is_err());
        let e = &s.list("other/").expect("list")[0];
        assert_eq!(e.value, json!("other/x"));
    }

    pub fn delete_is_idempotent(s: &dyn Store) {
        let k = "networks/n1/endpoints/a";
        assert_eq!(s.delete(k).expect("absent delete"), None);
        s.put(k, &json!(1)).expect("put");
        assert!(s.delete(k).expect("delete").is_some());
        assert_eq!(s.delete(k).expect("again"), None);
        assert!(s.get(k).expect("get").is_none());
        assert!(s.list("networks/").expect("list").is_empty());
    }

    pub fn watch_sees_put_and_delete(s: &dyn Store) {
        let start = s.revision().expect("rev");
        s.put("networks/n1/endpoints/a", &json!(1)).expect("put");
        s.put("networks/n2/endpoints/b", &json!(1)).expect("put other");
        s.delete("networks/n1/endpoints/a").expect("delete");
        let events = s.watch("networks/n1/", start, Duration::from_secs(1)).expect("watch");
        let kinds: Vec<_> = events.iter().map(|e| (e.kind, e.key.as_str())).collect();
        assert_eq!(
            kinds,
            [
                (EventKind::Put, "networks/n1/endpoints/a"),
                (EventKind::Delete, "networks/n1/endpoints/a")
            ]
        );
        assert!(events[0].revision < events[1].revision);
        // From the last revision: nothing new, returns empty after the timeout.
        let last = s.revision().expect("rev");
        assert!(
            s.watch("networks/", last, Duration::from_millis(50))
                .expect("watch")
                .is_empty()
        );
        // A writer in another thread wakes a blocked watcher.
        std::thread::scope(|sc| {
            sc.spawn(|| {
                std::thread::sleep(Duration::from_millis(100));
                s.put("networks/n1/x", &json!(2)).expect("put");
            });
            let ev = s.watch("networks/n1/", last, Duration::from_secs(5)).expect("watch");
            assert_eq!(ev.len(), 1);
            assert_eq!(ev[0].key, "networks/n1/x");
        });
    }

    pub fn a_subscription_replays_then_follows(s: &dyn Store) {
        let start = s.revision().expect("rev");
        s.put("networks/n1/endpoints/a", &json!(1)).expect("put");
        s.put("networks/n2/endpoints/b", &json!(1)).expect("put other");
        let mut sub = s.subscribe("networks/n1/", start).expect("subscribe");
        let replayed = sub.next(Duration::from_secs(2)).expect("replay");
        assert_eq!(
            replayed.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
            ["networks/n1/endpoints/a"]
        );
        assert!(sub.next(Duration::from_millis(50)).expect("quiet").is_empty());
        // Changes made while nobody waits are kept for the next call, in order.
        s.put("networks/n1/endpoints/c", &json!(1)).expect("put");
        s.delete("networks/n1/endpoints/a").expect("delete");
        let mut followed = Vec::new();
        while followed.len() < 2 {
            let batch = sub.next(Duration::from_secs(2)).expect("follow");
            assert!(!batch.is_empty(), "both changes arrive: {followed:?}");
            followed.extend(batch.into_iter().map(|e| (e.kind, e.key)));
        }
        assert_eq!(
            followed,
            [
                (EventKind::Put, "networks/n1/endpoints/c".to_string()),
                (EventKind::Delete, "networks/n1/endpoints/a".to_string())
            ]
        );
        // A writer in another thread wakes a blocked subscriber.
        std::thread::scope(|sc| {
            sc.spawn(|| {
                std::thread::sleep(Duration::from_millis(100));
                s.put("networks/n1/x", &json!(2)).expect("put");
            });
            let ev = sub.next(Duration::from_secs(5)).expect("next");
            assert_eq!(ev.len(), 1);
            assert_eq!(ev[0].key, "networks/n1/x");
        });
    }

    pub fn network_lock_is_exclusive_and_times_out(s: &dyn Store) {
        let g = s.lock_network("n1", Duration::from_secs(1)).expect("lock");
        let err = s.lock_network("n1", Duration::from_millis(50)).expect_err("held");
        assert!(matches!(err, StoreError::Timeout { .. }));
        assert_eq!(netsvc_core::cni::CniError::from(err).code, 11);
        // Another network is independent. Locks that must be had get a
        // bound an etcd round trip on a loaded machine stays well inside.
        let _other = s.lock_network("n2", Duration::from_secs(5)).expect("other network");
        drop(g);
        let _again = s.lock_network("n1", Duration::from_secs(5)).expect("released");
        assert!(s.lock_network("../x", Duration::from_millis(1)).is_err());
    }

    pub fn rejects_bad_keys(s: &dyn Store) {
        for bad in ["../x", "a/../../b", "a/.tmp", "a\0b", "", "a//b", "x/y.json"] {
            assert!(s.put(bad, &json!(1)).is_err(), "{bad:?}");
            assert!(s.get(bad).is_err(), "{bad:?}");
        }
    }

    pub fn changes_since_replays_history_in_order(s: &dyn Store) {
        let start = s.revision().expect("rev");
        assert!(s.changes_since("networks/", start).expect("nothing yet").is_empty());
        let r1 = s.put("networks/n1/a", &json!(1)).expect("put");
        s.put("elsewhere/b", &json!(1)).expect("put");
        let r3 = s.put("networks/n1/a", &json!(2)).expect("put");
        let r4 = s.delete("networks/n1/a").expect("delete").expect("deleted");
        let events = s.changes_since("networks/", start).expect("changes");
        let seen: Vec<_> = events.iter().map(|e| (e.kind, e.revision)).collect();
        assert_eq!(
            seen,
            [(EventKind::Put, r1), (EventKind::Put, r3), (EventKind::Delete, r4)]
        );
        // From a revision in the middle: only what came after it.
        let tail = s.changes_since("networks/", r3).expect("tail");
        assert_eq!(tail.iter().map(|e| e.revision).collect::<Vec<_>>(), [r4]);
        assert_eq!(s.revision().expect("rev"), r4);
    }

    pub fn leased_key_lives_until_revoked(s: &dyn Store) {
        let lease = s
            .put_leased("nodes/a", &json!({"name": "a"}), Duration::from_secs(5))
            .expect("leased put");
        lease.renew().expect("renew");
        assert_eq!(
            s.get("nodes/a").expect("get").expect("present").value,
            json!({"name": "a"})
        );
        let before = s.revision().expect("rev");
        lease.revoke().expect("revoke");
        assert!(s.get("nodes/a").expect("get").is_none());
        let events = s.changes_since("nodes/", before).expect("changes");
        assert_eq!(events.iter().map(|e| e.kind).collect::<Vec<_>>(), [EventKind::Delete]);
    }
}

/// Declares every contract case as a test of one backend.
macro_rules! suite {
    ($backend:ident, $open:expr) => {
        mod $backend {
            use super::*;

            macro_rules! case {
                ($name:ident) => {
                    #[test]
                    fn $name() {
                        let (_keep, store) = $open;
                        contract::$name(&*store);
                    }
                };
            }

            case!(cas_semantics);
            case!(commit_writes_all_or_leaves_each_key_as_it_was);
            case!(list_by_prefix);
            case!(delete_is_idempotent);
            case!(watch_sees_put_and_delete);
            case!(a_subscription_replays_then_follows);
            case!(changes_since_replays_history_in_order);
            case!(network_lock_is_exclusive_and_times_out);
            case!(rejects_bad_keys);
            case!(leased_key_lives_until_revoked);
        }
    };
}

fn file_store() -> (tempfile::TempDir, Box<dyn Store>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = netsvc_core::store::FileStore::open(dir.path().join("state")).expect("open");
    (dir, Box::new(s))
}

suite!(file, file_store());

#[cfg(feature = "etcd")]
#[path = "common/etcd.rs"]
mod server;

#[cfg(feature = "etcd")]
mod etcd_backend {
    use super::*;
    use netsvc_core::store::{EtcdSpec, EtcdStore, StoreSpec, TlsSpec};

    use super::server;

    /// etcd as every caller opens it: through a state dir's handle, whose
    /// network locks are the node's.
    fn opened(spec: EtcdSpec) -> (tempfile::TempDir, Box<dyn Store>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = serde_json::to_value(StoreSpec::Etcd(spec)).expect("spec");
        let state = dir.path().join("state");
        let s = netsvc_core::store::open_with(state.to_str(), Some(&spec)).expect("connect to etcd");
        (dir, Box::new(s))
    }

    pub fn etcd_store() -> ((server::Etcd, tempfile::TempDir), Box<dyn Store>) {
        let etcd = server::Etcd::start();
        let spec = EtcdSpec {
            endpoints: vec![etcd.url()],
            prefix: "/netsvc-test".into(),
            tls: None,
        };
        let (dir, s) = opened(spec);
        ((etcd, dir), s)
    }

    suite!(etcd, etcd_store());

    /// The same contract over client-certificate TLS.
    pub fn etcd_tls_store() -> ((server::Etcd, tempfile::TempDir), Box<dyn Store>) {
        let certs = server::Certs::new();
        let etcd = server::Etcd::start_tls(&certs);
        let (dir, s) = opened(tls_spec(&etcd, &certs, true));
        // The certificates may go: etcd and the client read them at start.
        drop(certs);
        ((etcd, dir), s)
    }

    fn tls_spec(etcd: &server::Etcd, certs: &server::Certs, with_client_cert: bool) -> EtcdSpec {
        EtcdSpec {
            endpoints: vec![etcd.url()],
            prefix: "/netsvc-test".into(),
            tls: Some(TlsSpec {
                ca: certs.path("ca.crt"),
                cert: with_client_cert.then(|| certs.path("client.crt")),
                key: with_client_cert.then(|| certs.path("client.key")),
                server_name: None,
            }),
        }
    }

    suite!(etcd_tls, etcd_tls_store());

    /// etcd asks for a client certificate: a client without one is refused,
    /// as "try again later" like any unreachable store.
    #[test]
    fn etcd_refuses_a_client_without_a_certificate() {
        let certs = server::Certs::new();
        let etcd = server::Etcd::start_tls(&certs);
        let err = EtcdStore::connect(&tls_spec(&etcd, &certs, false)).expect_err("no client certificate");
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
        // And with it, the same server answers.
        let s = EtcdStore::connect(&tls_spec(&etcd, &certs, true)).expect("with the certificate");
        s.put("networks/n1", &json!(1)).expect("put over TLS");
    }

    /// A leased key whose holder stops renewing it is gone after its TTL.
    #[test]
    fn etcd_expires_a_lease_nobody_renews() {
        let (_etcd, s) = etcd_store();
        let lease = s
            .put_leased("nodes/b", &json!(1), Duration::from_secs(2))
            .expect("leased");
        drop(lease);
        assert!(s.get("nodes/b").expect("get").is_some());
        let deadline = std::time::Instant::now() + Duration::from_secs(6);
        while s.get("nodes/b").expect("get").is_some() {
            assert!(std::time::Instant::now() < deadline, "the key outlived its lease");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// An unreachable etcd is "try again later" (11), not a hang.
    #[test]
    fn etcd_unreachable_is_try_again() {
        let etcd = server::Etcd::start();
        let url = etcd.url();
        drop(etcd);
        let spec = EtcdSpec {
            endpoints: vec![url],
            prefix: "/netsvc-test".into(),
            tls: None,
        };
        let err = EtcdStore::connect(&spec).expect_err("nobody listens");
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
        assert_eq!(netsvc_core::cni::CniError::from(err).code, 11);
    }
}
