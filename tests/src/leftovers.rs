//! What netsvc holds on a node, listed: the proof that DEL and `podman
//! rm` leave nothing behind.

use anyhow::Result;
use serde_json::Value;

use crate::node::TestNode;

/// What netsvc still holds on `node`, one line per thing: records in its
/// state dir beyond the network documents, unfinished intents, elements in its
/// nftables sets and maps, shaping qdiscs, ifb and WireGuard links, and
/// wireguard-go processes for `wg_devices`. Empty once every container left.
pub fn leftovers(node: &TestNode, wg_devices: &[String]) -> Result<Vec<String>> {
    let mut left = Vec::new();
    let store = node.state_dir().join("kv");
    for (path, _) in crate::process::files_under(&store, ".lock") {
        let relative = path.strip_prefix(&store.display().to_string()).unwrap_or(&path);
        // kv/networks/<name>.json: the network's document, kept for the next ADD.
        if relative.trim_start_matches('/').matches('/').count() > 1 {
            left.push(format!("state {relative}"));
        }
    }
    left.extend(unfinished_intents(node.state_dir()));
    for item in node.nft_ruleset()?["nftables"].as_array().into_iter().flatten() {
        for kind in ["set", "map"] {
            let Some(set) = item.get(kind) else { continue };
            let table = set["table"].as_str().unwrap_or_default();
            let elements = set["elem"].as_array().map_or(0, Vec::len);
            if table.starts_with("netsvc") && elements > 0 {
                left.push(format!("{elements} elements in {kind} {table} {}", set["name"]));
            }
        }
    }
    for qdisc in node
        .exec("tc", ["-j", "qdisc", "show"])
        .map(|out| serde_json::from_str::<Value>(&out).unwrap_or_default())?
        .as_array()
        .into_iter()
        .flatten()
    {
        let kind = qdisc["kind"].as_str().unwrap_or_default();
        if ["htb", "tbf", "ingress", "clsact"].contains(&kind) {
            left.push(format!("{kind} qdisc on {}", qdisc["dev"]));
        }
    }
    for kind in ["ifb", "wireguard"] {
        for link in node.links_of_kind(kind)? {
            left.push(format!("{kind} link {link}"));
        }
    }
    for device in wg_devices {
        left.extend(crate::wireguard::wireguard_go_processes(device));
        left.extend(crate::wireguard::uapi_sockets(device));
    }
    Ok(left)
}

/// The intents calls left unfinished under `state_dir`, one line each: a
/// call records its intent in the network's lock file (`locks/<net>.lock`)
/// and empties the file when it is done.
pub fn unfinished_intents(state_dir: &std::path::Path) -> Vec<String> {
    crate::process::files_under(&state_dir.join("locks"), ".none")
        .into_iter()
        .filter(|(_, body)| !body.is_empty())
        .map(|(path, body)| format!("unfinished intent in {path}: {body}"))
        .collect()
}
