//! `netsvc-store-writer ROLE DIR N`: one writer process of the FileStore's
//! cross-process tests (tests/tests/store_procs.rs), on the store at DIR.
//!
//! - `cas`: N increments of the shared counter by compare-and-swap;
//! - `lock`: N increments under the network lock, by plain get and put;
//! - `big`: writes large self-checking documents numbered from N, until killed.

#![forbid(unsafe_code)]

use std::time::Duration;

use netsvc_core::store::{FileStore, Store, StoreError};
use netsvc_tests::store_writer::{BIG, COUNTER, big_doc};
use serde_json::json;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [role, dir, n] = args.as_slice() else {
        panic!("usage: netsvc-store-writer cas|lock|big DIR N, not {args:?}");
    };
    let n: u64 = n.parse().unwrap_or_else(|e| panic!("N {n:?}: {e}"));
    let s = FileStore::open(dir).expect("open");
    match role.as_str() {
        "cas" => (0..n).for_each(|_| increment_cas(&s)),
        "lock" => {
            for _ in 0..n {
                let _g = s.lock_network("n1", Duration::from_secs(60)).expect("lock");
                let cur = s.get(COUNTER).expect("get").map(|e| e.value["n"].as_u64().expect("n"));
                s.put(COUNTER, &json!({"n": cur.unwrap_or(0) + 1})).expect("put");
            }
        }
        "big" => {
            // Large documents take long enough to write that a kill lands
            // mid-write. Numbered from N, so the test tells this writer's
            // documents from an earlier one's.
            for i in n.. {
                s.put(BIG, &big_doc(i)).expect("put");
            }
        }
        other => panic!("unknown role {other}"),
    }
}

fn increment_cas(s: &FileStore) {
    loop {
        let cur = s.get(COUNTER).expect("get");
        let (n, rev) = match &cur {
            Some(e) => (e.value["n"].as_u64().expect("n"), Some(e.revision)),
            None => (0, None),
        };
        match s.compare_and_swap(COUNTER, rev, &json!({"n": n + 1})) {
            Ok(_) => return,
            Err(StoreError::Conflict { .. }) => std::thread::yield_now(),
            Err(e) => panic!("cas: {e}"),
        }
    }
}
