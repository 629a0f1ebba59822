//! The sockets: one UDP and one TCP listener per listen address the zone
//! names, opened and closed as networks come and go.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use super::answer::{Transport, respond};
use crate::zone::Zone;

/// The zone every listener answers from; swapped whole on reload.
pub type Shared = Arc<RwLock<Arc<Zone>>>;

/// A TCP client that says nothing this long is dropped.
const TCP_IDLE: Duration = Duration::from_secs(10);

pub fn current(zone: &Shared) -> Arc<Zone> {
    zone.read().map(|z| z.clone()).unwrap_or_default()
}

/// The open listeners by address.
#[derive(Default)]
pub struct Listeners {
    open: HashMap<SocketAddr, [JoinHandle<()>; 2]>,
    /// Addresses that failed to open, with why (logged once, retried each sync).
    failing: HashMap<SocketAddr, String>,
}

impl Listeners {
    /// Opens what `wanted` adds and closes what it drops; the addresses that
    /// could not be opened, with why.
    pub async fn update(&mut self, wanted: &[SocketAddr], zone: &Shared) -> Vec<String> {
        self.open.retain(|addr, tasks| {
            let keep = wanted.contains(addr);
            if !keep {
                tasks.iter().for_each(JoinHandle::abort);
                tracing::info!(%addr, "stopped listening");
            }
            keep
        });
        self.failing.retain(|addr, _| wanted.contains(addr));
        let mut errors = Vec::new();
        for &addr in wanted {
            if self.open.contains_key(&addr) {
                continue;
            }
            match open(addr, zone).await {
                Ok(tasks) => {
                    tracing::info!(%addr, "listening");
                    self.failing.remove(&addr);
                    self.open.insert(addr, tasks);
                }
                Err(e) => {
                    let why = e.to_string();
                    if self.failing.get(&addr) != Some(&why) {
                        tracing::warn!(%addr, error = %why, "cannot listen");
                    }
                    errors.push(format!("{addr}: {why}"));
                    self.failing.insert(addr, why);
                }
            }
        }
        errors
    }
}

async fn open(addr: SocketAddr, zone: &Shared) -> std::io::Result<[JoinHandle<()>; 2]> {
    let udp = Arc::new(UdpSocket::bind(addr).await?);
    let tcp = TcpListener::bind(addr).await?;
    let (z1, z2) = (zone.clone(), zone.clone());
    Ok([
        tokio::spawn(serve_udp(udp, addr, z1)),
        tokio::spawn(serve_tcp(tcp, addr, z2)),
    ])
}

async fn serve_udp(sock: Arc<UdpSocket>, listen: SocketAddr, zone: Shared) {
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, client) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "udp receive");
                continue;
            }
        };
        let query = buf[..n].to_vec();
        let (sock, zone) = (sock.clone(), zone.clone());
        // Each query on its own task: a forwarded one waits on its upstream
        // without holding up the next.
        tokio::spawn(async move {
            let z = current(&zone);
            if let Some(reply) = respond(&z, &query, client, listen, Transport::Udp).await {
                let _ = sock.send_to(&reply, client).await;
            }
        });
    }
}

async fn serve_tcp(listener: TcpListener, listen: SocketAddr, zone: Shared) {
    loop {
        let Ok((conn, client)) = listener.accept().await else {
            continue;
        };
        let zone = zone.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_conn(conn, client, listen, zone).await {
                tracing::debug!(%client, error = %e, "tcp client");
            }
        });
    }
}

/// Length-prefixed messages until the client closes or idles.
async fn serve_conn(mut conn: TcpStream, client: SocketAddr, listen: SocketAddr, zone: Shared) -> std::io::Result<()> {
    loop {
        let Ok(len) = tokio::time::timeout(TCP_IDLE, conn.read_u16()).await else {
            return Ok(());
        };
        let mut query = vec![0u8; usize::from(len?)];
        tokio::time::timeout(TCP_IDLE, conn.read_exact(&mut query)).await??;
        let z = current(&zone);
        let Some(reply) = respond(&z, &query, client, listen, Transport::Tcp).await else {
            continue;
        };
        let n = u16::try_from(reply.len()).map_err(|_| std::io::ErrorKind::InvalidData)?;
        conn.write_all(&n.to_be_bytes()).await?;
        conn.write_all(&reply).await?;
    }
}
