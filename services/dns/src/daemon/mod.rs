//! `netsvc-dnsd`: one resolver for every network of a node. It serves the
//! names the store holds, reloads when the store changes (watched, and at
//! once when a plugin asks over the control socket), and forwards the rest.
//!
//! Run as `netsvc-dnsd --state-dir DIR`. It keeps its pid, log and control
//! socket in `DIR/dnsd/` (folder 0700, files 0600, none opened through a
//! symbolic link), runs once per state dir (a second start exits), and
//! stops cleanly on SIGTERM or SIGINT.

mod answer;
mod cache;
mod forward;
mod limits;
mod server;
mod tcp_clients;

pub mod control;

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions, Permissions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use netsvc_core::node::NodeName;
use netsvc_core::store::{Store, StoreHandle};
use tokio::net::UnixListener;
use tokio::sync::Mutex;

use crate::served::{self, NetworkView, View};
use crate::snapshot::{self, Withdrawn};
use server::{Listeners, Shared};

/// The longest wait between checks of the store's revision.
const POLL: Duration = Duration::from_millis(100);

/// The daemon's files under a state dir.
pub struct Paths {
    pub dir: PathBuf,
}

impl Paths {
    pub fn new(state_dir: &Path) -> Paths {
        Paths {
            dir: state_dir.join("dnsd"),
        }
    }
    pub fn pid(&self) -> PathBuf {
        self.dir.join("pid")
    }
    pub fn lock(&self) -> PathBuf {
        self.dir.join("lock")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("dnsd.log")
    }
    pub fn control(&self) -> PathBuf {
        self.dir.join("control.sock")
    }
}

/// What reloads share: the store, the zone in use and the open listeners.
struct State {
    store: Arc<StoreHandle>,
    /// The node it serves, resolved once as the daemon starts.
    node: NodeName,
    zone: Shared,
    listeners: Mutex<Listeners>,
    /// The revision served; `None` before the first load.
    loaded: Mutex<Option<u64>>,
    /// Endpoints DELs withdrew that the store still holds (it could not be
    /// written): not served until the store forgets them. Lost on restart.
    withdrawn: std::sync::Mutex<BTreeSet<Withdrawn>>,
}

impl State {
    /// Reloads when the store moved past what is loaded; the revision now
    /// served and any listen address that could not be opened.
    async fn sync(&self) -> Result<(u64, Vec<String>)> {
        let mut loaded = self.loaded.lock().await;
        let revision = self.store.revision()?;
        let served = match *loaded {
            Some(r) if r == revision => r,
            _ => {
                let store = self.store.clone();
                let hidden = self.withdrawn()?;
                let node = self.node.clone();
                let (zone, still) =
                    tokio::task::spawn_blocking(move || snapshot::load(&*store, &node, &hidden)).await??;
                *self
                    .withdrawn
                    .lock()
                    .map_err(|_| anyhow::anyhow!("withdrawn lock poisoned"))? = still;
                let served = u64::from(zone.serial()).max(revision);
                tracing::debug!(revision = served, "zone reloaded");
                *self.zone.write().map_err(|_| anyhow::anyhow!("zone lock poisoned"))? = Arc::new(zone);
                *loaded = Some(served);
                // The old zone and what reading the store took are free now.
                tokio::task::spawn_blocking(release_freed_memory);
                served
            }
        };
        // Every time, not only on reload: an address that could not be opened
        // (not there yet, or taken) is tried again.
        let wanted: Vec<_> = server::current(&self.zone)
            .listeners()
            .iter()
            .map(|(l, _)| *l)
            .collect();
        let errors = self.listeners.lock().await.update(&wanted, &self.zone).await;
        Ok((served, errors))
    }

    fn withdrawn(&self) -> Result<BTreeSet<Withdrawn>> {
        Ok(self
            .withdrawn
            .lock()
            .map_err(|_| anyhow::anyhow!("withdrawn lock poisoned"))?
            .clone())
    }

    /// Stops serving `endpoint` of `network` (reloaded at once).
    async fn withdraw(&self, network: &str, endpoint: &str) -> Result<()> {
        self.withdrawn
            .lock()
            .map_err(|_| anyhow::anyhow!("withdrawn lock poisoned"))?
            .insert((network.to_string(), endpoint.to_string()));
        *self.loaded.lock().await = None;
        self.sync().await.map(drop)
    }

    /// What is served for `network` now (nothing is loaded first).
    async fn served(&self, network: &str) -> Result<View> {
        let revision = self.loaded.lock().await.unwrap_or_default();
        let zone = server::current(&self.zone);
        let listeners = self.listeners.lock().await;
        let view = zone.network(network).map(|n| NetworkView {
            listen: n.served.listen,
            listening: listeners.is_open(n.served.listen),
            names: served::names(&n.served.domain, &n.endpoints),
        });
        let withdrawn = self
            .withdrawn()?
            .into_iter()
            .filter(|(net, _)| net == network)
            .map(|(_, ep)| ep)
            .collect();
        Ok(View {
            revision,
            network: view,
            withdrawn,
        })
    }

    /// One control request (see [`control`]).
    async fn handle(&self, request: &str) -> Result<String, String> {
        let words: Vec<&str> = request.split_whitespace().collect();
        let failed = |e: anyhow::Error| format!("{e:#}");
        match words.as_slice() {
            ["sync"] => match self.sync().await.map_err(failed)? {
                (revision, errors) if errors.is_empty() => Ok(revision.to_string()),
                (_, errors) => Err(format!("cannot listen on {}", errors.join("; "))),
            },
            ["served", network] => {
                let view = self.served(network).await.map_err(failed)?;
                serde_json::to_string(&view).map_err(|e| e.to_string())
            }
            ["withdraw", network, endpoint] => self
                .withdraw(network, endpoint)
                .await
                .map(|()| String::new())
                .map_err(failed),
            ["flush"] => Ok(cache::shared().flush().to_string()),
            ["query", name, qtype] => {
                let answer = control::NodeAnswer::of(&server::current(&self.zone), name, qtype)?;
                serde_json::to_string(&answer).map_err(|e| e.to_string())
            }
            _ => Err(format!(
                "unknown request {request:?} (sync | served NETWORK | withdraw NETWORK ENDPOINT | flush | query NAME TYPE)"
            )),
        }
    }
}

pub fn main() -> Result<()> {
    let state_dir = parse_args()?;
    // The plugin that starts the daemon names its node (NETSVC_NODE_NAME).
    let node = NodeName::from_env(None)?;
    // Refused before anything is made in it: a state dir others can write.
    netsvc_core::store::resolve_state_dir(state_dir.to_str(), None)?;
    let paths = Paths::new(&state_dir);
    netsvc_core::store::create_dirs(&paths.dir)?;
    // Made by an older version, it may be looser.
    std::fs::set_permissions(&paths.dir, Permissions::from_mode(0o700))
        .with_context(|| format!("chmod {}", paths.dir.display()))?;
    let Some(_lock) = single_instance(&paths.lock())? else {
        return Ok(()); // another daemon serves this state dir
    };
    init_log(&paths.log())?;
    // Threads' panics would go to stderr, which is /dev/null: log them.
    std::panic::set_hook(Box::new(|info| tracing::error!("panic: {info}")));
    netsvc_core::store::atomic_write(&paths.pid(), format!("{}\n", std::process::id()).as_bytes())?;
    // The store the plugin that started us named (NETSVC_STORE), beside our state dir.
    let store = Arc::new(netsvc_core::store::open_with(state_dir.to_str(), None)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(run(store, node, &paths));
    let _ = std::fs::remove_file(paths.control());
    let _ = std::fs::remove_file(paths.pid());
    if let Err(e) = &result {
        tracing::error!(error = %e, "netsvc-dnsd stopped");
    }
    result
}

async fn run(store: Arc<StoreHandle>, node: NodeName, paths: &Paths) -> Result<()> {
    let state = Arc::new(State {
        store,
        node,
        zone: Arc::new(RwLock::new(Arc::default())),
        listeners: Mutex::new(Listeners::default()),
        loaded: Mutex::new(None),
        withdrawn: std::sync::Mutex::default(),
    });
    if let Err(e) = state.sync().await {
        tracing::warn!(error = %e, "first load");
    }
    let _ = std::fs::remove_file(paths.control());
    let control = UnixListener::bind(paths.control())?;
    // bind made it as the umask allows; the folder is 0700 anyway.
    std::fs::set_permissions(paths.control(), Permissions::from_mode(0o600))?;
    tokio::spawn(control::serve(control, {
        let state = state.clone();
        move |request: String| {
            let state = state.clone();
            async move { state.handle(&request).await }
        }
    }));
    {
        let state = state.clone();
        let rt = tokio::runtime::Handle::current();
        // A plain thread: the runtime's shutdown does not wait for it.
        std::thread::Builder::new()
            .name("store-follower".into())
            .spawn(move || follow_store(&state, &rt))?;
    }
    tracing::info!(pid = std::process::id(), "netsvc-dnsd started");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("netsvc-dnsd stopping");
    Ok(())
}

/// Reloads as soon as the store changes (a standing watch), and at least
/// every [`POLL`]: each turn also retries listen addresses that could not
/// be opened, and the revision check catches what a broken watch missed.
fn follow_store(state: &State, rt: &tokio::runtime::Handle) {
    let store = state.store.clone();
    let mut changes = None;
    loop {
        if changes.is_none() {
            changes = store.revision().and_then(|r| store.subscribe("", r)).ok();
        }
        let waited = match &mut changes {
            Some(sub) => sub.next(POLL).map(|_| ()),
            None => {
                std::thread::sleep(POLL);
                Ok(())
            }
        };
        if let Err(e) = waited {
            tracing::warn!(error = %e, "watching the store");
            changes = None;
            std::thread::sleep(POLL);
        }
        if let Err(e) = rt.block_on(state.sync()) {
            tracing::warn!(error = %e, "reload");
        }
    }
}

/// Gives the heap a reload freed back to the system. glibc keeps freed
/// memory in its arenas unless it sits at the very top of one, and a reload
/// frees a whole zone and everything reading the store took: after 500
/// containers came and went the daemon kept three times its earlier RSS.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas, under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn parse_args() -> Result<PathBuf> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, dir] if flag == "--state-dir" => Ok(PathBuf::from(dir)),
        _ => bail!("usage: netsvc-dnsd --state-dir DIR"),
    }
}

/// Opens one of the daemon's files 0600, never through a symbolic link
/// (and makes one an older version left looser 0600).
fn open_private(path: &Path, options: &mut OpenOptions) -> Result<File> {
    let file = options
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => anyhow::anyhow!("{} is a symbolic link, which is not followed", path.display()),
            _ => anyhow::Error::new(e).context(format!("open {}", path.display())),
        })?;
    file.set_permissions(Permissions::from_mode(0o600))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(file)
}

/// An exclusive lock held for the daemon's life; `None` when another holds it.
fn single_instance(path: &Path) -> Result<Option<nix::fcntl::Flock<File>>> {
    let file = open_private(path, OpenOptions::new().truncate(false).write(true))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e.into()),
    }
}

/// Logs go to the log file, never stdout (a runtime may still be reading the
/// plugin's stdout when the daemon starts).
fn init_log(path: &Path) -> Result<()> {
    let file = open_private(path, OpenOptions::new().append(true))?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("NETSVC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .try_init();
    Ok(())
}
