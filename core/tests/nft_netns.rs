//! nft batches, run inside throwaway network namespaces (never the host's).

use std::fs::File;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use netsvc_core::nft::expr::Expr;
use netsvc_core::nft::{Batch, DataType, Datum, ElementOp, Family, NftTable, NlRule, SetDecl, SetKind, Verdict};
use nix::sched::{CloneFlags, setns};

/// A network namespace deleted on drop (also when the test panics).
struct TestNs {
    name: String,
}

impl TestNs {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("netsvc-t-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("ip netns add")
            .success();
        assert!(ok, "ip netns add {name}");
        TestNs { name }
    }

    /// Runs `f` on a fresh thread that has entered the namespace; the thread then exits.
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::scope(|s| {
            let handle = s.spawn(move || {
                let fd = File::open(&path).expect("open netns");
                setns(&fd, CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            });
            handle.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

fn table() -> NftTable {
    NftTable::new(Family::Inet, "netsvc_test").expect("table")
}

/// The host's root namespace must never see our table.
fn assert_host_untouched() {
    let out = Command::new("nft")
        .args(["list", "table", "inet", "netsvc_test"])
        .output()
        .expect("nft");
    assert!(!out.status.success(), "test table leaked into the root namespace");
}

/// The table with these (empty) address sets.
fn make_sets(t: &NftTable, sets: &[(&str, DataType)]) {
    let mut b = Batch::new(t);
    b.add_table();
    for (name, kind) in sets {
        b.add_set(SetDecl::typed(name, &[*kind], None)).expect("set");
    }
    b.apply().expect("setup");
}

fn set_elements(t: &NftTable, set: &str) -> Vec<String> {
    let json = t.list_json().expect("list").expect("table exists");
    json["nftables"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|o| o.get("set"))
        .filter(|s| s["name"] == set)
        .flat_map(|s| s["elem"].as_array().cloned().unwrap_or_default())
        .map(|e| e.as_str().unwrap_or_default().to_string())
        .collect()
}

fn accept() -> NlRule {
    NlRule {
        exprs: vec![Expr::Verdict(Verdict::Accept)],
        text: "accept".into(),
    }
}

#[test]
fn a_refused_batch_applies_nothing_and_carries_the_kernels_errno() {
    let ns = TestNs::new();
    ns.run(|| {
        let t = table();
        // The last request is refused (a rule in a chain that does not exist): the whole batch fails.
        let mut b = Batch::new(&t);
        b.add_table();
        b.add_set(SetDecl::typed("addrs", &[DataType::Ipv4Addr], None)).unwrap();
        b.push(ElementOp::Add, "addrs", "10.0.0.1".parse().unwrap()).unwrap();
        b.add_rule("nochain", accept()).unwrap();
        let err = b.apply().expect_err("no such chain");
        assert_eq!(err.errno(), Some(libc::ENOENT), "{err}");
        assert!(
            err.to_string()
                .contains("refused add rule inet netsvc_test nochain accept"),
            "the request the kernel refused: {err}"
        );
        let cni: netsvc_core::cni::CniError = err.into();
        assert_eq!(cni.code, 5);
        // Atomic: not even the table from the first request exists.
        assert!(t.list_json().expect("list").is_none());

        // Same on an existing table: a good element followed by a bad delete leaves no trace.
        make_sets(&t, &[("addrs", DataType::Ipv4Addr)]);
        let mut b = Batch::new(&t);
        b.push(ElementOp::Add, "addrs", "10.0.0.1".parse().unwrap()).unwrap();
        b.push(ElementOp::Delete, "addrs", "10.9.9.9".parse().unwrap()).unwrap();
        assert!(b.apply().is_err(), "deleting a missing element fails");
        assert!(set_elements(&t, "addrs").is_empty(), "first element was not applied");
    });
    assert_host_untouched();
}

#[test]
fn read_back_lists_only_own_table() {
    let ns = TestNs::new();
    ns.run(|| {
        // Another service's table in the same namespace.
        let other = NftTable::new(Family::Inet, "someone_else").expect("other");
        let mut b = Batch::new(&other);
        b.add_table();
        b.add_chain("theirs", None).unwrap();
        b.apply().expect("other table");

        let t = table();
        let mut b = Batch::new(&t);
        b.add_table();
        b.add_chain("ours", None).unwrap();
        b.add_rule("ours", accept()).unwrap();
        b.add_set(SetDecl::typed("addrs", &[DataType::Ipv4Addr], None)).unwrap();
        b.push(ElementOp::Add, "addrs", "10.0.0.1".parse().unwrap()).unwrap();
        b.push(ElementOp::Add, "addrs", "10.0.0.2".parse().unwrap()).unwrap();
        b.apply().expect("apply");

        let listed = t.list_json().expect("list").expect("exists");
        let text = listed.to_string();
        assert!(
            text.contains("\"ours\"") && !text.contains("someone_else") && !text.contains("theirs"),
            "{text}"
        );
        let mut elems = set_elements(&t, "addrs");
        elems.sort();
        assert_eq!(elems, ["10.0.0.1", "10.0.0.2"]);

        // Element delete + chain flush in one batch.
        let mut b = Batch::new(&t);
        b.push(ElementOp::Delete, "addrs", "10.0.0.1".parse().unwrap()).unwrap();
        b.flush_chain("ours").unwrap();
        b.apply().expect("apply");
        assert_eq!(set_elements(&t, "addrs"), ["10.0.0.2"]);
        let rules = t.list_json().unwrap().unwrap()["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o.get("rule").is_some())
            .count();
        assert_eq!(rules, 0, "flushed");

        // Teardown of ours leaves theirs.
        t.delete().expect("delete");
        assert!(t.list_json().expect("list").is_none());
        assert!(other.list_json().expect("list").is_some());
    });
    assert_host_untouched();
}

/// Elements sent over nf_tables netlink land in the sets nft made, both
/// families, as one transaction: a refused change applies nothing.
#[test]
fn element_batches_over_netlink_are_one_transaction() {
    let ns = TestNs::new();
    ns.run(|| {
        let t = table();
        make_sets(&t, &[("addrs", DataType::Ipv4Addr), ("addrs6", DataType::Ipv6Addr)]);

        let mut add = Batch::new(&t);
        add.push(ElementOp::Add, "addrs", "10.0.0.1".parse().unwrap()).unwrap();
        add.push(ElementOp::Add, "addrs", "10.0.0.2".parse().unwrap()).unwrap();
        add.push(ElementOp::Add, "addrs6", "fd00::7".parse().unwrap()).unwrap();
        add.apply().expect("add");
        add.apply().expect("adding what is there is no error");
        let mut v4 = set_elements(&t, "addrs");
        v4.sort();
        assert_eq!(v4, ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(set_elements(&t, "addrs6"), ["fd00::7"]);

        // A good delete beside the delete of an absent element: neither happens.
        let mut bad = Batch::new(&t);
        bad.push(ElementOp::Delete, "addrs", "10.0.0.1".parse().unwrap())
            .unwrap();
        bad.push(ElementOp::Delete, "addrs6", "fd00::9".parse().unwrap())
            .unwrap();
        let err = bad.apply().expect_err("absent element");
        assert!(err.to_string().contains("fd00::9"), "{err}");
        assert_eq!(set_elements(&t, "addrs").len(), 2);

        let mut del = Batch::new(&t);
        del.push(ElementOp::Delete, "addrs", "10.0.0.1".parse().unwrap())
            .unwrap();
        del.push(ElementOp::Delete, "addrs6", "fd00::7".parse().unwrap())
            .unwrap();
        del.apply().expect("delete");
        assert_eq!(set_elements(&t, "addrs"), ["10.0.0.2"]);
        assert!(set_elements(&t, "addrs6").is_empty());

        // A set that does not exist is refused with the kernel's reason.
        let mut missing = Batch::new(&t);
        missing
            .push(ElementOp::Add, "nosuch", "10.0.0.3".parse().unwrap())
            .unwrap();
        let err = missing.apply().expect_err("no set");
        assert!(err.to_string().contains("No such file or directory"), "{err}");
        t.delete().expect("delete");
    });
    assert_host_untouched();
}

/// A batch is one message whatever its size: a Maglev table's 8191 slots
/// filled at once land whole. An answer the kernel gives to a refused
/// batch's later requests is never taken for the next batch's.
#[test]
fn big_batches_land_whole_and_answers_stay_with_their_batch() {
    let ns = TestNs::new();
    ns.run(|| {
        let t = table();
        let mut b = Batch::new(&t);
        b.add_table();
        b.add_set(SetDecl::typed(
            "slots",
            &[DataType::Integer32],
            Some(DataType::Ipv4Addr),
        ))
        .unwrap();
        b.apply().expect("setup");
        make_sets(&t, &[("addrs", DataType::Ipv4Addr)]);

        let mut fill = Batch::new(&t);
        for slot in 0..8191u32 {
            let backend = std::net::Ipv4Addr::from(0x0a00_0000 + slot % 250 + 2);
            fill.element(
                ElementOp::Add,
                "slots",
                Datum::register_u32(slot),
                Some(Datum::addr(backend.into())),
            )
            .unwrap();
        }
        fill.apply().expect("8191 slots in one batch");
        let listed = t.list_set_json(SetKind::Map, "slots").expect("list").expect("map");
        let elems = listed["nftables"][1]["map"]["elem"].as_array().expect("elements").len();
        assert_eq!(elems, 8191);
        // A set the table does not have: absent, as the kernel says (ENOENT).
        assert!(t.list_set_json(SetKind::Map, "nothing").expect("list").is_none());

        // Refused at its first request; its second (good on its own) is
        // answered too, in a message of its own read by nobody yet.
        let mut refused = Batch::new(&t);
        refused
            .push(ElementOp::Delete, "addrs", "10.9.9.9".parse().unwrap())
            .unwrap();
        refused
            .push(ElementOp::Add, "addrs", "10.7.7.7".parse().unwrap())
            .unwrap();
        let err = refused.apply().expect_err("absent element").to_string();
        assert!(
            err.contains("No such file or directory")
                && err.contains("refused delete element inet netsvc_test addrs { 10.9.9.9 }"),
            "the kernel's errno and the request it refused: {err}"
        );
        // This batch fails on its own: the earlier batch's answers must not
        // stand in for its refusal.
        let mut next = Batch::new(&t);
        next.push(ElementOp::Delete, "addrs", "10.8.8.8".parse().unwrap())
            .unwrap();
        next.apply().expect_err("its own refusal");
        let mut ok = Batch::new(&t);
        ok.push(ElementOp::Add, "addrs", "10.8.8.8".parse().unwrap()).unwrap();
        ok.apply().expect("a good batch after refused ones");
        assert_eq!(set_elements(&t, "addrs"), ["10.8.8.8"]);
        t.delete().expect("delete");
    });
    assert_host_untouched();
}

#[test]
fn deleting_absent_table_is_ok() {
    let ns = TestNs::new();
    ns.run(|| {
        let t = table();
        t.delete().expect("absent");
        Batch::new(&t).add_table().apply().expect("create");
        t.delete().expect("present");
        t.delete().expect("absent again");
        assert!(t.list_json().expect("list").is_none());
    });
}

#[test]
fn bad_names_are_refused_before_the_kernel_is_asked() {
    // No request is sent for any of these, so no namespace is needed.
    let t = table();
    let mut b = Batch::new(&t);
    for bad in ["", "1abc", "a b", "a;b", "a/b", &"x".repeat(65)] {
        assert!(NftTable::new(Family::Inet, bad).is_err(), "{bad:?}");
        assert!(b.add_chain(bad, None).is_err(), "{bad:?}");
        assert!(
            b.push(ElementOp::Add, bad, "10.0.0.1".parse().unwrap()).is_err(),
            "{bad:?}"
        );
    }
    assert!(b.is_empty());
    let cni: netsvc_core::cni::CniError = NftTable::new(Family::Inet, "a b").expect_err("bad").into();
    assert_eq!(cni.code, 7);
}
