//! Forwarding a query to the upstreams, as the client sent it (its id, its
//! EDNS): over UDP first, over TCP when the answer comes back truncated and
//! the client asked over TCP (a UDP client gets the truncated answer and
//! retries over TCP itself).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

use super::answer::Transport;

/// How long one upstream gets before the next is tried.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_MESSAGE: usize = 65535;

/// The first upstream reply, or `None` when none answered in time.
pub async fn exchange(query: &[u8], upstreams: &[SocketAddr], transport: Transport) -> Option<Vec<u8>> {
    for &up in upstreams {
        let reply = match timeout(UPSTREAM_TIMEOUT, udp(query, up)).await {
            Ok(Ok(r)) => r,
            _ => {
                tracing::debug!(%up, "upstream did not answer over UDP");
                continue;
            }
        };
        let truncated = reply.len() > 2 && reply[2] & 0x02 != 0;
        if truncated && transport == Transport::Tcp {
            if let Ok(Ok(r)) = timeout(UPSTREAM_TIMEOUT, tcp(query, up)).await {
                return Some(r);
            }
            continue;
        }
        return Some(reply);
    }
    None
}

async fn udp(query: &[u8], up: SocketAddr) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if up.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let sock = UdpSocket::bind(local).await?;
    sock.connect(up).await?;
    sock.send(query).await?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let n = sock.recv(&mut buf).await?;
        // Only the reply to this query (same id) counts.
        if n >= 12 && buf[..2] == query[..2] {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn tcp(query: &[u8], up: SocketAddr) -> std::io::Result<Vec<u8>> {
    let mut conn = TcpStream::connect(up).await?;
    let len = u16::try_from(query.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    conn.write_all(&len.to_be_bytes()).await?;
    conn.write_all(query).await?;
    let n = conn.read_u16().await?;
    let mut buf = vec![0u8; usize::from(n)];
    conn.read_exact(&mut buf).await?;
    Ok(buf)
}
