//! Which store a plugin, the agent or the CLI opens: a config's `store`
//! object, else `NETSVC_STORE` (the same object as JSON), else the file store
//! in the state dir.
//!
//! ```json
//! "store": {"type": "etcd", "endpoints": ["http://10.0.0.1:2379"], "prefix": "/netsvc",
//!           "tls": {"ca": "/etc/netsvc/etcd-ca.pem", "cert": "/etc/netsvc/node.pem", "key": "/etc/netsvc/node-key.pem"}}
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    Change, Entry, Event, FileStore, Lease, LockGuard, Revision, STATE_DIR_ENV, Store, StoreError, Subscription,
    resolve_state_dir,
};

/// Names the store when no config does: the JSON of a `store` object.
pub const STORE_ENV: &str = "NETSVC_STORE";
pub const DEFAULT_PREFIX: &str = "/netsvc";

/// A `store` setting.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum StoreSpec {
    /// The embedded file store in the state dir (one machine).
    #[default]
    File,
    /// etcd v3, shared by every node of a cluster.
    Etcd(EtcdSpec),
}

/// Where etcd is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EtcdSpec {
    /// Client URLs, e.g. `http://10.0.0.1:2379` (`https://` with `tls`).
    pub endpoints: Vec<String>,
    /// Every key lives under it; clusters sharing one etcd use different ones.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Client-certificate TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
}

/// PEM files for TLS to etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsSpec {
    /// The CA that signed etcd's server certificate.
    pub ca: PathBuf,
    /// This node's client certificate (with `key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// The name the server certificate must carry, when not the endpoint's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

fn default_prefix() -> String {
    DEFAULT_PREFIX.into()
}

impl StoreSpec {
    /// Reads a `store` object; errors name the field (`store.endpoints[0]`).
    pub fn from_value(field: &str, v: &Value) -> Result<Self, StoreError> {
        let spec: StoreSpec = serde_path_to_error::deserialize(v).map_err(|e| {
            let path = e.path().to_string();
            let at = if path == "." {
                field.to_string()
            } else {
                format!("{field}.{path}")
            };
            StoreError::invalid_config(&at, e.into_inner().to_string())
        })?;
        spec.validate(field)?;
        Ok(spec)
    }

    fn validate(&self, field: &str) -> Result<(), StoreError> {
        let StoreSpec::Etcd(etcd) = self else {
            return Ok(());
        };
        if etcd.endpoints.is_empty() {
            return Err(StoreError::invalid_config(
                &format!("{field}.endpoints"),
                "names no etcd endpoint",
            ));
        }
        for (i, e) in etcd.endpoints.iter().enumerate() {
            let scheme_ok = e.starts_with("http://") || e.starts_with("https://");
            if !scheme_ok || e.split("://").nth(1).is_none_or(str::is_empty) {
                return Err(StoreError::invalid_config(
                    &format!("{field}.endpoints[{i}]"),
                    format!("{e:?} is not an http:// or https:// URL"),
                ));
            }
        }
        if !etcd.prefix.starts_with('/') || etcd.prefix.len() < 2 {
            return Err(StoreError::invalid_config(
                &format!("{field}.prefix"),
                format!("{:?} must be an absolute key prefix such as /netsvc", etcd.prefix),
            ));
        }
        if let Some(tls) = &etcd.tls
            && tls.cert.is_some() != tls.key.is_some()
        {
            return Err(StoreError::invalid_config(
                &format!("{field}.tls"),
                "cert and key go together",
            ));
        }
        Ok(())
    }

    /// The spec a config names (`store`), else the environment's, else the file store.
    pub fn resolve(configured: Option<&Value>) -> Result<Self, StoreError> {
        if let Some(v) = configured {
            return Self::from_value("store", v);
        }
        match std::env::var(STORE_ENV) {
            Ok(text) if !text.trim().is_empty() => {
                let v: Value = serde_json::from_str(&text)
                    .map_err(|e| StoreError::invalid_config(STORE_ENV, format!("not JSON: {e}")))?;
                Self::from_value(STORE_ENV, &v)
            }
            _ => Ok(StoreSpec::File),
        }
    }

    /// The spec as `NETSVC_STORE` carries it to a helper process.
    pub fn to_env(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// An open store and the state dir beside it (where node-local files live:
/// keys, daemon sockets, logs). It is a [`Store`] itself.
pub struct StoreHandle {
    store: Box<dyn Store>,
    state_dir: PathBuf,
    spec: StoreSpec,
}

impl StoreHandle {
    /// The node-local state dir (the file store's root when that is the store).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    pub fn spec(&self) -> &StoreSpec {
        &self.spec
    }

    /// The environment a helper process (a daemon, a keeper) needs to open
    /// the same store and state dir.
    pub fn child_env(&self) -> [(&'static str, String); 2] {
        [
            (STORE_ENV, self.spec.to_env()),
            (STATE_DIR_ENV, self.state_dir.display().to_string()),
        ]
    }
}

/// The handle is the store it opened.
impl Store for StoreHandle {
    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.store.get(key)
    }

    fn put(&self, key: &str, value: &Value) -> Result<Revision, StoreError> {
        self.store.put(key, value)
    }

    fn compare_and_swap(&self, key: &str, expected: Option<Revision>, value: &Value) -> Result<Revision, StoreError> {
        self.store.compare_and_swap(key, expected, value)
    }

    fn delete(&self, key: &str) -> Result<Option<Revision>, StoreError> {
        self.store.delete(key)
    }

    fn compare_and_delete(&self, key: &str, expected: Revision) -> Result<Revision, StoreError> {
        self.store.compare_and_delete(key, expected)
    }

    fn commit(&self, changes: &[Change<'_>]) -> Result<(), StoreError> {
        self.store.commit(changes)
    }

    fn list(&self, prefix: &str) -> Result<Vec<Entry>, StoreError> {
        self.store.list(prefix)
    }

    fn revision(&self) -> Result<Revision, StoreError> {
        self.store.revision()
    }

    fn changes_since(&self, prefix: &str, since: Revision) -> Result<Vec<Event>, StoreError> {
        self.store.changes_since(prefix, since)
    }

    fn watch(&self, prefix: &str, since: Revision, timeout: Duration) -> Result<Vec<Event>, StoreError> {
        self.store.watch(prefix, since, timeout)
    }

    fn subscribe<'a>(&'a self, prefix: &str, since: Revision) -> Result<Box<dyn Subscription + 'a>, StoreError> {
        self.store.subscribe(prefix, since)
    }

    /// A network's lock is this node's, whatever the store: it keeps this
    /// node's processes from rendering the same kernel state at once. Nodes
    /// never wait on each other: their commits are compare-and-swap, and what
    /// they render (their records, their endpoints) is keyed by node.
    fn lock_network(&self, network: &str, timeout: Duration) -> Result<LockGuard, StoreError> {
        super::fsutil::network_flock(&self.state_dir, network, timeout)
    }

    fn network_note(&self, network: &str) -> Result<Vec<u8>, StoreError> {
        super::fsutil::network_note(&self.state_dir, network)
    }

    fn put_leased(&self, key: &str, value: &Value, ttl: Duration) -> Result<Lease, StoreError> {
        self.store.put_leased(key, value, ttl)
    }

    fn as_handle(&self) -> Option<&StoreHandle> {
        Some(self)
    }
}

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHandle")
            .field("spec", &self.spec)
            .field("state_dir", &self.state_dir)
            .finish()
    }
}

/// Opens the store `store` (a config's `store` object) names in the state
/// dir `state_dir` names (each else from the environment, else the default).
pub fn open_with(state_dir: Option<&str>, store: Option<&Value>) -> Result<StoreHandle, StoreError> {
    let env = std::env::var(STATE_DIR_ENV).ok();
    let dir = resolve_state_dir(state_dir, env.as_deref())?;
    let spec = StoreSpec::resolve(store)?;
    let opened: Box<dyn Store> = match &spec {
        StoreSpec::File => Box::new(FileStore::open(&dir)?),
        StoreSpec::Etcd(etcd) => connect_etcd(etcd)?,
    };
    Ok(StoreHandle {
        store: opened,
        state_dir: dir,
        spec,
    })
}

#[cfg(feature = "etcd")]
fn connect_etcd(spec: &EtcdSpec) -> Result<Box<dyn Store>, StoreError> {
    Ok(Box::new(super::EtcdStore::connect(spec)?))
}

#[cfg(not(feature = "etcd"))]
fn connect_etcd(_spec: &EtcdSpec) -> Result<Box<dyn Store>, StoreError> {
    Err(StoreError::invalid_config(
        "store.type",
        "this build has no etcd backend (build with --features netsvc-core/etcd)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (json!({"type": "etcd", "endpoints": []}), "store.endpoints"),
            (
                json!({"type": "etcd", "endpoints": ["10.0.0.1:2379"]}),
                "store.endpoints[0]",
            ),
            (
                json!({"type": "etcd", "endpoints": ["http://a:1"], "prefix": "netsvc"}),
                "store.prefix",
            ),
            (
                json!({"type": "etcd", "endpoints": ["http://a:1"], "tls": {"ca": "/c", "cert": "/x"}}),
                "store.tls",
            ),
            (
                json!({"type": "etcd", "endpoints": ["http://a:1"], "bogus": 1}),
                "store",
            ),
            (json!({"type": "zookeeper"}), "store.type"),
        ];
        for (v, field) in cases {
            match StoreSpec::from_value("store", &v) {
                Err(StoreError::InvalidConfig { field: f, .. }) => assert_eq!(f, field, "{v}"),
                other => panic!("{v}: {other:?}"),
            }
        }
    }

    #[test]
    fn reads_etcd_with_defaults() {
        let v = json!({"type": "etcd", "endpoints": ["http://10.0.0.1:2379"]});
        let StoreSpec::Etcd(e) = StoreSpec::from_value("store", &v).unwrap() else {
            panic!("not etcd");
        };
        assert_eq!(e.prefix, DEFAULT_PREFIX);
        assert_eq!(
            StoreSpec::from_value("store", &json!({"type": "file"})).unwrap(),
            StoreSpec::File
        );
    }
}
