//! Finding and executing one plugin binary, as libcni's invoke package does.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};

use netsvc_core::cni::{CniError, Command};
use serde_json::Value;

/// The environment of one plugin call.
#[derive(Debug, Clone)]
pub struct CallEnv<'a> {
    pub command: Command,
    pub container_id: &'a str,
    pub netns: Option<&'a Path>,
    pub ifname: &'a str,
    pub args: &'a str,
}

/// Where plugins are found and in which namespace they run.
#[derive(Debug, Clone, Default)]
pub struct Invoker {
    pub cni_path: Vec<PathBuf>,
    /// Run plugins inside this network namespace instead of the caller's.
    pub plugin_netns: Option<PathBuf>,
    /// Extra environment for every plugin (e.g. `NETSVC_STATE_DIR`).
    pub env: Vec<(String, String)>,
}

impl Invoker {
    /// The first executable named `plugin_type` on the CNI path.
    pub fn find(&self, plugin_type: &str) -> Result<PathBuf, CniError> {
        if plugin_type.is_empty() || plugin_type.contains('/') || plugin_type.starts_with('.') {
            return Err(CniError::invalid_config(
                "type",
                format!("{plugin_type:?} is not a plugin name"),
            ));
        }
        self.cni_path
            .iter()
            .map(|d| d.join(plugin_type))
            .find(|p| is_executable(p))
            .ok_or_else(|| {
                CniError::not_available(format!(
                    "failed to find plugin {plugin_type:?} in path {}",
                    self.cni_path
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(":")
                ))
            })
    }

    /// Runs `plugin_type` with `stdin`, returning its stdout when it succeeds
    /// and its CNI error when it fails.
    pub fn exec(&self, plugin_type: &str, env: &CallEnv, stdin: &[u8]) -> Result<Vec<u8>, CniError> {
        let binary = self.find(plugin_type)?;
        let mut cmd = Process::new(&binary);
        cmd.env("CNI_COMMAND", env.command.as_str())
            .env("CNI_CONTAINERID", env.container_id)
            .env("CNI_IFNAME", env.ifname)
            .env("CNI_ARGS", env.args)
            .env("CNI_PATH", std::env::join_paths(&self.cni_path).unwrap_or_default())
            .env_remove("CNI_NETNS")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(ns) = env.netns {
            cmd.env("CNI_NETNS", ns);
        }
        if let Some(ns) = &self.plugin_netns {
            enter_netns_on_exec(&mut cmd, ns)?;
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| CniError::io(format!("failed to start plugin {}: {e}", binary.display())))?;
        if let Some(mut pipe) = child.stdin.take() {
            // A plugin may exit before reading stdin (VERSION); a broken pipe then is fine.
            let _ = pipe.write_all(stdin);
        }
        let out = child
            .wait_with_output()
            .map_err(|e| CniError::io(format!("failed to wait for plugin {}: {e}", binary.display())))?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        Err(plugin_error(&out.stdout, out.status))
    }
}

/// A failed plugin's error: its CNI error JSON, or a code-999 error holding what it printed.
fn plugin_error(stdout: &[u8], status: std::process::ExitStatus) -> CniError {
    let parsed = serde_json::from_slice::<Value>(stdout).ok().and_then(|v| {
        let code = v.get("code")?.as_u64()?;
        Some(
            CniError::new(
                netsvc_core::cni::Code::from_u32(code as u32),
                v.get("msg")?.as_str().unwrap_or(""),
            )
            .with_details(v.get("details").and_then(Value::as_str).unwrap_or("")),
        )
    });
    parsed.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(stdout);
        let msg = if text.trim().is_empty() {
            format!("plugin failed with no error message ({status})")
        } else {
            format!("plugin failed ({status}): {}", text.trim())
        };
        CniError::plugin(999, msg)
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Makes the child join the network namespace at `ns` between fork and exec,
/// so plugins run inside a node namespace without a wrapper process.
fn enter_netns_on_exec(cmd: &mut Process, ns: &Path) -> Result<(), CniError> {
    let fd: OwnedFd = std::fs::File::open(ns)
        .map_err(|e| CniError::io(format!("failed to open network namespace {}: {e}", ns.display())))?
        .into();
    netsvc_core::spawn::enter_netns_on_exec(cmd, Ok(fd));
    Ok(())
}
