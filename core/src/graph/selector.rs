//! The one selector shared by services and policies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Endpoint, GraphError, validate_label, validate_name};

/// `{"names": [...], "labels": {...}}`. Empty matches every endpoint; `names`
/// matches when any of them is one of the endpoint's names; every label must match.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Selector {
    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.labels.is_empty()
    }

    pub fn matches(&self, ep: &Endpoint) -> bool {
        let names_ok = self.names.is_empty() || self.names.iter().any(|n| ep.names.iter().any(|e| e == n));
        names_ok && self.labels.iter().all(|(k, v)| ep.labels.get(k) == Some(v))
    }

    /// Checks names and labels; `field` is the selector's JSON path for errors.
    pub fn validate(&self, field: &str) -> Result<(), GraphError> {
        for (i, n) in self.names.iter().enumerate() {
            validate_name(&format!("{field}.names[{i}]"), n)?;
        }
        for (k, v) in &self.labels {
            validate_label(&format!("{field}.labels"), k, v)?;
        }
        Ok(())
    }
}
