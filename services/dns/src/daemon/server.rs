//! The sockets: UDP threads (one per core, each with its own socket on the
//! address, the kernel spreading clients over them) and one TCP task per
//! listen address the zone names, opened and closed as networks come and go.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use super::answer::{Prepared, Transport, forwarded, prepare, respond};
use super::limits;
use super::tcp_clients::TcpClients;
use crate::zone::Zone;

/// The zone every listener answers from; swapped whole on reload.
pub type Shared = Arc<RwLock<Arc<Zone>>>;

/// A TCP client that says nothing this long is dropped.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// TCP clients the kernel queues for us (capped by `net.core.somaxconn`).
const TCP_ACCEPT_QUEUE: u32 = 1024;

pub fn current(zone: &Shared) -> Arc<Zone> {
    zone.read().map(|z| z.clone()).unwrap_or_default()
}

/// The open listeners by address.
#[derive(Default)]
pub struct Listeners {
    open: HashMap<SocketAddr, Listener>,
    /// Addresses that failed to open, with why (logged once, retried each sync).
    failing: HashMap<SocketAddr, String>,
}

impl Listeners {
    /// Whether `addr` is open.
    pub fn is_open(&self, addr: SocketAddr) -> bool {
        self.open.contains_key(&addr)
    }

    /// Opens what `wanted` adds and closes what it drops; the addresses that
    /// could not be opened, with why.
    pub async fn update(&mut self, wanted: &[SocketAddr], zone: &Shared) -> Vec<String> {
        let gone: Vec<SocketAddr> = self.open.keys().filter(|a| !wanted.contains(a)).copied().collect();
        for addr in gone {
            if let Some(listener) = self.open.remove(&addr) {
                listener.stop().await;
                tracing::info!(%addr, "stopped listening");
            }
        }
        self.failing.retain(|addr, _| wanted.contains(addr));
        let mut errors = Vec::new();
        for &addr in wanted {
            if self.open.contains_key(&addr) {
                continue;
            }
            match open(addr, zone).await {
                Ok(listener) => {
                    tracing::info!(%addr, "listening");
                    self.failing.remove(&addr);
                    self.open.insert(addr, listener);
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

/// One listen address: its UDP threads and a TCP task.
struct Listener {
    udp_stop: Arc<AtomicBool>,
    udp: Vec<std::thread::JoinHandle<()>>,
    tcp: JoinHandle<()>,
}

impl Listener {
    /// Stops both; returns once the UDP socket is closed, so the address
    /// can be opened again at once (a network leaving and coming back).
    async fn stop(self) {
        self.udp_stop.store(true, Ordering::Relaxed);
        self.tcp.abort();
        let _ = tokio::task::spawn_blocking(move || {
            for worker in self.udp {
                let _ = worker.join();
            }
        })
        .await;
    }
}

/// How often the UDP thread looks up from a quiet socket to see whether it must stop.
const UDP_STOP_CHECK: Duration = Duration::from_millis(50);

async fn open(addr: SocketAddr, zone: &Shared) -> std::io::Result<Listener> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let sockets = (0..workers)
        .map(|_| udp_socket(addr))
        .collect::<std::io::Result<Vec<_>>>()?;
    let tcp = tcp_listener(addr)?;
    let udp_stop = Arc::new(AtomicBool::new(false));
    let mut udp = Vec::new();
    for (i, sock) in sockets.into_iter().enumerate() {
        let (z, stop, runtime) = (zone.clone(), udp_stop.clone(), tokio::runtime::Handle::current());
        let worker = std::thread::Builder::new()
            .name(format!("dnsd-udp{i}-{addr}"))
            .spawn(move || serve_udp(Arc::new(sock), addr, z, stop, runtime));
        match worker {
            Ok(w) => udp.push(w),
            Err(e) => {
                udp_stop.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
    }
    Ok(Listener {
        udp_stop,
        udp,
        tcp: tokio::spawn(serve_tcp(tcp, addr, zone.clone())),
    })
}

/// One of the address's UDP sockets: `SO_REUSEPORT`, so each worker has its
/// own and the kernel spreads clients over them (a client's packets all go
/// to one, in order).
fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrStorage, bind, setsockopt, socket, sockopt};
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReusePort, &true)?;
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrStorage::from(addr))?;
    let sock = std::net::UdpSocket::from(fd);
    sock.set_read_timeout(Some(UDP_STOP_CHECK))?;
    Ok(sock)
}

/// A TCP listener with a long accept queue: clients past the served ones
/// wait there (std and tokio ask for 128, and SYNs past it are dropped).
fn tcp_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(TCP_ACCEPT_QUEUE)
}

/// UDP on its own thread with a blocking socket: local names are answered
/// inline (three syscalls a query, no task or wake-up), and only queries for
/// upstreams go to the runtime, which answers them when the upstream does.
fn serve_udp(sock: Arc<std::net::UdpSocket>, listen: SocketAddr, zone: Shared, stop: Arc<AtomicBool>, runtime: Handle) {
    let mut buf = vec![0u8; 65535];
    while !stop.load(Ordering::Relaxed) {
        let (n, client) = match sock.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "udp receive");
                continue;
            }
        };
        // A query that trips a bug must not take the listener down with it.
        let prepared = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            prepare(&current(&zone), &buf[..n], client, listen, Transport::Udp)
        }));
        match prepared.unwrap_or(Prepared::Nothing) {
            Prepared::Reply(reply) => {
                let _ = sock.send_to(&reply, client);
            }
            Prepared::Nothing => {}
            Prepared::Forward(msg, upstreams) => {
                let (sock, query) = (sock.clone(), buf[..n].to_vec());
                runtime.spawn(async move {
                    if let Some(reply) = forwarded(&query, &msg, &upstreams, Transport::Udp).await {
                        let _ = sock.send_to(&reply, client);
                    }
                });
            }
        }
    }
    tracing::debug!(%listen, "udp listener stopped");
}

/// Takes every connection (see [`TcpClients`] for who makes room).
async fn serve_tcp(listener: TcpListener, listen: SocketAddr, zone: Shared) {
    let clients = TcpClients::default();
    loop {
        let (conn, client) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                limits::accept_failed("dns tcp", e).await;
                continue;
            }
        };
        let admitted = clients.admit(client.ip());
        let (zone, clients) = (zone.clone(), clients.clone());
        tokio::spawn(async move {
            let id = admitted.id;
            tokio::select! {
                served = serve_conn(conn, client, listen, zone, || clients.touch(id)) => {
                    if let Err(e) = served {
                        tracing::debug!(%client, error = %e, "tcp client");
                    }
                }
                () = admitted.close.notified() => tracing::debug!(%client, "tcp client closed to make room"),
            }
            clients.leave(id);
        });
    }
}

/// Length-prefixed messages until the client closes or idles; `active`
/// runs at each query.
async fn serve_conn(
    mut conn: TcpStream,
    client: SocketAddr,
    listen: SocketAddr,
    zone: Shared,
    active: impl Fn(),
) -> std::io::Result<()> {
    loop {
        let Ok(len) = tokio::time::timeout(TCP_IDLE, conn.read_u16()).await else {
            return Ok(());
        };
        active();
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
