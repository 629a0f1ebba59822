//! Store errors, each mapped to a CNI error code.

use crate::cni::{Cause, CniError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid store key {key:?}: {why}")]
    InvalidKey { key: String, why: String },
    #[error("invalid state dir {path:?}: {why}")]
    InvalidStateDir { path: String, why: String },
    #[error("corrupt store document {path}: {why}")]
    Corrupt { path: String, why: String },
    #[error("revision conflict on {key}: expected {expected:?}, found {actual:?}")]
    Conflict {
        key: String,
        expected: Option<u64>,
        actual: Option<u64>,
    },
    #[error("timed out waiting for lock {what}")]
    Timeout { what: String },
    #[error("change history before revision {requested} is compacted (oldest kept: {oldest})")]
    Compacted { requested: u64, oldest: u64 },
    #[error("{0}")]
    Serde(#[from] serde_json::Error),
    /// The store's server cannot be reached or did not answer in time.
    #[error("store unavailable: {what}")]
    Unavailable { what: String },
    /// A store setting (`store` in a config, or `NETSVC_STORE`) is wrong.
    #[error("invalid store setting {field}: {why}")]
    InvalidConfig { field: String, why: String },
}

impl StoreError {
    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    pub(crate) fn invalid_key(key: &str, why: impl Into<String>) -> Self {
        StoreError::InvalidKey {
            key: key.to_string(),
            why: why.into(),
        }
    }

    pub fn unavailable(what: impl std::fmt::Display) -> Self {
        StoreError::Unavailable { what: what.to_string() }
    }

    pub fn invalid_config(field: &str, why: impl Into<String>) -> Self {
        StoreError::InvalidConfig {
            field: field.to_string(),
            why: why.into(),
        }
    }

    /// True for errors a caller may retry (lost a race, lock busy, server away).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Conflict { .. } | StoreError::Timeout { .. } | StoreError::Unavailable { .. }
        )
    }
}

impl From<StoreError> for CniError {
    fn from(e: StoreError) -> Self {
        match &e {
            // Contention or an unreachable server: the runtime may retry the whole call.
            StoreError::Conflict { .. } | StoreError::Timeout { .. } => CniError::try_again(e.to_string()),
            StoreError::Unavailable { .. } => CniError::try_again(e.to_string()).caused_by(Cause::StoreUnavailable),
            StoreError::InvalidConfig { field, why } => CniError::invalid_config(field, why.clone()),
            StoreError::InvalidKey { key, why } => CniError::invalid_config("store key", format!("{key:?}: {why}")),
            StoreError::InvalidStateDir { path, why } => {
                CniError::invalid_config("stateDir", format!("{path:?}: {why}"))
            }
            StoreError::Corrupt { .. } | StoreError::Serde(_) => CniError::decode(e.to_string()),
            StoreError::Io { .. } | StoreError::Compacted { .. } => CniError::io(e.to_string()),
        }
    }
}
