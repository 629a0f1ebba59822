//! The result cache: the final ADD result of each attachment, which CHECK and
//! DEL hand to the plugins as `prevResult`. One 0600 file per attachment under
//! `<dir>/results/<network>-<container>-<ifname>`, as libcni keeps it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use netsvc_core::cni::CniError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What the cache remembers of one attachment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedAttachment {
    pub kind: String,
    pub network_name: String,
    #[serde(rename = "containerId")]
    pub container_id: String,
    pub if_name: String,
    #[serde(default)]
    pub netns: String,
    #[serde(default)]
    pub cni_args: Vec<(String, String)>,
    #[serde(default)]
    pub capability_args: Map<String, Value>,
    pub result: Value,
}

pub const CACHE_KIND: &str = "cniCacheV1";

#[derive(Debug, Clone)]
pub struct ResultCache {
    dir: PathBuf,
}

impl ResultCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ResultCache { dir: dir.into() }
    }

    fn results_dir(&self) -> PathBuf {
        self.dir.join("results")
    }

    fn path(&self, network: &str, container_id: &str, ifname: &str) -> PathBuf {
        self.results_dir().join(format!("{network}-{container_id}-{ifname}"))
    }

    pub fn get(&self, network: &str, container_id: &str, ifname: &str) -> Result<Option<CachedAttachment>, CniError> {
        match fs::read(self.path(network, container_id, ifname)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| CniError::decode(format!("failed to decode cached result: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CniError::io(format!("failed to read cached result: {e}"))),
        }
    }

    /// Writes atomically (temp file, fsync, rename) with mode 0600.
    pub fn put(&self, entry: &CachedAttachment) -> Result<(), CniError> {
        let dir = self.results_dir();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| CniError::io(format!("failed to create {}: {e}", dir.display())))?;
        let path = self.path(&entry.network_name, &entry.container_id, &entry.if_name);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let bytes = serde_json::to_vec(entry).map_err(|e| CniError::io(e.to_string()))?;
        let write = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            CniError::io(format!("failed to write cached result {}: {e}", path.display()))
        })
    }

    pub fn delete(&self, network: &str, container_id: &str, ifname: &str) -> Result<(), CniError> {
        match fs::remove_file(self.path(network, container_id, ifname)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(CniError::io(format!("failed to remove cached result: {e}")))
            }
            _ => Ok(()),
        }
    }

    /// Every cached attachment of `network`.
    pub fn list(&self, network: &str) -> Result<Vec<CachedAttachment>, CniError> {
        let entries = match fs::read_dir(self.results_dir()) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(CniError::io(format!("failed to list result cache: {e}"))),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let Ok(bytes) = fs::read(entry.path()) else { continue };
            if let Ok(c) = serde_json::from_slice::<CachedAttachment>(&bytes)
                && c.network_name == network
            {
                out.push(c);
            }
        }
        out.sort_by(|a, b| (&a.container_id, &a.if_name).cmp(&(&b.container_id, &b.if_name)));
        Ok(out)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
