//! CNI errors: the spec's well-known codes and the JSON a plugin prints.

use serde::{Deserialize, Serialize};

/// A netsvc service's CHECK found kernel state it created missing.
pub const CODE_STATE_MISSING: u32 = 120;

/// The error codes of the CNI spec. Codes from 100 up are plugin-specific.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// 1: incompatible CNI version.
    IncompatibleVersion,
    /// 2: unsupported field in the network configuration.
    UnsupportedField,
    /// 3: container unknown or does not exist.
    UnknownContainer,
    /// 4: invalid necessary environment variables.
    InvalidEnv,
    /// 5: I/O failure.
    Io,
    /// 6: failed to decode content.
    Decode,
    /// 7: invalid network config.
    InvalidConfig,
    /// 11: try again later.
    TryAgain,
    /// 50: the plugin is not available.
    NotAvailable,
    /// 51: not available, and existing containers in the network may have limited connectivity.
    NotAvailableLimited,
    /// 100 and above: plugin-specific.
    Plugin(u32),
}

impl Code {
    pub fn as_u32(self) -> u32 {
        match self {
            Code::IncompatibleVersion => 1,
            Code::UnsupportedField => 2,
            Code::UnknownContainer => 3,
            Code::InvalidEnv => 4,
            Code::Io => 5,
            Code::Decode => 6,
            Code::InvalidConfig => 7,
            Code::TryAgain => 11,
            Code::NotAvailable => 50,
            Code::NotAvailableLimited => 51,
            Code::Plugin(n) => n,
        }
    }

    pub fn from_u32(n: u32) -> Code {
        match n {
            1 => Code::IncompatibleVersion,
            2 => Code::UnsupportedField,
            3 => Code::UnknownContainer,
            4 => Code::InvalidEnv,
            5 => Code::Io,
            6 => Code::Decode,
            7 => Code::InvalidConfig,
            11 => Code::TryAgain,
            50 => Code::NotAvailable,
            51 => Code::NotAvailableLimited,
            n => Code::Plugin(n),
        }
    }
}

/// Code 7 naming the field, as every refused name is reported.
impl From<crate::naming::InvalidName> for CniError {
    fn from(e: crate::naming::InvalidName) -> Self {
        CniError::invalid_config(&e.field, format!("{:?}: {}", e.value, e.why))
    }
}

/// A bad node name is code 7 naming where it came from; an unreadable host
/// name is code 5.
impl From<crate::node::NodeError> for CniError {
    fn from(e: crate::node::NodeError) -> Self {
        match e {
            crate::node::NodeError::Invalid(e) => e.into(),
            crate::node::NodeError::HostName(msg) => CniError::io(msg),
        }
    }
}

/// What caused an error, where the caller acts on it (never printed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The store could not be reached: a DEL is queued for the agent.
    StoreUnavailable,
}

/// A CNI error as printed on stdout: `{cniVersion, code, msg, details}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
    #[serde(skip)]
    pub cause: Option<Cause>,
}

impl CniError {
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        CniError {
            code: code.as_u32(),
            msg: msg.into(),
            details: String::new(),
            cause: None,
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// The same error, marked with what caused it (`details` still tells a human).
    pub fn caused_by(mut self, cause: Cause) -> Self {
        if self.details.is_empty() {
            self.details = match cause {
                Cause::StoreUnavailable => "store unavailable".into(),
            };
        }
        self.cause = Some(cause);
        self
    }

    pub fn code(&self) -> Code {
        Code::from_u32(self.code)
    }

    pub fn incompatible_version(msg: impl Into<String>) -> Self {
        Self::new(Code::IncompatibleVersion, msg)
    }
    pub fn unsupported_field(field: &str, value: impl std::fmt::Display) -> Self {
        Self::new(Code::UnsupportedField, format!("unsupported field {field}: {value}"))
    }
    pub fn unknown_container(msg: impl Into<String>) -> Self {
        Self::new(Code::UnknownContainer, msg)
    }
    /// Code 4, naming the variable.
    pub fn invalid_env(var: &str, why: impl std::fmt::Display) -> Self {
        Self::new(Code::InvalidEnv, format!("invalid environment variable {var}: {why}"))
    }
    pub fn io(msg: impl Into<String>) -> Self {
        Self::new(Code::Io, msg)
    }
    pub fn decode(msg: impl Into<String>) -> Self {
        Self::new(Code::Decode, msg)
    }
    /// Code 7, naming the field (a JSON path such as `policies[0].select`) and why.
    pub fn invalid_config(field: &str, why: impl std::fmt::Display) -> Self {
        Self::new(Code::InvalidConfig, format!("invalid config field {field}: {why}"))
    }
    pub fn try_again(msg: impl Into<String>) -> Self {
        Self::new(Code::TryAgain, msg)
    }
    pub fn not_available(msg: impl Into<String>) -> Self {
        Self::new(Code::NotAvailable, msg)
    }
    pub fn not_available_limited(msg: impl Into<String>) -> Self {
        Self::new(Code::NotAvailableLimited, msg)
    }
    /// A plugin-specific error (code 100 and up).
    /// CHECK of `service` found what it made missing ([`CODE_STATE_MISSING`]).
    pub fn state_missing(service: &str, what: impl std::fmt::Display) -> Self {
        CniError::plugin(CODE_STATE_MISSING, format!("{service}: {what}"))
    }

    pub fn plugin(code: u32, msg: impl Into<String>) -> Self {
        debug_assert!(code >= 100, "plugin-specific codes start at 100");
        Self::new(Code::Plugin(code.max(100)), msg)
    }

    /// The error JSON for stdout, in the given CNI version.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        let mut v = serde_json::json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = serde_json::Value::String(self.details.clone());
        }
        v
    }
}

impl From<std::io::Error> for CniError {
    fn from(e: std::io::Error) -> Self {
        CniError::io(e.to_string())
    }
}

pub type Result<T, E = CniError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for n in [1, 2, 3, 4, 5, 6, 7, 11, 50, 51, 100, 123] {
            assert_eq!(Code::from_u32(n).as_u32(), n);
        }
    }

    #[test]
    fn error_json_has_spec_keys() {
        let e = CniError::invalid_env("CNI_IFNAME", "empty").with_details("x");
        let j = e.to_json("1.1.0");
        assert_eq!(j["code"], 4);
        assert_eq!(j["cniVersion"], "1.1.0");
        assert!(j["msg"].as_str().unwrap().contains("CNI_IFNAME"));
        assert_eq!(j["details"], "x");
    }
}
