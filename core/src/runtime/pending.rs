//! DELs the store could not take. CNI requires DEL to succeed, and a node
//! must go on removing containers while its store (etcd) is unreachable: the
//! plugin's DEL is then kept in the node's state dir and answered with
//! success, and the node agent replays it when the store is back.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cni::{Call, CniArgs, CniError, Command, Env, NetConf, Result};
use crate::node::NodeName;
use crate::store::{STATE_DIR_ENV, atomic_write, create_dirs, resolve_state_dir};

/// One queued DEL: the plugin's config and the attachment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingDel {
    pub conf: Value,
    pub container_id: String,
    pub ifname: String,
}

impl PendingDel {
    /// The call to replay on `node` (the one that queued it): a DEL
    /// without a namespace (it is gone by now).
    pub fn call(&self, node: &NodeName) -> Result<Call> {
        Ok(Call {
            env: Env {
                command: Command::Del,
                container_id: self.container_id.clone(),
                netns: None,
                ifname: self.ifname.clone(),
                args: CniArgs::default(),
                path: Vec::new(),
            },
            conf: NetConf::from_value(&self.conf)?,
            node: node.clone(),
        })
    }

    pub fn plugin_type(&self) -> &str {
        self.conf.get("type").and_then(Value::as_str).unwrap_or("")
    }
}

fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("pending")
}

/// Keeps `call`'s DEL for the agent to replay.
pub fn queue(call: &Call) -> Result<()> {
    let env = std::env::var(STATE_DIR_ENV).ok();
    let configured = call.conf.extra.get("stateDir").and_then(Value::as_str);
    let state_dir = resolve_state_dir(configured, env.as_deref())?;
    let pending = PendingDel {
        conf: call.conf.to_value(),
        container_id: call.env.container_id.clone(),
        ifname: call.env.ifname.clone(),
    };
    let name = crate::naming::digest_hex(
        format!(
            "{}/{}/{}/{}",
            call.conf.plugin_type, call.conf.name, pending.container_id, pending.ifname
        )
        .as_bytes(),
    );
    create_dirs(&dir(&state_dir))?;
    let body = serde_json::to_vec(&pending).map_err(|e| CniError::io(e.to_string()))?;
    atomic_write(&dir(&state_dir).join(format!("{name}.json")), &body)?;
    tracing::warn!(container = %pending.container_id, "the store is unreachable: DEL queued for the agent");
    Ok(())
}

/// Every queued DEL of the node, with its file (remove it once replayed).
pub fn queued(state_dir: &Path) -> Vec<(PathBuf, PendingDel)> {
    let Ok(entries) = std::fs::read_dir(dir(state_dir)) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| {
            let pending = serde_json::from_slice(&std::fs::read(&p).ok()?).ok()?;
            Some((p, pending))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}
