//! The `CNI_*` environment of a plugin call, validated by the spec's rules.

use std::path::PathBuf;

use super::error::{CniError, Result};

/// The operation a runtime asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Gc,
    Status,
}

impl Command {
    pub fn parse(s: &str) -> Result<Command> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            other => {
                return Err(CniError::invalid_env(
                    "CNI_COMMAND",
                    format!("unknown command {other:?}"),
                ));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Gc => "GC",
            Command::Status => "STATUS",
        }
    }

    /// ADD, DEL and CHECK act on one attachment and need its container id and ifname.
    pub fn is_per_attachment(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }
}

/// `CNI_ARGS`: `K=V;K2=V2`, kept in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs(pub Vec<(String, String)>);

impl CniArgs {
    /// Splits pairs the way the Go runtimes do: a pair must hold exactly one `=`.
    pub fn parse(s: &str) -> Result<CniArgs> {
        let mut pairs = Vec::new();
        for pair in s.split(';').filter(|p| !p.is_empty()) {
            let mut kv = pair.split('=');
            match (kv.next(), kv.next(), kv.next()) {
                (Some(k), Some(v), None) if !k.is_empty() => pairs.push((k.to_string(), v.to_string())),
                _ => {
                    return Err(CniError::invalid_env(
                        "CNI_ARGS",
                        format!("invalid pair {pair:?}: expected KEY=VALUE with one '='"),
                    ));
                }
            }
        }
        Ok(CniArgs(pairs))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn to_env_string(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// A validated call environment. For VERSION, GC and STATUS the attachment
/// fields are empty: those commands act on no single attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub args: CniArgs,
    pub path: Vec<PathBuf>,
}

impl Env {
    /// Reads the process environment.
    pub fn from_process() -> Result<Env> {
        Env::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads and validates `CNI_*` through `get`, applying each command's requirements.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Env> {
        let nonempty = |k: &str| get(k).filter(|v| !v.is_empty());
        let command = match nonempty("CNI_COMMAND") {
            Some(c) => Command::parse(&c)?,
            None => return Err(CniError::invalid_env("CNI_COMMAND", "not set")),
        };
        let mut env = Env {
            command,
            container_id: String::new(),
            netns: None,
            ifname: String::new(),
            args: CniArgs::parse(&get("CNI_ARGS").unwrap_or_default())?,
            path: get("CNI_PATH")
                .map(|p| {
                    std::env::split_paths(&p)
                        .filter(|p| !p.as_os_str().is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        };
        if command.is_per_attachment() {
            let id = nonempty("CNI_CONTAINERID").ok_or_else(|| CniError::invalid_env("CNI_CONTAINERID", "not set"))?;
            validate_container_id(&id)?;
            let ifname = nonempty("CNI_IFNAME").ok_or_else(|| CniError::invalid_env("CNI_IFNAME", "not set"))?;
            validate_ifname(&ifname).map_err(|why| CniError::invalid_env("CNI_IFNAME", why))?;
            env.container_id = id;
            env.ifname = ifname;
            env.netns = nonempty("CNI_NETNS").map(PathBuf::from);
            if command != Command::Del && env.netns.is_none() {
                return Err(CniError::invalid_env("CNI_NETNS", "not set"));
            }
        }
        Ok(env)
    }
}

/// Container ids start alphanumeric, then hold alphanumerics, `_`, `.` and `-`.
pub fn validate_container_id(id: &str) -> Result<()> {
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(CniError::invalid_env(
            "CNI_CONTAINERID",
            format!("{id:?} must start with a letter or digit and hold only letters, digits, '_', '.' or '-'"),
        ))
    }
}

/// Interface names: 1..=15 bytes, not `.` or `..`, no `/`, `:`, NUL or whitespace.
pub fn validate_ifname(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("interface name is empty".into());
    }
    if name.len() > 15 {
        return Err(format!("interface name {name:?} is longer than 15 bytes"));
    }
    if name == "." || name == ".." {
        return Err(format!("interface name {name:?} is not allowed"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, '/' | ':' | '\0') || c.is_whitespace())
    {
        return Err(format!("interface name {name:?} holds {c:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Env> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Env::from_lookup(|k| m.get(k).cloned())
    }

    const ADD: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc-1"),
        ("CNI_NETNS", "/var/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web"),
        ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
    ];

    fn without(key: &str) -> Vec<(&'static str, &'static str)> {
        ADD.iter().copied().filter(|(k, _)| *k != key).collect()
    }

    #[test]
    fn add_parses() {
        let e = env(ADD).unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.args.get("K8S_POD_NAME"), Some("web"));
        assert_eq!(e.path.len(), 2);
    }

    #[test]
    fn each_missing_variable_is_named() {
        for var in ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
            let err = env(&without(var)).unwrap_err();
            assert_eq!(err.code, 4);
            assert!(err.msg.contains(var), "{var}: {}", err.msg);
        }
    }

    #[test]
    fn del_needs_no_netns_and_version_needs_nothing() {
        let mut del = without("CNI_NETNS");
        del[0] = ("CNI_COMMAND", "DEL");
        assert!(env(&del).unwrap().netns.is_none());
        for cmd in ["VERSION", "GC", "STATUS"] {
            assert!(env(&[("CNI_COMMAND", cmd)]).is_ok());
        }
    }

    #[test]
    fn bad_values_are_code_4() {
        for (k, v) in [
            ("CNI_CONTAINERID", "-abc"),
            ("CNI_CONTAINERID", "a/b"),
            ("CNI_IFNAME", "abcdefghijklmnop"),
            ("CNI_IFNAME", "a:b"),
            ("CNI_IFNAME", ".."),
            ("CNI_ARGS", "A=b=c"),
            ("CNI_ARGS", "novalue"),
            ("CNI_COMMAND", "FROB"),
        ] {
            let mut e = without(k);
            e.push((k, v));
            let err = env(&e).unwrap_err();
            assert_eq!(err.code, 4, "{k}={v}");
            assert!(err.msg.contains(k), "{k}: {}", err.msg);
        }
    }
}
