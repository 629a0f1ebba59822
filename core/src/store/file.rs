//! The embedded file store: one JSON document per key under the state dir.
//!
//! Layout (dir 0700, files 0600):
//! - `kv/<seg>/<seg>.json`: `{"revision": N, "value": ...}` per key
//! - `changes.log`: one [`Event`] per line; its last event is the store revision
//! - `.compacted`: revision up to which the change log was trimmed
//! - `.store.lock`: held (flock) for the few milliseconds of each mutation
//! - `locks/<network>.lock`: the per-network locks
//! - `quarantine/`: documents that did not parse, moved aside
//!
//! A mutation appends its event to the log (fsync) before renaming the
//! document into place, so a crash can leave a spurious event (harmless: events
//! are hints) but never a missed one, and revisions never repeat.
//!
//! The state dir must be ours alone (owned by the effective uid, not
//! writable by group or others, not a symbolic link), and no file in it is
//! opened through a symbolic link: whoever can write there decides what the
//! kernel allows.

mod quarantine;

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::fsutil::{
    atomic_write, create_dirs, flock_with_timeout, is_absent, network_flock, network_note, open_nofollow,
    read_nofollow, shared_flock_with_timeout, sync_dir, unsafe_state_dir,
};
use super::key::{validate_key, validate_segment};
use super::{Change, Entry, Event, EventKind, Lease, LeaseHolder, LockGuard, Revision, Store, StoreError};
pub use quarantine::QuarantinedDoc;

/// Where state lives when neither the config nor the environment says. The
/// store records this boot's containers and the kernel state made for them,
/// which a reboot ends alike, so it lives where the boot's runtime state does
/// (a tmpfs on every usual distribution, as Cilium keeps its endpoint state):
/// a stale record can never outlive what it describes, and the fsyncs of
/// [`atomic_write`] cost nothing there.
pub const DEFAULT_STATE_DIR: &str = "/run/netsvc";
/// Environment variable overriding the state dir (after the config's `stateDir`).
pub const STATE_DIR_ENV: &str = "NETSVC_STATE_DIR";

/// Log length that triggers compaction, and how many events compaction keeps.
const MAX_LOG_EVENTS: usize = 20_000;
const KEEP_LOG_EVENTS: usize = 10_000;
/// How long a mutation waits for the store-wide lock before giving up.
const STORE_LOCK_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a watch looks at the log's tail.
const WATCH_POLL: Duration = Duration::from_millis(20);

/// The state dir: the config's `stateDir` if given, else `$NETSVC_STATE_DIR`
/// if set and non-empty, else [`DEFAULT_STATE_DIR`]. Must be absolute and,
/// when it exists, a folder of the effective uid that group and others
/// cannot write (nor a symbolic link).
pub fn resolve_state_dir(config: Option<&str>, env: Option<&str>) -> Result<PathBuf, StoreError> {
    let (raw, source) = match (config, env) {
        (Some(c), _) => (c, "stateDir"),
        (None, Some(e)) if !e.is_empty() => (e, STATE_DIR_ENV),
        _ => (DEFAULT_STATE_DIR, "default"),
    };
    let bad = |why: &str| StoreError::InvalidStateDir {
        path: raw.to_string(),
        why: format!("{why} (from {source})"),
    };
    if raw.is_empty() {
        return Err(bad("empty path"));
    }
    if raw.contains('\0') {
        return Err(bad("contains NUL"));
    }
    let path = PathBuf::from(raw);
    if !path.is_absolute() {
        return Err(bad("not an absolute path"));
    }
    if path.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(bad("contains '..'"));
    }
    if let Some(why) = unsafe_state_dir(&path)? {
        return Err(bad(&why));
    }
    Ok(path)
}

/// The embedded store. Cheap to open; safe to use from many processes.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
}

impl FileStore {
    /// Opens (creating, mode 0700) the store rooted at `root`. Refuses
    /// ([`StoreError::InvalidStateDir`]) a root that is a symbolic link, not
    /// owned by the effective uid, or writable by group or others.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        let refuse = |why: String| StoreError::InvalidStateDir {
            path: root.display().to_string(),
            why,
        };
        if fs::symlink_metadata(&root).is_err() {
            create_dirs(&root)?;
            // Explicit chmod: the umask might have been stricter, never looser, but be sure.
            fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).map_err(|e| StoreError::io(&root, e))?;
        }
        // Also after creating it: someone may have been first.
        if let Some(why) = unsafe_state_dir(&root)? {
            return Err(refuse(why));
        }
        if let Ok(meta) = fs::symlink_metadata(&root)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(dir = %root.display(), "state dir is readable by group/others");
        }
        create_dirs(&root.join("kv"))?;
        create_dirs(&root.join("locks"))?;
        Ok(FileStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn doc_path(&self, key: &str) -> Result<PathBuf, StoreError> {
        let segments = validate_key(key)?;
        let mut path = self.root.join("kv");
        let (last, dirs) = segments
            .split_last()
            .ok_or_else(|| StoreError::invalid_key(key, "empty"))?;
        for s in dirs {
            path.push(s);
        }
        path.push(format!("{last}.json"));
        Ok(path)
    }

    fn log_path(&self) -> PathBuf {
        self.root.join("changes.log")
    }

    /// The document at `path`, without the store lock. One that does not
    /// parse is quarantined (under the lock) and reads as absent.
    fn read_doc(&self, key: &str, path: &Path) -> Result<Option<Entry>, StoreError> {
        match load_doc(key, path)? {
            Loaded::Doc(entry) => Ok(entry),
            Loaded::Unparsable(_) => {
                let _guard = self.lock()?;
                // Again under the lock: a writer may have replaced it, or
                // another reader quarantined it, meanwhile.
                self.read_doc_locked(key, path)
            }
        }
    }

    /// [`Self::read_doc`] for a caller that holds the store lock.
    fn read_doc_locked(&self, key: &str, path: &Path) -> Result<Option<Entry>, StoreError> {
        match load_doc(key, path)? {
            Loaded::Doc(entry) => Ok(entry),
            Loaded::Unparsable(why) => {
                self.quarantine(key, path, &why)?;
                Ok(None)
            }
        }
    }

    /// The store-wide lock every mutation holds.
    fn lock(&self) -> Result<nix::fcntl::Flock<fs::File>, StoreError> {
        flock_with_timeout(&self.store_lock_path(), STORE_LOCK_TIMEOUT, "store")
    }

    fn store_lock_path(&self) -> PathBuf {
        self.root.join(".store.lock")
    }

    /// The log with no write in progress. A write logs its event before it
    /// writes the document, so a reader that saw revision R unlocked could
    /// read the documents as they were before R.
    fn settled_log<T>(&self, read: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        let _guard = shared_flock_with_timeout(&self.store_lock_path(), STORE_LOCK_TIMEOUT, "store")?;
        read()
    }

    /// Appends events (one write, one fsync) and compacts the log when it
    /// grows too long.
    fn append_events(&self, events: &[Event]) -> Result<(), StoreError> {
        let path = self.log_path();
        let mut file = open_nofollow(
            OpenOptions::new().create(true).append(true).read(true).mode(0o600),
            &path,
        )?;
        let mut lines = Vec::new();
        for event in events {
            lines.extend(serde_json::to_vec(event)?);
            lines.push(b'\n');
        }
        // A writer killed mid-append leaves a partial line; end it so ours parses.
        let len = file.metadata().map_err(|e| StoreError::io(&path, e))?.len();
        if len > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1))
                .map_err(|e| StoreError::io(&path, e))?;
            file.read_exact(&mut last).map_err(|e| StoreError::io(&path, e))?;
            if last[0] != b'\n' {
                lines.insert(0, b'\n');
            }
        }
        file.write_all(&lines).map_err(|e| StoreError::io(&path, e))?;
        file.sync_data().map_err(|e| StoreError::io(&path, e))?;
        if events.iter().any(|e| e.revision.is_multiple_of(1000)) {
            self.maybe_compact()?;
        }
        Ok(())
    }

    fn maybe_compact(&self) -> Result<(), StoreError> {
        let events = self.read_log()?;
        if events.len() <= MAX_LOG_EVENTS {
            return Ok(());
        }
        let cut = events.len() - KEEP_LOG_EVENTS;
        let compacted = events[cut - 1].revision;
        // Record the horizon first: a crash in between only makes it conservative.
        atomic_write(&self.root.join(".compacted"), compacted.to_string().as_bytes())?;
        let mut body = Vec::new();
        for e in &events[cut..] {
            body.extend(serde_json::to_vec(e)?);
            body.push(b'\n');
        }
        atomic_write(&self.log_path(), &body)
    }

    fn compacted(&self) -> Result<Revision, StoreError> {
        let path = self.root.join(".compacted");
        match read_nofollow(&path) {
            Ok(s) => String::from_utf8_lossy(&s)
                .trim()
                .parse()
                .map_err(|e| StoreError::Corrupt {
                    path: path.display().to_string(),
                    why: format!("{e}"),
                }),
            Err(e) if is_absent(&e) => Ok(0),
            Err(e) => Err(e),
        }
    }

    fn read_log(&self) -> Result<Vec<Event>, StoreError> {
        let text = match read_nofollow(&self.log_path()) {
            Ok(b) => b,
            Err(e) if is_absent(&e) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        // Torn lines (a writer killed mid-append) are skipped.
        Ok(text
            .split(|b| *b == b'\n')
            .filter_map(|l| serde_json::from_slice::<Event>(l).ok())
            .collect())
    }

    /// The last revision in the log (reads only its tail), or the compaction horizon.
    fn current_revision(&self) -> Result<Revision, StoreError> {
        let path = self.log_path();
        let base = self.compacted()?;
        let mut file = match open_nofollow(OpenOptions::new().read(true), &path) {
            Ok(f) => f,
            Err(e) if is_absent(&e) => return Ok(base),
            Err(e) => return Err(e),
        };
        let len = file.metadata().map_err(|e| StoreError::io(&path, e))?.len();
        // Lines are bounded by the key length, so the tail holds the last whole one.
        let start = len.saturating_sub(8192);
        file.seek(SeekFrom::Start(start))
            .map_err(|e| StoreError::io(&path, e))?;
        let mut tail = Vec::new();
        file.read_to_end(&mut tail).map_err(|e| StoreError::io(&path, e))?;
        let last = tail
            .split(|b| *b == b'\n')
            .rev()
            .find_map(|l| serde_json::from_slice::<Event>(l).ok())
            .map(|e| e.revision);
        Ok(last.unwrap_or(0).max(base))
    }

    fn write_doc(&self, key: &str, path: &Path, value: &Value, rev: Revision) -> Result<(), StoreError> {
        self.append_events(&[Event {
            kind: EventKind::Put,
            key: key.to_string(),
            revision: rev,
        }])?;
        place_doc(path, value, rev)
    }

    fn remove_doc(&self, key: &str, path: &Path, rev: Revision) -> Result<(), StoreError> {
        self.append_events(&[Event {
            kind: EventKind::Delete,
            key: key.to_string(),
            revision: rev,
        }])?;
        self.drop_doc(path)
    }

    /// Removes a document's file (gone already is fine) and the folders it
    /// leaves empty.
    fn drop_doc(&self, path: &Path) -> Result<(), StoreError> {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(path, e)),
        }
        if let Some(parent) = path.parent() {
            sync_dir(parent)?;
            self.prune_empty_dirs(parent);
        }
        Ok(())
    }

    /// Removes now-empty directories up to `kv/` (best effort; runs under the store lock).
    fn prune_empty_dirs(&self, mut dir: &Path) {
        let kv = self.root.join("kv");
        while dir != kv && dir.starts_with(&kv) {
            if fs::remove_dir(dir).is_err() {
                break;
            }
            match dir.parent() {
                Some(p) => dir = p,
                None => break,
            }
        }
    }

    fn walk(&self, dir: &Path, key_prefix: &str, out: &mut Vec<(String, PathBuf)>) -> Result<(), StoreError> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(());
            }
            Err(e) => return Err(StoreError::io(dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(dir, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') {
                sweep_orphan_temp(&entry.path(), &name);
                continue;
            }
            let path = entry.path();
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if is_dir {
                self.walk(&path, &format!("{key_prefix}{name}/"), out)?;
            } else if let Some(stem) = name.strip_suffix(".json") {
                out.push((format!("{key_prefix}{stem}"), path));
            }
        }
        Ok(())
    }
}

/// Writes a document's file (its folders made as needed).
fn place_doc(path: &Path, value: &Value, rev: Revision) -> Result<(), StoreError> {
    let body = serde_json::to_vec(&StoredDoc {
        revision: rev,
        value: value.clone(),
    })?;
    if let Some(parent) = path.parent() {
        create_dirs(parent)?;
    }
    atomic_write(path, &body)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredDoc {
    revision: Revision,
    value: Value,
}

/// A document file as read: its entry (`None`: absent), or why it does not parse.
enum Loaded {
    Doc(Option<Entry>),
    Unparsable(String),
}

/// Reads a document without following a symbolic link (one in its place is
/// an error: it is no document of ours).
fn load_doc(key: &str, path: &Path) -> Result<Loaded, StoreError> {
    let bytes = match read_nofollow(path) {
        Ok(b) => b,
        Err(e) if is_absent(&e) => return Ok(Loaded::Doc(None)),
        Err(e) => return Err(e),
    };
    Ok(match serde_json::from_slice::<StoredDoc>(&bytes) {
        Ok(doc) => Loaded::Doc(Some(Entry {
            key: key.to_string(),
            value: doc.value,
            revision: doc.revision,
        })),
        Err(e) => Loaded::Unparsable(e.to_string()),
    })
}

/// Removes a temp file (`.tmp.<pid>.<n>.<name>`) whose writer died before
/// renaming it. Listing walks the files anyway, so this costs no extra pass.
fn sweep_orphan_temp(path: &Path, name: &str) {
    let pid = name
        .strip_prefix(".tmp.")
        .and_then(|r| r.split('.').next())
        .and_then(|p| p.parse::<u32>().ok());
    if let Some(pid) = pid
        && !Path::new(&format!("/proc/{pid}")).exists()
    {
        let _ = fs::remove_file(path);
    }
}

impl Store for FileStore {
    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let path = self.doc_path(key)?;
        self.read_doc(key, &path)
    }

    // Each mutation takes the next revision only after reading the key:
    // quarantining it (a document that does not parse) takes one too.

    fn put(&self, key: &str, value: &Value) -> Result<Revision, StoreError> {
        let path = self.doc_path(key)?;
        let _guard = self.lock()?;
        let rev = self.current_revision()? + 1;
        self.write_doc(key, &path, value, rev)?;
        Ok(rev)
    }

    fn compare_and_swap(&self, key: &str, expected: Option<Revision>, value: &Value) -> Result<Revision, StoreError> {
        let path = self.doc_path(key)?;
        let _guard = self.lock()?;
        let actual = self.read_doc_locked(key, &path)?.map(|e| e.revision);
        if actual != expected {
            return Err(StoreError::Conflict {
                key: key.to_string(),
                expected,
                actual,
            });
        }
        let rev = self.current_revision()? + 1;
        self.write_doc(key, &path, value, rev)?;
        Ok(rev)
    }

    fn delete(&self, key: &str) -> Result<Option<Revision>, StoreError> {
        let path = self.doc_path(key)?;
        let _guard = self.lock()?;
        if self.read_doc_locked(key, &path)?.is_none() {
            return Ok(None);
        }
        let rev = self.current_revision()? + 1;
        self.remove_doc(key, &path, rev)?;
        Ok(Some(rev))
    }

    fn compare_and_delete(&self, key: &str, expected: Revision) -> Result<Revision, StoreError> {
        let path = self.doc_path(key)?;
        let _guard = self.lock()?;
        let actual = self.read_doc_locked(key, &path)?.map(|e| e.revision);
        if actual != Some(expected) {
            return Err(StoreError::Conflict {
                key: key.to_string(),
                expected: Some(expected),
                actual,
            });
        }
        let rev = self.current_revision()? + 1;
        self.remove_doc(key, &path, rev)?;
        Ok(rev)
    }

    /// Under the store lock, every key is checked before anything is
    /// written, so a conflict writes nothing. The events go to the log in
    /// one append (one fsync), then the documents are written.
    fn commit(&self, changes: &[Change<'_>]) -> Result<(), StoreError> {
        let changes = changes
            .iter()
            .filter(|w| w.value.is_some() || w.expected.is_some()) // not deleting what was absent
            .map(|w| Ok((w, self.doc_path(w.key)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        if changes.is_empty() {
            return Ok(());
        }
        let _guard = self.lock()?;
        for (w, path) in &changes {
            let actual = self.read_doc_locked(w.key, path)?.map(|e| e.revision);
            if actual != w.expected {
                return Err(StoreError::Conflict {
                    key: w.key.to_string(),
                    expected: w.expected,
                    actual,
                });
            }
        }
        let first = self.current_revision()? + 1;
        let events: Vec<Event> = changes
            .iter()
            .zip(first..)
            .map(|((w, _), revision)| Event {
                kind: if w.value.is_some() {
                    EventKind::Put
                } else {
                    EventKind::Delete
                },
                key: w.key.to_string(),
                revision,
            })
            .collect();
        self.append_events(&events)?;
        for ((w, path), event) in changes.iter().zip(&events) {
            match w.value {
                Some(value) => place_doc(path, value, event.revision)?,
                None => self.drop_doc(path)?,
            }
            crate::failpoint::document_written();
        }
        Ok(())
    }

    fn list(&self, prefix: &str) -> Result<Vec<Entry>, StoreError> {
        // Complete segments of the prefix name a directory; the last may be partial.
        let mut dir = self.root.join("kv");
        let mut key_prefix = String::new();
        let parts: Vec<&str> = prefix.split('/').collect();
        if let Some((_, complete)) = parts.split_last() {
            for s in complete {
                validate_segment(s).map_err(|why| StoreError::invalid_key(prefix, why))?;
                dir.push(s);
                key_prefix.push_str(s);
                key_prefix.push('/');
            }
        }
        let mut found = Vec::new();
        self.walk(&dir, &key_prefix, &mut found)?;
        found.sort();
        let mut out = Vec::new();
        for (key, path) in found.into_iter().filter(|(k, _)| k.starts_with(prefix)) {
            // Deleted since the directory scan: skip.
            if let Some(entry) = self.read_doc(&key, &path)? {
                out.push(entry);
            }
        }
        Ok(out)
    }

    fn revision(&self) -> Result<Revision, StoreError> {
        self.settled_log(|| self.current_revision())
    }

    fn changes_since(&self, prefix: &str, since: Revision) -> Result<Vec<Event>, StoreError> {
        let compacted = self.compacted()?;
        if since < compacted {
            return Err(StoreError::Compacted {
                requested: since,
                oldest: compacted,
            });
        }
        let mut events: Vec<Event> = self
            .settled_log(|| self.read_log())?
            .into_iter()
            .filter(|e| e.revision > since && e.key.starts_with(prefix))
            .collect();
        events.sort_by_key(|e| e.revision);
        Ok(events)
    }

    /// Polls the log's tail (cheap) and reads the whole log only once it moved.
    fn watch(&self, prefix: &str, since: Revision, timeout: Duration) -> Result<Vec<Event>, StoreError> {
        let deadline = Instant::now() + timeout;
        let mut read_up_to = since;
        loop {
            let now = self.current_revision()?;
            if now > read_up_to {
                let events = self.changes_since(prefix, since)?;
                if !events.is_empty() {
                    return Ok(events);
                }
                read_up_to = now;
            }
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }
            std::thread::sleep(WATCH_POLL);
        }
    }

    fn lock_network(&self, network: &str, timeout: Duration) -> Result<LockGuard, StoreError> {
        network_flock(&self.root, network, timeout)
    }

    fn network_note(&self, network: &str) -> Result<Vec<u8>, StoreError> {
        network_note(&self.root, network)
    }

    fn put_leased(&self, key: &str, value: &Value, _ttl: Duration) -> Result<Lease, StoreError> {
        self.put(key, value)?;
        Ok(Lease::new(Box::new(FileLease {
            store: self.clone(),
            key: key.to_string(),
        })))
    }
}

/// A file-store lease: one machine, so its holder's death is the store's too.
struct FileLease {
    store: FileStore,
    key: String,
}

impl LeaseHolder for FileLease {
    fn renew(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn revoke(&self) -> Result<(), StoreError> {
        self.store.delete(&self.key).map(drop)
    }
}
