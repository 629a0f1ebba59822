//! The store: a small key/value space of JSON documents with store-wide
//! revisions, compare-and-swap, change events, per-network locks and leased
//! keys.
//!
//! The [`Store`] trait is shaped after etcd (string keys, `u64` revisions,
//! prefix listing, watch from a revision, leases). [`FileStore`] is the
//! embedded default; `EtcdStore` (feature `etcd`) serves a cluster. Which one
//! a call opens is its `store` setting ([`StoreSpec`]); no service changes.

mod error;
#[cfg(feature = "etcd")]
mod etcd;
mod file;
mod fsutil;
pub mod key;
mod spec;

use std::time::Duration;

pub use error::StoreError;
#[cfg(feature = "etcd")]
pub use etcd::EtcdStore;
pub use file::{DEFAULT_STATE_DIR, FileStore, QuarantinedDoc, STATE_DIR_ENV, resolve_state_dir};
/// Private folders (0700) and atomic private files (0600), for state kept beside the store.
pub use fsutil::{atomic_write, create_dirs};
pub use spec::{DEFAULT_PREFIX, EtcdSpec, STORE_ENV, StoreHandle, StoreSpec, TlsSpec, open_with};

/// A store-wide, monotonically increasing revision. 0 means "never written".
pub type Revision = u64;

/// A document as stored: its key, value and the revision of its last change.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub key: String,
    pub value: serde_json::Value,
    pub revision: Revision,
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Put,
    Delete,
}

/// One change. Events are hints: read the key for its current value (a put
/// event may have been superseded by a later change).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub key: String,
    pub revision: Revision,
}

/// One change of a [`Store::commit`]: `key` from what it was (revision
/// `expected` and value `was`; `None`: absent) to `value` (`None`: deleted).
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    pub key: &'a str,
    pub expected: Option<Revision>,
    pub was: Option<&'a serde_json::Value>,
    pub value: Option<&'a serde_json::Value>,
}

/// An exclusive per-network lock: a flocked file in the node's state dir,
/// released when dropped (or when the holding process dies). The file also
/// carries a note from one holder to the next (see [`LockGuard::note`]).
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard {
    file: nix::fcntl::Flock<std::fs::File>,
    path: std::path::PathBuf,
    network: String,
}

impl LockGuard {
    pub(crate) fn new(network: &str, file: nix::fcntl::Flock<std::fs::File>, path: std::path::PathBuf) -> Self {
        LockGuard {
            file,
            path,
            network: network.to_string(),
        }
    }

    pub fn network(&self) -> &str {
        &self.network
    }

    /// What the last holder left in the lock file (empty: nothing). Only
    /// this node's processes take the lock, so the note is about this node:
    /// the graph keeps its unfinished calls there, where writing costs one
    /// system call and no store commit.
    pub fn note(&self) -> Result<Vec<u8>, StoreError> {
        use std::os::unix::fs::FileExt;
        let mut body = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = self
                .file
                .read_at(&mut chunk, body.len() as u64)
                .map_err(|e| StoreError::io(&self.path, e))?;
            if n == 0 {
                return Ok(body);
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }

    /// Replaces the note with `body`. The new body is written over the old
    /// before the file is cut to its length, so a holder killed in between
    /// leaves the new body followed by the old one's tail: a reader takes
    /// the first value of a self-delimiting format (JSON) and ignores the rest.
    pub fn set_note(&self, body: &[u8]) -> Result<(), StoreError> {
        use std::os::unix::fs::FileExt;
        if !body.is_empty() {
            self.file
                .write_all_at(body, 0)
                .map_err(|e| StoreError::io(&self.path, e))?;
        }
        self.file
            .set_len(body.len() as u64)
            .map_err(|e| StoreError::io(&self.path, e))
    }
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard").field("network", &self.network).finish()
    }
}

/// The store every service talks to. Keys are `/`-separated strings such as
/// `networks/<net>/endpoints/<id>` (see [`key::validate_key`]).
pub trait Store: Send + Sync {
    /// The document at `key`, or `None`.
    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError>;

    /// Writes `value` unconditionally; returns the new revision.
    fn put(&self, key: &str, value: &serde_json::Value) -> Result<Revision, StoreError>;

    /// Writes `value` only if the key's current revision is `expected`
    /// (`None`: only if the key is absent). On mismatch: [`StoreError::Conflict`].
    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Revision>,
        value: &serde_json::Value,
    ) -> Result<Revision, StoreError>;

    /// Deletes `key`; deleting an absent key is not an error (`Ok(None)`).
    /// Returns the revision of the deletion when something was deleted.
    fn delete(&self, key: &str) -> Result<Option<Revision>, StoreError>;

    /// Deletes `key` only if its current revision is `expected`.
    fn compare_and_delete(&self, key: &str, expected: Revision) -> Result<Revision, StoreError>;

    /// Makes `changes`, each only if its key is still as expected; a key
    /// that moved is [`StoreError::Conflict`]. This default writes them one
    /// by one and, at a conflict, puts back what it had written (best
    /// effort); a store that can check every key first, and then write all
    /// or none, does so instead.
    fn commit(&self, changes: &[Change<'_>]) -> Result<(), StoreError> {
        let mut done: Vec<(&Change<'_>, Option<Revision>)> = Vec::new();
        for w in changes {
            let result = match (w.value, w.expected) {
                (Some(v), expected) => self.compare_and_swap(w.key, expected, v).map(Some),
                (None, Some(rev)) => self.compare_and_delete(w.key, rev).map(|_| None),
                (None, None) => Ok(None), // deleting what was absent
            };
            match result {
                Ok(wrote) => done.push((w, wrote)),
                Err(e) => {
                    // Restores what this commit overwrote, unless changed since.
                    for (w, wrote) in done.into_iter().rev() {
                        let undone = match (w.was, wrote) {
                            (Some(v), wrote) => self.compare_and_swap(w.key, wrote, v).map(drop),
                            (None, Some(rev)) => self.compare_and_delete(w.key, rev).map(drop),
                            (None, None) => Ok(()),
                        };
                        if let Err(e) = undone {
                            tracing::warn!(key = %w.key, error = %e, "could not undo a partial commit");
                        }
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Every document whose key starts with `prefix` (a plain string prefix,
    /// as in etcd), sorted by key.
    fn list(&self, prefix: &str) -> Result<Vec<Entry>, StoreError>;

    /// The current store-wide revision.
    fn revision(&self) -> Result<Revision, StoreError>;

    /// Changes to keys under `prefix` with a revision greater than `since`, in
    /// order. [`StoreError::Compacted`] when that history is gone: re-list.
    fn changes_since(&self, prefix: &str, since: Revision) -> Result<Vec<Event>, StoreError>;

    /// Waits up to `timeout` for changes after `since`; returns them (empty on
    /// timeout).
    fn watch(&self, prefix: &str, since: Revision, timeout: Duration) -> Result<Vec<Event>, StoreError>;

    /// A standing watch on `prefix` from `since`: each
    /// [`Subscription::next`] returns the next changes as soon as they are
    /// made. The default re-watches from the last revision seen; etcd keeps
    /// one watch open (a watch reopened at a past revision waits for etcd's
    /// catch-up round, up to 100 ms).
    fn subscribe<'a>(&'a self, prefix: &str, since: Revision) -> Result<Box<dyn Subscription + 'a>, StoreError> {
        Ok(Box::new(Rewatch {
            store: self,
            prefix: prefix.to_string(),
            since,
        }))
    }

    /// Takes the exclusive lock of `network` (across processes), waiting at
    /// most `timeout`; [`StoreError::Timeout`] otherwise. Network locks are
    /// node-local files in the state dir: the file store and
    /// [`StoreHandle`] (through which every backend is opened) take them; a
    /// backend without a state dir has none to take.
    fn lock_network(&self, network: &str, _timeout: Duration) -> Result<LockGuard, StoreError> {
        Err(StoreError::Unavailable {
            what: format!("network {network}: this store has no state dir to lock in (open it with open_with)"),
        })
    }

    /// The note in `network`'s lock file ([`LockGuard::note`]), read
    /// without taking the lock (what `netsvc status` and CHECK show); empty
    /// for a store with no state dir.
    fn network_note(&self, _network: &str) -> Result<Vec<u8>, StoreError> {
        Ok(Vec::new())
    }

    /// Writes `key` for as long as its holder lives: the holder renews the
    /// returned [`Lease`] well within `ttl`; when it stops (it died), the store
    /// deletes the key after `ttl`. Revoking deletes it at once. A node's
    /// registration is such a key. (The file store serves one machine, whose
    /// holders share its fate: its key lives until revoked.)
    fn put_leased(&self, key: &str, value: &serde_json::Value, ttl: Duration) -> Result<Lease, StoreError>;

    /// The store as opened with its state dir, when it is one: what a
    /// reconciler given a `&dyn Store` needs to reach node-local files (a
    /// daemon's control socket, node keys) and to start a helper process
    /// on the same store.
    fn as_handle(&self) -> Option<&StoreHandle> {
        None
    }
}

/// Changes as they come, from a [`Store::subscribe`].
pub trait Subscription: Send {
    /// Waits up to `timeout` for the next changes; empty on timeout.
    /// [`StoreError::Compacted`] when the history to resume from is gone:
    /// re-list and subscribe again.
    fn next(&mut self, timeout: Duration) -> Result<Vec<Event>, StoreError>;
}

/// A subscription made of one [`Store::watch`] after another.
struct Rewatch<'a, S: ?Sized> {
    store: &'a S,
    prefix: String,
    since: Revision,
}

impl<S: Store + ?Sized> Subscription for Rewatch<'_, S> {
    fn next(&mut self, timeout: Duration) -> Result<Vec<Event>, StoreError> {
        let events = self.store.watch(&self.prefix, self.since, timeout)?;
        if let Some(last) = events.last() {
            self.since = last.revision;
        }
        Ok(events)
    }
}

/// What keeps a leased key alive, per backend.
pub trait LeaseHolder: Send + Sync {
    fn renew(&self) -> Result<(), StoreError>;
    fn revoke(&self) -> Result<(), StoreError>;
}

/// A leased key's keep-alive. Dropping it neither renews nor revokes: the
/// key then lives out its TTL (so a restarting holder can take it over).
#[must_use = "a lease not renewed expires"]
pub struct Lease {
    holder: Box<dyn LeaseHolder>,
}

impl Lease {
    pub fn new(holder: Box<dyn LeaseHolder>) -> Self {
        Lease { holder }
    }

    /// Restarts the TTL.
    pub fn renew(&self) -> Result<(), StoreError> {
        self.holder.renew()
    }

    /// Deletes the key now.
    pub fn revoke(self) -> Result<(), StoreError> {
        self.holder.revoke()
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lease")
    }
}

/// Opens the store the environment names (`NETSVC_STORE`, else the file
/// store) with the state dir `configured` names, else `NETSVC_STATE_DIR`,
/// else the default state dir.
pub fn open(configured: Option<&str>) -> Result<StoreHandle, StoreError> {
    open_with(configured, None)
}

/// Opens the store a plugin call names: its `store` and `stateDir` keys,
/// then as [`open`].
pub fn open_for(conf: &crate::cni::NetConf) -> Result<StoreHandle, StoreError> {
    open_with(
        conf.extra.get("stateDir").and_then(serde_json::Value::as_str),
        conf.extra.get("store"),
    )
}
