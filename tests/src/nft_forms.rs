//! Holding nftables' two forms together: a `nft::Batch` applied over
//! netlink in one namespace, its text given to nft in another; the kernel
//! must hold the same thing either way.

use serde_json::Value;

use crate::Netns;

/// The ruleset as nft lists it, handles aside (and nft's metainfo).
pub fn listing(ns: &Netns) -> Vec<Value> {
    let mut v: Value = serde_json::from_str(&ns.exec("nft", ["-j", "list", "ruleset"]).unwrap()).unwrap();
    without_handles(&mut v);
    v["nftables"].as_array().unwrap()[1..].to_vec()
}

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

/// Each rule's expressions as the kernel dumps them (`nft --debug=netlink`).
pub fn expressions(ns: &Netns) -> Vec<String> {
    ns.exec("nft", ["--debug=netlink", "list", "ruleset"])
        .unwrap()
        .lines()
        .filter(|l| l.trim_start().starts_with('['))
        .map(str::to_string)
        .collect()
}

/// Two namespaces: the first gets batches over netlink, the second their text through nft.
pub struct TwoWays {
    pub by_netlink: Netns,
    pub by_nft: Netns,
}

impl TwoWays {
    pub fn new() -> TwoWays {
        TwoWays {
            by_netlink: Netns::create("nlform").unwrap(),
            by_nft: Netns::create("nftform").unwrap(),
        }
    }

    /// `batch` over netlink; `text` (its text, or the part of it this nft
    /// takes) through nft.
    pub fn apply(&self, batch: &netsvc_core::nft::Batch, text: &str) {
        self.by_netlink
            .run(|| batch.apply().unwrap_or_else(|e| panic!("{e}")))
            .unwrap();
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        self.by_nft
            .exec("nft", ["-f", file.path().to_str().unwrap()])
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
    }

    /// The same listing (handles aside) and the same expressions both ways;
    /// returns how many objects the listing has.
    pub fn assert_same(&self, when: &str) -> usize {
        let (a, b) = (listing(&self.by_netlink), listing(&self.by_nft));
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x, y, "{when}: over netlink, then by nft");
        }
        assert_eq!(a.len(), b.len(), "{when}: {a:#?}\n{b:#?}");
        assert_eq!(expressions(&self.by_netlink), expressions(&self.by_nft), "{when}");
        a.len()
    }
}

impl Default for TwoWays {
    fn default() -> Self {
        TwoWays::new()
    }
}
