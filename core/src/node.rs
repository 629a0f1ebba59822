//! Node identity: the name this machine goes by in a shared store. Keys a
//! node writes for itself (its rendered state, its VPN peer entry, its
//! registration) are scoped by it, and every endpoint carries it.
//!
//! A [`NodeName`] is resolved once, at the edge — a plugin at the start of
//! its call ([`crate::cni::Call::node`]), the CLI and the agent from their
//! arguments — and passed down as a value: nothing below reads the
//! environment or the host name for it, and nothing guesses one.

use std::fmt;

use crate::naming::{InvalidName, validate_name};

/// Names the node; else the host name.
pub const NODE_ENV: &str = "NETSVC_NODE_NAME";

/// Why a node has no name.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Invalid(#[from] InvalidName),
    /// The host name could not be read (the message says what to set instead).
    #[error("{0}")]
    HostName(String),
}

/// A node's name, validated as every name that becomes a key is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct NodeName(String);

impl NodeName {
    /// `name` as a node's name; code 7 naming `source` when it is not one.
    pub fn new(source: &str, name: &str) -> Result<NodeName, NodeError> {
        validate_name(source, name)?;
        Ok(NodeName(name.to_string()))
    }

    /// This node's name: `configured` (a `--node` argument, a config's
    /// `node`), else [`NODE_ENV`] as `env` looks it up, else the host name.
    /// A host name that cannot be read is an error that says how to name
    /// the node instead; code 7 names the source of a bad name.
    pub fn resolve(configured: Option<&str>, env: impl Fn(&str) -> Option<String>) -> Result<NodeName, NodeError> {
        if let Some(n) = configured {
            return NodeName::new("node", n);
        }
        if let Some(n) = env(NODE_ENV).filter(|n| !n.is_empty()) {
            return NodeName::new(NODE_ENV, &n);
        }
        let host = nix::unistd::gethostname().map_err(|e| {
            NodeError::HostName(format!(
                "cannot read the host name to name this node ({e}): set {NODE_ENV}"
            ))
        })?;
        NodeName::new("node (from the host name)", &host.to_string_lossy())
    }

    /// [`NodeName::resolve`] from this process's environment.
    pub fn from_env(configured: Option<&str>) -> Result<NodeName, NodeError> {
        NodeName::resolve(configured, |k| std::env::var(k).ok())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for NodeName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for NodeName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configured_name_wins_then_the_environment() {
        let env = |k: &str| (k == NODE_ENV).then(|| "from-env".to_string());
        assert_eq!(NodeName::resolve(Some("given"), env).unwrap().as_str(), "given");
        assert_eq!(NodeName::resolve(None, env).unwrap().as_str(), "from-env");
        let e = NodeName::resolve(None, |_| Some("a/b".into())).unwrap_err();
        assert!(e.to_string().contains(NODE_ENV), "{e}");
        // Neither: the host name, never a made-up one.
        let host = nix::unistd::gethostname().unwrap();
        assert_eq!(
            NodeName::resolve(None, |_| None).unwrap().as_str(),
            host.to_string_lossy()
        );
    }
}
