//! A plugin as the protocol sees it: one validated [`Call`] and the
//! [`Plugin`] that answers the five verbs (VERSION is the runtime's, see
//! `crate::runtime`).

use super::config::NetConf;
use super::descriptor::Descriptor;
use super::env::Env;
use super::error::{CniError, Result};
use super::result::CniResult;
use super::version::{SUPPORTED_VERSIONS, Version};
use crate::node::NodeName;

/// Code for a plugin that panicked: plugin-specific, so a runtime never
/// mistakes it for one of the spec's codes.
pub const PANIC_CODE: u32 = 999;

/// One validated call: its environment and its configuration.
#[derive(Debug, Clone)]
pub struct Call {
    pub env: Env,
    pub conf: NetConf,
    /// The node the call runs on, resolved once as the call starts (from
    /// `NETSVC_NODE_NAME`, else the host name).
    pub node: NodeName,
}

impl Call {
    /// The previous result in this config's version (absent on a first ADD).
    pub fn prev_result(&self) -> Result<Option<CniResult>> {
        self.conf.prev_result()
    }

    /// The previous result a chained service's ADD needs: code 7 naming the
    /// plugin when no interface plugin ran before it.
    pub fn chained_prev_result(&self) -> Result<CniResult> {
        self.prev_result()?.ok_or_else(|| {
            CniError::invalid_config(
                "prevResult",
                format!(
                    "{} is chained after an interface plugin (none ran before it)",
                    self.conf.plugin_type
                ),
            )
        })
    }

    /// Whether GC keeps the attachment (container id, ifname): it is in
    /// `cni.dev/valid-attachments`.
    pub fn gc_keeps(&self, container_id: &str, ifname: &str) -> bool {
        self.conf
            .gc_keep()
            .iter()
            .any(|a| a.container_id == container_id && a.ifname == ifname)
    }

    pub fn version(&self) -> Version {
        Version::parse(&self.conf.cni_version).unwrap_or(Version::V1_1_0)
    }
}

/// A CNI plugin built on the core. DEL must succeed when what it removes is
/// already gone; GC keeps only `call.conf.gc_keep()`.
pub trait Plugin {
    /// Where the plugin stands in a chain.
    fn descriptor(&self) -> Descriptor;

    /// The spec versions it speaks.
    fn supported_versions(&self) -> &'static [&'static str] {
        SUPPORTED_VERSIONS
    }

    fn add(&self, call: &Call) -> Result<CniResult>;
    fn del(&self, call: &Call) -> Result<()>;
    fn check(&self, call: &Call) -> Result<()>;
    fn gc(&self, call: &Call) -> Result<()>;
    fn status(&self, call: &Call) -> Result<()>;
}
