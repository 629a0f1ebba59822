//! `netsvc dns`: the node's view of the resolver. `query` answers a name as
//! the node sees it (every network's names, which no single container
//! does), so the host can find a container by name; `flush` empties the
//! cache of upstream answers.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use netsvc_dns::daemon::{Paths, control};

/// How long the daemon gets to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
#[command(after_help = "Example: netsvc dns query web.app.internal")]
pub struct DnsArgs {
    /// The state dir the daemon serves (default: NETSVC_STATE_DIR, else /run/netsvc).
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: DnsCmd,
}

#[derive(Debug, Subcommand)]
enum DnsCmd {
    /// A name as the node sees it: its records, one per line (exit 1 when it has none).
    #[command(after_help = "Example: netsvc dns query web.app.internal --type AAAA")]
    Query {
        name: String,
        /// The record type: A, AAAA, PTR, SRV, SOA, NS or ANY.
        #[arg(long = "type", default_value = "A")]
        qtype: String,
    },
    /// Empty the daemon's cache of upstream answers.
    #[command(after_help = "Example: netsvc dns flush")]
    Flush,
}

pub fn run(a: DnsArgs) -> anyhow::Result<i32> {
    let dir = netsvc_core::store::resolve_state_dir(
        a.state_dir.as_deref().and_then(|p| p.to_str()),
        std::env::var(netsvc_core::store::STATE_DIR_ENV).ok().as_deref(),
    )?;
    let socket = Paths::new(&dir).control();
    let asked = |what: &str| format!("cannot ask the DNS daemon behind {} ({what})", socket.display());
    match a.command {
        DnsCmd::Query { name, qtype } => {
            let answer = control::query(&socket, &name, &qtype, TIMEOUT)
                .with_context(|| asked("is netsvc-dns in use on this node?"))?;
            let answer = match answer {
                Ok(a) => a,
                Err(why) => bail!("{why}"),
            };
            for line in &answer.answers {
                println!("{line}");
            }
            if answer.answers.is_empty() {
                eprintln!("{name}: {}", answer.status);
                return Ok(1);
            }
            Ok(0)
        }
        DnsCmd::Flush => {
            let n = control::flush(&socket, TIMEOUT).with_context(|| asked("flush"))?;
            match n {
                Ok(n) => println!("{n} answers flushed"),
                Err(why) => bail!("{why}"),
            }
            Ok(0)
        }
    }
}
