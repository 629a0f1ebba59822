//! Graph errors, mapped to CNI codes.

use crate::cni::CniError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bad input, naming the field (a JSON path or CNI_ARGS key) and the value.
    #[error("invalid {field} {value:?}: {why}")]
    Invalid { field: String, value: String, why: String },
    #[error("cannot decode {key}: {why}")]
    Decode { key: String, why: String },
}

impl From<crate::naming::InvalidName> for GraphError {
    fn from(e: crate::naming::InvalidName) -> Self {
        GraphError::invalid(e.field, e.value, e.why)
    }
}

impl GraphError {
    pub fn invalid(field: impl Into<String>, value: impl Into<String>, why: impl Into<String>) -> Self {
        GraphError::Invalid {
            field: field.into(),
            value: value.into(),
            why: why.into(),
        }
    }
}

impl From<GraphError> for CniError {
    fn from(e: GraphError) -> Self {
        match e {
            GraphError::Store(s) => s.into(),
            GraphError::Invalid { field, value, why } => CniError::invalid_config(&field, format!("{value:?}: {why}")),
            GraphError::Decode { .. } => CniError::decode(e.to_string()),
        }
    }
}
