//! Listeners in every pod, and the parallel probe round.
//!
//! Probes are real connects with an identity check: TCP connects, sends a
//! line and reads the echo; UDP sends and waits for the echo, resending
//! within the attempt because a first datagram may be lost while ARP
//! resolves. An answer from the wrong pod (a stray DNAT, say) counts as
//! blocked: the target itself was not reached.
//!
//! Flake guard: a failed probe gets one more attempt before it counts as
//! blocked; a success is final. Retrying can only turn a failure into a
//! success, never the reverse, so a probe that should be blocked but gets
//! through is always reported. The cost: a truly blocked probe takes two
//! attempts, so a round with blocked cells lasts about `2 × timeout`.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{Matrix, Port, Proto, Target};
use crate::echo::{EchoReply, EchoServer};
use crate::node::Container;
use crate::process::poll_until;

/// Attempts per probe; see the module docs for why a failure is retried once.
const ATTEMPTS: usize = 2;
/// How often UDP resends within one attempt.
const UDP_RESEND: Duration = Duration::from_millis(200);
/// Bound on listeners becoming reachable from inside their own pod.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on one readiness look; loopback answers at once when listening.
const READY_PROBE: Duration = Duration::from_millis(500);

/// Echo servers on every probed port of every pod, answering with the pod's
/// name; they stop on drop.
#[derive(Debug)]
pub struct Listeners {
    _servers: Vec<EchoServer>,
}

impl Listeners {
    /// Starts one [`EchoServer`] (TCP and UDP) per distinct port number in
    /// each pod, bound on the wildcard address, and returns once each pod
    /// answers every port on loopback, from inside the pod so no firewall
    /// between pods is involved.
    pub fn start(pods: &[(&Container, Target)], ports: &[Port]) -> Result<Listeners> {
        let mut numbers: Vec<u16> = ports.iter().map(|p| p.port).collect();
        numbers.sort_unstable();
        numbers.dedup();
        // Bind v6 (dual-stack) only when some pod is probed over IPv6.
        let any = if pods.iter().any(|(_, t)| t.ip.is_ipv6()) {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        let mut servers = Vec::new();
        for (pod, target) in pods {
            for &n in &numbers {
                servers.push(EchoServer::start(pod, SocketAddr::new(any, n), &target.name)?);
            }
        }
        for (pod, target) in pods {
            let lo = if any.is_ipv6() {
                Ipv6Addr::LOCALHOST.into()
            } else {
                Ipv4Addr::LOCALHOST.into()
            };
            let local = Target::new(target.name.clone(), lo);
            pod.run(|| {
                for &port in ports {
                    poll_until(READY_TIMEOUT, || attempt(&local, port, READY_PROBE).ok()).with_context(|| {
                        format!(
                            "[{}] {port} not answering on {lo} within {READY_TIMEOUT:?}",
                            target.name
                        )
                    })?;
                }
                anyhow::Ok(())
            })??;
        }
        Ok(Listeners { _servers: servers })
    }
}

/// Probes every port of every other pod from every pod, in parallel: one
/// thread per source pod inside its namespace, one scoped thread per probe
/// (threads inherit the namespace of the thread that spawns them).
///
/// `timeout` bounds each attempt; see the module docs for the retry.
/// Panics when a pod's namespace cannot be entered: that is a broken test,
/// not a blocked path.
pub fn probe_all(pods: &[(&Container, Target)], ports: &[Port], timeout: Duration) -> Matrix {
    let names = pods.iter().map(|(_, t)| t.name.clone()).collect();
    let mut m = Matrix::blank(names, ports.to_vec());
    let rows: Vec<Vec<Outcome>> = thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(from, (pod, target))| {
                s.spawn(move || {
                    pod.run(|| probe_row(from, pods, ports, timeout))
                        .unwrap_or_else(|e| panic!("[{}] enter namespace: {e:#}", target.name))
                })
            })
            .collect();
        handles.into_iter().map(join).collect()
    });
    for o in rows.into_iter().flatten() {
        m.set(o.from, o.to, o.port, o.result.is_ok());
        if let Err(why) = o.result {
            m.note(o.from, o.to, o.port, why);
        }
    }
    m
}

/// One probe's result, by matrix indices.
struct Outcome {
    from: usize,
    to: usize,
    port: usize,
    result: Result<(), String>,
}

/// Every probe from pod `from`, concurrently; runs inside that pod.
fn probe_row(from: usize, pods: &[(&Container, Target)], ports: &[Port], timeout: Duration) -> Vec<Outcome> {
    thread::scope(|s| {
        let mut handles = Vec::new();
        for (to, (_, target)) in pods.iter().enumerate().filter(|&(to, _)| to != from) {
            for (k, &port) in ports.iter().enumerate() {
                let h = s.spawn(move || probe(target, port, timeout));
                handles.push((to, k, h));
            }
        }
        handles
            .into_iter()
            .map(|(to, port, h)| Outcome {
                from,
                to,
                port,
                result: join(h),
            })
            .collect()
    })
}

fn join<T>(h: thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Up to [`ATTEMPTS`] attempts; the first success ends it.
fn probe(target: &Target, port: Port, timeout: Duration) -> Result<(), String> {
    let mut why = String::new();
    for n in 1..=ATTEMPTS {
        match attempt(target, port, timeout) {
            Ok(()) => return Ok(()),
            Err(e) => why = format!("{e:#} (attempt {n} of {ATTEMPTS})"),
        }
    }
    Err(why)
}

/// One attempt from the calling thread's namespace, bounded by `timeout`.
fn attempt(target: &Target, port: Port, timeout: Duration) -> Result<()> {
    let addr = SocketAddr::new(target.ip, port.port);
    let msg = format!("probe {port}");
    let reply = match port.proto {
        Proto::Tcp => tcp_exchange(addr, &msg, timeout),
        Proto::Udp => udp_exchange(addr, &msg, timeout),
    }
    .with_context(|| format!("{port} to {addr}"))?;
    if reply.identity != target.name || reply.echoed != msg {
        bail!(
            "{port} to {addr}: answered by {:?} with {:?}",
            reply.identity,
            reply.echoed
        );
    }
    Ok(())
}

fn tcp_exchange(addr: SocketAddr, msg: &str, timeout: Duration) -> Result<EchoReply> {
    let deadline = Instant::now() + timeout;
    let conn = TcpStream::connect_timeout(&addr, timeout).context("connect")?;
    // Zero would mean "no timeout" to the socket; keep at least 1 ms.
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    conn.set_read_timeout(Some(left))?;
    conn.set_write_timeout(Some(left))?;
    (&conn).write_all(format!("{msg}\n").as_bytes()).context("send")?;
    conn.shutdown(Shutdown::Write)?;
    let mut raw = Vec::new();
    (&conn).read_to_end(&mut raw).context("read echo")?;
    EchoReply::parse(&raw)
}

/// Resends every [`UDP_RESEND`] until an echo arrives or `timeout` passes.
/// The socket is connected, so only `addr` can answer, and an ICMP port
/// unreachable ends the attempt at once as a refusal.
fn udp_exchange(addr: SocketAddr, msg: &str, timeout: Duration) -> Result<EchoReply> {
    let deadline = Instant::now() + timeout;
    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(local)?;
    sock.connect(addr)?;
    let mut buf = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("no reply within {timeout:?}");
        }
        sock.send(msg.as_bytes()).context("send")?;
        sock.set_read_timeout(Some(left.min(UDP_RESEND)))?;
        match sock.recv(&mut buf) {
            Ok(n) => return EchoReply::parse(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => return Err(e).context("receive"),
        }
    }
}
