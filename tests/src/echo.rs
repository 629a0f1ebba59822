//! A tiny TCP+UDP echo server that says who it is, and its clients.
//!
//! Protocol: the client sends one line (TCP: then half-closes); the server
//! answers `<identity>\n<the line>` and closes. Load-balancer tests read the
//! identity to see which backend answered.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nix::sched::{CloneFlags, setns};

use crate::netns::Netns;
use crate::process::poll_until;

/// How long the server's loop blocks before it looks at its stop flag.
const TICK_MS: i32 = 50;
/// A request larger than this is cut; the echo is a probe, not a file transfer.
const MAX_REQUEST: u64 = 64 * 1024;
/// How long a UDP client waits before resending (the first datagram may be
/// dropped while a neighbour is resolved).
const UDP_RESEND: Duration = Duration::from_millis(250);

/// What an echo server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoReply {
    /// The answering server's identity.
    pub identity: String,
    /// The request line, echoed back.
    pub echoed: String,
}

impl EchoReply {
    pub(crate) fn parse(raw: &[u8]) -> Result<EchoReply> {
        let text = String::from_utf8_lossy(raw);
        let (identity, echoed) = text
            .split_once('\n')
            .ok_or_else(|| anyhow!("malformed echo reply {text:?}"))?;
        Ok(EchoReply {
            identity: identity.to_owned(),
            echoed: echoed.to_owned(),
        })
    }
}

/// A TCP and UDP echo server on one port inside a namespace; stops on drop.
///
/// Both sockets are bound before [`EchoServer::start`] returns, so it is
/// ready at once; [`Netns::wait_tcp`] is for servers started other ways.
#[derive(Debug)]
pub struct EchoServer {
    addr: SocketAddr,
    identity: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Starts a server in `ns` on `bind` (port 0: any free port, same for
    /// TCP and UDP) answering with `identity`.
    pub fn start(ns: &Netns, bind: SocketAddr, identity: &str) -> Result<EchoServer> {
        let file = ns.open()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (id, flag) = (identity.to_owned(), stop.clone());
        let thread = thread::Builder::new().name(format!("echo-{identity}")).spawn(move || {
            let bound = setns(&file, CloneFlags::CLONE_NEWNET)
                .context("setns")
                .and_then(|()| bind_both(bind));
            match bound {
                Ok((tcp, udp)) => {
                    let _ = ready_tx.send(Ok(tcp.local_addr().ok()));
                    serve(tcp, udp, &id, &flag);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        })?;
        let addr = ready_rx
            .recv()
            .context("echo server thread died")??
            .context("echo server has no address")?;
        Ok(EchoServer {
            addr,
            identity: identity.to_owned(),
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address (with the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound port, shared by TCP and UDP.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The identity this server answers with.
    pub fn identity(&self) -> &str {
        &self.identity
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn bind_both(bind: SocketAddr) -> Result<(TcpListener, UdpSocket)> {
    let tcp = TcpListener::bind(bind).with_context(|| format!("bind tcp {bind}"))?;
    let port = tcp.local_addr()?.port();
    let udp_addr = SocketAddr::new(bind.ip(), port);
    let udp = UdpSocket::bind(udp_addr).with_context(|| format!("bind udp {udp_addr}"))?;
    tcp.set_nonblocking(true)?;
    udp.set_nonblocking(true)?;
    Ok((tcp, udp))
}

/// Serves until `stop` is set, waking at least every tick to look at it.
fn serve(tcp: TcpListener, udp: UdpSocket, identity: &str, stop: &AtomicBool) {
    let mut buf = vec![0u8; MAX_REQUEST as usize];
    while !stop.load(Ordering::Relaxed) {
        if !wait_readable(&[tcp.as_fd(), udp.as_fd()]) {
            continue;
        }
        while let Ok((conn, _)) = tcp.accept() {
            let id = identity.to_owned();
            // One thread per connection so a silent client cannot stall others.
            thread::spawn(move || {
                let _ = answer_tcp(conn, &id);
            });
        }
        while let Ok((n, peer)) = udp.recv_from(&mut buf) {
            let line = String::from_utf8_lossy(&buf[..n]);
            let reply = format!("{identity}\n{}", line.trim_end_matches('\n'));
            let _ = udp.send_to(reply.as_bytes(), peer);
        }
    }
}

fn answer_tcp(conn: TcpStream, identity: &str) -> Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new((&conn).take(MAX_REQUEST)).read_line(&mut line)?;
    let reply = format!("{identity}\n{}", line.trim_end_matches('\n'));
    (&conn).write_all(reply.as_bytes())?;
    Ok(())
}

/// poll(2) on the fds for one tick; true when any is readable.
fn wait_readable(fds: &[std::os::fd::BorrowedFd<'_>]) -> bool {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: pfds is a valid array of pfds.len() pollfd structs.
    let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, TICK_MS) };
    n > 0
}

impl Netns {
    /// Sends `msg` (one line) over TCP to `addr` from inside this namespace
    /// and returns the echo; fails on refusal, drop or `timeout`.
    pub fn tcp_echo(&self, addr: SocketAddr, msg: &str, timeout: Duration) -> Result<EchoReply> {
        self.run(|| {
            let conn = TcpStream::connect_timeout(&addr, timeout)
                .with_context(|| format!("[{}] tcp connect {addr}", self.name()))?;
            talk(conn, addr, msg, timeout)
        })?
    }

    /// As [`Netns::tcp_echo`], from each of `local_ports` in turn (one flow
    /// each, the same 4-tuple every time the same port is given); one result
    /// per port, in order.
    pub fn tcp_echo_from(
        &self,
        local_ports: &[u16],
        addr: SocketAddr,
        msg: &str,
        timeout: Duration,
    ) -> Result<Vec<Result<EchoReply>>> {
        self.run(|| {
            local_ports
                .iter()
                .map(|&port| {
                    let conn = connect_from(port, addr, timeout)
                        .with_context(|| format!("[{}] tcp connect {addr} from port {port}", self.name()))?;
                    talk(conn, addr, msg, timeout)
                })
                .collect()
        })
    }

    /// As [`Netns::tcp_echo`], `n` times in a row from one thread inside this
    /// namespace: how long each connection took, from connect to the whole
    /// echo read back (for latency benchmarks; the first failure ends it).
    pub fn tcp_echo_timed(&self, addr: SocketAddr, msg: &str, n: usize, timeout: Duration) -> Result<Vec<Duration>> {
        self.run(|| {
            (0..n)
                .map(|i| {
                    let start = Instant::now();
                    let conn = TcpStream::connect_timeout(&addr, timeout)
                        .with_context(|| format!("[{}] tcp connect {addr} (connection {i})", self.name()))?;
                    talk(conn, addr, msg, timeout)?;
                    Ok(start.elapsed())
                })
                .collect()
        })?
    }

    /// Sends `msg` over UDP to `addr` from inside this namespace, resending
    /// until a reply from `addr` arrives or `timeout` passes.
    pub fn udp_echo(&self, addr: SocketAddr, msg: &str, timeout: Duration) -> Result<EchoReply> {
        self.run(|| {
            let local: SocketAddr = if addr.is_ipv4() {
                "0.0.0.0:0".parse()?
            } else {
                "[::]:0".parse()?
            };
            let sock = UdpSocket::bind(local)?;
            sock.set_read_timeout(Some(UDP_RESEND))?;
            let mut buf = vec![0u8; MAX_REQUEST as usize];
            let reply = poll_until(timeout, || {
                sock.send_to(msg.as_bytes(), addr).ok()?;
                let resend_at = Instant::now() + UDP_RESEND;
                // Ignore strays from other sources until it is time to resend.
                while Instant::now() < resend_at {
                    match sock.recv_from(&mut buf) {
                        Ok((n, from)) if from == addr => return Some(buf[..n].to_vec()),
                        Ok(_) => continue,
                        Err(_) => return None,
                    }
                }
                None
            });
            let raw =
                reply.with_context(|| format!("[{}] no udp reply from {addr} within {timeout:?}", self.name()))?;
            EchoReply::parse(&raw)
        })?
    }

    /// Polls until a TCP connect to `addr` from this namespace succeeds.
    pub fn wait_tcp(&self, addr: SocketAddr, timeout: Duration) -> Result<()> {
        self.run(|| {
            let each = Duration::from_millis(500).min(timeout);
            poll_until(timeout, || TcpStream::connect_timeout(&addr, each).ok())
                .map(drop)
                .with_context(|| format!("[{}] {addr} not accepting within {timeout:?}", self.name()))
        })?
    }
}

/// One request line out, the whole reply back.
fn talk(conn: TcpStream, addr: SocketAddr, msg: &str, timeout: Duration) -> Result<EchoReply> {
    if msg.contains('\n') {
        bail!("echo message must be one line: {msg:?}");
    }
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    (&conn).write_all(format!("{msg}\n").as_bytes())?;
    conn.shutdown(Shutdown::Write)?;
    let mut raw = Vec::new();
    (&conn)
        .read_to_end(&mut raw)
        .with_context(|| format!("tcp read from {addr}"))?;
    EchoReply::parse(&raw)
}

/// A TCP connection from a chosen local port (SO_REUSEADDR, so a port whose
/// last connection lingers in TIME_WAIT can connect again).
fn connect_from(port: u16, addr: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrStorage, bind, connect, setsockopt, socket, sockopt,
    };
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    // A blocking connect gives up after the send timeout.
    setsockopt(
        &fd,
        sockopt::SendTimeout,
        &nix::sys::time::TimeVal::new(timeout.as_secs() as _, timeout.subsec_micros() as _),
    )?;
    let local: SocketAddr = if addr.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], port))
    } else {
        SocketAddr::from(([0u16; 8], port))
    };
    bind(fd.as_raw_fd(), &SockaddrStorage::from(local))?;
    connect(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    Ok(TcpStream::from(fd))
}
