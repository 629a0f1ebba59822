//! Node identity: the name this machine goes by in a shared store. Keys a
//! node writes for itself (its rendered state, its VPN peer entry, its
//! registration) are scoped by it, and every endpoint carries it.

use crate::cni::CniError;
use crate::graph::validate_name;

/// Names the node; else the host name.
pub const NODE_ENV: &str = "NETSVC_NODE_NAME";

/// This node's name: `configured` (a config's `node`), else
/// `NETSVC_NODE_NAME`, else the host name. Code 7 names the source of a bad one.
pub fn name(configured: Option<&str>) -> Result<String, CniError> {
    let (source, raw) = match (configured, std::env::var(NODE_ENV)) {
        (Some(n), _) => ("node", n.to_string()),
        (None, Ok(n)) if !n.is_empty() => (NODE_ENV, n),
        _ => {
            let host =
                nix::unistd::gethostname().map_err(|e| CniError::io(format!("cannot read the host name: {e}")))?;
            ("node (from the host name)", host.to_string_lossy().into_owned())
        }
    };
    validate_name(source, &raw)?;
    Ok(raw)
}

/// This node's name as [`name`] finds it with no config; `localhost` when
/// that fails (the failure is reported where an endpoint is made).
pub fn current() -> String {
    name(None).unwrap_or_else(|_| "localhost".into())
}
