//! Arguments several subcommands share, declared once.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use netsvc_core::node::NodeName;
use netsvc_core::store::{StoreHandle, open_with};
use serde::Serialize;

use crate::catalog::{Catalog, DEFAULT_DIR};

/// `--catalog DIR`: descriptors added to the built-in catalog.
#[derive(Debug, Args)]
pub struct CatalogArg {
    /// Also read plugin descriptors (JSON, one per file) from this folder.
    #[arg(long, default_value = DEFAULT_DIR)]
    pub catalog: PathBuf,
}

impl CatalogArg {
    /// The built-in catalog with the folder's descriptors.
    pub fn load(&self) -> Result<Catalog, netsvc_core::cni::CniError> {
        Catalog::builtin().with_dir(&self.catalog)
    }
}

/// `--state-dir DIR [--store JSON]`: the store to read.
#[derive(Debug, Args)]
pub struct StateDirArg {
    /// The state dir (default: NETSVC_STATE_DIR, else /run/netsvc).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// The store, as a conflist's `store` object, e.g.
    /// '{"type":"etcd","endpoints":["http://10.0.0.1:2379"]}' (default:
    /// NETSVC_STORE, else the file store in the state dir).
    #[arg(long)]
    pub store: Option<String>,
}

impl StateDirArg {
    pub fn open(&self) -> anyhow::Result<StoreHandle> {
        let store = match &self.store {
            Some(text) => {
                Some(serde_json::from_str::<serde_json::Value>(text).map_err(|e| anyhow::anyhow!("--store: {e}"))?)
            }
            None => None,
        };
        Ok(open_with(
            self.state_dir.as_deref().and_then(|p| p.to_str()),
            store.as_ref(),
        )?)
    }
}

/// This node's name for the subcommands that act on this node's records:
/// `NETSVC_NODE_NAME`, else the host name (an error when neither can be had).
pub fn this_node() -> anyhow::Result<NodeName> {
    Ok(NodeName::from_env(None)?)
}

/// `--format text|json` of the reporting subcommands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// What a status report reads and how it prints: `[--network N] [--format
/// text|json] [--state-dir DIR]`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Only this network.
    #[arg(long)]
    pub network: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    #[command(flatten)]
    pub store: StateDirArg,
}

impl ReportArgs {
    /// Collects the report from the store and prints it as asked.
    pub fn print<T: Serialize>(
        &self,
        collect: impl FnOnce(&StoreHandle, &NodeName, Option<&str>) -> anyhow::Result<T>,
        render: impl FnOnce(&T) -> String,
    ) -> anyhow::Result<i32> {
        let report = collect(&self.store.open()?, &this_node()?, self.network.as_deref())?;
        match self.format {
            Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
            Format::Text => print!("{}", render(&report)),
        }
        Ok(0)
    }
}
