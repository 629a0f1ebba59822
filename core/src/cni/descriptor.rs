//! What a plugin provides and requires in a chain. The composer orders and
//! checks conflists with these; a service declares its own in its crate.

use serde::{Deserialize, Serialize};

/// A thing a plugin of a chain makes available to the plugins after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Feature {
    /// A container interface.
    Interface,
    /// A host-side veth peer of the container interface (bridge, ptp).
    HostVeth,
    /// Addresses in the result.
    Ip,
    Routes,
    Dns,
    Policy,
    Shaping,
    Lb,
    Tunnel,
    PortMapping,
}

/// A plugin's place in a chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Descriptor {
    /// The plugin binary name (`type` in a conflist).
    #[serde(rename = "type")]
    pub plugin_type: String,
    #[serde(default)]
    pub provides: Vec<Feature>,
    /// Features some earlier plugin of the chain must provide.
    #[serde(default)]
    pub requires: Vec<Feature>,
    /// Features it does its whole job only with: when the chain's interface
    /// plugin does not provide one, the composer warns instead of refusing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefers: Vec<Feature>,
    /// Plugin types this one must come after when both are present.
    #[serde(default)]
    pub after: Vec<String>,
    /// Plugin types this one must come before when both are present.
    #[serde(default)]
    pub before: Vec<String>,
    /// Plugin types that must not share a chain with this one.
    #[serde(default)]
    pub conflicts: Vec<String>,
    /// Runtime capabilities (`runtimeConfig` keys) it understands.
    #[serde(default)]
    pub capabilities: Vec<String>,
}
