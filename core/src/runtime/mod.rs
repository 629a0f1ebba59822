//! The plugin process: read env and stdin, validate, dispatch to a
//! [`Plugin`], print the result or a CNI error. VERSION is answered here; a
//! DEL the store cannot take is queued ([`pending`]) for the agent.
//! The top layer of the core: it may use every other.

use std::io::{Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};

use serde_json::{Value, json};

use crate::cni::version::{self, LATEST, Version};
use crate::cni::{Call, Cause, CniError, Command, Env, NetConf, PANIC_CODE, Plugin, Result};
use crate::node::NodeName;

pub mod pending;

/// What a call prints and how the process exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: Vec<u8>,
    pub exit_code: i32,
}

/// Runs one call to completion without touching the process: `env` looks up
/// `CNI_*` variables, `stdin` is the config. Panics become code [`PANIC_CODE`].
pub fn dispatch<P: Plugin + ?Sized>(plugin: &P, env: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Outcome {
    // Parsed once (a config can be large: a service's whole settings).
    let raw = serde_json::from_slice::<Value>(stdin)
        .map_err(|e| CniError::decode(format!("failed to decode network config: {e}")));
    // The version errors are written in: the config's when it can be read.
    let stdin_version = raw
        .as_ref()
        .ok()
        .and_then(|v| v.get("cniVersion").and_then(Value::as_str).map(str::to_string))
        .filter(|v| Version::parse(v).is_ok() && !v.is_empty())
        .unwrap_or_else(|| LATEST.to_string());

    let outcome = catch_unwind(AssertUnwindSafe(|| handle(plugin, &env, raw, &stdin_version)));
    match outcome {
        Ok(Ok(Some(v))) => Outcome {
            stdout: to_line(&v),
            exit_code: 0,
        },
        Ok(Ok(None)) => Outcome {
            stdout: Vec::new(),
            exit_code: 0,
        },
        Ok(Err(e)) => Outcome {
            stdout: to_line(&e.to_json(&stdin_version)),
            exit_code: 1,
        },
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            let e = CniError::plugin(PANIC_CODE, "plugin failed unexpectedly").with_details(what);
            Outcome {
                stdout: to_line(&e.to_json(&stdin_version)),
                exit_code: 1,
            }
        }
    }
}

fn handle<P: Plugin + ?Sized>(
    plugin: &P,
    env: &dyn Fn(&str) -> Option<String>,
    raw: Result<Value>,
    stdin_version: &str,
) -> Result<Option<Value>> {
    let lookup = env;
    let env = Env::from_lookup(lookup)?;
    if env.command == Command::Version {
        return Ok(Some(json!({
            "cniVersion": stdin_version,
            "supportedVersions": plugin.supported_versions(),
        })));
    }
    let conf = NetConf::from_owned(raw?)?;
    let ver = version::require_supported(&conf.cni_version, plugin.supported_versions())?;
    let needs = match env.command {
        Command::Check => Some(Version::V0_4_0),
        Command::Gc | Command::Status => Some(Version::V1_1_0),
        _ => None,
    };
    if let Some(min) = needs
        && ver < min
    {
        return Err(CniError::incompatible_version(format!(
            "config version {} does not allow {} (needs {min} or later)",
            conf.cni_version,
            env.command.as_str()
        )));
    }
    let node = NodeName::resolve(None, lookup)?;
    let call = Call { env, conf, node };
    tracing::debug!(command = call.env.command.as_str(), container = %call.env.container_id, "call");
    match call.env.command {
        Command::Add => {
            let result = plugin.add(&call)?;
            Ok(Some(result.to_value(&call.conf.cni_version)?))
        }
        // DEL must succeed: with the store away it is queued for the agent.
        Command::Del => match plugin.del(&call) {
            Err(e) if e.cause == Some(Cause::StoreUnavailable) => pending::queue(&call).map(|()| None),
            other => other.map(|()| None),
        },
        Command::Check => plugin.check(&call).map(|_| None),
        Command::Gc => plugin.gc(&call).map(|_| None),
        Command::Status => plugin.status(&call).map(|_| None),
        Command::Version => unreachable!("answered above"),
    }
}

fn to_line(v: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec(v).unwrap_or_default();
    out.push(b'\n');
    out
}

/// The whole life of a plugin process: logging to stderr, one call, exit.
pub fn run<P: Plugin>(plugin: P) -> ! {
    init_logging();
    // The default hook prints to stderr, but with a backtrace hint; keep it to one line.
    std::panic::set_hook(Box::new(|info| {
        tracing::error!("plugin panicked: {info}");
    }));
    let mut stdin = Vec::new();
    let code = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => {
            let out = dispatch(&plugin, |k| std::env::var(k).ok(), &stdin);
            let mut stdout = std::io::stdout().lock();
            if stdout.write_all(&out.stdout).and_then(|_| stdout.flush()).is_err() {
                2
            } else {
                out.exit_code
            }
        }
        Err(e) => {
            let err = CniError::io(format!("failed to read stdin: {e}"));
            let _ = std::io::stdout().write_all(&to_line(&err.to_json(LATEST)));
            1
        }
    };
    // Answered: what is left of the exit the runtime need not wait for.
    if let Some(settle) = socket_handoff(|k| std::env::var(k).ok()) {
        crate::nft::hand_off_sockets(settle);
    }
    std::process::exit(code)
}

/// Logs go to stderr (never stdout, which carries the result); `NETSVC_LOG`
/// Whether (and how long after its exit) a plugin hands its nf_tables
/// sockets to a child: `off` releases them at exit (the runtime then waits
/// for the kernel's grace period), a number of milliseconds keeps them that
/// long; unset or unreadable, [`crate::nft::SETTLE`].
pub const SOCKET_HANDOFF_ENV: &str = "NETSVC_SOCKET_HANDOFF";

fn socket_handoff(env: impl Fn(&str) -> Option<String>) -> Option<std::time::Duration> {
    match env(SOCKET_HANDOFF_ENV).as_deref().map(str::trim) {
        Some("off") => None,
        Some(ms) => Some(ms.parse().map_or(crate::nft::SETTLE, std::time::Duration::from_millis)),
        None => Some(crate::nft::SETTLE),
    }
}

/// sets the filter (default `warn`).
pub fn init_logging() {
    let fmt = tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(false);
    // Without NETSVC_LOG no filter is parsed: a plugin's start-up is on the runtime's clock.
    let _ = match std::env::var_os("NETSVC_LOG") {
        Some(_) => fmt
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("NETSVC_LOG")
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .try_init(),
        None => fmt.with_max_level(tracing::Level::WARN).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_handoff_is_on_by_default_and_can_be_switched_off() {
        let env = |v: &'static str| move |k: &str| (k == SOCKET_HANDOFF_ENV).then(|| v.to_string());
        assert_eq!(socket_handoff(|_| None), Some(crate::nft::SETTLE));
        assert_eq!(socket_handoff(env("off")), None);
        assert_eq!(
            socket_handoff(env("2500")),
            Some(std::time::Duration::from_millis(2500))
        );
        assert_eq!(socket_handoff(env("soon")), Some(crate::nft::SETTLE));
    }
}
