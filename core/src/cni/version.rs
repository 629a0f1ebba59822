//! CNI spec versions: which ones we speak and how they compare.

use super::error::{CniError, Result};

/// Every spec version netsvc speaks, oldest first.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest version we speak.
pub const LATEST: &str = "1.1.0";

/// A parsed `major.minor.patch` version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u16, pub u16, pub u16);

impl Version {
    pub const V0_3_0: Version = Version(0, 3, 0);
    pub const V0_4_0: Version = Version(0, 4, 0);
    pub const V1_0_0: Version = Version(1, 0, 0);
    pub const V1_1_0: Version = Version(1, 1, 0);

    /// Parses `major.minor.patch`; an empty string is 0.1.0, as libcni reads it.
    pub fn parse(s: &str) -> Result<Version> {
        if s.is_empty() {
            return Ok(Version(0, 1, 0));
        }
        let bad = || CniError::incompatible_version(format!("invalid cniVersion {s:?}"));
        let mut parts = s.split('.').map(|p| p.parse::<u16>().map_err(|_| bad()));
        let v = Version(
            parts.next().ok_or_else(bad)??,
            parts.next().ok_or_else(bad)??,
            parts.next().ok_or_else(bad)??,
        );
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(v)
    }

    /// Results from 1.0.0 on have no `ips[].version`.
    pub fn is_1x(self) -> bool {
        self >= Version::V1_0_0
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// Fails with code 1 unless `version` is one of `supported`.
pub fn require_supported(version: &str, supported: &[&str]) -> Result<Version> {
    if supported.contains(&version) {
        return Version::parse(version);
    }
    Err(CniError::incompatible_version(format!(
        "incompatible CNI versions: config is {version:?}, plugin supports {supported:?}"
    )))
}

/// The highest of `candidates` that every entry of `supported_by_each` supports.
pub fn highest_common<'a>(
    candidates: impl IntoIterator<Item = &'a str>,
    supported_by_each: &[Vec<String>],
) -> Option<&'a str> {
    candidates
        .into_iter()
        .filter(|c| Version::parse(c).is_ok())
        .filter(|c| supported_by_each.iter().all(|s| s.iter().any(|v| v == c)))
        .max_by_key(|c| Version::parse(c).unwrap_or(Version(0, 0, 0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        assert!(Version::parse("0.4.0").unwrap() < Version::parse("1.0.0").unwrap());
        assert_eq!(Version::parse("").unwrap(), Version(0, 1, 0));
        assert!(Version::parse("1.0").is_err());
        assert!(Version::parse("1.0.0.0").is_err());
        assert!(Version::parse("x.0.0").is_err());
    }

    #[test]
    fn unsupported_is_code_1() {
        let e = require_supported("0.2.0", SUPPORTED_VERSIONS).unwrap_err();
        assert_eq!(e.code, 1);
    }

    #[test]
    fn highest_common_picks_max_shared() {
        let each = vec![
            SUPPORTED_VERSIONS.iter().map(|s| s.to_string()).collect(),
            vec!["0.3.1".into(), "0.4.0".into(), "1.0.0".into()],
        ];
        assert_eq!(highest_common(["1.1.0", "1.0.0", "0.4.0"], &each), Some("1.0.0"));
        assert_eq!(highest_common(["1.1.0"], &each), None);
    }
}
