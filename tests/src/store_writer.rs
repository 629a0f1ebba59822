//! What the `netsvc-store-writer` binary and the FileStore's cross-process
//! tests (tests/tests/store_procs.rs) agree on.

use serde_json::{Value, json};

/// The counter the `cas` and `lock` writers increment.
pub const COUNTER: &str = "counters/shared";
/// The large document the `big` writer rewrites.
pub const BIG: &str = "docs/big";

/// A self-checking document: `len` items, each equal to `i`.
pub fn big_doc(i: u64) -> Value {
    let items: Vec<u64> = vec![i; 200_000];
    json!({"i": i, "len": items.len(), "items": items})
}
