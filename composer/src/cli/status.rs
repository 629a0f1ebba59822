//! `netsvc status`: networks, endpoints, services and backends, policies,
//! shaping, VPN peers, as the store holds them (never a private key).

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use netsvc_core::store::open;

use crate::status::{collect, render};

#[derive(Debug, Args)]
#[command(after_help = "Example: netsvc status --network shop --format json")]
pub struct StatusArgs {
    /// Only this network.
    #[arg(long)]
    network: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// The state dir (default: NETSVC_STATE_DIR, else /var/lib/netsvc).
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

pub fn run(a: StatusArgs) -> anyhow::Result<i32> {
    let store = open(a.state_dir.as_deref().and_then(|p| p.to_str()))?;
    let networks = collect(&store, a.network.as_deref())?;
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&networks)?),
        Format::Text => print!("{}", render(&networks)),
    }
    Ok(0)
}
