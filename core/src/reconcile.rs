//! The reconcile hook: a service re-renders a whole network from the graph,
//! applying only what differs. `netsvc apply` calls it for every service of a
//! conflist; services also use it to recover when a fast path finds the
//! kernel not as recorded.

use serde::Serialize;

use crate::cni::{NetConf, Result};

/// What one reconcile did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub service: String,
    pub network: String,
    /// Endpoints the service holds in the network.
    pub endpoints: usize,
    /// Kernel changes applied (0: the kernel already matched).
    pub changes: usize,
}

pub trait Reconcile {
    /// The plugin type (`type` in a conflist) this serves.
    fn plugin_type(&self) -> &'static str;

    /// Re-renders `conf.name`'s network with `conf` for the endpoints the
    /// graph holds, in one atomic change of the service's own state.
    fn reconcile(&self, conf: &NetConf) -> Result<Summary>;
}
