//! File-system helpers of the file store: flock with timeout, private dirs,
//! atomic writes.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::StoreError;

/// Makes temp file names unique within this process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Takes an exclusive flock on `path` (created 0600), polling until `timeout`.
pub(super) fn flock_with_timeout(path: &Path, timeout: Duration, what: &str) -> Result<Flock<File>, StoreError> {
    flock_as(path, timeout, what, FlockArg::LockExclusiveNonblock)
}

/// A shared flock on `path`: readers that must not see a writer's work half-done.
pub(super) fn shared_flock_with_timeout(path: &Path, timeout: Duration, what: &str) -> Result<Flock<File>, StoreError> {
    flock_as(path, timeout, what, FlockArg::LockSharedNonblock)
}

fn flock_as(path: &Path, timeout: Duration, what: &str, how: FlockArg) -> Result<Flock<File>, StoreError> {
    let deadline = Instant::now() + timeout;
    let mut file = open_lock_file(path)?;
    let mut pause = Duration::from_micros(200);
    loop {
        match Flock::lock(file, how) {
            Ok(lock) => return Ok(lock),
            Err((f, Errno::EWOULDBLOCK)) => {
                if Instant::now() >= deadline {
                    return Err(StoreError::Timeout { what: what.to_string() });
                }
                file = f;
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(10));
            }
            Err((_, Errno::EINTR)) => file = open_lock_file(path)?,
            Err((_, errno)) => return Err(StoreError::io(path, errno.into())),
        }
    }
}

/// `network`'s lock among this machine's processes: a flock under
/// `<dir>/locks/` (released by the kernel when its holder dies).
pub(super) fn network_flock(dir: &Path, network: &str, timeout: Duration) -> Result<super::LockGuard, StoreError> {
    super::key::validate_segment(network).map_err(|why| StoreError::invalid_key(network, why))?;
    let locks = dir.join("locks");
    create_dirs(&locks)?;
    let lock = flock_with_timeout(
        &locks.join(format!("{network}.lock")),
        timeout,
        &format!("network {network}"),
    )?;
    Ok(super::LockGuard::new(network, Box::new(lock)))
}

fn open_lock_file(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| StoreError::io(path, e))
}

pub fn create_dirs(path: &Path) -> Result<(), StoreError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| StoreError::io(path, e))
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

/// Temp file in the same dir + fsync + rename + fsync dir: readers see the
/// old or the new content, never a mix, even if we are killed mid-write.
pub fn atomic_write(path: &Path, body: &[u8]) -> Result<(), StoreError> {
    let dir = path
        .parent()
        .ok_or_else(|| StoreError::io(path, std::io::Error::other("no parent dir")))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".tmp.{}.{n}.{name}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| StoreError::io(&tmp, e))?;
        f.write_all(body).map_err(|e| StoreError::io(&tmp, e))?;
        f.sync_all().map_err(|e| StoreError::io(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| StoreError::io(path, e))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
