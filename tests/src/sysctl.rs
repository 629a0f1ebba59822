//! Per-namespace `net.*` sysctls.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::netns::Netns;

/// `net.ipv4.ip_forward` → `/proc/sys/net/ipv4/ip_forward`; only `net.*`
/// keys, which are per namespace, so a test can never change the host's.
fn proc_path(key: &str) -> Result<PathBuf> {
    if !key.starts_with("net.") || key.contains("..") || key.contains('/') {
        bail!("not a per-namespace sysctl: {key:?}");
    }
    Ok(PathBuf::from("/proc/sys").join(key.replace('.', "/")))
}

impl Netns {
    /// Reads a `net.*` sysctl as this namespace sees it.
    pub fn sysctl(&self, key: &str) -> Result<String> {
        let path = proc_path(key)?;
        // /proc/sys/net resolves against the opening thread's namespace.
        self.run(|| std::fs::read_to_string(&path))?
            .map(|v| v.trim().to_owned())
            .with_context(|| format!("[{}] read {key}", self.name()))
    }

    /// Sets a `net.*` sysctl in this namespace only.
    pub fn set_sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = proc_path(key)?;
        self.run(|| std::fs::write(&path, value))?
            .with_context(|| format!("[{}] write {key}={value}", self.name()))
    }
}

#[cfg(test)]
mod tests {
    use super::proc_path;

    #[test]
    fn only_net_keys() {
        assert_eq!(
            proc_path("net.ipv4.ip_forward").unwrap().to_str(),
            Some("/proc/sys/net/ipv4/ip_forward")
        );
        assert!(proc_path("kernel.pid_max").is_err());
        assert!(proc_path("net/../kernel").is_err());
    }
}
