//! The control socket: one request line, one reply line, `ok <payload>` or
//! `error <why>`.
//!
//! - `sync`: load the store now; the revision served.
//! - `served <network>`: what is served for the network, as JSON (a
//!   [`View`]); nothing is loaded first, so a daemon behind the store shows.
//! - `withdraw <network> <endpoint-id>`: stop serving an endpoint a DEL
//!   could not take out of the store, until the store drops it too.
//! - `flush`: empty the cache of upstream answers; how many it held.
//! - `query <name> <type>`: the answer as the node sees it (every
//!   network's names), as JSON (a [`NodeAnswer`]).

use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader as AsyncBufReader};
use tokio::net::UnixListener;

use super::limits::{self, ClientSlots};
use crate::served::View;

/// Serves requests with `handle`, which maps a request line (trimmed) to
/// the reply's payload or the error's text.
pub async fn serve<F, Fut>(listener: UnixListener, handle: F)
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, String>> + Send,
{
    let handle = std::sync::Arc::new(handle);
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
        let handle = handle.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let (read, mut write) = conn.into_split();
            let mut line = String::new();
            if AsyncBufReader::new(read).read_line(&mut line).await.is_err() {
                return;
            }
            let reply = match handle(line.trim().to_string()).await {
                Ok(payload) => format!("ok {payload}\n"),
                // One line, whatever the error said.
                Err(why) => format!("error {}\n", why.replace('\n', "; ")),
            };
            let _ = write.write_all(reply.as_bytes()).await;
        });
    }
}

/// One request to the daemon behind `socket`: the reply's payload, or the
/// daemon's error (the outer error: it could not be asked).
fn ask(socket: &Path, request: &str, timeout: Duration) -> std::io::Result<Result<String, String>> {
    let mut conn = UnixStream::connect(socket)?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    conn.write_all(format!("{request}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line)?;
    let line = line.trim_end_matches('\n');
    Ok(match line.strip_prefix("ok ") {
        Some(payload) => Ok(payload.to_string()),
        None => Err(line.strip_prefix("error ").unwrap_or(line).to_string()),
    })
}

/// Asks the daemon behind `socket` to sync; the revision it serves.
pub fn sync(socket: &Path, timeout: Duration) -> std::io::Result<Result<u64, String>> {
    Ok(ask(socket, "sync", timeout)?.and_then(|rev| rev.parse().map_err(|_| format!("bad reply ok {rev:?}"))))
}

/// What the daemon behind `socket` serves for `network`.
pub fn served(socket: &Path, network: &str, timeout: Duration) -> std::io::Result<Result<View, String>> {
    Ok(ask(socket, &format!("served {network}"), timeout)?
        .and_then(|json| serde_json::from_str(&json).map_err(|e| format!("bad reply to served: {e}"))))
}

/// Tells the daemon behind `socket` to stop serving `endpoint` of `network`.
pub fn withdraw(
    socket: &Path,
    network: &str,
    endpoint: &str,
    timeout: Duration,
) -> std::io::Result<Result<(), String>> {
    Ok(ask(socket, &format!("withdraw {network} {endpoint}"), timeout)?.map(drop))
}

/// Empties the cache of upstream answers of the daemon behind `socket`; how many it held.
pub fn flush(socket: &Path, timeout: Duration) -> std::io::Result<Result<usize, String>> {
    Ok(ask(socket, "flush", timeout)?.and_then(|n| n.parse().map_err(|_| format!("bad reply ok {n:?}"))))
}

/// A name as the node sees it (every network's names): what `netsvc dns query` prints.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeAnswer {
    /// `NOERROR`, `NODATA`, `NXDOMAIN`, or `NOT-SERVED` (no network serves the name).
    pub status: String,
    /// The records' data, as DNS prints them (`10.89.0.2`, `web.app.internal.`).
    pub answers: Vec<String>,
}

impl NodeAnswer {
    /// `name`/`qtype` (`A`, `AAAA`, `PTR`, `SRV`, `SOA`, `NS`, `ANY`) looked up in `zone`.
    pub fn of(zone: &crate::zone::Zone, name: &str, qtype: &str) -> Result<NodeAnswer, String> {
        use hickory_proto::rr::{Name, RecordType};
        use std::str::FromStr;
        let name = Name::from_str(name).map_err(|e| format!("name {name:?}: {e}"))?;
        let qtype = RecordType::from_str(&qtype.to_ascii_uppercase()).map_err(|e| format!("type {qtype:?}: {e}"))?;
        let (status, answers) = match zone.lookup_as_node(&name, qtype) {
            crate::zone::Outcome::Answer(records) => ("NOERROR", records.iter().map(|r| r.data.to_string()).collect()),
            crate::zone::Outcome::NoData(_) => ("NODATA", Vec::new()),
            crate::zone::Outcome::NxDomain(_) => ("NXDOMAIN", Vec::new()),
            crate::zone::Outcome::Forward(_) => ("NOT-SERVED", Vec::new()),
        };
        Ok(NodeAnswer {
            status: status.into(),
            answers,
        })
    }
}

/// `name`/`qtype` as the node sees it, asked of the daemon behind `socket`.
pub fn query(socket: &Path, name: &str, qtype: &str, timeout: Duration) -> std::io::Result<Result<NodeAnswer, String>> {
    Ok(ask(socket, &format!("query {name} {qtype}"), timeout)?
        .and_then(|json| serde_json::from_str(&json).map_err(|e| format!("bad reply to query: {e}"))))
}
