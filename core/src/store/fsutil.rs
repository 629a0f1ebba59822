//! File-system helpers of the file store: flock with timeout, private dirs,
//! atomic writes, opens that never follow a symbolic link, and the checks a
//! state dir must pass.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
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
    let path = network_lock_path(dir, network)?;
    create_dirs(path.parent().expect("under locks/"))?;
    let lock = flock_with_timeout(&path, timeout, &format!("network {network}"))?;
    Ok(super::LockGuard::new(network, lock, path))
}

/// The note in `network`'s lock file, read without the lock (absent: empty).
pub(super) fn network_note(dir: &Path, network: &str) -> Result<Vec<u8>, StoreError> {
    match read_nofollow(&network_lock_path(dir, network)?) {
        Err(e) if is_absent(&e) => Ok(Vec::new()),
        read => read,
    }
}

fn network_lock_path(dir: &Path, network: &str) -> Result<PathBuf, StoreError> {
    super::key::validate_segment(network).map_err(|why| StoreError::invalid_key(network, why))?;
    Ok(dir.join("locks").join(format!("{network}.lock")))
}

fn open_lock_file(path: &Path) -> Result<File, StoreError> {
    open_nofollow(
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600),
        path,
    )
}

/// Opens `path` as `options` say, refusing a symbolic link in its place:
/// whoever planted one must not get our writes (or feed our reads).
pub(super) fn open_nofollow(options: &mut OpenOptions, path: &Path) -> Result<File, StoreError> {
    options
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| StoreError::io(path, not_followed(e)))
}

/// The whole file at `path`, read without following a symbolic link.
pub(super) fn read_nofollow(path: &Path) -> Result<Vec<u8>, StoreError> {
    let mut file = open_nofollow(OpenOptions::new().read(true), path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|e| StoreError::io(path, e))?;
    Ok(bytes)
}

/// True when the error says the path (or a folder on it) does not exist.
pub(super) fn is_absent(e: &StoreError) -> bool {
    matches!(e, StoreError::Io { source, .. }
        if matches!(source.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory))
}

/// O_NOFOLLOW on a link fails with ELOOP, whose text ("too many levels of
/// symbolic links") hides what happened.
fn not_followed(e: std::io::Error) -> std::io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        std::io::Error::new(e.kind(), "is a symbolic link, which the store does not follow")
    } else {
        e
    }
}

/// Creates `path` and its missing parents 0700. An existing symbolic link
/// at `path` is refused: the store would write through it.
pub fn create_dirs(path: &Path) -> Result<(), StoreError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| StoreError::io(path, e))?;
    let meta = fs::symlink_metadata(path).map_err(|e| StoreError::io(path, e))?;
    if !meta.is_dir() {
        return Err(StoreError::io(
            path,
            std::io::Error::other("is a symbolic link, which the store does not follow"),
        ));
    }
    Ok(())
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

/// Temp file in the same dir + fsync + rename + fsync dir: readers see the
/// old or the new content, never a mix, even if we are killed mid-write or
/// the disk fills up (the temp file is removed, the old file stays).
/// Errors name `path`. A symbolic link at `path` is an error, not replaced.
pub fn atomic_write(path: &Path, body: &[u8]) -> Result<(), StoreError> {
    let dir = path
        .parent()
        .ok_or_else(|| StoreError::io(path, std::io::Error::other("no parent dir")))?;
    if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(StoreError::io(
            path,
            std::io::Error::other("is a symbolic link, which the store does not replace"),
        ));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".tmp.{}.{n}.{name}", std::process::id()));
    let result = (|| {
        // O_EXCL|O_NOFOLLOW: never write through something already there.
        let mut f = open_nofollow(OpenOptions::new().create_new(true).write(true).mode(0o600), &tmp)?;
        f.write_all(body).map_err(|e| StoreError::io(path, e))?;
        f.sync_all().map_err(|e| StoreError::io(path, e))?;
        fs::rename(&tmp, path).map_err(|e| StoreError::io(path, e))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Why the state dir at `path` must not be used, if it must not: anyone
/// but us who can write to it can forge the store's records (and with them
/// what the kernel allows). `None` also when it does not exist yet.
pub(super) fn unsafe_state_dir(path: &Path) -> Result<Option<String>, StoreError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(path, e)),
    };
    let euid = nix::unistd::geteuid().as_raw();
    let mode = meta.mode() & 0o7777;
    let why = if meta.file_type().is_symlink() {
        "is a symbolic link (name the real folder)".to_string()
    } else if !meta.is_dir() {
        "is not a directory".to_string()
    } else if meta.uid() != euid {
        format!("is owned by uid {}, not by uid {euid} that runs the store", meta.uid())
    } else if mode & 0o022 != 0 {
        format!("is writable by group or others (mode {mode:04o}; want 0700)")
    } else {
        return Ok(None);
    };
    Ok(Some(why))
}
