//! `netsvc exec`: a CNI runtime on the command line, libcni's behaviour.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use netsvc_core::cni::{Attachment, CniArgs, NetConfList};
use serde_json::{Map, Value};

use crate::runtime::{Invoker, Runtime, RuntimeConf, RuntimeError};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Op {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Example: netsvc exec add /etc/cni/net.d/shop.conflist /var/run/netns/web --args 'IgnoreUnknown=1;NETSVC_NAME=web;NETSVC_LABELS=tier:web'"
)]
pub struct ExecArgs {
    #[arg(value_enum)]
    op: Op,
    /// The conflist to run.
    conflist: PathBuf,
    /// The container's network namespace (ADD and CHECK need it; DEL may omit it).
    netns: Option<PathBuf>,
    /// The container-side interface name.
    #[arg(long, default_value = "eth0")]
    ifname: String,
    /// Container id (default: derived from the netns path).
    #[arg(long)]
    container_id: Option<String>,
    /// CNI_ARGS, as `K=V;K2=V2`.
    #[arg(long, default_value = "")]
    args: String,
    /// Capability arguments as a JSON object, e.g. '{"portMappings":[...]}'.
    #[arg(long)]
    cap_args: Option<String>,
    /// Plugin directories, `:`-separated (default: this binary's directory, /opt/cni/bin, /usr/lib/cni).
    #[arg(long)]
    cni_path: Option<String>,
    /// Where results are cached (as libcni: `<dir>/results`).
    #[arg(long, default_value = "/var/lib/cni")]
    cache_dir: PathBuf,
    /// GC: attachments to keep, as CONTAINERID/IFNAME (default: every cached attachment).
    #[arg(long = "valid")]
    valid: Vec<String>,
}

pub fn run(a: ExecArgs) -> anyhow::Result<i32> {
    let bytes = std::fs::read(&a.conflist).with_context(|| format!("reading {}", a.conflist.display()))?;
    let list = match NetConfList::parse(&bytes) {
        Ok(l) => l,
        Err(e) => return Ok(report(&RuntimeError::Runtime(e), "1.1.0")),
    };
    let runtime = Runtime::new(
        Invoker {
            cni_path: cni_path(a.cni_path.as_deref()),
            ..Default::default()
        },
        &a.cache_dir,
    );
    let rt = match a.op {
        Op::Add | Op::Del | Op::Check => runtime_conf(&a)?,
        Op::Gc | Op::Status | Op::Version => RuntimeConf::default(),
    };
    let version = list.cni_version.clone();
    let result = match a.op {
        Op::Add => match runtime.add(&list, &rt) {
            Ok(result) => {
                println!("{}", serde_json::to_string_pretty(&result)?);
                Ok(())
            }
            Err(e) => {
                // As a runtime does after a failed ADD: DEL what was half-made.
                if let Err(del) = runtime.del(&list, &rt) {
                    eprintln!("netsvc exec: cleanup after failed ADD also failed: {del}");
                }
                Err(e)
            }
        },
        Op::Del => runtime.del(&list, &rt),
        Op::Check => runtime.check(&list, &rt),
        Op::Status => runtime.status(&list),
        Op::Gc => gc(&runtime, &list, &a.valid),
        Op::Version => versions(&runtime, &list),
    };
    Ok(match result {
        Ok(()) => 0,
        Err(e) => report(&e, &version),
    })
}

/// Shows a failure the way a CNI error reads: JSON on stdout, a line on stderr.
fn report(e: &RuntimeError, version: &str) -> i32 {
    eprintln!("netsvc exec: {e}");
    println!(
        "{}",
        serde_json::to_string_pretty(&e.cni().to_json(version)).unwrap_or_default()
    );
    1
}

fn gc(runtime: &Runtime, list: &NetConfList, valid: &[String]) -> Result<(), RuntimeError> {
    let keep: Vec<Attachment> = if valid.is_empty() {
        runtime
            .cached(&list.name)?
            .into_iter()
            .map(|c| Attachment {
                container_id: c.container_id,
                ifname: c.if_name,
            })
            .collect()
    } else {
        let mut keep = Vec::new();
        for v in valid {
            let (id, ifname) = v.split_once('/').ok_or_else(|| {
                netsvc_core::cni::CniError::invalid_config("--valid", format!("{v:?} is not CONTAINERID/IFNAME"))
            })?;
            keep.push(Attachment {
                container_id: id.into(),
                ifname: ifname.into(),
            });
        }
        keep
    };
    runtime.gc(list, &keep)
}

fn versions(runtime: &Runtime, list: &NetConfList) -> Result<(), RuntimeError> {
    let mut plugins = Map::new();
    for i in 0..list.plugins.len() {
        let t = list.plugin_type(i).to_string();
        let v = runtime.version_of(&t)?;
        plugins.insert(t, Value::from(v));
    }
    let out = serde_json::json!({"network": list.name, "cniVersion": runtime.negotiate(list)?, "plugins": plugins});
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(())
}

fn runtime_conf(a: &ExecArgs) -> anyhow::Result<RuntimeConf> {
    let args = CniArgs::parse(&a.args).map_err(|e| anyhow::anyhow!("--args: {e}"))?;
    let cap_args = match &a.cap_args {
        Some(s) => serde_json::from_str::<Map<String, Value>>(s).context("--cap-args must be a JSON object")?,
        None => Map::new(),
    };
    let container_id = match (&a.container_id, &a.netns) {
        (Some(id), _) => id.clone(),
        (None, Some(ns)) => container_id_from(ns),
        (None, None) => anyhow::bail!("--container-id is needed when no netns path is given"),
    };
    Ok(RuntimeConf {
        container_id,
        netns: a.netns.clone(),
        ifname: a.ifname.clone(),
        args: args.0,
        cap_args,
    })
}

/// A container id from a netns path: its file name, kept to the id charset.
pub fn container_id_from(netns: &Path) -> String {
    let base = netns
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let id: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    match id.chars().next() {
        Some(c) if c.is_ascii_alphanumeric() => id,
        _ => format!("ns{id}"),
    }
}

/// `--cni-path`, or this binary's directory, /opt/cni/bin and /usr/lib/cni.
fn cni_path(given: Option<&str>) -> Vec<PathBuf> {
    if let Some(p) = given {
        return std::env::split_paths(p).collect();
    }
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(dir);
    }
    dirs.extend(["/opt/cni/bin", "/usr/lib/cni"].map(PathBuf::from));
    dirs
}
