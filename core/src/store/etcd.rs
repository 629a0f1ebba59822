//! The etcd v3 backend: the store Calico and Cilium keep cluster state in.
//!
//! Keys live under a prefix (`/netsvc` by default) as JSON; an entry's
//! revision is etcd's `mod_revision` and the store revision is etcd's, so
//! compare-and-swap is a transaction on `mod_revision` and a watch resumes
//! from any revision etcd has not compacted. Network locks are not etcd's:
//! they are node-local (the state dir's, taken through `StoreHandle`), as
//! nodes never wait on each other. The [`Store`] trait is blocking: calls run on this store's own small tokio runtime.

use std::future::Future;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity, PutOptions, TlsOptions,
    Txn, TxnOp, WatchOptions, WatchResponse,
};
use serde_json::Value;

use super::key::{validate_key, validate_segment};
use super::spec::EtcdSpec;
use super::{Entry, Event, EventKind, Lease, LeaseHolder, Revision, Store, StoreError, Subscription};

/// How long one request may take before the server counts as unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A replay gap longer than etcd's 100 ms replay period ends a replay.
const REPLAY_QUIET: Duration = Duration::from_millis(300);

/// The runtime the blocking calls run on; shut down without blocking, as the
/// store may be dropped inside another runtime (the DNS daemon's).
struct Runtime(Option<tokio::runtime::Runtime>);

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A store in etcd. Cheap to clone (clones share the connection).
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    prefix: String,
    rt: Arc<Runtime>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").field("prefix", &self.prefix).finish()
    }
}

fn unavailable(e: etcd_client::Error) -> StoreError {
    StoreError::unavailable(format!("etcd: {e}"))
}

fn rev(r: i64) -> Revision {
    u64::try_from(r).unwrap_or(0)
}

/// The store revision an etcd answer was made at.
fn revision_of(header: Option<&etcd_client::ResponseHeader>) -> Revision {
    header.map(|h| rev(h.revision())).unwrap_or(0)
}

fn read_file(field: &str, path: &std::path::Path) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(|e| StoreError::invalid_config(field, format!("{}: {e}", path.display())))
}

impl EtcdStore {
    /// Connects to `spec`'s endpoints; [`StoreError::Unavailable`] when none answers.
    pub fn connect(spec: &EtcdSpec) -> Result<Self, StoreError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("netsvc-etcd")
            .enable_all()
            .build()
            .map_err(|e| StoreError::unavailable(format!("cannot start the etcd client runtime: {e}")))?;
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT);
        if let Some(tls) = &spec.tls {
            let mut t = TlsOptions::new().ca_certificate(Certificate::from_pem(read_file("store.tls.ca", &tls.ca)?));
            if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
                t = t.identity(Identity::from_pem(
                    read_file("store.tls.cert", cert)?,
                    read_file("store.tls.key", key)?,
                ));
            }
            if let Some(name) = &tls.server_name {
                t = t.domain_name(name.clone());
            }
            options = options.with_tls(t);
        }
        let endpoints = spec.endpoints.clone();
        let client = rt
            .block_on(async move {
                let mut client = Client::connect(endpoints, Some(options)).await?;
                // connect is lazy about the server: ask it something.
                client.status().await?;
                Ok::<_, etcd_client::Error>(client)
            })
            .map_err(|e| StoreError::unavailable(format!("etcd at {}: {e}", spec.endpoints.join(","))))?;
        Ok(EtcdStore {
            client,
            prefix: spec.prefix.trim_end_matches('/').to_string(),
            rt: Arc::new(Runtime(Some(rt))),
        })
    }

    /// Runs `f` on this store's runtime and waits for it, from any thread
    /// (also one of another runtime's).
    fn run<T: Send + 'static>(&self, f: impl Future<Output = T> + Send + 'static) -> T {
        let rt = self.rt.0.as_ref().expect("runtime lives as long as the store");
        let task = rt.spawn(f);
        futures::executor::block_on(task).expect("an etcd call panicked")
    }

    /// One request to etcd, bounded: a server that accepts connections but
    /// does not answer (restarting, electing a leader) is unavailable after
    /// [`REQUEST_TIMEOUT`], never a hang.
    fn call<T: Send + 'static>(
        &self,
        f: impl Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.run(async move { tokio::time::timeout(REQUEST_TIMEOUT, f).await })
            .map_err(|_| StoreError::unavailable(format!("etcd did not answer within {REQUEST_TIMEOUT:?}")))?
            .map_err(unavailable)
    }

    fn full(&self, key: &str) -> String {
        format!("{}/{key}", self.prefix)
    }

    fn short(&self, full: &str) -> String {
        short_key(&self.prefix, full)
    }

    fn entry(&self, kv: &etcd_client::KeyValue) -> Result<Entry, StoreError> {
        let key = self.short(kv.key_str().unwrap_or_default());
        let value = serde_json::from_slice(kv.value()).map_err(|e| StoreError::Corrupt {
            path: self.full(&key),
            why: e.to_string(),
        })?;
        Ok(Entry {
            key,
            value,
            revision: rev(kv.mod_revision()),
        })
    }

    /// A conditional write or delete: `compare` must hold, else a conflict
    /// naming the revision found.
    fn txn(&self, key: &str, compare: Compare, op: TxnOp, expected: Option<Revision>) -> Result<Revision, StoreError> {
        let full = self.full(key);
        let mut client = self.client.clone();
        let txn = Txn::new()
            .when(vec![compare])
            .and_then(vec![op])
            .or_else(vec![TxnOp::get(full.clone(), None)]);
        let resp = self.call(async move { client.txn(txn).await })?;
        if resp.succeeded() {
            return Ok(revision_of(resp.header()));
        }
        let actual = resp.op_responses().into_iter().find_map(|r| match r {
            etcd_client::TxnOpResponse::Get(g) => g.kvs().first().map(|kv| rev(kv.mod_revision())),
            _ => None,
        });
        Err(StoreError::Conflict {
            key: key.to_string(),
            expected,
            actual,
        })
    }

    /// Opens a watch on `prefix` from revision `since + 1`.
    async fn open_watch(
        mut client: Client,
        full_prefix: String,
        since: Revision,
    ) -> Result<etcd_client::WatchStream, etcd_client::Error> {
        let start = i64::try_from(since.saturating_add(1)).unwrap_or(i64::MAX);
        let opts = WatchOptions::new().with_prefix().with_start_revision(start);
        client.watch(full_prefix, Some(opts)).await
    }
}

/// A key without the store's prefix.
fn short_key(prefix: &str, full: &str) -> String {
    full.strip_prefix(prefix)
        .and_then(|k| k.strip_prefix('/'))
        .unwrap_or(full)
        .to_string()
}

fn event(prefix: &str, e: &etcd_client::Event) -> Option<Event> {
    let kv = e.kv()?;
    Some(Event {
        kind: match e.event_type() {
            EventType::Put => EventKind::Put,
            EventType::Delete => EventKind::Delete,
        },
        key: short_key(prefix, kv.key_str().ok()?),
        revision: rev(kv.mod_revision()),
    })
}

/// The events of one watch response, or the compaction that ended it.
fn events_of(prefix: &str, resp: &WatchResponse, since: Revision) -> Result<Vec<Event>, StoreError> {
    if resp.compact_revision() > 0 {
        return Err(StoreError::Compacted {
            requested: since,
            oldest: rev(resp.compact_revision()),
        });
    }
    if resp.canceled() {
        return Err(StoreError::unavailable(format!(
            "etcd watch canceled: {}",
            resp.cancel_reason()
        )));
    }
    Ok(resp.events().iter().filter_map(|e| event(prefix, e)).collect())
}

type Batch = Result<Vec<Event>, StoreError>;

/// Sends each batch of a watch's events (or the error that ended it) on.
async fn forward_watch(
    mut stream: etcd_client::WatchStream,
    prefix: String,
    mut since: Revision,
    to: mpsc::Sender<Batch>,
) {
    loop {
        let batch = match stream.message().await {
            // Progress notices and the creation answer carry no change.
            Ok(Some(resp)) if resp.events().is_empty() && resp.compact_revision() == 0 && !resp.canceled() => continue,
            Ok(Some(resp)) => events_of(&prefix, &resp, since),
            Ok(None) => Err(StoreError::unavailable("etcd closed the watch")),
            Err(e) => Err(unavailable(e)),
        };
        let ended = batch.is_err();
        if let Some(last) = batch.as_ref().ok().and_then(|b| b.last()) {
            since = last.revision;
        }
        if to.send(batch).is_err() || ended {
            return;
        }
    }
}

struct EtcdSubscription {
    receiver: mpsc::Receiver<Batch>,
    task: tokio::task::JoinHandle<()>,
    /// An error that came after events already returned: the next call's.
    failed: Option<StoreError>,
}

impl Subscription for EtcdSubscription {
    fn next(&mut self, timeout: Duration) -> Result<Vec<Event>, StoreError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let mut events = match self.receiver.recv_timeout(timeout) {
            Ok(batch) => batch?,
            Err(mpsc::RecvTimeoutError::Timeout) => return Ok(Vec::new()),
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err(StoreError::unavailable("the etcd watch ended")),
        };
        // What else already came is handled with it.
        while let Ok(batch) = self.receiver.try_recv() {
            match batch {
                Ok(more) => events.extend(more),
                Err(e) => {
                    self.failed = Some(e);
                    break;
                }
            }
        }
        Ok(events)
    }
}

impl Drop for EtcdSubscription {
    fn drop(&mut self) {
        // Dropping the stream cancels the watch on the server.
        self.task.abort();
    }
}

impl Store for EtcdStore {
    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        validate_key(key)?;
        let mut client = self.client.clone();
        let full = self.full(key);
        let resp = self.call(async move { client.get(full, None).await })?;
        resp.kvs().first().map(|kv| self.entry(kv)).transpose()
    }

    fn put(&self, key: &str, value: &Value) -> Result<Revision, StoreError> {
        validate_key(key)?;
        let mut client = self.client.clone();
        let (full, body) = (self.full(key), serde_json::to_vec(value)?);
        let resp = self.call(async move { client.put(full, body, None).await })?;
        Ok(revision_of(resp.header()))
    }

    fn compare_and_swap(&self, key: &str, expected: Option<Revision>, value: &Value) -> Result<Revision, StoreError> {
        validate_key(key)?;
        let full = self.full(key);
        let compare = match expected {
            // Absent: never created (or deleted since).
            None => Compare::create_revision(full.clone(), CompareOp::Equal, 0),
            Some(r) => Compare::mod_revision(full.clone(), CompareOp::Equal, i64::try_from(r).unwrap_or(-1)),
        };
        let op = TxnOp::put(full, serde_json::to_vec(value)?, None);
        self.txn(key, compare, op, expected)
    }

    fn delete(&self, key: &str) -> Result<Option<Revision>, StoreError> {
        validate_key(key)?;
        let mut client = self.client.clone();
        let full = self.full(key);
        let resp = self.call(async move { client.delete(full, None).await })?;
        Ok((resp.deleted() > 0).then(|| revision_of(resp.header())))
    }

    fn compare_and_delete(&self, key: &str, expected: Revision) -> Result<Revision, StoreError> {
        validate_key(key)?;
        let full = self.full(key);
        let compare = Compare::mod_revision(full.clone(), CompareOp::Equal, i64::try_from(expected).unwrap_or(-1));
        self.txn(key, compare, TxnOp::delete(full, None), Some(expected))
    }

    fn list(&self, prefix: &str) -> Result<Vec<Entry>, StoreError> {
        // The same prefixes as the file store: complete segments must be valid.
        if let Some((_, complete)) = prefix.split('/').collect::<Vec<_>>().split_last() {
            for s in complete {
                validate_segment(s).map_err(|why| StoreError::invalid_key(prefix, why))?;
            }
        }
        let mut client = self.client.clone();
        let full = self.full(prefix);
        let resp = self.call(async move { client.get(full, Some(GetOptions::new().with_prefix())).await })?;
        // etcd sorts by key bytes, as the file store does.
        resp.kvs().iter().map(|kv| self.entry(kv)).collect()
    }

    fn revision(&self) -> Result<Revision, StoreError> {
        let mut client = self.client.clone();
        let probe = self.full("");
        let resp = self.call(async move { client.get(probe, Some(GetOptions::new().with_count_only())).await })?;
        Ok(revision_of(resp.header()))
    }

    /// Replays history from `since + 1` up to the revision the store had
    /// when asked. etcd replays an old revision to a new watcher in batches
    /// (every 100 ms) and gives no end-of-replay mark (a progress notice may
    /// come first), so the replay ends at an event at that revision or after
    /// a quiet spell longer than etcd's replay period.
    fn changes_since(&self, prefix: &str, since: Revision) -> Result<Vec<Event>, StoreError> {
        let now = self.revision()?;
        if since >= now {
            return Ok(Vec::new());
        }
        let (client, full) = (self.client.clone(), self.full(prefix));
        let responses = self.run(async move {
            tokio::time::timeout(REQUEST_TIMEOUT, async move {
                let mut stream = Self::open_watch(client, full, since).await?;
                let mut out = Vec::new();
                while let Ok(next) = tokio::time::timeout(REPLAY_QUIET, stream.message()).await {
                    let Some(resp) = next? else { break };
                    let done = resp.compact_revision() > 0
                        || resp.canceled()
                        || resp
                            .events()
                            .last()
                            .and_then(|e| e.kv())
                            .is_some_and(|kv| rev(kv.mod_revision()) >= now);
                    out.push(resp);
                    if done {
                        break;
                    }
                }
                Ok::<_, etcd_client::Error>(out)
            })
            .await
        });
        let responses = responses
            .map_err(|_| StoreError::unavailable("etcd did not replay its history in time"))?
            .map_err(unavailable)?;
        let mut events = Vec::new();
        for resp in &responses {
            events.extend(events_of(&self.prefix, resp, since)?);
        }
        events.retain(|e| e.revision <= now);
        Ok(events)
    }

    /// A real etcd watch: returns with the first batch of changes after `since`.
    fn watch(&self, prefix: &str, since: Revision, timeout: Duration) -> Result<Vec<Event>, StoreError> {
        let (client, full) = (self.client.clone(), self.full(prefix));
        let outcome = self.run(async move {
            let mut stream = Self::open_watch(client, full, since).await?;
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                match tokio::time::timeout_at(deadline, stream.message()).await {
                    Err(_) => return Ok(None),
                    Ok(Ok(Some(resp))) if resp.events().is_empty() && resp.compact_revision() == 0 => continue,
                    Ok(Ok(Some(resp))) => return Ok(Some(resp)),
                    Ok(Ok(None)) => return Ok(None),
                    Ok(Err(e)) => return Err(e),
                }
            }
        });
        match outcome.map_err(unavailable)? {
            Some(resp) => events_of(&self.prefix, &resp, since),
            None => Ok(Vec::new()),
        }
    }

    /// One etcd watch kept open: changes arrive as etcd commits them.
    fn subscribe<'a>(&'a self, prefix: &str, since: Revision) -> Result<Box<dyn Subscription + 'a>, StoreError> {
        let (client, full) = (self.client.clone(), self.full(prefix));
        // Opened here, so an unreachable server is this call's error.
        let stream = self
            .run(async move { tokio::time::timeout(REQUEST_TIMEOUT, Self::open_watch(client, full, since)).await })
            .map_err(|_| StoreError::unavailable("etcd did not open a watch in time"))?
            .map_err(unavailable)?;
        let (sender, receiver) = mpsc::channel();
        let rt = self.rt.0.as_ref().expect("runtime lives as long as the store");
        let task = rt.spawn(forward_watch(stream, self.prefix.clone(), since, sender));
        Ok(Box::new(EtcdSubscription {
            receiver,
            task,
            failed: None,
        }))
    }

    fn put_leased(&self, key: &str, value: &Value, ttl: Duration) -> Result<Lease, StoreError> {
        validate_key(key)?;
        let ttl = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let (full, body) = (self.full(key), serde_json::to_vec(value)?);
        let mut client = self.client.clone();
        let lease = self.call(async move {
            let lease = client.lease_grant(ttl, None).await?.id();
            client
                .put(full, body, Some(PutOptions::new().with_lease(lease)))
                .await?;
            Ok::<_, etcd_client::Error>(lease)
        })?;
        Ok(Lease::new(Box::new(EtcdLease {
            store: self.clone(),
            lease,
        })))
    }
}

struct EtcdLease {
    store: EtcdStore,
    lease: i64,
}

impl LeaseHolder for EtcdLease {
    /// A keep-alive on a stream of its own: one that broke when the server
    /// restarted cannot swallow the renewal.
    fn renew(&self) -> Result<(), StoreError> {
        let (mut client, lease) = (self.store.client.clone(), self.lease);
        // etcd answers a lease it no longer holds with "lease not found".
        self.store
            .call(async move { client.lease_keep_alive(lease).await })
            .map(drop)
    }

    fn revoke(&self) -> Result<(), StoreError> {
        let (mut client, lease) = (self.store.client.clone(), self.lease);
        self.store
            .run(async move { client.lease_revoke(lease).await })
            .map(drop)
            .map_err(unavailable)
    }
}
