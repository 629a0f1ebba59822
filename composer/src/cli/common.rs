//! Arguments several subcommands share, declared once.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use netsvc_core::store::{FileStore, open};

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

/// `--state-dir DIR`: the store to read.
#[derive(Debug, Args)]
pub struct StateDirArg {
    /// The state dir (default: NETSVC_STATE_DIR, else /var/lib/netsvc).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

impl StateDirArg {
    pub fn open(&self) -> anyhow::Result<FileStore> {
        Ok(open(self.state_dir.as_deref().and_then(|p| p.to_str()))?)
    }
}

/// `--format text|json` of the reporting subcommands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}
