//! Documents that do not parse are moved aside to `<state>/quarantine/`, so
//! one truncated file costs one key rather than failing every list of its
//! prefix (and with it every ADD and DEL on its network).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{
    Event, EventKind, FileStore, Revision, StoreError, StoredDoc, create_dirs, open_nofollow, read_nofollow, sync_dir,
};

/// The folder under the state dir.
const DIR: &str = "quarantine";
/// Longest file name (NAME_MAX).
const NAME_MAX: usize = 255;

/// A document that did not parse, as it lies in the quarantine folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuarantinedDoc {
    pub path: PathBuf,
    /// Its key (ending in `…` when the key was too long for a file name).
    pub key: String,
    /// The store revision that recorded it gone (a delete event).
    pub revision: Revision,
    /// Why it does not parse.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

impl FileStore {
    /// Every quarantined document, oldest first.
    pub fn quarantined(&self) -> Vec<QuarantinedDoc> {
        let dir = self.root.join(DIR);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot list quarantined documents");
                return Vec::new();
            }
        };
        let mut out: Vec<QuarantinedDoc> = entries
            .flatten()
            .filter_map(|entry| {
                let (key, revision) = parse_name(entry.file_name().to_str()?)?;
                let path = entry.path();
                // Read again rather than kept beside it: one file per document.
                let why = match read_nofollow(&path) {
                    Ok(bytes) => serde_json::from_slice::<StoredDoc>(&bytes).err().map(|e| e.to_string()),
                    Err(e) => Some(e.to_string()),
                };
                Some(QuarantinedDoc {
                    path,
                    key,
                    revision,
                    why,
                })
            })
            .collect();
        out.sort_by_key(|q| q.revision);
        out
    }

    /// Moves `key`'s document at `path` aside and records it gone. Runs
    /// under the store lock.
    pub(super) fn quarantine(&self, key: &str, path: &Path, why: &str) -> Result<(), StoreError> {
        let dir = self.root.join(DIR);
        create_dirs(&dir)?;
        let revision = self.current_revision()? + 1;
        let target = dir.join(file_name(key, revision));
        // Logged before the move, like every removal: watchers learn the key
        // is gone, and a crash in between leaves only a spurious event.
        self.append_events(&[Event {
            kind: EventKind::Delete,
            key: key.to_string(),
            revision,
        }])?;
        fs::rename(path, &target).map_err(|e| StoreError::io(path, e))?;
        // Private like every file here, whoever wrote it (the fd: no link followed).
        open_nofollow(fs::OpenOptions::new().read(true), &target)?
            .set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(|e| StoreError::io(&target, e))?;
        sync_dir(&dir)?;
        if let Some(parent) = path.parent() {
            sync_dir(parent)?;
            self.prune_empty_dirs(parent);
        }
        tracing::warn!(
            path = %path.display(),
            quarantine = %target.display(),
            key,
            why,
            "store document does not parse: moved to quarantine, the key now reads as absent"
        );
        Ok(())
    }
}

/// `<key>.<revision>.json` with `/` written `%` and `%` written `%.` (no
/// segment starts with `.`, so `%.` never stands for `/.`). A key too long
/// for one file name is cut and ends in a lone `%` (a key never ends in `/`).
fn file_name(key: &str, revision: Revision) -> String {
    let suffix = format!(".{revision}.json");
    let mut name = String::new();
    let mut buf = [0u8; 4];
    for c in key.chars() {
        let piece: &str = match c {
            '/' => "%",
            '%' => "%.",
            c => c.encode_utf8(&mut buf),
        };
        // One byte kept for the cut mark.
        if name.len() + piece.len() + 1 + suffix.len() > NAME_MAX {
            name.push('%');
            break;
        }
        name.push_str(piece);
    }
    name + &suffix
}

/// The key and revision a quarantine file name holds.
fn parse_name(name: &str) -> Option<(String, Revision)> {
    let (encoded, revision) = name.strip_suffix(".json")?.rsplit_once('.')?;
    let revision = revision.parse().ok()?;
    let mut key = String::new();
    let mut chars = encoded.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('%', Some('.')) => {
                chars.next();
                key.push('%');
            }
            ('%', None) => key.push('…'),
            ('%', Some(_)) => key.push('/'),
            (c, _) => key.push(c),
        }
    }
    Some((key, revision))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_the_key() {
        for key in [
            "networks/n1/endpoints/c1:eth0",
            "a%/b",
            "a/%b",
            "a%",
            "%a/b%%c.d/e",
            "x.y/z",
        ] {
            let name = file_name(key, 42);
            assert!(!name.contains('/'), "{name}");
            assert_eq!(parse_name(&name), Some((key.to_string(), 42)), "{name}");
        }
        assert_eq!(
            file_name("networks/n1/endpoints/a", 7),
            "networks%n1%endpoints%a.7.json"
        );
    }

    #[test]
    fn a_long_key_is_cut_and_marked() {
        let key = ["s".repeat(200), "t".repeat(200)].join("/");
        let name = file_name(&key, 123);
        assert!(name.len() <= NAME_MAX, "{}", name.len());
        let (cut, revision) = parse_name(&name).expect("parses");
        assert_eq!(revision, 123);
        assert!(
            cut.ends_with('…') && key.starts_with(cut.trim_end_matches('…')),
            "{cut}"
        );
    }
}
