//! The control socket: a plugin asks the daemon to load the store now and
//! learns which revision it serves. One line each way:
//! `sync` → `ok <revision>` or `error <why>`.

use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader as AsyncBufReader};
use tokio::net::UnixListener;

use super::limits::{self, ClientSlots};

/// Serves `sync` requests with `reload`.
pub async fn serve<F, Fut>(listener: UnixListener, reload: F)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(u64, Vec<String>)>> + Send,
{
    let reload = std::sync::Arc::new(reload);
    let slots = ClientSlots::new();
    loop {
        let slot = slots.wait().await;
        let conn = match listener.accept().await {
            Ok((conn, _)) => conn,
            Err(e) => {
                limits::accept_failed("control", e).await;
                continue;
            }
        };
        let reload = reload.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let (read, mut write) = conn.into_split();
            let mut line = String::new();
            if AsyncBufReader::new(read).read_line(&mut line).await.is_err() || line.trim() != "sync" {
                let _ = write.write_all(b"error expected sync\n").await;
                return;
            }
            let reply = match reload().await {
                Ok((rev, errors)) if errors.is_empty() => format!("ok {rev}\n"),
                Ok((_, errors)) => format!("error cannot listen on {}\n", errors.join("; ")),
                Err(e) => format!("error {e:#}\n"),
            };
            let _ = write.write_all(reply.as_bytes()).await;
        });
    }
}

/// Asks the daemon behind `socket` to sync; the revision it serves.
pub fn sync(socket: &Path, timeout: Duration) -> std::io::Result<Result<u64, String>> {
    let mut conn = UnixStream::connect(socket)?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    conn.write_all(b"sync\n")?;
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line)?;
    let line = line.trim();
    Ok(match line.strip_prefix("ok ") {
        Some(rev) => rev.parse().map_err(|_| format!("bad reply {line:?}")),
        None => Err(line.strip_prefix("error ").unwrap_or(line).to_string()),
    })
}
